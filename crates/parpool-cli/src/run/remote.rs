//! Jobs on other machines through `ssh`, as GNU parallel runs them:
//! `-S`/`--sshlogin` and `--sshloginfile` name the machines (`N/` before
//! one gives its job slots, `:` is this machine), `--ssh` the command that
//! reaches them, and `--transferfile`/`--return`/`--cleanup` (`--trc`)
//! move files there and back.
//!
//! A job on a machine runs as `ssh … HOST -- COMMAND`: the remote login
//! shell reads the same command line a local shell would. Each machine is
//! checked once before any job starts; one that cannot be reached is
//! reported and its jobs run on the others.

use std::ffi::OsString;
use std::io;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::template;

/// Where jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    /// `None`: this machine; else the ssh command and its destination.
    pub(crate) ssh: Option<Vec<String>>,
    /// Job slots on it (`None`: ask it how many cores it has).
    pub(crate) slots: Option<usize>,
    /// How it is named in messages.
    pub(crate) name: String,
}

/// Parses sshlogins: comma-separated, each `[N/]LOGIN`, where LOGIN is
/// `:` (this machine), `[user@]host`, or a whole ssh command ending in
/// the host (`ssh -p 2222 user@host`). `ssh` is the command used for
/// plain logins.
pub(crate) fn parse_logins(specs: &[String], ssh: &str) -> Result<Vec<Host>, String> {
    let mut hosts = Vec::new();
    for spec in specs.iter().flat_map(|s| s.split(',')) {
        let spec = spec.trim();
        if spec.is_empty() || spec.starts_with('#') {
            continue;
        }
        let (slots, login) = match spec.split_once('/') {
            Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("sshlogin `{spec}`: bad job slot count"))?;
                (Some(n.max(1)), rest)
            }
            _ => (None, spec),
        };
        if login.is_empty() {
            return Err(format!("sshlogin `{spec}` names no host"));
        }
        if login == ":" {
            hosts.push(Host {
                ssh: None,
                slots,
                name: ":".into(),
            });
            continue;
        }
        let mut words: Vec<String> = if login.contains(char::is_whitespace) {
            login.split_whitespace().map(str::to_owned).collect()
        } else {
            let mut w: Vec<String> = ssh.split_whitespace().map(str::to_owned).collect();
            w.push(login.to_owned());
            w
        };
        if words.len() < 2 {
            return Err(format!("sshlogin `{spec}` names no host"));
        }
        let name = words.last().cloned().unwrap_or_default();
        // Never wait for a password or a host-key question (ssh itself
        // only: a wrapper such as sshpass takes other options).
        if is_ssh(&words) {
            words.insert(1, "-oBatchMode=yes".into());
        }
        hosts.push(Host {
            ssh: Some(words),
            slots,
            name,
        });
    }
    Ok(hosts)
}

/// Reads an sshloginfile: one sshlogin per line, `#` comments.
pub(crate) fn read_login_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let path = if path.as_os_str() == ".." {
        let home = std::env::var_os("PARALLEL_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".parallel"))
            })
            .unwrap_or_default();
        home.join("sshloginfile")
    } else {
        path.to_owned()
    };
    std::fs::read_to_string(&path)
        .map(|text| text.lines().map(str::to_owned).collect())
        .map_err(|e| format!("cannot read the sshloginfile {}: {e}", path.display()))
}

/// Checks each remote host answers (in parallel, 30 s at most) and learns
/// its cores where no slot count was given; drops, with a warning, those
/// that do not answer. `local_slots` is the slots of `:` without `N/`;
/// `slots_for(cores)` those of a remote host (`-j` applies to each).
pub(crate) fn prepare(
    hosts: Vec<Host>,
    local_slots: usize,
    slots_for: fn(&str, usize) -> usize,
    jobs: String,
) -> Vec<(Host, usize)> {
    let checks: Vec<_> = hosts
        .into_iter()
        .map(|host| {
            let jobs = jobs.clone();
            std::thread::spawn(move || {
                let Some(ssh) = &host.ssh else {
                    let slots = host.slots.unwrap_or(local_slots);
                    return Ok((host, slots));
                };
                let out = run_ssh(
                    ssh,
                    "nproc 2>/dev/null || echo 1",
                    None,
                    Duration::from_secs(30),
                )
                .map_err(|e| (host.name.clone(), e.to_string()))?;
                if !out.status.success() {
                    let why = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                    return Err((host.name.clone(), why));
                }
                let cores = String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<usize>()
                    .unwrap_or(1)
                    .max(1);
                let slots = host.slots.unwrap_or_else(|| slots_for(&jobs, cores));
                Ok((host, slots))
            })
        })
        .collect();
    let mut ready = Vec::new();
    for check in checks {
        match check.join() {
            Ok(Ok(host)) => ready.push(host),
            Ok(Err((name, why))) => eprintln!(
                "parpool: warning: {name} cannot be reached ({why}); its jobs run on the other \
                 machines"
            ),
            Err(_) => {}
        }
    }
    ready
}

