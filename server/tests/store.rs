//! The users-and-groups store against real databases: SQLite files in temp dirs (several pools
//! at once, as several worker processes would have) and a throwaway PostgreSQL database when
//! one is reachable. Also fixture loading and password login on top of the store.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use wsredis::auth::{self, password};
use wsredis::store::fixtures::loaddata;
use wsredis::store::{Backend, NewUser, Store, StoreError, UserUpdate};

/// Where to find PostgreSQL; a test creates and drops its own database there.
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "wsredis-test-{tag}-{}-{n}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// `sqlite://<dir>/<rest>`.
    fn sqlite_url(&self, rest: &str) -> String {
        format!("sqlite://{}/{rest}", self.0.display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn sqlite_store(dir: &TempDir) -> Store {
    let store = Store::connect(&dir.sqlite_url("db.sqlite3")).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// A throwaway database on the local PostgreSQL, dropped by [`PgDb::drop_db`].
struct PgDb {
    admin: sqlx::PgPool,
    name: String,
    url: String,
}

impl PgDb {
    async fn create() -> Option<PgDb> {
        let admin_url = std::env::var("WSREDIS_TEST_POSTGRES_URL").unwrap_or(POSTGRES_URL.into());
        let admin = match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&admin_url)
            .await
        {
            Ok(pool) => pool,
            Err(e) => {
                println!("skipped: no PostgreSQL at {admin_url} ({e})");
                return None;
            }
        };
        let name = format!(
            "wsredis_test_{}_{}",
            std::process::id(),
            password::unusable()[1..9].to_ascii_lowercase()
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(PgDb { admin, name, url })
    }

    async fn drop_db(self, store: Store) {
        store.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .unwrap();
    }
}

fn new_user(username: &str, groups: &[&str]) -> NewUser {
    NewUser {
        username: username.into(),
        password_hash: password::hash_with("pw", "salt", 1),
        profile: UserUpdate {
            first_name: "First".into(),
            ..UserUpdate::default()
        },
        groups: groups.iter().map(|g| g.to_string()).collect(),
        ..NewUser::default()
    }
}

/// What the admin pages do, on any backend.
async fn users_and_groups(store: &Store) {
    let chat = store.create_group("chatusers").await.unwrap();
    let ops = store.create_group("  ops ").await.unwrap();
    assert_eq!(ops.name, "ops", "names are trimmed");
    assert!(matches!(
        store.create_group("chatusers").await,
        Err(StoreError::GroupNameTaken(n)) if n == "chatusers"
    ));

    let john = store
        .create_user(&new_user("john", &["chatusers"]))
        .await
        .unwrap();
    assert_eq!(john.username, "john");
    assert!(john.is_active && !john.is_staff && john.last_login.is_none());
    assert!(john.date_joined > 1_700_000_000);
    assert!(matches!(
        store.create_user(&new_user("john", &[])).await,
        Err(StoreError::UsernameTaken(n)) if n == "john"
    ));
    assert!(matches!(
        store.create_user(&new_user("mary", &["nosuch"])).await,
        Err(StoreError::UnknownGroup(g)) if g == "nosuch"
    ));
    assert_eq!(
        store.user_by_username("mary").await.unwrap(),
        None,
        "a failed create leaves no half user"
    );
    assert!(matches!(
        store.create_user(&new_user("bad name", &[])).await,
        Err(StoreError::Invalid {
            field: "username",
            ..
        })
    ));
    let mary = store.create_user(&new_user("mary", &[])).await.unwrap();

    assert_eq!(store.user(john.id).await.unwrap().as_ref(), Some(&john));
    assert_eq!(
        store.user_by_username("john").await.unwrap(),
        Some(john.clone())
    );
    assert_eq!(store.user_by_username("John").await.unwrap(), None);
    assert_eq!(store.user(999_999).await.unwrap(), None);
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["john", "mary"]);

    let update = UserUpdate {
        first_name: "Mary".into(),
        last_name: "Lou".into(),
        email: "mary@example.org".into(),
        is_active: true,
        is_staff: true,
    };
    store.update_user(mary.id, &update).await.unwrap();
    let mary = store.user(mary.id).await.unwrap().unwrap();
    assert_eq!(
        (
            mary.display_name().as_str(),
            mary.email.as_str(),
            mary.is_staff
        ),
        ("Mary Lou", "mary@example.org", true)
    );
    assert!(matches!(
        store.update_user(999_999, &update).await,
        Err(StoreError::NotFound(_))
    ));

    assert_eq!(
        store.user_group_names(john.id).await.unwrap(),
        ["chatusers"]
    );
    let both = [
        "ops".to_string(),
        "chatusers".to_string(),
        "ops".to_string(),
    ];
    store.set_user_groups(mary.id, &both).await.unwrap();
    assert_eq!(
        store.user_group_names(mary.id).await.unwrap(),
        ["chatusers", "ops"]
    );
    assert!(matches!(
        store.set_user_groups(mary.id, &["ops".into(), "gone".into()]).await,
        Err(StoreError::UnknownGroup(g)) if g == "gone"
    ));
    assert_eq!(
        store.user_group_names(mary.id).await.unwrap(),
        ["chatusers", "ops"],
        "a refused change changes nothing"
    );
    assert!(matches!(
        store.set_user_groups(999_999, &[]).await,
        Err(StoreError::NotFound(_))
    ));

    store.rename_group(ops.id, "operators").await.unwrap();
    assert_eq!(
        store.user_group_names(mary.id).await.unwrap(),
        ["chatusers", "operators"]
    );
    assert!(matches!(
        store.rename_group(ops.id, "chatusers").await,
        Err(StoreError::GroupNameTaken(_))
    ));
    assert!(matches!(
        store.rename_group(999_999, "x").await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_group(chat.id).await.unwrap();
    assert_eq!(
        store.user_group_names(mary.id).await.unwrap(),
        ["operators"]
    );
    assert!(store.user_group_names(john.id).await.unwrap().is_empty());
    let groups: Vec<String> = store
        .list_groups()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(groups, ["operators"]);
    assert_eq!(
        store.group(ops.id).await.unwrap().unwrap().name,
        "operators"
    );
    assert!(matches!(
        store.delete_group(chat.id).await,
        Err(StoreError::NotFound(_))
    ));

    store.record_login(john.id, 1_800_000_000).await.unwrap();
    assert_eq!(
        store.user(john.id).await.unwrap().unwrap().last_login,
        Some(1_800_000_000)
    );
    store.deactivate_user(john.id).await.unwrap();
    assert!(!store.user(john.id).await.unwrap().unwrap().is_active);
}

#[tokio::test]
async fn sqlite_users_and_groups() {
    let dir = TempDir::new("store");
    let store = sqlite_store(&dir).await;
    assert_eq!(store.backend(), Backend::Sqlite);
    users_and_groups(&store).await;
}

#[tokio::test]
async fn postgres_users_and_groups() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(store.backend(), Backend::Postgres);
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    users_and_groups(&store).await;
    load_and_log_in(&store).await;
    db.drop_db(store).await;
}

#[tokio::test]
async fn sqlite_file_and_directory_are_created_in_wal_mode() {
    let dir = TempDir::new("create");
    let url = dir.sqlite_url("nested/deeper/wsredis.sqlite3");
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    store.migrate().await.unwrap(); // a second run is a no-op
    store.create_group("g").await.unwrap();
    let file = dir.0.join("nested/deeper/wsredis.sqlite3");
    assert!(file.is_file());
    assert!(
        dir.0.join("nested/deeper/wsredis.sqlite3-wal").exists(),
        "WAL mode"
    );
    store.close().await;

    // A second "process" sees the data.
    let other = Store::connect(&url).await.unwrap();
    assert_eq!(other.list_groups().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_urls_are_refused() {
    assert!(matches!(
        Store::connect("mysql://localhost/x").await,
        Err(StoreError::Url(_))
    ));
    assert!(matches!(
        Store::connect("sqlite://x.db?journal=wal").await,
        Err(StoreError::Url(_))
    ));
}

#[tokio::test]
async fn many_pools_write_one_sqlite_file_without_lock_errors() {
    let dir = TempDir::new("concurrent");
    let first = sqlite_store(&dir).await;
    first.create_group("chatusers").await.unwrap();
    let mut tasks = Vec::new();
    for worker in 0..4 {
        // One pool per simulated worker process, each with its own connections.
        let store = Store::connect(&dir.sqlite_url("db.sqlite3")).await.unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let user = store
                    .create_user(&new_user(&format!("w{worker}u{i}"), &[]))
                    .await
                    .unwrap();
                // Read-then-write transaction: the one that needs BEGIN IMMEDIATE.
                store
                    .set_user_groups(user.id, &["chatusers".into()])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(first.list_users().await.unwrap().len(), 100);
}

#[tokio::test]
async fn a_locked_database_is_reported_as_unavailable() {
    use sqlx::Connection as _;
    let dir = TempDir::new("locked");
    let store = sqlite_store(&dir).await;
    // Another process holds the write lock longer than the 5 s busy timeout.
    let mut other = sqlx::SqliteConnection::connect(&dir.sqlite_url("db.sqlite3"))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let started = Instant::now();
    let err = store.create_group("g").await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "waited for the busy timeout"
    );
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    store.create_group("g").await.unwrap();
}

/// Load the shipped fixture twice, then log in as its users.
async fn load_and_log_in(store: &Store) {
    let json = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/data.json"
    ))
    .unwrap();
    let first = loaddata(store, &json).await.unwrap();
    let second = loaddata(store, &json).await.unwrap();
    assert_eq!(first.users_created + first.users_updated, 3, "{first}");
    assert_eq!(
        (second.users_created, second.users_updated),
        (0, 3),
        "{second}"
    );
    assert_eq!((second.groups_created, second.groups_existing), (0, 1));
    let before: Vec<_> = store.list_users().await.unwrap();

    let john = auth::authenticate(store, "john", "secret")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(john.display_name(), "John Doe");
    assert!(john.last_login.is_some());
    assert_eq!(
        store.user_group_names(john.id).await.unwrap(),
        ["chatusers"]
    );
    let admin = store.user_by_username("admin").await.unwrap().unwrap();
    assert!(admin.is_staff && admin.is_superuser);
    assert!(store.user_group_names(admin.id).await.unwrap().is_empty());
    assert_eq!(
        auth::authenticate(store, "mary", "Secret").await.unwrap(),
        None
    );
    assert_eq!(
        auth::authenticate(store, "nobody", "secret").await.unwrap(),
        None
    );

    // A third load leaves the same rows (same ids), whatever happened in between.
    loaddata(store, &json).await.unwrap();
    let ids = |users: &[wsredis::store::User]| {
        users
            .iter()
            .map(|u| (u.id, u.username.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&store.list_users().await.unwrap()), ids(&before));
}

#[tokio::test]
async fn shipped_fixture_loads_idempotently_and_its_users_log_in() {
    let dir = TempDir::new("fixture");
    let store = sqlite_store(&dir).await;
    load_and_log_in(&store).await;
}

#[tokio::test]
async fn django_dumpdata_users_log_in_and_their_hashes_are_upgraded() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/peer-fixtures/django-dumpdata.json"
    );
    let Ok(json) = std::fs::read(path) else {
        println!("skipped: no Django fixture at {path}");
        return;
    };
    let dir = TempDir::new("django");
    let store = sqlite_store(&dir).await;
    let summary = loaddata(&store, &json).await.unwrap();
    assert_eq!(
        (summary.groups_created, summary.users_created),
        (1, 3),
        "{summary}"
    );
    assert!(summary.unverifiable_passwords.is_empty());
    for name in ["admin", "john", "mary"] {
        let user = auth::authenticate(&store, name, "secret")
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{name} cannot log in with `secret`"));
        assert_eq!(user.username, name);
        // The 12000-iteration hash was replaced by today's, and still verifies.
        let again = auth::authenticate(&store, name, "secret").await.unwrap();
        assert_eq!(again.map(|u| u.id), Some(user.id));
    }
    let john = store.user_by_username("john").await.unwrap().unwrap();
    assert_eq!(john.date_joined, 1_417_620_521, "2014-12-03T15:28:41 UTC");
    assert_eq!(
        store.user_group_names(john.id).await.unwrap(),
        ["chatusers"]
    );

    store.deactivate_user(john.id).await.unwrap();
    assert_eq!(
        auth::authenticate(&store, "john", "secret").await.unwrap(),
        None,
        "inactive users are refused"
    );
}

#[tokio::test]
async fn old_hashes_are_upgraded_on_login_only() {
    let dir = TempDir::new("upgrade");
    let store = sqlite_store(&dir).await;
    let old = password::hash_with("secret", "An09CtL2zmjl", 12000);
    let mut new = new_user("john", &[]);
    new.password_hash = old.clone();
    let john = store.create_user(&new).await.unwrap();

    assert_eq!(
        auth::authenticate(&store, "john", "wrong").await.unwrap(),
        None
    );
    assert!(
        password::needs_upgrade(&stored_hash(&dir).await),
        "a failed login changes nothing"
    );
    assert!(
        auth::authenticate(&store, "john", "secret")
            .await
            .unwrap()
            .is_some()
    );
    let upgraded = stored_hash(&dir).await;
    assert!(upgraded.starts_with("pbkdf2_sha256$870000$"), "{upgraded}");
    assert!(password::verify("secret", &upgraded));
    assert!(
        store
            .user(john.id)
            .await
            .unwrap()
            .unwrap()
            .last_login
            .is_some()
    );
}

async fn stored_hash(dir: &TempDir) -> String {
    use sqlx::Connection as _;
    let mut c = sqlx::SqliteConnection::connect(&dir.sqlite_url("db.sqlite3"))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT password FROM users WHERE username = 'john'")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

#[tokio::test]
async fn createuser_hashes_the_password_and_sets_groups() {
    let dir = TempDir::new("createuser");
    let store = sqlite_store(&dir).await;
    store.create_group("chatusers").await.unwrap();
    let admin = auth::create_user(&store, "admin", Some("s3cret"), true, true, &[])
        .await
        .unwrap();
    assert!(admin.is_staff && admin.is_superuser && admin.is_active);
    let john = auth::create_user(
        &store,
        "john",
        Some("pw"),
        false,
        false,
        &["chatusers".into()],
    )
    .await
    .unwrap();
    assert_eq!(
        store.user_group_names(john.id).await.unwrap(),
        ["chatusers"]
    );
    assert!(
        auth::authenticate(&store, "admin", "s3cret")
            .await
            .unwrap()
            .is_some()
    );
    let err = auth::create_user(&store, "admin", Some("x"), false, false, &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, auth::AuthError::Store(StoreError::UsernameTaken(_))),
        "{err}"
    );
    let nopw = auth::create_user(&store, "robot", None, false, false, &[])
        .await
        .unwrap();
    assert!(nopw.is_active);
    assert_eq!(auth::authenticate(&store, "robot", "").await.unwrap(), None);
    assert_eq!(
        auth::authenticate(&store, "robot", "!").await.unwrap(),
        None
    );
}
