//! Every target, on the stable toolchain: its regression inputs (crashers
//! found once, `testdata/fuzz/<target>/`), its seeds, then deterministic
//! mutants. `FLR_FUZZ_ITERATIONS` (default 150) and `FLR_FUZZ_SECONDS`
//! (default 20) bound each target; CI's coverage-guided libFuzzer run is
//! `scripts/fuzz`.

// Test-only exception to the workspace's `deny(unsafe_code)`: a global
// allocator that records the largest single allocation made on the current
// thread, delegating everything to the system allocator. It is how these
// tests prove that no header value makes flr allocate what it claims.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to `System`; the wrapper only
// records sizes in a const-initialised thread-local `Cell` (no allocation,
// no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Largest single allocation `f` made on this thread.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

/// No single allocation while parsing one fuzz input may exceed this: the
/// inputs are at most a few MiB, so anything larger was sized by a claim.
const CAP: usize = 64 << 20;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fuzz(name: &str) {
    let t = flr_fuzz::target(name).expect("target exists");
    let crash_dir = std::env::temp_dir().join(format!("flr-fuzz-crashes-{name}"));
    let s = flr_fuzz::run_mutations_guarded(
        t,
        env("FLR_FUZZ_ITERATIONS", 150),
        Duration::from_secs(env("FLR_FUZZ_SECONDS", 20)),
        0x5eed ^ name.len() as u64,
        Some(&crash_dir),
        &|exec| {
            let n = largest_allocation(exec);
            if n > CAP {
                Err(format!("a single allocation of {n} bytes (cap {CAP})"))
            } else {
                Ok(())
            }
        },
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
    luks_unlock => "luks-unlock",
    luks2_json => "luks2-json",
    bitlocker => "bitlocker",
    bek => "bek",
    lvm => "lvm",
    md => "md",
    fat => "fat",
    ext4 => "ext4",
    ntfs => "ntfs",
    xfs => "xfs",
    btrfs => "btrfs",
    stack => "stack",
    keyvault => "keyvault",
}

#[test]
fn seeds_parse_as_their_formats() {
    // A seed the parser rejects outright would fuzz only its first check:
    // each fixture seed, decoded from the sparse encoding, must open.
    fn src(bytes: &[u8]) -> flr_io::Source {
        std::sync::Arc::new(flr_fuzz::SparseImage::decode(bytes))
    }
    type Opens = fn(&[u8]) -> bool;
    let opens: [(&str, Opens); 9] = [
        ("vhd", |b| {
            flr_vhd::VhdDisk::open(src(b), &flr_io::NoParentResolver).is_ok()
        }),
        ("vhdx", |b| {
            flr_vhdx::VhdxDisk::open(src(b), &flr_io::NoParentResolver).is_ok()
        }),
        ("mbr", |b| {
            matches!(flr_part::read_table(&src(b), None), Ok(Some(_)))
        }),
        ("gpt", |b| {
            matches!(flr_part::read_table(&src(b), None), Ok(Some(_)))
        }),
        ("luks", |b| {
            flr_luks::LuksVolume::open(src(b), src(b)).is_ok()
        }),
        ("fat", |b| flr_fat::FatFs::open(src(b)).is_ok()),
        ("ext4", |b| flr_ext4::Ext4Fs::open(src(b)).is_ok()),
        ("ntfs", |b| flr_ntfs::NtfsFs::open(src(b)).is_ok()),
        ("xfs", |b| flr_xfs::XfsFs::open(src(b)).is_ok()),
    ];
    for (name, open) in opens {
        let t = flr_fuzz::target(name).unwrap();
        let seeds = t.seeds();
        assert!(!seeds.is_empty(), "{name} has no seed");
        for (seed, bytes) in seeds {
            // A differencing disk's parent is not part of the seed (vhd-subbyte
            // is one too); an unfinished LUKS2 reencryption is refused by design.
            let expected_refusal = ["diff", "subbyte", "reencrypt"]
                .iter()
                .any(|k| seed.contains(k));
            let ok = open(&bytes) != expected_refusal;
            assert!(ok, "{name}: seed {seed} does not open");
        }
    }
}

// ---- Claims a header makes, refused before anything that size is
// allocated. Each builds the smallest image that makes the claim, as a
// sparse image (a 16 TiB disk costs nothing), and checks both the error
// (naming the layer and offset) and the largest allocation.

use std::sync::Arc;

use flr_fuzz::SparseImage;
use flr_io::{NoParentResolver, ReadAt, Source};

fn refused<T>(r: Result<T, impl std::fmt::Display>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

fn vhd_sum(b: &[u8], skip: usize) -> u32 {
    let s = b
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < skip || *i >= skip + 4)
        .fold(0u32, |a, (_, &x)| a.wrapping_add(u32::from(x)));
    !s
}

#[test]
fn vhd_bat_claiming_billions_of_blocks_is_refused() {
    // A dynamic VHD in a (sparse) 1 TiB file: the BAT would fit in the
    // file, but 2 TiB in 512-byte blocks needs 2^32 entries (16 GiB).
    let file_len = 1u64 << 40;
    let mut img = SparseImage::zeros(file_len);
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&be32(2));
    f[12..16].copy_from_slice(&be32(0x0001_0000));
    f[16..24].copy_from_slice(&512u64.to_be_bytes());
    f[40..48].copy_from_slice(&(2u64 << 40).to_be_bytes());
    f[48..56].copy_from_slice(&(2u64 << 40).to_be_bytes());
    f[60..64].copy_from_slice(&be32(3));
    let c = vhd_sum(&f, 64);
    f[64..68].copy_from_slice(&be32(c));
    img.put(0, &f);
    img.put(file_len - 512, &f);
    let mut h = vec![0u8; 1024];
    h[..8].copy_from_slice(b"cxsparse");
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[16..24].copy_from_slice(&1536u64.to_be_bytes());
    h[24..28].copy_from_slice(&be32(0x0001_0000));
    h[28..32].copy_from_slice(&be32(u32::MAX));
    h[32..36].copy_from_slice(&be32(512));
    let c = vhd_sum(&h, 36);
    h[36..40].copy_from_slice(&be32(c));
    img.put(512, &h);
    let src: Source = Arc::new(img);
    let mut r = None;
    let n = largest_allocation(|| r = Some(flr_vhd::VhdDisk::open(src, &NoParentResolver)));
    let e = refused(r.unwrap());
    assert!(e.contains("BAT entries") && e.contains("limit"), "{e}");
    assert!(n < 1 << 20, "largest allocation {n}");
}

