//! How inputs become jobs' values: one input a job, or several (`-N`,
//! `-n`, `-L`, `-X`, `-m`), each job's command line kept under the length
//! GNU parallel allows, and an input that cannot fit refused as GNU
//! parallel refuses it ("Command line too long", exit 255).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::sync::Arc;

use super::exec::Runner;
use super::input::{Jobs, Values};
use super::template::Fill;

/// The longest single argument Linux passes to a program (the shell's
/// `-c` line is one), with its terminating NUL: `MAX_ARG_STRLEN`.
const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The command-line length GNU parallel lets a job have: it finds the
/// longest line the system runs by a coarse search (which lands within 1%
/// below the limit), keeps 3000 bytes for wrapping and halves the rest.
/// The same search here gives the same number (63664 on Linux).
pub(crate) const fn usable_line_length() -> usize {
    let mut len = 324;
    let mut lower;
    loop {
        lower = len;
        len *= 16;
        if len >= MAX_ARG_STRLEN {
            break;
        }
    }
    let mut upper = len;
    // GNU parallel's binary search: stops within 1%.
    while !(lower == upper || lower + 1 == upper || lower * 100 > upper * 99) {
        let middle = (upper - lower) / 2 + lower;
        if middle < MAX_ARG_STRLEN {
            lower = middle;
        } else {
            upper = middle;
        }
    }
    (lower - 3000) / 2
}

/// How inputs are grouped into jobs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packing {
    /// At most this many inputs a job (`-N`, `-n`, `-L`); `None`: as many
    /// as fit (`-X`, `-m`), or one a job without grouping.
    pub(crate) max_args: Option<usize>,
    /// Several inputs a job at all.
    pub(crate) grouped: bool,
    /// `-X`, `-m`: at the end of the input, what is left is spread over
    /// this many job slots.
    pub(crate) spread: Option<usize>,
    /// The longest command line a job may have (`-s`, else
    /// [`usable_line_length`]).
    pub(crate) limit: usize,
}

/// `jobs` packed as `packing` says, checked against the length limit.
pub(crate) fn pack(jobs: Jobs, runner: Arc<Runner>, packing: Packing) -> Jobs {
    if !packing.grouped {
        let limit = packing.limit;
        return Box::new(jobs.map(move |r| {
            let values = r?;
            let len = line_len(&runner, &values);
            if len >= limit {
                return Err(too_long(len, limit, &values));
            }
            Ok(values)
        }));
    }
    let total = match (packing.max_args, packing.spread) {
        (Some(n), None) => jobs.size_hint().1.map(|t| t.div_ceil(n.max(1))),
        _ => None,
    };
    Box::new(Packed {
        inner: jobs,
        pending: VecDeque::new(),
        runner,
        max_args: packing.max_args,
        spread: packing.spread,
        limit: packing.limit,
        total,
        done: false,
    })
}

fn line_len(runner: &Runner, values: &[OsString]) -> usize {
    runner.plan.line(&Fill::new(values, 1, 1, None)).len()
}

/// GNU parallel's refusal, with up to 50 bytes of the input.
fn too_long(len: usize, limit: usize, values: &[OsString]) -> io::Error {
    let text = values
        .iter()
        .map(|v| v.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let shown = match text.char_indices().nth(50) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text,
    };
    io::Error::other(format!(
        "Command line too long ({len} >= {limit}) at input 0: {shown}"
    ))
}

struct Packed {
    inner: Jobs,
    /// Inputs read but left for the next job.
    pending: VecDeque<Values>,
    runner: Arc<Runner>,
    max_args: Option<usize>,
    spread: Option<usize>,
    limit: usize,
    total: Option<usize>,
    done: bool,
}

impl Packed {
    fn next_input(&mut self) -> Option<io::Result<Values>> {
        match self.pending.pop_front() {
            Some(v) => Some(Ok(v)),
            None => self.inner.next(),
        }
    }

    /// What one more input adds to a job's line.
    fn cost(&self, input: &Values) -> usize {
        let twice: Vec<OsString> = input.iter().chain(input).cloned().collect();
        line_len(&self.runner, &twice).saturating_sub(line_len(&self.runner, input))
    }

    /// Everything is read: nothing pending, the input at its end.
    fn at_end(&mut self) -> io::Result<bool> {
        if !self.pending.is_empty() {
            return Ok(false);
        }
        match self.inner.next() {
            None => Ok(true),
            Some(r) => {
                self.pending.push_back(r?);
                Ok(false)
            }
        }
    }

    fn fill(&mut self) -> io::Result<Vec<Values>> {
        let mut inputs: Vec<Values> = Vec::new();
        let mut len = 0;
        while self.max_args.is_none_or(|m| inputs.len() < m.max(1)) {
            let Some(input) = self.next_input().transpose()? else {
                break;
            };
            len = if inputs.is_empty() {
                line_len(&self.runner, &input)
            } else {
                len + self.cost(&input)
            };
            inputs.push(input);
            if len >= self.limit {
                if inputs.len() > 1 {
                    // The last one starts the next job.
                    self.pending.extend(inputs.pop());
                    self.total = None;
                    break;
                }
                return Err(too_long(len, self.limit, &inputs[0]));
            }
        }
        // `-X`, `-m`: the input ended inside this job; its inputs are
        // spread over the job slots, as GNU parallel spreads them.
        if let Some(slots) = self.spread
            && inputs.len() > 1
            && self.at_end()?
        {
            self.spread = None;
            let each = inputs.len().div_ceil(slots.max(1));
            self.max_args = Some(each);
            for input in inputs.drain(each..).rev() {
                self.pending.push_front(input);
            }
        }
        Ok(inputs)
    }
}

impl Iterator for Packed {
    type Item = io::Result<Values>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.max_args == Some(0) {
            // `-N0`: one input read a job, none passed.
            return match self.next_input()? {
                Ok(_) => Some(Ok(Values::new())),
                Err(e) => Some(Err(e)),
            };
        }
        match self.fill() {
            Ok(inputs) if inputs.is_empty() => None,
            Ok(inputs) => {
                self.total = self.total.map(|n| n.saturating_sub(1));
                Some(Ok(inputs.into_iter().flatten().collect()))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usable_length_is_gnu_parallel_s() {
        assert_eq!(usable_line_length(), 63664);
    }
}
