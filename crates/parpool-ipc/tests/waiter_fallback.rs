//! The async waits (`Event::wait_async`, `Queue::recv_async`,
//! `Queue::send_async`) without `futex_waitv`: a thread per waited word.
//!
//! A process picks its mode once, so each case runs an inner test of this
//! binary in a child process: with `PARPOOL_IPC_WAITER=threads`, under a
//! seccomp filter that refuses `futex_waitv` from the start (as a kernel
//! before 5.16 does), and under one added while `futex_waitv` serves
//! waits. The inner tests do nothing in any other process. The same
//! scenarios also run here, in whatever mode this process has.

use std::future::Future;
use std::pin::pin;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::task::{Context, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use futures::executor::block_on;
use futures::future::join_all;
use parpool_ipc::{Event, Queue, waiter_mode};

/// Names the inner test that a child process is started for.
const CHILD_ENV: &str = "PARPOOL_IPC_WAITER_TEST_CHILD";
const MODE_ENV: &str = "PARPOOL_IPC_WAITER";
/// How many waits run at once: more words than one `futex_waitv` takes.
const MANY: u32 = 200;
/// Threads mode: a word's thread sleeps at most 50 ms between checks; a
/// wake that waited for that check would come about 45 ms after the set.
const PROMPT: Duration = Duration::from_millis(20);

#[test]
fn threads_when_the_environment_asks_for_them() {
    run_child("forced_inner", &[(MODE_ENV, "threads")]);
}

#[test]
fn threads_when_the_kernel_refuses_futex_waitv() {
    run_child("refused_inner", &[]);
}

#[test]
fn threads_once_futex_waitv_starts_failing() {
    run_child("failing_inner", &[]);
}

#[test]
fn async_waits_in_this_process_mode() {
    eprintln!("mode: {}", waiter_mode());
    scenarios();
}

#[test]
fn forced_inner() {
    if !is_child("forced_inner") {
        return;
    }
    assert_eq!(std::env::var(MODE_ENV).as_deref(), Ok("threads"));
    assert_eq!(waiter_mode(), "threads");
    scenarios();
}

#[test]
fn refused_inner() {
    if !is_child("refused_inner") {
        return;
    }
    if let Err(e) = refuse_futex_waitv() {
        eprintln!("skipped: no seccomp filter here ({e})");
        return;
    }
    assert_eq!(waiter_mode(), "threads");
    scenarios();
}

#[test]
fn failing_inner() {
    if !is_child("failing_inner") {
        return;
    }
    if waiter_mode() != "futex_waitv" {
        eprintln!("skipped: this kernel has no futex_waitv");
        return;
    }
    // The `futex_waitv` thread serves a first wait.
    event_set_by_a_thread();
    // A wait it holds when the call starts failing.
    let pending = Event::new().unwrap();
    let (waker, woken) = notifier();
    let mut cx = Context::from_waker(&waker);
    let mut wait = pin!(pending.wait_async());
    assert!(wait.as_mut().poll(&mut cx).is_pending());
    if let Err(e) = refuse_futex_waitv() {
        eprintln!("skipped: no seccomp filter here ({e})");
        return;
    }
    // The next registration makes the thread call again, and fail.
    let next = Event::new().unwrap();
    let (next_waker, next_woken) = notifier();
    let mut next_wait = pin!(next.wait_async());
    assert!(
        next_wait
            .as_mut()
            .poll(&mut Context::from_waker(&next_waker))
            .is_pending()
    );
    let start = Instant::now();
    while waiter_mode() != "threads" {
        assert!(start.elapsed() < Duration::from_secs(5), "no switch");
        thread::sleep(Duration::from_millis(1));
    }
    // Both waits moved over to threads mode.
    set_later(&pending, Duration::from_millis(5));
    woken.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(wait.as_mut().poll(&mut cx).is_ready());
    set_later(&next, Duration::from_millis(5));
    next_woken.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        next_wait
            .as_mut()
            .poll(&mut Context::from_waker(&next_waker))
            .is_ready()
    );
    scenarios();
}

