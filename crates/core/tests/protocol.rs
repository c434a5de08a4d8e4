//! Protocol tests: exact commands per event (as openraft's engine tests), every anomaly of the
//! two-phase deduction, and whole settlements across an in-memory cluster.

use std::collections::{BTreeMap, VecDeque};

use exchange_core::binding::{BindRequest, DocumentKind, Evidence, Limits, Relation};
use exchange_core::config::ProtocolConfig;
use exchange_core::effects::{Effects, Note, TimerKind};
use exchange_core::ids::{LegId, LegScope, RefundId, SettlementId};
use exchange_core::ledger::Write;
use exchange_core::mem::MemLedger;
use exchange_core::message::{ClientReply, ClientRequest, LegOutcome, PeerMessage, Prepare, Vote};
use exchange_core::node::{Input, NodeCore};
use exchange_core::participant::LEG_INDEX_MAX;
use exchange_core::records::{Fence, JournalKind, Receipt, RefundRequest, SettleRequest};
use exchange_core::{BindingId, BindingKind, Money, Now, PersonId, Policy, Province, Refusal, Region, Scheme};

const BEIJING: u32 = 110000;
const CHONGQING: u32 = 500000;
const SICHUAN: u32 = 510000;
/// 2026-11-22 12:00 in Beijing.
const WALL_MS: i64 = 1_795_320_000_000;

fn p(code: u32) -> Province {
    Province::from_code(code).unwrap()
}

fn yuan(value: u64) -> Money {
    Money::from_yuan(value).unwrap()
}

fn adult(code: u32, sequence: u32) -> PersonId {
    PersonId::from_body(&format!("{code:06}19700101{sequence:03}")).unwrap()
}

/// A small in-memory cluster: each node applies its writes at once and its messages are
/// queued; tests deliver them one by one or all at once.
struct Cluster {
    nodes: BTreeMap<Province, (NodeCore, MemLedger)>,
    network: VecDeque<(Province, Province, PeerMessage)>,
    replies: BTreeMap<u64, ClientReply>,
    timers: Vec<(Province, u64, TimerKind)>,
    notes: Vec<Note>,
    mono_ms: u64,
    next_reply: u64,
    config: ProtocolConfig,
}

impl Cluster {
    fn new(codes: &[u32]) -> Cluster {
        let config = ProtocolConfig::default();
        let nodes = codes
            .iter()
            .map(|&code| {
                (
                    p(code),
                    (
                        NodeCore::new(p(code), Policy::default(), config.clone(), 1),
                        MemLedger::new(),
                    ),
                )
            })
            .collect();
        Cluster {
            nodes,
            network: VecDeque::new(),
            replies: BTreeMap::new(),
            timers: Vec::new(),
            notes: Vec::new(),
            mono_ms: 1_000,
            next_reply: 0,
            config,
        }
    }

