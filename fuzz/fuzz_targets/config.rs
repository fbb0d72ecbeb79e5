//! The configuration file (TOML), through `Config::from_toml` and `Config::options`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exfilwatch::fuzzing::config(data));
