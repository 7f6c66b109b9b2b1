//! Runs every `sh` block of docs/operator-guide.md, in order, as one
//! script against the real binary: the guide cannot rot.
//!
//! A block fenced ```` ```sh grpcio ```` needs a Python with `grpcio` and
//! `grpc_tools` (Debian `python3-grpc-tools`); one fenced
//! ```` ```sh postgres ```` needs a PostgreSQL database
//! (`LIENTHONG_TEST_DATABASE_URL`, given `DB_URL` and `DB_PASSWORD_FILE`
//! for a fresh schema). `.ci/run` provides both; elsewhere the test says
//! which blocks it skips, and why, and runs the rest.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A command block of the guide: its fence's tags after `sh`, its text.
struct Block {
    tags: Vec<String>,
    text: String,
}

/// The `sh` blocks of a Markdown document, in order.
fn sh_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in markdown.lines() {
        let line = line.trim_end();
        match &mut current {
            None => {
                let mut words = line.split_whitespace();
                if words.next() == Some("```sh") {
                    current = Some(Block {
                        tags: words.map(str::to_owned).collect(),
                        text: String::new(),
                    });
                }
            }
            Some(_) if line == "```" => blocks.extend(current.take()),
            Some(b) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
        }
    }
    blocks
}

/// A Python that can run the guide's gRPC client: `python3` on the path,
/// else Debian's (where a `python3` of another distribution comes first
/// on the path).
fn python_with_grpc() -> Option<PathBuf> {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|python| {
            Command::new(python)
                .args(["-c", "import grpc, grpc_tools.protoc"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// The databases of the guide's high-availability sections, from the
/// test database: each URL without its password, in a fresh schema.
struct Databases {
    /// `DB_URL`: the server cluster's (section 7).
    cluster: String,
    /// `REGISTRY_DB_URL`: the registry nodes' (section 8).
    registry: String,
    /// `DB_PASSWORD_FILE`.
    password_file: PathBuf,
}

fn databases(dir: &Path) -> Option<Databases> {
    let url = std::env::var("LIENTHONG_TEST_DATABASE_URL").ok()?;
    let (bare, password) = lienthong_security_server::store::without_password(&url)
        .expect("LIENTHONG_TEST_DATABASE_URL is a postgres:// URL");
    let sep = if bare.contains('?') { '&' } else { '?' };
    let in_fresh_schema = |what: &str| {
        let schema = lienthong_integration_tests::nodes::fresh_schema(&url, what);
        format!("{bare}{sep}options=-c%20search_path%3D{schema}")
    };
    let password_file = dir.join("db-password");
    std::fs::write(
        &password_file,
        format!("{}\n", password.unwrap_or_default()),
    )
    .unwrap();
    Some(Databases {
        cluster: in_fresh_schema("guide"),
        registry: in_fresh_schema("guidereg"),
        password_file,
    })
}

/// What the script printed between the marker of the block holding
/// `command` and the next marker.
fn output_of<'a>(stdout: &'a str, blocks: &[&Block], command: &str) -> &'a str {
    let i = blocks
        .iter()
        .position(|b| b.text.contains(command))
        .unwrap_or_else(|| panic!("no block runs {command:?}"));
    let start = stdout
        .find(&marker(i))
        .unwrap_or_else(|| panic!("block {i} did not run"));
    let rest = &stdout[start..];
    match rest.find(&marker(i + 1)) {
        Some(end) => &rest[..end],
        None => rest,
    }
}

/// Printed before block `i` (after a newline: the block before may end
/// without one).
fn marker(i: usize) -> String {
    format!("\n=== guide block {i}\n")
}

#[test]
fn every_command_of_the_operator_guide_works() {
    let guide = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operator-guide.md"),
    )
    .unwrap();
    let blocks = sh_blocks(&guide);
    assert!(blocks.len() >= 10, "the guide has its command blocks");
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_lienthong")).parent().unwrap();
    let mut path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let python = python_with_grpc();
    match &python {
        Some(p) if p != Path::new("python3") => {
            // The guide says `python3`: let it be this one.
            let shim = dir.path().join(".python");
            std::fs::create_dir(&shim).unwrap();
            std::os::unix::fs::symlink(p, shim.join("python3")).unwrap();
            path = format!("{}:{path}", shim.display());
        }
        Some(_) => {}
        None => eprintln!(
            "skipping the guide's `sh grpcio` blocks (its Python client's call and refusal): no python3 imports grpc and grpc_tools; install Debian's python3-grpc-tools (.ci/run does)"
        ),
    }
    let database = databases(secrets.path());
    if database.is_none() {
        eprintln!(
            "skipping the guide's `sh postgres` blocks (sections 7 and 8: a security server cluster, a registry on two nodes): LIENTHONG_TEST_DATABASE_URL is not set (.ci/run sets it)"
        );
    }
    let runs = |b: &Block| {
        b.tags.iter().all(|t| match t.as_str() {
            "grpcio" => python.is_some(),
            "postgres" => database.is_some(),
            other => panic!("unknown block tag {other:?} in the guide"),
        })
    };
    let run: Vec<&Block> = blocks.iter().filter(|b| runs(b)).collect();
    let script = format!(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{}",
        run.iter()
            .enumerate()
            .map(|(i, b)| format!("printf '{}'\n{}", marker(i).replace('\n', "\\n"), b.text))
            .collect::<Vec<_>>()
            .join("\n")
    );

    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("LIENTHONG_TOKEN")
        .env_remove("LIENTHONG_ANCHOR")
        .env_remove("LIENTHONG_DATABASE_URL")
        .env_remove("LIENTHONG_DATABASE_PASSWORD");
    const VARS: [&str; 14] = [
        "REGISTRY",
        "REGISTRY_ADMIN",
        "REGISTRY2",
        "REGISTRY2_ADMIN",
        "SS1",
        "SS1_SYSTEMS",
        "SS1_ADMIN",
        "BACKEND",
        "BIZ",
        "BIZ_SYSTEMS",
        "BIZ_ADMIN",
        "SS2",
        "SS2_SYSTEMS",
        "SS2_ADMIN",
    ];
    let addresses = lienthong_integration_tests::nodes::free_addresses::<{ VARS.len() }>();
    for (var, addr) in VARS.into_iter().zip(addresses) {
        cmd.env(var, addr.to_string());
    }
    if let Some(db) = &database {
        cmd.env("DB_URL", &db.cluster)
            .env("REGISTRY_DB_URL", &db.registry)
            .env("DB_PASSWORD_FILE", &db.password_file);
    }
    let out = cmd.output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the guide failed:\n{stdout}\n{stderr}"
    );
    // What the guide promises along the way.
    for expected in [
        "the registration: approved",
        "client VN/GOV/000102/population: approved",
        "client VN/GOV/000305/business: approved",
        "granted: VN/GOV/000305/business may call",
        "configuration version",
        "certificate revoked",
        "RevokeCertificate",
        "\"status\":\"ok\"",
        "lienthong_configuration_version",
        "503",
        "serving population.v1.PersonRegistry and tax.v1.TaxRegistry",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    if python.is_some() {
        let call = output_of(&stdout, &run, "python3 get_person.py 001190012345");
        for expected in [
            "answer: 001190012345 Nguyễn Thị Lan",
            "refused: PERMISSION_DENIED server.serverproxy.access_denied\n",
            "may not call VN/GOV/000102/population/population.v1.PersonRegistry/ListPersons",
        ] {
            assert!(call.contains(expected), "missing {expected:?} in:\n{call}");
        }
    }
    if let Some(db) = &database {
        let ss1 = output_of(&stdout, &run, "--dir ss1 --provider-listen");
        assert!(
            ss1.contains("carried over from server.db into the cluster's database")
                && ss1.contains("grant VN/GOV/000305/business may call VN/GOV/000102/population/population.v1.PersonRegistry (method GetPerson)")
                && ss1.contains("backend VN/GOV/000102/population/population.v1.PersonRegistry -> http://"),
            "ss1 joining the cluster says what it carried over:\n{ss1}"
        );
        let ss2 = output_of(&stdout, &run, "acl list --dir ss2");
        assert!(
            ss2.contains("VN/GOV/000305/business")
                && ss2.contains("GetPerson")
                && ss2.contains("policy shared with the cluster through postgres://"),
            "ss2 shows ss1's grant and says the policy is shared:\n{ss2}"
        );
        let moved = output_of(&stdout, &run, "registry move-store");
        assert!(
            moved.contains("rows moved to postgres://")
                && moved.contains("registry.db.moved is kept as a backup"),
            "the registry's store moves and says where:\n{moved}"
        );
        let second = output_of(&stdout, &run, "--dir registry2");
        assert!(
            second.contains("serves what the publishing node stores"),
            "the second node serves what the first publishes:\n{second}"
        );
        let survivor = output_of(&stdout, &run, "kill $REGISTRY1");
        let version_after = |what: &str| -> Option<u64> {
            let rest = &survivor[survivor.find(what)? + what.len()..];
            let rest =
                &rest[rest.find("configuration version ")? + "configuration version ".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        };
        let published = version_after("member VN/GOV/000417 added");
        let downloaded = version_after("security server VN/GOV/000305/ss1");
        assert!(
            published.is_some() && downloaded >= published,
            "a change made through the surviving node is published ({published:?}), and a server downloads it ({downloaded:?}):\n{survivor}"
        );
        let password = std::fs::read_to_string(&db.password_file).unwrap();
        let password = password.trim();
        assert!(
            password.is_empty() || !stdout.contains(password) && !stderr.contains(password),
            "the database password never shows"
        );
    }
}
