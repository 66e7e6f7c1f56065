//! Runs the test vault until killed, for manual checks with curl:
//!
//! ```sh
//! flr-kvtest [--client ID:SECRET]... [--key NAME]...
//! ```
//!
//! prints `url=…`, `ca=…` and `tenant=…` lines, then each key's `kid=…`.

use std::io::Write;

fn main() {
    let kv = flr_kvtest::TestVault::start();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "url={}", kv.url());
    let _ = writeln!(out, "ca={}", kv.ca_path().display());
    let _ = writeln!(out, "tenant={}", kv.tenant());
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
            other => {
                eprintln!("flr-kvtest: unknown argument {other} (--client ID:SECRET, --key NAME)");
                std::process::exit(2);
            }
        }
    }
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