/// Every scenario, then (threads mode) no waiter thread left.
fn scenarios() {
    let start = Instant::now();
    event_set_by_a_thread();
    event_set_by_another_process();
    many_event_waits();
    many_queue_waits();
    dropped_waits();
    prompt_wakes();
    if waiter_mode() == "threads" {
        let gone = no_word_threads_within(Duration::from_secs(5));
        eprintln!("the waiter threads ended {gone:?} after the last wait");
    }
    eprintln!("scenarios took {:?}", start.elapsed());
}

fn event_set_by_a_thread() {
    let event = Event::new().unwrap();
    let setter = set_later(&event, Duration::from_millis(5));
    block_on(event.wait_async());
    assert!(event.is_set());
    setter.join().unwrap();
}

fn event_set_by_another_process() {
    let event = Event::new().unwrap();
    // SAFETY: the child only sleeps, stores to shared memory, makes a futex
    // system call and exits with `_exit`: nothing that takes a lock or
    // allocates, which a fork of a threaded process must not do.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        thread::sleep(Duration::from_millis(10));
        event.set();
        // SAFETY: ends the child at once; nothing of the parent's runs.
        unsafe { libc::_exit(0) };
    }
    block_on(event.wait_async());
    assert!(event.is_set());
    let pid = rustix::process::Pid::from_raw(pid).unwrap();
    let (_, status) = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .unwrap()
        .unwrap();
    assert_eq!(status.exit_status(), Some(0));
}

/// `MANY` events waited on at once: as many words.
fn many_event_waits() {
    let events: Vec<Event> = (0..MANY).map(|_| Event::new().unwrap()).collect();
    let setters: Vec<Event> = events.clone();
    let setter = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        for e in setters.iter().rev() {
            e.set();
        }
    });
    block_on(join_all(events.iter().map(Event::wait_async)));
    assert!(events.iter().all(Event::is_set));
    setter.join().unwrap();
}

/// `MANY` receivers, then `MANY` senders, waiting at once on one queue.
fn many_queue_waits() {
    let q: Queue<u32> = Queue::new().unwrap();
    let tx = q.clone();
    let sender = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        for i in 0..MANY {
            tx.send(i).unwrap();
            if i % 16 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let mut got: Vec<u32> = block_on(join_all((0..MANY).map(|_| q.recv_async())))
        .into_iter()
        .map(Result::unwrap)
        .collect();
    sender.join().unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..MANY).collect::<Vec<_>>());

    // Room for 4 messages: the other senders wait.
    let q: Queue<u32> = Queue::with_capacity(4096, Some(4)).unwrap();
    let rx = q.clone();
    let receiver = thread::spawn(move || {
        thread::sleep(Duration::from_millis(10));
        (0..MANY).map(|_| rx.recv().unwrap()).collect::<Vec<_>>()
    });
    for sent in block_on(join_all((0..MANY).map(|i| q.send_async(i)))) {
        sent.unwrap();
    }
    let mut got = receiver.join().unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..MANY).collect::<Vec<_>>());
}

