//! Integration tests of the store: round trips, fences, journal, recovery scans, reopen,
//! incarnation, meta counters and corruption.

mod common;

use std::collections::BTreeSet;

use common::*;
use exchange_core::ledger::{LedgerView, Write};
use exchange_core::records::JournalEntry;
use exchange_store::{StoreError, WRITE_SET_LEN_MAX};

#[test]
fn every_record_kind_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writes = vec![
        Write::Account(account(1, 10_000)),
        Write::Account(account(7, 14)),
        Write::Binding(binding(1, 0)),
        Write::Binding(binding(2, 3)),
        Write::BindingCopy(binding(3, 1)),
        Write::BindingCopy(binding(4, 2)),
        Write::GrantorIndex {
            person: person(1),
            bindings: vec![binding_id(1), binding_id(2)],
        },
        Write::GranteeIndex {
            person: person(101),
            bindings: vec![binding_id(3)],
        },
        Write::Fence {
            leg: leg(0),
            expected: None,
            new: fence(0),
        },
        Write::Fence {
            leg: leg(1),
            expected: None,
            new: fence(1),
        },
        Write::Fence {
            leg: leg(2),
            expected: None,
            new: fence(2),
        },
        Write::Fence {
            leg: leg(3),
            expected: None,
            new: fence(3),
        },
        Write::Fence {
            leg: leg(4),
            expected: None,
            new: fence(4),
        },
        Write::LiveHold {
            leg: leg(0),
            live: true,
        },
        Write::Settlement(settlement_record(1, 0)),
        Write::Refund(refund_record(1)),
        Write::Refund(refund_record(2)),
        Write::Outbox {
            key: outbox_key(0),
            live: true,
        },
        Write::Outbox {
            key: outbox_key(1),
            live: true,
        },
        Write::Outbox {
            key: outbox_key(2),
            live: true,
        },
        Write::Outbox {
            key: outbox_key(3),
            live: true,
        },
        Write::Credit(credit_record(1, 500)),
        Write::BindingSerial(42),
        Write::Journal(journal_entry(0)),
        Write::Journal(journal_entry(1)),
    ];
    let applied = store.apply(&writes).unwrap();
    assert_eq!(applied.journal_seqs, vec![1, 2]);
    assert_eq!(applied.ticket, 1);

    let check = |store: &exchange_store::Store| {
        assert_eq!(store.account(&person(1)).unwrap(), Some(account(1, 10_000)));
        assert_eq!(store.account(&person(7)).unwrap(), Some(account(7, 14)));
        assert_eq!(store.account(&person(9)).unwrap(), None);
        assert_eq!(store.binding(&binding_id(1)).unwrap(), Some(binding(1, 0)));
        assert_eq!(store.binding(&binding_id(2)).unwrap(), Some(binding(2, 3)));
        assert_eq!(store.binding(&binding_id(3)).unwrap(), None);
        assert_eq!(store.binding_copy(&binding_id(3)).unwrap(), Some(binding(3, 1)));
        assert_eq!(store.binding_copy(&binding_id(4)).unwrap(), Some(binding(4, 2)));
        assert_eq!(
            store.bindings_of_grantor(&person(1)).unwrap(),
            vec![binding_id(1), binding_id(2)]
        );
        assert_eq!(store.bindings_of_grantor(&person(2)).unwrap(), vec![]);
        assert_eq!(store.bindings_of_grantee(&person(101)).unwrap(), vec![binding_id(3)]);
        for variant in 0..5u8 {
            assert_eq!(store.fence(&leg(u64::from(variant))).unwrap(), Some(fence(variant)));
        }
        assert_eq!(store.fence(&leg(5)).unwrap(), None);
        assert_eq!(store.live_holds().unwrap(), vec![leg(0)]);
        assert_eq!(
            store.settlement(&settlement_id(1)).unwrap(),
            Some(settlement_record(1, 0))
        );
        assert_eq!(store.settlement(&settlement_id(2)).unwrap(), None);
        assert_eq!(store.refund(&refund_id(1)).unwrap(), Some(refund_record(1)));
        assert_eq!(store.refund(&refund_id(2)).unwrap(), Some(refund_record(2)));
        let mut outbox = store.outbox().unwrap();
        outbox.sort();
        let mut expected: Vec<_> = (0..4).map(outbox_key).collect();
        expected.sort();
        assert_eq!(outbox, expected);
        assert_eq!(store.credit(&credit_id(1)).unwrap(), Some(credit_record(1, 500)));
        assert_eq!(store.binding_serial().unwrap(), 42);
        assert_eq!(
            store.journal_from(0, 10).unwrap(),
            vec![(1, journal_entry(0)), (2, journal_entry(1))]
        );
        assert_eq!(store.last_journal_seq().unwrap(), 2);
        assert_eq!(store.account_count().unwrap(), 2);
        let mut seen = Vec::new();
        assert_eq!(store.for_each_account(|account| seen.push(account.person)).unwrap(), 2);
        seen.sort();
        assert_eq!(seen, vec![person(1), person(7)]);
    };
    check(&store);
    store.flush_blocking().unwrap();
    drop(store);
    let reopened = open(dir.path());
    check(&reopened);
}

