#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| groundtruth_agent::fuzz::spool_record(data));