    fn now(&self) -> Now {
        Now::new(
            self.mono_ms,
            WALL_MS.saturating_add(i64::try_from(self.mono_ms).unwrap()),
        )
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

    fn client(&mut self, code: u32, request: ClientRequest) -> u64 {
        self.next_reply += 1;
        let reply_to = self.next_reply;
        self.step(p(code), Input::Client { reply_to, request });
        reply_to
    }

    /// Delivers queued messages (FIFO) until none is left.
    fn deliver_all(&mut self) {
        let mut steps = 0;
        while let Some((from, to, message)) = self.network.pop_front() {
            self.step(to, Input::Peer { from, message });
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

    fn account(&self, code: u32, person: &PersonId) -> exchange_core::Account {
        self.ledger(code).tables().accounts[person].clone()
    }

    fn open(&mut self, code: u32, person: PersonId, scheme: Scheme, balance: Money) {
        let reply = self.client(
            code,
            ClientRequest::OpenAccount {
                person,
                name: "Test".into(),
                scheme,
                balance,
            },
        );
        assert!(
            matches!(self.reply(reply), ClientReply::Account(_)),
            "{:?}",
            self.reply(reply)
        );
    }

    fn bind(&mut self, grantor_code: u32, grantor: PersonId, grantee: PersonId, limits: Limits) -> BindingId {
        let reply = self.client(
            grantor_code,
            ClientRequest::Bind(BindRequest {
                grantor,
                grantee,
                grantee_province: p(CHONGQING),
                relation: Relation::Parent,
                kind: BindingKind::MutualAid,
                limits,
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

    fn settle(&mut self, id: &str, patient: PersonId, self_pay: Money) -> u64 {
        self.client(CHONGQING, ClientRequest::Settle(settle_request(id, patient, self_pay)))
    }

    fn sum_balances(&self) -> Money {
        Money::sum(
            self.nodes
                .values()
                .flat_map(|(_, l)| l.tables().accounts.values().map(|a| a.balance)),
        )
        .unwrap()
    }

    fn live_holds(&self) -> usize {
        self.nodes.values().map(|(_, l)| l.tables().live_holds.len()).sum()
    }
}

fn settle_request(id: &str, patient: PersonId, self_pay: Money) -> SettleRequest {
    SettleRequest {
        settlement: SettlementId::new(id).unwrap(),
        patient,
        total_fee: self_pay.checked_add(yuan(1000)).unwrap(),
        fund_paid: yuan(1000),
        self_pay,
        institution: "H50010001".into(),
        treatment_region: Region::from_code(500100).unwrap(),
        insured_region: Region::from_code(CHONGQING).unwrap(),
    }
}

/// The scripted family: a Chongqing grandmother, her son in Beijing, her daughter in Sichuan.
struct Family {
    grandmother: PersonId,
    son: PersonId,
    daughter: PersonId,
    son_binding: BindingId,
    daughter_binding: BindingId,
}

fn family(cluster: &mut Cluster, son_limits: Limits) -> Family {
    let grandmother = adult(CHONGQING, 1);
    let son = adult(BEIJING, 2);
    let daughter = adult(SICHUAN, 3);
    cluster.open(CHONGQING, grandmother, Scheme::Employee, yuan(50));
    cluster.open(BEIJING, son, Scheme::Employee, yuan(1000));
    cluster.open(SICHUAN, daughter, Scheme::Employee, yuan(800));
    let son_binding = cluster.bind(BEIJING, son, grandmother, son_limits);
    cluster.advance_to(cluster.mono_ms + 1);
    let daughter_binding = cluster.bind(SICHUAN, daughter, grandmother, Limits::default());
    Family {
        grandmother,
        son,
        daughter,
        son_binding,
        daughter_binding,
    }
}

fn receipt(reply: &ClientReply) -> &Receipt {
    match reply {
        ClientReply::Settled(receipt) => receipt,
        other => panic!("expected a receipt, got {other:?}"),
    }
}

#[test]
fn cross_province_settlement_with_two_grantors_pays_in_order() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(
        &mut cluster,
        Limits {
            per_settlement: Some(yuan(300)),
            monthly: None,
        },
    );
    let before = cluster.sum_balances();
    let reply = cluster.settle("S-1", f.grandmother, yuan(500));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!(r.own_account_paid, yuan(50));
    assert_eq!(r.mutual_aid.len(), 2);
    assert_eq!(
        (r.mutual_aid[0].binding, r.mutual_aid[0].amount),
        (f.son_binding, yuan(300)),
        "son first, capped by his limit"
    );
    assert_eq!(
        (r.mutual_aid[1].binding, r.mutual_aid[1].amount),
        (f.daughter_binding, yuan(150))
    );
    assert_eq!(r.cash_paid, Money::ZERO);
    assert_eq!(r.own_balance_after, Some(Money::ZERO));
    assert_eq!(r.mutual_aid[0].balance_after, yuan(700));
    assert_eq!(cluster.account(CHONGQING, &f.grandmother).balance, Money::ZERO);
    assert_eq!(cluster.account(BEIJING, &f.son).balance, yuan(700));
    assert_eq!(cluster.account(SICHUAN, &f.daughter).balance, yuan(650));
    assert_eq!(
        cluster.account(SICHUAN, &f.daughter).held,
        Money::ZERO,
        "the over-hold was released"
    );
    assert_eq!(cluster.sum_balances(), before.checked_sub(yuan(500)).unwrap());
    assert_eq!(cluster.live_holds(), 0);
    // Clearing: Chongqing's claims equal what Beijing and Sichuan debited for it.
    let claims: Vec<_> = cluster
        .ledger(CHONGQING)
        .tables()
        .journal
        .iter()
        .filter(|(_, e)| e.kind == JournalKind::MutualAidReceived)
        .map(|(_, e)| (e.counterparty.unwrap(), e.amount))
        .collect();
    assert_eq!(claims, vec![(p(BEIJING), yuan(300)), (p(SICHUAN), yuan(150))]);
    assert!(
        cluster
            .notes
            .iter()
            .all(|n| !matches!(n, Note::ProtocolViolation { .. }))
    );
    assert!(cluster.ledger(CHONGQING).tables().outbox.is_empty(), "all acks arrived");
}

#[test]
fn a_delivered_outbox_item_is_removed_by_the_next_decision_while_others_are_in_flight() {
    use exchange_core::records::OutboxKey;
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let outbox =
        |cluster: &Cluster| -> Vec<OutboxKey> { cluster.ledger(CHONGQING).tables().outbox.iter().cloned().collect() };
    // Nothing else in flight: the last ack removes the item at once.
    cluster.settle("S-ALONE", f.grandmother, yuan(100));
    cluster.deliver_all();
    assert!(outbox(&cluster).is_empty());
    // S-WAIT is in flight (its prepares held back) while S-DONE completes: S-DONE's item
    // stays in the store, its removal held for the next write set.
    cluster.settle("S-WAIT", f.grandmother, yuan(100));
    let held: Vec<_> = cluster.network.drain(..).collect();
    assert!(!held.is_empty());
    cluster.settle("S-DONE", f.grandmother, yuan(100));
    cluster.deliver_all();
    assert_eq!(
        outbox(&cluster),
        vec![OutboxKey::Settlement(SettlementId::new("S-DONE").unwrap())]
    );
    // S-WAIT's decision writes S-DONE's removal with its own record and outbox item.
    cluster.network.extend(held);
    let mut decision = None;
    while let Some((from, to, message)) = cluster.network.pop_front() {
        let effects = cluster.step(to, Input::Peer { from, message });
        if to == p(CHONGQING) && effects.writes.iter().any(|w| matches!(w, Write::Settlement(_))) {
            decision = Some(effects);
        }
    }
    let decision = decision.expect("S-WAIT was decided");
    assert!(decision.writes.iter().any(|w| matches!(
        w,
        Write::Outbox { key: OutboxKey::Settlement(id), live: false } if id.as_str() == "S-DONE"
    )));
    assert!(
        outbox(&cluster).is_empty(),
        "S-WAIT's own acks came with nothing else in flight"
    );
    assert_eq!(cluster.live_holds(), 0);
}

#[test]
fn duplicate_settle_returns_the_same_receipt_and_another_request_is_refused() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let first = cluster.settle("S-dup", f.grandmother, yuan(200));
    let during = cluster.settle("S-dup", f.grandmother, yuan(200));
    cluster.deliver_all();
    let balances = cluster.sum_balances();
    let again = cluster.settle("S-dup", f.grandmother, yuan(200));
    let other = cluster.settle("S-dup", f.grandmother, yuan(201));
    cluster.deliver_all();
    assert_eq!(cluster.reply(first), cluster.reply(again));
    assert_eq!(
        cluster.reply(first),
        cluster.reply(during),
        "a retry while deciding joins the first"
    );
    match cluster.reply(other) {
        ClientReply::Error(error) => assert_eq!(error.reason, "settlement_id_reused"),
        other => panic!("{other:?}"),
    }
    assert_eq!(cluster.sum_balances(), balances, "nothing changed");
}

#[test]
fn a_no_vote_replans_to_the_next_grantor_and_the_receipt_says_why() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let freeze = cluster.client(
        BEIJING,
        ClientRequest::Freeze {
            person: f.son,
            reason: "card lost".into(),
        },
    );
    assert!(matches!(cluster.reply(freeze), ClientReply::Account(a) if a.frozen));
    let reply = cluster.settle("S-frozen", f.grandmother, yuan(400));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply));
    assert_eq!(r.mutual_aid.len(), 1);
    assert_eq!(r.mutual_aid[0].grantor, f.daughter);
    assert_eq!(r.mutual_aid[0].amount, yuan(350));
    let son = r.not_paying.iter().find(|n| n.grantor == f.son).unwrap();
    assert_eq!(son.reason, Refusal::AccountFrozen);
    assert_eq!(
        cluster.account(BEIJING, &f.son).balance,
        yuan(1000),
        "a frozen account is not drawn on"
    );
    assert!(
        cluster
            .notes
            .iter()
            .any(|n| matches!(n, Note::SettlementDecided { replanned: true, .. }))
    );
}

#[test]
fn revocation_takes_effect_at_once_on_the_grantors_node_even_with_the_grantee_node_away() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let unbind = cluster.client(BEIJING, ClientRequest::Unbind { binding: f.son_binding });
    assert!(matches!(cluster.reply(unbind), ClientReply::Unbound { .. }));
    // The revocation notice to Chongqing is lost: Chongqing's copy still says active.
    cluster
        .network
        .retain(|(_, _, m)| !matches!(m, PeerMessage::Revoked { .. }));
    let reply = cluster.settle("S-revoked", f.grandmother, yuan(400));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply));
    assert_eq!(
        r.not_paying.iter().find(|n| n.grantor == f.son).unwrap().reason,
        Refusal::BindingRevoked
    );
    assert_eq!(cluster.account(BEIJING, &f.son).balance, yuan(1000));
    // The notice is re-sent until noted.
    cluster.advance_to(cluster.mono_ms + 10_000);
    assert!(cluster.ledger(BEIJING).tables().outbox.is_empty());
    let copy = &cluster.ledger(CHONGQING).tables().copies[&f.son_binding];
    assert!(matches!(copy.status, exchange_core::BindingStatus::Revoked { .. }));
}

#[test]
fn vote_timeout_aborts_the_missing_leg_and_cash_pays() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let reply = cluster.settle("S-timeout", f.grandmother, yuan(2000));
    // Sichuan is partitioned: its prepare is lost.
    cluster.network.retain(|(_, to, _)| *to != p(SICHUAN));
    cluster.deliver_all();
    assert!(
        !cluster.replies.contains_key(&reply),
        "still waiting for Sichuan's vote"
    );
    cluster.advance_to(cluster.mono_ms + cluster.config.vote_timeout_ms);
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!(r.own_account_paid, yuan(50));
    assert_eq!(r.mutual_aid.len(), 1);
    assert_eq!(r.mutual_aid[0].amount, yuan(1000));
    assert_eq!(r.cash_paid, yuan(950));
    assert_eq!(r.not_paying[0].reason, Refusal::Timeout);
    // The abort overtook the lost prepare: Sichuan wrote an empty-rollback fence.
    let leg = LegId {
        coordinator: p(CHONGQING),
        scope: LegScope::Pay {
            settlement: SettlementId::new("S-timeout").unwrap(),
            attempt: 1,
        },
        index: 2,
        account: f.daughter,
    };
    assert_eq!(
        cluster.ledger(SICHUAN).tables().fences.get(&leg),
        Some(&Fence::Aborted { refusal: None })
    );
    // The late prepare (hanging) is refused by the fence and holds nothing.
    let late = Prepare {
        leg,
        binding: Some(f.daughter_binding),
        patient: f.grandmother,
        amount_max: yuan(1950),
        hold_timeout_ms: 10_000,
    };
    let effects = cluster.step(
        p(SICHUAN),
        Input::Peer {
            from: p(CHONGQING),
            message: PeerMessage::Prepare(late),
        },
    );
    assert!(effects.writes.is_empty());
    assert!(matches!(
        effects.sends[0].1,
        PeerMessage::Vote {
            vote: Vote::No {
                reason: Refusal::AlreadyAborted
            },
            ..
        }
    ));
    assert_eq!(cluster.account(SICHUAN, &f.daughter).held, Money::ZERO);
}