#[test]
fn fence_conflict_rejects_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply(&[
            Write::Account(account(1, 10_000)),
            Write::Fence {
                leg: leg(0),
                expected: None,
                new: fence(0),
            },
            Write::Journal(journal_entry(0)),
        ])
        .unwrap();
    let before_stats = store.stats();
    let result = store.apply(&[
        Write::Account(account(1, 1)),
        Write::Credit(credit_record(5, 5)),
        Write::LiveHold {
            leg: leg(2),
            live: true,
        },
        Write::Journal(journal_entry(1)),
        // This one holds...
        Write::Fence {
            leg: leg(2),
            expected: None,
            new: fence(2),
        },
        // ...this one does not: the stored fence is Prepared, not Aborted.
        Write::Fence {
            leg: leg(0),
            expected: Some(fence(2)),
            new: fence(1),
        },
    ]);
    match result {
        Err(StoreError::FenceConflict { leg: conflicted }) => assert_eq!(conflicted, leg(0)),
        other => panic!("expected a fence conflict, got {other:?}"),
    }
    assert_eq!(store.account(&person(1)).unwrap(), Some(account(1, 10_000)));
    assert_eq!(store.credit(&credit_id(5)).unwrap(), None);
    assert_eq!(store.live_holds().unwrap(), vec![]);
    assert_eq!(store.fence(&leg(0)).unwrap(), Some(fence(0)));
    assert_eq!(store.fence(&leg(2)).unwrap(), None);
    assert_eq!(store.last_journal_seq().unwrap(), 1);
    // A rejected set takes no ticket.
    assert_eq!(store.stats().applied_ticket, before_stats.applied_ticket);

    // Expecting a fence on a leg that has none also conflicts.
    assert!(matches!(
        store.apply(&[Write::Fence {
            leg: leg(3),
            expected: Some(fence(0)),
            new: fence(1)
        }]),
        Err(StoreError::FenceConflict { .. })
    ));
    // The right expectation succeeds, and the journal continues without a gap.
    let applied = store
        .apply(&[
            Write::Fence {
                leg: leg(0),
                expected: Some(fence(0)),
                new: fence(1),
            },
            Write::Journal(journal_entry(2)),
        ])
        .unwrap();
    assert_eq!(applied.journal_seqs, vec![2]);
    assert_eq!(store.fence(&leg(0)).unwrap(), Some(fence(1)));
}

