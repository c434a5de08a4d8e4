//! Wallet transfers: exact effects per event on the grantor's node (coordinator and debit leg)
//! and the receiver's node (credit leg), every policy refusal, the receiver's refusal and a
//! timeout returning the money, idempotent ids, duplicated and reordered decisions, presumed
//! abort after a restart, and clearing.

use std::collections::{BTreeMap, VecDeque};

use exchange_core::binding::{BindRequest, DocumentKind, Evidence, Limits, Relation};
use exchange_core::clearing::{positions, reconcile};
use exchange_core::config::ProtocolConfig;
use exchange_core::effects::{Effects, Note, Timer, TimerKind};
use exchange_core::ids::{LegId, LegScope, TRANSFER_CREDIT_INDEX, TRANSFER_DEBIT_INDEX, TransferId};
use exchange_core::ledger::Write;
use exchange_core::mem::MemLedger;
use exchange_core::message::{ClientReply, ClientRequest, LegOutcome, PeerMessage, Prepare, Vote};
use exchange_core::node::{Input, NodeCore};
use exchange_core::records::{
    DecidedLeg, Fence, Hold, JournalEntry, JournalKind, OutboxKey, TransferReceipt, TransferRecord, TransferRequest,
    TransferStatus, WalletUsage,
};
use exchange_core::{Account, BindingId, BindingKind, Money, Now, PersonId, Policy, Province, Refusal, Scheme};

const BEIJING: u32 = 110000;
const CHONGQING: u32 = 500000;
/// 2026-11-22 12:00 in Beijing.
const NOON_MS: i64 = 1_795_320_000_000;
const HOUR_MS: i64 = 3_600_000;

fn p(code: u32) -> Province {
    Province::from_code(code).unwrap()
}

fn yuan(value: u64) -> Money {
    Money::from_yuan(value).unwrap()
}

fn fen(value: u64) -> Money {
    Money::from_fen(value).unwrap()
}

fn adult(code: u32, sequence: u32) -> PersonId {
    PersonId::from_body(&format!("{code:06}19700101{sequence:03}")).unwrap()
}

fn tid(text: &str) -> TransferId {
    TransferId::new(text).unwrap()
}

/// Two provinces in memory; messages are queued and delivered one by one or all at once.
struct Net {
    nodes: BTreeMap<Province, (NodeCore, MemLedger)>,
    network: VecDeque<(Province, Province, PeerMessage)>,
    replies: BTreeMap<u64, ClientReply>,
    timers: Vec<(Province, u64, TimerKind)>,
    notes: Vec<Note>,
    mono_ms: u64,
    /// Wall time at mono 0 (the wall clock runs with the monotonic one).
    wall_base_ms: i64,
    next_reply: u64,
    config: ProtocolConfig,
}

impl Net {
    fn new(chongqing_policy: Policy) -> Net {
        let config = ProtocolConfig::default();
        let mut nodes = BTreeMap::new();
        nodes.insert(
            p(BEIJING),
            (
                NodeCore::new(p(BEIJING), Policy::default(), config.clone(), 1),
                MemLedger::new(),
            ),
        );
        nodes.insert(
            p(CHONGQING),
            (
                NodeCore::new(p(CHONGQING), chongqing_policy, config.clone(), 1),
                MemLedger::new(),
            ),
        );
        Net {
            nodes,
            network: VecDeque::new(),
            replies: BTreeMap::new(),
            timers: Vec::new(),
            notes: Vec::new(),
            mono_ms: 1_000,
            wall_base_ms: NOON_MS - 1_000,
            next_reply: 0,
            config,
        }
    }

    fn now(&self) -> Now {
        Now::new(self.mono_ms, self.wall_base_ms + i64::try_from(self.mono_ms).unwrap())
    }

    /// Moves the wall clock (not the monotonic one) so that it reads `wall_ms` now.
    fn set_wall(&mut self, wall_ms: i64) {
        self.wall_base_ms = wall_ms - i64::try_from(self.mono_ms).unwrap();
    }

    fn ledger(&self, code: u32) -> &MemLedger {
        &self.nodes[&p(code)].1
    }

    fn step(&mut self, at: Province, input: Input) -> Effects {
        let now = self.now();
        let (node, ledger) = self.nodes.get_mut(&at).unwrap();
        let effects = node.handle(ledger, input, now).unwrap();
        ledger.apply(&effects.writes).unwrap();
        for account in ledger.tables().accounts.values() {
            account.check_invariant().unwrap();
        }
        for (to, message) in &effects.sends {
            self.network.push_back((at, *to, message.clone()));
        }
        for (reply_to, reply) in &effects.replies {
            self.replies.insert(*reply_to, reply.clone());
        }
        for timer in &effects.timers {
            self.timers.push((at, timer.at_mono_ms, timer.kind.clone()));
        }
        self.notes.extend(effects.notes.iter().cloned());
        effects
    }

    fn client(&mut self, code: u32, request: ClientRequest) -> (u64, Effects) {
        self.next_reply += 1;
        let reply_to = self.next_reply;
        let effects = self.step(p(code), Input::Client { reply_to, request });
        (reply_to, effects)
    }

    /// Delivers the next queued message; returns what its handler did.
    fn deliver_next(&mut self) -> Effects {
        let (from, to, message) = self.network.pop_front().expect("a message to deliver");
        self.step(to, Input::Peer { from, message })
    }

    /// Drops the next queued message (the network lost it).
    fn lose_next(&mut self) -> PeerMessage {
        self.network.pop_front().expect("a message to lose").2
    }

    fn deliver_all(&mut self) {
        let mut steps = 0;
        while !self.network.is_empty() {
            self.deliver_next();
            steps += 1;
            assert!(steps < 10_000, "no quiescence");
        }
    }

