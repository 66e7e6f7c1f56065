//! Runs the test vault until killed, for manual checks with curl:
//!
//! ```sh
//! flr-kvtest [--client ID:SECRET]... [--key NAME]... [--proxy-ms MS]
//!            [--page-list-max N] [--page-blob CONTAINER/NAME=FILE[,FILE]...]...
//! ```
//!
//! prints `url=…`, `ca=…` and `tenant=…` lines, the Blob service's
//! `blob_endpoint=…` and `blob_key=…`, then each key's `kid=…`. With
//! `--proxy-ms`, `proxy=https://127.0.0.1:PORT` is a delay proxy adding
//! that round trip to every exchange. `--page-blob` makes a page blob of
//! the first file and a snapshot, then for each further file writes the
//! 4 KiB pieces that differ and takes another snapshot; it prints
//! `snapshot=CONTAINER/NAME FILE TIME WRITTEN_BYTES SAS` per snapshot (SAS:
//! a read SAS query for that snapshot, valid a day).
//! `ready` is printed last.

use std::io::Write;

fn main() {
    let kv = flr_kvtest::TestVault::start();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "url={}", kv.url());
    let _ = writeln!(out, "ca={}", kv.ca_path().display());
    let _ = writeln!(out, "tenant={}", kv.tenant());
    let _ = writeln!(out, "blob_endpoint={}", kv.blob_endpoint());
    let _ = writeln!(out, "blob_key={}", kv.blob_key());
    let mut proxies = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--client" => {
                let (id, secret) = value.split_once(':').unwrap_or((&value, ""));
                kv.add_client(id, secret);
                let _ = writeln!(out, "client={id}");
            }
            "--key" => {
                let _ = writeln!(out, "kid={}", kv.create_rsa_key(&value, 2048));
            }
            "--proxy-ms" => {
                let ms: u64 = value.parse().unwrap_or(20);
                let p = kv.delay_proxy(std::time::Duration::from_millis(ms));
                let _ = writeln!(out, "proxy=https://127.0.0.1:{}", p.port());
                proxies.push(p);
            }
            "--page-list-max" => kv.set_page_list_max(value.parse().unwrap_or(10_000)),
            "--page-blob" => {
                let (blob, files) = value.split_once('=').unwrap_or((&value, ""));
                let (container, name) = blob.split_once('/').unwrap_or(("disks", blob));
                for f in files.split(',').filter(|f| !f.is_empty()) {
                    let written = kv.sync_page_blob(container, name, std::path::Path::new(f));
                    let t = kv.snapshot_blob(container, name);
                    let sas = kv.blob_sas(container, name, Some(&t), "r", 24 * 3600);
                    let _ = writeln!(out, "snapshot={container}/{name} {f} {t} {written} {sas}");
                }
            }
            other => {
                eprintln!("flr-kvtest: unknown argument {other} (--client ID:SECRET, --key NAME, --proxy-ms MS, --page-list-max N, --page-blob C/NAME=FILE,FILE)");
                std::process::exit(2);
            }
        }
    }
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let _keep = proxies;
    loop {
        std::thread::park();
    }
}
