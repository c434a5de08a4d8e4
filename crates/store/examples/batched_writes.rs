//! Storage ceiling: flushed write sets per second when `batch` of them share one flush.
//!
//! `cargo run --release -p exchange-store --example batched_writes -- [writes] [batch...]`

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let writes: u64 = args.next().map(|text| text.parse()).transpose()?.unwrap_or(20_000);
    let mut batches: Vec<u64> = args.map(|text| text.parse()).collect::<Result<_, _>>()?;
    if batches.is_empty() {
        batches = vec![1, 10, 100, 1_000];
    }
    for batch in batches {
        // Fewer single-write flushes: they are slow and the rate is clear after a few thousand.
        let writes = if batch == 1 { writes.min(2_000) } else { writes };
        let dir = tempfile::tempdir()?;
        let figures = exchange_store::bench_batched_writes(dir.path(), writes, batch)?;
        println!(
            "batch {:>5}: {:>7} write sets, {:>6} flushes, {:>7} ms, {:>9.0} write sets/s, {} ms in flushes, longest flush {} us",
            figures.batch,
            figures.writes,
            figures.flushes,
            figures.elapsed_ms,
            figures.writes_per_s,
            figures.flush_micros_total / 1_000,
            figures.flush_micros_max
        );
    }
    Ok(())
}
