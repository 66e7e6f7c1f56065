//! Disk images read straight from blob storage (Azurite): probe, ls and get
//! through a service SAS URL and through connection strings, the byte
//! budget of a restore (counted by `--stats --json` and by a logging proxy
//! that sees every request), and faults injected by that proxy (503s,
//! connection resets, truncated bodies). Skipped loudly without Azurite
//! (`npm install -g azurite`; `.ci/run` installs and starts it).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use flr_blob::{blob_service_sas, SasTerms, DEV_ACCOUNT, DEV_KEY};
use flr_io::FileSource;
use flr_kvtest::azurite::{azurite, Azurite};

use crate::util::{checksums, fixture, manifest, p, run, sha256_hex, stderr};

const CONTAINER: &str = "flr-tests";

fn emulator(test: &str) -> Option<&'static Azurite> {
    let a = azurite();
    if a.is_none() {
        flr_testdata::loud(&format!(
            "SKIPPED blob::{test}: Azurite is not installed (npm install -g azurite, or set FLR_AZURITE_ENDPOINT)"
        ));
    }
    a
}

/// A read-only service SAS URL for a blob of the test container.
fn sas_url(endpoint: &str, blob: &str) -> String {
    let sas = blob_service_sas(
        DEV_ACCOUNT,
        DEV_KEY,
        CONTAINER,
        blob,
        &SasTerms::for_next("r", Duration::from_secs(3600), "https,http"),
    )
    .expect("dev key");
    format!("{endpoint}/{CONTAINER}/{blob}?{sas}")
}

/// Uploads a local image as a page blob (non-zero pages only), once per name.
fn upload(a: &Azurite, name: &str, path: &Path) {
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.iter().any(|d| d == name) {
        return;
    }
    flr_blob::upload::create_container(&format!("{}/{CONTAINER}?{}", a.endpoint, a.write_sas()))
        .expect("create container");
    let src = FileSource::open(path).expect("open fixture");
    flr_blob::upload::put_page_blob(&a.writable_url(CONTAINER, name), &src).expect("upload");
    done.push(name.to_string());
}

/// The `--stats --json` object from stderr.
fn stats(out: &Output) -> serde_json::Value {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"bytes_fetched\""))
        .unwrap_or_else(|| panic!("no stats object in: {err}"));
    serde_json::from_str(line).expect("stats JSON")
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing in {v}"))
}

/// Restores `spec` from `image` into a fresh folder; returns the output,
/// the folder and the checksums printed.
fn get(
    image: &str,
    spec: &str,
    extra: &[&str],
) -> (
    Output,
    tempfile::TempDir,
    std::collections::BTreeMap<String, String>,
) {
    let dest = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["get", image, spec, "-o", p(dest.path()), "--checksum"];
    args.extend_from_slice(extra);
    let out = run(&args);
    let sums = checksums(&out);
    (out, dest, sums)
}