#[test]
fn journal_is_gap_free_and_monotonic_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected_seq = 1;
    let mut all = Vec::new();
    {
        // The entries name persons 0..4: accounts of this node, so they are indexed.
        let store = open(dir.path());
        let accounts: Vec<Write> = (0..4).map(|who| Write::Account(account(who, 0))).collect();
        store.apply(&accounts).unwrap();
        store.flush_blocking().unwrap();
    }
    for round in 0..3u64 {
        let store = open(dir.path());
        assert_eq!(store.last_journal_seq().unwrap(), expected_seq - 1);
        let mut last_ticket = 0;
        for set in 0..5u64 {
            let entries = (set % 3) + 1;
            let writes: Vec<Write> = (0..entries)
                .map(|k| Write::Journal(journal_entry(round * 100 + set * 10 + k)))
                .chain([Write::Account(account(set, 1_000 + round))])
                .collect();
            let applied = store.apply(&writes).unwrap();
            assert!(applied.ticket > last_ticket);
            last_ticket = applied.ticket;
            for (k, seq) in applied.journal_seqs.iter().enumerate() {
                assert_eq!(*seq, expected_seq);
                all.push((*seq, journal_entry(round * 100 + set * 10 + k as u64)));
                expected_seq += 1;
            }
        }
        store.flush_blocking().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.journal_from(0, usize::MAX).unwrap(), all);
    // Paging: after a sequence number, bounded by the limit.
    assert_eq!(store.journal_from(3, 2).unwrap(), all[3..5].to_vec());
    assert_eq!(store.journal_from(u64::MAX, 10).unwrap(), vec![]);
    assert_eq!(store.journal_from(expected_seq - 1, 10).unwrap(), vec![]);
    // The per-account index: every entry of one person, newest first, paged by sequence.
    for who in 0..4u64 {
        let mut mine: Vec<(u64, JournalEntry)> = all
            .iter()
            .filter(|(_, entry)| entry.account == Some(person(who)))
            .cloned()
            .collect();
        mine.reverse();
        assert!(!mine.is_empty());
        assert_eq!(store.journal_of_account(&person(who), 0, usize::MAX).unwrap(), mine);
        let first_page = store.journal_of_account(&person(who), 0, 2).unwrap();
        assert_eq!(first_page, mine[..2.min(mine.len())].to_vec());
        let before = first_page.last().unwrap().0;
        assert_eq!(
            store.journal_of_account(&person(who), before, usize::MAX).unwrap(),
            mine[first_page.len()..].to_vec()
        );
    }
    assert_eq!(store.journal_of_account(&person(9), 0, 10).unwrap(), vec![]);
}

#[test]
fn flushed_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for index in 0..50 {
            store.apply(&[Write::Account(account(index, index * 10))]).unwrap();
        }
        store.flush_blocking().unwrap();
        let stats = store.stats();
        assert_eq!(stats.flushed_ticket, stats.applied_ticket);
        assert!(stats.flushes >= 1);
        // A second flush with nothing new is skipped.
        store.flush_blocking().unwrap();
        assert_eq!(store.stats().flushes, stats.flushes);
    }
    let store = open(dir.path());
    assert_eq!(store.account_count().unwrap(), 50);
    for index in 0..50 {
        assert_eq!(store.account(&person(index)).unwrap(), Some(account(index, index * 10)));
    }
}

#[test]
fn live_holds_and_outbox_follow_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .apply(&[
            Write::LiveHold {
                leg: leg(0),
                live: true,
            },
            Write::LiveHold {
                leg: leg(1),
                live: true,
            },
            Write::LiveHold {
                leg: leg(2),
                live: true,
            },
            Write::Outbox {
                key: outbox_key(0),
                live: true,
            },
            Write::Outbox {
                key: outbox_key(1),
                live: true,
            },
        ])
        .unwrap();
    store
        .apply(&[
            Write::LiveHold {
                leg: leg(1),
                live: false,
            },
            // Removing what is not there is fine.
            Write::LiveHold {
                leg: leg(9),
                live: false,
            },
            Write::Outbox {
                key: outbox_key(0),
                live: false,
            },
            // Later writes in a set win.
            Write::LiveHold {
                leg: leg(3),
                live: true,
            },
            Write::LiveHold {
                leg: leg(3),
                live: false,
            },
        ])
        .unwrap();
    let mut holds = store.live_holds().unwrap();
    holds.sort();
    let mut expected = vec![leg(0), leg(2)];
    expected.sort();
    assert_eq!(holds, expected);
    assert_eq!(store.outbox().unwrap(), vec![outbox_key(1)]);
}

#[test]
fn incarnation_grows_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    for expected in 1..=3u32 {
        let store = open(dir.path());
        assert_eq!(store.incarnation().unwrap(), expected - 1);
        assert_eq!(store.bump_incarnation().unwrap(), expected);
        assert_eq!(store.incarnation().unwrap(), expected);
        // Written and flushed by bump_incarnation itself.
        let stats = store.stats();
        assert_eq!(stats.flushed_ticket, stats.applied_ticket);
    }
}