/// Runs `ssh … -- remote` with `stdin` (or nothing), waiting at most
/// `limit`.
fn run_ssh(
    ssh: &[String],
    remote: &str,
    stdin: Option<&std::path::Path>,
    limit: Duration,
) -> io::Result<std::process::Output> {
    let mut cmd = Command::new(&ssh[0]);
    cmd.args(&ssh[1..]);
    if is_ssh(ssh) {
        cmd.arg(format!("-oConnectTimeout={}", limit.as_secs().max(1)));
    }
    cmd.arg("--")
        .arg(remote)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match stdin {
        Some(path) => cmd.stdin(std::fs::File::open(path)?),
        None => cmd.stdin(Stdio::null()),
    };
    // A host that connects and then stalls must not hold the run: the
    // whole exchange gets `limit`, then it is stopped.
    let child = cmd.spawn()?;
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if wait.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            && let Some(pid) = rustix::process::Pid::from_raw(pid as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    });
    let out = child.wait_with_output();
    drop(done);
    let _ = watchdog.join();
    out
}

/// Whether the command is ssh itself (not a wrapper such as sshpass),
/// whose options parpool may add.
fn is_ssh(ssh: &[String]) -> bool {
    ssh.first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .is_some_and(|n| n == "ssh")
}

/// The program and arguments that run `line` on `ssh`'s host.
pub(crate) fn command(ssh: &[String], line: &[u8]) -> Vec<OsString> {
    let mut argv: Vec<OsString> = ssh.iter().map(OsString::from).collect();
    argv.push("--".into());
    argv.push(template::os(line.to_vec()));
    argv
}

/// Sends local `path` to the same path on the host (its directory made
/// first; a relative path is under the remote home).
pub(crate) fn send(ssh: &[String], path: &[u8]) -> Result<(), String> {
    let quoted = template::shell_quote(path);
    let q = String::from_utf8_lossy(&quoted);
    let remote = format!("mkdir -p -- \"$(dirname -- {q})\" && cat > {q}");
    let local = std::path::Path::new(std::ffi::OsStr::from_bytes_compat(path));
    check(
        run_ssh(ssh, &remote, Some(local), Duration::from_secs(30)),
        "send",
        path,
    )
}

/// Fetches the host's `path` into the same local path.
pub(crate) fn fetch(ssh: &[String], path: &[u8]) -> Result<(), String> {
    let quoted = template::shell_quote(path);
    let remote = format!("cat -- {}", String::from_utf8_lossy(&quoted));
    let out = run_ssh(ssh, &remote, None, Duration::from_secs(30))
        .map_err(|e| format!("cannot fetch {}: {e}", String::from_utf8_lossy(path)))?;
    if !out.status.success() {
        return Err(format!(
            "cannot fetch {}: {}",
            String::from_utf8_lossy(path),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let local = std::path::Path::new(std::ffi::OsStr::from_bytes_compat(path));
    if let Some(dir) = local.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(local, out.stdout).map_err(|e| format!("cannot write {}: {e}", local.display()))
}

/// Removes `paths` on the host.
pub(crate) fn remove(ssh: &[String], paths: &[Vec<u8>]) -> Result<(), String> {
    if paths.is_empty() {
        return Ok(());
    }
    let quoted: Vec<String> = paths
        .iter()
        .map(|p| String::from_utf8_lossy(&template::shell_quote(p)).into_owned())
        .collect();
    let remote = format!("rm -f -- {}", quoted.join(" "));
    check(
        run_ssh(ssh, &remote, None, Duration::from_secs(30)),
        "clean up",
        &paths[0],
    )
}

fn check(out: io::Result<std::process::Output>, what: &str, path: &[u8]) -> Result<(), String> {
    let name = String::from_utf8_lossy(path);
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "cannot {what} {name}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("cannot {what} {name}: {e}")),
    }
}

/// `OsStr` from bytes (Unix).
trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        use std::os::unix::ffi::OsStrExt;
        std::ffi::OsStr::from_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sshlogins_read_as_gnu_parallel_s() {
        let hosts = parse_logins(
            &["2/alice@a, :,4/ssh -p 2222 b".into(), "c".into()],
            "ssh -q",
        )
        .unwrap();
        assert_eq!(hosts.len(), 4);
        assert_eq!(hosts[0].slots, Some(2));
        assert_eq!(
            hosts[0].ssh.as_deref().unwrap(),
            ["ssh", "-oBatchMode=yes", "-q", "alice@a"]
        );
        assert_eq!(hosts[1].ssh, None);
        assert_eq!(hosts[2].name, "b");
        assert_eq!(
            hosts[2].ssh.as_deref().unwrap(),
            ["ssh", "-oBatchMode=yes", "-p", "2222", "b"]
        );
        assert_eq!(hosts[3].slots, None);
        assert!(parse_logins(&["3/".into()], "ssh").is_err());
    }
}
