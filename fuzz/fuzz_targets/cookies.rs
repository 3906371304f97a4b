//! Fuzz target `cookies`: see `wsredis::fuzzing::cookies` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsredis::fuzzing::cookies(data));
