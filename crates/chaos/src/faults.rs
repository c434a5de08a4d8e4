//! The faults, injected at random from the run's seed by two lanes running side by side: the
//! process lane (`kill -9` then restart, SIGSTOP then SIGCONT) and the network lane (through
//! the fault proxies: partitions both ways or one way, lost replies, delay, connection resets).
//! Each lane draws its faults from a shuffled deck holding every kind once, so every kind
//! happens early in a run; every fault is healed after a bounded time, and at the run's end
//! at the latest.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use exchange_core::Province;
use exchange_node::cluster::LocalCluster;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::proxy::{FaultProxy, Faults};

/// How long a killed node stays down, milliseconds.
pub const DOWN_MS: (u64, u64) = (500, 4_000);
/// How long a node stays paused (past the protocol's hold deadline at the upper end).
pub const PAUSE_MS: (u64, u64) = (500, 6_000);
/// How long a network fault lasts.
pub const NETWORK_FAULT_MS: (u64, u64) = (1_000, 5_000);
/// Delay per chunk of a slow link.
pub const DELAY_MS: (u64, u64) = (20, 300);
/// Quiet time between two faults of one lane.
pub const GAP_MS: (u64, u64) = (300, 2_000);
/// The lanes start this long after the load.
pub const FIRST_FAULT_AFTER_MS: u64 = 800;

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9` of a node, restarted after a while.
    Kill,
    /// SIGSTOP of a node, SIGCONT after a while.
    Pause,
    /// Two nodes cannot reach each other: new connections refused both ways, open ones reset.
    Partition,
    /// A cannot reach B (refused and reset); B still reaches A.
    OneWayDrop,
    /// A's bytes to B vanish (blackhole) on open and new connections; B still reaches A.
    OneWayBlackhole,
    /// B receives what A sends over A's link, but B's answers on it vanish.
    LostReplies,
    /// Both directions between two nodes are slow (a delay per chunk).
    Delay,
    /// Every connection between two nodes is reset, a few times over the fault's time.
    Reset,
}

impl FaultKind {
    pub const PROCESS: [FaultKind; 2] = [FaultKind::Kill, FaultKind::Pause];
    pub const NETWORK: [FaultKind; 6] = [
        FaultKind::Partition,
        FaultKind::OneWayDrop,
        FaultKind::OneWayBlackhole,
        FaultKind::LostReplies,
        FaultKind::Delay,
        FaultKind::Reset,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::OneWayDrop => "one_way_drop",
            FaultKind::OneWayBlackhole => "one_way_blackhole",
            FaultKind::LostReplies => "lost_replies",
            FaultKind::Delay => "delay",
            FaultKind::Reset => "reset",
        }
    }

    /// Counted as a partition (both ways or one way).
    pub fn is_partition(self) -> bool {
        matches!(
            self,
            FaultKind::Partition | FaultKind::OneWayDrop | FaultKind::OneWayBlackhole
        )
    }
}

/// What the lanes did, shared with the driver.
#[derive(Debug, Default)]
pub struct FaultLog {
    started: Option<Instant>,
    pub injected: BTreeMap<FaultKind, u64>,
    pub timeline: Vec<String>,
    /// Problems of the fault machinery itself (a node that did not come back).
    pub problems: Vec<String>,
}

impl FaultLog {
    pub fn new(started: Instant) -> FaultLog {
        FaultLog {
            started: Some(started),
            ..FaultLog::default()
        }
    }

    pub fn note(&mut self, text: String) {
        let at = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        self.timeline.push(format!("[{at:7.2}s] {text}"));
    }

    fn injected(&mut self, kind: FaultKind, text: String) {
        *self.injected.entry(kind).or_default() += 1;
        self.note(text);
    }
}

pub type SharedLog = Arc<Mutex<FaultLog>>;

fn log(shared: &SharedLog, f: impl FnOnce(&mut FaultLog)) {
    let mut log = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut log);
}

fn between(rng: &mut ChaCha8Rng, range: (u64, u64)) -> Duration {
    Duration::from_millis(rng.random_range(range.0..=range.1))
}

/// Sleeps `wait`, or until `deadline` if that comes first.
async fn sleep_until_or(wait: Duration, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(wait.min(left)).await;
}

fn name(province: Province) -> String {
    format!("{} {}", province.code(), province.name())
}

/// The proxies, by the directed pair (from, to): `from`'s link to `to` goes through it.
pub type Proxies = BTreeMap<(Province, Province), FaultProxy>;

/// The process lane: kills and pauses, one at a time.
pub async fn process_lane(
    cluster: Arc<tokio::sync::Mutex<LocalCluster>>,
    provinces: Vec<Province>,
    seed: u64,
    deadline: Instant,
    shared: SharedLog,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut deck: Vec<FaultKind> = Vec::new();
    sleep_until_or(Duration::from_millis(FIRST_FAULT_AFTER_MS), deadline).await;
    while Instant::now() < deadline {
        if deck.is_empty() {
            deck = FaultKind::PROCESS.to_vec();
            deck.shuffle(&mut rng);
        }
        let Some(kind) = deck.pop() else {
            break;
        };
        let Some(node) = provinces.choose(&mut rng).copied() else {
            break;
        };
        match kind {
            FaultKind::Kill => {
                let hold = between(&mut rng, DOWN_MS);
                let killed = cluster.lock().await.kill9(node);
                match killed {
                    Ok(()) => log(&shared, |l| {
                        l.injected(
                            kind,
                            format!("kill -9 {} (down {:.1}s)", name(node), hold.as_secs_f64()),
                        );
                    }),
                    Err(error) => {
                        log(&shared, |l| l.problems.push(format!("kill -9 {}: {error}", name(node))));
                        continue;
                    }
                }
                sleep_until_or(hold, deadline).await;
                restart(&cluster, node, &shared).await;
            }
            FaultKind::Pause => {
                let hold = between(&mut rng, PAUSE_MS);
                let paused = cluster.lock().await.pause(node, true);
                match paused {
                    Ok(()) => log(&shared, |l| {
                        l.injected(kind, format!("SIGSTOP {} (for {:.1}s)", name(node), hold.as_secs_f64()));
                    }),
                    Err(error) => {
                        log(&shared, |l| l.problems.push(format!("SIGSTOP {}: {error}", name(node))));
                        continue;
                    }
                }
                sleep_until_or(hold, deadline).await;
                let resumed = cluster.lock().await.pause(node, false);
                log(&shared, |l| match resumed {
                    Ok(()) => l.note(format!("SIGCONT {}", name(node))),
                    Err(error) => l.problems.push(format!("SIGCONT {}: {error}", name(node))),
                });
            }
            _ => {}
        }
        sleep_until_or(between(&mut rng, GAP_MS), deadline).await;
    }
}

/// Starts a node again and waits until it answers; a node that does not come back is a
/// problem of the run.
pub async fn restart(cluster: &Arc<tokio::sync::Mutex<LocalCluster>>, node: Province, shared: &SharedLog) {
    let mut cluster = cluster.lock().await;
    let started = Instant::now();
    if let Err(error) = cluster.start(node) {
        log(shared, |l| {
            l.problems.push(format!("restart of {}: {error}", name(node)))
        });
        return;
    }
    match cluster.wait_ready(node).await {
        Ok(()) => log(shared, |l| {
            l.note(format!(
                "{} restarted, answering after {:.1}s",
                name(node),
                started.elapsed().as_secs_f64()
            ));
        }),
        Err(error) => log(shared, |l| {
            l.problems
                .push(format!("{} did not answer after its restart: {error}", name(node)));
        }),
    }
}

/// The network lane: one fault between one pair of nodes at a time.
pub async fn network_lane(
    proxies: Arc<Proxies>,
    provinces: Vec<Province>,
    seed: u64,
    deadline: Instant,
    shared: SharedLog,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut deck: Vec<FaultKind> = Vec::new();
    sleep_until_or(Duration::from_millis(FIRST_FAULT_AFTER_MS), deadline).await;
    while Instant::now() < deadline {
        if deck.is_empty() {
            deck = FaultKind::NETWORK.to_vec();
            deck.shuffle(&mut rng);
            // A partition comes first in every deck (drawn from the end).
            if let Some(at) = deck.iter().rposition(|k| k.is_partition()) {
                let last = deck.len() - 1;
                deck.swap(at, last);
            }
        }
        let Some(kind) = deck.pop() else {
            break;
        };
        let mut pair: Vec<Province> = provinces.choose_multiple(&mut rng, 2).copied().collect();
        pair.shuffle(&mut rng);
        let (Some(a), Some(b)) = (pair.first().copied(), pair.get(1).copied()) else {
            break;
        };
        let (Some(ab), Some(ba)) = (proxies.get(&(a, b)), proxies.get(&(b, a))) else {
            break;
        };
        let hold = between(&mut rng, NETWORK_FAULT_MS);
        let refuse = Faults {
            refuse_new: true,
            ..Faults::PASS
        };
        let text = match kind {
            FaultKind::Partition => {
                ab.set_faults(refuse);
                ba.set_faults(refuse);
                ab.reset_connections();
                ba.reset_connections();
                format!("partition {} | {}", name(a), name(b))
            }
            FaultKind::OneWayDrop => {
                ab.set_faults(refuse);
                ab.reset_connections();
                format!("one-way partition (refuse, reset): {} -/-> {}", name(a), name(b))
            }
            FaultKind::OneWayBlackhole => {
                ab.set_faults(Faults {
                    swallow_upstream: true,
                    ..Faults::PASS
                });
                format!("one-way partition (blackhole): {} -/-> {}", name(a), name(b))
            }
            FaultKind::LostReplies => {
                ab.set_faults(Faults {
                    swallow_downstream: true,
                    ..Faults::PASS
                });
                format!("replies lost on {}'s link to {}", name(a), name(b))
            }
            FaultKind::Delay => {
                let delay_ms = rng.random_range(DELAY_MS.0..=DELAY_MS.1);
                let slow = Faults {
                    delay_ms,
                    ..Faults::PASS
                };
                ab.set_faults(slow);
                ba.set_faults(slow);
                format!("delay {delay_ms} ms per chunk between {} and {}", name(a), name(b))
            }
            FaultKind::Reset | FaultKind::Kill | FaultKind::Pause => {
                ab.reset_connections();
                ba.reset_connections();
                format!("connections reset between {} and {}", name(a), name(b))
            }
        };
        log(&shared, |l| {
            l.injected(kind, format!("{text} (for {:.1}s)", hold.as_secs_f64()));
        });
        if kind == FaultKind::Reset {
            // Reset again a few times while the fault lasts: links that flap.
            let until = Instant::now() + hold;
            while Instant::now() < until.min(deadline) {
                sleep_until_or(between(&mut rng, (200, 800)), until.min(deadline)).await;
                ab.reset_connections();
                ba.reset_connections();
            }
        } else {
            sleep_until_or(hold, deadline).await;
        }
        ab.pass();
        ba.pass();
        log(&shared, |l| l.note(format!("healed {} <-> {}", name(a), name(b))));
        sleep_until_or(between(&mut rng, GAP_MS), deadline).await;
    }
}
