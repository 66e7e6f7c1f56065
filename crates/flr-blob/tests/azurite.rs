//! BlobSource against a real Azurite: exact bytes, no requests for
//! unwritten pages, ETag pinning. Skipped loudly without Azurite.

use std::time::Duration;

use flr_blob::{
    blob_service_sas, BlobLocation, BlobOptions, BlobSource, SasTerms, DEV_ACCOUNT, DEV_KEY,
};
use flr_io::{MemSource, ReadAt};
use flr_kvtest::azurite::azurite;

fn skip(test: &str) -> bool {
    if azurite().is_none() {
        flr_testdata::loud(&format!(
            "SKIPPED flr-blob {test}: Azurite is not installed (npm install -g azurite, or set FLR_AZURITE_ENDPOINT)"
        ));
        return true;
    }
    false
}

/// 8 MiB: pseudo-random data in [0, 1 MiB) and [5 MiB, 5 MiB + 300 KiB), zeros elsewhere.
fn image() -> Vec<u8> {
    let mut v = vec![0u8; 8 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for r in [0..(1 << 20), (5 << 20)..((5 << 20) + (300 << 10))] {
        for b in &mut v[r] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 24) as u8 | 1;
        }
    }
    v
}

fn upload(container: &str, blob: &str, data: &[u8]) -> String {
    let a = azurite().unwrap();
    flr_blob::upload::create_container(&format!("{}/{container}?{}", a.endpoint, a.write_sas()))
        .unwrap();
    let put = flr_blob::upload::put_page_blob(
        &a.writable_url(container, blob),
        &MemSource::new(data.to_vec()),
    )
    .unwrap();
    assert!(put <= data.len() as u64);
    let sas = blob_service_sas(
        DEV_ACCOUNT,
        DEV_KEY,
        container,
        blob,
        &SasTerms::for_next("r", Duration::from_secs(3600), "https,http"),
    )
    .unwrap();
    format!("{}/{container}/{blob}?{sas}", a.endpoint)
}

