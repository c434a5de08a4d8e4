//! Property tests: the sled store and the core's `MemLedger` answer every read the same after
//! the same random write sets, including fence conflicts, journal numbering and a reopen; and
//! sets computed over an `Overlay` and applied to the store as one read like the same sets
//! applied to the `MemLedger` one by one (how a node applies a batch of peer messages).

mod common;

use std::collections::BTreeSet;

use common::*;
use exchange_core::ledger::{LedgerView, Write};
use exchange_core::mem::MemLedger;
use exchange_core::overlay::Overlay;
use exchange_store::{Store, StoreError};
use proptest::prelude::*;

/// Ids are drawn from small ranges so sets collide: overwrites, removals and fence races.
const PERSONS: u64 = 4;
const SERIALS: u64 = 3;
const LEGS: u64 = 4;

#[derive(Clone, Debug)]
enum Expected {
    /// Whatever the fence is now: the compare-and-set holds (unless the set races itself).
    Current,
    /// A fixed value: usually a conflict.
    Value(Option<u8>),
}

#[derive(Clone, Debug)]
enum Spec {
    Account(u64, u64),
    Binding(u64, u8),
    BindingCopy(u64, u8),
    GrantorIndex(u64, Vec<u64>),
    GranteeIndex(u64, Vec<u64>),
    Fence(u64, Expected, u8),
    LiveHold(u64, bool),
    Settlement(u64, u64),
    Refund(u64),
    Outbox(u64, bool),
    Credit(u64, u64),
    BindingSerial(u64),
    Journal(u64),
}

fn spec() -> impl Strategy<Value = Spec> {
    let expected = prop_oneof![
        3 => Just(Expected::Current),
        1 => proptest::option::of(0..5u8).prop_map(Expected::Value),
    ];
    prop_oneof![
        1 => (0..PERSONS, 1..50u64).prop_map(|(p, b)| Spec::Account(p, b)),
        1 => (0..SERIALS, any::<u8>()).prop_map(|(s, v)| Spec::Binding(s, v)),
        1 => (0..SERIALS, any::<u8>()).prop_map(|(s, v)| Spec::BindingCopy(s, v)),
        1 => (0..PERSONS, proptest::collection::vec(0..SERIALS, 0..3)).prop_map(|(p, s)| Spec::GrantorIndex(p, s)),
        1 => (0..PERSONS, proptest::collection::vec(0..SERIALS, 0..3)).prop_map(|(p, s)| Spec::GranteeIndex(p, s)),
        3 => (0..LEGS, expected, 0..5u8).prop_map(|(l, e, n)| Spec::Fence(l, e, n)),
        2 => (0..LEGS, any::<bool>()).prop_map(|(l, live)| Spec::LiveHold(l, live)),
        1 => (0..2u64, 0..3u64).prop_map(|(s, r)| Spec::Settlement(s, r)),
        1 => (0..2u64).prop_map(Spec::Refund),
        2 => (0..6u64, any::<bool>()).prop_map(|(k, live)| Spec::Outbox(k, live)),
        1 => (0..3u64, 1..100u64).prop_map(|(c, a)| Spec::Credit(c, a)),
        1 => (0..10u64).prop_map(Spec::BindingSerial),
        2 => (0..20u64).prop_map(Spec::Journal),
    ]
}

fn resolve(spec: &Spec, view: &impl LedgerView) -> Write {
    match spec.clone() {
        Spec::Account(p, b) => Write::Account(account(p, b)),
        Spec::Binding(s, v) => Write::Binding(binding(s, v)),
        Spec::BindingCopy(s, v) => Write::BindingCopy(binding(s, v)),
        Spec::GrantorIndex(p, s) => Write::GrantorIndex {
            person: person(p),
            bindings: s.into_iter().map(binding_id).collect(),
        },
        Spec::GranteeIndex(p, s) => Write::GranteeIndex {
            person: person(p),
            bindings: s.into_iter().map(binding_id).collect(),
        },
        Spec::Fence(l, expected, new) => Write::Fence {
            leg: leg(l),
            expected: match expected {
                Expected::Current => view.fence(&leg(l)).unwrap(),
                Expected::Value(value) => value.map(fence),
            },
            new: fence(new),
        },
        Spec::LiveHold(l, live) => Write::LiveHold { leg: leg(l), live },
        Spec::Settlement(s, r) => Write::Settlement(settlement_record(s, r)),
        Spec::Refund(r) => Write::Refund(refund_record(r)),
        Spec::Outbox(k, live) => Write::Outbox {
            key: outbox_key(k),
            live,
        },
        Spec::Credit(c, a) => Write::Credit(credit_record(c, a)),
        Spec::BindingSerial(s) => Write::BindingSerial(s),
        Spec::Journal(j) => Write::Journal(journal_entry(j)),
    }
}

/// Journal entries the store indexes by account: those naming an account of this node once
/// their set is applied (it existed, or the set wrote it). Called after each apply.
fn note_indexed(mem: &MemLedger, journal_before: usize, indexed: &mut BTreeSet<u64>) {
    let tables = mem.tables();
    for (seq, entry) in tables.journal.iter().skip(journal_before) {
        if entry
            .account
            .is_some_and(|person| tables.accounts.contains_key(&person))
        {
            indexed.insert(*seq);
        }
    }
}

