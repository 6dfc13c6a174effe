//! `parpool run`'s option parser, fed arbitrary words (NUL-separated).
#![no_main]
#![allow(dead_code, unused_imports, unreachable_pub)]

#[path = "../../crates/parpool-cli/src/run/mod.rs"]
mod run;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let words: Vec<OsString> = data
        .split(|&b| b == 0)
        .map(|w| OsString::from_vec(w.to_vec()))
        .collect();
    run::fuzz::parse_args(words);
});