    /// Advances time to `mono_ms`, firing due timers in time order (and delivering what they send).
    fn advance_to(&mut self, mono_ms: u64) {
        loop {
            self.timers.sort_by_key(|(_, at, _)| *at);
            let due = self.timers.first().is_some_and(|(_, at, _)| *at <= mono_ms);
            if !due {
                break;
            }
            let (at_node, at, kind) = self.timers.remove(0);
            self.mono_ms = self.mono_ms.max(at);
            self.step(at_node, Input::Timer(kind));
            self.deliver_all();
        }
        self.mono_ms = mono_ms;
    }

    fn reply(&self, reply_to: u64) -> &ClientReply {
        &self.replies[&reply_to]
    }

    fn account(&self, code: u32, person: &PersonId) -> Account {
        self.ledger(code).tables().accounts[person].clone()
    }

    fn open(&mut self, code: u32, person: PersonId, scheme: Scheme, balance: Money) {
        let (reply, _) = self.client(
            code,
            ClientRequest::OpenAccount {
                person,
                name: "Test".into(),
                scheme,
                balance,
            },
        );
        assert!(matches!(self.reply(reply), ClientReply::Account(_)));
    }

    fn bind(&mut self, grantor: PersonId, grantee: PersonId, kind: BindingKind) -> BindingId {
        self.bind_in(grantor, grantee, p(CHONGQING), kind)
    }

    fn bind_in(&mut self, grantor: PersonId, grantee: PersonId, province: Province, kind: BindingKind) -> BindingId {
        let (reply, _) = self.client(
            BEIJING,
            ClientRequest::Bind(BindRequest {
                grantor,
                grantee,
                grantee_province: province,
                relation: Relation::Parent,
                kind,
                limits: Limits::default(),
                evidence: Evidence {
                    document: DocumentKind::HouseholdRegister,
                    reference: "HR-42".into(),
                    face_verified: true,
                    commitment_signed: true,
                },
            }),
        );
        self.deliver_all();
        match self.reply(reply) {
            ClientReply::Bound { binding, .. } => *binding,
            other => panic!("bind failed: {other:?}"),
        }
    }

    fn transfer(&mut self, id: &str, grantor: PersonId, binding: BindingId, amount: Money) -> (u64, Effects) {
        self.client(
            BEIJING,
            ClientRequest::Transfer {
                transfer: tid(id),
                grantor,
                binding,
                amount,
            },
        )
    }

    fn receipt(&self, reply_to: u64) -> TransferReceipt {
        match self.reply(reply_to) {
            ClientReply::Transferred(receipt) => receipt.clone(),
            other => panic!("expected a transfer receipt, got {other:?}"),
        }
    }

    fn sum_balances(&self) -> Money {
        Money::sum(
            self.nodes
                .values()
                .flat_map(|(_, l)| l.tables().accounts.values().map(|a| a.balance)),
        )
        .unwrap()
    }

    fn violations(&self) -> Vec<&Note> {
        self.notes
            .iter()
            .filter(|n| matches!(n, Note::ProtocolViolation { .. }))
            .collect()
    }
}

/// A Beijing son (1,000 yuan) bound for mutual aid to his Chongqing mother (50 yuan).
struct Family {
    son: PersonId,
    mother: PersonId,
    binding: BindingId,
}

fn family(net: &mut Net) -> Family {
    let son = adult(BEIJING, 2);
    let mother = adult(CHONGQING, 1);
    net.open(CHONGQING, mother, Scheme::Employee, yuan(50));
    net.open(BEIJING, son, Scheme::Employee, yuan(1000));
    let binding = net.bind(son, mother, BindingKind::MutualAid);
    Family { son, mother, binding }
}

fn leg(id: &str, index: u16, account: PersonId) -> LegId {
    LegId {
        coordinator: p(BEIJING),
        scope: LegScope::Transfer {
            transfer: tid(id),
            attempt: 1,
        },
        index,
        account,
    }
}

fn effects(
    writes: Vec<Write>,
    sends: Vec<(Province, PeerMessage)>,
    replies: Vec<(u64, ClientReply)>,
    timers: Vec<Timer>,
) -> Effects {
    Effects {
        writes,
        sends,
        replies,
        timers,
        cancels: Vec::new(),
        notes: Vec::new(),
    }
}

fn timer(at_mono_ms: u64, kind: TimerKind) -> Timer {
    Timer { at_mono_ms, kind }
}

