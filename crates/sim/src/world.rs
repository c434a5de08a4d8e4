//! The simulated world: province nodes running the real core over a simulated network, disk
//! and clocks, with hospitals and bureaus as clients, all driven by one seeded random source.
//!
//! Events are ordered by (simulated time, sequence number), so a seed fixes the whole run. Each
//! node applies a handler's writes before its next input, and lets its sends and replies leave
//! only after a flush that covers every write applied so far (group commit). A crash loses the
//! node's volatile state, its unflushed writes and its unsent messages.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use exchange_core::binding::{BindRequest, DocumentKind};
use exchange_core::config::Safeguards;
use exchange_core::overlay::Overlay;
use exchange_core::records::{Receipt, RefundReceipt, RefundRequest, SettleRequest};
use exchange_core::{
    BindingId, BindingKind, ClientReply, ClientRequest, CreditId, Evidence, Input, Limits, Money, NodeCore, Note,
    PeerMessage, PersonId, Policy, ProtocolConfig, Province, RefundId, Region, Relation, Scheme, SettlementId,
    TimerKind,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::checks::Checker;
use crate::clock::NodeClock;
use crate::ledger::SimLedger;
use crate::scenario::{CrashPoint, Scenario, TimedEvent, parse_province};
use crate::trace::TraceHash;

/// Interval of the periodic liveness audit, in simulated ms.
pub const AUDIT_INTERVAL_MS: u64 = 1_000;
/// Longest drain after the workload ends before the run must be quiescent, in simulated ms.
pub const DRAIN_MS_MAX: u64 = 900_000;
/// Events described in a violation report.
pub const LAST_EVENTS_MAX: usize = 40;
/// Longest description of one event in a violation report, in bytes.
pub const EVENT_TEXT_MAX: usize = 400;
/// Most events one run may process (a guard against a run that never ends).
pub const EVENTS_PER_RUN_MAX: u64 = 2_000_000_000;
/// A run publishes its progress every this many events (a power of two).
const PROGRESS_EVERY: u64 = 1 << 15;

/// Fault kinds counted in reports, in report order.
pub const FAULT_KINDS: [&str; 10] = [
    "loss",
    "duplicate",
    "reorder",
    "delay",
    "partition",
    "crash",
    "clock_jump",
    "disk_stall",
    "slow_flush",
    "client_duplicate",
];

/// A broken invariant: the run stops here.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    pub invariant: String,
    pub detail: String,
    pub at_ms: u64,
    /// Index of the event during which it was found (for the detailed re-run).
    pub event_index: u64,
    /// The last events before it (filled by the detailed re-run).
    pub last_events: Vec<String>,
}

/// What one seed's run produced.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SeedReport {
    pub seed: u64,
    pub trace_hash: String,
    pub simulated_ms: u64,
    pub events: u64,
    pub settlements_committed: u64,
    pub settlements_replanned: u64,
    pub settlements_cash_only: u64,
    pub refunds_committed: u64,
    pub holds_resolved: u64,
    /// Peer deliveries handled together as one batch (several messages from one node to
    /// another at one instant, as a node handles one peer call's messages).
    pub peer_batches: u64,
    pub faults_injected: BTreeMap<String, u64>,
    pub longest_in_doubt_hold_ms: u64,
    pub client_errors: BTreeMap<String, u64>,
    pub violation: Option<Violation>,
}

/// How to run one seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Keep descriptions of the last events (slower; used to report a violation).
    pub detail: bool,
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        message: PeerMessage,
        /// For in-process (loopback) messages: lost if the node restarts meanwhile.
        loopback: Option<u32>,
    },
    Client {
        node: usize,
        reply_to: u64,
        request: ClientRequest,
    },
    Timer {
        node: usize,
        incarnation: u32,
        at_mono: u64,
        kind: TimerKind,
        /// Which arming this is (the node's count of timers armed, from 1): a cancel hint
        /// covers the armings before it.
        armed: u64,
    },
    FlushDone {
        node: usize,
        incarnation: u32,
    },
    Crash {
        node: usize,
        down_ms: u64,
    },
    ArmCrash {
        node: usize,
        down_ms: u64,
        point: CrashPoint,
    },
    Restart {
        node: usize,
    },
    PartitionStart {
        a: Vec<usize>,
        b: Vec<usize>,
        one_way: bool,
        until: u64,
    },
    PartitionEnd {
        id: u64,
    },
    ClockJump {
        node: usize,
        jump_ms: i64,
    },
    DiskStall {
        node: usize,
        until: u64,
    },
    DiskStallEnd {
        node: usize,
    },
    WorkloadTick,
    FaultTick,
    FaultWindowEnd,
    HospitalCheck(Retry),
    Unfreeze {
        node: usize,
        person: PersonId,
    },
    Audit,
    WorkEnd,
}