#[test]
fn participant_holding_past_its_deadline_asks_and_a_restarted_coordinator_presumes_abort() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let reply = cluster.settle("S-crash", f.grandmother, yuan(500));
    // Deliver the prepares, but lose every vote: the coordinator crashes before deciding.
    while let Some((from, to, message)) = cluster.network.pop_front() {
        if !matches!(message, PeerMessage::Vote { .. }) {
            cluster.step(to, Input::Peer { from, message });
        }
    }
    assert_eq!(cluster.live_holds(), 3, "own leg and both grantors hold");
    let now = cluster.now();
    let (node, ledger) = cluster.nodes.get_mut(&p(CHONGQING)).unwrap();
    *node = NodeCore::new(p(CHONGQING), Policy::default(), ProtocolConfig::default(), 2);
    let live: Vec<LegId> = ledger.tables().live_holds.iter().cloned().collect();
    let outbox: Vec<_> = ledger.tables().outbox.iter().cloned().collect();
    let effects = node.recover(ledger, &live, &outbox, now).unwrap();
    assert_eq!(effects.timers.len(), 1, "the local own-account hold asks soon");
    cluster.timers.retain(|(at, _, _)| *at != p(CHONGQING));
    for timer in effects.timers {
        cluster.timers.push((p(CHONGQING), timer.at_mono_ms, timer.kind));
    }
    cluster
        .timers
        .retain(|(_, _, k)| !matches!(k, TimerKind::VoteDeadline { .. }));
    assert!(!cluster.replies.contains_key(&reply));
    let before = cluster.sum_balances();
    cluster.advance_to(cluster.mono_ms + cluster.config.hold_timeout_ms + 1);
    assert_eq!(cluster.live_holds(), 0, "every hold resolved by asking");
    assert_eq!(cluster.sum_balances(), before, "presumed abort: nothing debited");
    // The hospital retries with the same id after the restart: a fresh attempt succeeds.
    let retry = cluster.settle("S-crash", f.grandmother, yuan(500));
    cluster.deliver_all();
    let r = receipt(cluster.reply(retry));
    assert_eq!(r.cash_paid, Money::ZERO);
    assert_eq!(cluster.sum_balances(), before.checked_sub(yuan(500)).unwrap());
}

#[test]
fn a_lost_commit_is_recovered_by_the_participants_query() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let reply = cluster.settle("S-lost-commit", f.grandmother, yuan(500));
    while let Some((from, to, message)) = cluster.network.pop_front() {
        if !matches!(message, PeerMessage::Commit { .. } if to == p(BEIJING)) {
            cluster.step(to, Input::Peer { from, message });
        }
    }
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!(cluster.account(BEIJING, &f.son).held, yuan(450), "Beijing still holds");
    // Resends stop being lost; meanwhile Beijing's deadline query also gets the answer.
    cluster.timers.retain(|(_, _, k)| !matches!(k, TimerKind::Resend(_)));
    cluster.advance_to(cluster.mono_ms + cluster.config.hold_timeout_ms);
    assert_eq!(cluster.account(BEIJING, &f.son).held, Money::ZERO);
    assert_eq!(
        cluster.account(BEIJING, &f.son).balance,
        yuan(1000).checked_sub(r.mutual_aid[0].amount).unwrap()
    );
}

#[test]
fn refunds_credit_back_grantors_first_exactly_once_and_never_exceed_what_was_paid() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(
        &mut cluster,
        Limits {
            per_settlement: Some(yuan(300)),
            monthly: None,
        },
    );
    let reply = cluster.settle("S-refund", f.grandmother, yuan(2000));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!((r.own_account_paid, r.cash_paid), (yuan(50), yuan(850)));
    let refund = |id: &str, amount: Option<u64>| {
        ClientRequest::Refund(RefundRequest {
            refund: RefundId::new(id).unwrap(),
            settlement: SettlementId::new("S-refund").unwrap(),
            amount: amount.map(yuan),
        })
    };
    let first = cluster.client(CHONGQING, refund("R-1", Some(900)));
    cluster.deliver_all();
    let ClientReply::Refunded(receipt1) = cluster.reply(first).clone() else {
        panic!()
    };
    // Last payer first: Sichuan paid last (800), then Beijing (300) gets the remaining 100.
    assert_eq!(receipt1.parts.len(), 2);
    assert_eq!(
        (receipt1.parts[0].account, receipt1.parts[0].amount),
        (f.daughter, yuan(800))
    );
    assert_eq!(
        (receipt1.parts[1].account, receipt1.parts[1].amount),
        (f.son, yuan(100))
    );
    assert_eq!(cluster.account(SICHUAN, &f.daughter).balance, yuan(800));
    // The same refund again: same receipt, credited once.
    let again = cluster.client(CHONGQING, refund("R-1", Some(900)));
    cluster.deliver_all();
    assert_eq!(cluster.reply(again), cluster.reply(first));
    assert_eq!(cluster.account(SICHUAN, &f.daughter).balance, yuan(800));
    // More than what is left is refused; the rest is refunded in full.
    let too_much = cluster.client(CHONGQING, refund("R-2", Some(1101)));
    assert!(matches!(cluster.reply(too_much), ClientReply::Error(e) if e.reason == "refund_exceeds_paid"));
    let rest = cluster.client(CHONGQING, refund("R-3", None));
    cluster.deliver_all();
    let ClientReply::Refunded(receipt3) = cluster.reply(rest).clone() else {
        panic!()
    };
    assert_eq!(receipt3.amount, yuan(1100));
    assert_eq!(receipt3.cash, yuan(850));
    assert_eq!(cluster.account(BEIJING, &f.son).balance, yuan(1000));
    assert_eq!(cluster.account(CHONGQING, &f.grandmother).balance, yuan(50));
    let done = cluster.client(CHONGQING, refund("R-4", None));
    assert!(matches!(cluster.reply(done), ClientReply::Error(e) if e.reason == "already_refunded"));
    assert!(cluster.ledger(CHONGQING).tables().outbox.is_empty());
}

// --- exact commands for single events on one participant --------------------------------------

fn participant_with_binding(limits: Limits) -> (NodeCore, MemLedger, PersonId, PersonId, BindingId) {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING]);
    let grantor = grantor_id();
    let grantee = adult(CHONGQING, 1);
    cluster.open(BEIJING, grantor, Scheme::Employee, yuan(100));
    cluster.open(CHONGQING, grantee, Scheme::Resident, Money::ZERO);
    let binding = cluster.bind(BEIJING, grantor, grantee, limits);
    let (node, ledger) = cluster.nodes.remove(&p(BEIJING)).unwrap();
    (node, ledger, grantor, grantee, binding)
}

/// The grantor of `participant_with_binding`.
fn grantor_id() -> PersonId {
    adult(BEIJING, 2)
}

fn leg(index: u16) -> LegId {
    leg_in("S-x", index)
}

/// A leg of settlement `settlement` on the grantor of `participant_with_binding`.
fn leg_in(settlement: &str, index: u16) -> LegId {
    LegId {
        coordinator: p(CHONGQING),
        scope: LegScope::Pay {
            settlement: SettlementId::new(settlement).unwrap(),
            attempt: 1,
        },
        index,
        account: grantor_id(),
    }
}

fn prepare(grantor: PersonId, grantee: PersonId, binding: BindingId, amount: Money) -> Prepare {
    assert_eq!(grantor, grantor_id());
    Prepare {
        leg: leg(0),
        binding: Some(binding),
        patient: grantee,
        amount_max: amount,
        hold_timeout_ms: 10_000,
    }
}

fn from_chongqing(message: PeerMessage) -> Input {
    Input::Peer {
        from: p(CHONGQING),
        message,
    }
}

