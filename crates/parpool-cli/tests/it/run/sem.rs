//! `--semaphore` (`parpool sem`, `sem`): GNU sem's counting semaphore
//! across invocations, robust to a holder killed.

use super::*;

fn sem(args: &[&str]) -> Command {
    let mut c = parpool();
    c.arg("sem").args(args);
    c
}

/// A unique semaphore name for this test run.
fn id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// `--fg` runs in the foreground with the command's exit status; the
/// default returns at once with the command holding the slot, so the next
/// one waits for it; `--wait` waits for them all; `--st` gives up or
/// goes ahead; the same as GNU sem's behaviour.
#[test]
fn sem_waits_for_a_slot_and_wait_waits_for_all() {
    let dir = scratch("sem-basic");
    let log = dir.join("log");
    let l = log.to_str().unwrap();
    let name = id("basic");
    let o = sem(&["--id", &name, "--fg", "echo fg; exit 3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "fg\n");
    let t = Instant::now();
    let first = format!("sleep 0.5; echo first >> {l}");
    assert!(sem(&["--id", &name, &first]).status().unwrap().success());
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "the background run did not return at once"
    );
    let second = format!("echo second >> {l}");
    assert!(sem(&["--id", &name, &second]).status().unwrap().success());
    assert!(sem(&["--id", &name, "--wait"]).status().unwrap().success());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "first\nsecond\n");
    // --st: below 0 gives up (exit 1), above 0 goes ahead.
    assert!(sem(&["--id", &name, "sleep 2"]).status().unwrap().success());
    let o = sem(&["--id", &name, "--st", "-0.2", "echo no"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let o = sem(&["--id", &name, "--fg", "--st", "0.2", "echo yes"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "yes\n");
    assert!(sem(&["--id", &name, "--wait"]).status().unwrap().success());
}

/// Never more than `-j` at once across 40 invocations started together,
/// some of whose holders are killed with SIGKILL mid-run: every slot a
/// dead holder had is free again at once, so the rest all run, within a
/// bound.
#[test]
fn at_most_j_at_once_and_a_killed_holder_frees_its_slot() {
    let dir = scratch("sem-adversary");
    let d = dir.to_str().unwrap();
    let name = id("adversary");
    // Each command marks itself running, records how many are, waits a
    // little and unmarks itself.
    let script = format!(
        "touch {d}/run.$$; ls {d} | grep -c '^run\\.' >> {d}/seen; sleep 0.05; rm {d}/run.$$; echo done >> {d}/done"
    );
    let mut children: Vec<std::process::Child> = (0..40)
        .map(|_| {
            sem(&["--id", &name, "-j", "3", "--fg", &script])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Kill every eighth waiter or holder outright.
    for child in children.iter_mut().step_by(8) {
        let _ = child.kill();
    }
    let deadline = Duration::from_secs(60);
    let mut killed = 0;
    for (i, mut child) in children.into_iter().enumerate() {
        let status = wait_within(&mut child, deadline).expect("a sem invocation hung");
        if i % 8 == 0 {
            killed += 1;
        } else {
            assert!(status.success(), "invocation {i}: {status}");
        }
    }
    let seen = std::fs::read_to_string(dir.join("seen")).unwrap();
    let most = seen
        .lines()
        .map(|l| l.trim().parse::<u32>().unwrap())
        .max()
        .unwrap();
    assert!(most <= 3, "{most} ran at once with -j 3");
    let done = std::fs::read_to_string(dir.join("done"))
        .unwrap()
        .lines()
        .count();
    assert!(
        done >= 40 - killed,
        "{done} of the {} not killed finished",
        40 - killed
    );
    // A command killed while it holds its slot: the slot is free at once.
    let pid_file = dir.join("holder.pid");
    let holder = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    assert!(sem(&["--id", &name, &holder]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "the holder never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    let t = Instant::now();
    let o = sem(&["--id", &name, "--fg", "--st", "-10", "echo free"])
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "free\n");
    assert!(t.elapsed() < Duration::from_secs(5));
}
