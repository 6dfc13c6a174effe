//! `parpool completions` and `parpool man`: shell completion scripts and
//! man pages, made by clap's own generators (`clap_complete`,
//! `clap_mangen`) from the command's clap description, in which `run` is
//! described from the table its own parser reads (see `run::command`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use clap_complete::aot::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, roman};

/// What `parpool completions --help` shows after the arguments.
const COMPLETIONS_AFTER_HELP: &str = "\
INSTALLING (in your own directories; open a new shell afterwards):
  bash        parpool completions bash > ~/.local/share/bash-completion/completions/parpool
              (needs the bash-completion package)
  zsh         parpool completions zsh > ~/.zfunc/_parpool
              (with fpath=(~/.zfunc $fpath) before compinit in ~/.zshrc)
  fish        parpool completions fish > ~/.config/fish/completions/parpool.fish
  powershell  parpool completions powershell | Out-String | Invoke-Expression
              (that line in $PROFILE)
  elvish      eval (parpool completions elvish | slurp)
              (that line in ~/.config/elvish/rc.elv)

The script completes the subcommands and their options, `parpool run`'s
GNU-parallel-style options included, and file names, directories, hosts
or commands where an option takes one.";

/// What `parpool man --help` shows after the arguments.
const MAN_AFTER_HELP: &str = "\
PAGES:
  parpool(1), and one per subcommand: parpool-run(1), parpool-compare(1),
  parpool-sem(1), parpool-completions(1), parpool-man(1).

INSTALLING (in your own directories):
  mkdir -p ~/.local/share/man/man1
  parpool man --dir ~/.local/share/man/man1
  man parpool-run
  If man does not find them, add export MANPATH=\"$HOME/.local/share/man:\"
  (the trailing colon keeps the system's pages) to your shell's startup file.";

/// Arguments of `parpool completions`.
#[derive(Debug, Args)]
#[command(after_help = COMPLETIONS_AFTER_HELP)]
pub(crate) struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Arguments of `parpool man`.
#[derive(Debug, Args)]
#[command(after_help = MAN_AFTER_HELP)]
pub(crate) struct ManArgs {
    /// Print this subcommand's page (parpool-COMMAND(1)) instead of
    /// parpool(1).
    #[arg(value_name = "COMMAND", conflicts_with = "dir")]
    page: Option<String>,
    /// Write every page into DIR (created if missing) as parpool.1,
    /// parpool-run.1, ..., and print their paths.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    dir: Option<PathBuf>,
}

/// Prints the completion script for `args.shell`; `cmd` is the whole
/// command's description.
pub(crate) fn completions(args: CompletionsArgs, mut cmd: clap::Command) -> anyhow::Result<i32> {
    // Made in memory (the generators cannot fail there), then written out,
    // so that a closed standard output is an error reported, not a panic.
    let mut script = Vec::new();
    clap_complete::aot::generate(args.shell, &mut cmd, "parpool", &mut script);
    write_stdout(&script)?;
    Ok(0)
}

/// Prints a man page, or writes them all with `--dir`; `cmd` is the whole
/// command's description.
pub(crate) fn man(args: ManArgs, cmd: clap::Command) -> anyhow::Result<i32> {
    // `parpool help` is clap's; it gets no page, and no mention in one.
    let mut cmd = cmd.disable_help_subcommand(true);
    // Names the subcommands' pages parpool-run, parpool-compare, ...
    cmd.build();
    if let Some(dir) = args.dir {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut written = String::new();
        for page in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
            let path = write_page(page, &dir)?;
            written.push_str(&format!("{}\n", path.display()));
        }
        write_stdout(written.as_bytes())?;
        return Ok(0);
    }
    let page = match &args.page {
        None => &cmd,
        Some(name) => cmd.find_subcommand(name).ok_or_else(|| {
            let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
            anyhow::anyhow!(
                "no man page for `{name}`: the subcommands are {}",
                names.join(", ")
            )
        })?,
    };
    write_stdout(&render(page)?)?;
    Ok(0)
}

/// Writes `page` into `dir` as NAME.1; returns the file's path.
fn write_page(page: &clap::Command, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(manual(page).get_filename());
    let text = render(page)?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// clap_mangen's writer for `page`, every page's footer naming parpool
/// and its version.
fn manual(page: &clap::Command) -> Man {
    Man::new(page.clone()).source(format!("parpool {}", env!("CARGO_PKG_VERSION")))
}

/// One man page in roff: clap_mangen's sections, with the text after the
/// options (`after_long_help`: blocks headed `HEADING:`) as sections of
/// their own, their indented lines kept as they are.
fn render(page: &clap::Command) -> anyhow::Result<Vec<u8>> {
    let man = manual(page);
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut part = |f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        f(&mut buf).context("cannot render the man page")?;
        parts.push(buf);
        Ok(())
    };
    part(&|w| man.render_title(w))?;
    part(&|w| man.render_name_section(w))?;
    part(&|w| man.render_synopsis_section(w))?;
    part(&|w| man.render_description_section(w))?;
    if page.get_arguments().any(|a| !a.is_hide_set()) {
        part(&|w| man.render_options_section(w))?;
    }
    if page.get_subcommands().any(|c| !c.is_hide_set()) {
        part(&|w| man.render_subcommands_section(w))?;
    }
    if let Some(text) = page.get_after_long_help().or_else(|| page.get_after_help()) {
        let roff = sections(&text.to_string());
        part(&|w| roff.to_writer(w))?;
    }
    if page.get_version().is_some() {
        part(&|w| man.render_version_section(w))?;
    }
    // Each part starts with the same preamble (the apostrophe string);
    // the page needs it once, at the top.
    let preamble = Roff::new().render();
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let body = match part.strip_prefix(preamble.as_bytes()) {
            Some(body) if i > 0 => body,
            _ => part,
        };
        out.extend_from_slice(body);
    }
    Ok(out)
}

/// Blocks separated by blank lines, each `HEADING: text` then lines: a
/// section per block; indented lines are shown as they are, others are
/// filled as a paragraph.
fn sections(text: &str) -> Roff {
    let mut roff = Roff::new();
    for block in text.split("\n\n") {
        let mut lines = block.lines();
        let Some(first) = lines.next() else { continue };
        let (heading, rest) = match first.split_once(':') {
            Some((heading, rest)) if is_heading(heading) => (heading.to_owned(), rest.trim()),
            _ => (String::new(), first),
        };
        if heading.is_empty() {
            roff.control("PP", []);
        } else {
            roff.control("SH", [heading.as_str()]);
        }
        if !rest.is_empty() {
            roff.text([roman(rest)]);
        }
        let mut verbatim = false;
        for line in lines {
            let indented = line.starts_with(' ');
            if indented != verbatim {
                roff.control(if indented { "nf" } else { "fi" }, []);
                verbatim = indented;
            }
            roff.text([roman(line)]);
        }
        if verbatim {
            roff.control("fi", []);
        }
    }
    roff
}

/// Whether a block's first line, up to its colon, heads a section: its
/// first word in capitals (`EXIT STATUS`, `INPUTS (after the command)`).
fn is_heading(text: &str) -> bool {
    text.split(' ')
        .next()
        .is_some_and(|word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_uppercase()))
}

/// Writes `bytes` to standard output, an error (a closed pipe, a full
/// disk) reported rather than a panic.
fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .context("cannot write to standard output")
}
