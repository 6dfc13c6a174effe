//! ipc::Queue across real processes and threads.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use parpool::ipc::{Queue, RecvError, SendError, SharedMem};
use parpool::{Executor, JobError, JobHandle, ProcessPool, WorkerOutput};
use proptest::prelude::*;
use serde_bytes::ByteBuf;

/// Messages per producer in the many-to-many test.
const PER_PRODUCER: u32 = 250_000;

parpool::task! {
    fn produce(args: (Queue<(u32, u32)>, u32, u32)) -> () {
        let (q, producer, n) = args;
        for i in 0..n {
            q.send((producer, i)).unwrap();
        }
    }
}

parpool::task! {
    fn consume(q: Queue<(u32, u32)>) -> Vec<(u32, u32)> {
        q.iter().collect()
    }
}

parpool::task! {
    fn send_big(args: (Queue<Vec<u8>>, usize)) -> () {
        let (q, n) = args;
        q.send(vec![7u8; n]).unwrap();
        q.send(b"after the big one".to_vec()).unwrap();
    }
}

parpool::task! {
    /// Notes its pid in word 1 of `pids`, then sends a big message (as one
    /// byte string) and a small one.
    fn send_big_noting(args: (Queue<ByteBuf>, usize, SharedMem)) -> () {
        args.2.atomic_u64(1).unwrap().store(u64::from(std::process::id()), Ordering::SeqCst);
        args.0.send(ByteBuf::from(vec![7u8; args.1])).unwrap();
        args.0.send(ByteBuf::from(b"after the big one".to_vec())).unwrap();
    }
}

parpool::task! {
    /// Notes its pid in word 0 of `pids`, then receives one message.
    fn recv_noting(args: (Queue<ByteBuf>, SharedMem)) -> usize {
        args.1.atomic_u64(0).unwrap().store(u64::from(std::process::id()), Ordering::SeqCst);
        args.0.recv().map(|v| v.len()).unwrap_or(0)
    }
}

/// Starts [`send_big_noting`] with an 8 MiB message on `pool`: its handle
/// and its worker's pid once it runs.
fn start_big_sender(pool: &ProcessPool, q: &Queue<ByteBuf>) -> (JobHandle<()>, u32) {
    let pids = SharedMem::new(16).unwrap();
    let sender = pool.submit(send_big_noting, (q.clone(), 8 << 20, pids.clone()));
    crate::common::wait_until("the sender started", || {
        pids.atomic_u64(1).unwrap().load(Ordering::SeqCst) != 0
    });
    let pid = pids.atomic_u64(1).unwrap().load(Ordering::SeqCst) as u32;
    (sender, pid)
}

fn pool(n: usize) -> ProcessPool {
    ProcessPool::builder()
        .workers(n)
        .stderr(WorkerOutput::Null)
        .build()
        .unwrap()
}

/// Checks that every producer's messages arrived once each, in order
/// within each consumer.
fn check(received: Vec<Vec<(u32, u32)>>, producers: u32, per: u32) {
    let mut all = HashSet::new();
    for got in &received {
        let mut last = vec![None; producers as usize];
        for &(p, i) in got {
            if let Some(prev) = last[p as usize] {
                assert!(i > prev, "producer {p}: {i} after {prev}");
            }
            last[p as usize] = Some(i);
            assert!(all.insert((p, i)), "({p}, {i}) received twice");
        }
    }
    assert_eq!(all.len(), (producers * per) as usize, "messages lost");
}

#[test]
fn four_producers_four_consumers_across_processes_lose_and_repeat_nothing() {
    let pool = pool(8);
    let q: Queue<(u32, u32)> = Queue::with_capacity(1 << 16, None).unwrap();
    let consumers: Vec<_> = (0..4).map(|_| pool.submit(consume, q.clone())).collect();
    let producers: Vec<_> = (0..4)
        .map(|p| pool.submit(produce, (q.clone(), p, PER_PRODUCER)))
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.close();
    let received: Vec<_> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    check(received, 4, PER_PRODUCER);
}