#[test]
fn prepare_emits_exactly_the_hold_the_vote_and_the_deadline_timer() {
    let (mut node, mut ledger, grantor, grantee, binding) = participant_with_binding(Limits::default());
    let now = Now::new(5_000, WALL_MS);
    let effects = node
        .handle(
            &ledger,
            from_chongqing(PeerMessage::Prepare(prepare(grantor, grantee, binding, yuan(30)))),
            now,
        )
        .unwrap();
    assert_eq!(effects.writes.len(), 4);
    assert!(matches!(&effects.writes[0], Write::Binding(b) if b.usage_in_month == yuan(30)));
    assert!(matches!(&effects.writes[1], Write::Account(a) if a.held == yuan(30) && a.balance == yuan(100)));
    assert!(
        matches!(&effects.writes[2], Write::Fence { expected: None, new: Fence::Prepared(h), .. } if h.amount == yuan(30))
    );
    assert_eq!(
        effects.writes[3],
        Write::LiveHold {
            leg: leg(0),
            live: true
        }
    );
    assert_eq!(
        effects.sends,
        vec![(
            p(CHONGQING),
            PeerMessage::Vote {
                leg: leg(0),
                vote: Vote::Yes {
                    held: yuan(30),
                    available_before: yuan(100)
                }
            }
        )]
    );
    assert_eq!(effects.timers.len(), 1);
    assert_eq!(
        effects.timers[0].at_mono_ms, 15_000,
        "deadline measured from this node's receipt"
    );
    assert!(effects.replies.is_empty());
    ledger.apply(&effects.writes).unwrap();
    // Duplicate prepare: the same vote, nothing written.
    let again = node
        .handle(
            &ledger,
            from_chongqing(PeerMessage::Prepare(prepare(grantor, grantee, binding, yuan(30)))),
            now,
        )
        .unwrap();
    assert!(again.writes.is_empty());
    assert_eq!(again.sends, effects.sends);
    // Commit less than held: debit 20, release the rest, journal once.
    let commit = node
        .handle(
            &ledger,
            from_chongqing(PeerMessage::Commit {
                leg: leg(0),
                amount: yuan(20),
            }),
            now,
        )
        .unwrap();
    ledger.apply(&commit.writes).unwrap();
    let account = &ledger.tables().accounts[&grantor];
    assert_eq!((account.balance, account.held), (yuan(80), Money::ZERO));
    assert_eq!(ledger.tables().bindings[&binding].usage_in_month, yuan(20));
    assert_eq!(
        commit.sends,
        vec![(
            p(CHONGQING),
            PeerMessage::Ack {
                leg: leg(0),
                outcome: LegOutcome::Committed { amount: yuan(20) }
            }
        )]
    );
    // Duplicate commit and a stray abort: no writes, the same truthful answer.
    let dup = node
        .handle(
            &ledger,
            from_chongqing(PeerMessage::Commit {
                leg: leg(0),
                amount: yuan(20),
            }),
            now,
        )
        .unwrap();
    assert!(dup.writes.is_empty());
    assert_eq!(dup.sends, commit.sends);
    let stray = node
        .handle(&ledger, from_chongqing(PeerMessage::Abort { leg: leg(0) }), now)
        .unwrap();
    assert!(stray.writes.is_empty());
    assert!(stray.notes.iter().any(|n| matches!(n, Note::ProtocolViolation { .. })));
    assert_eq!(
        ledger
            .tables()
            .journal
            .iter()
            .filter(|(_, e)| e.kind == JournalKind::Debit)
            .count(),
        1
    );
}

#[test]
fn abort_before_prepare_leaves_a_fence_that_refuses_the_late_prepare() {
    let (mut node, mut ledger, grantor, grantee, binding) = participant_with_binding(Limits::default());
    let now = Now::new(5_000, WALL_MS);
    let abort = node
        .handle(&ledger, from_chongqing(PeerMessage::Abort { leg: leg(0) }), now)
        .unwrap();
    assert_eq!(
        abort.writes,
        vec![Write::Fence {
            leg: leg(0),
            expected: None,
            new: Fence::Aborted { refusal: None }
        }]
    );
    assert_eq!(
        abort.sends,
        vec![(
            p(CHONGQING),
            PeerMessage::Ack {
                leg: leg(0),
                outcome: LegOutcome::Aborted
            }
        )]
    );
    ledger.apply(&abort.writes).unwrap();
    let late = node
        .handle(
            &ledger,
            from_chongqing(PeerMessage::Prepare(prepare(grantor, grantee, binding, yuan(30)))),
            now,
        )
        .unwrap();
    assert!(late.writes.is_empty());
    assert_eq!(
        late.sends,
        vec![(
            p(CHONGQING),
            PeerMessage::Vote {
                leg: leg(0),
                vote: Vote::No {
                    reason: Refusal::AlreadyAborted
                }
            }
        )]
    );
    // A commit of the aborted leg is a violation and changes nothing.
    let bad = node
        .handle(
            &ledger,
            from_chongqing(PeerMessage::Commit {
                leg: leg(0),
                amount: yuan(1),
            }),
            now,
        )
        .unwrap();
    assert!(bad.writes.is_empty());
    assert!(bad.notes.iter().any(|n| matches!(n, Note::ProtocolViolation { .. })));
}

#[test]
fn prepares_are_refused_for_foreign_coordinators_limits_and_frozen_accounts() {
    let (mut node, mut ledger, grantor, grantee, binding) = participant_with_binding(Limits {
        per_settlement: Some(yuan(10)),
        monthly: Some(yuan(15)),
    });
    let now = Now::new(5_000, WALL_MS);
    // Sichuan may not prepare a leg that names Chongqing as its coordinator, nor coordinate
    // for a Chongqing grantee.
    let foreign = node
        .handle(
            &ledger,
            Input::Peer {
                from: p(SICHUAN),
                message: PeerMessage::Prepare(prepare(grantor, grantee, binding, yuan(5))),
            },
            now,
        )
        .unwrap();
    assert!(foreign.writes.is_empty());
    assert!(matches!(
        foreign.sends[0].1,
        PeerMessage::Vote {
            vote: Vote::No {
                reason: Refusal::NotAuthorized
            },
            ..
        }
    ));
    // Limits: per settlement 10, then the month has 5 left for another settlement.
    let first = node
        .handle(
            &ledger,
            from_chongqing(PeerMessage::Prepare(prepare(grantor, grantee, binding, yuan(50)))),
            now,
        )
        .unwrap();
    assert!(matches!(first.sends[0].1, PeerMessage::Vote { vote: Vote::Yes { held, .. }, .. } if held == yuan(10)));
    ledger.apply(&first.writes).unwrap();
    let mut second = prepare(grantor, grantee, binding, yuan(50));
    second.leg = leg_in("S-x2", 1);
    let effects = node
        .handle(&ledger, from_chongqing(PeerMessage::Prepare(second.clone())), now)
        .unwrap();
    assert!(matches!(effects.sends[0].1, PeerMessage::Vote { vote: Vote::Yes { held, .. }, .. } if held == yuan(5)));
    ledger.apply(&effects.writes).unwrap();
    let mut third = second.clone();
    third.leg = leg_in("S-x3", 1);
    let effects = node
        .handle(&ledger, from_chongqing(PeerMessage::Prepare(third)), now)
        .unwrap();
    assert!(matches!(
        effects.sends[0].1,
        PeerMessage::Vote {
            vote: Vote::No {
                reason: Refusal::LimitReached
            },
            ..
        }
    ));
    // Freeze: the next prepare is refused, whoever asks.
    let freeze = node
        .handle(
            &ledger,
            Input::Client {
                reply_to: 1,
                request: ClientRequest::Freeze {
                    person: grantor,
                    reason: "lost".into(),
                },
            },
            now,
        )
        .unwrap();
    ledger.apply(&freeze.writes).unwrap();
    let mut fourth = second;
    fourth.leg = leg_in("S-x4", 1);
    let effects = node
        .handle(&ledger, from_chongqing(PeerMessage::Prepare(fourth)), now)
        .unwrap();
    assert!(matches!(
        effects.sends[0].1,
        PeerMessage::Vote {
            vote: Vote::No {
                reason: Refusal::AccountFrozen
            },
            ..
        }
    ));
}

