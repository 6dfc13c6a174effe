//! A holder's death poisons a `Mutex` for everyone until repaired. A
//! thread that ends holding a robust lock counts as a dead holder, as a
//! process does, so these run in one process.

use std::time::Duration;

use parpool_ipc::{Condvar, LockError, Mutex};

/// Locks `m` on a thread that ends without unlocking.
fn die_holding(m: &Mutex<u64>, value: u64) {
    let m = m.clone();
    std::thread::spawn(move || {
        let mut guard = m.lock().unwrap();
        *guard = value;
        std::mem::forget(guard);
    })
    .join()
    .unwrap();
}

#[test]
fn a_dead_holder_poisons_until_cleared_and_the_error_is_owned() {
    let m = Mutex::new(1u64).unwrap();
    die_holding(&m, 99);
    assert!(!m.is_poisoned(), "found out only when someone locks");
    assert!(matches!(m.lock(), Err(LockError::OwnerDied)));
    assert!(m.is_poisoned());
    // Sticky, for every way of locking.
    assert!(matches!(m.lock(), Err(LockError::OwnerDied)));
    assert!(matches!(m.try_lock(), Err(LockError::OwnerDied)));
    assert!(matches!(
        m.lock_timeout(Duration::from_millis(10)),
        Err(LockError::OwnerDied)
    ));
    // `?` into a boxed error: the error borrows nothing.
    fn read(m: &Mutex<u64>) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
        Ok(*m.lock()?)
    }
    assert!(read(&m).unwrap_err().to_string().contains("clear_poison"));
    let mut guard = m.lock_for_repair().unwrap();
    assert_eq!(*guard, 99, "what the holder left is there to repair");
    *guard = 2;
    drop(guard);
    m.clear_poison();
    assert_eq!(read(&m).unwrap(), 2);
    assert!(m.try_lock().is_ok());
}

#[test]
fn a_condvar_wait_keeps_a_repair_guard_and_fails_a_plain_one() {
    let m = Mutex::new(0u64).unwrap();
    let cv = Condvar::new().unwrap();
    die_holding(&m, 5);
    assert!(matches!(m.lock(), Err(LockError::OwnerDied)));
    // A repair guard survives the wait, poison and all.
    let guard = m.lock_for_repair().unwrap();
    let (guard, timed_out) = cv.wait_timeout(guard, Duration::from_millis(5)).unwrap();
    assert!(timed_out);
    assert_eq!(*guard, 5);
    drop(guard);
    // A plain guard taken before the death fails its wait once poisoned.
    let m2 = Mutex::new(0u64).unwrap();
    let guard = m2.lock().unwrap();
    let other = m2.clone();
    let waiter = std::thread::scope(|s| {
        let h = s.spawn(|| {
            // Runs after `guard` is released by the wait below.
            die_holding(&other, 7);
            cv.notify_all();
        });
        let result = cv
            .wait_timeout(guard, Duration::from_secs(10))
            .map(|(g, _)| *g);
        h.join().unwrap();
        result
    });
    assert!(matches!(waiter, Err(LockError::OwnerDied)), "{waiter:?}");
}

#[test]
fn lock_or_repair_repairs_once_then_locks_plainly() {
    let m = Mutex::new(1u64).unwrap();
    let mut repairs = 0;
    // No poison: the repair is not called.
    *m.lock_or_repair(|_| repairs += 1).unwrap() += 1;
    assert_eq!(repairs, 0);
    die_holding(&m, 99);
    {
        let guard = m
            .lock_or_repair(|v| {
                assert_eq!(*v, 99, "the repair sees what the dead holder left");
                repairs += 1;
                *v = 0;
            })
            .unwrap();
        assert_eq!(*guard, 0);
    }
    assert_eq!(repairs, 1);
    assert!(!m.is_poisoned(), "the repair cleared the poison");
    assert_eq!(*m.lock().unwrap(), 0);
    // A repair that panics leaves the lock free and still poisoned.
    die_holding(&m, 7);
    let m2 = m.clone();
    let panicked = std::thread::spawn(move || {
        let _ = m2.lock_or_repair(|_| panic!("cannot repair"));
    })
    .join();
    assert!(panicked.is_err());
    assert!(m.is_poisoned());
    assert!(matches!(m.lock(), Err(LockError::OwnerDied)));
    assert_eq!(*m.lock_or_repair(|v| *v = 3).unwrap(), 3);
}

#[test]
fn a_lock_is_released_without_a_guard_only_by_its_holder() {
    let lock = parpool_ipc::Lock::new(()).unwrap();
    let other = lock.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        std::mem::forget(other.lock().unwrap());
        held_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        other.unlock().unwrap();
    });
    held_rx.recv().unwrap();
    assert!(matches!(lock.unlock(), Err(LockError::NotHeld)));
    assert!(
        matches!(lock.try_lock(), Err(LockError::WouldBlock)),
        "a refused release left the holder's lock alone"
    );
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    let _free = lock.lock_timeout(Duration::from_secs(30)).unwrap();
}
