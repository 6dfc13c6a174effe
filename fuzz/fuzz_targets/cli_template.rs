//! `parpool run`'s replacement strings (`{}`, `{.}`, `{= =}`-free GNU
//! templates, `--plus` forms): a word of any bytes, filled with arguments
//! of any bytes (the first NUL-separated part is the word).
#![no_main]
#![allow(dead_code, unused_imports, unreachable_pub)]

#[path = "../../crates/parpool-cli/src/run/mod.rs"]
mod run;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|&b| b == 0);
    let word = OsString::from_vec(parts.next().unwrap_or_default().to_vec());
    let args: Vec<OsString> = parts.map(|p| OsString::from_vec(p.to_vec())).collect();
    run::fuzz::fill_template(&word, &args);
});
