//! `parpool run --help`, and `run` described for clap (man page, shell
//! completions), both from the options table.

use super::table::{SPECS, Section, Spec, Takes};

/// `parpool run`'s usage line.
const USAGE: &str = "parpool run [OPTIONS] [COMMAND [ARGS]...] [::: INPUTS]...";

/// `parpool run` described for clap, from the table [`parse`] reads, for
/// the shell completions and the man page only: the words after `run` are
/// never parsed by clap (`main` hands them to [`parse`] before clap sees
/// them), so this lists exactly the options `parse` accepts.
pub(crate) fn command() -> clap::Command {
    use clap::{Arg, ArgAction, ValueHint};
    let mut cmd = clap::Command::new("run")
        .about(ABOUT)
        .version(env!("CARGO_PKG_VERSION"))
        .override_usage(USAGE)
        .after_long_help(AFTER.trim_end())
        .disable_help_flag(true)
        .disable_version_flag(true);
    for spec in SPECS {
        let id = match (spec.long.first(), spec.short.first().copied()) {
            (Some(long), _) => long,
            (None, Some(short)) => short_id(short),
            (None, None) => continue,
        };
        let mut arg = Arg::new(id);
        if let Some((&short, also)) = spec.short.split_first() {
            arg = arg.short(short).visible_short_aliases(also.iter().copied());
        }
        arg = match spec.long.split_first() {
            Some((long, [])) => arg.long(long).help(spec.help),
            Some((long, aliases)) => {
                // Man pages do not show aliases: the help line names them.
                let also: Vec<String> = aliases.iter().map(|a| format!("--{a}")).collect();
                arg.long(long).visible_aliases(aliases).help(format!(
                    "{} (also {})",
                    spec.help,
                    also.join(", ")
                ))
            }
            None => arg.help(spec.help),
        };
        arg = match spec.takes {
            Takes::Nothing => arg.action(match spec.short.first().copied() {
                Some('h') => ArgAction::Help,
                Some('V') => ArgAction::Version,
                _ => ArgAction::SetTrue,
            }),
            Takes::Value(name) => {
                let arg = arg
                    .value_name(name)
                    .action(ArgAction::Append)
                    .value_hint(value_hint(spec));
                match spec.long.first() {
                    // The help line lists them already.
                    Some(&"trim") => arg
                        .value_parser(["lr", "rl", "l", "r", "n"])
                        .hide_possible_values(true),
                    _ => arg,
                }
            }
        };
        cmd = cmd.arg(arg);
    }
    cmd.arg(
        Arg::new("command")
            .value_name("COMMAND")
            .help("the command and its arguments, then the inputs (::: A B C, :::: FILE)")
            .num_args(1..)
            .trailing_var_arg(true)
            .allow_hyphen_values(true)
            .value_hint(ValueHint::CommandWithArguments),
    )
}

/// A short option's letter as a `&'static str`, for a clap id.
fn short_id(c: char) -> &'static str {
    const LETTERS: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    LETTERS
        .find(c)
        .map_or("", |at| &LETTERS[at..at + c.len_utf8()])
}

/// What a shell should offer for an option's value.
fn value_hint(spec: &Spec) -> clap::ValueHint {
    use clap::ValueHint;
    match spec.long.first().copied() {
        Some("joblog" | "arg-file" | "sshloginfile" | "transferfile") => ValueHint::FilePath,
        Some("results") => ValueHint::DirPath,
        Some("ssh") => ValueHint::CommandString,
        Some("sshlogin") => ValueHint::Hostname,
        _ => ValueHint::Other,
    }
}

/// What `parpool run` is, in one line.
const ABOUT: &str = "Run a command once per input, in parallel (GNU parallel's syntax).";

/// What `--help` says after the options (and the man page after its
/// OPTIONS): blocks headed `HEADING:`.
const AFTER: &str = "\
DEFAULT OPTIONS:
  The lines of ~/.parallel/config ($PARALLEL_HOME/config), then $PARALLEL,
  go before the command line's.

INPUTS (after the command):
  ::: A B C      arguments as inputs; several ::: give every combination
  :::+ 1 2 3     paired with the source before (stops at the shorter)
  :::: FILE      lines of FILE (- is standard input); ::::+ pairs it
  (none)         lines of standard input