fn check_volume(image: &str, vol: &str, tsv: &str) {
    let (out, _d, sums) = get(image, &format!("{vol}:/"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    for e in manifest(tsv).iter().filter(|e| e.kind == 'f') {
        assert_eq!(sums.get(&e.path), Some(&e.sha256), "{vol}:/{}", e.path);
    }
}

#[test]
fn sas_url_probe_ls_get() {
    let Some(a) = emulator("sas_url_probe_ls_get") else {
        return;
    };
    upload(a, "demo.vhdx", &fixture("disks/demo.vhdx.zst"));
    let url = sas_url(&a.endpoint, "demo.vhdx");
    let out = run(&["probe", &url, "--json", "--stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let probe = String::from_utf8_lossy(&out.stdout);
    assert!(probe.contains("vhdx") && probe.contains("ntfs") && probe.contains("ext"));
    // The SAS signature is never printed.
    assert!(!probe.contains("sig=") && !stderr(&out).contains("sig="));
    let s = stats(&out);
    assert!(n(&s, "requests") >= 3 && n(&s, "bytes_fetched") > 0);
    assert!(s["seconds"].as_f64().is_some());

    let out = run(&["ls", &url, "p3:/Users/Bob/Documents"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ls = String::from_utf8_lossy(&out.stdout);
    assert!(
        ls.contains("report.txt") && ls.contains("budget.csv"),
        "{ls}"
    );
    for (vol, tsv) in [
        ("p1", "disks/demo.p1.tsv"),
        ("p2", "disks/demo.p2.tsv"),
        ("p3", "disks/demo.p3.tsv"),
    ] {
        check_volume(&url, vol, tsv);
    }
    // Human stats go to stderr, stdout stays the file.
    let out = run(&["cat", &url, "p3:/Users/Bob/Documents/report.txt", "--stats"]);
    assert!(out.status.success());
    assert_eq!(
        sha256_hex(&out.stdout),
        "fec6bd7a7509241842ebf2aad5690db1ca2719093483111eed45a1d3b27156f6"
    );
    assert!(stderr(&out).contains("flr: stats:") && stderr(&out).contains("requests"));
    // --stats=json: one JSON object, on every command (cat has no --json).
    let out = run(&[
        "cat",
        &url,
        "p3:/Users/Bob/Documents/report.txt",
        "--stats=json",
    ]);
    assert!(out.status.success());
    assert_eq!(
        sha256_hex(&out.stdout),
        "fec6bd7a7509241842ebf2aad5690db1ca2719093483111eed45a1d3b27156f6"
    );
    let s = stats(&out);
    assert!(n(&s, "bytes_fetched") > 0 && n(&s, "requests") > 0, "{s}");
    assert!(s["seconds"].as_f64().is_some(), "{s}");
}

#[test]
fn dynamic_vhd_blob() {
    let Some(a) = emulator("dynamic_vhd_blob") else {
        return;
    };
    let local = crate::util::fixture("demo.vhd");
    upload(a, "demo.vhd", &local);
    let url = sas_url(&a.endpoint, "demo.vhd");
    // The blob gives the same restore as the local file.
    let from_blob = run(&["probe", &url]);
    let from_file = run(&["probe", p(&local)]);
    assert!(from_blob.status.success(), "{}", stderr(&from_blob));
    let strip = |o: &Output, loc: &str| String::from_utf8_lossy(&o.stdout).replace(loc, "IMAGE");
    assert_eq!(
        strip(&from_blob, &format!("{}/{CONTAINER}/demo.vhd", a.endpoint)),
        strip(&from_file, p(&local))
    );
}

#[test]
fn connection_strings() {
    let Some(a) = emulator("connection_strings") else {
        return;
    };
    upload(a, "demo.vhdx", &fixture("disks/demo.vhdx.zst"));
    let full = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={};Container={CONTAINER};Blob=demo.vhdx",
        a.endpoint
    );
    check_volume(&full, "p2", "disks/demo.p2.tsv");
    if a.endpoint == flr_blob::DEV_BLOB_ENDPOINT {
        let dev = format!("UseDevelopmentStorage=true;Container={CONTAINER};Blob=demo.vhdx");
        check_volume(&dev, "p3", "disks/demo.p3.tsv");
    } else {
        flr_testdata::loud(
            "SKIPPED blob::connection_strings UseDevelopmentStorage=true: Azurite is not on 127.0.0.1:10000",
        );
    }
    // A wrong key is refused by the service: a clear error, exit 3, the
    // request id named.
    let bad = full.replace(
        DEV_KEY,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    );
    let out = run(&["probe", &bad]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("403") && stderr(&out).contains("request id"));
    // A malformed location is a usage error.
    let out = run(&["probe", "UseDevelopmentStorage=true;Container=x"]);
    assert_eq!(out.status.code(), Some(2));
}

// ---------------------------------------------------------------------------
// A 1 GiB fixed VHD holding ext4 with a 1 MiB and a 64 KiB file, mostly unwritten.

struct BigDisk {
    _dir: tempfile::TempDir,
    vhd: PathBuf,
    big_sha: String,
    small_sha: String,
}

fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// A fixed VHD footer for `size` bytes (checksum computed, as Azure disks have).
fn vhd_footer(size: u64) -> [u8; 512] {
    let mut f = [0u8; 512];
    f[0..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    f[28..32].copy_from_slice(b"flr ");
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    // CHS geometry: 65535 cylinders, 16 heads, 255 sectors (the cap).
    f[56..58].copy_from_slice(&65535u16.to_be_bytes());
    f[58] = 16;
    f[59] = 255;
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    f[68..84].copy_from_slice(&[0x5a; 16]);
    let sum: u32 = f.iter().map(|&b| u32::from(b)).sum();
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

fn big_disk() -> Option<&'static BigDisk> {
    static D: OnceLock<Option<BigDisk>> = OnceLock::new();
    D.get_or_init(|| {
        if !flr_testdata::have_tool("mke2fs") {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("data")).ok()?;
        let big = pseudo_random(1 << 20, 0x1234_5678_9abc_def1);
        let small = pseudo_random(64 << 10, 0x0fed_cba9_8765_4321);
        std::fs::write(root.join("data/big.bin"), &big).ok()?;
        std::fs::write(root.join("data/small.bin"), &small).ok()?;
        let vhd = dir.path().join("big.vhd");
        let size: u64 = 1 << 30;
        std::fs::File::create(&vhd).ok()?.set_len(size).ok()?;
        let st = std::process::Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-L", "blobtest"])
            .args(["-U", "5a5a5a5a-1111-4222-8333-444455556666"])
            .args(["-E", "lazy_itable_init=1,lazy_journal_init=1"])
            .arg("-d")
            .arg(&root)
            .arg(&vhd)
            .env("E2FSPROGS_FAKE_TIME", "1700000000")
            .status()
            .ok()?;
        if !st.success() {
            return None;
        }
        let f = std::fs::OpenOptions::new().write(true).open(&vhd).ok()?;
        f.write_all_at(&vhd_footer(size), size).ok()?;
        Some(BigDisk {
            big_sha: sha256_hex(&big),
            small_sha: sha256_hex(&small),
            vhd,
            _dir: dir,
        })
    })
    .as_ref()
}

fn big_setup(test: &str) -> Option<(&'static Azurite, &'static BigDisk)> {
    let a = emulator(test)?;
    let Some(d) = big_disk() else {
        flr_testdata::loud(&format!(
            "SKIPPED blob::{test}: mke2fs (e2fsprogs) is missing"
        ));
        return None;
    };
    upload(a, "big.vhd", &d.vhd);
    Some((a, d))
}

#[test]
fn byte_budget_one_mib_from_a_mostly_unwritten_gib() {
    let Some((a, d)) = big_setup("byte_budget_one_mib_from_a_mostly_unwritten_gib") else {
        return;
    };
    let proxy = Proxy::start(a.port(), Arc::new(|_, _| Fault::Pass));
    let url = sas_url(&proxy.endpoint(), "big.vhd");
    let (out, dest, sums) = get(&url, "disk:/data/big.bin", &["--stats", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sums.get("big.bin"), Some(&d.big_sha));
    assert!(dest.path().join("big.bin").is_file());
    let s = stats(&out);
    let fetched = n(&s, "bytes_fetched");
    assert!(
        fetched <= (1 << 20) + (4 << 20),
        "fetched {fetched} bytes for a 1 MiB file: {s}"
    );
    assert!(n(&s, "blob_size") > 1 << 30);
    assert!(n(&s, "unwritten_blocks") > 0 || n(&s, "cache_hits") > 0);
    // Every range request the proxy saw touches written pages: nothing was
    // asked for an unwritten range.
    let local = std::fs::File::open(&d.vhd).expect("open local copy");
    let ranges = proxy.ranges();
    assert!(!ranges.is_empty());
    let mut total = 0;
    for (a, b) in &ranges {
        let mut buf = vec![0u8; usize::try_from(b - a + 1).unwrap()];
        local.read_exact_at(&mut buf, *a).unwrap();
        assert!(
            buf.iter().any(|&x| x != 0),
            "request for unwritten bytes {a}-{b}"
        );
        total += b - a + 1;
    }
    // Requests still in flight at exit (read-ahead) are not in the stats:
    // what was asked for keeps to the same budget.
    assert!(total <= (1 << 20) + (4 << 20), "requested {total} bytes");

    // 64 KiB from ext4 stays under 2 MiB.
    let (out, _d, sums) = get(&url, "disk:/data/small.bin", &["--stats", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sums.get("small.bin"), Some(&d.small_sha));
    let f = n(&stats(&out), "bytes_fetched");
    assert!(f < 2 << 20, "64 KiB from ext4 fetched {f} bytes");
}

#[test]
fn byte_budget_small_file_from_ntfs() {
    let Some(a) = emulator("byte_budget_small_file_from_ntfs") else {
        return;
    };
    upload(a, "demo.vhdx", &fixture("disks/demo.vhdx.zst"));
    let url = sas_url(&a.endpoint, "demo.vhdx");
    // The blob has about 2.9 MB of written pages; a 300 kB NTFS file must
    // not need most of them.
    let (out, _d, sums) = get(&url, "p3:/Projects/2024/model.bin", &["--stats", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sums.get("model.bin").map(String::as_str),
        Some("553cb2d9d5869fc068f7870108b655dabf20bb0ba076c7eb0fd0a1bd960d8b11")
    );
    let f = n(&stats(&out), "bytes_fetched");
    assert!(f < 2 << 20, "fetched {f} bytes");
}

// ---------------------------------------------------------------------------
// Faults.

#[derive(Clone, Copy, Debug)]
enum Fault {
    Pass,
    /// 503 Server Busy.
    Busy,
    /// Close the connection without an answer.
    Reset,
    /// Send the headers and half the body, then close.
    Truncate,
    /// Ask the emulator for the range 4 KiB further on, and pass its
    /// (consistent, but other) answer back: a confused cache in between.
    Shifted,
}

type Policy = Arc<dyn Fn(usize, &str) -> Fault + Send + Sync>;

/// Inclusive byte ranges of the range reads a proxy passed on.
type RangeLog = Mutex<Vec<(u64, u64)>>;

/// A loopback HTTP proxy in front of Azurite: logs each request's range,
/// and answers some requests with a fault instead of the real response.
struct Proxy {
    port: u16,
    log: Arc<RangeLog>,
    /// The ranges whose answers were cut off (`Fault::Truncate`).
    cut: Arc<RangeLog>,
}

impl Proxy {
    fn start(upstream: u16, policy: Policy) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = l.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (log2, cut2) = (Arc::clone(&log), Arc::clone(&cut));
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let (policy, log, cut, count) = (
                    Arc::clone(&policy),
                    Arc::clone(&log2),
                    Arc::clone(&cut2),
                    Arc::clone(&count),
                );
                std::thread::spawn(move || {
                    let _ = serve(c, upstream, &*policy, (&log, &cut), &count);
                });
            }
        });
        Proxy { port, log, cut }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    fn ranges(&self) -> Vec<(u64, u64)> {
        self.log.lock().unwrap().clone()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One request per client connection: the response always says
/// `Connection: close`.
fn serve(
    mut c: TcpStream,
    upstream: u16,
    policy: &(dyn Fn(usize, &str) -> Fault + Send + Sync),
    (log, cut): (&RangeLog, &RangeLog),
    count: &AtomicUsize,
) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 65536];
    let head_end = loop {
        let k = c.read(&mut buf)?;
        if k == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..k]);
        if let Some(i) = find(&req, b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_string();
    let mut body_len = 0usize;
    let mut lines = Vec::new();
    let mut range = None;
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            body_len = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = lower.strip_prefix("x-ms-range:") {
            let v = v.trim().trim_start_matches("bytes=");
            if let Some((a, b)) = v.split_once('-') {
                range = Some((a.parse().unwrap_or(0), b.parse().unwrap_or(0)));
            }
        }
        if lower.starts_with("connection:") {
            continue;
        }
        lines.push(line.to_string());
    }
    while req.len() < head_end + body_len {
        let k = c.read(&mut buf)?;
        if k == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..k]);
    }
    let nth = count.fetch_add(1, Ordering::SeqCst);
    let fault = policy(nth, &lines[0]);
    if let (Fault::Shifted, Some((a, b))) = (fault, range) {
        for l in lines.iter_mut() {
            if l.to_ascii_lowercase().starts_with("x-ms-range:") {
                *l = format!("x-ms-range: bytes={}-{}", a + 4096, b + 4096);
            }
        }
    }
    if let (Some(r), Fault::Pass | Fault::Truncate) = (range, fault) {
        log.lock().unwrap().push(r);
        if let Fault::Truncate = fault {
            cut.lock().unwrap().push(r);
        }
    }
    match fault {
        Fault::Busy => {
            c.write_all(b"HTTP/1.1 503 The server is busy.\r\nContent-Length: 0\r\nx-ms-request-id: proxy-busy\r\nx-ms-error-code: ServerBusy\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Fault::Reset => {
            c.shutdown(Shutdown::Both)?;
            return Ok(());
        }
        _ => {}
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(&req[head_end..head_end + body_len]);
    up.write_all(&out)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    if let Fault::Truncate = fault {
        let h = find(&resp, b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
        let cut = h + (resp.len() - h) / 2;
        c.write_all(&resp[..cut])?;
    } else {
        c.write_all(&resp)?;
    }
    c.shutdown(Shutdown::Both)
}

#[test]
fn faults_are_retried_and_the_file_is_exact() {
    let Some((a, d)) = big_setup("faults_are_retried_and_the_file_is_exact") else {
        return;
    };
    // Every third request fails, in turn with a 503, a reset, a truncated
    // body and the answer for another range.
    let proxy = Proxy::start(
        a.port(),
        Arc::new(|i, _| match i % 12 {
            2 => Fault::Busy,
            5 => Fault::Reset,
            8 => Fault::Truncate,
            11 => Fault::Shifted,
            _ => Fault::Pass,
        }),
    );
    let url = sas_url(&proxy.endpoint(), "big.vhd");
    let dest = tempfile::tempdir().unwrap();
    let out = crate::util::flr()
        .args([
            "get",
            &url,
            "disk:/data/big.bin",
            "-o",
            p(dest.path()),
            "--checksum",
        ])
        .args(["--stats", "--json"])
        .env("FLR_BLOB_RETRY_MS", "5")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(checksums(&out).get("big.bin"), Some(&d.big_sha));
    let s = stats(&out);
    assert!(n(&s, "retries") >= 2, "{s}");
}

#[test]
fn a_failing_source_leaves_no_partial_file() {
    let Some((a, _d)) = big_setup("a_failing_source_leaves_no_partial_file") else {
        return;
    };
    // Count the requests a clean restore needs, then fail every request
    // after the first half of them.
    let clean = Proxy::start(a.port(), Arc::new(|_, _| Fault::Pass));
    let (out, _dest, _) = get(
        &sas_url(&clean.endpoint(), "big.vhd"),
        "disk:/data/big.bin",
        &["--stats", "--json", "--concurrency", "1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let needed = n(&stats(&out), "requests") as usize;
    let half = needed / 2;
    let proxy = Proxy::start(
        a.port(),
        Arc::new(move |i, _| if i >= half { Fault::Busy } else { Fault::Pass }),
    );
    let dest = tempfile::tempdir().unwrap();
    let out = crate::util::flr()
        .args([
            "get",
            &sas_url(&proxy.endpoint(), "big.vhd"),
            "disk:/data/big.bin",
        ])
        .args(["-o", p(dest.path()), "--concurrency", "1"])
        .env("FLR_BLOB_RETRY_MS", "5")
        .env("FLR_BLOB_ATTEMPTS", "3")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("503")
            && err.contains("after 3 attempt(s)")
            && err.contains("request id proxy-busy"),
        "{err}"
    );
    assert!(!err.contains("sig="), "{err}");
    let left: Vec<_> = std::fs::read_dir(dest.path()).unwrap().flatten().collect();
    assert!(left.is_empty(), "partial output left: {left:?}");
}

/// Large reads (a parallel stream's 8 MiB chunk of a big file) go from the
/// responses straight into the reader's buffer, not through the block
/// cache. Checked on a 64 MiB page blob with never-written stretches,
/// against the local file's bytes: an unwritten 3 MiB stretch inside a read
/// costs no request, a short unwritten gap is read with its neighbours
/// rather than split, no request exceeds the largest request size, and an
/// answer cut off part way is resumed by asking only for the bytes still
/// missing.
#[test]
fn large_reads_go_straight_from_the_responses() {
    let Some(a) = emulator("large_reads_go_straight_from_the_responses") else {
        return;
    };
    const MIB: usize = 1 << 20;
    let mut data = pseudo_random(64 * MIB, 0x5151_7272_9393_b4b5);
    data[10 * MIB..13 * MIB].fill(0); // unwritten: skipped
    data[20 * MIB + 512..20 * MIB + 8192].fill(0); // unwritten, short: read through
    data[63 * MIB..].fill(0); // unwritten tail
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pattern.bin");
    std::fs::write(&path, &data).unwrap();
    upload(a, "pattern.bin", &path);

    // Cut off the answer to the second and fifth range reads.
    let reads = Arc::new(AtomicUsize::new(0));
    let proxy = Proxy::start(
        a.port(),
        Arc::new(move |_, line| {
            if !line.starts_with("GET ") || line.contains("comp=pagelist") {
                return Fault::Pass;
            }
            match reads.fetch_add(1, Ordering::SeqCst) {
                1 | 4 => Fault::Truncate,
                _ => Fault::Pass,
            }
        }),
    );
    let loc = flr_blob::BlobLocation::parse(&sas_url(&proxy.endpoint(), "pattern.bin")).unwrap();
    let opts = flr_blob::BlobOptions {
        base_delay: Duration::from_millis(5),
        ..flr_blob::BlobOptions::default()
    };
    let max_request = opts.max_request;
    let blob = flr_blob::BlobSource::open(loc, opts).expect("open the blob");
    use flr_io::ReadAt;
    let after_open = blob.stats().bytes_fetched;
    // Unaligned, across the skipped stretch, the short gap and the tail.
    for (off, len) in [
        (MIB + 777, 40 * MIB + 123),
        (44 * MIB, 20 * MIB),
        (3 * MIB + 1, 2 * MIB + 5),
    ] {
        let mut buf = vec![0xeeu8; len];
        blob.read_exact_at(off as u64, &mut buf).unwrap();
        assert!(
            buf == data[off..off + len],
            "bytes differ in the read of {len} at {off}"
        );
    }
    let st = blob.stats();
    // What was read, less the 3 MiB and 1 MiB never written.
    let wanted = (40 * MIB + 123 + 20 * MIB + 2 * MIB + 5 - 4 * MIB) as u64;
    let fetched = st.bytes_fetched - after_open;
    // Cut-off answers cost at most half of each of the two again.
    assert!(
        fetched >= wanted && fetched <= wanted + max_request,
        "fetched {fetched}, wanted {wanted}: {st:?}"
    );
    assert_eq!(st.cache_hits, 0, "{st:?}");
    let log = proxy.ranges();
    for &(s, e) in &log {
        assert!(e - s < max_request, "a request of {} bytes", e - s + 1);
        let (s, e) = (s as usize, e as usize);
        assert!(
            e < 10 * MIB || s >= 13 * MIB,
            "a request for the unwritten stretch: {s}-{e}"
        );
        assert!(s < 63 * MIB, "a request for the unwritten tail: {s}-{e}");
    }
    let cut = proxy.cut.lock().unwrap().clone();
    assert_eq!(cut.len(), 2, "{log:?}");
    for (s, e) in cut {
        assert!(
            log.iter().any(|&(s2, e2)| e2 == e && s2 > s),
            "the cut-off read {s}-{e} was not resumed where it broke: {log:?}"
        );
    }

    // A large read whose first block is cached already (metadata read just
    // before a file's data): that block comes from the cache, the rest
    // straight from the responses, and nothing is fetched twice.
    let mut small = vec![0u8; 4096];
    blob.read_exact_at(30 * MIB as u64, &mut small).unwrap();
    assert!(small == data[30 * MIB..30 * MIB + 4096]);
    let before = blob.stats();
    let (off, len) = (30 * MIB + 100, 6 * MIB);
    let mut buf = vec![0xeeu8; len];
    blob.read_exact_at(off as u64, &mut buf).unwrap();
    assert!(
        buf == data[off..off + len],
        "bytes differ after a cached head"
    );
    let after = blob.stats();
    assert!(after.cache_hits > before.cache_hits, "{after:?}");
    let block = before.block_size;
    assert!(
        after.bytes_fetched - before.bytes_fetched <= len as u64 - (block - 100 - 4096) + 4096,
        "the cached head was fetched again: {before:?} {after:?}"
    );
}
