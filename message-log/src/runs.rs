//! The lookup index: which records are about a data subject, and which
//! belong to an exchange (a message id), as sorted runs (a small
//! log-structured merge tree inside `index.db`).
//!
//! Each entry is (run, key, record): the key is [`subject_key`] of the
//! subject's keyed hash (never negative) or [`message_key`] of the message
//! id (always negative), 8 bytes either way, so both kinds share one table
//! and each batch one sorted insert. A key collision only adds a
//! candidate, which the reader then drops.
//!
//! A B-tree keyed by a hash takes every new record at a
//! random place: each indexing batch rewrites pages all over it, and the
//! cost grows with the log (the whole index was rewritten into the WAL
//! about once a batch at a million records). Here each entry
//! (`runs`: run, key, leaf index) goes into the *run* of its records'
//! range instead: level 0 runs cover 2^[`RUN_BITS`] aligned records, and when
//! [`FAN`] runs of one level are complete they are merged into one run of
//! the next level, up to level [`TOP`]. A batch then touches only the pages
//! of the newest runs, each entry is rewritten [`TOP`] times in all, and a
//! lookup probes each live run once (about 100 probes at 10⁷ records).
//!
//! Why one merge level of 64 runs: with two levels of 16 (runs of 2^16,
//! then 2^20 records), each merge into the top level sorted and moved two
//! million entries, more than SQLite's page cache holds, and at 10⁷
//! records the indexer took 6.2–6.5 µs a record against 2.7–3.0 at 10⁶.
//! One level of 64 rewrites each entry once, each merge (half a million
//! entries) fits the cache, and at 10⁷ the indexer took 3.9 µs a record;
//! the extra probes cost less than they save (10 records by subject, with
//! proofs, in 232 µs against 297). See performance.md, "Records' places in
//! a file".
//!
//! Like the rest of the index, it is derived: rebuilt with it, checked by
//! the self-audit (every record has exactly the entries its keys give), and
//! never believed — a reader re-derives the subject or message id of every
//! record it returns.

use rusqlite::{Connection, Transaction, params};

use crate::LogError;

/// A level-0 run covers 2^RUN_BITS records.
pub const RUN_BITS: u32 = 12;
/// Runs merged into one of the next level: 2^FAN_BITS.
const FAN_BITS: u32 = 6;
pub const FAN: u64 = 1 << FAN_BITS;
/// The highest level (runs of 2^(RUN_BITS + TOP·FAN_BITS) records = 2^18).
pub const TOP: u32 = 1;

pub const SCHEMA: &str = r#"
    CREATE TABLE IF NOT EXISTS runs (
        run        INTEGER NOT NULL,
        key        INTEGER NOT NULL,
        leaf_index INTEGER NOT NULL,
        PRIMARY KEY (run, key, leaf_index)
    ) STRICT, WITHOUT ROWID;
"#;

fn bits(level: u32) -> u32 {
    RUN_BITS + FAN_BITS * level
}

/// The id of the level-`level` run holding `leaf`.
fn run_id(level: u32, leaf: u64) -> i64 {
    (i64::from(level) << 48) | (leaf >> bits(level)) as i64
}

/// The lookup key of a keyed subject hash: its first eight bytes, the
/// sign bit cleared.
pub fn subject_key(subject_hash: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    let n = subject_hash.len().min(8);
    b[..n].copy_from_slice(&subject_hash[..n]);
    i64::from_be_bytes(b) & i64::MAX
}

/// The lookup key every retention record is also found under (the newest
/// is what a citizen's trace shows: [`crate::LogReader::latest_retention`]).
pub const RETENTION_KEY: i64 = i64::MIN;

/// The lookup key of a message id: the first eight bytes of its SHA-256
/// (under a label of its own), the sign bit set. Unkeyed: a message id is
/// not personal data, and a consumer that picks ids colliding with another
/// exchange's only adds candidates its lookups drop.
pub fn message_key(message_id: &str) -> i64 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"lienthong message id\0");
    ctx.update(message_id.as_bytes());
    let digest = ctx.finish();
    let b: [u8; 8] = digest.as_ref()[..8].try_into().expect("32 bytes");
    i64::from_be_bytes(b) | i64::MIN
}

