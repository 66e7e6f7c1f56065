//! Differencing VHD/VHDX disks whose parents are blobs too (Azurite): the
//! chains of testdata/container (made by mkdiff.py, virtual-disk hashes
//! from libvhdi in expected.tsv) are uploaded into a folder of a container
//! and the deepest child is opened through a container SAS URL and through
//! a connection string, its parents found beside it by their relative
//! locators. A blob SAS (`sr=b`) cannot read the parents: the error says
//! so. A missing parent names every blob tried. Skipped loudly without
//! Azurite.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flr_blob::{
    blob_service_sas, container_service_sas, BlobLocation, BlobOptions, BlobParentResolver,
    BlobSource, SasTerms, DEV_ACCOUNT, DEV_KEY,
};
use flr_engine::{KeyRing, Scan};
use flr_io::{FileSource, ReadAt, Source};
use flr_kvtest::azurite::{azurite, Azurite};

use crate::util::{run, sha256_hex, stderr};

const CONTAINER: &str = "flr-parents";

fn emulator(test: &str) -> Option<&'static Azurite> {
    let a = azurite();
    if a.is_none() {
        flr_testdata::loud(&format!(
            "SKIPPED blob_parents::{test}: Azurite is not installed (npm install -g azurite, or set FLR_AZURITE_ENDPOINT)"
        ));
    }
    a
}

use flr_testdata::container_expected as expected;

/// Uploads the fixture `image` (decompressed) as the page blob
/// `folder/image`, once per name.
fn upload(a: &Azurite, folder: &str, image: &str) {
    static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let name = format!("{folder}/{image}");
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if done.contains(&name) {
        return;
    }
    flr_blob::upload::create_container(&format!("{}/{CONTAINER}?{}", a.endpoint, a.write_sas()))
        .expect("create container");
    let path: PathBuf = flr_testdata::fixture(&format!("container/{image}.zst"));
    let src = FileSource::open(&path).expect("open fixture");
    flr_blob::upload::put_page_blob(&a.writable_url(CONTAINER, &name), &src).expect("upload");
    done.push(name);
}

/// Uploads `image` and all its parents into `folder`.
fn upload_chain(a: &Azurite, folder: &str, image: &str) {
    let exp = expected();
    let mut cur = Some(image.to_string());
    while let Some(c) = cur {
        upload(a, folder, &c);
        cur = exp.get(&c).and_then(|e| e.parent.clone());
    }
}

fn terms() -> SasTerms<'static> {
    SasTerms::for_next("r", Duration::from_secs(3600), "https,http")
}

fn container_sas_url(a: &Azurite, blob: &str) -> String {
    let sas = container_service_sas(DEV_ACCOUNT, DEV_KEY, CONTAINER, &terms()).expect("dev key");
    format!("{}/{CONTAINER}/{blob}?{sas}", a.endpoint)
}

fn blob_sas_url(a: &Azurite, blob: &str) -> String {
    let sas = blob_service_sas(DEV_ACCOUNT, DEV_KEY, CONTAINER, blob, &terms()).expect("dev key");
    format!("{}/{CONTAINER}/{blob}?{sas}", a.endpoint)
}

fn connection_string(a: &Azurite, blob: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={};Container={CONTAINER};Blob={blob}",
        a.endpoint
    )
}

/// Opens `location` through the engine with a [`BlobParentResolver`].
fn open(location: &str) -> (Result<flr_engine::Image, String>, BlobParentResolver) {
    let loc = BlobLocation::parse(location).expect("location");
    let shown = loc.shown().to_string();
    let parents = BlobParentResolver::new(loc.clone(), BlobOptions::default());
    let blob: Source = Arc::new(BlobSource::open(loc, BlobOptions::default()).expect("open child"));
    let image = flr_engine::open_source(blob, &shown, &parents, Scan::Quick, &KeyRing::default())
        .map_err(|e| e.to_string());
    (image, parents)
}

fn virtual_disk_sha256(d: &dyn ReadAt) -> String {
    let mut all = vec![0u8; usize::try_from(d.len()).expect("small disk")];
    for (i, chunk) in all.chunks_mut(1 << 20).enumerate() {
        d.read_exact_at(i as u64 * (1 << 20), chunk)
            .expect("read the virtual disk");
    }
    sha256_hex(&all)
}

