//! `lienthong server init --database-url`: the cluster database's password
//! never reaches the command line's record, an error or a log line.

use std::process::{Command, Output};

const SECRET: &str = "hunter2-very-secret";

fn lienthong(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lienthong"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "trace")
        .env_remove("LIENTHONG_DATABASE_URL")
        .env_remove("LIENTHONG_DATABASE_PASSWORD")
        .env_remove("LIENTHONG_DATABASE_PASSWORD_FILE")
        .output()
        .expect("lienthong runs")
}

fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn init(dir: &std::path::Path, database: &[&str]) -> Output {
    let mut args = vec![
        "server",
        "init",
        "--dir",
        "ss2",
        "--anchor",
        "anchor.bin",
        "--server",
        "VN/GOV/000102/ss2",
        "--address",
        "127.0.0.1:5501",
        "--token",
        "lt_token",
    ];
    args.extend_from_slice(database);
    lienthong(&args, dir)
}

#[test]
fn a_password_in_the_database_url_is_refused_without_being_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://lienthong:{SECRET}@127.0.0.1:1/lienthong");
    let out = init(dir.path(), &["--database-url", &url]);
    let said = said(&out);
    assert!(!out.status.success(), "{said}");
    assert!(!said.contains(SECRET), "{said}");
    assert!(said.contains("--database-password-file"), "{said}");
    assert!(
        !dir.path().join("ss2").exists(),
        "nothing is written: {said}"
    );
}

#[test]
fn a_wrong_password_is_refused_by_the_database_without_being_shown() {
    let Ok(url) = std::env::var("LIENTHONG_TEST_DATABASE_URL") else {
        println!("skipped: LIENTHONG_TEST_DATABASE_URL is not set");
        return;
    };
    let (bare, password) = lienthong_security_server::store::without_password(&url).unwrap();
    if password.is_none() {
        println!("skipped: the test database takes no password");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("db-password");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let out = init(
        dir.path(),
        &[
            "--database-url",
            &bare,
            "--database-password-file",
            file.to_str().unwrap(),
        ],
    );
    let said = said(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("password"),
        "the database's own words: {said}"
    );
    assert!(!said.contains(SECRET), "{said}");
    assert!(
        !dir.path().join("ss2").exists(),
        "no registration request was sent: {said}"
    );
}
