//! `parpool completions` and `parpool man`, end to end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn parpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parpool"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Standard output of a run that must succeed, as text.
fn stdout_of(args: &[&str]) -> String {
    let o = parpool(args);
    assert!(
        o.status.success(),
        "parpool {args:?}: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("completions-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Options of `parpool run` that every script must know: clap never
/// parses them, so they are there only if the description of `run` is.
const RUN_OPTIONS: &[&str] = &[
    "--jobs",
    "--keep-order",
    "--joblog",
    "--halt",
    "--timeout",
    "--pipe",
    "--sshlogin",
    "--tag",
    "--dry-run",
    "--arg-file",
    "--colsep",
    "--results",
];

/// The words of the bash script's option list for `parpool run`.
fn bash_run_options(script: &str) -> Vec<String> {
    let at = script
        .find("parpool__subcmd__run)")
        .expect("a case for `parpool run`");
    let line = script[at..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("opts=\""))
        .expect("its option list");
    line.trim_end_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_script_knows_the_subcommands_and_run_options() {
    let script = stdout_of(&["completions", "bash"]);
    assert!(script.contains("complete -F _parpool"), "{script}");
    for word in ["parpool", "completions", "compare", "man"] {
        assert!(script.contains(word), "no {word}");
    }
    let run = bash_run_options(&script);
    for option in RUN_OPTIONS
        .iter()
        .chain(&["-j", "-k", "-S", "-a", "-N", "-n", "-X", "-m"])
    {
        assert!(run.iter().any(|o| o == option), "{option} not in {run:?}");
    }
}

#[test]
fn every_run_option_in_the_script_is_one_run_accepts() {
    let run = bash_run_options(&stdout_of(&["completions", "bash"]));
    assert!(run.len() > 40, "{run:?}");
    for option in &run {
        // With nothing after it: a value missing, help, version, or no
        // command and no input (stdin is empty); never "unknown option".
        let o = parpool(&["run", option]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(
            !stderr.contains("unknown option") && !stderr.contains("ambiguous"),
            "{option}: {stderr}"
        );
    }
    for option in ["--bogus", "-Z"] {
        let o = parpool(&["run", option]);
        assert_eq!(o.status.code(), Some(255), "{option}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("unknown option"));
    }
}

#[test]
fn bash_script_is_valid_bash() {
    let script = stdout_of(&["completions", "bash"]);
    let path = scratch("bash").join("parpool.bash");
    std::fs::write(&path, &script).unwrap();
    let o = match Command::new("bash").arg("-n").arg(&path).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("no bash here: syntax not checked");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Sourced, it registers the function for `parpool`.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(". '{}' && complete -p parpool", path.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("_parpool"));
}

#[test]
fn every_shell_gets_a_script_with_run_options() {
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let script = stdout_of(&["completions", shell]);
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        for word in ["parpool", "completions", "joblog", "keep-order", "sshlogin"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    // Descriptions reach the shells that show them.
    let zsh = stdout_of(&["completions", "zsh"]);
    assert!(zsh.contains("#compdef parpool"));
    assert!(
        zsh.contains("--joblog=[log each job in GNU parallel"),
        "{zsh}"
    );
}

#[test]
fn an_unknown_shell_is_refused_with_the_choices() {
    let o = parpool(&["completions", "tcsh"]);
    assert!(!o.status.success());
    assert!(o.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("invalid value 'tcsh'"), "{stderr}");
    assert!(stderr.contains("possible values"), "{stderr}");
    assert!(
        stderr.contains("bash") && stderr.contains("zsh"),
        "{stderr}"
    );
    let o = parpool(&["completions"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("<SHELL>"));
}

/// Whether `page` is a man page in roff titled `title`: only requests
/// before its `.TH` (the apostrophe string's definition), then sections.
fn assert_roff_page(page: &str, title: &str) {
    let mut lines = page.lines();
    let th = lines
        .by_ref()
        .find(|l| !l.starts_with(".ie ") && !l.starts_with(".el "))
        .unwrap_or_default();
    assert!(
        th.starts_with(&format!(".TH {title} 1 ")),
        "{th:?} in\n{page}"
    );
    assert!(page.starts_with('.'), "{page}");
    assert!(lines.clone().any(|l| l == ".SH NAME"));
    assert!(lines.clone().any(|l| l == ".SH SYNOPSIS"));
    assert!(page.lines().filter(|l| l.starts_with(".TH ")).count() == 1);
}

#[test]
fn man_prints_parpools_page_with_its_subcommands() {
    let page = stdout_of(&["man"]);
    assert_roff_page(&page, "parpool");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for sub in ["run", "compare", "completions", "man"] {
        assert!(
            page.contains(&format!("parpool\\-{sub}(1)")),
            "{sub}: {page}"
        );
    }
    assert!(!page.contains("parpool\\-help"), "{page}");
}

#[test]
fn man_run_documents_runs_own_options_and_sections() {
    let page = stdout_of(&["man", "run"]);
    assert_roff_page(&page, "parpool-run");
    for option in RUN_OPTIONS {
        let roff = option.replace('-', "\\-");
        assert!(page.contains(&roff), "{option}: {page}");
    }
    for section in [
        ".SH OPTIONS",
        ".SH \"INPUTS (after the command)\"",
        ".SH \"REPLACEMENT STRINGS\"",
        ".SH \"EXIT STATUS\"",
        ".SH EXAMPLES",
    ] {
        assert!(page.lines().any(|l| l == section), "{section}: {page}");
    }
    let compare = stdout_of(&["man", "compare"]);
    assert_roff_page(&compare, "parpool-compare");
    assert!(compare.contains("\\-\\-json"));
}

#[test]
fn man_dir_writes_every_page() {
    let dir = scratch("man").join("man1");
    let listed = stdout_of(&["man", "--dir", dir.to_str().unwrap()]);
    let names = [
        "parpool",
        "parpool-run",
        "parpool-compare",
        "parpool-sem",
        "parpool-completions",
        "parpool-man",
    ];
    assert_eq!(listed.lines().count(), names.len(), "{listed}");
    for name in names {
        let path = dir.join(format!("{name}.1"));
        assert!(
            listed.lines().any(|l| Path::new(l) == path),
            "{name}: {listed}"
        );
        let page = std::fs::read_to_string(&path).unwrap();
        assert_roff_page(&page, name);
        // groff, where there is one, finds nothing to warn about.
        if let Ok(mut groff) = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            groff
                .stdin
                .take()
                .unwrap()
                .write_all(page.as_bytes())
                .unwrap();
            let o = groff.wait_with_output().unwrap();
            assert!(o.status.success() && o.stderr.is_empty(), "{name}: {o:?}");
        }
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), names.len());
}

#[test]
fn man_refuses_an_unknown_page_and_dir_with_a_page() {
    let o = parpool(&["man", "bogus"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(o.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("no man page for `bogus`"), "{stderr}");
    assert!(
        stderr.contains("compare, sem, completions, man, run"),
        "{stderr}"
    );
    let o = parpool(&["man", "--dir", "x", "run"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
}

#[test]
fn a_failed_write_is_an_error_not_a_panic() {
    // /dev/full: every write fails (ENOSPC).
    if Path::new("/dev/full").exists() {
        for args in [&["completions", "bash"][..], &["man"], &["man", "run"]] {
            let o = Command::new(env!("CARGO_BIN_EXE_parpool"))
                .args(args)
                .stdout(std::fs::File::create("/dev/full").unwrap())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(255), "{args:?}: {stderr}");
            assert!(
                stderr.contains("cannot write to standard output"),
                "{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
    }
    // A pipe closed before the script is written (as `| head -0` might).
    let mut child = Command::new(env!("CARGO_BIN_EXE_parpool"))
        .args(["completions", "zsh"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    if !o.status.success() {
        assert_eq!(o.status.code(), Some(255), "{stderr}");
        assert!(
            stderr.contains("cannot write to standard output"),
            "{stderr}"
        );
    }
}

#[test]
fn help_says_how_to_install_them() {
    let help = stdout_of(&["completions", "--help"]);
    assert!(
        help.contains(
            "parpool completions bash > ~/.local/share/bash-completion/completions/parpool"
        ),
        "{help}"
    );
    assert!(help.contains("parpool completions fish > ~/.config/fish/completions/parpool.fish"));
    let help = stdout_of(&["man", "--help"]);
    assert!(
        help.contains("parpool man --dir ~/.local/share/man/man1"),
        "{help}"
    );
    let help = stdout_of(&["--help"]);
    assert!(
        help.contains("completions") && help.contains("man"),
        "{help}"
    );
}