#[test]
fn four_producers_four_consumers_across_threads() {
    let q: Queue<(u32, u32)> = Queue::with_capacity(4096, Some(64)).unwrap();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || q.iter().collect::<Vec<_>>())
        })
        .collect();
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    q.send((p, i)).unwrap();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.close();
    let received = consumers.into_iter().map(|c| c.join().unwrap()).collect();
    check(received, 4, 20_000);
}

#[test]
fn close_drains_then_disconnects_and_hands_values_back() {
    let q: Queue<String> = Queue::new().unwrap();
    for i in 0..10 {
        q.send(i.to_string()).unwrap();
    }
    q.close();
    match q.send("late".into()) {
        Err(SendError::Closed(v)) => assert_eq!(v, "late"),
        other => panic!("{other:?}"),
    }
    let got: Vec<String> = q.iter().collect();
    assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(matches!(q.recv(), Err(RecvError::Disconnected)));
}

#[test]
fn timeouts_and_full_queues_hand_values_back() {
    let q: Queue<u64> = Queue::with_capacity(64, Some(1)).unwrap();
    let t = Instant::now();
    assert!(matches!(
        q.recv_timeout(Duration::from_millis(50)),
        Err(RecvError::Empty)
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert!(matches!(q.try_recv(), Err(RecvError::Empty)));
    q.send(1).unwrap();
    match q.try_send(2) {
        Err(SendError::Full(v)) => assert_eq!(v, 2),
        other => panic!("{other:?}"),
    }
    let t = Instant::now();
    match q.send_timeout(3, Duration::from_millis(50)) {
        Err(SendError::Full(v)) => assert_eq!(v, 3),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(50));
    assert_eq!(q.len(), 1);
    assert_eq!(q.recv().unwrap(), 1);
}

#[test]
fn a_message_larger_than_the_ring_streams_through() {
    let pool = pool(1);
    let q: Queue<Vec<u8>> = Queue::with_capacity(64 * 1024, None).unwrap();
    let sender = pool.submit(send_big, (q.clone(), 3 << 20));
    let big = q.recv().unwrap();
    assert_eq!(big.len(), 3 << 20);
    assert!(big.iter().all(|&b| b == 7));
    assert!(q.recv().unwrap() == b"after the big one");
    sender.join().unwrap();
}

fn kill(pid: u32, signal: rustix::process::Signal) {
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), signal)
        .unwrap();
}

#[test]
fn a_sender_killed_mid_message_costs_that_message_only() {
    let pool = pool(1);
    let q: Queue<Vec<u8>> = Queue::with_capacity(64 * 1024, None).unwrap();
    // Nobody reads yet: the sender fills the ring and blocks mid-message.
    let sender = pool.submit(send_big, (q.clone(), 4 << 20));
    std::thread::sleep(Duration::from_millis(300));
    kill(pool.worker_pids()[0], rustix::process::Signal::KILL);
    assert!(matches!(sender.join(), Err(JobError::Crashed { .. })));
    // The next sender completes the dead one's message as aborted while a
    // receiver drains; the receiver sees only the next message.
    let receiver = {
        let q = q.clone();
        std::thread::spawn(move || q.recv())
    };
    q.send(b"next".to_vec()).unwrap();
    let got = receiver.join().unwrap().unwrap();
    assert!(
        got == b"next",
        "got {} bytes instead of the next message",
        got.len()
    );
    // The dead sender's message counts nowhere.
    assert!(q.is_empty());
    assert_eq!(q.unfinished(), 1);
}