#[test]
fn a_transfer_holds_asks_the_receiver_commits_and_credits_exactly_once() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    let before = net.sum_balances();
    let debit = leg("T-1", TRANSFER_DEBIT_INDEX, f.son);
    let credit = leg("T-1", TRANSFER_CREDIT_INDEX, f.mother);
    let config = net.config.clone();
    let t0 = net.mono_ms;
    let now = net.now();

    // 1. The request: the grantor's node asks its own account to hold, and waits.
    let (reply, e) = net.transfer("T-1", f.son, f.binding, yuan(500));
    let prepare_debit = Prepare {
        leg: debit.clone(),
        binding: Some(f.binding),
        patient: f.mother,
        amount_max: yuan(500),
        hold_timeout_ms: config.hold_timeout_ms,
    };
    assert_eq!(
        e,
        effects(
            vec![],
            vec![(p(BEIJING), PeerMessage::Prepare(prepare_debit))],
            vec![],
            vec![timer(
                t0 + config.vote_timeout_ms,
                TimerKind::TransferDeadline(tid("T-1"))
            )],
        )
    );

    // 2. The grantor's account holds the whole amount and counts the day's first transfer.
    let son_before = net.account(BEIJING, &f.son);
    let e = net.deliver_next();
    let mut son_held = son_before.clone();
    son_held.held = yuan(500);
    let hold = Hold {
        account: f.son,
        binding: Some(f.binding),
        patient: f.mother,
        amount: yuan(500),
        available_before: yuan(1000),
        month: now.month(),
        prepared_wall_ms: now.wall_ms,
        hold_timeout_ms: config.hold_timeout_ms,
    };
    assert_eq!(
        e,
        effects(
            vec![
                Write::Account(son_held.clone()),
                Write::WalletUsage(WalletUsage {
                    person: f.son,
                    day: now.date(),
                    transfers: 1,
                }),
                Write::Fence {
                    leg: debit.clone(),
                    expected: None,
                    new: Fence::Prepared(hold.clone()),
                },
                Write::LiveHold {
                    leg: debit.clone(),
                    live: true,
                },
            ],
            vec![(
                p(BEIJING),
                PeerMessage::Vote {
                    leg: debit.clone(),
                    vote: Vote::Yes {
                        held: yuan(500),
                        available_before: yuan(1000),
                    },
                },
            )],
            vec![],
            vec![timer(
                t0 + config.hold_timeout_ms,
                TimerKind::HoldDeadline(debit.clone())
            )],
        )
    );

    // 3. Held: the receiver's node is asked to accept the credit.
    let e = net.deliver_next();
    assert_eq!(
        e,
        effects(
            vec![],
            vec![(
                p(CHONGQING),
                PeerMessage::Prepare(Prepare {
                    leg: credit.clone(),
                    binding: Some(f.binding),
                    patient: f.mother,
                    amount_max: yuan(500),
                    hold_timeout_ms: config.hold_timeout_ms,
                }),
            )],
            vec![],
            vec![timer(
                t0 + config.vote_timeout_ms,
                TimerKind::TransferDeadline(tid("T-1"))
            )],
        )
    );

    // 4. The receiver accepts; it holds and writes nothing and does not disclose its balance.
    let e = net.deliver_next();
    assert_eq!(
        e,
        effects(
            vec![],
            vec![(
                p(BEIJING),
                PeerMessage::Vote {
                    leg: credit.clone(),
                    vote: Vote::Yes {
                        held: yuan(500),
                        available_before: Money::ZERO,
                    },
                },
            )],
            vec![],
            vec![],
        )
    );

    // 5. COMMIT: the record, the clearing claim and the outbox in one write; the receipt; then
    //    the commits to both legs.
    let e = net.deliver_next();
    let receipt = TransferReceipt {
        transfer: tid("T-1"),
        grantor: f.son,
        binding: f.binding,
        grantee: f.mother,
        grantee_province: p(CHONGQING),
        amount: yuan(500),
        status: TransferStatus::Committed,
        reason: None,
        grantor_available_after: Some(yuan(500)),
        decided_wall_ms: now.wall_ms,
    };
    let record = TransferRecord {
        request: TransferRequest {
            transfer: tid("T-1"),
            grantor: f.son,
            binding: f.binding,
            amount: yuan(500),
        },
        receipt: receipt.clone(),
        legs: vec![
            DecidedLeg {
                leg: debit.clone(),
                province: p(BEIJING),
                account: f.son,
                binding: Some(f.binding),
                amount: yuan(500),
                notify: true,
                refunded: Money::ZERO,
            },
            DecidedLeg {
                leg: credit.clone(),
                province: p(CHONGQING),
                account: f.mother,
                binding: Some(f.binding),
                amount: yuan(500),
                notify: true,
                refunded: Money::ZERO,
            },
        ],
    };
    assert_eq!(
        e,
        effects(
            vec![
                Write::Journal(JournalEntry {
                    kind: JournalKind::TransferSent,
                    wall_ms: now.wall_ms,
                    amount: yuan(500),
                    account: Some(f.mother),
                    leg: Some(credit.clone()),
                    binding: Some(f.binding),
                    settlement: None,
                    counterparty: Some(p(CHONGQING)),
                    reference: Some("T-1".into()),
                }),
                Write::Transfer(record),
                Write::Outbox {
                    key: OutboxKey::Transfer(tid("T-1")),
                    live: true,
                },
            ],
            vec![
                (
                    p(BEIJING),
                    PeerMessage::Commit {
                        leg: debit.clone(),
                        amount: yuan(500),
                    },
                ),
                (
                    p(CHONGQING),
                    PeerMessage::Commit {
                        leg: credit.clone(),
                        amount: yuan(500),
                    },
                ),
            ],
            vec![(reply, ClientReply::Transferred(receipt.clone()))],
            vec![timer(
                t0 + config.resend_initial_ms,
                TimerKind::Resend(OutboxKey::Transfer(tid("T-1"))),
            )],
        )
    );

    // 6. The hold becomes a debit (a local leg: no clearing on its own).
    let e = net.deliver_next();
    let mut son_after = son_held.clone();
    son_after.held = Money::ZERO;
    son_after.balance = yuan(500);
    assert_eq!(
        e,
        Effects {
            writes: vec![
                Write::Account(son_after),
                Write::Fence {
                    leg: debit.clone(),
                    expected: Some(Fence::Prepared(hold)),
                    new: Fence::Committed {
                        account: f.son,
                        binding: Some(f.binding),
                        amount: yuan(500),
                        refunded: Money::ZERO,
                    },
                },
                Write::LiveHold {
                    leg: debit.clone(),
                    live: false,
                },
                Write::Journal(JournalEntry {
                    kind: JournalKind::Debit,
                    wall_ms: now.wall_ms,
                    amount: yuan(500),
                    account: Some(f.son),
                    leg: Some(debit.clone()),
                    binding: Some(f.binding),
                    settlement: None,
                    counterparty: Some(p(BEIJING)),
                    reference: Some("T-1".into()),
                }),
            ],
            sends: vec![(
                p(BEIJING),
                PeerMessage::Ack {
                    leg: debit.clone(),
                    outcome: LegOutcome::Committed { amount: yuan(500) },
                },
            )],
            replies: vec![],
            timers: vec![],
            // The hold's deadline has nothing left to do.
            cancels: vec![TimerKind::HoldDeadline(debit.clone())],
            notes: vec![Note::HoldResolved {
                leg: debit.clone(),
                committed: true,
            }],
        }
    );

    // 7. The relative is credited, once.
    let mut mother_after = net.account(CHONGQING, &f.mother);
    mother_after.balance = yuan(550);
    let e = net.deliver_next();
    assert_eq!(
        e,
        effects(
            vec![
                Write::Account(mother_after),
                Write::Fence {
                    leg: credit.clone(),
                    expected: None,
                    new: Fence::Credited {
                        account: f.mother,
                        amount: yuan(500),
                    },
                },
                Write::Journal(JournalEntry {
                    kind: JournalKind::TransferReceived,
                    wall_ms: now.wall_ms,
                    amount: yuan(500),
                    account: Some(f.mother),
                    leg: Some(credit.clone()),
                    binding: None,
                    settlement: None,
                    counterparty: Some(p(BEIJING)),
                    reference: Some("T-1".into()),
                }),
            ],
            vec![(
                p(BEIJING),
                PeerMessage::Ack {
                    leg: credit.clone(),
                    outcome: LegOutcome::Committed { amount: yuan(500) },
                },
            )],
            vec![],
            vec![],
        )
    );

    // 8. Both acks: the outbox item goes with the last one.
    assert_eq!(net.deliver_next(), Effects::default());
    assert_eq!(
        net.deliver_next(),
        effects(
            vec![Write::Outbox {
                key: OutboxKey::Transfer(tid("T-1")),
                live: false,
            }],
            vec![],
            vec![],
            vec![],
        )
    );
    assert!(net.network.is_empty());
    assert_eq!(net.account(BEIJING, &f.son).balance, yuan(500));
    assert_eq!(net.account(CHONGQING, &f.mother).balance, yuan(550));
    assert_eq!(net.sum_balances(), before, "money moved, none appeared or vanished");
    assert!(net.violations().is_empty(), "{:?}", net.violations());
    // The resend timer finds nothing left to send.
    net.advance_to(net.mono_ms + 60_000);
    assert!(net.network.is_empty());
}