/// The records run `run` covers.
fn range_of(run: i64) -> std::ops::Range<u64> {
    let level = (run >> 48) as u32;
    let first = ((run & ((1 << 48) - 1)) as u64) << bits(level);
    first..first + (1u64 << bits(level))
}

/// The run that holds `leaf` in an index of `size` records: the highest
/// level whose aligned range around it is complete.
pub fn run_for(leaf: u64, size: u64) -> i64 {
    for level in (1..=TOP).rev() {
        let span = 1u64 << bits(level);
        if (leaf / span + 1) * span <= size {
            return run_id(level, leaf);
        }
    }
    run_id(0, leaf)
}

/// The runs of an index of `size` records, newest (highest records) first.
pub fn live_runs(size: u64) -> Vec<i64> {
    let mut runs = Vec::new();
    let mut covered = 0u64;
    for level in (0..=TOP).rev() {
        let span = 1u64 << bits(level);
        let end = if level == 0 {
            size.div_ceil(span) * span
        } else {
            size / span * span
        };
        let mut at = covered;
        while at < end {
            runs.push(run_id(level, at));
            at += span;
        }
        covered = covered.max(end);
    }
    runs.reverse();
    runs
}

/// Record `leaf`'s entry under lookup key `key`, for [`add_all`].
pub fn entry(leaf: u64, key: i64) -> (i64, i64, i64) {
    (run_id(0, leaf), key, leaf as i64)
}

/// Adds `entries` (made by [`entry`]; the index then holds records up
/// to the last of them) in the table's order: a batch's entries land together
/// in its newest runs, each page taken once, instead of at random places
/// one after another.
pub fn add_all(tx: &Transaction<'_>, entries: &mut [(i64, i64, i64)]) -> Result<(), LogError> {
    entries.sort_unstable();
    let mut chunks = entries.chunks_exact(ROWS_PER_INSERT);
    if chunks.len() > 0 {
        let mut insert = tx.prepare_cached(&insert_rows(ROWS_PER_INSERT))?;
        for chunk in &mut chunks {
            for (n, (run, key, leaf)) in chunk.iter().enumerate() {
                insert.raw_bind_parameter(3 * n + 1, run)?;
                insert.raw_bind_parameter(3 * n + 2, key)?;
                insert.raw_bind_parameter(3 * n + 3, leaf)?;
            }
            insert.raw_execute()?;
        }
    }
    let mut insert = tx.prepare_cached(&insert_rows(1))?;
    for (run, key, leaf) in chunks.remainder() {
        insert.execute(params![run, key, leaf])?;
    }
    Ok(())
}

/// Entries one statement of [`add_all`] inserts: one statement per entry
/// costs more in SQLite's statement machinery than in its B-tree.
const ROWS_PER_INSERT: usize = 64;

/// The statement inserting `rows` entries.
fn insert_rows(rows: usize) -> String {
    let mut sql = String::from("INSERT INTO runs (run, key, leaf_index) VALUES ");
    for n in 0..rows {
        if n > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(?{}, ?{}, ?{})", 3 * n + 1, 3 * n + 2, 3 * n + 3));
    }
    sql
}

/// Merges the runs completed when the index grew from `old` to `new`
/// records.
pub fn merge(tx: &Transaction<'_>, old: u64, new: u64) -> Result<(), LogError> {
    for level in 0..TOP {
        let span = 1u64 << bits(level + 1);
        let mut end = (old / span + 1) * span;
        while end <= new {
            let first = end - span;
            move_runs(
                tx,
                run_id(level, first),
                run_id(level, end),
                run_id(level + 1, first),
            )?;
            end += span;
        }
    }
    Ok(())
}