#[test]
fn meta_counters_are_named_and_separate() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        assert_eq!(store.meta_get("monitor_cursor").unwrap(), None);
        let ticket = store.meta_put("monitor_cursor", 17).unwrap();
        assert_eq!(ticket, store.applied_ticket());
        store.meta_put("other", u64::MAX).unwrap();
        assert_eq!(store.meta_get("monitor_cursor").unwrap(), Some(17));
        // A counter named like an internal key cannot touch it.
        store.meta_put("sys/binding_serial", 5).unwrap();
        assert_eq!(store.binding_serial().unwrap(), 0);
        assert!(matches!(store.meta_put("", 1), Err(StoreError::EmptyName)));
        assert!(matches!(
            store.meta_put(&"x".repeat(65), 1),
            Err(StoreError::TooLarge { .. })
        ));
        store.flush_blocking().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.meta_get("monitor_cursor").unwrap(), Some(17));
    assert_eq!(store.meta_get("other").unwrap(), Some(u64::MAX));
}

#[test]
fn limits_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let too_many = vec![Write::BindingSerial(1); WRITE_SET_LEN_MAX + 1];
    assert!(matches!(store.apply(&too_many), Err(StoreError::TooLarge { .. })));
    let mut huge = account(1, 1);
    huge.name = "x".repeat(exchange_store::VALUE_BYTES_MAX);
    assert!(matches!(
        store.apply(&[Write::Account(huge)]),
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.applied_ticket(), 0);
    // An empty set writes nothing and returns the last ticket.
    assert_eq!(store.apply(&[]).unwrap().ticket, 0);
}

#[test]
fn garbage_on_disk_is_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .apply(&[
                Write::Account(account(1, 100)),
                Write::Fence {
                    leg: leg(0),
                    expected: None,
                    new: fence(0),
                },
                Write::Settlement(settlement_record(1, 0)),
            ])
            .unwrap();
        store.flush_blocking().unwrap();
    }
    let account_key = rmp_serde::to_vec(&person(1)).unwrap();
    let fence_key = rmp_serde::to_vec(&leg(0)).unwrap();
    let settlement_key = rmp_serde::to_vec(&settlement_id(1)).unwrap();
    {
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(1 << 20)
            .open()
            .unwrap();
        db.open_tree("accounts")
            .unwrap()
            .insert(&account_key, &[0xc1, 0xff, 0x00][..])
            .unwrap();
        db.open_tree("accounts")
            .unwrap()
            .insert(b"junk", &[0x93, 1, 2][..])
            .unwrap();
        db.open_tree("fences")
            .unwrap()
            .insert(&fence_key, &[0xdd, 0xff, 0xff, 0xff, 0xff][..])
            .unwrap();
        // A valid prefix followed by trailing bytes.
        let mut torn = rmp_serde::to_vec(&settlement_record(1, 0)).unwrap();
        torn.extend_from_slice(b"tail");
        db.open_tree("settlements")
            .unwrap()
            .insert(&settlement_key, torn)
            .unwrap();
        db.open_tree("live_holds")
            .unwrap()
            .insert(&[0xc1][..], &[][..])
            .unwrap();
        db.open_tree("outbox")
            .unwrap()
            .insert(&[0x81, 0xa1, b'X', 0xc0][..], &[][..])
            .unwrap();
        // Garbage before a good last entry (the last one is read at open: below).
        db.open_tree("journal")
            .unwrap()
            .insert(1u64.to_be_bytes(), &[0x92, 0x01][..])
            .unwrap();
        db.open_tree("journal")
            .unwrap()
            .insert(2u64.to_be_bytes(), rmp_serde::to_vec(&journal_entry(2)).unwrap())
            .unwrap();
        // The last set's redo record would put its values back at open (that is its job after
        // a torn write); this test is about garbage nobody wrote through the store.
        db.open_tree("redo").unwrap().clear().unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    let corrupt = |result: Result<(), StoreError>| {
        assert!(matches!(result, Err(StoreError::Corrupt { .. })), "{result:?}");
    };
    corrupt(store.account(&person(1)).map(drop));
    corrupt(store.fence(&leg(0)).map(drop));
    corrupt(store.settlement(&settlement_id(1)).map(drop));
    corrupt(store.live_holds().map(drop));
    corrupt(store.outbox().map(drop));
    corrupt(store.journal_from(0, 10).map(drop));
    corrupt(store.for_each_account(|_| ()).map(drop));
    assert_eq!(store.journal_from(1, 10).unwrap(), vec![(2, journal_entry(2))]);
    // A fence compare-and-set over a corrupt fence rejects the set rather than overwriting.
    corrupt(
        store
            .apply(&[Write::Fence {
                leg: leg(0),
                expected: None,
                new: fence(1),
            }])
            .map(drop),
    );
    // A garbled last journal entry leaves the next sequence number unknown: the store refuses
    // to open (rather than number new entries over a page it cannot read).
    drop(store);
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.open_tree("journal")
            .unwrap()
            .insert(3u64.to_be_bytes(), &[0xc1, 0x92, 0x01][..])
            .unwrap();
        db.flush().unwrap();
    }
    let opened = exchange_store::Store::open(dir.path(), &test_config());
    assert!(
        matches!(opened, Err(StoreError::Corrupt { tree: "journal", .. })),
        "{opened:?}"
    );
}

