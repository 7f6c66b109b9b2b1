//! Moving a registry's SQLite store to PostgreSQL: every row arrives,
//! numbering continues after the copied rows, the old file cannot be
//! served by mistake, and a refused move changes nothing.

use super::{auth_request, base, issue, pg_target, server, settings, state, token};
use crate::model::{AuditFilter, Change};
use crate::store::postgres::TestDatabase as _;
use crate::store::to_postgres::{MOVED, move_to_postgres};
use crate::store::{Database, PgStore, SqliteStore, Store, StoreError};

use super::publication::{LONG, record};

fn everything(s: &dyn Store) -> String {
    let audit = s
        .audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .unwrap();
    format!(
        "{}|{:?}|{:?}|{:?}|{:?}",
        state(s),
        audit,
        s.last_publication().unwrap(),
        s.publication_after(0).unwrap().map(|p| p.signed),
        s.alarms().unwrap(),
    )
}

#[test]
fn a_registry_moved_to_postgres_holds_every_row_and_goes_on_numbering() {
    let Some(db) = pg_target() else {
        eprintln!("skipped: LIENTHONG_TEST_DATABASE_URL is not set (.ci/run sets it)");
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let before = {
        let s = SqliteStore::create(&home.path().join("registry.db"), &settings()).unwrap();
        s.apply_all("officer", &base()).unwrap();
        token(&s, [7; 32]);
        let req = auth_request([7; 32]);
        let id = s
            .apply("server", &Change::Submit(Box::new(req.clone())))
            .unwrap()
            .request_id
            .unwrap();
        s.apply(
            "officer",
            &Change::Approve {
                id,
                note: "<b>checked</b> by phone".into(),
                issued: issue(&req),
            },
        )
        .unwrap();
        assert!(s.take_lease("node-1", LONG).unwrap());
        s.record_publication("node-1", &record(1), b"signed v1")
            .unwrap();
        s.record_alarm(&server(), "history rewritten").unwrap();
        everything(&s)
    };

    // A database that already holds a registry is refused, and the
    // SQLite store stays where it was.
    let taken = db.scratch().unwrap();
    PgStore::create(&taken, &settings()).unwrap();
    let refused = move_to_postgres(home.path(), &taken).unwrap_err();
    assert!(
        matches!(&refused, StoreError::Conflict(m) if m.contains("already holds a registry")),
        "{refused}"
    );
    assert!(home.path().join("registry.db").exists());

    let target = db.scratch().unwrap();
    let moved = move_to_postgres(home.path(), &target).unwrap();
    assert_eq!(moved.version, Some(1));
    assert!(moved.copied.rows() > 10, "{:?}", moved.copied);
    assert!(!home.path().join("registry.db").exists());
    assert!(home.path().join(MOVED).exists(), "kept as a backup");

    let pg = PgStore::open(&target).unwrap();
    assert_eq!(everything(&pg), before, "every row, as it was");
    // Numbering goes on after the copied rows: the next audit record and
    // request take the next numbers, not the first.
    let newest = |s: &dyn Store| {
        s.audit(&AuditFilter {
            limit: 1000,
            ..AuditFilter::default()
        })
        .unwrap()
        .last()
        .expect("audited")
        .id
    };
    let last = newest(&pg);
    token(&pg, [8; 32]);
    assert_eq!(newest(&pg), last + 1);
    let again = pg
        .apply("server", &Change::Submit(Box::new(auth_request([8; 32]))))
        .unwrap()
        .request_id
        .unwrap();
    assert_eq!(again, 2);

    // The home can no longer be served from its old file, and says why.
    let e = Database::Home.open(home.path()).unwrap_err().to_string();
    assert!(
        e.contains("moved to PostgreSQL") && e.contains("--database-url"),
        "{e}"
    );
    // Moving twice finds nothing to move.
    assert!(move_to_postgres(home.path(), &db.scratch().unwrap()).is_err());
}