fn assert_same(store: &Store, mem: &MemLedger, indexed: &BTreeSet<u64>) {
    // Each person's history: the journal tail in the account's value, then its pages.
    for p in 0..=PERSONS {
        let mut expected: Vec<(u64, exchange_core::records::JournalEntry)> = mem
            .tables()
            .journal
            .iter()
            .filter(|(seq, entry)| indexed.contains(seq) && entry.account == Some(person(p)))
            .cloned()
            .collect();
        expected.reverse();
        assert_eq!(store.journal_of_account(&person(p), 0, usize::MAX).unwrap(), expected);
    }
    assert_same_view(store, mem);
    // The store hands out binding serials (each read a new one, never one at or below a
    // written serial); the in-memory ledger of a single-threaded core just reads the last one.
    assert!(store.binding_serial().unwrap() >= mem.binding_serial().unwrap());
    let tables = mem.tables();
    assert_eq!(
        store.live_holds().unwrap().into_iter().collect::<BTreeSet<_>>(),
        tables.live_holds
    );
    assert_eq!(
        store.outbox().unwrap().into_iter().collect::<BTreeSet<_>>(),
        tables.outbox
    );
    assert_eq!(store.journal_from(0, usize::MAX).unwrap(), tables.journal);
    assert_eq!(
        store.last_journal_seq().unwrap(),
        tables.journal.last().map(|(seq, _)| *seq).unwrap_or(0)
    );
    assert_eq!(store.account_count().unwrap(), tables.accounts.len() as u64);
    let mut accounts = Vec::new();
    store
        .for_each_account(|account| accounts.push(account.clone()))
        .unwrap();
    accounts.sort_by_key(|account| account.person);
    assert_eq!(accounts, tables.accounts.values().cloned().collect::<Vec<_>>());
}

/// Every record a view reads (all but the binding serial) is the in-memory ledger's.
fn assert_same_view(store: &impl LedgerView, mem: &MemLedger) {
    // One past each range, to also compare absent records.
    for p in 0..=PERSONS {
        assert_eq!(store.account(&person(p)).unwrap(), mem.account(&person(p)).unwrap());
        assert_eq!(
            store.bindings_of_grantor(&person(p)).unwrap(),
            mem.bindings_of_grantor(&person(p)).unwrap()
        );
        assert_eq!(
            store.bindings_of_grantee(&person(p)).unwrap(),
            mem.bindings_of_grantee(&person(p)).unwrap()
        );
    }
    for s in 0..=SERIALS {
        assert_eq!(
            store.binding(&binding_id(s)).unwrap(),
            mem.binding(&binding_id(s)).unwrap()
        );
        assert_eq!(
            store.binding_copy(&binding_id(s)).unwrap(),
            mem.binding_copy(&binding_id(s)).unwrap()
        );
    }
    for l in 0..=LEGS {
        assert_eq!(store.fence(&leg(l)).unwrap(), mem.fence(&leg(l)).unwrap());
    }
    for i in 0..=3 {
        assert_eq!(
            store.settlement(&settlement_id(i)).unwrap(),
            mem.settlement(&settlement_id(i)).unwrap()
        );
        assert_eq!(store.refund(&refund_id(i)).unwrap(), mem.refund(&refund_id(i)).unwrap());
        assert_eq!(store.credit(&credit_id(i)).unwrap(), mem.credit(&credit_id(i)).unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn store_reads_like_mem_ledger(sets in proptest::collection::vec(proptest::collection::vec(spec(), 0..6), 1..14)) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let mut mem = MemLedger::new();
        let mut indexed = BTreeSet::new();
        for set in &sets {
            let writes: Vec<Write> = set.iter().map(|spec| resolve(spec, &mem)).collect();
            let journal_before = mem.tables().journal.len();
            let from_mem = mem.apply(&writes);
            let from_store = store.apply(&writes);
            match (&from_mem, &from_store) {
                (Ok(()), Ok(applied)) => {
                    let new_seqs: Vec<u64> =
                        mem.tables().journal[journal_before..].iter().map(|(seq, _)| *seq).collect();
                    prop_assert_eq!(&applied.journal_seqs, &new_seqs);
                }
                (Err(_), Err(StoreError::FenceConflict { .. })) => {}
                _ => prop_assert!(false, "mem {:?} but store {:?}", from_mem, from_store),
            }
            note_indexed(&mem, journal_before, &mut indexed);
            assert_same(&store, &mem, &indexed);
        }
        // What was flushed before a restart reads the same afterwards.
        store.flush_blocking().unwrap();
        drop(store);
        store = open(dir.path());
        assert_same(&store, &mem, &indexed);
    }

    #[test]
    fn sets_over_an_overlay_applied_as_one_read_like_one_by_one(
        groups in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(spec(), 0..6), 1..8),
            1..6,
        )
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let mut mem = MemLedger::new();
        let mut indexed = BTreeSet::new();
        for group in &groups {
            let journal_before = mem.tables().journal.len();
            let mut overlay = Overlay::new(&store);
            let mut batch = Vec::new();
            for set in group {
                // Computed over the overlay, as a handler after the batch's earlier ones is;
                // a set the one-by-one ledger refuses (a fence race) is left out, as a node
                // that refused it would.
                let writes: Vec<Write> = set.iter().map(|spec| resolve(spec, &overlay)).collect();
                if mem.apply(&writes).is_ok() {
                    overlay.record(&writes);
                    batch.extend(writes);
                }
                assert_same_view(&overlay, &mem);
                prop_assert!(overlay.binding_serial().unwrap() >= mem.binding_serial().unwrap());
            }
            let applied = store.apply(&batch);
            prop_assert!(applied.is_ok(), "the batch as one set: {:?}", applied);
            let new_seqs: Vec<u64> =
                mem.tables().journal[journal_before..].iter().map(|(seq, _)| *seq).collect();
            prop_assert_eq!(&applied.unwrap().journal_seqs, &new_seqs);
            // As one set: an entry is indexed when its account exists once the whole batch
            // is applied (on a node, an entry names an account that exists already).
            note_indexed(&mem, journal_before, &mut indexed);
            assert_same(&store, &mem, &indexed);
        }
    }
}
