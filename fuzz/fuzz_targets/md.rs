#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flr_fuzz::target("md").expect("target").run(data));
