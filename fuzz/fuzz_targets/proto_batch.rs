#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| groundtruth_collector::fuzz::proto_batch(data));
