//! The `parpool` command's tests, one binary for all of them.

mod compare;
mod completions;
mod run;
