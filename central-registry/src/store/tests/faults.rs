//! The PostgreSQL store when the database misbehaves: a refusal is said
//! at once in the database's words, never with the password; a
//! connection lost in the middle of a change leaves nothing of it, the
//! operator's command fails saying so, and the store goes on.

use std::time::{Duration, Instant};

use super::{base, pg_target, settings, state};
use crate::store::postgres::{CONNECT_TIMEOUT, TestDatabase as _};
use crate::store::{PgStore, Store};

#[test]
fn a_wrong_password_is_refused_at_once_in_the_databases_words_never_shown() {
    let Some(t) = pg_target() else { return };
    let t = t.scratch().unwrap();
    let wrong = "not-the-password-7f3a9c";
    let started = Instant::now();
    let e = match PgStore::open(&t.clone().with_password(wrong)) {
        Ok(_) => {
            println!("skipped: the test database does not check passwords");
            return;
        }
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("refused this node") && e.contains("password authentication failed"),
        "{e}"
    );
    assert!(!e.contains(wrong), "the password is never shown: {e}");
    assert!(
        started.elapsed() < CONNECT_TIMEOUT,
        "a refusal is not waited on: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_connection_lost_in_the_middle_of_a_change_leaves_nothing_of_it() {
    let Some(t) = pg_target() else { return };
    let t = t.scratch().unwrap();
    let store = PgStore::create(&t, &settings()).unwrap();
    let changes = base();
    store.apply("officer", &changes[0]).unwrap();
    let before = state(&store);

    // The change's last statement, its audit record, stalls: the member's
    // row and the change counter are written, not committed, when the
    // connection is cut.
    t.execute(
        "CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(60); RETURN NEW; END $$;
         CREATE TRIGGER stall BEFORE INSERT ON audit FOR EACH ROW EXECUTE FUNCTION stall();",
    )
    .unwrap();
    let cutter = {
        let mut client = t.connect().unwrap();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let cut = client
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                          WHERE usename = current_user AND wait_event = 'PgSleep'
                            AND query LIKE 'INSERT INTO audit%'",
                        &[],
                    )
                    .unwrap();
                if !cut.is_empty() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        })
    };
    let refused = store.apply("officer", &changes[1]).unwrap_err().to_string();
    assert!(
        cutter.join().unwrap(),
        "the stalled change's connection was cut"
    );
    t.execute("DROP TRIGGER stall ON audit").unwrap();
    // PostgreSQL sends why before it closes; a client under load may
    // read the close first.
    assert!(
        refused.contains("terminating connection") || refused.contains("connection closed"),
        "the operator's command says what happened: {refused}"
    );
    assert_eq!(state(&store), before, "nothing of the change is left");
    // The store goes on, on a fresh connection: the same change applies.
    store.apply("officer", &changes[1]).unwrap();
    assert_ne!(state(&store), before);
}
