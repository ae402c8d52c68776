//! What one client may use at once: requests per second (a keyed token
//! bucket from `governor`) and open websockets. A client is its verified
//! identity, or its address when it sends no token.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::serve::Listener;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::identity::Identity;

/// The key a client's limits are counted under.
/// A principal is its `sub`, whatever role its tokens claim.
pub fn key(identity: &Identity, address: IpAddr) -> String {
    match &identity.actor {
        Some(actor) if !actor.id.is_nil() => format!("sub:{}", actor.id),
        _ => format!("addr:{address}"),
    }
}

/// Keys kept before the limiter forgets the clients that are back to full.
const FORGET_OVER: usize = 10_000;

pub struct RateLimits {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        RateLimits {
            limiter: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when `key` is over its rate: how long until it may ask again.
    pub fn check(&self, key: &String) -> Result<(), Duration> {
        self.check_n(key, 1)
    }

    /// Like [`RateLimits::check`], for `n` requests at once (a request
    /// holding several mutations counts each).
    pub fn check_n(&self, key: &String, n: u32) -> Result<(), Duration> {
        if self.limiter.len() > FORGET_OVER {
            self.limiter.retain_recent();
        }
        let n = NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            // More at once than the burst ever allows: as good as never.
            Err(_) => Err(Duration::from_secs(1)),
        }
    }
}

/// Open websockets per client.
pub struct SocketCounts {
    open: Mutex<HashMap<String, usize>>,
    max: usize,
}

/// One admitted socket; dropping it frees its place.
pub struct SocketSlot {
    counts: Arc<SocketCounts>,
    key: String,
}

impl SocketCounts {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(SocketCounts {
            open: Mutex::default(),
            max,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for one more socket of `key`, unless it has all it may.
    pub fn admit(self: &Arc<Self>, key: String) -> Option<SocketSlot> {
        let mut open = self.lock();
        let n = open.entry(key.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SocketSlot {
            counts: self.clone(),
            key,
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.counts.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A listener that holds each client address to so many open connections:
/// one more is closed as soon as it is accepted, so no single address can
/// take every file descriptor the process has (half-sent requests included).
pub struct Capped<L> {
    inner: L,
    open: Arc<SocketCounts>,
}

impl<L> Capped<L> {
    pub fn new(inner: L, max_per_address: usize) -> Self {
        Capped {
            inner,
            open: SocketCounts::new(max_per_address),
        }
    }
}

/// An accepted connection; closing it frees its address's place.
pub struct CappedIo<I> {
    io: I,
    _slot: SocketSlot,
}

impl<L> Listener for Capped<L>
where
    L: Listener<Addr = SocketAddr>,
{
    type Io = CappedIo<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            match self.open.admit(format!("addr:{}", addr.ip())) {
                Some(slot) => return (CappedIo { io, _slot: slot }, addr),
                None => {
                    tracing::debug!(%addr, "connection refused: too many from this address");
                    drop(io);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CappedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CappedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The client's address, as handlers extract it (`ConnectInfo<Peer>`; the
/// server puts it in each request, see serve.rs).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_over_its_rate_waits_and_another_does_not() {
        let limits = RateLimits::new(1, 2);
        let (a, b) = ("a".to_owned(), "b".to_owned());
        assert!(limits.check(&a).is_ok());
        assert!(limits.check(&a).is_ok());
        let wait = limits.check(&a).expect_err("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(limits.check(&b).is_ok());
    }

    #[test]
    fn a_socket_slot_is_freed_when_dropped() {
        let counts = SocketCounts::new(2);
        let first = counts.admit("k".into()).expect("first");
        let _second = counts.admit("k".into()).expect("second");
        assert!(counts.admit("k".into()).is_none());
        assert!(counts.admit("other".into()).is_some());
        drop(first);
        assert!(counts.admit("k".into()).is_some());
    }
}
