//! The listener: its own thread and tokio runtime, TLS on every connection,
//! HTTP/1.1 with keep-alive, and each request handed to the router on the
//! blocking pool (RSA key generation takes a while).

use std::convert::Infallible;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::routes::{self, Reply};
use crate::Shared;

/// Largest request body read.
const MAX_BODY: usize = 8 << 20;

/// Serves `listener` until `stop` fires (or its sender is dropped).
pub(crate) fn spawn(
    shared: Arc<Shared>,
    tls: Arc<ServerConfig>,
    listener: std::net::TcpListener,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("flr-kvtest".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("start the test vault's runtime");
            rt.block_on(accept_loop(shared, tls, listener, stop_rx));
            rt.shutdown_timeout(Duration::from_secs(2));
        })
        .expect("start the test vault's thread");
    (stop_tx, thread)
}

async fn accept_loop(
    shared: Arc<Shared>,
    tls: Arc<ServerConfig>,
    listener: std::net::TcpListener,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register the listener");
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let tcp = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            // A client that gives up on the handshake (a wrong CA) is no error here.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            shared
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let service = hyper::service::service_fn(move |req| serve(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => return Ok(plain(413, "request body too large or broken")),
    };
    let request = routes::Request {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        host: header(hyper::header::HOST).or_else(|| parts.uri.authority().map(|a| a.to_string())),
        authorization: header(hyper::header::AUTHORIZATION),
        metadata: header(hyper::header::HeaderName::from_static("metadata")),
        identity_header: header(hyper::header::HeaderName::from_static("x-identity-header")),
        body,
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().ok()?.to_string(),
                ))
            })
            .collect(),
    };
    let reply = tokio::task::spawn_blocking(move || routes::handle(&shared, request)).await;
    Ok(match reply {
        Ok(reply) => response(reply),
        Err(e) => plain(500, &format!("the test vault's handler failed: {e}")),
    })
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        b = b.header(*name, value.as_str());
    }
    let body = match reply.body {
        None if reply.raw.is_some() => {
            let (bytes, ctype) = reply.raw.unwrap_or_default();
            b = b.header("content-type", ctype);
            Bytes::from(bytes)
        }
        Some(json) => {
            b = b.header("content-type", "application/json; charset=utf-8");
            Bytes::from(json.to_string())
        }
        None => Bytes::new(),
    };
    b.body(Full::new(body))
        .unwrap_or_else(|e| plain(500, &format!("bad reply: {e}")))
}

fn plain(status: u16, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}
