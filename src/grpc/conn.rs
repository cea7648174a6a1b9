//! Client connections: how many may be open at once, and closing those
//! that sit idle. HTTP/2 keepalive pings find dead peers, but a live peer
//! that never calls (or a socket that never speaks) would be held forever;
//! here a connection with no call running for `idle` reads as closed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What one connection's calls and its reader share.
#[derive(Debug)]
pub struct ConnState {
    running: AtomicUsize,
    /// When the last call ended (or the connection opened).
    idle_since: Mutex<Instant>,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            running: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// Marks a call running until the guard drops.
    pub fn call(self: &Arc<Self>) -> CallGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        CallGuard(self.clone())
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.running.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            *self
                .idle_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}

/// A call running on a connection.
#[derive(Debug)]
pub struct CallGuard(Arc<ConnState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        *self
            .0
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connect info every request carries (tonic puts it in the request's
/// extensions; under TLS inside `TlsConnectInfo`).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    pub state: Arc<ConnState>,
}

/// Counts open connections against a limit.
#[derive(Debug)]
pub struct ConnLimit {
    open: AtomicUsize,
    max: usize,
    idle: Duration,
}

impl ConnLimit {
    pub fn new(max: usize, idle: Duration) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            open: AtomicUsize::new(0),
            max,
            idle,
        })
    }

    /// Wraps an accepted socket, or `None` (and the socket is closed) when
    /// `max` connections are open.
    pub fn admit(self: &Arc<Self>, tcp: TcpStream) -> Option<Conn> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        if n >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let info = ConnInfo {
            tcp: tcp.connect_info(),
            state: Arc::new(ConnState::new()),
        };
        Some(Conn {
            io: tcp,
            timer: Box::pin(tokio::time::sleep(self.idle)),
            limit: self.clone(),
            info,
        })
    }
}

/// An admitted connection.
pub struct Conn {
    io: TcpStream,
    timer: Pin<Box<Sleep>>,
    limit: Arc<ConnLimit>,
    info: ConnInfo,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.limit.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    /// Whether the connection has been idle too long; otherwise the timer
    /// is set for the next look (and registered with `cx`).
    fn idle_too_long(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let next = match self.info.state.idle_since() {
                Some(since) if since + self.limit.idle <= Instant::now() => return true,
                Some(since) => since + self.limit.idle,
                // A call is running: look again a period from now.
                None => Instant::now() + self.limit.idle,
            };
            self.timer.as_mut().reset(next);
        }
        false
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // The server always waits to read from a connection, so this is
        // where the idle timer is looked at; reading nothing is the end of
        // the stream, and the server closes the connection.
        if this.idle_too_long(cx) {
            tracing::debug!(peer = ?this.info.tcp.remote_addr(), "closing an idle connection");
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    /// Says no, though the socket could: h2 then copies every DATA frame
    /// under 1 KiB into its write buffer instead of chaining frames of 256
    /// bytes and more, which makes it flush each such answer on its own.
    /// A Score's answer (about 300 bytes) took 1.5 `writev` calls a call,
    /// Health's 0.5; now both share writes (BENCHMARKS.md, issue 13).
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// The connection state a request carries, with or without TLS.
pub fn state_of(extensions: &http::Extensions) -> Option<&Arc<ConnState>> {
    extensions
        .get::<ConnInfo>()
        .or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
                .map(|t| t.get_ref())
        })
        .map(|i| &i.state)
}
