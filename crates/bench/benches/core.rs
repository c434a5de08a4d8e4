//! Criterion micro-benchmarks of the sans-IO core: the deduction planner, one prepare handled
//! by a participant, and a whole cross-province settlement through an in-memory cluster (the
//! core's CPU cost per settlement with storage and network taken away).

use std::collections::{BTreeMap, VecDeque};
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use exchange_core::binding::{BindRequest, DocumentKind, Evidence, Limits, Relation};
use exchange_core::config::ProtocolConfig;
use exchange_core::mem::MemLedger;
use exchange_core::message::{ClientReply, ClientRequest, PeerMessage};
use exchange_core::node::{Input, NodeCore};
use exchange_core::plan::{Candidate, OwnAccount, PlanInput, plan};
use exchange_core::records::SettleRequest;
use exchange_core::{
    BindingId, BindingKind, GrantorOrder, Money, Now, PersonId, Policy, Province, Region, Scheme, SettlementId,
};

const BEIJING: u32 = 110_000;
const CHONGQING: u32 = 500_000;
const SICHUAN: u32 = 510_000;
const WALL_MS: i64 = 1_795_320_000_000;
/// Most messages delivered per `deliver_all` (a settlement needs about ten).
const STEPS_MAX: usize = 10_000;

type Error = Box<dyn std::error::Error>;

fn p(code: u32) -> Result<Province, Error> {
    Ok(Province::from_code(code)?)
}

fn now() -> Now {
    Now::new(1_000, WALL_MS)
}

/// Nodes with in-memory ledgers; messages delivered in order; timers ignored.
#[derive(Clone)]
struct Cluster {
    nodes: BTreeMap<Province, (NodeCore, MemLedger)>,
    network: VecDeque<(Province, Province, PeerMessage)>,
    replies: BTreeMap<u64, ClientReply>,
    next_reply: u64,
}

impl Cluster {
    fn new(codes: &[u32]) -> Result<Cluster, Error> {
        let mut nodes = BTreeMap::new();
        for code in codes {
            nodes.insert(
                p(*code)?,
                (
                    NodeCore::new(p(*code)?, Policy::default(), ProtocolConfig::default(), 1),
                    MemLedger::new(),
                ),
            );
        }
        Ok(Cluster {
            nodes,
            network: VecDeque::new(),
            replies: BTreeMap::new(),
            next_reply: 0,
        })
    }

    fn step(&mut self, at: Province, input: Input) -> Result<(), Error> {
        let (node, ledger) = self.nodes.get_mut(&at).ok_or("no such node")?;
        let effects = node.handle(ledger, input, now()).map_err(|e| format!("{e:?}"))?;
        ledger.apply(&effects.writes)?;
        for (to, message) in effects.sends {
            self.network.push_back((at, to, message));
        }
        for (reply_to, reply) in effects.replies {
            self.replies.insert(reply_to, reply);
        }
        Ok(())
    }

    fn client(&mut self, code: u32, request: ClientRequest) -> Result<u64, Error> {
        self.next_reply += 1;
        let reply_to = self.next_reply;
        self.step(p(code)?, Input::Client { reply_to, request })?;
        Ok(reply_to)
    }

    fn deliver_all(&mut self) -> Result<(), Error> {
        for _ in 0..STEPS_MAX {
            let Some((from, to, message)) = self.network.pop_front() else {
                return Ok(());
            };
            self.step(to, Input::Peer { from, message })?;
        }
        Err("no quiescence".into())
    }
}

fn person(code: u32, serial: u64) -> PersonId {
    PersonId::synthetic(code, 5_000_000 + serial)
}

/// A Chongqing patient (resident scheme) bound by grantors in Beijing and Sichuan.
fn family_cluster() -> Result<Cluster, Error> {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN])?;
    let patient = person(CHONGQING, 0);
    cluster.client(
        CHONGQING,
        ClientRequest::OpenAccount {
            person: patient,
            name: "patient".into(),
            scheme: Scheme::Resident,
            balance: Money::ZERO,
        },
    )?;
    for (index, code) in [BEIJING, SICHUAN].into_iter().enumerate() {
        let grantor = person(code, 1 + index as u64);
        cluster.client(
            code,
            ClientRequest::OpenAccount {
                person: grantor,
                name: "grantor".into(),
                scheme: Scheme::Employee,
                balance: Money::from_yuan(10_000_000_000)?,
            },
        )?;
        cluster.client(
            code,
            ClientRequest::Bind(BindRequest {
                grantor,
                grantee: patient,
                grantee_province: p(CHONGQING)?,
                relation: Relation::Child,
                kind: BindingKind::MutualAid,
                limits: Limits::default(),
                evidence: Evidence {
                    document: DocumentKind::HouseholdRegister,
                    reference: "BENCH".into(),
                    face_verified: true,
                    commitment_signed: true,
                },
            }),
        )?;
        cluster.deliver_all()?;
    }
    Ok(cluster)
}

