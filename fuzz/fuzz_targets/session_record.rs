//! Fuzz target `session_record`: see `wsredis::fuzzing::session_record` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsredis::fuzzing::session_record(data));