#[test]
fn unknown_settlement_queries_are_answered_abort() {
    let mut node = NodeCore::new(p(CHONGQING), Policy::default(), ProtocolConfig::default(), 3);
    let ledger = MemLedger::new();
    let effects = node
        .handle(
            &ledger,
            Input::Peer {
                from: p(BEIJING),
                message: PeerMessage::Query { leg: leg(7) },
            },
            Now::new(1, WALL_MS),
        )
        .unwrap();
    assert!(effects.writes.is_empty());
    assert_eq!(effects.sends, vec![(p(BEIJING), PeerMessage::Abort { leg: leg(7) })]);
}

#[test]
fn settle_sends_prepares_in_parallel_and_arms_the_vote_deadline() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let now = cluster.now();
    let (node, ledger) = cluster.nodes.get_mut(&p(CHONGQING)).unwrap();
    let request = ClientRequest::Settle(settle_request("S-cmd", f.grandmother, yuan(500)));
    let effects = node
        .handle(ledger, Input::Client { reply_to: 9, request }, now)
        .unwrap();
    assert!(
        effects.writes.is_empty(),
        "presumed abort: nothing is written before the decision"
    );
    assert!(effects.replies.is_empty());
    let targets: Vec<(Province, Money)> = effects
        .sends
        .iter()
        .map(|(to, m)| match m {
            PeerMessage::Prepare(prepare) => (*to, prepare.amount_max),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        targets,
        vec![
            (p(CHONGQING), yuan(500)),
            (p(BEIJING), yuan(450)),
            (p(SICHUAN), yuan(450))
        ]
    );
    assert_eq!(effects.timers.len(), 1);
    assert_eq!(effects.timers[0].at_mono_ms, now.mono_ms + 2_000);
    let _ = f.son;
    let _ = f.daughter_binding;
}

#[test]
fn a_refund_credit_that_overtakes_the_commit_waits_for_it() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let reply = cluster.settle("S-overtake", f.grandmother, yuan(500));
    // Deliver everything except the commits to Beijing: the hospital has its receipt.
    let mut held_back = Vec::new();
    while let Some((from, to, message)) = cluster.network.pop_front() {
        if matches!(message, PeerMessage::Commit { .. } if to == p(BEIJING)) {
            held_back.push((from, to, message));
        } else {
            cluster.step(to, Input::Peer { from, message });
        }
    }
    assert!(matches!(cluster.reply(reply), ClientReply::Settled(_)));
    let refund = cluster.client(
        CHONGQING,
        ClientRequest::Refund(RefundRequest {
            refund: RefundId::new("R-overtake").unwrap(),
            settlement: SettlementId::new("S-overtake").unwrap(),
            amount: None,
        }),
    );
    assert!(matches!(cluster.reply(refund), ClientReply::Refunded(_)));
    // The credit reaches Beijing first: no ack, no violation, nothing credited yet.
    let credit = cluster
        .network
        .iter()
        .position(|(_, to, m)| *to == p(BEIJING) && matches!(m, PeerMessage::Credit { .. }))
        .unwrap();
    let (from, to, message) = cluster.network.remove(credit).unwrap();
    let effects = cluster.step(to, Input::Peer { from, message });
    assert!(effects.writes.is_empty() && effects.sends.is_empty() && effects.notes.is_empty());
    // Then the commit lands, and the resent credit applies exactly once.
    for (from, to, message) in held_back {
        cluster.step(to, Input::Peer { from, message });
    }
    cluster.deliver_all();
    cluster.advance_to(cluster.mono_ms + 5_000);
    assert_eq!(cluster.account(BEIJING, &f.son).balance, yuan(1000));
    assert_eq!(cluster.account(SICHUAN, &f.daughter).balance, yuan(800));
    assert_eq!(cluster.account(CHONGQING, &f.grandmother).balance, yuan(50));
    assert!(cluster.ledger(CHONGQING).tables().outbox.is_empty());
    assert!(
        cluster
            .notes
            .iter()
            .all(|n| !matches!(n, Note::ProtocolViolation { .. }))
    );
}

#[test]
fn cancel_and_reverse_undo_a_settlement_once_and_refuse_what_they_cannot() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let before = cluster.sum_balances();
    let reply = cluster.settle("S-cancel", f.grandmother, yuan(600));
    cluster.deliver_all();
    assert!(matches!(cluster.reply(reply), ClientReply::Settled(_)));
    let settlement = SettlementId::new("S-cancel").unwrap();
    let cancel = cluster.client(
        CHONGQING,
        ClientRequest::Cancel {
            settlement: settlement.clone(),
        },
    );
    cluster.deliver_all();
    let ClientReply::Refunded(undone) = cluster.reply(cancel).clone() else {
        panic!("{:?}", cluster.reply(cancel))
    };
    assert_eq!(undone.amount, yuan(600));
    assert_eq!(cluster.sum_balances(), before, "everything is back");
    // A reversal of the same settlement is the same operation: same answer, applied once.
    let reverse = cluster.client(
        CHONGQING,
        ClientRequest::Reverse {
            message: settlement.clone(),
        },
    );
    cluster.deliver_all();
    assert_eq!(cluster.reply(reverse), &ClientReply::Refunded(undone));
    assert_eq!(cluster.sum_balances(), before);
    let unknown = cluster.client(
        CHONGQING,
        ClientRequest::Reverse {
            message: SettlementId::new("NEVER").unwrap(),
        },
    );
    assert!(matches!(cluster.reply(unknown), ClientReply::Error(e) if e.reason == "unknown_message"));
}

#[test]
fn the_family_sets_the_order_and_the_grantor_changes_limits() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let family_order = Policy {
        grantor_order: exchange_core::GrantorOrder::FamilyOrder,
        ..Policy::default()
    };
    cluster.nodes.get_mut(&p(CHONGQING)).unwrap().0 =
        NodeCore::new(p(CHONGQING), family_order, ProtocolConfig::default(), 1);
    let f = family(&mut cluster, Limits::default());
    // The daughter first, then the son.
    let order = cluster.client(
        CHONGQING,
        ClientRequest::SetOrder {
            grantee: f.grandmother,
            bindings: vec![f.daughter_binding, f.son_binding],
        },
    );
    assert!(matches!(cluster.reply(order), ClientReply::Ordered { .. }));
    let reply = cluster.settle("S-order", f.grandmother, yuan(300));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!(
        (r.mutual_aid[0].grantor, r.mutual_aid[0].amount),
        (f.daughter, yuan(250))
    );
    // The son limits what he pays per settlement; the daughter's card is lost.
    let limits = Limits {
        per_settlement: Some(yuan(100)),
        monthly: None,
    };
    let set = cluster.client(
        BEIJING,
        ClientRequest::SetLimits {
            binding: f.son_binding,
            limits,
        },
    );
    assert!(matches!(cluster.reply(set), ClientReply::LimitsSet { .. }));
    cluster.client(
        SICHUAN,
        ClientRequest::Freeze {
            person: f.daughter,
            reason: "lost".into(),
        },
    );
    let reply = cluster.settle("S-limits", f.grandmother, yuan(300));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!((r.mutual_aid[0].grantor, r.mutual_aid[0].amount), (f.son, yuan(100)));
    assert_eq!(r.cash_paid, yuan(200));
    // Refusals: a zero limit, an unknown binding, a binding that is not the grantee's.
    let zero = cluster.client(
        BEIJING,
        ClientRequest::SetLimits {
            binding: f.son_binding,
            limits: Limits {
                per_settlement: Some(Money::ZERO),
                monthly: None,
            },
        },
    );
    assert!(matches!(cluster.reply(zero), ClientReply::Error(e) if e.reason == "zero_limit"));
    let unknown = cluster.client(
        BEIJING,
        ClientRequest::SetLimits {
            binding: BindingId::new(p(BEIJING), 999),
            limits,
        },
    );
    assert!(matches!(cluster.reply(unknown), ClientReply::Error(e) if e.reason == "unknown_binding"));
    let stranger = adult(CHONGQING, 77);
    let wrong = cluster.client(
        CHONGQING,
        ClientRequest::SetOrder {
            grantee: stranger,
            bindings: vec![f.son_binding],
        },
    );
    assert!(matches!(cluster.reply(wrong), ClientReply::Error(e) if e.reason == "unknown_binding"));
    let twice = cluster.client(
        CHONGQING,
        ClientRequest::SetOrder {
            grantee: f.grandmother,
            bindings: vec![f.son_binding, f.son_binding],
        },
    );
    assert!(matches!(cluster.reply(twice), ClientReply::Error(e) if e.reason == "bad_order"));
}