#[test]
fn exact_bytes_and_no_requests_for_holes() {
    if skip("exact_bytes_and_no_requests_for_holes") {
        return;
    }
    let data = image();
    let url = upload("crate-exact", "disk.img", &data);
    let src = BlobSource::open(BlobLocation::parse(&url).unwrap(), BlobOptions::default()).unwrap();
    assert!(src.has_page_map());
    assert_eq!(src.len(), data.len() as u64);
    let open = src.stats();
    assert_eq!(open.requests, 2, "properties + page list");
    assert_eq!(open.written_bytes, (1 << 20) + (300 << 10));

    // A read wholly in the hole costs nothing.
    let mut buf = vec![1u8; 2 << 20];
    src.read_exact_at(2 << 20, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert!(src.is_known_zero(2 << 20, 2 << 20));
    assert!(!src.is_known_zero(0, 1));
    assert_eq!(src.stats().requests, 2);

    // Unaligned reads across the written/unwritten boundary and across blocks.
    for &(off, len) in &[
        (0u64, 1usize),
        (65_535, 3),
        (1_000_000, 100_000),
        ((5 << 20) - 7, 400 << 10),
        ((8 << 20) - 513, 513),
    ] {
        let mut b = vec![0u8; len];
        src.read_exact_at(off, &mut b).unwrap();
        assert_eq!(&b[..], &data[off as usize..off as usize + len], "at {off}");
    }
    assert!(src.read_exact_at((8 << 20) - 1, &mut [0u8; 2]).is_err());

    // Re-reading is served from the cache.
    let before = src.stats();
    let mut b = vec![0u8; 100_000];
    src.read_exact_at(1_000_000, &mut b).unwrap();
    let after = src.stats();
    assert_eq!(after.requests, before.requests);
    assert!(after.cache_hits > before.cache_hits);

    // Sequential streaming of the written MiB: whole file exact, fetched
    // bytes bounded by what was written plus one block per edge.
    let src = BlobSource::open(BlobLocation::parse(&url).unwrap(), BlobOptions::default()).unwrap();
    let mut all = vec![0u8; data.len()];
    for (i, c) in all.chunks_mut(128 << 10).enumerate() {
        src.read_exact_at((i * (128 << 10)) as u64, c).unwrap();
    }
    assert!(all == data);
    let s = src.stats();
    assert!(
        s.bytes_fetched <= s.written_bytes + (256 << 10) + 8192,
        "{s:?}"
    );
    assert!(s.unwritten_blocks > 0);
}

#[test]
fn etag_is_pinned() {
    if skip("etag_is_pinned") {
        return;
    }
    let data = image();
    let url = upload("crate-etag", "disk.img", &data);
    let src = BlobSource::open(BlobLocation::parse(&url).unwrap(), BlobOptions::default()).unwrap();
    let mut b = [0u8; 512];
    src.read_exact_at(0, &mut b).unwrap();
    // Someone writes to the blob mid-restore.
    let changed = MemSource::new(vec![7u8; 8 << 20]);
    flr_blob::upload::put_page_blob(
        &azurite().unwrap().writable_url("crate-etag", "disk.img"),
        &changed,
    )
    .unwrap();
    let e = src.read_exact_at(5 << 20, &mut b).unwrap_err().to_string();
    assert!(e.contains("changed while it was being read"), "{e}");
    assert!(e.contains("request id"), "{e}");
}

#[test]
fn connection_string_reads() {
    if skip("connection_string_reads") {
        return;
    }
    let data = image();
    upload("crate-conn", "sub/disk.img", &data);
    let a = azurite().unwrap();
    let cs = format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={};Container=crate-conn;Blob=sub/disk.img",
        a.endpoint
    );
    let src = BlobSource::open(BlobLocation::parse(&cs).unwrap(), BlobOptions::default()).unwrap();
    let mut b = vec![0u8; 4096];
    src.read_exact_at(5 << 20, &mut b).unwrap();
    assert_eq!(&b[..], &data[5 << 20..(5 << 20) + 4096]);
    // A missing blob is a clear error naming the blob but not the SAS.
    let cs = cs.replace("Blob=sub/disk.img", "Blob=nope.img");
    let e = BlobSource::open(BlobLocation::parse(&cs).unwrap(), BlobOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("nope.img") && e.contains("404") && !e.contains("sig="),
        "{e}"
    );
}

#[test]
fn read_ahead_keeps_to_the_budget_when_data_follows() {
    if skip("read_ahead_keeps_to_the_budget_when_data_follows") {
        return;
    }
    // 16 MiB, all written: whatever read-ahead fetches past a "file" costs.
    let mut data = image();
    data.resize(16 << 20, 0);
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    let url = upload("crate-ahead", "full.img", &data);
    let src = BlobSource::open(BlobLocation::parse(&url).unwrap(), BlobOptions::default()).unwrap();
    let before = src.stats();
    // Stream a 1 MiB "file" at 4 MiB in 128 KiB reads, as flr get does.
    let mut buf = vec![0u8; 128 << 10];
    for i in 0..8u64 {
        let off = (4 << 20) + i * (128 << 10);
        src.read_exact_at(off, &mut buf).unwrap();
        assert_eq!(&buf[..], &data[off as usize..off as usize + buf.len()]);
    }
    // Let in-flight read-ahead land so that it is counted.
    std::thread::sleep(Duration::from_millis(500));
    let s = src.stats();
    let fetched = s.bytes_fetched - before.bytes_fetched;
    // Read-ahead never exceeds what the stream has read: at most 2 MiB in all.
    assert!(
        fetched <= 2 << 20,
        "fetched {fetched} bytes for a 1 MiB stream"
    );
    assert!(s.requests - before.requests <= 8, "{s:?}");
    assert!(s.cache_hits > 0);
}