#[test]
fn a_committed_transfer_enters_clearing_as_what_the_grantors_province_owes() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    let (reply, _) = net.transfer("T-clear", f.son, f.binding, yuan(300));
    net.deliver_all();
    assert_eq!(net.receipt(reply).status, TransferStatus::Committed);
    let journal = |code: u32| -> Vec<JournalEntry> {
        net.ledger(code)
            .tables()
            .journal
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    };
    let (beijing, chongqing) = (journal(BEIJING), journal(CHONGQING));
    let owed = positions(p(BEIJING), &beijing);
    assert_eq!(owed[&p(CHONGQING)].net_owed_to_peer_fen(), 30_000);
    let owed = positions(p(CHONGQING), &chongqing);
    assert_eq!(owed[&p(BEIJING)].net_owed_to_peer_fen(), -30_000);
    let report = reconcile(
        p(BEIJING),
        p(CHONGQING),
        &beijing,
        &chongqing,
        NOON_MS - HOUR_MS,
        NOON_MS + HOUR_MS,
    );
    assert!(report.reconciled(), "{report:?}");
    assert_eq!((report.legs_compared, report.legs_matched), (1, 1));
    assert_eq!(report.net_owed_to_peer_fen(), 30_000);
    // Conservation per node: balances change only by journaled amounts.
    for code in [BEIJING, CHONGQING] {
        let signed: i128 = net
            .ledger(code)
            .tables()
            .journal
            .iter()
            .map(|(_, e)| i128::from(e.kind.balance_sign()) * i128::from(e.amount.fen()))
            .sum();
        let balances: i128 = net
            .ledger(code)
            .tables()
            .accounts
            .values()
            .map(|a| i128::from(a.balance.fen()))
            .sum();
        assert_eq!(signed, balances, "node {code}");
    }
}

/// Runs a transfer the grantor's account refuses and checks the exact effects: the refusal
/// fence and the no vote, then the refused record and receipt; nothing else moves.
fn assert_refused_by_the_grantors_account(net: &mut Net, id: &str, f: &Family, amount: Money, reason: Refusal) {
    let debit = leg(id, TRANSFER_DEBIT_INDEX, f.son);
    let balances = net.sum_balances();
    let son = net.account(BEIJING, &f.son);
    let now = net.now();
    let (reply, e) = net.transfer(id, f.son, f.binding, amount);
    assert_eq!(e.sends.len(), 1, "{e:?}");
    let e = net.deliver_next();
    assert_eq!(
        e,
        effects(
            vec![Write::Fence {
                leg: debit.clone(),
                expected: None,
                new: Fence::Aborted { refusal: Some(reason) },
            }],
            vec![(
                p(BEIJING),
                PeerMessage::Vote {
                    leg: debit.clone(),
                    vote: Vote::No { reason },
                },
            )],
            vec![],
            vec![],
        ),
        "{id}"
    );
    let e = net.deliver_next();
    let receipt = TransferReceipt {
        transfer: tid(id),
        grantor: f.son,
        binding: f.binding,
        grantee: f.mother,
        grantee_province: p(CHONGQING),
        amount,
        status: TransferStatus::Refused,
        reason: Some(reason),
        grantor_available_after: None,
        decided_wall_ms: now.wall_ms,
    };
    assert_eq!(
        e,
        effects(
            vec![Write::Transfer(TransferRecord {
                request: TransferRequest {
                    transfer: tid(id),
                    grantor: f.son,
                    binding: f.binding,
                    amount,
                },
                receipt: receipt.clone(),
                legs: vec![DecidedLeg {
                    leg: debit,
                    province: p(BEIJING),
                    account: f.son,
                    binding: Some(f.binding),
                    amount: Money::ZERO,
                    notify: false,
                    refunded: Money::ZERO,
                }],
            })],
            vec![],
            vec![(reply, ClientReply::Transferred(receipt))],
            vec![],
        ),
        "{id}"
    );
    assert!(net.network.is_empty(), "the receiver is never asked");
    assert_eq!(
        net.account(BEIJING, &f.son),
        son,
        "{id}: the grantor's account is untouched"
    );
    assert_eq!(net.sum_balances(), balances);
}

