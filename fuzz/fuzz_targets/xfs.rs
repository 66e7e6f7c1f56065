#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flr_fuzz::target("xfs").expect("target").run(data));
