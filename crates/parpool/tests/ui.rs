//! The compile errors a user meets first say what went wrong and what to
//! write instead: each case under `tests/ui/` is a mistake, and its
//! `.stderr` the message rustc gives for it.

#[test]
fn mistakes_are_compile_errors_that_say_what_to_write() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
