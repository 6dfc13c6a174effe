//! A job's command line: the template filled with its values and quoted
//! as GNU parallel quotes them, run by the shell GNU parallel would use,
//! or straight, without a shell, where that cannot change the result.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;

use super::template::{self, Fill, Word};

/// How the command is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A command template: run through the shell as GNU parallel does,
    /// input values quoted for it; started directly, without the shell,
    /// where that cannot change the result ([`Plan::direct`]).
    Template,
    /// No command was given: each input is a shell command.
    InputIsCommand,
}

/// The command template and how to run it.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) words: Vec<Word>,
    pub(crate) mode: Mode,
    /// No replacement string takes input: the values are appended.
    pub(crate) append: bool,
    /// `-q`: the template's own words are quoted too.
    pub(crate) quote_all: bool,
    /// `-N`, `-X`: a word holding `{}` is repeated for each input.
    pub(crate) context: bool,
    /// The shell commands run in (see [`shell`]).
    pub(crate) shell: std::path::PathBuf,
    /// Whether jobs may skip the shell: the template has no shell syntax,
    /// and the program is a file on `PATH` that the shell would run as
    /// it is (not a builtin that acts otherwise, not an exported function).
    pub(crate) direct: Direct,
    /// The program's path, found in `PATH` once for all jobs.
    pub(crate) program: Option<std::path::PathBuf>,
}

/// Whether jobs may start without the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direct {
    Never,
    Always,
    /// `echo` under a shell whose builtin `echo` reads backslash escapes
    /// (dash): direct only for values without a backslash.
    UnlessBackslash,
}

/// Shells GNU parallel recognises in the processes above it.
const SHELLS: &[&str] = &[
    "ash",
    "bash",
    "csh",
    "dash",
    "fdsh",
    "fish",
    "fizsh",
    "ksh",
    "ksh93",
    "lksh",
    "mksh",
    "pdksh",
    "posh",
    "rbash",
    "rc",
    "rush",
    "rzsh",
    "sash",
    "sh",
    "static-sh",
    "tcsh",
    "yash",
    "zsh",
];

/// Builtins of POSIX shells whose behaviour an external program of the
/// same name would not reproduce (or that exist only as builtins).
const BUILTINS: &[&str] = &[
    ".",
    ":",
    "[",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "cd",
    "command",
    "continue",
    "declare",
    "dirs",
    "disown",
    "enable",
    "eval",
    "exec",
    "exit",
    "export",
    "fc",
    "fg",
    "getopts",
    "hash",
    "help",
    "history",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "times",
    "trap",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "wait",
];

/// The shell GNU parallel would run commands in: `$PARALLEL_SHELL`, else
/// the nearest shell among the processes above this one, else `$SHELL`,
/// else `/bin/sh`.
pub(crate) fn shell() -> std::path::PathBuf {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(s) = set("PARALLEL_SHELL") {
        return s.into();
    }
    if let Some(s) = ancestor_shell() {
        return s;
    }
    set("SHELL").map_or_else(|| "/bin/sh".into(), Into::into)
}

