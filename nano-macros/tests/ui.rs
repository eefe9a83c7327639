//! Compile-time behaviour of `#[component]`: `pass/` must compile and run, every `fail/` case
//! must fail with exactly its `.stderr` (regenerate with `TRYBUILD=overwrite`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
