//! A TCP fault proxy on loopback, put in front of a node's listen port for one directed pair
//! of provinces (A's link to B goes through proxy(A→B)). It works below TLS: mutual-TLS gRPC
//! goes through untouched, and the faults are the network's own: refused connections, bytes
//! that vanish in one direction, delay per chunk, connections reset.
//!
//! "Upstream" is the direction from the connecting node (A, the client) to the listening node
//! (B); "downstream" the way back (B's answers to A). Faults change at runtime and apply to
//! connections already open as well as to new ones, except `refuse_new`, which only concerns
//! new connections (combine it with [`FaultProxy::reset_connections`] to cut a link).
//!
//! Bounded: one fixed buffer per direction per connection, at most [`CONNECTIONS_MAX`]
//! connections at once, a delay of at most [`DELAY_MAX_MS`] per chunk. Dropping the proxy
//! stops its accept task at once and every connection task at its next step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Bytes read and forwarded at a time, per direction of a connection.
pub const CHUNK_BYTES: usize = 16 * 1024;
/// Connections proxied at once; more are refused.
pub const CONNECTIONS_MAX: usize = 256;
/// How long connecting to the target may take.
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Largest delay per chunk.
pub const DELAY_MAX_MS: u64 = 10_000;

/// One direction of a proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the connecting node to the node listening behind the proxy.
    Upstream,
    /// Back from the listening node to the connecting node.
    Downstream,
}

/// The faults of one proxy. The default passes everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// New connections are accepted and reset at once (a closed port, a firewall's reject).
    pub refuse_new: bool,
    /// Bytes from the connecting node are read and thrown away (blackhole upstream).
    pub swallow_upstream: bool,
    /// Bytes back to the connecting node are read and thrown away (blackhole downstream).
    pub swallow_downstream: bool,
    /// Each chunk waits this long before it is forwarded, in both directions.
    pub delay_ms: u64,
}

impl Faults {
    /// Everything passes.
    pub const PASS: Faults = Faults {
        refuse_new: false,
        swallow_upstream: false,
        swallow_downstream: false,
        delay_ms: 0,
    };

    pub fn is_pass(&self) -> bool {
        *self == Faults::PASS
    }

    fn swallows(&self, direction: Direction) -> bool {
        match direction {
            Direction::Upstream => self.swallow_upstream,
            Direction::Downstream => self.swallow_downstream,
        }
    }
}

#[derive(Clone, Debug)]
struct State {
    target: Option<SocketAddr>,
    faults: Faults,
    /// Bumped by `reset_connections`: connections of an older generation are reset.
    generation: u64,
}

#[derive(Debug, Default)]
struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    reset: AtomicU64,
    bytes_forwarded: AtomicU64,
    bytes_swallowed: AtomicU64,
}

/// What a proxy has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProxyCounts {
    /// Connections proxied to the target.
    pub accepted: u64,
    /// Connections refused (refuse mode, no target yet, target unreachable, too many).
    pub refused: u64,
    /// Connections reset by `reset_connections`.
    pub reset: u64,
    pub bytes_forwarded: u64,
    /// Bytes read and thrown away by a blackhole.
    pub bytes_swallowed: u64,
}

/// A TCP proxy on 127.0.0.1 with faults changeable at runtime.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: watch::Sender<State>,
    stats: Arc<Stats>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1. Until a target is set, connections are refused.
    pub async fn bind(target: Option<SocketAddr>) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, receiver) = watch::channel(State {
            target,
            faults: Faults::PASS,
            generation: 0,
        });
        let stats = Arc::new(Stats::default());
        let accept = tokio::spawn(accept_loop(listener, receiver, stats.clone()));
        Ok(FaultProxy {
            addr,
            state,
            stats,
            accept,
        })
    }

    /// Where the proxy listens (the address to give the connecting node).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where new connections go.
    pub fn set_target(&self, target: SocketAddr) {
        self.state.send_modify(|state| state.target = Some(target));
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.send_modify(|state| state.faults = faults);
    }

    pub fn faults(&self) -> Faults {
        self.state.borrow().faults
    }

    /// Heals: everything passes again (connections stay as they are).
    pub fn pass(&self) {
        self.set_faults(Faults::PASS);
    }

    /// Resets (RST) every connection open now, in both directions.
    pub fn reset_connections(&self) {
        self.state
            .send_modify(|state| state.generation = state.generation.wrapping_add(1));
    }

    pub fn counts(&self) -> ProxyCounts {
        ProxyCounts {
            accepted: self.stats.accepted.load(Ordering::Relaxed),
            refused: self.stats.refused.load(Ordering::Relaxed),
            reset: self.stats.reset.load(Ordering::Relaxed),
            bytes_forwarded: self.stats.bytes_forwarded.load(Ordering::Relaxed),
            bytes_swallowed: self.stats.bytes_swallowed.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task stops now; connection tasks see the state's sender gone and stop.
        self.accept.abort();
    }
}

/// Closes a socket with a reset (RST) instead of an orderly FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn accept_loop(listener: TcpListener, mut state: watch::Receiver<State>, stats: Arc<Stats>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or a transient error: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let now = state.borrow_and_update().clone();
        let target = match now.target {
            Some(target) if !now.faults.refuse_new => target,
            _ => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
                reset(stream);
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            reset(stream);
            continue;
        };
        let state = state.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            connection(stream, target, now.generation, state, stats).await;
            drop(slot);
        });
    }
}