#[test]
fn chains_read_through_a_container_sas_and_a_connection_string() {
    let Some(a) = emulator("chains_read_through_a_container_sas_and_a_connection_string") else {
        return;
    };
    let exp = expected();
    for child in ["vhd-diff2.vhd", "vhdx-diff2.vhdx"] {
        upload_chain(a, "vms/chain", child);
        let blob = format!("vms/chain/{child}");
        for location in [container_sas_url(a, &blob), connection_string(a, &blob)] {
            let (image, parents) = open(&location);
            let image = image.unwrap_or_else(|e| panic!("{child}: {e}"));
            assert_eq!(
                virtual_disk_sha256(image.disk().as_ref()),
                exp[child].sha256,
                "{child}"
            );
            // Both parents were found beside the child, named without SAS.
            let p = &image.container.parents;
            assert_eq!(p.len(), 2, "{child}: {p:?}");
            for (shown, name) in p.iter().zip([
                &exp[child].parent,
                &exp[&exp[child].parent.clone().unwrap()].parent,
            ]) {
                let name = name.as_deref().expect("parent in expected.tsv");
                assert!(
                    shown.ends_with(&format!("/{CONTAINER}/vms/chain/{name}")),
                    "{shown}"
                );
                assert!(!shown.contains("sig="), "{shown}");
            }
            assert_eq!(parents.opened().len(), 2);
            assert!(parents.opened().iter().all(|b| b.stats().requests > 0));
        }
    }

    // The CLI counts the parents' fetches in --stats.
    let out = run(&[
        "probe",
        &container_sas_url(a, "vms/chain/vhdx-diff2.vhdx"),
        "--stats",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("sig=") && !String::from_utf8_lossy(&out.stdout).contains("sig="));
    let line = err
        .lines()
        .find(|l| l.starts_with('{') && l.contains("\"bytes_fetched\""))
        .unwrap_or_else(|| panic!("no stats object in: {err}"));
    let s: serde_json::Value = serde_json::from_str(line).expect("stats JSON");
    assert_eq!(s["blobs"].as_u64(), Some(3), "{s}");
    // Each blob costs at least its properties and page list.
    assert!(s["requests"].as_u64().unwrap() >= 6, "{s}");
    assert!(s["bytes_fetched"].as_u64().unwrap() > 0, "{s}");
}

#[test]
fn a_blob_sas_cannot_read_the_parent_and_says_so() {
    let Some(a) = emulator("a_blob_sas_cannot_read_the_parent_and_says_so") else {
        return;
    };
    upload_chain(a, "vms/chain", "vhd-diff2.vhd");
    let (image, _) = open(&blob_sas_url(a, "vms/chain/vhd-diff2.vhd"));
    let err = image.err().expect("a blob SAS read the parent blob");
    assert!(
        err.contains("sr=b") && err.contains("sr=c") && err.contains("403"),
        "{err}"
    );
    assert!(
        err.contains("vms/chain/vhd-diff1.vhd") && !err.contains("sig="),
        "{err}"
    );

    // The same through the CLI: a clear error, no secret.
    let out = run(&["probe", &blob_sas_url(a, "vms/chain/vhd-diff2.vhd")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("sr=b") && !err.contains("sig="), "{err}");
}

#[test]
fn a_missing_parent_names_the_blobs_tried() {
    let Some(a) = emulator("a_missing_parent_names_the_blobs_tried") else {
        return;
    };
    // The child alone in its folder: its parent is elsewhere.
    upload(a, "orphan", "vhdx-diff2.vhdx");
    let (image, parents) = open(&container_sas_url(a, "orphan/vhdx-diff2.vhdx"));
    let err = image.err().expect("opened a chain without its parent");
    assert!(
        err.contains(&format!("/{CONTAINER}/orphan/vhdx-diff1.vhdx")),
        "{err}"
    );
    assert!(err.contains(".\\\\vhdx-diff1.vhdx"), "{err}");
    assert!(!err.contains("sig=") && !err.contains("sr=b"), "{err}");
    assert!(parents.opened().is_empty());
}
