//! The decoder over one unit: a line, a Kafka message, a whole document (single records,
//! envelopes, every input shape of `sample-logs/`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exfilwatch::fuzzing::decode(data));