#[test]
fn a_journal_key_that_is_not_eight_bytes_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(1 << 20)
            .open()
            .unwrap();
        db.open_tree("journal").unwrap().insert(b"short", &[][..]).unwrap();
        db.flush().unwrap();
    }
    let result = exchange_store::Store::open(dir.path(), &test_config());
    assert!(matches!(result, Err(StoreError::Corrupt { tree: "journal", .. })));
}

#[test]
fn binding_serials_are_handed_out_once_and_the_stored_serial_only_grows() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = std::sync::Arc::new(open(dir.path()));
        // Concurrent readers (the node's account shards) never get the same serial.
        let handed: Vec<u64> = std::thread::scope(|scope| {
            let readers: Vec<_> = (0..8)
                .map(|_| {
                    let store = &store;
                    scope.spawn(move || (0..50).map(|_| store.binding_serial().unwrap()).collect::<Vec<_>>())
                })
                .collect();
            readers.into_iter().flat_map(|r| r.join().unwrap()).collect()
        });
        let distinct: BTreeSet<u64> = handed.iter().copied().collect();
        assert_eq!(distinct.len(), handed.len());
        // Binds apply out of order: the later, lower serial does not lower the stored one.
        store.apply(&[Write::BindingSerial(9)]).unwrap();
        store.apply(&[Write::BindingSerial(7)]).unwrap();
        store.flush_blocking().unwrap();
    }
    let store = open(dir.path());
    assert!(store.binding_serial().unwrap() >= 9);
}

#[test]
fn a_garbage_binding_serial_fails_open_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert(b"sys/binding_serial", &[1, 2, 3][..])
            .unwrap();
        db.flush().unwrap();
    }
    // The serial is loaded at open (binding ids are handed out from it): refuse to serve on it.
    let opened = exchange_store::Store::open(dir.path(), &exchange_store::StoreConfig::default());
    assert!(
        matches!(opened, Err(StoreError::Corrupt { tree: "meta", .. })),
        "{:?}",
        opened.err()
    );
}

/// Index writes add to the stored list: two handlers in different actors that each read the
/// index before the other wrote (a same-province bind and a registration for one grantee)
/// cannot lose each other's binding.
#[test]
fn index_writes_add_to_the_stored_list() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let grantee = person(1);
    store
        .apply(&[Write::GranteeIndex {
            person: grantee,
            bindings: vec![binding_id(1)],
        }])
        .unwrap();
    // Written from a list read while the index was still empty.
    store
        .apply(&[Write::GranteeIndex {
            person: grantee,
            bindings: vec![binding_id(2)],
        }])
        .unwrap();
    assert_eq!(
        store.bindings_of_grantee(&grantee).unwrap(),
        vec![binding_id(1), binding_id(2)]
    );
    // Two writes to one index in one set add up too, and an id written again changes nothing.
    store
        .apply(&[
            Write::GrantorIndex {
                person: grantee,
                bindings: vec![binding_id(3)],
            },
            Write::GrantorIndex {
                person: grantee,
                bindings: vec![binding_id(4), binding_id(3)],
            },
        ])
        .unwrap();
    assert_eq!(
        store.bindings_of_grantor(&grantee).unwrap(),
        vec![binding_id(3), binding_id(4)]
    );
    // And it survives a reopen as written.
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.bindings_of_grantee(&grantee).unwrap(),
        vec![binding_id(1), binding_id(2)]
    );
}