#[test]
fn an_order_naming_some_grantors_puts_the_rest_after_them_and_a_refused_one_changes_nothing() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let family_order = Policy {
        grantor_order: exchange_core::GrantorOrder::FamilyOrder,
        ..Policy::default()
    };
    cluster.nodes.get_mut(&p(CHONGQING)).unwrap().0 =
        NodeCore::new(p(CHONGQING), family_order, ProtocolConfig::default(), 1);
    let f = family(&mut cluster, Limits::default());
    let order = |cluster: &mut Cluster, bindings: Vec<BindingId>| {
        let reply = cluster.client(
            CHONGQING,
            ClientRequest::SetOrder {
                grantee: f.grandmother,
                bindings,
            },
        );
        cluster.reply(reply).clone()
    };
    assert!(matches!(
        order(&mut cluster, vec![f.son_binding, f.daughter_binding]),
        ClientReply::Ordered { .. }
    ));
    // Only the daughter is named: she pays first, the son (not named) after her.
    assert!(matches!(
        order(&mut cluster, vec![f.daughter_binding]),
        ClientReply::Ordered { .. }
    ));
    let reply = cluster.settle("S-partial-order", f.grandmother, yuan(300));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!(
        (r.mutual_aid[0].grantor, r.mutual_aid[0].amount),
        (f.daughter, yuan(250))
    );
    // A list whose second binding is unknown is refused before anything is written: the
    // daughter still pays first.
    let refused = order(&mut cluster, vec![f.son_binding, BindingId::new(p(SICHUAN), 999)]);
    assert!(matches!(refused, ClientReply::Error(e) if e.reason == "unknown_binding"));
    let reply = cluster.settle("S-after-refused-order", f.grandmother, yuan(300));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!(
        (r.mutual_aid[0].grantor, r.mutual_aid[0].amount),
        (f.daughter, yuan(300))
    );
}

#[test]
fn grantors_not_asked_because_the_own_account_covers_the_bill_are_not_needed() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let reply = cluster.settle("S-own-covers", f.grandmother, yuan(30));
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!(r.own_account_paid, yuan(30));
    assert!(r.mutual_aid.is_empty());
    let reasons: Vec<Refusal> = r.not_paying.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, vec![Refusal::NotNeeded, Refusal::NotNeeded], "{r:?}");
}

/// A patient whose own leg fails after the coordinator planned on its balance, and one
/// grantor in Beijing with `limits`: round 1 asks the son for 50 (what the own account's
/// balance left), he holds all of it, the own leg is refused (frozen in between), so round 2
/// asks the son again for the 50 shortfall.
fn second_round_against(limits: Limits) -> (Cluster, PersonId, Receipt) {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING]);
    let grandmother = adult(CHONGQING, 1);
    let son = adult(BEIJING, 2);
    cluster.open(CHONGQING, grandmother, Scheme::Employee, yuan(50));
    cluster.open(BEIJING, son, Scheme::Employee, yuan(1000));
    cluster.bind(BEIJING, son, grandmother, limits);
    let reply = cluster.settle("S-rounds", grandmother, yuan(100));
    // The card is frozen after the coordinator read the balance, before the own leg's prepare.
    cluster.client(
        CHONGQING,
        ClientRequest::Freeze {
            person: grandmother,
            reason: "lost".into(),
        },
    );
    cluster.deliver_all();
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!(r.rounds, 2, "the shortfall asked the son a second time");
    assert_eq!(r.own_refusal, Some(Refusal::AccountFrozen));
    // A refused own account never told the coordinator its balance: the receipt says nothing.
    assert_eq!(r.own_balance_after, None);
    assert_eq!(cluster.live_holds(), 0);
    (cluster, son, r)
}

#[test]
fn a_second_round_never_takes_a_binding_past_its_per_settlement_limit() {
    let (cluster, son, r) = second_round_against(Limits {
        per_settlement: Some(yuan(60)),
        monthly: None,
    });
    // Round 1 held 50 of the 60; round 2 may hold only the 10 the limit has left, not 50.
    assert_eq!(r.mutual_aid.len(), 1);
    assert_eq!(r.mutual_aid[0].amount, yuan(60), "one settlement, one limit: {r:?}");
    assert_eq!(r.cash_paid, yuan(40));
    assert_eq!(cluster.account(BEIJING, &son).balance, yuan(940));
    let debited: Vec<Money> = cluster
        .ledger(BEIJING)
        .tables()
        .journal
        .iter()
        .filter(|(_, e)| e.kind == JournalKind::Debit)
        .map(|(_, e)| e.amount)
        .collect();
    assert_eq!(
        debited,
        vec![yuan(50), yuan(10)],
        "both legs commit, together at the limit"
    );
}

#[test]
fn a_second_round_counts_the_first_rounds_hold_against_the_monthly_limit() {
    let (cluster, son, r) = second_round_against(Limits {
        per_settlement: None,
        monthly: Some(yuan(70)),
    });
    assert_eq!(r.mutual_aid[0].amount, yuan(70), "{r:?}");
    assert_eq!(r.cash_paid, yuan(30));
    assert_eq!(cluster.account(BEIJING, &son).balance, yuan(930));
    let binding = cluster
        .ledger(BEIJING)
        .tables()
        .bindings
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(binding.usage_in_month, yuan(70));
}

#[test]
fn a_binding_at_its_per_settlement_limit_refuses_a_further_leg_of_the_same_settlement() {
    // Each leg alone is within the limit; together they are not. The participant counts
    // what the same settlement already holds or committed on the binding, whatever order
    // the messages came in, and a leg of another settlement starts from the full limit.
    let (mut node, mut ledger, grantor, grantee, binding) = participant_with_binding(Limits {
        per_settlement: Some(yuan(25)),
        monthly: None,
    });
    let now = Now::new(5_000, WALL_MS);
    let mut handle = |prepare: Prepare, ledger: &mut MemLedger| {
        let effects = node
            .handle(ledger, from_chongqing(PeerMessage::Prepare(prepare)), now)
            .unwrap();
        ledger.apply(&effects.writes).unwrap();
        match &effects.sends[0].1 {
            PeerMessage::Vote { vote, .. } => *vote,
            other => panic!("{other:?}"),
        }
    };
    let mut later = prepare(grantor, grantee, binding, yuan(20));
    later.leg = leg(5);
    assert!(matches!(handle(later.clone(), &mut ledger), Vote::Yes { held, .. } if held == yuan(20)));
    // A lower index arriving after a higher one is counted the same way.
    let earlier = prepare(grantor, grantee, binding, yuan(20));
    assert!(matches!(handle(earlier.clone(), &mut ledger), Vote::Yes { held, .. } if held == yuan(5)));
    // A duplicate is the same vote, not a new hold.
    assert!(matches!(handle(later, &mut ledger), Vote::Yes { held, .. } if held == yuan(20)));
    let mut third = prepare(grantor, grantee, binding, yuan(20));
    third.leg = leg(9);
    assert_eq!(
        handle(third, &mut ledger),
        Vote::No {
            reason: Refusal::LimitReached
        }
    );
    // Another settlement has its own limit.
    let mut other = prepare(grantor, grantee, binding, yuan(20));
    other.leg = leg_in("S-y", 1);
    assert!(matches!(handle(other, &mut ledger), Vote::Yes { held, .. } if held == yuan(20)));
    assert_eq!(ledger.tables().accounts[&grantor].held, yuan(45));
    // The count looks legs up by index, so a leg past the last index a coordinator within the
    // protocol's bounds can make is refused and holds nothing.
    let max_rounds = ProtocolConfig {
        rounds_max: 4,
        vote_timeout_ms: 1_000,
        ..ProtocolConfig::default()
    };
    assert!(max_rounds.validate().is_ok());
    let too_many = ProtocolConfig {
        rounds_max: 5,
        vote_timeout_ms: 1_000,
        ..ProtocolConfig::default()
    };
    assert!(too_many.validate().is_err());
    let highest = u16::from(max_rounds.rounds_max) * exchange_core::policy::GRANTORS_PER_SETTLEMENT_MAX as u16;
    assert_eq!(LEG_INDEX_MAX, highest);
    let mut beyond = prepare(grantor, grantee, binding, yuan(1));
    beyond.leg = leg_in("S-z", LEG_INDEX_MAX + 1);
    assert_eq!(
        handle(beyond, &mut ledger),
        Vote::No {
            reason: Refusal::NotAuthorized
        }
    );
    assert_eq!(ledger.tables().accounts[&grantor].held, yuan(45));
}