fn commit(net: &mut Net, id: &str, f: &Family, amount: Money) {
    let (reply, _) = net.transfer(id, f.son, f.binding, amount);
    net.deliver_all();
    assert_eq!(net.receipt(reply).status, TransferStatus::Committed, "{id}");
}

#[test]
fn the_fourth_transfer_of_a_day_is_refused_and_the_next_day_counts_afresh() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    for id in ["T-a", "T-b", "T-c"] {
        commit(&mut net, id, &f, yuan(10));
    }
    assert_refused_by_the_grantors_account(&mut net, "T-d", &f, yuan(10), Refusal::DailyTransferLimit);
    assert_eq!(
        net.ledger(BEIJING).tables().wallet_usage[&f.son].transfers,
        3,
        "a refusal does not count"
    );
    // Tomorrow at 09:00: a new day.
    net.set_wall(NOON_MS + 21 * HOUR_MS);
    commit(&mut net, "T-e", &f, yuan(10));
    assert_eq!(net.ledger(BEIJING).tables().wallet_usage[&f.son].transfers, 1);
}

#[test]
fn a_transfer_over_two_thousand_yuan_is_refused_and_exactly_two_thousand_is_not() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    let (credit, _) = net.client(
        BEIJING,
        ClientRequest::Credit {
            credit: exchange_core::CreditId::new("C-1").unwrap(),
            person: f.son,
            amount: yuan(5000),
        },
    );
    assert!(matches!(net.reply(credit), ClientReply::Credited { .. }));
    assert_refused_by_the_grantors_account(&mut net, "T-big", &f, fen(200_001), Refusal::TransferAmountLimit);
    commit(&mut net, "T-cap", &f, yuan(2000));
}

#[test]
fn no_transfer_in_the_quiet_hours_in_china_standard_time() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    // 22:30 in Beijing (14:30 UTC).
    net.set_wall(NOON_MS + 10 * HOUR_MS + HOUR_MS / 2);
    assert_refused_by_the_grantors_account(&mut net, "T-late", &f, yuan(10), Refusal::QuietHours);
    // 05:59 the next morning: still quiet; 06:00: open.
    net.set_wall(NOON_MS + 18 * HOUR_MS - 60_000);
    assert_refused_by_the_grantors_account(&mut net, "T-early", &f, yuan(10), Refusal::QuietHours);
    net.set_wall(NOON_MS + 18 * HOUR_MS);
    commit(&mut net, "T-six", &f, yuan(10));
}

#[test]
fn a_frozen_grantor_an_empty_account_a_revoked_or_proxy_binding_are_refused() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    assert_refused_by_the_grantors_account(&mut net, "T-poor", &f, yuan(1001), Refusal::InsufficientBalance);

    let (r, _) = net.client(
        BEIJING,
        ClientRequest::Freeze {
            person: f.son,
            reason: "card lost".into(),
        },
    );
    assert!(matches!(net.reply(r), ClientReply::Account(_)));
    assert_refused_by_the_grantors_account(&mut net, "T-frozen", &f, yuan(10), Refusal::AccountFrozen);
    let (r, _) = net.client(BEIJING, ClientRequest::Unfreeze { person: f.son });
    assert!(matches!(net.reply(r), ClientReply::Account(_)));

    // A proxy binding (亲情账户) never moves money.
    let father = adult(CHONGQING, 5);
    net.open(CHONGQING, father, Scheme::Employee, yuan(0));
    let proxy = net.bind(f.son, father, BindingKind::Proxy);
    let proxied = Family {
        son: f.son,
        mother: father,
        binding: proxy,
    };
    assert_refused_by_the_grantors_account(&mut net, "T-proxy", &proxied, yuan(10), Refusal::NotMutualAid);

    let (r, _) = net.client(BEIJING, ClientRequest::Unbind { binding: f.binding });
    assert!(matches!(net.reply(r), ClientReply::Unbound { .. }));
    net.deliver_all();
    assert_refused_by_the_grantors_account(&mut net, "T-revoked", &f, yuan(10), Refusal::BindingRevoked);
}

#[test]
fn requests_that_name_no_transfer_are_errors_and_change_nothing() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    let stranger = adult(BEIJING, 7);
    net.open(BEIJING, stranger, Scheme::Employee, yuan(100));
    let cases = [
        (f.son, f.binding, Money::ZERO, "zero_amount"),
        (stranger, f.binding, yuan(10), "grantor_mismatch"),
        (adult(BEIJING, 8), f.binding, yuan(10), "unknown_person"),
        (f.son, BindingId::new(p(BEIJING), 99), yuan(10), "unknown_binding"),
    ];
    for (index, (grantor, binding, amount, reason)) in cases.into_iter().enumerate() {
        let (reply, e) = net.transfer(&format!("T-bad-{index}"), grantor, binding, amount);
        assert!(e.writes.is_empty() && e.sends.is_empty(), "{e:?}");
        match net.reply(reply) {
            ClientReply::Error(error) => assert_eq!(error.reason, reason),
            other => panic!("{reason}: {other:?}"),
        }
    }
    assert!(net.ledger(BEIJING).tables().transfers.is_empty());
}

