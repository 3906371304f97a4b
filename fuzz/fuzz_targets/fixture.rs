//! Fuzz target `fixture`: see `wsredis::fuzzing::fixture` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsredis::fuzzing::fixture(data));