REPLACEMENT STRINGS:
  {}  input    {.}  without extension    {/}  basename    {//}  directory
  {/.}  basename without extension    {#}  job number    {%}  job slot
  {N} {N.} {N/} {N//} {N/.}  the same for input source N ({-N}: from the last)
  {= perl =}  what perl code leaves in $_ (GNU parallel's helpers: Q(), uq(),
              skip(), seq(), slot(), @arg, total_jobs()); {=N perl =}: source N
  --plus: {+/} {+.} {..} {+..} {/..} {...} {+...} {/...} {##} {0#} {0%}
          {choose_k} {uniq} {%suf} {%%suf} {#pre} {##pre} {:-default} {:n}
          {:n:m} {/from/to} {//from/to} {^a} {^^a} {,A} {,,A} (also {2%.gz})
  Without any, the inputs are appended as arguments.

EXIT STATUS:
  0 if every job succeeded, else the number of failed jobs (at most 101), or
  what --halt decided (the deciding job's status, the number of failures, or
  with fail=P% the percentage failed); 255 on a usage error, an interrupt, a
  command line too long, or any other error.

EXAMPLES:
  parpool run gzip -9 ::: *.log
  parpool run -j4 --tag convert {} {.}.png ::: *.jpg
  find . -name '*.c' | parpool run -k wc -l
  parpool run --plus 'gunzip -c {} > {%.gz}' ::: *.gz
  parpool run echo '{= s/\\.jpg$/.png/ =}' ::: a.jpg
  cat big.log | parpool run --pipe --block 10M grep -c ERROR
  parpool run -S 2/server1,: --trc {}.out 'sort {} > {}.out' ::: *.txt
";

/// Where the help column starts.
const NAMES_WIDTH: usize = 26;

/// An option's names as `--help` shows them: `-j, -P, --jobs N`.
fn names(spec: &Spec) -> String {
    let mut names: Vec<String> = spec.short.iter().map(|c| format!("-{c}")).collect();
    names.extend(spec.long.first().map(|l| format!("--{l}")));
    let mut text = names.join(", ");
    if let Takes::Value(v) = spec.takes {
        text.push(' ');
        text.push_str(v);
    }
    // Long options line up whether or not there is a short one.
    if spec.short.is_empty() {
        text.insert_str(0, "    ");
    }
    text
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

/// `parpool run --help` for a terminal `width` columns wide: every option
/// of the table, grouped, each help wrapped beside its names.
pub(crate) fn help(width: usize) -> String {
    use std::fmt::Write;
    let width = width.clamp(60, 200);
    let mut out = format!(
        "{ABOUT}\n\nUsage: {USAGE}\n\nOptions bundle (-kj4), take their values attached or not (-j4, -j 4,\n--jobs=4) and may be shortened (--keep); they end at the command.\n"
    );
    for section in Section::ALL {
        let _ = write!(out, "\n{}:\n", section.title());
        for spec in SPECS.iter().filter(|s| s.section == section) {
            let mut text = spec.help.to_string();
            if spec.long.len() > 1 {
                let also: Vec<String> = spec.long[1..].iter().map(|l| format!("--{l}")).collect();
                let _ = write!(text, " (also {})", also.join(", "));
            }
            let names = names(spec);
            let lines = wrap(&text, width - NAMES_WIDTH);
            if names.chars().count() + 2 < NAMES_WIDTH {
                let _ = writeln!(out, "  {names:<w$}{}", lines[0], w = NAMES_WIDTH - 2);
            } else {
                let _ = writeln!(out, "  {names}");
                let _ = writeln!(out, "{:w$}{}", "", lines[0], w = NAMES_WIDTH);
            }
            for line in &lines[1..] {
                let _ = writeln!(out, "{:w$}{line}", "", w = NAMES_WIDTH);
            }
        }
    }
    out.push('\n');
    out.push_str(AFTER);
    out
}

/// The help for where it is shown: as wide as the terminal on standard
/// output (else `$COLUMNS`, else 80).
pub(crate) fn help_for_here() -> String {
    let width = rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|w| usize::from(w.ws_col))
        .filter(|&w| w > 0)
        .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
        .unwrap_or(80);
    help(width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_option_of_the_table_within_the_width() {
        for width in [60, 80, 132] {
            let text = help(width);
            for spec in SPECS {
                for short in spec.short {
                    assert!(text.contains(&format!("-{short}")), "-{short}");
                }
                for long in spec.long {
                    assert!(text.contains(&format!("--{long}")), "--{long}");
                }
                let first = spec.help.split(' ').next().unwrap();
                assert!(text.contains(first), "{}", spec.name());
            }
            for line in text.lines() {
                // The fixed text after the options is narrower than 80.
                assert!(line.chars().count() <= width.max(80), "{line:?}");
            }
            for section in Section::ALL {
                assert!(text.contains(section.title()));
            }
        }
    }
}