impl Event {
    fn tag(&self) -> &'static str {
        match self {
            Event::Deliver { .. } => "deliver",
            Event::Client { .. } => "client",
            Event::Timer { .. } => "timer",
            Event::FlushDone { .. } => "flush",
            Event::Crash { .. } => "crash",
            Event::ArmCrash { .. } => "arm_crash",
            Event::Restart { .. } => "restart",
            Event::PartitionStart { .. } => "partition_start",
            Event::PartitionEnd { .. } => "partition_end",
            Event::ClockJump { .. } => "clock_jump",
            Event::DiskStall { .. } => "disk_stall",
            Event::DiskStallEnd { .. } => "disk_stall_end",
            Event::WorkloadTick => "workload",
            Event::FaultTick => "fault",
            Event::FaultWindowEnd => "fault_window_end",
            Event::HospitalCheck(_) => "hospital_check",
            Event::Unfreeze { .. } => "unfreeze",
            Event::Audit => "audit",
            Event::WorkEnd => "work_end",
        }
    }

    fn node(&self) -> Option<usize> {
        match self {
            Event::Deliver { to: node, .. }
            | Event::Client { node, .. }
            | Event::Timer { node, .. }
            | Event::FlushDone { node, .. }
            | Event::Crash { node, .. }
            | Event::ArmCrash { node, .. }
            | Event::Restart { node }
            | Event::ClockJump { node, .. }
            | Event::DiskStall { node, .. }
            | Event::DiskStallEnd { node }
            | Event::Unfreeze { node, .. } => Some(*node),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Retry {
    Settle(usize),
    Refund(usize),
}

struct Scheduled {
    at: u64,
    seq: u64,
    /// Boxed: the heap then moves 24 bytes per swap, not a whole message.
    event: Box<Event>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Scheduled) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Scheduled) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Scheduled) -> Ordering {
        // BinaryHeap is a max-heap: the earliest (time, sequence) must compare greatest.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One province node: the core (absent while down), its ledger and its disk and clocks.
pub(crate) struct SimNode {
    pub province: Province,
    pub core: Option<NodeCore>,
    pub incarnation: u32,
    pub ledger: SimLedger,
    pub clock: NodeClock,
    /// Sends and replies waiting for the next flush.
    outputs: Vec<Output>,
    flush_scheduled: bool,
    stalled_until: u64,
    /// The batch being flushed holds a decision / a yes vote (for triggered crashes).
    batch_decision: bool,
    batch_vote: bool,
    armed_crash: Option<(CrashPoint, u64)>,
    /// Timers armed so far (all incarnations).
    timers_armed: u64,
    /// Cancel hints (`Effects::cancels`) by kind: the armings up to this count are pointless.
    /// The simulator fires them anyway and checks that they do nothing.
    cancelled: HashMap<TimerKind, u64>,
}

enum Output {
    Send(Province, PeerMessage),
    Reply(u64, ClientReply),
}

struct Partition {
    id: u64,
    a: Vec<usize>,
    b: Vec<usize>,
    one_way: bool,
}

impl Partition {
    fn blocks(&self, from: usize, to: usize) -> bool {
        let forward = self.a.contains(&from) && self.b.contains(&to);
        let backward = self.b.contains(&from) && self.a.contains(&to);
        forward || (!self.one_way && backward)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GrantState {
    Unbound,
    Binding,
    Bound(BindingId),
    Unbinding(BindingId),
}

struct Grant {
    node: usize,
    grantor: PersonId,
    state: GrantState,
    limits: Limits,
}

struct Family {
    node: usize,
    patient: PersonId,
    grants: Vec<Grant>,
}

struct HospitalSettlement {
    node: usize,
    request: SettleRequest,
    attempts: u32,
    receipt: Option<Receipt>,
    done: bool,
}

struct HospitalRefund {
    node: usize,
    request: RefundRequest,
    attempts: u32,
    receipt: Option<RefundReceipt>,
    done: bool,
}

#[derive(Clone, Copy, Debug)]
enum Waiting {
    Open,
    Settle(usize),
    IdReuse(usize),
    Refund(usize),
    Bind { family: usize, grant: usize },
    Unbind { family: usize, grant: usize },
    Account,
    Credit,
}

/// Workload operations, drawn with the scenario's rates as weights.
#[derive(Clone, Copy, Debug)]
enum Op {
    Settle,
    Refund,
    Bind,
    Unbind,
    Freeze,
    Credit,
    RevocationRace,
    FreezeRace,
    IdReuse,
}

#[derive(Clone, Copy, Debug)]
enum FaultOp {
    Crash,
    Partition,
    ClockJump,
    DiskStall,
}

/// One run of one seed.
pub(crate) struct World<'a> {
    scenario: &'a Scenario,
    options: RunOptions,
    rng: ChaCha8Rng,
    pub time: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    pub nodes: Vec<SimNode>,
    /// Node index by province prefix.
    index_of: [Option<usize>; 100],
    policy: Policy,
    config: ProtocolConfig,
    partitions: Vec<Partition>,
    partition_seq: u64,
    pub checker: Checker,
    hash: TraceHash,
    events: u64,
    pub report: SeedReport,
    violation: Option<Violation>,
    ring: std::collections::VecDeque<String>,
    stop_at_event: Option<u64>,
    progress: Option<&'a crate::Progress>,
    published_events: u64,
    // Workload.
    persons: Vec<Vec<(PersonId, bool)>>,
    families: Vec<Family>,
    settlements: Vec<HospitalSettlement>,
    settled: Vec<usize>,
    refunds: Vec<HospitalRefund>,
    waiting: BTreeMap<u64, Waiting>,
    next_reply_to: u64,
    next_credit: u64,
    ops: Vec<(Op, f64)>,
    ops_total: f64,
    fault_ops: Vec<(FaultOp, f64)>,
    fault_total: f64,
    work_start: u64,
    work_end: u64,
    window_start: u64,
    window_end: u64,
    working: bool,
    work_clock_us: u64,
    fault_clock_us: u64,
    /// When the last fault healed (liveness is measured from here).
    pub last_heal: u64,
}

impl<'a> World<'a> {
    pub fn new(scenario: &'a Scenario, seed: u64, options: RunOptions, safeguards: Safeguards) -> World<'a> {
        let provinces = scenario.province_list().unwrap_or_default();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut config = scenario.protocol.clone();
        config.safeguards = safeguards;
        let mut index_of = [None; 100];
        let mut nodes = Vec::with_capacity(provinces.len());
        for (index, province) in provinces.iter().enumerate() {
            if let Some(slot) = index_of.get_mut(usize::from(province.prefix())) {
                *slot = Some(index);
            }
            let skew = signed_up_to(&mut rng, scenario.clocks.skew_ms_max);
            let drift = signed_up_to(&mut rng, i64::from(scenario.clocks.drift_ppm_max));
            let clock = NodeClock {
                mono_base_ms: below(&mut rng, 10_000_000),
                drift_ppm: drift,
                wall_start_ms: scenario.start_wall_ms,
                wall_offset_ms: skew,
            };
            nodes.push(SimNode {
                province: *province,
                core: Some(NodeCore::new(*province, scenario.policy.clone(), config.clone(), 1)),
                incarnation: 1,
                ledger: SimLedger::new(),
                clock,
                outputs: Vec::new(),
                flush_scheduled: false,
                stalled_until: 0,
                batch_decision: false,
                batch_vote: false,
                armed_crash: None,
                timers_armed: 0,
                cancelled: HashMap::new(),
            });
        }
        let w = &scenario.workload;
        let ops = vec![
            (Op::Settle, w.settlements_per_s),
            (Op::Refund, w.refunds_per_s),
            (Op::Bind, w.binds_per_s),
            (Op::Unbind, w.unbinds_per_s),
            (Op::Freeze, w.freezes_per_s),
            (Op::Credit, w.credits_per_s),
            (Op::RevocationRace, w.revocation_races_per_s),
            (Op::FreezeRace, w.freeze_races_per_s),
            (Op::IdReuse, w.id_reuses_per_s),
        ];
        let ops_total = ops.iter().map(|(_, r)| r).sum();
        let f = &scenario.faults;
        let fault_ops = vec![
            (FaultOp::Crash, f.crashes_per_s),
            (FaultOp::Partition, f.partitions_per_s),
            (FaultOp::ClockJump, f.clock_jumps_per_s),
            (FaultOp::DiskStall, f.disk_stalls_per_s),
        ];
        let fault_total = fault_ops.iter().map(|(_, r)| r).sum();
        let work_start = scenario.setup_ms;
        let work_end = work_start.saturating_add(scenario.duration_ms);
        let window_start = work_start.saturating_add(f.start_ms).min(work_end);
        let window_end = work_start
            .saturating_add(scenario.fault_window_end_ms())
            .max(window_start);
        let node_count = nodes.len();
        let report = SeedReport {
            seed,
            faults_injected: FAULT_KINDS.iter().map(|k| ((*k).to_string(), 0)).collect(),
            ..SeedReport::default()
        };
        World {
            scenario,
            options,
            rng,
            time: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            index_of,
            policy: scenario.policy.clone(),
            config,
            partitions: Vec::new(),
            partition_seq: 0,
            checker: Checker::new(node_count),
            hash: TraceHash::default(),
            events: 0,
            report,
            violation: None,
            ring: std::collections::VecDeque::new(),
            stop_at_event: None,
            progress: None,
            published_events: 0,
            persons: vec![Vec::new(); node_count],
            families: Vec::new(),
            settlements: Vec::new(),
            settled: Vec::new(),
            refunds: Vec::new(),
            waiting: BTreeMap::new(),
            next_reply_to: 1,
            next_credit: 1,
            ops,
            ops_total,
            fault_ops,
            fault_total,
            work_start,
            work_end,
            window_start,
            window_end,
            working: false,
            work_clock_us: 0,
            fault_clock_us: 0,
            last_heal: 0,
        }
    }

    /// Publishes the run's simulated time and events to `progress` as it goes.
    pub fn with_progress(mut self, progress: &'a crate::Progress) -> World<'a> {
        self.progress = Some(progress);
        self
    }

    fn publish_progress(&mut self) {
        if let Some(progress) = self.progress {
            let new = self.events.saturating_sub(self.published_events);
            progress.add(new, self.time);
            self.published_events = self.events;
        }
    }

    /// Runs to the end (or the first violation) and returns the report.
    pub fn run(mut self, stop_at_event: Option<u64>) -> SeedReport {
        self.stop_at_event = stop_at_event;
        self.setup();
        while self.violation.is_none() {
            let Some(next) = self.queue.pop() else {
                break;
            };
            if next.at > self.work_end.saturating_add(DRAIN_MS_MAX) {
                self.violate(
                    "quiescence",
                    format!(
                        "still busy {DRAIN_MS_MAX} ms after the workload ended (next event: {})",
                        next.event.tag()
                    ),
                );
                break;
            }
            self.time = next.at.max(self.time);
            self.events = self.events.saturating_add(1);
            if self.events > EVENTS_PER_RUN_MAX {
                self.violate("quiescence", "event budget exhausted".into());
                break;
            }
            self.hash.u64(self.time);
            self.hash.text(next.event.tag());
            self.hash.u64(next.event.node().map_or(u64::MAX, |n| n as u64));
            if self.options.detail {
                self.describe(&next.event);
            }
            self.dispatch(*next.event);
            if self.events % PROGRESS_EVERY == 0 {
                self.publish_progress();
            }
            if self.stop_at_event.is_some_and(|stop| self.events >= stop) {
                break;
            }
        }
        self.publish_progress();
        if self.violation.is_none() {
            self.final_checks();
        }
        // Every id and amount the run left behind, node by node.
        for node in &self.nodes {
            self.hash.u64(node.ledger.digest());
        }
        self.report.trace_hash = self.hash.hex();
        self.report.simulated_ms = self.time;
        self.report.events = self.events;
        self.report.longest_in_doubt_hold_ms = self.checker.longest_in_doubt_ms;
        self.report.holds_resolved = self.checker.holds_resolved;
        if let Some(mut violation) = self.violation.take() {
            violation.last_events = self.ring.iter().cloned().collect();
            self.report.violation = Some(violation);
        }
        self.report
    }

    fn describe(&mut self, event: &Event) {
        let node = event
            .node()
            .and_then(|n| self.nodes.get(n))
            .map(|n| n.province.to_string())
            .unwrap_or_else(|| "------".into());
        let body = match event {
            Event::Deliver { from, message, .. } => {
                let from = self
                    .nodes
                    .get(*from)
                    .map(|n| n.province.to_string())
                    .unwrap_or_default();
                format!("from {from}: {message:?}")
            }
            Event::Client { reply_to, request, .. } => format!("client #{reply_to}: {request:?}"),
            Event::Timer { kind, at_mono, .. } => format!("timer at mono {at_mono}: {kind:?}"),
            other => format!("{other:?}"),
        };
        let mut text = format!("{:>9} ms  {node}  {:<15} {body}", self.time, event.tag());
        if text.len() > EVENT_TEXT_MAX {
            let mut cut = EVENT_TEXT_MAX;
            while !text.is_char_boundary(cut) {
                cut = cut.saturating_sub(1);
            }
            text.truncate(cut);
            text.push('…');
        }
        if self.ring.len() >= LAST_EVENTS_MAX {
            self.ring.pop_front();
        }
        self.ring.push_back(text);
    }

    pub fn violate(&mut self, invariant: &str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                invariant: invariant.to_string(),
                detail,
                at_ms: self.time,
                event_index: self.events,
                last_events: Vec::new(),
            });
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq = self.seq.saturating_add(1);
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event: Box::new(event),
        });
    }

    fn fault(&mut self, kind: &str) {
        if let Some(count) = self.report.faults_injected.get_mut(kind) {
            *count = count.saturating_add(1);
        }
    }

    fn in_fault_window(&self) -> bool {
        self.time >= self.window_start && self.time < self.window_end
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && unit(&mut self.rng) < probability
    }

    fn node_of(&self, province: Province) -> Option<usize> {
        self.index_of.get(usize::from(province.prefix())).copied().flatten()
    }

    fn reply_to(&mut self, waiting: Waiting) -> u64 {
        let id = self.next_reply_to;
        self.next_reply_to = self.next_reply_to.saturating_add(1);
        self.waiting.insert(id, waiting);
        id
    }

    // ----- setup -----

    fn setup(&mut self) {
        let scenario = self.scenario;
        let p = &scenario.population;
        let open_until = scenario.setup_ms / 3;
        for node in 0..self.nodes.len() {
            let province = self.nodes[node].province;
            for serial in 0..p.accounts_per_province {
                // Serials spread birth dates over the century; every person is distinct.
                let person = PersonId::synthetic(province.code(), u64::from(serial).saturating_mul(7_919));
                let employee = below(&mut self.rng, 100) < u64::from(p.employee_percent);
                let balance = if employee {
                    let yuan = between(&mut self.rng, p.balance_yuan_min, p.balance_yuan_max);
                    money_fen(yuan.saturating_mul(100).saturating_add(below(&mut self.rng, 100)))
                } else {
                    Money::ZERO
                };
                self.persons[node].push((person, employee));
                let reply_to = self.reply_to(Waiting::Open);
                let at = below(&mut self.rng, open_until.max(1));
                self.schedule(
                    at,
                    Event::Client {
                        node,
                        reply_to,
                        request: ClientRequest::OpenAccount {
                            person,
                            name: format!("Person {serial}"),
                            scheme: if employee { Scheme::Employee } else { Scheme::Resident },
                            balance,
                        },
                    },
                );
            }
        }
        self.make_families();
        for family in 0..self.families.len() {
            for grant in 0..self.families[family].grants.len() {
                let at = between(&mut self.rng, open_until, open_until.saturating_mul(2));
                self.send_bind(family, grant, at);
            }
        }
        self.schedule(self.work_start, Event::WorkloadTick);
        if self.fault_total > 0.0 {
            self.schedule(self.window_start, Event::FaultTick);
        }
        self.schedule(self.window_end, Event::FaultWindowEnd);
        self.schedule(self.work_end, Event::WorkEnd);
        self.schedule(self.work_start, Event::Audit);
        for event in &scenario.events {
            let at = self.work_start.saturating_add(event.at_ms());
            match event {
                TimedEvent::Crash {
                    node, down_ms, after, ..
                } => {
                    if let Some(node) = self.node_named(node) {
                        let event = match after {
                            CrashPoint::Now => Event::Crash {
                                node,
                                down_ms: *down_ms,
                            },
                            point => Event::ArmCrash {
                                node,
                                down_ms: *down_ms,
                                point: *point,
                            },
                        };
                        self.schedule(at, event);
                    }
                }
                TimedEvent::Partition {
                    until_ms,
                    a,
                    b,
                    one_way,
                    ..
                } => {
                    let a = a.iter().filter_map(|code| self.node_named(code)).collect();
                    let b = b.iter().filter_map(|code| self.node_named(code)).collect();
                    let until = self.work_start.saturating_add(*until_ms);
                    self.schedule(
                        at,
                        Event::PartitionStart {
                            a,
                            b,
                            one_way: *one_way,
                            until,
                        },
                    );
                }
                TimedEvent::ClockJump { node, jump_ms, .. } => {
                    if let Some(node) = self.node_named(node) {
                        self.schedule(
                            at,
                            Event::ClockJump {
                                node,
                                jump_ms: *jump_ms,
                            },
                        );
                    }
                }
                TimedEvent::DiskStall { until_ms, node, .. } => {
                    if let Some(node) = self.node_named(node) {
                        let until = self.work_start.saturating_add(*until_ms);
                        self.schedule(at, Event::DiskStall { node, until });
                    }
                }
            }
        }
    }

    fn node_named(&self, code: &str) -> Option<usize> {
        parse_province(code).ok().and_then(|p| self.node_of(p))
    }

    fn make_families(&mut self) {
        let f = &self.scenario.families;
        let node_count = self.nodes.len() as u64;
        for _ in 0..f.count {
            let node = below(&mut self.rng, node_count) as usize;
            let Some(patient) = pick(&mut self.rng, &self.persons[node]).map(|(p, _)| *p) else {
                continue;
            };
            let grantors = between(&mut self.rng, u64::from(f.grantors_min), u64::from(f.grantors_max));
            let mut grants: Vec<Grant> = Vec::new();
            for _ in 0..grantors {
                let local = below(&mut self.rng, 100) < u64::from(f.local_percent);
                let grantor_node = if local {
                    node
                } else {
                    // Any other province.
                    let other = below(&mut self.rng, node_count.saturating_sub(1).max(1)) as usize;
                    if other >= node {
                        other.saturating_add(1) % self.nodes.len()
                    } else {
                        other
                    }
                };
                let employees: Vec<PersonId> = self.persons[grantor_node]
                    .iter()
                    .filter(|(p, employee)| *employee && *p != patient)
                    .map(|(p, _)| *p)
                    .collect();
                let Some(grantor) = pick(&mut self.rng, &employees).copied() else {
                    continue;
                };
                if grants.iter().any(|g| g.grantor == grantor) {
                    continue;
                }
                let limited = below(&mut self.rng, 100) < u64::from(f.limited_percent);
                let limits = if limited {
                    Limits {
                        per_settlement: Some(money_fen(f.per_settlement_limit_yuan.saturating_mul(100))),
                        monthly: Some(money_fen(f.monthly_limit_yuan.saturating_mul(100))),
                    }
                } else {
                    Limits::default()
                };
                grants.push(Grant {
                    node: grantor_node,
                    grantor,
                    state: GrantState::Unbound,
                    limits,
                });
            }
            if !grants.is_empty() {
                self.families.push(Family { node, patient, grants });
            }
        }
    }

    fn send_bind(&mut self, family: usize, grant: usize, at: u64) {
        let Some(f) = self.families.get(family) else {
            return;
        };
        let Some(g) = f.grants.get(grant) else {
            return;
        };
        let relation = Relation::ALL[(family.wrapping_add(grant)) % Relation::ALL.len()];
        let request = BindRequest {
            grantor: g.grantor,
            grantee: f.patient,
            grantee_province: self.nodes[f.node].province,
            relation,
            kind: BindingKind::MutualAid,
            limits: g.limits,
            evidence: Evidence {
                document: DocumentKind::HouseholdRegister,
                reference: format!("HR-{family}-{grant}"),
                face_verified: true,
                commitment_signed: true,
            },
        };
        let node = g.node;
        if let Some(g) = self.families.get_mut(family).and_then(|f| f.grants.get_mut(grant)) {
            g.state = GrantState::Binding;
        }
        let reply_to = self.reply_to(Waiting::Bind { family, grant });
        self.schedule(
            at,
            Event::Client {
                node,
                reply_to,
                request: ClientRequest::Bind(request),
            },
        );
    }

    // ----- event dispatch -----

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver {
                to,
                from,
                message,
                loopback,
            } => {
                let Some(node) = self.nodes.get(to) else {
                    return;
                };
                if node.core.is_none() || loopback.is_some_and(|inc| inc != node.incarnation) {
                    return;
                }
                if self.partitions.iter().any(|p| p.blocks(from, to)) {
                    return;
                }
                self.hash.text(message.kind());
                let sender = self.nodes[from].province;
                let first = Input::Peer { from: sender, message };
                // As a node handles one peer call's messages: what else `from` delivers to
                // `to` at this same instant is handled with it, as one batch.
                let more = if loopback.is_none() {
                    self.take_same_instant_deliveries(to, from)
                } else {
                    Vec::new()
                };
                if more.is_empty() {
                    self.handle(to, first);
                } else {
                    let inputs = std::iter::once(first)
                        .chain(more.into_iter().map(|message| Input::Peer { from: sender, message }))
                        .collect();
                    self.handle_batch(to, inputs);
                }
            }
            Event::Client {
                node,
                reply_to,
                request,
            } => {
                if self.nodes.get(node).is_some_and(|n| n.core.is_some()) {
                    self.handle(node, Input::Client { reply_to, request });
                }
            }
            Event::Timer {
                node,
                incarnation,
                at_mono,
                kind,
                armed,
            } => {
                let Some(n) = self.nodes.get(node) else {
                    return;
                };
                if n.core.is_none() || n.incarnation != incarnation {
                    return;
                }
                if n.clock.mono(self.time) < at_mono {
                    let at = n.clock.time_of_mono(at_mono, self.time);
                    self.schedule(
                        at,
                        Event::Timer {
                            node,
                            incarnation,
                            at_mono,
                            kind,
                            armed,
                        },
                    );
                    return;
                }
                if n.cancelled.get(&kind).is_some_and(|upto| armed <= *upto) {
                    // Kinds are armed once or a few times: checked once, the hint is spent.
                    if let Some(n) = self.nodes.get_mut(node) {
                        n.cancelled.remove(&kind);
                    }
                    self.handle_cancelled_timer(node, kind);
                } else {
                    self.handle(node, Input::Timer(kind));
                }
            }
            Event::FlushDone { node, incarnation } => self.flush_done(node, incarnation),
            Event::Crash { node, down_ms } => self.crash(node, down_ms),
            Event::ArmCrash { node, down_ms, point } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.armed_crash = Some((point, down_ms));
                }
            }
            Event::Restart { node } => self.restart(node),
            Event::PartitionStart { a, b, one_way, until } => {
                self.partition_seq = self.partition_seq.saturating_add(1);
                let id = self.partition_seq;
                self.partitions.push(Partition { id, a, b, one_way });
                self.fault("partition");
                self.schedule(until, Event::PartitionEnd { id });
            }
            Event::PartitionEnd { id } => {
                let before = self.partitions.len();
                self.partitions.retain(|p| p.id != id);
                if self.partitions.len() != before {
                    self.last_heal = self.time;
                }
            }
            Event::ClockJump { node, jump_ms } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.clock.wall_offset_ms = n.clock.wall_offset_ms.saturating_add(jump_ms);
                    self.fault("clock_jump");
                }
            }
            Event::DiskStall { node, until } => {
                if let Some(n) = self.nodes.get_mut(node) {
                    n.stalled_until = n.stalled_until.max(until);
                    self.fault("disk_stall");
                    self.schedule(until, Event::DiskStallEnd { node });
                }
            }
            Event::DiskStallEnd { node } => {
                if self.nodes.get(node).is_some_and(|n| n.stalled_until <= self.time) {
                    self.last_heal = self.time;
                }
            }
            Event::WorkloadTick => self.workload_tick(),
            Event::FaultTick => self.fault_tick(),
            Event::FaultWindowEnd => self.last_heal = self.last_heal.max(self.time),
            Event::HospitalCheck(retry) => self.hospital_check(retry),
            Event::Unfreeze { node, person } => {
                let reply_to = self.reply_to(Waiting::Account);
                let request = ClientRequest::Unfreeze { person };
                self.schedule(
                    self.time,
                    Event::Client {
                        node,
                        reply_to,
                        request,
                    },
                );
            }
            Event::Audit => {
                if self.faults_active() {
                    // Liveness is promised only once the faults have healed.
                } else {
                    let bound = self.scenario.liveness_bound_ms;
                    if let Some(detail) = self.checker.overdue_hold(self.time, self.last_heal, bound) {
                        self.violate("liveness", detail);
                    }
                }
                if self.working || !self.queue.is_empty() {
                    self.schedule(self.time.saturating_add(AUDIT_INTERVAL_MS), Event::Audit);
                }
            }
            Event::WorkEnd => self.work_end(),
        }
    }

    fn faults_active(&self) -> bool {
        self.in_fault_window()
            || !self.partitions.is_empty()
            || self
                .nodes
                .iter()
                .any(|n| n.core.is_none() || n.stalled_until > self.time)
    }

    /// The workload stops and every fault heals; the run then drains to quiescence.
    fn work_end(&mut self) {
        self.working = false;
        self.partitions.clear();
        for node in 0..self.nodes.len() {
            self.nodes[node].armed_crash = None;
            self.nodes[node].stalled_until = self.nodes[node].stalled_until.min(self.time);
            if self.nodes[node].core.is_none() {
                self.restart(node);
            } else if self.nodes[node].flush_scheduled {
                // A flush waiting on a stall completes now.
                let incarnation = self.nodes[node].incarnation;
                self.schedule(self.time, Event::FlushDone { node, incarnation });
            }
        }
        self.last_heal = self.time;
    }

    // ----- nodes -----

    fn handle(&mut self, node: usize, input: Input) {
        if let Some(effects) = self.run_core(node, input) {
            self.process(node, effects);
        }
    }

    /// Takes from the queue the messages `from` delivers to `to` at this instant that come
    /// next in the queue's order (the caller has checked that `to` is up and not cut off from
    /// `from`, which holds for the whole instant). It stops at the first other event, so no
    /// crash, partition or timer is ever passed over. Each one taken is an event of the run,
    /// counted, hashed and described as the main loop does.
    fn take_same_instant_deliveries(&mut self, to: usize, from: usize) -> Vec<PeerMessage> {
        let mut taken = Vec::new();
        while self.events < EVENTS_PER_RUN_MAX
            && self.queue.peek().is_some_and(|next| {
                next.at <= self.time
                    && matches!(
                        &*next.event,
                        Event::Deliver { to: there, from: sender, loopback: None, .. }
                            if *there == to && *sender == from
                    )
            })
        {
            let Some(next) = self.queue.pop() else {
                break;
            };
            self.events = self.events.saturating_add(1);
            self.hash.u64(self.time);
            self.hash.text(next.event.tag());
            self.hash.u64(to as u64);
            if self.options.detail {
                self.describe(&next.event);
            }
            if let Event::Deliver { message, .. } = *next.event {
                self.hash.text(message.kind());
                taken.push(message);
            }
        }
        taken
    }

    /// Handles `inputs` as a node handles a batch (its `CoreMsg::Inputs`): each over the
    /// writes of the ones before it (an overlay), their effects carried out as one, the
    /// writes as one set.
    fn handle_batch(&mut self, node: usize, inputs: Vec<Input>) {
        let now = self.nodes[node].clock.now(self.time);
        let n = &mut self.nodes[node];
        let Some(core) = n.core.as_mut() else {
            return;
        };
        let mut combined = exchange_core::Effects::default();
        let mut failed = None;
        {
            let mut overlay = Overlay::new(&n.ledger);
            for input in inputs {
                match core.handle(&overlay, input, now) {
                    Ok(effects) => {
                        overlay.record(&effects.writes);
                        combined.then(effects);
                    }
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
        }
        let province = n.province;
        self.report.peer_batches = self.report.peer_batches.saturating_add(1);
        self.process(node, combined);
        if let Some(error) = failed {
            self.violate("handler_error", format!("node {province}: {error}"));
        }
    }

    /// Runs `input` through the node's core: its effects, or `None` when the node is down or
    /// the handler failed (reported as `handler_error`).
    fn run_core(&mut self, node: usize, input: Input) -> Option<exchange_core::Effects> {
        let now = self.nodes[node].clock.now(self.time);
        let n = &mut self.nodes[node];
        let core = n.core.as_mut()?;
        match core.handle(&n.ledger, input, now) {
            Ok(effects) => Some(effects),
            Err(error) => {
                let province = n.province;
                self.violate("handler_error", format!("node {province}: {error}"));
                None
            }
        }
    }

    /// A timer the core said it had made pointless (`Effects::cancels`) fires all the same:
    /// the node drops such timers, so firing one must change nothing and send nothing.
    fn handle_cancelled_timer(&mut self, node: usize, kind: TimerKind) {
        let Some(effects) = self.run_core(node, Input::Timer(kind.clone())) else {
            return;
        };
        if !(effects.writes.is_empty()
            && effects.sends.is_empty()
            && effects.replies.is_empty()
            && effects.timers.is_empty())
        {
            let province = self.nodes[node].province;
            self.violate(
                "cancelled_timer_acted",
                format!("node {province}: timer {kind:?}, cancelled, still acted: {effects:?}"),
            );
        }
        self.process(node, effects);
    }

    fn process(&mut self, node: usize, effects: exchange_core::Effects) {
        // As the node does: the prepares of a handler that wrote nothing leave at once,
        // without waiting for other handlers' unflushed writes.
        let at_once = effects.only_prepares_without_writes();
        let exchange_core::Effects {
            writes,
            sends,
            replies,
            timers,
            cancels,
            notes,
        } = effects;
        self.hash.u64(writes.len() as u64);
        self.hash.u64(sends.len() as u64);
        if !writes.is_empty() {
            if let Err(error) = self.checker.apply(&mut self.nodes[node], node, &writes, self.time) {
                let (invariant, detail) = error;
                self.violate(invariant, detail);
                return;
            }
            if writes.iter().any(|w| {
                matches!(
                    w,
                    exchange_core::Write::Fence {
                        new: exchange_core::records::Fence::Prepared(_),
                        ..
                    }
                )
            }) {
                self.nodes[node].batch_vote = true;
            }
        }
        let mut decided = false;
        for note in notes {
            match note {
                Note::SettlementDecided {
                    replanned, cash_only, ..
                } => {
                    decided = true;
                    self.report.settlements_committed = self.report.settlements_committed.saturating_add(1);
                    if replanned {
                        self.report.settlements_replanned = self.report.settlements_replanned.saturating_add(1);
                    }
                    if cash_only {
                        self.report.settlements_cash_only = self.report.settlements_cash_only.saturating_add(1);
                    }
                }
                Note::HoldResolved { .. } => {}
                Note::ProtocolViolation { from, detail } => {
                    let province = self.nodes[node].province;
                    self.violate(
                        "protocol_note",
                        format!("node {province} reported a protocol violation by {from}: {detail}"),
                    );
                }
            }
        }
        if decided {
            self.nodes[node].batch_decision = true;
        }
        let n = &mut self.nodes[node];
        for kind in cancels {
            n.cancelled.insert(kind, n.timers_armed);
        }
        for timer in timers {
            let n = &mut self.nodes[node];
            n.timers_armed = n.timers_armed.saturating_add(1);
            let armed = n.timers_armed;
            let at = n.clock.time_of_mono(timer.at_mono_ms, self.time);
            let incarnation = n.incarnation;
            self.schedule(
                at,
                Event::Timer {
                    node,
                    incarnation,
                    at_mono: timer.at_mono_ms,
                    kind: timer.kind,
                    armed,
                },
            );
        }
        if at_once {
            for (to, message) in sends {
                self.send(node, to, message);
            }
            if self.nodes[node].ledger.unflushed() == 0 {
                self.release(node);
            }
            return;
        }
        let n = &mut self.nodes[node];
        n.outputs.extend(sends.into_iter().map(|(to, m)| Output::Send(to, m)));
        n.outputs
            .extend(replies.into_iter().map(|(to, r)| Output::Reply(to, r)));
        if decided && matches!(n.armed_crash, Some((CrashPoint::DecisionUnflushed, _))) {
            let down_ms = n.armed_crash.map_or(0, |(_, d)| d);
            self.crash(node, down_ms);
            return;
        }
        if n.ledger.unflushed() == 0 {
            // Nothing awaits the disk: what this handler says may leave at once.
            self.release(node);
        } else {
            self.ensure_flush(node);
        }
    }

    fn ensure_flush(&mut self, node: usize) {
        if self.nodes[node].flush_scheduled {
            return;
        }
        let disk = &self.scenario.disk;
        let mut latency = between(&mut self.rng, disk.flush_ms_min, disk.flush_ms_max);
        if self.in_fault_window() && self.chance(disk.slow) {
            latency = latency.saturating_add(below(&mut self.rng, disk.slow_ms_max.saturating_add(1)));
            self.fault("slow_flush");
        }
        let n = &mut self.nodes[node];
        n.flush_scheduled = true;
        let incarnation = n.incarnation;
        self.schedule(
            self.time.saturating_add(latency),
            Event::FlushDone { node, incarnation },
        );
    }

    fn flush_done(&mut self, node: usize, incarnation: u32) {
        let time = self.time;
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if n.core.is_none() || n.incarnation != incarnation || !n.flush_scheduled {
            return;
        }
        if n.stalled_until > time {
            let at = n.stalled_until;
            self.schedule(at, Event::FlushDone { node, incarnation });
            return;
        }
        n.ledger.flush();
        n.flush_scheduled = false;
        let decision = std::mem::take(&mut n.batch_decision);
        let vote = std::mem::take(&mut n.batch_vote);
        match n.armed_crash {
            Some((CrashPoint::Decision, down_ms)) if decision => {
                // Durable decision, commits not yet sent.
                self.crash(node, down_ms);
            }
            Some((CrashPoint::Vote, down_ms)) if vote => {
                self.release(node);
                self.crash(node, down_ms);
            }
            _ => self.release(node),
        }
    }

    /// Lets the node's queued sends and replies leave.
    fn release(&mut self, node: usize) {
        let outputs = std::mem::take(&mut self.nodes[node].outputs);
        for output in outputs {
            match output {
                Output::Send(to, message) => self.send(node, to, message),
                Output::Reply(reply_to, reply) => self.on_reply(node, reply_to, reply),
            }
        }
    }

    fn send(&mut self, from: usize, to: Province, message: PeerMessage) {
        let Some(to) = self.node_of(to) else {
            return;
        };
        if to == from {
            let incarnation = self.nodes[from].incarnation;
            self.schedule(
                self.time,
                Event::Deliver {
                    to,
                    from,
                    message,
                    loopback: Some(incarnation),
                },
            );
            return;
        }
        let faulty = self.in_fault_window();
        let network = &self.scenario.network;
        if faulty && self.chance(network.loss) {
            self.fault("loss");
            return;
        }
        let copies = if faulty && self.chance(network.duplicate) {
            self.fault("duplicate");
            2
        } else {
            1
        };
        let mut delays = [0u64; 2];
        for delay in delays.iter_mut().take(copies) {
            let network = &self.scenario.network;
            let (reorder, reorder_max) = (network.reorder, network.reorder_ms_max);
            let (late, late_max) = (network.delay, network.delay_ms_max);
            *delay = between(&mut self.rng, network.latency_ms_min, network.latency_ms_max);
            if faulty && self.chance(reorder) {
                self.fault("reorder");
                *delay = delay.saturating_add(below(&mut self.rng, reorder_max.saturating_add(1)));
            }
            if faulty && self.chance(late) {
                self.fault("delay");
                *delay = delay.saturating_add(below(&mut self.rng, late_max.saturating_add(1)));
            }
        }
        if copies == 2 {
            self.schedule(
                self.time.saturating_add(delays[1]),
                Event::Deliver {
                    to,
                    from,
                    message: message.clone(),
                    loopback: None,
                },
            );
        }
        self.schedule(
            self.time.saturating_add(delays[0]),
            Event::Deliver {
                to,
                from,
                message,
                loopback: None,
            },
        );
    }

    fn crash(&mut self, node: usize, down_ms: u64) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if n.core.is_none() {
            return;
        }
        n.core = None;
        n.ledger.crash();
        n.outputs.clear();
        n.flush_scheduled = false;
        n.batch_decision = false;
        n.batch_vote = false;
        n.armed_crash = None;
        self.checker.after_crash(&self.nodes[node], node, self.time);
        self.fault("crash");
        self.schedule(self.time.saturating_add(down_ms.max(1)), Event::Restart { node });
    }

    fn restart(&mut self, node: usize) {
        let Some(n) = self.nodes.get_mut(node) else {
            return;
        };
        if n.core.is_some() {
            return;
        }
        n.incarnation = n.incarnation.saturating_add(1);
        let mut core = NodeCore::new(n.province, self.policy.clone(), self.config.clone(), n.incarnation);
        let tables = n.ledger.tables();
        let live_holds: Vec<_> = tables.live_holds.iter().cloned().collect();
        let outbox: Vec<_> = tables.outbox.iter().cloned().collect();
        let now = n.clock.now(self.time);
        let result = core.recover(&n.ledger, &live_holds, &outbox, now);
        n.core = Some(core);
        self.last_heal = self.time;
        match result {
            Ok(effects) => self.process(node, effects),
            Err(error) => {
                let province = self.nodes[node].province;
                self.violate("handler_error", format!("node {province} recovery: {error}"));
            }
        }
    }

    // ----- faults -----

    fn fault_tick(&mut self) {
        if self.time >= self.window_end || self.fault_total <= 0.0 {
            return;
        }
        let total = self.fault_total;
        let choice = unit(&mut self.rng) * total;
        let mut acc = 0.0;
        let mut op = FaultOp::Crash;
        for (candidate, rate) in &self.fault_ops {
            acc += rate;
            if choice < acc {
                op = *candidate;
                break;
            }
        }
        let node_count = self.nodes.len() as u64;
        let node = below(&mut self.rng, node_count) as usize;
        let f = &self.scenario.faults;
        match op {
            FaultOp::Crash => {
                let down = between(&mut self.rng, f.down_ms_min, f.down_ms_max);
                self.crash(node, down);
            }
            FaultOp::Partition => {
                let mut other = below(&mut self.rng, node_count.saturating_sub(1).max(1)) as usize;
                if other >= node {
                    other = other.saturating_add(1) % self.nodes.len();
                }
                let one_way = below(&mut self.rng, 100) < u64::from(f.one_way_percent);
                let length = between(&mut self.rng, f.partition_ms_min, f.partition_ms_max);
                self.schedule(
                    self.time,
                    Event::PartitionStart {
                        a: vec![node],
                        b: vec![other],
                        one_way,
                        until: self.time.saturating_add(length),
                    },
                );
            }
            FaultOp::ClockJump => {
                let jump = signed_up_to(&mut self.rng, f.clock_jump_ms_max);
                self.schedule(self.time, Event::ClockJump { node, jump_ms: jump });
            }
            FaultOp::DiskStall => {
                let until = self.time.saturating_add(between(&mut self.rng, 1, f.disk_stall_ms_max));
                self.schedule(self.time, Event::DiskStall { node, until });
            }
        }
        self.fault_clock_us = self.fault_clock_us.max(self.time.saturating_mul(1_000));
        self.fault_clock_us = self.fault_clock_us.saturating_add(exponential_us(&mut self.rng, total));
        self.schedule(self.fault_clock_us / 1_000, Event::FaultTick);
    }

    // ----- workload -----

    fn workload_tick(&mut self) {
        if self.time >= self.work_end {
            return;
        }
        self.working = true;
        if self.ops_total <= 0.0 {
            return;
        }
        let choice = unit(&mut self.rng) * self.ops_total;
        let mut acc = 0.0;
        let mut op = Op::Settle;
        for (candidate, rate) in &self.ops {
            acc += rate;
            if choice < acc {
                op = *candidate;
                break;
            }
        }
        match op {
            Op::Settle => {
                self.new_settlement(self.time, None);
            }
            Op::Refund => self.new_refund(),
            Op::Bind => self.op_bind(),
            Op::Unbind => self.op_unbind(),
            Op::Freeze => {
                let node = below(&mut self.rng, self.nodes.len() as u64) as usize;
                if let Some((person, _)) = pick(&mut self.rng, &self.persons[node]).copied() {
                    self.freeze(node, person, self.time);
                }
            }
            Op::Credit => self.op_credit(),
            Op::RevocationRace => self.op_race(true),
            Op::FreezeRace => self.op_race(false),
            Op::IdReuse => self.op_id_reuse(),
        }
        self.work_clock_us = self.work_clock_us.max(self.time.saturating_mul(1_000));
        self.work_clock_us = self
            .work_clock_us
            .saturating_add(exponential_us(&mut self.rng, self.ops_total));
        self.schedule(self.work_clock_us / 1_000, Event::WorkloadTick);
    }

    fn duplicate_request(&mut self) -> bool {
        let percent = u64::from(self.scenario.workload.duplicate_request_percent);
        let duplicate = self.in_fault_window() && percent > 0 && below(&mut self.rng, 100) < percent;
        if duplicate {
            self.fault("client_duplicate");
        }
        duplicate
    }

    /// Starts a settlement; `family` forces a family patient. Returns its index.
    fn new_settlement(&mut self, at: u64, family: Option<usize>) -> Option<usize> {
        let w = &self.scenario.workload;
        let family = family.or_else(|| {
            let use_family = below(&mut self.rng, 100) < u64::from(w.family_percent) && !self.families.is_empty();
            use_family.then(|| below(&mut self.rng, self.families.len() as u64) as usize)
        });
        let (node, patient) = match family.and_then(|f| self.families.get(f)) {
            Some(f) => (f.node, f.patient),
            None => {
                let node = below(&mut self.rng, self.nodes.len() as u64) as usize;
                let (person, _) = pick(&mut self.rng, &self.persons[node]).copied()?;
                (node, person)
            }
        };
        let yuan = between(&mut self.rng, w.self_pay_yuan_min, w.self_pay_yuan_max);
        let self_pay = money_fen(yuan.saturating_mul(100).saturating_add(below(&mut self.rng, 100)));
        let fund_paid = money_fen(below(&mut self.rng, 500_000));
        let total_fee = fund_paid.checked_add(self_pay).unwrap_or(self_pay);
        let index = self.settlements.len();
        let province = self.nodes[node].province;
        let treatment = self.nodes[below(&mut self.rng, self.nodes.len() as u64) as usize].province;
        let request = SettleRequest {
            settlement: SettlementId::new(format!("S{index}")).ok()?,
            patient,
            total_fee,
            fund_paid,
            self_pay,
            institution: format!("H{}", treatment.code() / 10_000),
            treatment_region: Region::from(treatment),
            insured_region: Region::from(province),
        };
        self.settlements.push(HospitalSettlement {
            node,
            request,
            attempts: 0,
            receipt: None,
            done: false,
        });
        self.send_settlement(index, at);
        Some(index)
    }

    fn send_settlement(&mut self, index: usize, at: u64) {
        let copies = if self.duplicate_request() { 2 } else { 1 };
        let Some(s) = self.settlements.get_mut(index) else {
            return;
        };
        s.attempts = s.attempts.saturating_add(1);
        let node = s.node;
        let request = s.request.clone();
        for _ in 0..copies {
            let reply_to = self.reply_to(Waiting::Settle(index));
            self.schedule(
                at,
                Event::Client {
                    node,
                    reply_to,
                    request: ClientRequest::Settle(request.clone()),
                },
            );
        }
        let retry = self.scenario.workload.hospital_retry_ms;
        self.schedule(at.saturating_add(retry), Event::HospitalCheck(Retry::Settle(index)));
    }

    fn new_refund(&mut self) {
        let Some(&settlement) = pick(&mut self.rng, &self.settled) else {
            return;
        };
        let Some(s) = self.settlements.get(settlement) else {
            return;
        };
        let self_pay = s.request.self_pay.fen();
        let amount = if below(&mut self.rng, 2) == 0 || self_pay == 0 {
            None
        } else {
            Some(money_fen(between(&mut self.rng, 1, self_pay)))
        };
        let index = self.refunds.len();
        let Ok(refund) = RefundId::new(format!("R{index}")) else {
            return;
        };
        let node = s.node;
        let request = RefundRequest {
            refund,
            settlement: s.request.settlement.clone(),
            amount,
        };
        self.refunds.push(HospitalRefund {
            node,
            request,
            attempts: 0,
            receipt: None,
            done: false,
        });
        self.send_refund(index);
    }

    fn send_refund(&mut self, index: usize) {
        let copies = if self.duplicate_request() { 2 } else { 1 };
        let Some(r) = self.refunds.get_mut(index) else {
            return;
        };
        r.attempts = r.attempts.saturating_add(1);
        let node = r.node;
        let request = r.request.clone();
        for _ in 0..copies {
            let reply_to = self.reply_to(Waiting::Refund(index));
            self.schedule(
                self.time,
                Event::Client {
                    node,
                    reply_to,
                    request: ClientRequest::Refund(request.clone()),
                },
            );
        }
        let retry = self.scenario.workload.hospital_retry_ms;
        self.schedule(
            self.time.saturating_add(retry),
            Event::HospitalCheck(Retry::Refund(index)),
        );
    }

    fn hospital_check(&mut self, retry: Retry) {
        let retries_max = self.scenario.workload.hospital_retries_max;
        match retry {
            Retry::Settle(index) => {
                let Some(s) = self.settlements.get(index) else {
                    return;
                };
                if s.receipt.is_none() && !s.done && s.attempts <= retries_max {
                    self.send_settlement(index, self.time);
                }
            }
            Retry::Refund(index) => {
                let Some(r) = self.refunds.get(index) else {
                    return;
                };
                if r.receipt.is_none() && !r.done && r.attempts <= retries_max {
                    self.send_refund(index);
                }
            }
        }
    }

    fn op_bind(&mut self) {
        if self.families.is_empty() {
            return;
        }
        let family = below(&mut self.rng, self.families.len() as u64) as usize;
        let unbound: Vec<usize> = self.families[family]
            .grants
            .iter()
            .enumerate()
            .filter(|(_, g)| g.state == GrantState::Unbound)
            .map(|(i, _)| i)
            .collect();
        if let Some(&grant) = pick(&mut self.rng, &unbound) {
            self.send_bind(family, grant, self.time);
        }
    }

    /// Unbinds one bound grant of `family` at `at`; false if it has none.
    fn unbind_in(&mut self, family: usize, at: u64) -> bool {
        let Some(f) = self.families.get(family) else {
            return false;
        };
        let bound: Vec<(usize, BindingId)> = f
            .grants
            .iter()
            .enumerate()
            .filter_map(|(i, g)| match g.state {
                GrantState::Bound(id) => Some((i, id)),
                _ => None,
            })
            .collect();
        let Some(&(grant, binding)) = pick(&mut self.rng, &bound) else {
            return false;
        };
        let node = f.grants[grant].node;
        if let Some(g) = self.families.get_mut(family).and_then(|f| f.grants.get_mut(grant)) {
            g.state = GrantState::Unbinding(binding);
        }
        let reply_to = self.reply_to(Waiting::Unbind { family, grant });
        self.schedule(
            at,
            Event::Client {
                node,
                reply_to,
                request: ClientRequest::Unbind { binding },
            },
        );
        true
    }

    fn op_unbind(&mut self) {
        if self.families.is_empty() {
            return;
        }
        let family = below(&mut self.rng, self.families.len() as u64) as usize;
        self.unbind_in(family, self.time);
    }

    fn freeze(&mut self, node: usize, person: PersonId, at: u64) {
        let reply_to = self.reply_to(Waiting::Account);
        self.schedule(
            at,
            Event::Client {
                node,
                reply_to,
                request: ClientRequest::Freeze {
                    person,
                    reason: "card reported lost".into(),
                },
            },
        );
        let unfreeze_at = at.saturating_add(self.scenario.workload.freeze_ms);
        self.schedule(unfreeze_at, Event::Unfreeze { node, person });
    }

    fn op_credit(&mut self) {
        let node = below(&mut self.rng, self.nodes.len() as u64) as usize;
        let employees: Vec<PersonId> = self.persons[node].iter().filter(|(_, e)| *e).map(|(p, _)| *p).collect();
        let Some(&person) = pick(&mut self.rng, &employees) else {
            return;
        };
        let Ok(credit) = CreditId::new(format!("C{}", self.next_credit)) else {
            return;
        };
        self.next_credit = self.next_credit.saturating_add(1);
        let amount = money_fen(between(&mut self.rng, 10_000, 500_000));
        let copies = if self.duplicate_request() { 2 } else { 1 };
        for _ in 0..copies {
            let reply_to = self.reply_to(Waiting::Credit);
            self.schedule(
                self.time,
                Event::Client {
                    node,
                    reply_to,
                    request: ClientRequest::Credit {
                        credit: credit.clone(),
                        person,
                        amount,
                    },
                },
            );
        }
    }

    /// A family settlement and, within the race window, an unbind or a freeze of a grantor.
    fn op_race(&mut self, revocation: bool) {
        if self.families.is_empty() {
            return;
        }
        let family = below(&mut self.rng, self.families.len() as u64) as usize;
        let window = self.scenario.workload.race_window_ms;
        let at = self.time.saturating_add(below(&mut self.rng, window.saturating_add(1)));
        if revocation {
            if !self.unbind_in(family, at) {
                return;
            }
        } else {
            let Some(f) = self.families.get(family) else {
                return;
            };
            let grants: Vec<(usize, PersonId)> = f.grants.iter().map(|g| (g.node, g.grantor)).collect();
            let Some(&(node, person)) = pick(&mut self.rng, &grants) else {
                return;
            };
            self.freeze(node, person, at);
        }
        self.new_settlement(self.time, Some(family));
    }

    fn op_id_reuse(&mut self) {
        let Some(&index) = pick(&mut self.rng, &self.settled) else {
            return;
        };
        let Some(s) = self.settlements.get(index) else {
            return;
        };
        let mut request = s.request.clone();
        let one_fen = money_fen(1);
        request.self_pay = request.self_pay.checked_add(one_fen).unwrap_or(request.self_pay);
        request.total_fee = request.total_fee.checked_add(one_fen).unwrap_or(request.total_fee);
        let node = s.node;
        let reply_to = self.reply_to(Waiting::IdReuse(index));
        self.schedule(
            self.time,
            Event::Client {
                node,
                reply_to,
                request: ClientRequest::Settle(request),
            },
        );
    }

    // ----- replies -----

    fn client_error(&mut self, reason: &str) {
        match self.report.client_errors.get_mut(reason) {
            Some(count) => *count = count.saturating_add(1),
            None => {
                self.report.client_errors.insert(reason.to_string(), 1);
            }
        }
    }

    fn on_reply(&mut self, node: usize, reply_to: u64, reply: ClientReply) {
        let Some(waiting) = self.waiting.remove(&reply_to) else {
            return;
        };
        if let ClientReply::Error(error) = &reply {
            self.client_error(&error.reason);
        }
        match (waiting, reply) {
            (Waiting::Settle(index), ClientReply::Settled(receipt)) => {
                let Some(s) = self.settlements.get_mut(index) else {
                    return;
                };
                match &s.receipt {
                    None => {
                        if receipt.settlement != s.request.settlement || receipt.self_pay != s.request.self_pay {
                            let detail = format!(
                                "settlement {} answered with a receipt for another request: {receipt:?}",
                                s.request.settlement
                            );
                            self.violate("exactly_once", detail);
                            return;
                        }
                        s.receipt = Some(receipt);
                        s.done = true;
                        self.settled.push(index);
                    }
                    Some(first) if *first != receipt => {
                        let detail = format!(
                            "settlement {} answered twice with different receipts:\nfirst  {first:?}\nlater  {receipt:?}",
                            s.request.settlement
                        );
                        self.violate("exactly_once", detail);
                    }
                    Some(_) => {}
                }
            }
            (Waiting::Settle(index), ClientReply::Error(error)) => {
                let retry_ms = self.scenario.workload.hospital_retry_ms;
                let retries_max = self.scenario.workload.hospital_retries_max;
                let Some(s) = self.settlements.get_mut(index) else {
                    return;
                };
                if error.reason == "busy" {
                    if s.receipt.is_none() && s.attempts <= retries_max {
                        let at = self.time.saturating_add(retry_ms / 4);
                        self.send_settlement(index, at);
                    }
                } else if error.reason == "settlement_id_reused" {
                    let id = s.request.settlement.clone();
                    self.violate(
                        "exactly_once",
                        format!("a retry of settlement {id} with the same request was refused as a reused id"),
                    );
                } else {
                    s.done = true;
                }
            }
            (Waiting::IdReuse(index), ClientReply::Settled(receipt)) => {
                let id = self
                    .settlements
                    .get(index)
                    .map(|s| s.request.settlement.to_string())
                    .unwrap_or_default();
                self.violate(
                    "exactly_once",
                    format!("settlement id {id} re-used for a different request was accepted: {receipt:?}"),
                );
            }
            (Waiting::Refund(index), ClientReply::Refunded(receipt)) => {
                let Some(r) = self.refunds.get_mut(index) else {
                    return;
                };
                match &r.receipt {
                    None => {
                        r.receipt = Some(receipt);
                        r.done = true;
                        self.report.refunds_committed = self.report.refunds_committed.saturating_add(1);
                    }
                    Some(first) if *first != receipt => {
                        let detail = format!(
                            "refund {} answered twice with different receipts:\nfirst  {first:?}\nlater  {receipt:?}",
                            r.request.refund
                        );
                        self.violate("exactly_once", detail);
                    }
                    Some(_) => {}
                }
            }
            (Waiting::Refund(index), ClientReply::Error(error)) => {
                if let Some(r) = self.refunds.get_mut(index) {
                    if error.reason == "refund_id_reused" {
                        let id = r.request.refund.clone();
                        self.violate(
                            "exactly_once",
                            format!("a retry of refund {id} with the same request was refused as a reused id"),
                        );
                    } else if error.reason != "settlement_in_progress" {
                        r.done = true;
                    }
                }
            }
            (Waiting::Bind { family, grant }, reply) => {
                let state = match reply {
                    ClientReply::Bound { binding, .. } => GrantState::Bound(binding),
                    _ => GrantState::Unbound,
                };
                if let Some(g) = self.families.get_mut(family).and_then(|f| f.grants.get_mut(grant))
                    && g.state == GrantState::Binding
                {
                    g.state = state;
                }
            }
            (Waiting::Unbind { family, grant }, reply) => {
                if let Some(g) = self.families.get_mut(family).and_then(|f| f.grants.get_mut(grant))
                    && let GrantState::Unbinding(id) = g.state
                {
                    g.state = match reply {
                        ClientReply::Unbound { .. } => GrantState::Unbound,
                        ClientReply::Error(e) if e.reason == "already_revoked" || e.reason == "unknown_binding" => {
                            GrantState::Unbound
                        }
                        _ => GrantState::Bound(id),
                    };
                }
            }
            (Waiting::Open, ClientReply::Account(_)) => {}
            (Waiting::Open, other) => {
                let province = self.nodes[node].province;
                self.violate("setup", format!("opening an account on {province} failed: {other:?}"));
            }
            _ => {}
        }
    }

    // ----- end of run -----

    fn final_checks(&mut self) {
        if let Some((invariant, detail)) = self.checker.final_checks(&self.nodes) {
            self.violate(invariant, detail);
        }
    }
}