/// With no sender after the dead one, a receive inside its message once
/// waited for the rest for ever (even with a timeout). The receive finds
/// the sender gone (its end's lock: owner died), drops the message as
/// aborted, and waits on only as its timeout says. (The region fuzz target
/// found the same wait on a queue whose memory was corrupted.)
#[test]
fn a_receive_in_a_dead_sender_s_message_returns_without_another_sender() {
    use rustix::process::Signal;
    let pool = pool(1);
    let q: Queue<ByteBuf> = Queue::with_capacity(64 * 1024, None).unwrap();
    let (sender, pid) = start_big_sender(&pool, &q);
    // Let it fill the ring (nobody reads yet), hold it, and let a receive
    // take what is there: the receive is now inside the message, waiting
    // for the rest. Then the sender dies.
    std::thread::sleep(Duration::from_millis(300));
    kill(pid, Signal::STOP);
    let (tx, rx) = std::sync::mpsc::channel();
    let receiving = q.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        let _ = tx.send((receiving.recv_timeout(Duration::from_secs(3)), t.elapsed()));
    });
    std::thread::sleep(Duration::from_millis(300));
    kill(pid, Signal::KILL);
    let (got, took) = rx
        .recv_timeout(crate::common::PATIENCE)
        .expect("the receive returned");
    assert!(matches!(got, Err(RecvError::Empty)), "{got:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    assert!(matches!(sender.join(), Err(JobError::Crashed { .. })));
    // The queue goes on.
    q.send(ByteBuf::from(b"next".to_vec())).unwrap();
    assert_eq!(q.try_recv().unwrap().as_slice(), b"next");
}

