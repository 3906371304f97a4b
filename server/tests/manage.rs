//! The management commands on the real binary: `migrate`, `loaddata`, `createuser`, their
//! output, exit statuses and errors.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::server::binary;
use common::web::{Database, fixture_path, stderr};

#[test]
fn migrate_and_loaddata_are_idempotent() {
    let db = Database::with_fixtures();
    let again = db.manage(&["migrate"], &[]);
    assert!(again.status.success(), "{}", stderr(&again));
    let out = db.manage(&["loaddata", fixture_path().to_str().unwrap()], &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("users: 0 created, 3 updated"), "{text}");
    let peer = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/peer-fixtures/django-dumpdata.json"
    );
    if std::path::Path::new(peer).exists() {
        let out = db.manage(&["loaddata", peer], &[]);
        assert!(
            out.status.success(),
            "a real Django dump loads: {}",
            stderr(&out)
        );
    }
    let missing = db.manage(&["loaddata", "/nonexistent/data.json"], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("cannot read /nonexistent/data.json"));
}

#[test]
fn createuser_takes_the_password_from_the_environment_or_stdin() {
    let db = Database::with_fixtures();
    let out = db.manage(
        &["createuser", "dave", "--group", "chatusers"],
        &[("WSREDIS_PASSWORD", "from-env")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user dave"));

    let mut child = Command::new(binary())
        .args(["createuser", "erin", "--staff", "--database-url", &db.url])
        .env_remove("WSREDIS_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from-stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let taken = db.manage(&["createuser", "dave"], &[("WSREDIS_PASSWORD", "x")]);
    assert_eq!(taken.status.code(), Some(1));
    assert!(stderr(&taken).contains("username `dave` is already taken"));
    let no_group = db.manage(
        &["createuser", "fay", "--group", "nope"],
        &[("WSREDIS_PASSWORD", "x")],
    );
    assert!(
        stderr(&no_group).contains("no group named `nope`"),
        "{}",
        stderr(&no_group)
    );
    let no_password = Command::new(binary())
        .args(["createuser", "gus", "--database-url", &db.url])
        .env_remove("WSREDIS_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(no_password.status.code(), Some(1));
    assert!(stderr(&no_password).contains("no password"));
}

#[test]
fn an_unreachable_or_unmigrated_database_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("wsredis-manage-{}", std::process::id()));
    let url = format!("sqlite://{}/fresh.sqlite3", dir.display());
    let out = Command::new(binary())
        .args(["createuser", "x", "--database-url", &url])
        .env("WSREDIS_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("run `wsredis migrate` first"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);

    let out = Command::new(binary())
        .args(["migrate", "--database-url", "mysql://nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("neither sqlite://path nor postgres://"),
        "{}",
        stderr(&out)
    );
}
