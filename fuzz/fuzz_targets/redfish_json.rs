#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| groundtruth_agent::fuzz::redfish_json(data));
