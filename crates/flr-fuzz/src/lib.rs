//! Fuzz targets for every parser in flr, and two ways to run them.
//!
//! * [`targets`] lists them: the containers (VHD, VHDX), the partition
//!   tables (MBR with EBR chains, GPT), LUKS1/2 (binary headers, and the
//!   LUKS2 JSON on its own), BitLocker (volume header and FVE metadata;
//!   `.BEK` files), LVM2 (thin pools included), md RAID, each filesystem (FAT, ext2/3/4, NTFS, XFS), the
//!   Key Vault / Resource Manager JSON the key chain reads, and the whole
//!   stack (bytes → container → partitions → volumes → every file).
//! * Image targets read a [`sparse`] encoding (declared length + chunks),
//!   so that a multi-megabyte fixture becomes a seed of the bytes that
//!   matter, and a 16 TiB disk is 8 bytes.
//! * Checksummed headers are re-checksummed after mutation ([`fixup`]
//!   module), so mutated fields get past the checksum tests.
//! * libFuzzer (coverage guided, `fuzz/` at the repository root, built on
//!   the stable toolchain by `scripts/fuzz`) calls [`Target::run`]; so does
//!   the stable mutation runner ([`run_mutations`], the `flr-fuzz` binary
//!   and this crate's tests), which needs nothing but cargo.
//! * Crashers found are kept in `testdata/fuzz/<target>/` and replayed by
//!   `cargo test -p flr-fuzz` for ever after.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod fixup;
pub mod mutate;
pub mod sparse;
mod targets;

pub use mutate::Rng;
pub use sparse::SparseImage;

/// How a target reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A [`SparseImage`] encoding of a disk or volume.
    Image,
    /// Raw bytes (a file, a JSON document).
    Bytes,
}

/// Where a target's seeds come from.
#[derive(Debug, Clone, Copy)]
enum Seeds {
    /// Committed fixtures (`testdata/…`), as images.
    Fixtures(&'static [&'static str]),
    /// md arrays from committed fixtures: each seed is one array's member
    /// images end to end (padded with blank members to [`MD_SLICES`]).
    MdArrays(&'static [&'static [&'static str]]),
    /// The LUKS2 JSON areas of committed fixtures.
    Luks2Json(&'static [&'static str]),
    /// BitLocker volumes of the shared corpus: boot sector and the three
    /// FVE metadata blocks.
    BitLockerCorpus,
    /// `.BEK` files of the shared corpus.
    BekCorpus,
    /// Key Vault and Resource Manager answers written in this crate.
    VaultJson,
}

/// One fuzz target.
#[derive(Debug)]
pub struct Target {
    /// Its name (`vhd`, `stack`, …), as `scripts/fuzz` and the runner use it.
    pub name: &'static str,
    /// What it drives.
    pub about: &'static str,
    /// Its input format.
    pub input: Input,
    run: fn(&[u8]),
    seeds: Seeds,
    /// Seed bytes kept: only chunks below this offset (headers live at
    /// the start; encrypted payloads would only dilute mutations).
    seed_limit: u64,
}

const ALL: u64 = u64::MAX;

