//! Grouped durability: many concurrent applies share few flushes, and every waiter is answered.

mod common;

use std::sync::Arc;

use common::*;
use exchange_core::ledger::Write;
use exchange_store::StoreError;

/// Concurrent applies and durability waits, as the node's request handlers do them.
const CONCURRENT_APPLIES: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_share_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for index in 0..CONCURRENT_APPLIES {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let applied = store
                .apply(&[
                    Write::Account(account(index, index + 1)),
                    Write::Fence {
                        leg: leg(index),
                        expected: None,
                        new: fence((index % 5) as u8),
                    },
                    Write::LiveHold {
                        leg: leg(index),
                        live: true,
                    },
                    Write::Journal(journal_entry(index)),
                ])
                .unwrap();
            store.durable(applied.ticket).await.unwrap();
            // Acknowledged means flushed.
            assert!(store.stats().flushed_ticket >= applied.ticket);
            applied
        }));
    }
    let mut seqs = Vec::new();
    for task in tasks {
        let applied = task.await.unwrap();
        seqs.extend(applied.journal_seqs);
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=CONCURRENT_APPLIES).collect::<Vec<_>>());
    let stats = store.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.applies, CONCURRENT_APPLIES);
    assert_eq!(stats.flushed_ticket, CONCURRENT_APPLIES);
    assert!(stats.flushes >= 1);
    assert!(
        stats.flushes < CONCURRENT_APPLIES / 5,
        "{} flushes for {CONCURRENT_APPLIES} applies: not grouped",
        stats.flushes
    );
    assert!(stats.flush_micros_max <= stats.flush_micros_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_answers_at_once_when_already_flushed_and_refuses_unknown_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Ticket 0 (nothing applied yet) is trivially durable.
    store.durable(0).await.unwrap();
    let applied = store.apply(&[Write::Credit(credit_record(1, 10))]).unwrap();
    store.flush_blocking().unwrap();
    let flushes = store.stats().flushes;
    store.durable(applied.ticket).await.unwrap();
    assert_eq!(store.stats().flushes, flushes);
    assert!(matches!(
        store.durable(applied.ticket + 1).await,
        Err(StoreError::TicketNotApplied { .. })
    ));
    // An empty write set waits on the last ticket: replies computed from reads of unflushed
    // writes must wait for them too.
    let second = store.apply(&[Write::Credit(credit_record(2, 10))]).unwrap();
    let empty = store.apply(&[]).unwrap();
    assert_eq!(empty.ticket, second.ticket);
    store.durable(empty.ticket).await.unwrap();
    assert!(store.stats().flushed_ticket >= second.ticket);
}
