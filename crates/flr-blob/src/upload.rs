//! Writing page blobs, for tests and tooling only: flr itself never writes
//! to storage. Only the non-zero 512-byte pages of the source are put, so
//! the rest stays unwritten, as on a real Azure disk.

use flr_io::ReadAt;
use reqwest::Url;

use crate::location::API_VERSION;
use crate::BlobError;

/// Largest Put Page body the service accepts.
const PUT_MAX: usize = 4 << 20;

fn err(what: &str, e: impl std::fmt::Display) -> BlobError {
    BlobError::Location(format!("upload: {what}: {e}"))
}

fn runtime() -> Result<tokio::runtime::Runtime, BlobError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(BlobError::Runtime)
}

async fn send(req: reqwest::RequestBuilder, what: &str) -> Result<(), BlobError> {
    let resp = req
        .header("x-ms-version", API_VERSION)
        .send()
        .await
        .map_err(|e| err(what, e))?;
    let status = resp.status();
    if status.is_success() || status.as_u16() == 409 {
        Ok(())
    } else {
        let body = resp.text().await.unwrap_or_default();
        Err(err(what, format!("HTTP {status}: {body}")))
    }
}

fn client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, BlobError> {
    let mut b = reqwest::Client::builder();
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| err("CA file", e))?;
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem).map_err(|e| err("CA file", e))?,
        );
    }
    b.build().map_err(|e| err("HTTP client", e))
}

/// Creates a container (`PUT ?restype=container`) at `container_url`, which
/// carries a SAS allowing it. An existing container is fine.
pub fn create_container(container_url: &str) -> Result<(), BlobError> {
    create_container_with_ca(container_url, None)
}

/// [`create_container`], trusting `ca_file` too (an emulator over https).
pub fn create_container_with_ca(
    container_url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(), BlobError> {
    let mut url = Url::parse(container_url).map_err(|e| err("container URL", e))?;
    url.query_pairs_mut().append_pair("restype", "container");
    let client = client(ca_file)?;
    runtime()?.block_on(send(client.put(url), "create container"))
}

/// Creates a page blob of `src.len()` bytes (rounded up to 512) at
/// `blob_url` (with a SAS allowing writes) and puts the pages of `src`
/// that hold a non-zero byte. Returns the bytes put.
pub fn put_page_blob(blob_url: &str, src: &dyn ReadAt) -> Result<u64, BlobError> {
    put_page_blob_with_ca(blob_url, src, None)
}

/// [`put_page_blob`], trusting `ca_file` too (an emulator over https).
pub fn put_page_blob_with_ca(
    blob_url: &str,
    src: &dyn ReadAt,
    ca_file: Option<&std::path::Path>,
) -> Result<u64, BlobError> {
    let url = Url::parse(blob_url).map_err(|e| err("blob URL", e))?;
    let size = src.len().div_ceil(512) * 512;
    let client = client(ca_file)?;
    runtime()?.block_on(async {
        send(
            client
                .put(url.clone())
                .header("x-ms-blob-type", "PageBlob")
                .header("x-ms-blob-content-length", size.to_string())
                .header("content-length", "0"),
            "create page blob",
        )
        .await?;
        let mut put = 0u64;
        let mut buf = vec![0u8; PUT_MAX];
        let mut off = 0u64;
        while off < size {
            let n = (size - off).min(PUT_MAX as u64) as usize;
            let chunk = &mut buf[..n];
            let have = src.len().saturating_sub(off).min(n as u64) as usize;
            chunk.fill(0);
            src.read_exact_at(off, &mut chunk[..have])
                .map_err(|e| err("reading the source", e))?;
            // Runs of non-zero pages.
            let mut p = 0;
            while p < n {
                if chunk[p..p + 512].iter().all(|&b| b == 0) {
                    p += 512;
                    continue;
                }
                let start = p;
                while p < n && chunk[p..p + 512].iter().any(|&b| b != 0) {
                    p += 512;
                }
                let (a, b) = (off + start as u64, off + p as u64 - 1);
                let mut u = url.clone();
                u.query_pairs_mut().append_pair("comp", "page");
                send(
                    client
                        .put(u)
                        .header("x-ms-page-write", "update")
                        .header("x-ms-range", format!("bytes={a}-{b}"))
                        .body(chunk[start..p].to_vec()),
                    "put page",
                )
                .await?;
                put += (p - start) as u64;
            }
            off += n as u64;
        }
        Ok(put)
    })
}
