//! Fuzz target `form_body`: see `wsredis::fuzzing::form_body` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsredis::fuzzing::form_body(data));
