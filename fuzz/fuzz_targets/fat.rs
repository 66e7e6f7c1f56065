#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flr_fuzz::target("fat").expect("target").run(data));