/// A timed or non-blocking receive inside a message whose sender stopped
/// (alive, writing nothing) once waited for the rest for ever. It gives up
/// once the sender has written nothing for 2 s past the receive's own
/// timeout, says the message was dropped, and the queue goes on: the next
/// receive skips the rest when the sender writes it. (The region fuzz
/// target found the same wait on a queue whose memory names a holder of
/// the send end that never lets go.)
#[test]
fn a_try_recv_inside_a_stopped_sender_s_message_gives_up_and_says_so() {
    use rustix::process::Signal;
    let pool = pool(1);
    let q: Queue<ByteBuf> = Queue::with_capacity(64 * 1024, None).unwrap();
    let (sender, pid) = start_big_sender(&pool, &q);
    // Hold the sender once it has begun the message (until then a
    // try_recv finds nothing and the sender goes on).
    let began = Instant::now();
    let (got, took) = loop {
        kill(pid, Signal::STOP);
        let t = Instant::now();
        let got = q.try_recv();
        if !matches!(got, Err(RecvError::Empty)) {
            break (got, t.elapsed());
        }
        kill(pid, Signal::CONT);
        assert!(
            began.elapsed() < crate::common::PATIENCE,
            "the message never began"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(matches!(got, Err(RecvError::Stalled)), "{got:?}");
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    // What is left of it is skipped by the next receive, which gives up
    // as its own timeout says while the sender is held.
    let t = Instant::now();
    let got = q.recv_timeout(Duration::from_millis(100));
    assert!(matches!(got, Err(RecvError::Empty)), "{got:?}");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    kill(pid, Signal::CONT);
    let next = q.recv_timeout(crate::common::PATIENCE).unwrap();
    assert_eq!(
        next.as_slice(),
        b"after the big one",
        "{} bytes",
        next.len()
    );
    sender.join().unwrap();
    assert!(q.is_empty());
    // The dropped message was received by nobody: the skip marked it
    // done, so one task_done (for the message after it) lets join return.
    assert_eq!(q.unfinished(), 1);
    q.task_done().unwrap();
    q.join();
}

/// A send that finds a dead sender's message half written fills what room
/// there is of the rest and, with nothing more to wait for (`try_send`),
/// gives up: the send end is then free and its owner did not die. A
/// receive inside that message once took this for corrupted memory (an
/// I/O error for it and every receive after); it completes the message as
/// aborted instead.
#[test]
fn a_receive_after_a_send_gave_up_completing_a_dead_sender_s_message_goes_on() {
    use rustix::process::Signal;
    let pool = pool(2);
    let q: Queue<ByteBuf> = Queue::with_capacity(64 * 1024, None).unwrap();
    let pids = SharedMem::new(16).unwrap();
    let pid = |i: usize| pids.atomic_u64(i).unwrap().load(Ordering::SeqCst) as u32;
    let receiver = pool.submit(recv_noting, (q.clone(), pids.clone()));
    let sender = pool.submit(send_big_noting, (q.clone(), 8 << 20, pids.clone()));
    crate::common::wait_until("both jobs started", || pid(0) != 0 && pid(1) != 0);
    // The receiver held while the sender fills the ring; the sender held
    // while the receiver takes that and waits for the rest; then the
    // receiver held again and the sender killed. (Whatever the timing,
    // the receiver's first whole message is the one sent below.)
    kill(pid(0), Signal::STOP);
    std::thread::sleep(Duration::from_millis(300));
    kill(pid(1), Signal::STOP);
    kill(pid(0), Signal::CONT);
    std::thread::sleep(Duration::from_millis(200));
    kill(pid(0), Signal::STOP);
    kill(pid(1), Signal::KILL);
    assert!(matches!(sender.join(), Err(JobError::Crashed { .. })));
    // Finds the dead sender's message, fills the room there is, and
    // gives up (it does not wait).
    assert!(matches!(
        q.try_send(ByteBuf::from(b"lost".to_vec())),
        Err(SendError::Full(_))
    ));
    // The receiver goes on: it reads the filler, finds the send end free
    // and the message short of its end, and completes it as aborted. (A
    // send now would complete it first: the receiver is given time to.)
    kill(pid(0), Signal::CONT);
    std::thread::sleep(Duration::from_millis(300));
    q.send_timeout(ByteBuf::from(b"next".to_vec()), crate::common::PATIENCE)
        .unwrap();
    assert_eq!(
        receiver.join().unwrap(),
        4,
        "the receiver got the next message"
    );
}

#[test]
fn a_receiver_killed_mid_message_costs_that_message_only() {
    use rustix::process::Signal;
    let pool = pool(2);
    let q: Queue<ByteBuf> = Queue::with_capacity(256, None).unwrap();
    let pids = SharedMem::new(16).unwrap();
    let pid = |i: usize| pids.atomic_u64(i).unwrap().load(Ordering::SeqCst) as u32;
    let receiver = pool.submit(recv_noting, (q.clone(), pids.clone()));
    let sender = pool.submit(send_big_noting, (q.clone(), 8 << 20, pids.clone()));
    let t = Instant::now();
    while pid(0) == 0 || pid(1) == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "jobs did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Hold the receiver while the sender fills the small ring with the
    // start of the big message and blocks; then hold the sender and let
    // the receiver take what is there: it is now inside the message,
    // waiting for the rest.
    kill(pid(0), Signal::STOP);
    std::thread::sleep(Duration::from_millis(500));
    kill(pid(1), Signal::STOP);
    kill(pid(0), Signal::CONT);
    std::thread::sleep(Duration::from_millis(200));
    kill(pid(0), Signal::KILL);
    let r = receiver.join();
    assert!(matches!(r, Err(JobError::Crashed { .. })), "{r:?}");
    kill(pid(1), Signal::CONT);
    // The next receiver skips the rest of the big message.
    let next = q.recv().unwrap();
    assert!(
        next.as_slice() == b"after the big one",
        "got {} bytes instead of the message after the big one",
        next.len()
    );
    sender.join().unwrap();
    // The big message counts as received once, by the dead receiver.
    assert!(q.is_empty());
    assert_eq!(q.unfinished(), 2);
}

#[derive(Debug, Clone)]
enum Op {
    Send(u32),
    Recv,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u32>().prop_map(Op::Send),
        4 => Just(Op::Recv),
        1 => Just(Op::Close),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Non-blocking sends and receives behave like a bounded VecDeque.
    #[test]
    fn random_operations_match_a_vecdeque(ops in proptest::collection::vec(op(), 1..200)) {
        let q: Queue<u32> = Queue::with_capacity(128, Some(5)).unwrap();
        let mut model: VecDeque<u32> = VecDeque::new();
        let mut closed = false;
        let size = |v: u32| 16 + postcard::to_allocvec(&v).unwrap().len();
        for op in ops {
            match op {
                Op::Send(v) => {
                    let used: usize = model.iter().map(|&m| size(m)).sum();
                    let fits = model.len() < 5 && used + size(v) <= 128;
                    match q.try_send(v) {
                        Ok(()) => {
                            prop_assert!(!closed && fits);
                            model.push_back(v);
                        }
                        Err(SendError::Closed(back)) => prop_assert!(closed && back == v),
                        Err(SendError::Full(back)) => prop_assert!(!closed && !fits && back == v),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Recv => match q.try_recv() {
                    Ok(v) => prop_assert_eq!(Some(v), model.pop_front()),
                    Err(RecvError::Empty) => prop_assert!(model.is_empty() && !closed),
                    Err(RecvError::Disconnected) => prop_assert!(model.is_empty() && closed),
                    Err(e) => prop_assert!(false, "{e}"),
                },
                Op::Close => {
                    q.close();
                    closed = true;
                }
            }
            prop_assert_eq!(q.len(), model.len());
        }
    }
}

parpool::task! {
    /// Receives until closed, marking each message done after "work".
    fn work_and_mark(q: Queue<u64>) -> u64 {
        let mut n = 0;
        while let Ok(_v) = q.recv() {
            std::thread::sleep(Duration::from_micros(200));
            q.task_done().unwrap();
            n += 1;
        }
        n
    }
}

parpool::task! {
    fn produce_u64(args: (Queue<u64>, u64)) -> () {
        for i in 0..args.1 {
            if args.0.send(i).is_err() {
                break;
            }
        }
    }
}

/// A message is counted as sent before any receiver can see it, so
/// marking it done at once never fails, however close the receiver runs
/// behind the sender.
#[test]
fn task_done_right_after_recv_always_finds_the_message_counted() {
    let pool = pool(1);
    let q: Queue<u64> = Queue::new().unwrap();
    let n = 200_000;
    let producer = pool.submit(produce_u64, (q.clone(), n));
    let failed = (0..n).find(|&i| q.recv().ok() != Some(i) || q.task_done().is_err());
    // Closing lets a producer blocked on a full ring end, whatever happened.
    q.close();
    assert_eq!(failed, None, "task_done failed right after this message");
    producer.join().unwrap();
    assert_eq!(q.unfinished(), 0);
    assert!(q.join_timeout(Duration::from_millis(1)));
}

#[test]
fn join_waits_until_every_message_is_marked_done() {
    let pool = pool(2);
    let q: Queue<u64> = Queue::new().unwrap();
    assert!(
        q.join_timeout(Duration::from_millis(1)),
        "nothing sent: done"
    );
    let workers: Vec<_> = (0..2)
        .map(|_| pool.submit(work_and_mark, q.clone()))
        .collect();
    for i in 0..200 {
        q.send(i).unwrap();
    }
    q.join();
    assert_eq!(q.unfinished(), 0);
    assert!(q.is_empty());
    q.close();
    let done: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(done, 200);
    // One more mark than messages is an error that changes nothing.
    assert!(q.task_done().is_err());
    assert_eq!(q.unfinished(), 0);
    // A message not yet marked keeps join waiting.
    let q2: Queue<u64> = Queue::new().unwrap();
    q2.send(1).unwrap();
    assert!(!q2.join_timeout(Duration::from_millis(30)));
}

/// Messages of every size from 0 to 600 bytes through a 256-byte ring:
/// frames wrap at every offset, and those larger than the ring stream
/// through in pieces; each arrives intact, in order.
#[test]
fn messages_of_every_size_wrap_and_stream_intact() {
    let q: Queue<ByteBuf> = Queue::with_capacity(256, None).unwrap();
    let tx = q.clone();
    let sender = std::thread::spawn(move || {
        for round in 0..3u8 {
            for len in 0..600usize {
                let body: Vec<u8> = (0..len).map(|i| (i as u8) ^ round).collect();
                tx.send(ByteBuf::from(body)).unwrap();
            }
        }
        tx.close();
    });
    let mut n = 0usize;
    for got in q.iter() {
        let (round, len) = ((n / 600) as u8, n % 600);
        assert_eq!(got.len(), len, "message {n}");
        assert!(
            got.iter().enumerate().all(|(i, &b)| b == (i as u8) ^ round),
            "message {n} corrupted"
        );
        n += 1;
    }
    sender.join().unwrap();
    assert_eq!(n, 1800);
    assert!(q.is_empty());
}