fn settle(id: u64, self_pay_yuan: u64) -> Result<ClientRequest, Error> {
    let chongqing = p(CHONGQING)?;
    let self_pay = Money::from_yuan(self_pay_yuan)?;
    Ok(ClientRequest::Settle(SettleRequest {
        settlement: SettlementId::new(format!("BENCH-{id}"))?,
        patient: person(CHONGQING, 0),
        total_fee: self_pay.checked_add(self_pay)?,
        fund_paid: self_pay,
        self_pay,
        institution: "H500001".into(),
        treatment_region: Region::from(chongqing),
        insured_region: Region::from(chongqing),
    }))
}

fn candidate(serial: u64, code: u32, available: u64) -> Result<Candidate, Error> {
    Ok(Candidate {
        binding: BindingId::new(p(code)?, serial),
        grantor: PersonId::synthetic(code, serial),
        province: p(code)?,
        available: Money::from_yuan(available)?,
        balance_for_order: Money::from_yuan(available)?,
        per_settlement_limit: None,
        monthly_remaining: None,
        position: 0,
        created_wall_ms: i64::try_from(serial)?,
        refusal: None,
    })
}

fn benches(c: &mut Criterion) {
    let Ok(input) = (|| -> Result<PlanInput, Error> {
        Ok(PlanInput {
            self_pay: Money::from_yuan(500)?,
            own: Some(OwnAccount {
                available: Money::from_yuan(50)?,
                refusal: None,
            }),
            candidates: vec![candidate(1, BEIJING, 300)?, candidate(2, SICHUAN, 800)?],
            order: GrantorOrder::BindingOrder,
        })
    })() else {
        return;
    };
    c.bench_function("plan/own_plus_two_grantors", |b| b.iter(|| plan(black_box(&input))));

    let Ok(base) = family_cluster() else {
        eprintln!("could not build the in-memory family");
        return;
    };

    // One prepare, handled by the Beijing participant (captured from a real settlement).
    let mut probe = base.clone();
    let prepare = probe
        .client(
            CHONGQING,
            settle(0, 100).unwrap_or(ClientRequest::Close {
                person: person(CHONGQING, 0),
            }),
        )
        .ok()
        .and_then(|_| {
            probe.network.iter().find_map(|(from, to, message)| {
                (to.code() == BEIJING && matches!(message, PeerMessage::Prepare(_))).then(|| (*from, message.clone()))
            })
        });
    if let Some((from, message)) = prepare {
        let Some(participant) = base
            .nodes
            .iter()
            .find(|(p, _)| p.code() == BEIJING)
            .map(|(_, n)| n.clone())
        else {
            return;
        };
        c.bench_function("participant/prepare", |b| {
            b.iter_batched(
                || participant.clone(),
                |(mut core, ledger)| {
                    let effects = core.handle(
                        &ledger,
                        Input::Peer {
                            from,
                            message: message.clone(),
                        },
                        now(),
                    );
                    black_box(effects.map(|e| e.writes.len()).unwrap_or(0))
                },
                BatchSize::SmallInput,
            )
        });
    }

    // A whole settlement with two remote grantors: settle, prepares, votes, commits, acks.
    let mut cluster = base.clone();
    let mut id = 1_000u64;
    c.bench_function("cluster/settlement_two_remote_grantors", |b| {
        b.iter(|| {
            id += 1;
            let done = settle(id, 1)
                .and_then(|request| cluster.client(CHONGQING, request))
                .and_then(|reply_to| cluster.deliver_all().map(|()| reply_to));
            black_box(done.ok().map(|reply_to| cluster.replies.remove(&reply_to)))
        })
    });
}

criterion_group!(core_benches, benches);
criterion_main!(core_benches);
