#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flr_fuzz::target("luks2-json").expect("target").run(data));