/// Resolves when the connection of `generation` must be reset, or the proxy is gone.
async fn reset_or_gone(mut state: watch::Receiver<State>, generation: u64) {
    loop {
        if state.borrow_and_update().generation != generation {
            return;
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

async fn connection(
    mut client: TcpStream,
    target: SocketAddr,
    generation: u64,
    state: watch::Receiver<State>,
    stats: Arc<Stats>,
) {
    let connect = tokio::time::timeout(Duration::from_millis(CONNECT_TIMEOUT_MS), TcpStream::connect(target));
    let mut server = match connect.await {
        Ok(Ok(server)) => server,
        _ => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    stats.accepted.fetch_add(1, Ordering::Relaxed);
    let was_reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pump(client_read, server_write, Direction::Upstream, state.clone(), &stats);
        let down = pump(server_read, client_write, Direction::Downstream, state.clone(), &stats);
        let gone = reset_or_gone(state, generation);
        tokio::pin!(up, down, gone);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            tokio::select! {
                result = &mut up, if !up_done => {
                    if result.is_err() {
                        break false;
                    }
                    up_done = true;
                }
                result = &mut down, if !down_done => {
                    if result.is_err() {
                        break false;
                    }
                    down_done = true;
                }
                () = &mut gone => break true,
            }
            if up_done && down_done {
                break false;
            }
        }
    };
    if was_reset {
        stats.reset.fetch_add(1, Ordering::Relaxed);
        reset(client);
        reset(server);
    }
}

/// Copies one direction chunk by chunk under the current faults; `Ok` at end of stream (after
/// passing the half-close on), `Err` on an error of either socket.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    direction: Direction,
    state: watch::Receiver<State>,
    stats: &Stats,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; CHUNK_BYTES];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let faults = state.borrow().faults;
        let bytes = u64::try_from(read).unwrap_or(u64::MAX);
        if faults.swallows(direction) {
            stats.bytes_swallowed.fetch_add(bytes, Ordering::Relaxed);
            continue;
        }
        if faults.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.delay_ms.min(DELAY_MAX_MS))).await;
        }
        to.write_all(&buffer[..read]).await?;
        stats.bytes_forwarded.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8], wait: Duration) -> Option<Vec<u8>> {
        stream.write_all(text).await.ok()?;
        let mut buffer = vec![0u8; text.len()];
        match tokio::time::timeout(wait, stream.read_exact(&mut buffer)).await {
            Ok(Ok(_)) => Some(buffer),
            _ => None,
        }
    }

    #[tokio::test]
    async fn passes_refuses_blackholes_delays_and_resets() {
        let echo = echo_server().await;
        let proxy = FaultProxy::bind(None).await.unwrap();
        // Answers that must come get a generous wait; answers that must not, a short one.
        let short = Duration::from_millis(300);
        let long = Duration::from_secs(5);

        // No target yet: refused.
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"x", short).await, None);
        proxy.set_target(echo);

        // Pass.
        let mut stream = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            round_trip(&mut stream, b"hello", long).await.as_deref(),
            Some(&b"hello"[..])
        );

        // Blackhole downstream: the echo server gets the bytes, the answer vanishes.
        proxy.set_faults(Faults {
            swallow_downstream: true,
            ..Faults::PASS
        });
        assert_eq!(round_trip(&mut stream, b"lost", short).await, None);
        // Blackhole upstream on the same open connection.
        proxy.set_faults(Faults {
            swallow_upstream: true,
            ..Faults::PASS
        });
        assert_eq!(round_trip(&mut stream, b"gone", short).await, None);
        assert!(proxy.counts().bytes_swallowed >= 8, "{:?}", proxy.counts());
        proxy.pass();
        assert_eq!(
            round_trip(&mut stream, b"back", long).await.as_deref(),
            Some(&b"back"[..])
        );

        // Delay: a round trip takes at least two chunk delays.
        proxy.set_faults(Faults {
            delay_ms: 150,
            ..Faults::PASS
        });
        let started = std::time::Instant::now();
        assert!(round_trip(&mut stream, b"slow", Duration::from_secs(2)).await.is_some());
        assert!(started.elapsed() >= Duration::from_millis(300));
        proxy.pass();

        // Refuse new: open connections keep working, new ones are reset.
        proxy.set_faults(Faults {
            refuse_new: true,
            ..Faults::PASS
        });
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut refused, b"no", short).await, None);
        assert_eq!(
            round_trip(&mut stream, b"old", long).await.as_deref(),
            Some(&b"old"[..])
        );
        proxy.pass();

        // Reset: the open connection dies.
        proxy.reset_connections();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(round_trip(&mut stream, b"dead", short).await, None);
        assert!(proxy.counts().reset >= 1);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut fresh, b"new", long).await.as_deref(), Some(&b"new"[..]));

        // Dropped: nothing listens, open connections end.
        let addr = proxy.addr();
        drop(proxy);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(round_trip(&mut fresh, b"end", short).await, None);
        assert!(
            TcpStream::connect(addr).await.is_err()
                || round_trip(&mut TcpStream::connect(addr).await.unwrap(), b"z", short)
                    .await
                    .is_none()
        );
    }
}