static TARGETS: &[Target] = &[
    Target {
        name: "vhd",
        about: "VHD footer, dynamic header, BAT, sector bitmaps (flr-vhd)",
        input: Input::Image,
        run: targets::vhd,
        seeds: Seeds::Fixtures(&[
            "container/vhd-fixed.vhd.zst",
            "container/vhd-dynamic.vhd.zst",
            "container/vhd-subbyte.vhd.zst",
            "container/vhd-diff1.vhd.zst",
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "vhdx",
        about: "VHDX headers, region table, metadata, BAT, log (flr-vhdx)",
        input: Input::Image,
        run: targets::vhdx,
        seeds: Seeds::Fixtures(&[
            "container/vhdx-fixed.vhdx.zst",
            "container/vhdx-dynamic.vhdx.zst",
            "container/vhdx-diff1.vhdx.zst",
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "mbr",
        about: "MBR and EBR chains (flr-part)",
        input: Input::Image,
        run: targets::mbr,
        seeds: Seeds::Fixtures(&["part/mbr.img.zst"]),
        seed_limit: ALL,
    },
    Target {
        name: "gpt",
        about: "GPT headers and entries, primary and backup, 512/4096 sectors (flr-part)",
        input: Input::Image,
        run: targets::gpt,
        seeds: Seeds::Fixtures(&[
            "part/gpt.img.zst",
            "part/gpt-4k.img.zst",
            "part/gpt-noprimary.img.zst",
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "luks",
        about: "LUKS1 and LUKS2 binary headers, keyslots, segments (flr-luks)",
        input: Input::Image,
        run: targets::luks,
        seeds: Seeds::Fixtures(&[
            "luks/luks1-qemu-xts.img.zst",
            "luks/luks1-hdr-cbc-essiv-sha1.img.zst",
            "luks/luks2-detached-pbkdf2.hdr.zst",
            "luks/luks2-reencrypt-unfinished.img.zst",
        ]),
        seed_limit: 256 << 10,
    },
    Target {
        name: "luks-unlock",
        about: "LUKS1/2 unlock with the fixtures' passphrases: keyslots, AF merge, digest, sector decryption, ext4 inside (flr-luks, flr-cipher)",
        input: Input::Image,
        run: targets::luks_unlock,
        seeds: Seeds::Fixtures(&[
            "luks/luks1-qemu-xts.img.zst",
            "luks/luks1-qemu-cbc-essiv.img.zst",
            "luks/luks2-argon2id-4k.img.zst",
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "luks2-json",
        about: "LUKS2 JSON metadata in a valid binary header (flr-luks)",
        input: Input::Bytes,
        run: targets::luks2_json,
        seeds: Seeds::Luks2Json(&[
            "luks/luks2-detached-pbkdf2.hdr.zst",
            "luks/luks2-reencrypt-unfinished.img.zst",
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "bitlocker",
        about: "BitLocker volume header, FVE metadata blocks and entries (flr-bitlocker)",
        input: Input::Image,
        run: targets::bitlocker,
        seeds: Seeds::BitLockerCorpus,
        seed_limit: ALL,
    },
    Target {
        name: "bek",
        about: "BitLocker .BEK startup key files (flr-bitlocker)",
        input: Input::Bytes,
        run: targets::bek,
        seeds: Seeds::BekCorpus,
        seed_limit: ALL,
    },
    Target {
        name: "lvm",
        about: "LVM2 label, PV header, metadata ring and text metadata, LV segments, thin-pool superblock and mapping B-trees (flr-lvm)",
        input: Input::Image,
        run: targets::lvm,
        seeds: Seeds::Fixtures(&[
            "lvm/two-pv-1.img.zst",
            "lvm/ade-rhel-p3.plain.zst",
            "lvm/thin-pool.img.zst",
        ]),
        // The thin fixture's pool metadata starts at 1 MiB (its tmeta LV)
        // and uses its first 64 KiB.
        seed_limit: (1 << 20) + (64 << 10),
    },
    Target {
        name: "md",
        about: "md RAID superblocks (0.90 either byte order, 1.0/1.1/1.2), role tables, assembly of the members an image is cut into, every level's reads and rebuilds (flr-md)",
        input: Input::Image,
        run: targets::md,
        seeds: Seeds::MdArrays(&[
            &["md/r5-la-0.img.zst", "md/r5-la-1.img.zst", "md/r5-la-2.img.zst", "md/r5-la-3.img.zst"],
            &["md/r6-rs-0.img.zst", "md/r6-rs-1.img.zst", "md/r6-rs-2.img.zst", "md/r6-rs-3.img.zst"],
            &["md/r10-o2-0.img.zst", "md/r10-o2-1.img.zst", "md/r10-o2-2.img.zst", "md/r10-o2-3.img.zst"],
            &["md/r5-be-0.img.zst", "md/r5-be-1.img.zst", "md/r5-be-2.img.zst"],
            &["md/r1-10-0.img.zst", "md/r1-10-1.img.zst", "md/r1-10-2.img.zst"],
            &["md/r0-alt-0.img.zst", "md/r0-alt-1.img.zst", "md/r0-alt-2.img.zst"],
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "fat",
        about: "FAT12/16/32: boot sector, FATs, directories, long names (flr-fat)",
        input: Input::Image,
        run: targets::fat,
        seeds: Seeds::Fixtures(&["fat/fat12.img.zst", "fat/fat32.img.zst"]),
        seed_limit: ALL,
    },
    Target {
        name: "ext4",
        about: "ext2/3/4: superblock, groups, inodes, extents, htree, journal (flr-ext4)",
        input: Input::Image,
        run: targets::ext4,
        seeds: Seeds::Fixtures(&[
            "ext4/ext2.img.zst",
            "ext4/ext4-inline.img.zst",
            "disks/hostile.img.zst",
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "ntfs",
        about: "NTFS: boot sector, MFT records, attributes, runs, indexes (flr-ntfs)",
        input: Input::Image,
        run: targets::ntfs,
        seeds: Seeds::Fixtures(&["ntfs/ntfs.img.zst", "ntfsmeta/ntfsmeta.img.zst"]),
        seed_limit: ALL,
    },
    Target {
        name: "xfs",
        about: "XFS v4/v5: superblock, inodes, directories, extent trees, log replay (flr-xfs)",
        input: Input::Image,
        run: targets::xfs,
        seeds: Seeds::Fixtures(&[
            "xfs/v4.img.zst",
            "xfs/v5-1k.img.zst",
            "xfs/dirty-v5.img.zst",
            "xfs/dirty-v4.img.zst",
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "btrfs",
        about: "Btrfs: superblock, chunk tree, tree blocks, subvolumes, extents, codecs (flr-btrfs)",
        input: Input::Image,
        run: targets::btrfs,
        seeds: Seeds::Fixtures(&["btrfs/log.img.zst", "btrfs/raid5-1.img.zst"]),
        seed_limit: ALL,
    },
    Target {
        name: "stack",
        about: "bytes → every layer of the engine's format list, nested in any order → every file, and disk images stored as files (flr-engine)",
        input: Input::Image,
        run: targets::stack,
        seeds: Seeds::Fixtures(&[
            "container/vhd-dynamic.vhd.zst",
            "container/vhdx-dynamic.vhdx.zst",
            "part/gpt.img.zst",
            "part/mbr.img.zst",
            "stack/stacks.img.zst",
            "stack/fslogix.vhd.zst",
        ]),
        seed_limit: ALL,
    },
    Target {
        name: "keyvault",
        about: "Key Vault and Resource Manager JSON answers read by the key chain (flr-keychain)",
        input: Input::Bytes,
        run: targets::keyvault,
        seeds: Seeds::VaultJson,
        seed_limit: ALL,
    },
];

/// Every target.
pub fn targets() -> &'static [Target] {
    TARGETS
}

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

impl Target {
    /// Runs the target on one input. Panics are bugs (libFuzzer reports
    /// them); use [`Target::check`] to catch them.
    pub fn run(&self, data: &[u8]) {
        (self.run)(data)
    }

    /// Runs the target, catching a panic: `Err(message)` for a bug.
    pub fn check(&self, data: &[u8]) -> Result<(), String> {
        catch_unwind(AssertUnwindSafe(|| (self.run)(data))).map_err(panic_message)
    }

    /// A mutated copy of `input`.
    pub fn mutate(&self, input: &[u8], rng: &mut Rng) -> Vec<u8> {
        match self.input {
            Input::Image => mutate::mutate_image(input, rng),
            Input::Bytes => {
                let mut v = input.to_vec();
                mutate::mutate_bytes(&mut v, rng);
                v
            }
        }
    }

    /// The seeds (name, input): from the committed fixtures, or from the
    /// shared corpus when present. May be empty (the runner then starts
    /// from an empty input and says so).
    pub fn seeds(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        match self.seeds {
            Seeds::Fixtures(list) => {
                for rel in list {
                    let raw = std::fs::read(flr_testdata::fixture(rel)).unwrap_or_default();
                    let keep = raw
                        .len()
                        .min(self.seed_limit.min(usize::MAX as u64) as usize);
                    let mut enc = SparseImage::encode_raw(&raw[..keep]);
                    enc[..8].copy_from_slice(&(raw.len() as u64).to_le_bytes());
                    out.push((seed_name(rel), enc));
                }
            }
            Seeds::MdArrays(arrays) => {
                for (k, files) in arrays.iter().enumerate() {
                    let members: Vec<Vec<u8>> = files
                        .iter()
                        .map(|rel| std::fs::read(flr_testdata::fixture(rel)).unwrap_or_default())
                        .collect();
                    let per = members.iter().map(Vec::len).max().unwrap_or(0);
                    let mut raw = vec![0u8; per * targets::MD_SLICES];
                    for (i, m) in members.iter().enumerate().take(targets::MD_SLICES) {
                        raw[i * per..i * per + m.len()].copy_from_slice(m);
                    }
                    out.push((format!("md-array-{k}"), SparseImage::encode_raw(&raw)));
                }
            }
            Seeds::Luks2Json(list) => {
                for rel in list {
                    let raw = std::fs::read(flr_testdata::fixture(rel)).unwrap_or_default();
                    if raw.len() < 0x4000 {
                        continue;
                    }
                    let json = &raw[4096..0x4000.max(be64(&raw, 8).min(raw.len() as u64) as usize)];
                    let end = json.iter().position(|&b| b == 0).unwrap_or(json.len());
                    out.push((seed_name(rel), json[..end].to_vec()));
                }
            }
            Seeds::BitLockerCorpus => {
                for p in corpus_files("bitlocker", &[".img", ".bin"]) {
                    if let Some(seed) = bitlocker_seed(&p) {
                        out.push((file_name(&p), seed));
                    }
                }
            }
            Seeds::BekCorpus => {
                for p in corpus_files("bitlocker", &[".BEK", ".bek"]) {
                    if let Ok(b) = std::fs::read(&p) {
                        out.push((file_name(&p), b));
                    }
                }
            }
            Seeds::VaultJson => {
                for (k, s) in VAULT_SEEDS.iter().enumerate() {
                    out.push((format!("vault-{k}"), s.as_bytes().to_vec()));
                }
            }
        }
        out
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn seed_name(rel: &str) -> String {
    rel.trim_end_matches(".zst").replace('/', "-")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Files of the unpacked shared corpus under `sub`, if it is there (quietly
/// nothing otherwise: the runner says when a target has no seed).
fn corpus_files(sub: &str, suffixes: &[&str]) -> Vec<PathBuf> {
    let dir = std::env::var_os("FLR_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| flr_testdata::repo_root().join("../shared/corpus"));
    if !dir.join("unpack.sh").exists() {
        return Vec::new();
    }
    let Some((unpacked, _)) = flr_testdata::corpus("flr-fuzz seeds") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut stack = vec![unpacked.join(sub)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if suffixes.iter().any(|s| p.to_string_lossy().ends_with(s)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A BitLocker seed: the first 64 KiB (boot sector, and for To Go the
/// volume header) and 64 KiB at each FVE metadata offset the boot sector
/// names, placed where they were.
fn bitlocker_seed(p: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).ok()?;
    let len = f.metadata().ok()?.len();
    let mut img = SparseImage::zeros(len);
    let mut head = vec![0u8; 64 << 10];
    f.read_exact_at(&mut head, 0).ok()?;
    img.put(0, &head);
    let mut offsets: Vec<u64> = [0xB0usize, 0xB8, 0xC0, 0x1B8, 0x1C0, 0x1C8]
        .iter()
        .map(|&o| u64::from_le_bytes(head[o..o + 8].try_into().unwrap_or([0; 8])))
        .filter(|&o| o > 0 && o < len)
        .collect();
    offsets.dedup();
    for o in offsets {
        let n = (64u64 << 10).min(len - o) as usize;
        let mut b = vec![0u8; n];
        if f.read_exact_at(&mut b, o).is_ok() && b.starts_with(b"-FVE-FS-") {
            img.put(o, &b);
        }
    }
    Some(img.encode())
}

const VAULT_SEEDS: &[&str] = &[
    r#"{"value":"c2VjcmV0LXBhc3NwaHJhc2U=","contentType":"BEK","id":"https://v.vault.azure.net/secrets/disk-1/0123456789abcdef0123456789abcdef","attributes":{"enabled":true,"created":1700000000,"updated":1700000000,"recoveryLevel":"Recoverable+Purgeable"},"tags":{"DiskEncryptionKeyFileName":"LinuxPassPhraseFileName","MachineName":"vm1","VolumeLetter":"/"}}"#,
    r#"{"value":"AAECAw","contentType":"Wrapped BEK","id":"https://v.vault.azure.net/secrets/disk-2/00000000000000000000000000000001","attributes":{"enabled":false,"nbf":1600000000,"exp":1900000000},"tags":{"DiskEncryptionKeyEncryptionAlgorithm":"RSA-OAEP","DiskEncryptionKeyEncryptionKeyURL":"https://v.vault.azure.net/keys/kek/00000000000000000000000000000002","DiskEncryptionKeyFileName":"4381F759-C4F8-4DE0-BB61-FC33A831BDA5.BEK"}}"#,
    r#"{"value":[{"id":"https://v.vault.azure.net/secrets/disk-1/01","attributes":{"enabled":true},"contentType":"BEK","tags":{"MachineName":"vm1"}},{"id":"https://v.vault.azure.net/secrets/disk-1/02","attributes":{"enabled":false}}],"nextLink":"https://v.vault.azure.net/secrets/disk-1/versions?$skiptoken=abc&api-version=7.4"}"#,
    r#"{"key":{"kid":"https://v.vault.azure.net/keys/kek/00000000000000000000000000000002","kty":"RSA","key_ops":["wrapKey","unwrapKey"],"n":"AQAB","e":"AQAB"},"attributes":{"enabled":true,"exp":1}}"#,
    r#"{"kid":"https://v.vault.azure.net/keys/kek/00000000000000000000000000000002","value":"bXktYmVrLWJ5dGVz"}"#,
    r#"{"error":{"code":"Forbidden","message":"Operation unwrapKey is not allowed on a disabled key.","innererror":{"code":"KeyDisabled"}}}"#,
    r#"{"name":"osdisk","id":"/subscriptions/0000/resourceGroups/rg/providers/Microsoft.Compute/disks/osdisk","properties":{"osType":"Linux","encryption":{"type":"EncryptionAtRestWithPlatformKey"},"encryptionSettingsCollection":{"enabled":true,"encryptionSettingsVersion":"1.1","encryptionSettings":[{"diskEncryptionKey":{"secretUrl":"https://v.vault.azure.net/secrets/disk-1/0123456789abcdef0123456789abcdef","sourceVault":{"id":"/subscriptions/0000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v"}},"keyEncryptionKey":{"keyUrl":"https://v.vault.azure.net/keys/kek/00000000000000000000000000000002","sourceVault":{"id":"/subscriptions/0000/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/v"}}}]},"securityProfile":{"securityType":"TrustedLaunch"}}}"#,
];

/// What a mutation run did.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    /// Inputs executed (seeds, regressions and mutants).
    pub executions: u64,
    /// Seeds used.
    pub seeds: usize,
    /// Inputs that panicked: (file written or hash, message).
    pub crashes: Vec<(String, String)>,
    /// The slowest single execution.
    pub slowest: Duration,
}

/// The stable-toolchain runner: every regression input and seed, then
/// mutants of the seeds until `iterations` or `time` is reached. Each
/// input that panics is written to `crash_dir` (when given) and reported.
pub fn run_mutations(
    t: &Target,
    iterations: u64,
    time: Duration,
    rng_seed: u64,
    crash_dir: Option<&Path>,
) -> RunStats {
    run_mutations_guarded(t, iterations, time, rng_seed, crash_dir, &|exec| {
        exec();
        Ok(())
    })
}

/// Runs one execution (the argument) and may fail it.
pub type Guard = dyn Fn(&dyn Fn()) -> Result<(), String>;

/// [`run_mutations`] with a guard around each execution: `guard` is given
/// the execution to run and may fail it (the tests use this to fail any
/// input during which a single allocation exceeded a cap).
pub fn run_mutations_guarded(
    t: &Target,
    iterations: u64,
    time: Duration,
    rng_seed: u64,
    crash_dir: Option<&Path>,
    guard: &Guard,
) -> RunStats {
    let mut stats = RunStats::default();
    let mut pool: Vec<Vec<u8>> = t.seeds().into_iter().map(|(_, b)| b).collect();
    stats.seeds = pool.len();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let one = |data: &[u8], stats: &mut RunStats| {
        let start = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| guard(&|| (t.run)(data))))
            .map_err(panic_message)
            .and_then(|r| r);
        stats.slowest = stats.slowest.max(start.elapsed());
        stats.executions += 1;
        if let Err(msg) = r {
            let name = format!("crash-{}", &flr_testdata::sha256_hex(data)[..16]);
            let shown = match crash_dir {
                Some(dir) => {
                    let _ = std::fs::create_dir_all(dir);
                    let p = dir.join(&name);
                    let _ = std::fs::write(&p, data);
                    p.display().to_string()
                }
                None => name,
            };
            stats.crashes.push((shown, msg));
        }
    };
    for input in regressions(t).iter().chain(pool.iter()) {
        one(input, &mut stats);
    }
    let mut rng = Rng::new(rng_seed);
    let start = Instant::now();
    let mut k = 0u64;
    while k < iterations && start.elapsed() < time {
        let parent = &pool[rng.below(pool.len() as u64) as usize];
        let child = t.mutate(parent, &mut rng);
        one(&child, &mut stats);
        k += 1;
    }
    stats
}

/// `testdata/fuzz/<target>/`: crashers once found, replayed by the tests.
pub fn regressions_dir(t: &Target) -> PathBuf {
    flr_testdata::testdata_dir().join("fuzz").join(t.name)
}

/// The regression inputs of a target.
pub fn regressions(t: &Target) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(regressions_dir(t))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}
