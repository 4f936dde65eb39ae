#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| groundtruth_collector::fuzz::location_text(data));