/// The grantor's node holds, the receiver refuses: the refused record, the receipt saying why,
/// and the abort that releases the hold ("the money returns").
fn assert_the_receiver_refuses_and_the_money_returns(net: &mut Net, f: &Family, id: &str, reason: Refusal) {
    let debit = leg(id, TRANSFER_DEBIT_INDEX, f.son);
    let credit = leg(id, TRANSFER_CREDIT_INDEX, f.mother);
    let son = net.account(BEIJING, &f.son);
    let receiver = net.account(CHONGQING, &f.mother);
    let now = net.now();
    let (reply, _) = net.transfer(id, f.son, f.binding, yuan(100));
    net.deliver_next(); // the debit prepare: held
    net.deliver_next(); // the yes vote: the receiver is asked
    assert_eq!(net.account(BEIJING, &f.son).held, yuan(100));
    let e = net.deliver_next();
    assert_eq!(
        e,
        effects(
            vec![Write::Fence {
                leg: credit.clone(),
                expected: None,
                new: Fence::Aborted { refusal: Some(reason) },
            }],
            vec![(
                p(BEIJING),
                PeerMessage::Vote {
                    leg: credit.clone(),
                    vote: Vote::No { reason },
                },
            )],
            vec![],
            vec![],
        )
    );
    let e = net.deliver_next();
    let receipt = net.receipt(reply);
    assert_eq!(
        receipt,
        TransferReceipt {
            transfer: tid(id),
            grantor: f.son,
            binding: f.binding,
            grantee: f.mother,
            grantee_province: p(CHONGQING),
            amount: yuan(100),
            status: TransferStatus::Refused,
            reason: Some(reason),
            grantor_available_after: None,
            decided_wall_ms: now.wall_ms,
        }
    );
    let record = net.ledger(BEIJING).tables().transfers[&tid(id)].clone();
    assert_eq!(
        record.legs.iter().map(|l| (l.amount, l.notify)).collect::<Vec<_>>(),
        vec![(Money::ZERO, true), (Money::ZERO, false)],
        "the debit leg is told to abort; the credit leg refused itself"
    );
    assert_eq!(
        e.writes,
        vec![
            Write::Transfer(record),
            Write::Outbox {
                key: OutboxKey::Transfer(tid(id)),
                live: true,
            },
        ]
    );
    assert_eq!(e.sends, vec![(p(BEIJING), PeerMessage::Abort { leg: debit.clone() })]);
    // The abort releases the hold and gives the day's transfer back.
    let e = net.deliver_next();
    assert_eq!(
        e.writes,
        vec![
            Write::WalletUsage(WalletUsage {
                person: f.son,
                day: now.date(),
                transfers: 0,
            }),
            Write::Account(son.clone()),
            Write::Fence {
                leg: debit.clone(),
                expected: Some(Fence::Prepared(Hold {
                    account: f.son,
                    binding: Some(f.binding),
                    patient: f.mother,
                    amount: yuan(100),
                    available_before: son.available(),
                    month: now.month(),
                    prepared_wall_ms: now.wall_ms,
                    hold_timeout_ms: net.config.hold_timeout_ms,
                })),
                new: Fence::Aborted { refusal: None },
            },
            Write::LiveHold {
                leg: debit.clone(),
                live: false,
            },
        ]
    );
    net.deliver_all();
    assert_eq!(net.account(BEIJING, &f.son), son, "the money returned");
    assert_eq!(net.account(CHONGQING, &f.mother), receiver);
    assert!(net.ledger(BEIJING).tables().outbox.is_empty());
    assert!(net.ledger(BEIJING).tables().live_holds.is_empty());
}

#[test]
fn a_receiving_province_that_does_not_accept_transfers_refuses_and_the_money_returns() {
    let mut policy = Policy::default();
    policy.wallet.accept_wallet_transfers = false;
    let mut net = Net::new(policy);
    let f = family(&mut net);
    assert_the_receiver_refuses_and_the_money_returns(&mut net, &f, "T-no", Refusal::TransfersNotAccepted);
}

#[test]
fn a_resident_relative_has_no_personal_account_to_receive_into() {
    let mut net = Net::new(Policy::default());
    let son = adult(BEIJING, 2);
    let mother = adult(CHONGQING, 1);
    net.open(CHONGQING, mother, Scheme::Resident, Money::ZERO);
    net.open(BEIJING, son, Scheme::Employee, yuan(1000));
    let binding = net.bind(son, mother, BindingKind::MutualAid);
    let f = Family { son, mother, binding };
    assert_the_receiver_refuses_and_the_money_returns(&mut net, &f, "T-res", Refusal::NoPersonalAccount);
}

