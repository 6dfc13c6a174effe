//! The process wire: a worker's request loop and a supervisor's reply
//! decoding, fed arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    parpool::__fuzz::worker_reads(data);
    parpool::__fuzz::supervisor_reads(data);
});