fn gpt_header(
    lba: u64,
    alt: u64,
    entries_lba: u64,
    count: u32,
    esize: u32,
    entries_crc: u32,
) -> Vec<u8> {
    let last_lba = lba.max(alt);
    let mut h = vec![0u8; 92];
    h[..8].copy_from_slice(b"EFI PART");
    h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    h[12..16].copy_from_slice(&92u32.to_le_bytes());
    h[24..32].copy_from_slice(&lba.to_le_bytes());
    h[32..40].copy_from_slice(&alt.to_le_bytes());
    h[40..48].copy_from_slice(&34u64.to_le_bytes());
    h[48..56].copy_from_slice(&(last_lba - 33).to_le_bytes());
    h[56..72].copy_from_slice(&[7u8; 16]);
    h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
    h[80..84].copy_from_slice(&count.to_le_bytes());
    h[84..88].copy_from_slice(&esize.to_le_bytes());
    h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
    let c = crc32fast::hash(&h);
    h[16..20].copy_from_slice(&c.to_le_bytes());
    h
}

fn protective_mbr(sectors: u64) -> Vec<u8> {
    let mut m = vec![0u8; 512];
    m[446 + 4] = 0xEE;
    m[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    m[446 + 12..446 + 16]
        .copy_from_slice(&((sectors - 1).min(u64::from(u32::MAX)) as u32).to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xAA;
    m
}

#[test]
fn gpt_claiming_four_billion_entries_is_refused() {
    let len = 1u64 << 30;
    let sectors = len / 512;
    let mut img = SparseImage::zeros(len);
    img.put(0, &protective_mbr(sectors));
    img.put(512, &gpt_header(1, sectors - 1, 2, u32::MAX, 128, 0));
    img.put(
        len - 512,
        &gpt_header(sectors - 1, 1, sectors - 33, u32::MAX, 128, 0),
    );
    let src: Source = Arc::new(img);
    let mut r = None;
    let n = largest_allocation(|| r = Some(flr_part::read_table(&src, None)));
    let e = refused(r.unwrap());
    assert!(e.contains("entry count") && e.contains("0x200"), "{e}");
    assert!(n < 1 << 20, "largest allocation {n}");
}

#[test]
fn a_16_tib_disk_with_almost_nothing_on_it_opens_in_bounded_memory() {
    // 16 TiB raw disk: protective MBR, GPT with one partition over the
    // whole disk, nothing else written. The full scan (which opens every
    // volume to read its facts) must not allocate by the disk's size.
    let len = 16u64 << 40;
    let sectors = len / 512;
    let mut img = SparseImage::zeros(len);
    img.put(0, &protective_mbr(sectors));
    let mut entries = vec![0u8; 128 * 128];
    entries[..16].copy_from_slice(&[
        0xAF, 0x3D, 0xC6, 0x0F, 0x83, 0x84, 0x72, 0x47, 0x8E, 0x79, 0x3D, 0x69, 0xD8, 0x47, 0x7D,
        0xE4,
    ]);
    entries[16..32].copy_from_slice(&[9u8; 16]);
    entries[32..40].copy_from_slice(&2048u64.to_le_bytes());
    entries[40..48].copy_from_slice(&(sectors - 34).to_le_bytes());
    let ecrc = crc32fast::hash(&entries);
    img.put(1024, &entries);
    img.put(512, &gpt_header(1, sectors - 1, 2, 128, 128, ecrc));
    img.put((sectors - 33) * 512, &entries);
    img.put(
        len - 512,
        &gpt_header(sectors - 1, 1, sectors - 33, 128, 128, ecrc),
    );
    let src: Source = Arc::new(img);
    let mut r = None;
    let start = std::time::Instant::now();
    let n = largest_allocation(|| {
        r = Some(flr_engine::open_source(
            src,
            "16tib",
            &NoParentResolver,
            flr_engine::Scan::Full,
            &flr_engine::KeyRing::new(),
        ))
    });
    let image = r.unwrap().expect("opens");
    assert_eq!(image.volumes.len(), 1);
    assert_eq!(image.volumes[0].size, (sectors - 34 - 2048 + 1) * 512);
    assert!(n < 1 << 20, "largest allocation {n}");
    eprintln!(
        "16 TiB GPT disk scanned in {:?}, largest allocation {n} bytes",
        start.elapsed()
    );
}

#[test]
fn luks2_header_claiming_a_terabyte_of_json_is_refused() {
    let mut img = SparseImage::zeros(1 << 41);
    let mut b = vec![0u8; 4096];
    b[..8].copy_from_slice(b"LUKS\xba\xbe\x00\x02");
    b[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes());
    b[72..78].copy_from_slice(b"sha256");
    img.put(0, &b);
    let src: Source = Arc::new(img);
    let mut r = None;
    let n = largest_allocation(|| r = Some(flr_luks::LuksVolume::open(src.clone(), src)));
    let e = refused(r.unwrap());
    assert!(e.contains("header size"), "{e}");
    assert!(n < 1 << 20, "largest allocation {n}");
}

#[test]
fn luks1_keyslot_claiming_four_billion_stripes_is_refused() {
    let mut img = SparseImage::zeros(1 << 40);
    let mut h = vec![0u8; 592];
    h[..6].copy_from_slice(b"LUKS\xba\xbe");
    h[6..8].copy_from_slice(&1u16.to_be_bytes());
    h[8..11].copy_from_slice(b"aes");
    h[40..51].copy_from_slice(b"xts-plain64");
    h[72..78].copy_from_slice(b"sha256");
    h[104..108].copy_from_slice(&be32(4096));
    h[108..112].copy_from_slice(&be32(64));
    h[164..168].copy_from_slice(&be32(1000));
    h[168..172].copy_from_slice(b"abcd");
    h[208..212].copy_from_slice(&be32(0x00AC_71F3));
    h[212..216].copy_from_slice(&be32(1000));
    h[248..252].copy_from_slice(&be32(8));
    h[252..256].copy_from_slice(&be32(u32::MAX));
    for slot in 1..8 {
        let at = 208 + 48 * slot;
        h[at..at + 4].copy_from_slice(&be32(0x0000_DEAD));
    }
    img.put(0, &h);
    let src: Source = Arc::new(img);
    let mut r = None;
    let n = largest_allocation(|| {
        r = Some(flr_luks::LuksVolume::open(src.clone(), src).and_then(|v| {
            v.unlock(&flr_keys::KeyMaterial::Passphrase(
                flr_keys::Secret::from_slice(b"pw"),
            ))
            .map(|_| ())
        }))
    });
    let e = refused(r.unwrap());
    assert!(e.contains("stripes"), "{e}");
    assert!(n < 1 << 20, "largest allocation {n}");
}

#[test]
fn bitlocker_metadata_claiming_four_gib_is_refused() {
    let mut img = SparseImage::zeros(1 << 40);
    let mut bs = vec![0u8; 512];
    bs[3..11].copy_from_slice(b"-FVE-FS-");
    bs[11..13].copy_from_slice(&512u16.to_le_bytes());
    for (i, off) in [0x10_0000u64, 0x20_0000, 0x30_0000].iter().enumerate() {
        bs[176 + 8 * i..184 + 8 * i].copy_from_slice(&off.to_le_bytes());
        let mut m = vec![0u8; 112];
        m[..8].copy_from_slice(b"-FVE-FS-");
        m[10..12].copy_from_slice(&2u16.to_le_bytes());
        m[64..68].copy_from_slice(&u32::MAX.to_le_bytes());
        m[68..72].copy_from_slice(&1u32.to_le_bytes());
        m[72..76].copy_from_slice(&48u32.to_le_bytes());
        m[76..80].copy_from_slice(&u32::MAX.to_le_bytes());
        img.put(*off, &m);
    }
    img.put(0, &bs);
    let src: Source = Arc::new(img);
    let mut r = None;
    let n = largest_allocation(|| r = Some(flr_bitlocker::BitLockerVolume::open(src)));
    let e = refused(r.unwrap());
    assert!(e.contains("metadata") || e.contains("size"), "{e}");
    assert!(n < 1 << 20, "largest allocation {n}");
}

#[test]
fn the_allocation_counter_sees_allocations() {
    // The guard above is only as good as this counter.
    let n = largest_allocation(|| {
        let v = vec![1u8; 3 << 20];
        std::hint::black_box(&v);
    });
    assert!(n >= 3 << 20, "{n}");
    let _ = SparseImage::zeros(1).len();
}

/// A fixed VHD footer for `size` bytes of data.
fn fixed_vhd_footer(size: u64) -> Vec<u8> {
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&be32(2));
    f[12..16].copy_from_slice(&be32(0x0001_0000));
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    f[60..64].copy_from_slice(&be32(2));
    let c = vhd_sum(&f, 64);
    f[64..68].copy_from_slice(&be32(c));
    f
}

#[test]
fn layers_nested_past_the_depth_cap_are_an_error_not_a_recursion() {
    // 40 fixed VHDs, each the data of the next: every layer opens, so only
    // the depth cap ends the scan.
    let mut disk = vec![0u8; 4096];
    for _ in 0..40 {
        let f = fixed_vhd_footer(disk.len() as u64);
        disk.extend_from_slice(&f);
    }
    let src: Source = Arc::new(flr_io::MemSource::new(disk));
    let image = flr_engine::open_source(
        src,
        "nested-vhd",
        &NoParentResolver,
        flr_engine::Scan::Full,
        &flr_engine::KeyRing::new(),
    )
    .expect("the image opens");
    assert_eq!(image.container.format, "vhd");
    let v = &image.volumes[0];
    assert_eq!(v.content.verdict, flr_engine::Verdict::Error, "{v:?}");
    assert!(
        v.content.detail.contains("layers stacked"),
        "{}",
        v.content.detail
    );
}

#[test]
fn md_and_thin_seeds_reach_the_code_behind_the_headers() {
    // Each md seed, cut into its member slices, assembles into a readable array.
    let md = flr_fuzz::target("md").unwrap();
    let seeds = md.seeds();
    assert!(seeds.len() >= 6);
    for (name, bytes) in seeds {
        let src: Source = Arc::new(SparseImage::decode(&bytes));
        let per = src.len() / 4;
        let members: Vec<flr_md::Member> = (0..4)
            .filter_map(|i| {
                let s = flr_io::Slice::new(src.clone(), i * per, per, "m").ok()?;
                flr_md::Member::read(Arc::new(s), "m").ok()
            })
            .collect();
        let arrays = flr_md::assemble(&members);
        assert!(
            arrays.len() == 1 && arrays[0].open().is_ok(),
            "{name}: {arrays:?}"
        );
    }
    // The thin fixture's seed keeps the pool metadata: its thin LVs open.
    let lvm = flr_fuzz::target("lvm").unwrap();
    let (_, thin) = lvm
        .seeds()
        .into_iter()
        .find(|(n, _)| n.contains("thin"))
        .expect("thin seed");
    let pv = flr_lvm::PhysicalVolume::read(Arc::new(SparseImage::decode(&thin)), "x").unwrap();
    let vg = flr_lvm::assemble(&[pv]).remove(0);
    let lv = vg.open_lv("thin1").expect("thin1 opens from the seed");
    assert!(lv.is_known_zero(320 * 65536, 65536));
}
