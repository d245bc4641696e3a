//! Compile-time behaviour of `#[driver]`: what compiles, and the diagnostic of each mistake.
//! Refresh the expected output with `TRYBUILD=overwrite cargo test -p conveyor-driver-macros --test ui`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