#[test]
fn a_receiver_that_does_not_answer_times_out_and_the_money_returns() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    let son = net.account(BEIJING, &f.son);
    let debit = leg("T-slow", TRANSFER_DEBIT_INDEX, f.son);
    let credit = leg("T-slow", TRANSFER_CREDIT_INDEX, f.mother);
    let (reply, _) = net.transfer("T-slow", f.son, f.binding, yuan(100));
    net.deliver_next();
    net.deliver_next();
    assert!(
        matches!(net.lose_next(), PeerMessage::Prepare(_)),
        "the credit prepare is lost"
    );
    // The credit phase's deadline: a vote timeout after the request (no time has passed).
    net.advance_to(net.mono_ms + net.config.vote_timeout_ms - 1);
    assert!(!net.replies.contains_key(&reply));
    net.advance_to(net.mono_ms + 1);
    let receipt = net.receipt(reply);
    assert_eq!(
        (receipt.status, receipt.reason),
        (TransferStatus::Refused, Some(Refusal::Timeout))
    );
    let record = &net.ledger(BEIJING).tables().transfers[&tid("T-slow")];
    assert_eq!(
        record
            .legs
            .iter()
            .map(|l| (l.leg.clone(), l.amount, l.notify))
            .collect::<Vec<_>>(),
        vec![(debit, Money::ZERO, true), (credit.clone(), Money::ZERO, true)],
        "both legs are told to abort"
    );
    assert_eq!(net.account(BEIJING, &f.son), son, "the hold was released");
    // The receiver got the abort before any prepare: a late prepare is refused.
    assert_eq!(
        net.ledger(CHONGQING).tables().fences[&credit],
        Fence::Aborted { refusal: None }
    );
    net.network.push_back((
        p(BEIJING),
        p(CHONGQING),
        PeerMessage::Prepare(Prepare {
            leg: credit.clone(),
            binding: Some(f.binding),
            patient: f.mother,
            amount_max: yuan(100),
            hold_timeout_ms: net.config.hold_timeout_ms,
        }),
    ));
    let e = net.deliver_next();
    assert_eq!(
        e.sends,
        vec![(
            p(BEIJING),
            PeerMessage::Vote {
                leg: credit,
                vote: Vote::No {
                    reason: Refusal::AlreadyAborted,
                },
            },
        )]
    );
    assert!(e.writes.is_empty());
    net.deliver_all();
    assert!(net.ledger(BEIJING).tables().outbox.is_empty());
    assert_eq!(net.ledger(BEIJING).tables().wallet_usage[&f.son].transfers, 0);
}

#[test]
fn the_same_id_gets_the_same_receipt_and_another_request_under_it_an_error() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    let (first, _) = net.transfer("T-dup", f.son, f.binding, yuan(100));
    // While it is being decided: the same request joins, another one is refused.
    let (during, e) = net.transfer("T-dup", f.son, f.binding, yuan(100));
    assert_eq!(e, Effects::default());
    let (other_during, _) = net.transfer("T-dup", f.son, f.binding, yuan(101));
    net.deliver_all();
    let balances = (net.account(BEIJING, &f.son), net.account(CHONGQING, &f.mother));
    let (again, e) = net.transfer("T-dup", f.son, f.binding, yuan(100));
    assert_eq!(
        e,
        effects(
            vec![],
            vec![],
            vec![(again, ClientReply::Transferred(net.receipt(first)))],
            vec![]
        )
    );
    let (other, e) = net.transfer("T-dup", f.son, f.binding, yuan(200));
    assert!(e.writes.is_empty() && e.sends.is_empty());
    assert_eq!(net.receipt(first).status, TransferStatus::Committed);
    assert_eq!(net.reply(first), net.reply(during));
    for reply in [other_during, other] {
        match net.reply(reply) {
            ClientReply::Error(error) => assert_eq!(error.reason, "transfer_id_reused"),
            reply => panic!("{reply:?}"),
        }
    }
    assert_eq!(
        (net.account(BEIJING, &f.son), net.account(CHONGQING, &f.mother)),
        balances,
        "applied once"
    );
    assert_eq!(net.account(CHONGQING, &f.mother).balance, yuan(150));
}

#[test]
fn duplicated_and_reordered_decisions_and_votes_are_no_ops() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    let debit = leg("T-re", TRANSFER_DEBIT_INDEX, f.son);
    let credit = leg("T-re", TRANSFER_CREDIT_INDEX, f.mother);
    let (_reply, _) = net.transfer("T-re", f.son, f.binding, yuan(100));
    for _ in 0..4 {
        net.deliver_next(); // prepare, vote, prepare, vote: decided, commits queued
    }
    // The commits arrive in the opposite order, each twice.
    let commits: Vec<_> = net.network.drain(..).collect();
    assert_eq!(commits.len(), 2);
    for (from, to, message) in commits.iter().rev().chain(commits.iter().rev()) {
        net.step(
            *to,
            Input::Peer {
                from: *from,
                message: message.clone(),
            },
        );
    }
    let acks: Vec<_> = net.network.drain(..).collect();
    assert_eq!(acks.len(), 4, "every commit is acknowledged, duplicates too");
    assert_eq!(net.account(BEIJING, &f.son).balance, yuan(900));
    assert_eq!(net.account(CHONGQING, &f.mother).balance, yuan(150));
    let journaled = |net: &Net, code: u32| net.ledger(code).tables().journal.len();
    let journals = (journaled(&net, BEIJING), journaled(&net, CHONGQING));

    // Each of these, delivered now, changes nothing and writes nothing.
    let stale: Vec<(u32, u32, PeerMessage)> = vec![
        (
            BEIJING,
            BEIJING,
            PeerMessage::Commit {
                leg: debit.clone(),
                amount: yuan(100),
            },
        ),
        (
            BEIJING,
            CHONGQING,
            PeerMessage::Commit {
                leg: credit.clone(),
                amount: yuan(100),
            },
        ),
        // A prepare re-sent after the decision is answered with the outcome.
        (
            BEIJING,
            CHONGQING,
            PeerMessage::Prepare(Prepare {
                leg: credit.clone(),
                binding: Some(f.binding),
                patient: f.mother,
                amount_max: yuan(100),
                hold_timeout_ms: 10_000,
            }),
        ),
        // A late vote is answered from the record.
        (
            CHONGQING,
            BEIJING,
            PeerMessage::Vote {
                leg: credit.clone(),
                vote: Vote::Yes {
                    held: yuan(100),
                    available_before: Money::ZERO,
                },
            },
        ),
        // So is a query.
        (BEIJING, BEIJING, PeerMessage::Query { leg: debit.clone() }),
    ];
    for (from, to, message) in stale {
        let e = net.step(p(to), Input::Peer { from: p(from), message });
        assert!(e.writes.is_empty(), "{e:?}");
    }
    let answers: Vec<_> = net.network.drain(..).map(|(_, _, m)| m).collect();
    assert_eq!(
        answers,
        vec![
            PeerMessage::Ack {
                leg: debit.clone(),
                outcome: LegOutcome::Committed { amount: yuan(100) },
            },
            PeerMessage::Ack {
                leg: credit.clone(),
                outcome: LegOutcome::Committed { amount: yuan(100) },
            },
            PeerMessage::Ack {
                leg: credit.clone(),
                outcome: LegOutcome::Committed { amount: yuan(100) },
            },
            PeerMessage::Commit {
                leg: credit.clone(),
                amount: yuan(100),
            },
            PeerMessage::Commit {
                leg: debit.clone(),
                amount: yuan(100),
            },
        ]
    );
    assert!(net.violations().is_empty(), "{:?}", net.violations());
    // An abort of a committed leg breaks the protocol: reported, nothing changes.
    for (to, leg) in [(BEIJING, debit), (CHONGQING, credit)] {
        let e = net.step(
            p(to),
            Input::Peer {
                from: p(BEIJING),
                message: PeerMessage::Abort { leg },
            },
        );
        assert!(e.writes.is_empty());
    }
    assert_eq!(net.violations().len(), 2);
    for (from, to, message) in acks {
        net.step(to, Input::Peer { from, message });
    }
    assert!(net.ledger(BEIJING).tables().outbox.is_empty());
    assert_eq!(
        (journaled(&net, BEIJING), journaled(&net, CHONGQING)),
        journals,
        "nothing journaled twice"
    );
    assert_eq!(net.account(BEIJING, &f.son).balance, yuan(900));
    assert_eq!(net.account(CHONGQING, &f.mother).balance, yuan(150));
}

