//! Fuzz target `query_flags`: see `wsredis::fuzzing::query_flags` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsredis::fuzzing::query_flags(data));
