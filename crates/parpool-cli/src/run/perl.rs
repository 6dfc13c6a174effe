//! `{= perl expression =}` replacement strings, evaluated as GNU parallel
//! evaluates them, by one long-lived `perl` fed over a pipe.
//!
//! Each expression is compiled once, when the run starts (a syntax error
//! stops the run before any job, exit 255); for each job, one request
//! carries the job's number, slot and values, and the answer holds every
//! expression's value for it. Perl's state lives for the whole run, so
//! `{= $n++; $_ = $n =}` counts, and jobs are evaluated in the order they
//! start. What GNU parallel gives an expression is given here: `$_` is
//! the value, `$job->seq()`, `$job->slot()`, `seq()`, `slot()`, `@arg`
//! (the job's values from `$arg[1]`), `total_jobs()`, `skip()`, `uq()`,
//! `Q()`, `pQ()`, `hash()` and the date helpers (`yyyy_mm_dd()`, …).
//!
//! One difference: what an expression prints goes to standard error (its
//! standard output is the answer pipe).

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

/// The program `perl` runs: helpers under GNU parallel's names, then a
/// loop answering requests. Strings are 32-bit little-endian lengths and
/// bytes.
const SCRIPT: &str = r#"
use strict; no warnings;
use POSIX ();
open(my $reply, '>&', \*STDOUT) or die "cannot dup the answer pipe: $!";
open(STDOUT, '>&', \*STDERR);
binmode STDIN; binmode $reply;
$Global::max_jobs_running = $ARGV[0];
$Global::unquote_arg = 0;

package ParpoolJob;
sub seq { $_[0]{seq} }
sub slot { $_[0]{slot} }
sub skip { $_[0]{skip} = 1 }

