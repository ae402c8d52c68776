//! The gateway's HTTP server: the router on hyper, as `axum::serve` runs
//! it, plus the deadlines `axum::serve` leaves out. Without them a client
//! holds a connection (and a file descriptor) for as long as it likes: by
//! sending its headers a byte at a time, never sending a request at all,
//! or never finishing a body.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mallbots_platform::Shutdown;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::clients::{Capped, Peer};

/// What a process starting waits for now, for its door to tell
/// (`http::starting`).
#[derive(Clone)]
pub struct Starting(Arc<Mutex<&'static str>>);

impl Starting {
    pub fn new(what: &'static str) -> Self {
        Starting(Arc::new(Mutex::new(what)))
    }

    pub fn now(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set(&self, what: &'static str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = what;
    }
}

/// Serves the router `routes` holds on `listener` until `stop` fires; then
/// lets the connections finish what they are doing and waits for them.
/// Each request goes to the router `routes` holds when it comes: a
/// process opens its door with the routes of one starting
/// (`http::starting`), then sends its own. A
/// connection has `read_timeout` to send each request's headers, counted
/// from when it opens or its last response went out: an idle keep-alive
/// connection is closed after it too. Websockets, once upgraded, are not
/// held to it.
pub async fn serve<L>(
    mut listener: Capped<L>,
    routes: watch::Receiver<Router>,
    read_timeout: Duration,
    mut stop: Shutdown,
) where
    L: Listener<Addr = std::net::SocketAddr>,
{
    // Every connection holds a receiver; the server is done when all are
    // dropped.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait() => break,
        };
        let routes = routes.clone();
        let service = tower::service_fn(move |mut request: axum::extract::Request<_>| {
            request.extensions_mut().insert(ConnectInfo(Peer(peer)));
            let router = routes.borrow().clone();
            router.oneshot(request.map(axum::body::Body::new))
        });
        let service = TowerToHyperService::new(service);
        let (open, mut closing) = (open_rx.clone(), stop.clone());
        tokio::spawn(async move {
            // HTTP/1 alone, as axum is built: hyper's version sniffing
            // (for HTTP/2) would wait for a first byte without a deadline.
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(read_timeout)
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::trace!(error = %err, "connection ended");
                    }
                }
                _ = closing.wait() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    open_tx.closed().await;
}