#[test]
fn a_wall_clock_stepping_back_a_month_does_not_restart_the_monthly_count() {
    let (mut node, mut ledger, grantor, grantee, binding) = participant_with_binding(Limits {
        per_settlement: None,
        monthly: Some(yuan(15)),
    });
    const DAY_MS: i64 = 86_400_000;
    let december = Now::new(5_000, WALL_MS + 9 * DAY_MS);
    let november = Now::new(6_000, WALL_MS + 7 * DAY_MS);
    let mut handle = |settlement: &str, now: Now, ledger: &mut MemLedger| {
        let mut ask = prepare(grantor, grantee, binding, yuan(10));
        ask.leg = leg_in(settlement, 1);
        let effects = node
            .handle(ledger, from_chongqing(PeerMessage::Prepare(ask)), now)
            .unwrap();
        ledger.apply(&effects.writes).unwrap();
        match &effects.sends[0].1 {
            PeerMessage::Vote { vote, .. } => *vote,
            other => panic!("{other:?}"),
        }
    };
    assert!(matches!(handle("S-dec", december, &mut ledger), Vote::Yes { held, .. } if held == yuan(10)));
    // Stepped back into November: the hold counts in December, whose count goes on.
    assert!(matches!(handle("S-nov", november, &mut ledger), Vote::Yes { held, .. } if held == yuan(5)));
    assert_eq!(
        handle("S-dec2", december, &mut ledger),
        Vote::No {
            reason: Refusal::LimitReached
        }
    );
    let b = &ledger.tables().bindings[&binding];
    assert_eq!((b.usage_month.month, b.usage_in_month), (12, yuan(15)));
}

// --- the deadline rule: no COMMIT past a leg's commit window ------------------------------------

/// A leg of settlement `id` (attempt `attempt`) on `account`.
fn pay_leg(id: &str, attempt: u32, index: u16, account: PersonId) -> LegId {
    LegId {
        coordinator: p(CHONGQING),
        scope: LegScope::Pay {
            settlement: SettlementId::new(id).unwrap(),
            attempt,
        },
        index,
        account,
    }
}

/// Settles 500 for the family's grandmother, delivers every prepare and every vote but
/// Beijing's, then hands Beijing's yes vote to the coordinator `vote_after_ms` after the
/// prepares were sent. The coordinator's vote deadline (2 s) has not fired: the node was
/// stalled (a pause, an overloaded host) and on waking handles the vote first. Returns the
/// effects of that one vote, exactly as the coordinator emitted them.
fn late_beijing_vote(vote_after_ms: u64) -> (Cluster, Family, u64, u64, Effects) {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    let sent_ms = cluster.mono_ms;
    let reply = cluster.settle("S-late", f.grandmother, yuan(500));
    let mut held_back = Vec::new();
    while let Some((from, to, message)) = cluster.network.pop_front() {
        if from == p(BEIJING) && matches!(message, PeerMessage::Vote { .. }) {
            held_back.push(message);
        } else {
            cluster.step(to, Input::Peer { from, message });
        }
    }
    assert_eq!(held_back.len(), 1);
    assert!(!cluster.replies.contains_key(&reply), "still waiting for Beijing");
    assert_eq!(cluster.live_holds(), 3, "own account, son and daughter hold");
    cluster.mono_ms = sent_ms + vote_after_ms;
    let vote = held_back.pop().unwrap();
    assert_eq!(
        vote,
        PeerMessage::Vote {
            leg: pay_leg("S-late", 1, 1, f.son),
            vote: Vote::Yes {
                held: yuan(450),
                available_before: yuan(1000)
            }
        }
    );
    let effects = cluster.step(
        p(CHONGQING),
        Input::Peer {
            from: p(BEIJING),
            message: vote,
        },
    );
    (cluster, f, reply, sent_ms, effects)
}

#[test]
fn a_yes_vote_past_the_commit_window_is_not_committed_the_leg_is_aborted_and_cash_pays() {
    let config = ProtocolConfig::default();
    assert_eq!(config.commit_window_ms(), 10_000 - 3_000);
    // One millisecond past hold_timeout_ms - commit_margin_ms after the prepares were sent.
    let (mut cluster, f, reply, sent_ms, effects) = late_beijing_vote(config.commit_window_ms() + 1);
    let now = cluster.now();
    let legs = [
        (
            pay_leg("S-late", 1, 0, f.grandmother),
            p(CHONGQING),
            f.grandmother,
            None,
        ),
        (pay_leg("S-late", 1, 1, f.son), p(BEIJING), f.son, Some(f.son_binding)),
        (
            pay_leg("S-late", 1, 2, f.daughter),
            p(SICHUAN),
            f.daughter,
            Some(f.daughter_binding),
        ),
    ];
    // Every yes vote of the round is now past its window (the legs were sent together): no
    // leg may commit, the bill is paid in cash, and the receipt says why.
    let receipt = Receipt {
        settlement: SettlementId::new("S-late").unwrap(),
        patient: f.grandmother,
        self_pay: yuan(500),
        own_account_paid: Money::ZERO,
        own_refusal: Some(Refusal::Timeout),
        own_balance_after: Some(yuan(50)),
        mutual_aid: Vec::new(),
        cash_paid: yuan(500),
        not_paying: vec![
            exchange_core::plan::NotPaying {
                binding: f.son_binding,
                grantor: f.son,
                province: p(BEIJING),
                reason: Refusal::Timeout,
            },
            exchange_core::plan::NotPaying {
                binding: f.daughter_binding,
                grantor: f.daughter,
                province: p(SICHUAN),
                reason: Refusal::Timeout,
            },
        ],
        rounds: 1,
        decided_wall_ms: now.wall_ms,
    };
    let record = exchange_core::records::SettlementRecord {
        request: settle_request("S-late", f.grandmother, yuan(500)),
        receipt: receipt.clone(),
        legs: legs
            .iter()
            .map(|(leg, province, account, binding)| exchange_core::records::DecidedLeg {
                leg: leg.clone(),
                province: *province,
                account: *account,
                binding: *binding,
                amount: Money::ZERO,
                notify: true,
                refunded: Money::ZERO,
            })
            .collect(),
        refunded_total: Money::ZERO,
    };
    let key = exchange_core::records::OutboxKey::Settlement(SettlementId::new("S-late").unwrap());
    assert_eq!(
        effects.writes,
        vec![
            Write::Settlement(record),
            Write::Outbox {
                key: key.clone(),
                live: true
            }
        ],
        "the decision, with no clearing claim: nothing is received from another province"
    );
    assert_eq!(
        effects.sends,
        legs.iter()
            .map(|(leg, province, _, _)| (*province, PeerMessage::Abort { leg: leg.clone() }))
            .collect::<Vec<_>>(),
        "Beijing's late yes and the other yes votes are all aborted"
    );
    assert_eq!(effects.replies, vec![(reply, ClientReply::Settled(receipt))]);
    assert_eq!(
        effects.timers,
        vec![exchange_core::Timer {
            at_mono_ms: now.mono_ms + cluster.config.resend_initial_ms,
            kind: TimerKind::Resend(key),
        }]
    );
    assert_eq!(
        effects.notes,
        vec![Note::SettlementDecided {
            settlement: SettlementId::new("S-late").unwrap(),
            rounds: 1,
            replanned: true,
            cash_only: true,
        }]
    );
    assert!(now.mono_ms > sent_ms + cluster.config.commit_window_ms());
    // The aborts release every hold; no account pays.
    let before = cluster.sum_balances();
    cluster.deliver_all();
    assert_eq!(cluster.live_holds(), 0);
    assert_eq!(cluster.sum_balances(), before);
    assert_eq!(cluster.account(BEIJING, &f.son).balance, yuan(1000));
    assert_eq!(
        cluster.ledger(BEIJING).tables().fences.get(&legs[1].0),
        Some(&Fence::Aborted { refusal: None })
    );
    assert!(cluster.ledger(CHONGQING).tables().outbox.is_empty(), "all acks arrived");
    // The vote deadline that fires afterwards finds nothing to do.
    let late_timer = cluster.step(
        p(CHONGQING),
        Input::Timer(TimerKind::VoteDeadline {
            settlement: SettlementId::new("S-late").unwrap(),
            round: 1,
        }),
    );
    assert!(late_timer.is_empty() && late_timer.notes.is_empty());
}

