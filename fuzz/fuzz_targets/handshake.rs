//! Fuzz target `handshake`: see `wsredis::fuzzing::handshake` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsredis::fuzzing::handshake(data));