#[test]
fn only_entries_of_this_nodes_accounts_are_indexed_by_account() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.apply(&[Write::Account(account(0, 100))]).unwrap();
    // Person 1 has no account here (a coordinator's entry naming another node's grantor);
    // person 2's account is opened by the same set, after its entry.
    let applied = store
        .apply(&[
            Write::Journal(journal_entry(0)),
            Write::Journal(journal_entry(1)),
            Write::Journal(journal_entry(2)),
            Write::Account(account(2, 100)),
        ])
        .unwrap();
    let [first, second, third] = applied.journal_seqs[..] else {
        panic!("three journal entries, got {:?}", applied.journal_seqs);
    };
    assert_eq!(
        store.journal_of_account(&person(0), 0, 10).unwrap(),
        vec![(first, journal_entry(0))]
    );
    assert_eq!(store.journal_of_account(&person(1), 0, 10).unwrap(), vec![]);
    assert_eq!(
        store.journal_of_account(&person(2), 0, 10).unwrap(),
        vec![(third, journal_entry(2))]
    );
    // The journal itself has every entry.
    let all: Vec<u64> = store
        .journal_from(0, 10)
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect();
    assert_eq!(all, vec![first, second, third]);
}

/// Entries of `person(who)` only (the common `journal_entry` spreads them over four people).
fn entry_of(who: u64, index: u64) -> JournalEntry {
    JournalEntry {
        account: Some(person(who)),
        ..journal_entry(index)
    }
}

#[test]
fn a_long_history_moves_from_the_account_value_to_index_pages_and_reads_back_in_order() {
    // More entries than an account's value keeps (`ACCOUNT_JOURNAL_TAIL_MAX`), in sets of one
    // to three, some with the account written (before or after the entries) and some without:
    // every entry is listed once, newest first, across the tail and the pages, and after a
    // reopen.
    let dir = tempfile::tempdir().unwrap();
    let mut mine: Vec<(u64, JournalEntry)> = Vec::new();
    {
        let store = open(dir.path());
        store.apply(&[Write::Account(account(0, 100))]).unwrap();
        let mut index = 0u64;
        for set in 0..40u64 {
            let count = (set % 3) + 1;
            let mut writes: Vec<Write> = (0..count).map(|k| Write::Journal(entry_of(0, index + k))).collect();
            match set % 4 {
                0 => writes.push(Write::Account(account(0, 100 + set))),
                1 => writes.insert(0, Write::Account(account(0, 100 + set))),
                2 => writes.push(Write::Journal(entry_of(3, 9_000 + set))), // another person's
                _ => {}
            }
            let applied = store.apply(&writes).unwrap();
            let seqs = applied.journal_seqs.iter().take(count as usize);
            for (k, seq) in seqs.enumerate() {
                mine.push((*seq, entry_of(0, index + k as u64)));
            }
            index += count;
        }
        // One set with more than two tails' worth of entries, the account written twice in it
        // (before and after them): two spills in one set, each entry listed once.
        let many = 2 * exchange_store::ACCOUNT_JOURNAL_TAIL_MAX as u64 + 3;
        let mut writes = vec![Write::Account(account(0, 500))];
        writes.extend((0..many).map(|k| Write::Journal(entry_of(0, index + k))));
        writes.push(Write::Account(account(0, 501)));
        let applied = store.apply(&writes).unwrap();
        for (k, seq) in applied.journal_seqs.iter().enumerate() {
            mine.push((*seq, entry_of(0, index + k as u64)));
        }
        store.flush_blocking().unwrap();
        assert!(mine.len() > 3 * exchange_store::ACCOUNT_JOURNAL_TAIL_MAX);
        assert_eq!(store.account(&person(0)).unwrap(), Some(account(0, 501)));
    }
    mine.reverse();
    let store = open(dir.path());
    assert_eq!(store.journal_of_account(&person(0), 0, usize::MAX).unwrap(), mine);
    // Paged by sequence number, every page size, across tail and page boundaries.
    for limit in [1usize, 5, 16, 17, 33] {
        let mut read = Vec::new();
        let mut before = 0;
        loop {
            let page = store.journal_of_account(&person(0), before, limit).unwrap();
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            before = last.0;
            read.extend(page);
        }
        assert_eq!(read, mine, "limit {limit}");
    }
    // A `seq_before` inside a page, and a limit of 0.
    for cut in [1usize, 7, 20, 33, mine.len() - 1] {
        let before = mine[cut].0;
        assert_eq!(
            store.journal_of_account(&person(0), before, usize::MAX).unwrap(),
            mine[cut + 1..].to_vec(),
            "before {before}"
        );
    }
    assert_eq!(store.journal_of_account(&person(0), 0, 0).unwrap(), vec![]);
    // The other person has no account here: not indexed.
    assert_eq!(store.journal_of_account(&person(3), 0, 10).unwrap(), vec![]);
}