/// Moves the entries of runs `[lo, hi)` into run `to`, in key order (so
/// the new run is written front to back).
fn move_runs(tx: &Transaction<'_>, lo: i64, hi: i64, to: i64) -> Result<(), LogError> {
    tx.prepare_cached(
        "INSERT INTO runs (run, key, leaf_index)
         SELECT ?3, key, leaf_index FROM runs WHERE run >= ?1 AND run < ?2
         ORDER BY key, leaf_index",
    )?
    .execute(params![lo, hi, to])?;
    tx.prepare_cached("DELETE FROM runs WHERE run >= ?1 AND run < ?2")?
        .execute(params![lo, hi])?;
    Ok(())
}

/// Forgets entries at and after `size`, and splits the runs that are no
/// longer complete back into the runs an index of `size` records has.
pub fn cut_back(tx: &Transaction<'_>, size: u64) -> Result<(), LogError> {
    tx.execute("DELETE FROM runs WHERE leaf_index >= ?1", [size as i64])?;
    for level in 1..=TOP {
        let span = 1u64 << bits(level);
        // The one run of this level that may now be incomplete.
        let first = size / span * span;
        let run = run_id(level, first);
        let entries: Vec<(i64, i64)> = tx
            .prepare("SELECT key, leaf_index FROM runs WHERE run = ?1")?
            .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        tx.execute("DELETE FROM runs WHERE run = ?1", [run])?;
        let mut insert =
            tx.prepare("INSERT INTO runs (run, key, leaf_index) VALUES (?1, ?2, ?3)")?;
        for (k, leaf) in entries {
            insert.execute(params![run_for(leaf as u64, size), k, leaf])?;
        }
    }
    Ok(())
}

/// Forgets the entries of records `[from, to)` (retention pruned them).
pub fn remove_range(conn: &Connection, from: u64, to: u64, size: u64) -> Result<(), LogError> {
    for run in overlapping(from, to, size) {
        let (lo, hi) = within(run, from, to);
        conn.prepare_cached(
            "DELETE FROM runs WHERE run = ?1 AND leaf_index >= ?2 AND leaf_index < ?3",
        )?
        .execute(params![run, lo, hi])?;
    }
    Ok(())
}

/// The part of records `[from, to)` that run `run` covers: an entry a run
/// holds for a record outside its range is found by no lookup, so it
/// counts for nothing anywhere (an entry moved to a neighbouring run is
/// then a missing one).
fn within(run: i64, from: u64, to: u64) -> (i64, i64) {
    let range = range_of(run);
    (
        from.max(range.start) as i64,
        to.min(range.end).max(from.max(range.start)) as i64,
    )
}

/// The live runs that may hold entries of records `[from, to)`.
fn overlapping(from: u64, to: u64, size: u64) -> Vec<i64> {
    let mut runs: Vec<i64> = Vec::new();
    let mut at = from;
    while at < to.min(size) {
        let run = run_for(at, size);
        let level = (run >> 48) as u32;
        runs.push(run);
        at = ((at >> bits(level)) + 1) << bits(level);
    }
    runs
}

