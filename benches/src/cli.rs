//! Command-line rows: `parpool run` against `xargs` and GNU parallel.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::TimedContender;

/// The `parpool` binary next to this one, built first if it is missing.
pub(crate) fn parpool_binary() -> PathBuf {
    PathBuf::from(sibling_binary("parpool", "parpool-cli"))
}

/// The release binary `name` of `package`, beside this one, built first
/// (cargo does nothing when it is up to date; a stale one would be
/// measured otherwise).
fn sibling_binary(name: &str, package: &str) -> String {
    let here = std::env::current_exe().expect("current exe");
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--bin",
            name,
        ])
        .status()
        .expect("cargo build");
    assert!(built.success(), "could not build {name}");
    here.with_file_name(name).display().to_string()
}

/// Whether GNU parallel is installed.
pub(crate) fn have_gnu_parallel() -> bool {
    Command::new("parallel")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts a contender with `stdin`, its output discarded and GNU
/// parallel's state kept out of the user's home; panics if it cannot start.
fn spawn_quiet(program: &str, args: &[String], stdin: Stdio) -> std::process::Child {
    Command::new(program)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env(
            "PARALLEL_HOME",
            std::env::temp_dir().join("parpool-bench-parallel"),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Runs `program args` with `input` on stdin, its output discarded;
/// panics if it fails (a broken contender must not look fast).
fn run_with_input(program: &str, args: &[String], input: &[u8]) {
    let mut child = spawn_quiet(program, args, Stdio::piped());
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The reader may stop early (a halt): a broken pipe is fine.
        let _ = stdin.write_all(&input);
    });
    let status = child.wait().expect("wait");
    let _ = writer.join();
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

fn lines(n: u64) -> Vec<u8> {
    (1..=n)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

fn contender(
    name: &'static str,
    program: String,
    args: &[&str],
    input: &std::sync::Arc<Vec<u8>>,
) -> TimedContender {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let input = input.clone();
    (
        name,
        Box::new(move || {
            run_with_input(&program, &args, &input);
            None
        }),
    )
}

/// Runs `n` jobs of `true`, two at a time, inputs on stdin.
pub(crate) fn true_jobs(n: u64) -> Vec<TimedContender> {
    let mut c = versus_gnu(
        n,
        ("parpool run -j 2", &["run", "-j", "2", "true"]),
        ("GNU parallel -j 2", &["-j", "2", "true"]),
    );
    let input = std::sync::Arc::new(lines(n));
    c.insert(
        1,
        contender(
            "xargs -P 2 -n 1",
            "xargs".into(),
            &["-P", "2", "-n", "1", "true"],
            &input,
        ),
    );
    c
}

/// parpool against GNU parallel (when installed) on the same stdin.
fn versus_gnu(
    n: u64,
    ours: (&'static str, &[&str]),
    gnu: (&'static str, &[&str]),
) -> Vec<TimedContender> {
    let input = std::sync::Arc::new(lines(n));
    let parpool = parpool_binary().display().to_string();
    let mut c = vec![contender(ours.0, parpool, ours.1, &input)];
    if have_gnu_parallel() {
        c.push(contender(gnu.0, "parallel".into(), gnu.1, &input));
    }
    c
}

/// `echo {}` in input order (`-k`), with `xargs` (no order kept, no
/// output grouped) as the floor: what starting the processes costs.
pub(crate) fn echo_keep_order(n: u64) -> Vec<TimedContender> {
    let mut c = versus_gnu(
        n,
        ("parpool run -k", &["run", "-k", "-j", "2", "echo", "{}"]),
        ("GNU parallel -k", &["-k", "-j", "2", "echo", "{}"]),
    );
    let input = std::sync::Arc::new(lines(n));
    c.insert(
        1,
        contender(
            "floor: xargs -P 2 -n 1 echo (unordered, ungrouped)",
            "xargs".into(),
            &["-P", "2", "-n", "1", "echo"],
            &input,
        ),
    );
    c
}

/// `--dry-run` over `n` stdin lines.
pub(crate) fn dry_run(n: u64) -> Vec<TimedContender> {
    versus_gnu(
        n,
        ("parpool run --dry-run", &["run", "--dry-run", "echo"]),
        ("GNU parallel --dry-run", &["--dry-run", "echo"]),
    )
}

/// Peak resident memory (reported in place of seconds, as MiB) while `n`
/// inputs wait in a file behind two slow jobs, until the first few finish.
pub(crate) fn queued_memory(n: u64) -> Vec<TimedContender> {
    let path = std::env::temp_dir().join(format!("parpool-bench-queued-{n}"));
    std::fs::write(&path, lines(n)).expect("write the input file");
    let file = path.display().to_string();
    let parpool = parpool_binary().display().to_string();
    let args = |first: Vec<String>| -> Vec<String> {
        let mut a = first;
        a.extend(
            [
                "-j",
                "2",
                "--halt",
                "now,success=4",
                "sleep",
                "0.2",
                "::::",
                &file,
            ]
            .map(String::from),
        );
        a
    };
    let mut c: Vec<TimedContender> = vec![(
        "parpool run",
        Box::new({
            let a = args(vec!["run".into()]);
            move || Some(peak_mib(&parpool, &a))
        }),
    )];
    if have_gnu_parallel() {
        let a = args(Vec::new());
        c.push((
            "GNU parallel",
            Box::new(move || Some(peak_mib("parallel", &a))),
        ));
    }
    // The floor: a minimal Rust program (std only) doing the same work.
    let floor = sibling_binary("spawn-floor", "parpool-bench");
    c.push((
        "floor: a minimal Rust program doing the same",
        Box::new(move || Some(peak_mib(&floor, std::slice::from_ref(&file)))),
    ));
    c
}

/// Runs a command and returns its peak resident memory (`VmHWM`) in MiB,
/// read from `/proc` until it exits.
fn peak_mib(program: &str, args: &[String]) -> f64 {
    let mut child = spawn_quiet(program, args, Stdio::null());
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_file)
            && let Some(kib) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    peak_kib as f64 / 1024.0
}

/// `echo $HOME {}`: a command only a shell runs right, so both tools pay
/// for one per job.
pub(crate) fn shell_path(n: u64) -> Vec<TimedContender> {
    versus_gnu(
        n,
        (
            "parpool run (through the shell)",
            &["run", "-j", "2", "echo", "$HOME", "{}"],
        ),
        ("GNU parallel", &["-j", "2", "echo", "$HOME", "{}"]),
    )
}

/// `--pipe`: `bytes` of lines on stdin, cut into blocks, each counted by
/// `wc -l`, two jobs at a time.
pub(crate) fn pipe_wc(bytes: u64) -> Vec<TimedContender> {
    let line = b"a line of input that is about sixty bytes long, give or take\n";
    let len = usize::try_from(bytes).unwrap_or(usize::MAX) / line.len() * line.len();
    let input: Vec<u8> = line.iter().copied().cycle().take(len).collect();
    let input = std::sync::Arc::new(input);
    let parpool = parpool_binary().display().to_string();
    let mut c = vec![contender(
        "parpool run --pipe",
        parpool,
        &["run", "--pipe", "-j", "2", "wc", "-l"],
        &input,
    )];
    if have_gnu_parallel() {
        c.push(contender(
            "GNU parallel --pipe",
            "parallel".into(),
            &["--pipe", "-j", "2", "wc", "-l"],
            &input,
        ));
    }
    c
}

/// `--pipepart`: a file of `bytes` of lines cut into parts (GNU
/// parallel's default: 10 a job slot), each counted by `wc -l`, two jobs
/// at a time; beside it the floor: two `wc -l`s on the halves, each
/// already a file of its own.
pub(crate) fn pipepart_wc(bytes: u64) -> Vec<TimedContender> {
    let path = std::env::temp_dir().join(format!("parpool-bench-pipepart-{bytes}"));
    if std::fs::metadata(&path).map(|m| m.len()).ok() != Some(bytes) {
        let line = b"a line of input that is about sixty bytes long, give or take\n";
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("file"));
        let mut left = bytes as usize;
        while left > 0 {
            let n = left.min(line.len());
            out.write_all(&line[..n]).expect("write");
            left -= n;
        }
        out.flush().expect("flush");
    }
    let file = path.display().to_string();
    let empty = std::sync::Arc::new(Vec::new());
    let parpool = parpool_binary().display().to_string();
    let mut c = vec![contender(
        "parpool run --pipepart",
        parpool,
        &["run", "--pipepart", "-j", "2", "-a", &file, "wc", "-l"],
        &empty,
    )];
    if have_gnu_parallel() {
        c.push(contender(
            "GNU parallel --pipepart",
            "parallel".into(),
            &["--pipepart", "-j", "2", "-a", &file, "wc", "-l"],
            &empty,
        ));
    }
    // The floor: the same two `wc -l`s on the file's halves, each its
    // own file (no cutting, no pipes, nothing between wc and the file).
    let halves: Vec<String> = (0..2u64)
        .map(|i| {
            let half = path.with_extension(format!("half{i}"));
            let size = bytes.div_ceil(2);
            let start = i * size;
            let len = size.min(bytes - start);
            if std::fs::metadata(&half).map(|m| m.len()).ok() != Some(len) {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len as usize];
                std::fs::File::open(&path)
                    .and_then(|f| f.read_exact_at(&mut buf, start))
                    .expect("read");
                std::fs::write(&half, &buf).expect("write");
            }
            half.display().to_string()
        })
        .collect();
    // The floor for any tool that hands a job its part on stdin, as
    // --pipepart must: each half spliced into a wc's stdin, 2 at once.
    let floor = sibling_binary("spawn-floor", "parpool-bench");
    let mut splice_args = vec!["--splice".to_string()];
    splice_args.extend(halves.iter().cloned());
    c.push((
        "floor through pipes: each half spliced into wc -l, 2 at once",
        crate::process::wall(move || {
            let mut child = spawn_quiet(&floor, &splice_args, Stdio::null());
            assert!(child.wait().expect("wait").success());
        }),
    ));
    c.push((
        "floor: wc -l on each half, its own file, 2 at once",
        crate::process::wall(move || {
            let children: Vec<_> = halves
                .iter()
                .map(|h| spawn_quiet("wc", &["-l".to_string(), h.clone()], Stdio::null()))
                .collect();
            for mut child in children {
                assert!(child.wait().expect("wait").success());
            }
        }),
    ));
    c
}

/// `sem --fg true`, `n` times in a row on one semaphore: what a script
/// pays for each command it guards, from the call to the command's end.
pub(crate) fn sem_fg(n: u64) -> Vec<TimedContender> {
    let home = std::env::temp_dir().join("parpool-bench-parallel");
    let run = move |program: String, first: Vec<String>| {
        let home = home.clone();
        crate::process::wall(move || {
            for _ in 0..n {
                let status = Command::new(&program)
                    .args(&first)
                    .args(["--id", "parpool-bench", "--fg", "true"])
                    .env("PARALLEL_HOME", &home)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .expect("sem");
                assert!(status.success());
            }
        })
    };
    let mut c = vec![(
        "parpool sem",
        run(parpool_binary().display().to_string(), vec!["sem".into()]),
    )];
    if have_gnu_parallel() {
        c.push(("GNU sem", run("sem".into(), Vec::new())));
    }
    c
}

/// `echo {= s/1/one/ =}` on `n` stdin lines, two at a time: a perl
/// expression evaluated per job (parpool's one perl for the run, GNU
/// parallel's own).
pub(crate) fn perl_expression(n: u64) -> Vec<TimedContender> {
    versus_gnu(
        n,
        (
            "parpool run {= perl =}",
            &["run", "-j", "2", "echo", "{= s/1/one/ =}"],
        ),
        (
            "GNU parallel {= perl =}",
            &["-j", "2", "echo", "{= s/1/one/ =}"],
        ),
    )
}