#[test]
fn a_grantors_node_that_restarts_before_deciding_presumes_abort_and_the_hold_returns() {
    let mut net = Net::new(Policy::default());
    let f = family(&mut net);
    let son = net.account(BEIJING, &f.son);
    let debit = leg("T-crash", TRANSFER_DEBIT_INDEX, f.son);
    let (_reply, _) = net.transfer("T-crash", f.son, f.binding, yuan(100));
    net.deliver_next(); // held
    net.network.clear(); // the vote is lost with the crash
    net.timers
        .retain(|(_, _, kind)| matches!(kind, TimerKind::HoldDeadline(_)));
    // A new incarnation: the transfer in flight is forgotten, the live hold recovers.
    let config = net.config.clone();
    let now = net.now();
    let (node, ledger) = net.nodes.get_mut(&p(BEIJING)).unwrap();
    *node = NodeCore::new(p(BEIJING), Policy::default(), config, 2);
    let live: Vec<LegId> = ledger.tables().live_holds.iter().cloned().collect();
    let outbox: Vec<OutboxKey> = ledger.tables().outbox.iter().cloned().collect();
    assert_eq!(live, vec![debit.clone()]);
    let e = node.recover(ledger, &live, &outbox, now).unwrap();
    for timer in e.timers {
        net.timers.push((p(BEIJING), timer.at_mono_ms, timer.kind));
    }
    net.advance_to(net.mono_ms + net.config.hold_timeout_ms);
    // The hold asked, was answered abort with nothing written, and released.
    assert_eq!(net.account(BEIJING, &f.son), son);
    assert!(
        net.ledger(BEIJING).tables().transfers.is_empty(),
        "no record: presumed abort"
    );
    assert_eq!(
        net.ledger(BEIJING).tables().fences[&debit],
        Fence::Aborted { refusal: None }
    );
    // The bureau retries the same id: a new attempt, which commits.
    let (reply, _) = net.transfer("T-crash", f.son, f.binding, yuan(100));
    net.deliver_all();
    assert_eq!(net.receipt(reply).status, TransferStatus::Committed);
    assert_eq!(net.account(BEIJING, &f.son).balance, yuan(900));
    assert_eq!(net.account(CHONGQING, &f.mother).balance, yuan(150));
    assert_eq!(net.ledger(BEIJING).tables().wallet_usage[&f.son].transfers, 1);
}

#[test]
fn a_transfer_within_one_province_commits_and_stays_out_of_clearing() {
    let mut net = Net::new(Policy::default());
    let son = adult(BEIJING, 2);
    let wife = adult(BEIJING, 3);
    net.open(BEIJING, son, Scheme::Employee, yuan(1000));
    net.open(BEIJING, wife, Scheme::Employee, yuan(10));
    let binding = net.bind_in(son, wife, p(BEIJING), BindingKind::MutualAid);
    let (reply, _) = net.transfer("T-home", son, binding, yuan(200));
    net.deliver_all();
    assert_eq!(net.receipt(reply).status, TransferStatus::Committed);
    assert_eq!(net.account(BEIJING, &son).balance, yuan(800));
    assert_eq!(net.account(BEIJING, &wife).balance, yuan(210));
    let journal: Vec<JournalEntry> = net
        .ledger(BEIJING)
        .tables()
        .journal
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert!(
        positions(p(BEIJING), &journal).is_empty(),
        "nothing owed across provinces"
    );
    assert!(journal.iter().all(|e| e.kind != JournalKind::TransferSent));
    assert!(net.ledger(BEIJING).tables().outbox.is_empty());
    assert!(net.violations().is_empty(), "{:?}", net.violations());
}