/// A wait dropped before its event is set: nobody is woken, nothing
/// hangs, and (threads mode) its thread ends.
fn dropped_waits() {
    let threads = waiter_mode() == "threads";
    if threads {
        no_word_threads_within(Duration::from_secs(5));
    }
    let event = Event::new().unwrap();
    let (waker, woken) = notifier();
    {
        let mut wait = pin!(event.wait_async());
        assert!(
            wait.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        if threads {
            // A new thread names itself once it runs.
            let start = Instant::now();
            while word_threads() != 1 {
                assert!(start.elapsed() < Duration::from_secs(5), "no waiter thread");
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    if threads {
        let gone = no_word_threads_within(Duration::from_secs(5));
        eprintln!("a dropped wait's thread ended after {gone:?}");
    }
    event.set();
    assert!(woken.recv_timeout(Duration::from_millis(100)).is_err());
    // Waits on the set event end at once; dropped ones again leave nothing.
    block_on(event.wait_async());
    event.clear();
    for _ in 0..3 {
        let mut wait = pin!(event.wait_async());
        assert!(
            wait.as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
    }
    let setter = set_later(&event, Duration::from_millis(5));
    block_on(event.wait_async());
    setter.join().unwrap();
    assert!(woken.try_recv().is_err());
}

/// The wake follows the set at once, not at the next poll: the best of 10
/// tries, each on a new word (threads mode: a new thread, set 5 ms into its
/// first sleep).
fn prompt_wakes() {
    let events: Vec<Event> = (0..10).map(|_| Event::new().unwrap()).collect();
    let mut best = Duration::MAX;
    for event in &events {
        let (waker, woken) = notifier();
        let mut cx = Context::from_waker(&waker);
        let mut wait = pin!(event.wait_async());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        let setter = set_later(event, Duration::from_millis(5));
        let woke = woken.recv_timeout(Duration::from_secs(10)).unwrap();
        let set = setter.join().unwrap();
        best = best.min(woke.saturating_duration_since(set));
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
    eprintln!("best wake {best:?} after the set");
    assert!(best < PROMPT, "best wake {best:?} after the set");
}

/// Sets `event` after `delay`, on another thread; the thread answers when.
fn set_later(event: &Event, delay: Duration) -> thread::JoinHandle<Instant> {
    let event = event.clone();
    thread::spawn(move || {
        thread::sleep(delay);
        let at = Instant::now();
        event.set();
        at
    })
}

/// A waker that reports when it is woken.
fn notifier() -> (Waker, mpsc::Receiver<Instant>) {
    struct Notify(mpsc::Sender<Instant>);
    impl Wake for Notify {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let now = Instant::now();
            let _ = self.0.send(now);
        }
    }
    let (tx, rx) = mpsc::channel();
    (Waker::from(Arc::new(Notify(tx))), rx)
}

/// This process's threads-mode waiter threads (named `parpool-ipc-word`,
/// which the kernel cuts to 15 bytes).
fn word_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "parpool-ipc-wor")
        .count()
}

/// Waits until no threads-mode waiter thread is left; how long it took.
fn no_word_threads_within(limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let n = word_threads();
        if n == 0 {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{n} waiter threads left");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Whether this process is the child started for inner test `name`.
fn is_child(name: &str) -> bool {
    std::env::var_os(CHILD_ENV).is_some_and(|v| v == name)
}

/// Runs inner test `name` alone in a child process with `env`; fails if
/// the test fails, does not run, or takes over two minutes.
fn run_child(name: &str, env: &[(&str, &str)]) {
    let start = Instant::now();
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .env_remove(MODE_ENV)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = rustix::process::Pid::from_child(&child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("{name} hangs");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} failed or did not run:\n{stdout}\n{stderr}"
    );
    eprintln!("{name}: {:?}\n{stderr}", start.elapsed());
}

/// Installs, on every thread of this process, a seccomp filter that
/// answers `ENOSYS` to `futex_waitv`, as a kernel before 5.16 does.
fn refuse_futex_waitv() -> std::io::Result<()> {
    use libc::{BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, c_ulong};
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let filter = [
        // The system call's number (`seccomp_data.nr`, at offset 0).
        op(BPF_LD | BPF_W | BPF_ABS, 0, 0, 0),
        op(
            BPF_JMP | BPF_JEQ | BPF_K,
            0,
            1,
            libc::SYS_futex_waitv as u32,
        ),
        op(
            BPF_RET | BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        op(BPF_RET | BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: integer arguments only, each passed as the `unsigned long`
    // the kernel reads.
    let code = unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
            0 as c_ulong,
        )
    };
    if code != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `program` points to `filter`; the kernel copies both during
    // the call, while they live.
    let code = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as c_ulong,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &raw const program,
        )
    };
    if code != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
