//! `--onall`, `--nonall` and `--basefile`, through a loopback sshd,
//! against GNU parallel through the same one.

use super::*;

#[test]
fn onall_nonall_and_basefile_match_gnu_parallel() {
    let Some(server) = LoopbackSshd::start("sshd-onall") else {
        return;
    };
    let ssh = server.ssh();
    let two = "1/root@127.0.0.1,1/:";
    let cases: &[&[&str]] = &[
        &["--ssh", &ssh, "-S", two, "-k", "--nonall", "echo hi"],
        &[
            "--ssh", &ssh, "-S", two, "-k", "--nonall", "--tag", "echo hi",
        ],
        &[
            "--ssh", &ssh, "-S", two, "-k", "--onall", "echo", ":::", "a", "b",
        ],
        &[
            "--ssh", &ssh, "-S", two, "-k", "-j1", "--onall", "echo {}", ":::", "a", "b",
        ],
    ];
    for case in cases {
        same_as_gnu_in(case, &server.dir, &[]);
    }
    // --basefile: there before the first job; gone afterwards with
    // --cleanup.
    let work = server.dir.join("work-bf");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("parpool-base.txt"), "base\n").unwrap();
    let o = parpool()
        .current_dir(&work)
        .args(["run", "--ssh", &ssh, "-S", "1/root@127.0.0.1"])
        .args(["--basefile", "parpool-base.txt", "--cleanup", "-k"])
        .args(["cat parpool-base.txt; echo {}", ":::", "1", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), "base\n1\nbase\n2\n");
    let left = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{ssh} root@127.0.0.1 'ls parpool-base.txt 2>/dev/null | wc -l'"
        ))
        .output()
        .unwrap();
    assert_eq!(stdout(&left).trim(), "0", "--cleanup removed the base file");
    // Without machines: a usage error.
    let o = run(&["--nonall", "echo", "hi"]);
    assert_eq!(o.status.code(), Some(255));
}