package main;
sub shell_quote_scalar {
    local $_ = $_[0];
    if (/[^-_.+a-z0-9\/]/i) {
        s/'/'"'"'/g; $_ = "'$_'"; s/^''//; s/''$//; return $_;
    }
    return $_ eq "" ? "''" : $_;
}
sub Q { shell_quote_scalar($_[0]) }
sub perl_quote_scalar { my $a = $_[0]; $a =~ s/[\\\"\$\@]/\\$&/g if defined $a; $a }
sub pQ { perl_quote_scalar($_[0]) }
sub uniq { keys %{{ map { $_ => 1 } @_ }} }
sub total_jobs { $Global::total_jobs }

package Arg;
our ($job, @arg);
sub Q { ::shell_quote_scalar($_[0]) }
sub pQ { ::perl_quote_scalar($_[0]) }
sub hash { require B; B::hash(@_) }
sub total_jobs { $Global::total_jobs }
sub skip { $job->skip() }
sub slot { $job->slot() }
sub seq { $job->seq() }
sub uq { $Global::unquote_arg = 1 }
sub yyyy_mm_dd_hh_mm_ss { POSIX::strftime("%Y-%m-%dT%H:%M:%S", localtime(time())) }
sub yyyy_mm_dd_hh_mm { POSIX::strftime("%Y-%m-%dT%H:%M", localtime(time())) }
sub yyyy_mm_dd { POSIX::strftime("%Y-%m-%d", localtime(time())) }
sub hh_mm_ss { POSIX::strftime("%H:%M:%S", localtime(time())) }
sub hh_mm { POSIX::strftime("%H:%M", localtime(time())) }
sub yyyymmddhhmmss { POSIX::strftime("%Y%m%d%H%M%S", localtime(time())) }
sub yyyymmddhhmm { POSIX::strftime("%Y%m%d%H%M", localtime(time())) }
sub yyyymmdd { POSIX::strftime("%Y%m%d", localtime(time())) }
sub hhmmss { POSIX::strftime("%H%M%S", localtime(time())) }
sub hhmm { POSIX::strftime("%H%M", localtime(time())) }

package main;
sub take {
    my $n = shift; my $b = '';
    while (length($b) < $n) {
        my $r = sysread(STDIN, $b, $n - length($b), length($b));
        exit 0 unless $r;
    }
    return $b;
}
sub num { unpack('V', take(4)) }
sub field { take(num()) }
sub answer {
    my $out = shift;
    while (length $out) {
        my $w = syswrite($reply, $out);
        exit 0 unless defined $w;
        substr($out, 0, $w) = '';
    }
}
my @code;
while (1) {
    my $op = take(1);
    if ($op eq 'C') {
        my $src = field();
        my $f = eval("package Arg; sub { no strict; no warnings; my \$job = shift; $src\n}");
        if ($f) { push @code, $f; answer('O' . pack('V', $#code)); }
        else { answer('E' . pack('V/a*', "$@")); }
    } elsif ($op eq 'J') {
        my ($seq, $slot, $total, $record) = (field(), field(), field(), num());
        $Global::total_jobs = $total eq '' ? undef : $total;
        my @values = map { field() } 1 .. num();
        my $job = bless { seq => $seq, slot => $slot, skip => 0 }, 'ParpoolJob';
        local $Arg::job = $job;
        my $out = '';
        for my $i (1 .. num()) {
            my ($expr, $at) = (num(), num());
            # As GNU parallel: @arg holds the records up to this value's.
            my $last = $record ? (int($at / $record) + 1) * $record - 1 : $#values;
            $last = $#values if $last > $#values;
            local @Arg::arg = (undef, @values[0 .. $last]);
            local $_ = $values[$at];
            $Global::unquote_arg = 0;
            # Code that dies fails its job, not the run.
            if (eval { $code[$expr]->($job); 1 }) {
                my $v = defined $_ ? $_ : '';
                utf8::encode($v) if utf8::is_utf8($v);
                $out .= pack('C V/a*', $Global::unquote_arg ? 1 : 0, $v);
            } else {
                my $e = "$@";
                utf8::encode($e) if utf8::is_utf8($e);
                $out .= pack('C V/a*', 2, $e);
            }
        }
        answer(pack('C', $job->{skip} ? 1 : 0) . $out);
    }
}
"#;

/// The `perl` co-process.
#[derive(Debug)]
pub(crate) struct Perl {
    pipes: Mutex<Pipes>,
}

#[derive(Debug)]
struct Pipes {
    child: Child,
    to: BufWriter<ChildStdin>,
    from: BufReader<ChildStdout>,
}

/// One expression's value for one input value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Value {
    pub(crate) bytes: Vec<u8>,
    /// `uq()` was called: the value goes into the command unquoted.
    pub(crate) unquoted: bool,
}

/// The values of a job's expressions, whether it called `skip()`, and
/// what perl said if the code died.
#[derive(Debug, Default)]
pub(crate) struct Evaluated {
    pub(crate) skip: bool,
    /// What each `(expression, value index)` gave.
    pub(crate) values: std::collections::HashMap<(u32, usize), Value>,
    pub(crate) died: Option<String>,
}

impl Evaluated {
    /// What expression `expr` gave for value `at`.
    pub(crate) fn get(&self, expr: u32, at: usize) -> Option<&Value> {
        self.values.get(&(expr, at))
    }

    /// Whether any value is to go to the shell unquoted (`uq()`).
    pub(crate) fn any_unquoted(&self) -> bool {
        self.values.values().any(|v| v.unquoted)
    }
}

/// What the job's expressions are given besides its values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Job {
    pub(crate) seq: u64,
    pub(crate) slot: usize,
    pub(crate) total: Option<u64>,
    /// Values per record, for `@arg`, which holds the records up to the
    /// value's (GNU parallel evaluates as it adds records to a job); 0:
    /// the job's values are one record.
    pub(crate) record: usize,
}

impl Perl {
    /// Starts `perl`; `slots` is what `$Global::max_jobs_running` says.
    pub(crate) fn start(slots: usize) -> anyhow::Result<Perl> {
        let mut child = Command::new("perl")
            .arg("-e")
            .arg(SCRIPT)
            .arg(slots.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "{{= perl expression =}} replacement strings need `perl`, which could not \
                     be started ({e}); install perl or write the command without them"
                )
            })?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("perl started without its pipes");
        };
        Ok(Perl {
            pipes: Mutex::new(Pipes {
                child,
                to: BufWriter::new(to),
                from: BufReader::new(from),
            }),
        })
    }

    /// Compiles `code`; its number, or perl's complaint.
    pub(crate) fn compile(&self, code: &[u8]) -> anyhow::Result<Result<u32, String>> {
        let mut p = self.lock();
        p.to.write_all(b"C")?;
        put(&mut p.to, code)?;
        p.to.flush()?;
        let mut op = [0u8];
        p.from.read_exact(&mut op)?;
        match op[0] {
            b'O' => Ok(Ok(num(&mut p.from)?)),
            _ => Ok(Err(String::from_utf8_lossy(&field(&mut p.from)?)
                .trim_end()
                .to_string())),
        }
    }

    /// Evaluates `wants` (expression, value index) for one job.
    pub(crate) fn evaluate(
        &self,
        job: Job,
        values: &[std::ffi::OsString],
        wants: &[(u32, usize)],
    ) -> io::Result<Evaluated> {
        use std::os::unix::ffi::OsStrExt;
        let mut p = self.lock();
        let w = &mut p.to;
        w.write_all(b"J")?;
        put(w, job.seq.to_string().as_bytes())?;
        put(w, job.slot.to_string().as_bytes())?;
        put(
            w,
            job.total
                .map(|t| t.to_string())
                .unwrap_or_default()
                .as_bytes(),
        )?;
        put_num(w, job.record)?;
        put_num(w, values.len())?;
        for v in values {
            put(w, v.as_bytes())?;
        }
        put_num(w, wants.len())?;
        for &(expr, at) in wants {
            put_num(w, expr as usize)?;
            put_num(w, at)?;
        }
        w.flush()?;
        let r = &mut p.from;
        let mut flag = [0u8];
        r.read_exact(&mut flag)?;
        let mut out = Evaluated {
            skip: flag[0] == 1,
            ..Evaluated::default()
        };
        for &want in wants {
            r.read_exact(&mut flag)?;
            let bytes = field(r)?;
            if flag[0] == 2 {
                out.died = Some(String::from_utf8_lossy(&bytes).trim_end().to_owned());
                continue;
            }
            out.values.insert(
                want,
                Value {
                    bytes,
                    unquoted: flag[0] == 1,
                },
            );
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pipes> {
        self.pipes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Perl {
    fn drop(&mut self) {
        let p = self.pipes.get_mut().unwrap_or_else(|p| p.into_inner());
        // Perl ends when its input does; a stuck one is killed.
        let _ = p.to.flush();
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

fn put(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    put_num(w, bytes.len())?;
    w.write_all(bytes)
}

fn put_num(w: &mut impl Write, n: usize) -> io::Result<()> {
    let n = u32::try_from(n).map_err(|_| io::Error::other("a value over 4 GiB for perl"))?;
    w.write_all(&n.to_le_bytes())
}

fn num(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn field(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let n = num(r)? as usize;
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn job(seq: u64) -> Job {
        Job {
            seq,
            slot: 1,
            total: Some(3),
            record: 0,
        }
    }

    #[test]
    fn expressions_see_what_gnu_parallel_gives_them() {
        let perl = Perl::start(4).unwrap();
        let subst = perl.compile(b"s/a/b/").unwrap().unwrap();
        let info = perl
            .compile(b"$_ = join ',', $_, seq(), $job->slot(), total_jobs(), $arg[1], $Global::max_jobs_running")
            .unwrap()
            .unwrap();
        let quote = perl.compile(b"$_ = Q($_); uq()").unwrap().unwrap();
        let count = perl.compile(b"$n++; $_ = $n").unwrap().unwrap();
        let values = [OsString::from("a b")];
        let got = perl
            .evaluate(
                job(2),
                &values,
                &[(subst, 0), (info, 0), (quote, 0), (count, 0)],
            )
            .unwrap();
        assert!(!got.skip);
        assert_eq!(got.get(subst, 0).unwrap().bytes, b"b b");
        assert_eq!(got.get(info, 0).unwrap().bytes, b"a b,2,1,3,a b,4");
        let quoted = got.get(quote, 0).unwrap();
        assert_eq!(quoted.bytes, b"'a b'");
        assert!(quoted.unquoted);
        assert!(!got.get(subst, 0).unwrap().unquoted);
        // State lives from job to job.
        let again = perl.evaluate(job(3), &values, &[(count, 0)]).unwrap();
        assert_eq!(again.get(count, 0).unwrap().bytes, b"2");
    }

    #[test]
    fn skip_is_reported_and_syntax_errors_are_perl_s_words() {
        let perl = Perl::start(1).unwrap();
        let skip = perl.compile(b"skip() if /b/").unwrap().unwrap();
        let b = perl
            .evaluate(job(1), &[OsString::from("b")], &[(skip, 0)])
            .unwrap();
        assert!(b.skip);
        let a = perl
            .evaluate(job(2), &[OsString::from("a")], &[(skip, 0)])
            .unwrap();
        assert!(!a.skip);
        let err = perl.compile(b"s/a/").unwrap().unwrap_err();
        assert!(
            err.contains("Substitution replacement not terminated"),
            "{err}"
        );
        // The co-process still answers after a bad expression.
        assert!(perl.compile(b"1").unwrap().is_ok());
    }
}