/// Visits the records under lookup key `key` in an index of `size`
/// records, newest first, until `visit` says it has enough (returns
/// `false`): the live runs cover disjoint ranges, newest first, so a lookup
/// of a page of a subject with thousands of records reads about a page of
/// entries.
pub fn lookup(
    conn: &Connection,
    key: i64,
    size: u64,
    mut visit: impl FnMut(u64) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let mut stmt = conn.prepare_cached(
        "SELECT leaf_index FROM runs WHERE run = ?1 AND key = ?2 ORDER BY leaf_index DESC",
    )?;
    for run in live_runs(size) {
        let held = range_of(run);
        let mut rows = stmt.query(params![run, key])?;
        let mut last = None;
        while let Some(row) = rows.next()? {
            let leaf = row.get::<_, i64>(0)?;
            // An entry a run cannot hold (edited in) names nothing.
            let Ok(leaf) = u64::try_from(leaf) else {
                continue;
            };
            if !held.contains(&leaf) || leaf >= size {
                continue;
            }
            // A run holds a record once; a key collision is a candidate
            // like any other (the reader checks each).
            if last == Some(leaf) {
                continue;
            }
            last = Some(leaf);
            if !visit(leaf)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The keys the live runs hold for each record of `[from, to)`.
pub fn entries(
    conn: &Connection,
    from: u64,
    to: u64,
    size: u64,
) -> Result<std::collections::HashMap<u64, Vec<i64>>, LogError> {
    let mut out: std::collections::HashMap<u64, Vec<i64>> = Default::default();
    for run in overlapping(from, to, size) {
        let (lo, hi) = within(run, from, to);
        let mut stmt = conn.prepare_cached(
            "SELECT leaf_index, key FROM runs
             WHERE run = ?1 AND leaf_index >= ?2 AND leaf_index < ?3",
        )?;
        let rows = stmt.query_map(params![run, lo, hi], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (leaf, key) = row?;
            out.entry(leaf).or_default().push(key);
        }
    }
    Ok(out)
}

/// Whether the index holds record `leaf`'s entry under `key`.
pub fn holds(conn: &Connection, leaf: u64, key: i64, size: u64) -> Result<bool, LogError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM runs WHERE run = ?1 AND key = ?2 AND leaf_index = ?3",
        )?
        .query_row(params![run_for(leaf, size), key, leaf as i64], |r| r.get(0))?;
    Ok(n > 0)
}

/// Entries the live runs hold for records `[from, to)`.
pub fn count(conn: &Connection, from: u64, to: u64, size: u64) -> Result<u64, LogError> {
    let mut n = 0;
    for run in overlapping(from, to, size) {
        let (lo, hi) = within(run, from, to);
        n += conn
            .prepare_cached(
                "SELECT count(*) FROM runs WHERE run = ?1 AND leaf_index >= ?2 AND leaf_index < ?3",
            )?
            .query_row(params![run, lo, hi], |r| r.get::<_, i64>(0))? as u64;
    }
    Ok(n)
}

/// Entries for records at or after `size`, in the runs of every level
/// from the one holding the last record on (only those can hold them).
pub fn past_end(conn: &Connection, size: u64) -> Result<u64, LogError> {
    let mut n = 0;
    for level in 0..=TOP {
        n += conn
            .prepare_cached(
                "SELECT count(*) FROM runs WHERE run >= ?1 AND run < ?2 AND leaf_index >= ?3",
            )?
            .query_row(
                params![
                    run_id(level, size.saturating_sub(1)),
                    run_id(level + 1, 0),
                    size as i64
                ],
                |r| r.get::<_, i64>(0),
            )? as u64;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry moved into a neighbouring run is found by no lookup, and
    /// counted by nothing: to the audit it is a missing one.
    #[test]
    fn an_entry_in_another_runs_range_counts_for_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let n = 3 << RUN_BITS;
        let tx = conn.transaction().unwrap();
        let mut all: Vec<_> = (0..n).map(|i| entry(i, subject_key(&[1; 32]))).collect();
        add_all(&tx, &mut all).unwrap();
        merge(&tx, 0, n).unwrap();
        tx.commit().unwrap();
        let moved = (1 << RUN_BITS) - 1;
        conn.execute(
            "UPDATE runs SET run = run + 1 WHERE leaf_index = ?1",
            [moved as i64],
        )
        .unwrap();
        assert!(!entries(&conn, 0, n, n).unwrap().contains_key(&moved));
        assert_eq!(count(&conn, 0, n, n).unwrap(), n - 1);
        let mut found = Vec::new();
        lookup(&conn, subject_key(&[1; 32]), n, |leaf| {
            found.push(leaf);
            Ok(true)
        })
        .unwrap();
        assert!(!found.contains(&moved));
        assert_eq!(found.len() as u64, n - 1);
    }

    #[test]
    fn subject_and_message_keys_never_meet() {
        for i in 0..1000u32 {
            let subject =
                subject_key(ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes()).as_ref());
            assert!(subject >= 0);
            assert!(message_key(&i.to_string()) < 0);
            assert_ne!(message_key(&i.to_string()), RETENTION_KEY);
        }
        assert_ne!(message_key("m-1"), message_key("m-2"));
    }

    #[test]
    fn live_runs_cover_every_record_once() {
        for size in [
            0,
            1,
            4095,
            4096,
            4097,
            65_535,
            65_536,
            65_537,
            1 << 20,
            (1 << 20) + 70_000,
            10_000_000,
        ] {
            let runs = live_runs(size);
            let mut sample: Vec<u64> = (0..size).step_by(997).collect();
            sample.extend(size.checked_sub(1));
            for leaf in sample {
                assert!(
                    runs.contains(&run_for(leaf, size)),
                    "record {leaf} of {size}"
                );
            }
            let mut sorted = runs.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), runs.len(), "no run twice at {size}");
        }
        // 38 runs of 2^18 and at most 63 of 2^12.
        assert!(live_runs(10_000_000).len() <= 38 + 63);
    }

    #[test]
    fn merges_and_cuts_keep_every_entry_findable() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        let subject = |i: u64| subject_key(&[(i % 7) as u8; 32]);
        // Every record also has its message's entry (two records a message).
        let message = |i: u64| message_key(&format!("m-{}", i / 2));
        // Past one complete top-level run, cut back below it.
        let span = 1u64 << bits(TOP);
        let (n, cut) = (span + 7_000, span - 1_000);
        let mut size = 0;
        while size < n {
            let tx = conn.transaction().unwrap();
            let next = (size + 30_001).min(n);
            let mut entries: Vec<_> = (size..next)
                .flat_map(|i| [entry(i, subject(i)), entry(i, message(i))])
                .collect();
            add_all(&tx, &mut entries).unwrap();
            merge(&tx, size, next).unwrap();
            tx.commit().unwrap();
            size = next;
        }
        let all = |conn: &Connection, size| {
            let mut found = Vec::new();
            lookup(conn, subject(3), size, |leaf| {
                found.push(leaf);
                Ok(true)
            })
            .unwrap();
            found
        };
        let expected: Vec<u64> = (0..n).rev().filter(|i| i % 7 == 3).collect();
        assert_eq!(all(&conn, n), expected);
        // Newest first across runs, and it stops when asked to.
        let mut first = Vec::new();
        lookup(&conn, subject(3), n, |leaf| {
            first.push(leaf);
            Ok(first.len() < 5)
        })
        .unwrap();
        assert_eq!(first, expected[..5]);
        assert_eq!(count(&conn, 0, n, n).unwrap(), 2 * n);
        let mut exchange = Vec::new();
        let m = span / 2 + 1;
        lookup(&conn, message(m), n, |leaf| {
            exchange.push(leaf);
            Ok(true)
        })
        .unwrap();
        assert_eq!(exchange, [m, m - 1]);
        // Cut back below a merged run: what remains is findable again.
        let tx = conn.transaction().unwrap();
        cut_back(&tx, cut).unwrap();
        tx.commit().unwrap();
        let expected: Vec<u64> = (0..cut).rev().filter(|i| i % 7 == 3).collect();
        assert_eq!(all(&conn, cut), expected);
        assert!(holds(&conn, cut - 1, subject(cut - 1), cut).unwrap());
        assert!(holds(&conn, cut - 1, message(cut - 1), cut).unwrap());
        assert_eq!(past_end(&conn, cut).unwrap(), 0);
        // Entries edited in where no run holds them name nothing.
        let live = live_runs(cut);
        for (run, leaf) in [
            (live[0], -1),
            (live[0], 1i64 << 40),
            (live[0], cut as i64),
            (live[live.len() - 1], 5_000),
        ] {
            conn.execute(
                "INSERT OR IGNORE INTO runs (run, key, leaf_index) VALUES (?1, ?2, ?3)",
                params![run, subject(3), leaf],
            )
            .unwrap();
        }
        assert_eq!(all(&conn, cut), expected);
        // Those past the end are what the audit counts there.
        assert_eq!(past_end(&conn, cut).unwrap(), 2);
    }
}