#[test]
fn a_store_in_the_layout_before_index_tails_reads_and_grows() {
    // Before index tails, an account value was the plain record and every entry had an index
    // key with an empty value. Such a store reads as it did and takes new entries.
    let dir = tempfile::tempdir().unwrap();
    let person_key = rmp_serde::to_vec(&person(0)).unwrap();
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        db.open_tree("accounts")
            .unwrap()
            .insert(&person_key, rmp_serde::to_vec(&account(0, 100)).unwrap())
            .unwrap();
        for seq in 1..=LEGACY_ENTRIES {
            db.open_tree("journal")
                .unwrap()
                .insert(seq.to_be_bytes(), rmp_serde::to_vec(&entry_of(0, seq)).unwrap())
                .unwrap();
            let mut key = person(0).as_bytes().to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            db.open_tree("account_journal").unwrap().insert(key, &[][..]).unwrap();
        }
        db.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.account(&person(0)).unwrap(), Some(account(0, 100)));
    // More new entries than a tail holds, one per set, half with the account written.
    let last = LEGACY_ENTRIES + 2 * exchange_store::ACCOUNT_JOURNAL_TAIL_MAX as u64;
    for seq in LEGACY_ENTRIES + 1..=last {
        let mut writes = vec![Write::Journal(entry_of(0, seq))];
        if seq % 2 == 0 {
            writes.push(Write::Account(account(0, seq)));
        }
        assert_eq!(store.apply(&writes).unwrap().journal_seqs, vec![seq]);
    }
    let newest_first: Vec<u64> = (1..=last).rev().collect();
    for limit in [1usize, 3, 16, 100] {
        let mut read = Vec::new();
        let mut before = 0;
        loop {
            let page = store.journal_of_account(&person(0), before, limit).unwrap();
            let Some(oldest) = page.last() else { break };
            before = oldest.0;
            for (seq, entry) in page {
                assert_eq!(entry, entry_of(0, seq));
                read.push(seq);
            }
        }
        assert_eq!(read, newest_first, "limit {limit}");
    }
    assert_eq!(store.account(&person(0)).unwrap(), Some(account(0, last)));
}

/// Entries of an account in the layout before index tails, in `a_store_in_the_layout_...`.
const LEGACY_ENTRIES: u64 = 20;

#[test]
fn the_journal_reads_from_any_sequence_number_inside_a_page() {
    // Sets of one to five entries: pages of several entries, read after every seq, with every
    // small limit, give exactly the entries after it.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut all = Vec::new();
    for set in 0..12u64 {
        let writes: Vec<Write> = (0..(set % 5) + 1)
            .map(|k| Write::Journal(journal_entry(set * 10 + k)))
            .collect();
        let applied = store.apply(&writes).unwrap();
        for (k, seq) in applied.journal_seqs.iter().enumerate() {
            all.push((*seq, journal_entry(set * 10 + k as u64)));
        }
    }
    let last = all.len() as u64;
    assert_eq!(store.last_journal_seq().unwrap(), last);
    for after in 0..=last + 1 {
        for limit in [0usize, 1, 2, 4, 100] {
            let expected: Vec<_> = all
                .iter()
                .filter(|(seq, _)| *seq > after)
                .take(limit)
                .cloned()
                .collect();
            assert_eq!(
                store.journal_from(after, limit).unwrap(),
                expected,
                "after {after}, limit {limit}"
            );
        }
    }
    drop(store);
    assert_eq!(open(dir.path()).last_journal_seq().unwrap(), last);
}