#[test]
fn a_yes_vote_at_the_last_millisecond_of_the_commit_window_still_commits() {
    let config = ProtocolConfig::default();
    let (mut cluster, f, reply, _, effects) = late_beijing_vote(config.commit_window_ms());
    assert_eq!(
        effects.sends,
        vec![
            (
                p(CHONGQING),
                PeerMessage::Commit {
                    leg: pay_leg("S-late", 1, 0, f.grandmother),
                    amount: yuan(50)
                }
            ),
            (
                p(BEIJING),
                PeerMessage::Commit {
                    leg: pay_leg("S-late", 1, 1, f.son),
                    amount: yuan(450)
                }
            ),
            (
                p(SICHUAN),
                PeerMessage::Abort {
                    leg: pay_leg("S-late", 1, 2, f.daughter)
                }
            ),
        ]
    );
    let r = receipt(cluster.reply(reply)).clone();
    assert_eq!((r.own_account_paid, r.cash_paid), (yuan(50), Money::ZERO));
    assert_eq!((r.mutual_aid[0].grantor, r.mutual_aid[0].amount), (f.son, yuan(450)));
    cluster.deliver_all();
    assert_eq!(cluster.account(BEIJING, &f.son).balance, yuan(550));
    assert_eq!(cluster.live_holds(), 0);
}

#[test]
fn a_query_about_a_leg_of_a_settlement_never_decided_gets_abort_and_writes_nothing() {
    // A coordinator that crashed while preparing S-lost (attempt 1) restarts as incarnation 2.
    let mut node = NodeCore::new(p(CHONGQING), Policy::default(), ProtocolConfig::default(), 2);
    let ledger = MemLedger::new();
    let son = adult(BEIJING, 2);
    let lost = pay_leg("S-lost", 1, 1, son);
    let effects = node
        .handle(
            &ledger,
            Input::Peer {
                from: p(BEIJING),
                message: PeerMessage::Query { leg: lost.clone() },
            },
            Now::new(50, WALL_MS),
        )
        .unwrap();
    // Presumed abort: no record means abort, and nothing needs writing (see docs/protocol.md).
    assert_eq!(
        effects.sends,
        vec![(p(BEIJING), PeerMessage::Abort { leg: lost.clone() })]
    );
    assert!(effects.writes.is_empty());
    assert!(effects.replies.is_empty() && effects.timers.is_empty() && effects.notes.is_empty());
    // Asking again gets the same answer.
    let again = node
        .handle(
            &ledger,
            Input::Peer {
                from: p(BEIJING),
                message: PeerMessage::Query { leg: lost.clone() },
            },
            Now::new(1_050, WALL_MS),
        )
        .unwrap();
    assert_eq!(again, effects);
}

#[test]
fn a_query_about_the_previous_attempt_while_the_retry_is_preparing_gets_abort_and_the_retry_commits() {
    let mut cluster = Cluster::new(&[BEIJING, CHONGQING, SICHUAN]);
    let f = family(&mut cluster, Limits::default());
    cluster.settle("S-again", f.grandmother, yuan(500));
    // Attempt 1: every prepare is delivered and every vote lost; the coordinator crashes.
    while let Some((from, to, message)) = cluster.network.pop_front() {
        if !matches!(message, PeerMessage::Vote { .. }) {
            cluster.step(to, Input::Peer { from, message });
        }
    }
    assert_eq!(cluster.live_holds(), 3);
    // Restart with a new incarnation: the own account's hold will ask soon.
    let now = cluster.now();
    cluster.timers.retain(|(at, _, _)| *at != p(CHONGQING));
    let (node, ledger) = cluster.nodes.get_mut(&p(CHONGQING)).unwrap();
    *node = NodeCore::new(p(CHONGQING), Policy::default(), ProtocolConfig::default(), 2);
    let live: Vec<LegId> = ledger.tables().live_holds.iter().cloned().collect();
    let recovered = node.recover(ledger, &live, &[], now).unwrap();
    for timer in recovered.timers {
        cluster.timers.push((p(CHONGQING), timer.at_mono_ms, timer.kind));
    }
    // The hospital retries at once: attempt 2 prepares, nothing decided yet.
    let retry = cluster.settle("S-again", f.grandmother, yuan(500));
    let prepares: Vec<LegId> = cluster
        .network
        .iter()
        .map(|(_, _, m)| match m {
            PeerMessage::Prepare(prepare) => prepare.leg.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        prepares
            .iter()
            .all(|leg| matches!(leg.scope, LegScope::Pay { attempt: 2, .. }))
    );
    // Beijing's attempt-1 hold passes its deadline and asks, before the new round finished.
    let old = pay_leg("S-again", 1, 1, f.son);
    let effects = cluster.step(
        p(CHONGQING),
        Input::Peer {
            from: p(BEIJING),
            message: PeerMessage::Query { leg: old.clone() },
        },
    );
    assert_eq!(
        effects.sends,
        vec![(p(BEIJING), PeerMessage::Abort { leg: old.clone() })]
    );
    assert!(effects.writes.is_empty() && effects.replies.is_empty() && effects.timers.is_empty());
    assert!(effects.notes.is_empty(), "attempt 2 is not disturbed");
    // Attempt 2 completes and commits only its own legs; the old holds are released.
    cluster.deliver_all();
    let r = receipt(cluster.reply(retry)).clone();
    // The own account's 50 is still held by attempt 1, so the son pays it all.
    assert_eq!(
        (r.own_account_paid, r.own_refusal, r.cash_paid),
        (Money::ZERO, Some(Refusal::InsufficientBalance), Money::ZERO)
    );
    assert_eq!((r.mutual_aid[0].grantor, r.mutual_aid[0].amount), (f.son, yuan(500)));
    let record = &cluster.ledger(CHONGQING).tables().settlements[&SettlementId::new("S-again").unwrap()];
    assert!(
        record
            .legs
            .iter()
            .all(|l| matches!(l.leg.scope, LegScope::Pay { attempt: 2, .. }))
    );
    assert_eq!(
        cluster.ledger(BEIJING).tables().fences.get(&old),
        Some(&Fence::Aborted { refusal: None })
    );
    // The other attempt-1 holds ask at their deadline and are aborted from the record.
    cluster.advance_to(cluster.mono_ms + cluster.config.hold_timeout_ms + 1);
    assert_eq!(cluster.live_holds(), 0);
    assert_eq!(cluster.account(BEIJING, &f.son).balance, yuan(500));
    assert_eq!(cluster.account(BEIJING, &f.son).held, Money::ZERO);
    assert_eq!(cluster.account(CHONGQING, &f.grandmother).balance, yuan(50));
    let after = cluster.step(
        p(CHONGQING),
        Input::Peer {
            from: p(BEIJING),
            message: PeerMessage::Query { leg: old.clone() },
        },
    );
    assert_eq!(after.sends, vec![(p(BEIJING), PeerMessage::Abort { leg: old })]);
    assert!(after.writes.is_empty());
}
