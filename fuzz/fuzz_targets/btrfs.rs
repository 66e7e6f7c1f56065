#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| flr_fuzz::target("btrfs").expect("target").run(data));
