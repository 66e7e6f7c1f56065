//! Every target, on the stable toolchain: its regression inputs (crashers
//! found once, `testdata/fuzz/<target>/`), its seeds, then deterministic
//! mutants. `FLR_FUZZ_ITERATIONS` (default 150) and `FLR_FUZZ_SECONDS`
//! (default 20) bound each target; CI's coverage-guided libFuzzer run is
//! `scripts/fuzz`.

use std::time::Duration;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz(name: &str) {
    let t = flr_fuzz::target(name).expect("target exists");
    let crash_dir = std::env::temp_dir().join(format!("flr-fuzz-crashes-{name}"));
    let s = flr_fuzz::run_mutations(
        t,
        env("FLR_FUZZ_ITERATIONS", 150),
        Duration::from_secs(env("FLR_FUZZ_SECONDS", 20)),
        0x5eed ^ name.len() as u64,
        Some(&crash_dir),
    );
    if s.seeds == 0 {
        flr_testdata::loud(&format!(
            "SKIPPED part of fuzz target {name}: no seed here (its seeds come from the shared corpus); ran mutants of an empty input"
        ));
    }
    eprintln!(
        "fuzz {name}: {} executions, {} seeds, slowest {:?}",
        s.executions, s.seeds, s.slowest
    );
    assert!(
        s.crashes.is_empty(),
        "target {name} panicked on {} inputs: {:?}",
        s.crashes.len(),
        s.crashes
    );
    assert!(s.executions > 0);
}

macro_rules! targets {
    ($($f:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $f() { fuzz($name); })*

        #[test]
        fn every_target_is_tested() {
            let tested = [$($name),*];
            for t in flr_fuzz::targets() {
                assert!(tested.contains(&t.name), "target {} has no test", t.name);
            }
        }
    };
}

targets! {
    vhd => "vhd",
    vhdx => "vhdx",
    mbr => "mbr",
    gpt => "gpt",
    luks => "luks",
    luks2_json => "luks2-json",
    bitlocker => "bitlocker",
    bek => "bek",
    lvm => "lvm",
    fat => "fat",
    ext4 => "ext4",
    ntfs => "ntfs",
    xfs => "xfs",
    stack => "stack",
    keyvault => "keyvault",
}

#[test]
fn seeds_parse_as_their_formats() {
    // A seed the parser rejects outright would make its target fuzz only
    // the first check. Each fixture seed must open.
    use flr_io::ReadAt;
    for name in ["vhd", "vhdx", "gpt", "fat", "ext4", "ntfs", "xfs"] {
        let t = flr_fuzz::target(name).unwrap();
        for (seed, bytes) in t.seeds() {
            let img = flr_fuzz::SparseImage::decode(&bytes);
            assert!(img.len() > 0, "{name}/{seed}");
        }
    }
}