/// The nearest process above this one that runs a known shell.
fn ancestor_shell() -> Option<std::path::PathBuf> {
    let mut pid = std::os::unix::process::parent_id();
    for _ in 0..64 {
        if pid <= 1 {
            return None;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok();
        let name = exe
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .or_else(|| comm.map(|c| c.trim().to_owned()))?;
        if SHELLS.contains(&name.as_str()) {
            return exe.or_else(|| find_in_path(name.as_bytes()));
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces and parens.
        let after = &stat[stat.rfind(')')? + 1..];
        pid = after.split_whitespace().nth(1)?.parse().ok()?;
    }
    None
}

/// Bytes a template word may hold, outside replacement strings, and still
/// mean the same to a shell as to `execve`.
fn plain_literal(b: &[u8], first_word: bool) -> bool {
    !b.is_empty()
        && !matches!(b[0], b'~' | b'#')
        && b.iter().all(|&c| {
            c.is_ascii_alphanumeric() || b"_./+:,@%^-".contains(&c) || (c == b'=' && !first_word)
        })
}

impl Plan {
    pub(crate) fn new(
        words: Vec<Word>,
        mode: Mode,
        append: bool,
        quote_all: bool,
        n_sources: usize,
    ) -> Plan {
        let shell = shell();
        let program = match (mode, words.first().map(Vec::as_slice)) {
            (Mode::Template, Some([template::Piece::Lit(name)])) => find_in_path(name),
            _ => None,
        };
        let direct = Self::direct(
            &words,
            mode,
            quote_all,
            n_sources,
            &shell,
            program.is_some(),
        );
        Plan {
            words,
            mode,
            append,
            quote_all,
            context: false,
            shell,
            direct,
            program,
        }
    }

    /// Fills one template word: with `context`, a word holding `{}` once
    /// per input value, the copies separated by spaces.
    fn fill(&self, w: &Word, fill: &Fill<'_>) -> Vec<u8> {
        let one = |f: &Fill<'_>| {
            if self.quote_all {
                template::shell_quote(&template::fill_word(w, f, false))
            } else {
                template::fill_word(w, f, true)
            }
        };
        let whole = w
            .iter()
            .any(|p| matches!(p, template::Piece::Input { source: None, .. }));
        if !self.context || !whole || fill.args.len() <= 1 {
            return one(fill);
        }
        let copies: Vec<Vec<u8>> = fill
            .args
            .iter()
            .enumerate()
            .map(|(at, a)| {
                one(&Fill {
                    args: std::slice::from_ref(a),
                    first: fill.first + at,
                    ..*fill
                })
            })
            .collect();
        copies.join(&b' ')
    }

    fn direct(
        words: &[Word],
        mode: Mode,
        quote_all: bool,
        n_sources: usize,
        shell: &std::path::Path,
        on_path: bool,
    ) -> Direct {
        let Some([template::Piece::Lit(name)]) = words.first().map(Vec::as_slice) else {
            return Direct::Never;
        };
        let name = String::from_utf8_lossy(name);
        let function = std::env::var_os(format!("BASH_FUNC_{name}%%")).is_some()
            || std::env::var_os(format!("BASH_FUNC_{name}()")).is_some();
        if mode != Mode::Template || !on_path || function || BUILTINS.contains(&name.as_ref()) {
            return Direct::Never;
        }
        for (i, word) in words.iter().enumerate() {
            // An empty word vanishes in the shell's command line.
            if word.is_empty() && !quote_all {
                return Direct::Never;
            }
            for piece in word {
                match piece {
                    template::Piece::Lit(b) if !quote_all && !plain_literal(b, i == 0) => {
                        return Direct::Never;
                    }
                    // `{}` of several sources is their values, each a word.
                    template::Piece::Input { source: None, .. } if n_sources > 1 => {
                        return Direct::Never;
                    }
                    _ => {}
                }
            }
        }
        let shell_name = shell
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == "echo" && !matches!(shell_name.as_str(), "bash" | "rbash" | "zsh" | "ksh") {
            Direct::UnlessBackslash
        } else {
            Direct::Always
        }
    }
}

/// Whether `argv` asks for the program's `--help` or `--version`, which
/// the programs that are also shell builtins (`echo`, `true`, `false`)
/// answer and the builtins do not (`echo --help` prints `--help`): such a
/// job goes through the shell, as GNU parallel runs every job.
fn help_or_version(argv: &[OsString]) -> bool {
    matches!(argv, [_, arg] if arg == "--help" || arg == "--version")
}

/// Where `execvp` would find `name`: the first executable file of that name
/// in a `PATH` directory. `None` for names with a slash, or not found (the
/// spawn then searches, and reports what it finds).
fn find_in_path(name: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if name.is_empty() || name.contains(&b'/') {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(std::ffi::OsStr::from_bytes(name)))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A command ready to start.
#[derive(Debug)]
pub(crate) struct Argv {
    /// The command line as the shell reads it: what runs, and what
    /// `--dry-run` and the joblog show.
    pub(crate) line: Vec<u8>,
    /// The same as program and arguments, when it may skip the shell.
    pub(crate) direct: Option<Vec<OsString>>,
}

impl Argv {
    /// The command as a shell would read it (for `--dry-run`, joblogs).
    pub(crate) fn display(&self) -> Vec<u8> {
        self.line.clone()
    }
}

impl Plan {
    /// The command line as the shell reads it.
    pub(crate) fn line(&self, fill: &Fill<'_>) -> Vec<u8> {
        if self.mode == Mode::InputIsCommand {
            let parts: Vec<&[u8]> = fill.args.iter().map(|a| a.as_bytes()).collect();
            return parts.join(&b' ');
        }
        let mut words: Vec<Vec<u8>> = self.words.iter().map(|w| self.fill(w, fill)).collect();
        if self.append {
            words.extend(
                fill.args
                    .iter()
                    .map(|a| template::shell_quote(a.as_bytes())),
            );
        }
        words.join(&b' ')
    }

    pub(crate) fn argv(&self, fill: &Fill<'_>) -> Argv {
        let line = self.line(fill);
        if self.mode == Mode::InputIsCommand {
            return Argv { line, direct: None };
        }
        let backslash = || fill.args.iter().any(|a| a.as_bytes().contains(&b'\\'));
        // A `{= perl =}` value that called `uq()` is for the shell to read.
        let unquoted = || fill.perl.is_some_and(super::perl::Evaluated::any_unquoted);
        let direct = match self.direct {
            Direct::Never => false,
            Direct::Always => !unquoted(),
            Direct::UnlessBackslash => !backslash() && !unquoted(),
        };
        let direct = direct.then(|| {
            let mut words: Vec<OsString> = self
                .words
                .iter()
                .map(|w| template::os(template::fill_word(w, fill, false)))
                .collect();
            if self.append {
                words.extend(fill.args.iter().cloned());
            }
            words
        });
        Argv {
            line,
            direct: direct.filter(|argv| !help_or_version(argv)),
        }
    }
}
