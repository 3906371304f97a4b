//! Fuzz target `django_session`: see `wsredis::fuzzing::django_session` for what it feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wsredis::fuzzing::django_session(data));