// ----- random helpers (all from the run's one generator) -----

/// Uniform in 0..n (0 when n is 0).
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // Multiply-shift: unbiased enough for a simulation, and branch-free.
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// Uniform in min..=max.
fn between(rng: &mut ChaCha8Rng, min: u64, max: u64) -> u64 {
    if max <= min {
        return min;
    }
    min.saturating_add(below(rng, max.saturating_sub(min).saturating_add(1)))
}

/// Uniform in -max..=max.
fn signed_up_to(rng: &mut ChaCha8Rng, max: i64) -> i64 {
    if max <= 0 {
        return 0;
    }
    let span = max.unsigned_abs().saturating_mul(2).saturating_add(1);
    i64::try_from(below(rng, span)).unwrap_or(0).saturating_sub(max)
}

/// Uniform in [0, 1).
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A Poisson process's gap for `rate_per_s`, in whole microseconds (the workload and fault
/// clocks count in microseconds so that high rates do not collapse onto one millisecond).
fn exponential_us(rng: &mut ChaCha8Rng, rate_per_s: f64) -> u64 {
    let u = 1.0 - unit(rng);
    let gap = -u.ln() / rate_per_s * 1_000_000.0;
    if gap.is_finite() && gap > 0.0 { gap as u64 } else { 0 }
}

fn pick<'t, T>(rng: &mut ChaCha8Rng, items: &'t [T]) -> Option<&'t T> {
    items.get(below(rng, items.len() as u64) as usize)
}

fn money_fen(fen: u64) -> Money {
    Money::from_fen(fen).unwrap_or(Money::ZERO)
}
