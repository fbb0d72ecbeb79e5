//! The internal topic's batches (`service::wire`, role rekey -> role detect).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| exfilwatch::fuzzing::wire(data));
