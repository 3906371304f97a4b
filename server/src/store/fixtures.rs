//! `wsredis loaddata`: load Django `dumpdata` JSON of `auth.group` and `auth.user` objects.
//!
//! Loading is idempotent and all-or-nothing: one write transaction updates groups by name and
//! users by username (fixture primary keys are not kept, since ids here are our own), and makes
//! each user's groups exactly the fixture's list. A user's `groups` may name groups by natural
//! key (`[["chatusers"]]`, what `dumpdata --natural-foreign` writes) or by the fixture's group
//! pks (`[1]`). Objects of other models (permissions, content types, sessions, …) are skipped and
//! counted. Password hashes are stored as they are, so Django users keep their passwords.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::groups::validate_group_name;
use super::memberships::link_groups;
use super::users::{INSERT_USER, UserColumns, validate_username, write_user};
use super::{Store, StoreError, WritePool, on_pool, time};

/// Prefix of the hashes `crate::auth::password` can verify (`!…` is Django's unusable password).
const VERIFIABLE_PREFIX: &str = "pbkdf2_sha256$";

/// What a load did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadSummary {
    /// Groups that did not exist before.
    pub groups_created: usize,
    /// Groups that already existed by name (left as they are).
    pub groups_existing: usize,
    /// Users that did not exist before.
    pub users_created: usize,
    /// Users that existed by username and were overwritten with the fixture's fields.
    pub users_updated: usize,
    /// Objects of other models, by model name, that were not loaded.
    pub skipped: BTreeMap<String, usize>,
    /// Users whose password hash this server cannot verify (e.g. `argon2$…`): they exist but
    /// cannot log in until their password is set again.
    pub unverifiable_passwords: Vec<String>,
}

impl std::fmt::Display for LoadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "groups: {} created, {} existing; users: {} created, {} updated",
            self.groups_created, self.groups_existing, self.users_created, self.users_updated
        )?;
        for (model, n) in &self.skipped {
            write!(f, "; skipped {n} {model}")?;
        }
        if !self.unverifiable_passwords.is_empty() {
            write!(
                f,
                "; password hash not supported (set a new password) for: {}",
                self.unverifiable_passwords.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Why a fixture could not be loaded (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The input is not a JSON array of `{"model": …, "fields": …}` objects.
    #[error("not a Django fixture: {0}")]
    Json(#[source] serde_json::Error),
    /// One object has fields this loader cannot use.
    #[error("object {index} ({model}): {reason}")]
    Object {
        /// Position in the fixture array, from 0.
        index: usize,
        /// Its `model`.
        model: String,
        /// What is wrong.
        reason: String,
    },
    /// The database refused.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Deserialize)]
struct RawObject {
    model: String,
    #[serde(default)]
    pk: Option<serde_json::Value>,
    #[serde(default)]
    fields: serde_json::Value,
}

#[derive(Deserialize)]
struct GroupFields {
    name: String,
}

#[derive(Deserialize)]
struct UserFields {
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
    #[serde(default = "yes")]
    is_active: bool,
    #[serde(default)]
    is_staff: bool,
    #[serde(default)]
    is_superuser: bool,
    #[serde(default)]
    last_login: Option<String>,
    #[serde(default)]
    date_joined: Option<String>,
    #[serde(default)]
    groups: Vec<GroupRef>,
}

fn yes() -> bool {
    true
}

/// A group in a user's `groups`: a fixture pk or a one-element natural key.
#[derive(Deserialize)]
#[serde(untagged)]
enum GroupRef {
    Pk(i64),
    NaturalKey(Vec<String>),
}

/// A user ready to write.
struct FixtureUser {
    columns: UserColumns,
    groups: Vec<String>,
}

/// Load a Django `dumpdata` fixture (see the module header). Returns what was done.
pub async fn loaddata(store: &Store, json: &[u8]) -> Result<LoadSummary, FixtureError> {
    let (groups, users, skipped) = parse(json)?;
    let mut summary = LoadSummary {
        skipped,
        unverifiable_passwords: users
            .iter()
            .map(|u| &u.columns)
            .filter(|u| !u.password.starts_with(VERIFIABLE_PREFIX) && !u.password.starts_with('!'))
            .map(|u| u.username.clone())
            .collect(),
        ..LoadSummary::default()
    };
    on_pool!(store, |pool| {
        let mut tx = pool.begin_write().await.map_err(StoreError::from_sqlx)?;
        for name in &groups {
            let created =
                sqlx::query("INSERT INTO groups (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?
                    .rows_affected();
            if created == 1 {
                summary.groups_created += 1;
            } else {
                summary.groups_existing += 1;
            }
        }
        for u in &users {
            let existing: Option<i64> =
                sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                    .bind(&u.columns.username)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(StoreError::from_sqlx)?;
            let sql = if existing.is_some() {
                "UPDATE users SET password = $2, first_name = $3, last_name = $4, email = $5, \
                 is_active = $6, is_staff = $7, is_superuser = $8, last_login = $9, \
                 date_joined = $10 WHERE username = $1 RETURNING id"
            } else {
                INSERT_USER
            };
            let id = write_user!(tx, sql, u.columns).map_err(StoreError::from_sqlx)?;
            if existing.is_some() {
                summary.users_updated += 1;
            } else {
                summary.users_created += 1;
            }
            sqlx::query("DELETE FROM user_groups WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            link_groups!(tx, id, &u.groups);
        }
        tx.commit().await.map_err(StoreError::from_sqlx)
    })?;
    Ok(summary)
}

type Parsed = (Vec<String>, Vec<FixtureUser>, BTreeMap<String, usize>);

/// Check a fixture exactly as [`loaddata`] does before it writes anything (for
/// `crate::fuzzing`).
#[doc(hidden)]
pub fn check(json: &[u8]) -> Result<(), FixtureError> {
    parse(json).map(drop)
}

/// Check the whole fixture before touching the database.
fn parse(json: &[u8]) -> Result<Parsed, FixtureError> {
    let objects: Vec<RawObject> = serde_json::from_slice(json).map_err(FixtureError::Json)?;
    let mut groups = Vec::new();
    let mut group_pks: HashMap<i64, String> = HashMap::new();
    let mut raw_users = Vec::new();
    let mut skipped = BTreeMap::new();
    for (index, obj) in objects.into_iter().enumerate() {
        let bad = |reason: String| FixtureError::Object {
            index,
            model: obj.model.clone(),
            reason,
        };
        match obj.model.to_ascii_lowercase().as_str() {
            "auth.group" => {
                let fields: GroupFields =
                    serde_json::from_value(obj.fields.clone()).map_err(|e| bad(e.to_string()))?;
                let name = validate_group_name(&fields.name)
                    .map_err(|e| bad(e.to_string()))?
                    .to_owned();
                if let Some(pk) = obj.pk.as_ref().and_then(serde_json::Value::as_i64) {
                    group_pks.insert(pk, name.clone());
                }
                groups.push(name);
            }
            "auth.user" => {
                let fields: UserFields =
                    serde_json::from_value(obj.fields.clone()).map_err(|e| bad(e.to_string()))?;
                validate_username(&fields.username).map_err(|e| bad(e.to_string()))?;
                raw_users.push((index, obj.model, fields));
            }
            _ => *skipped.entry(obj.model).or_insert(0) += 1,
        }
    }
    let users = raw_users
        .into_iter()
        .map(|(index, model, f)| {
            user_from_fields(f, &group_pks).map_err(|reason| FixtureError::Object {
                index,
                model,
                reason,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((groups, users, skipped))
}

fn user_from_fields(
    f: UserFields,
    group_pks: &HashMap<i64, String>,
) -> Result<FixtureUser, String> {
    let when = |s: &str| time::parse_iso8601(s).ok_or_else(|| format!("`{s}` is not a datetime"));
    let last_login = f.last_login.as_deref().map(when).transpose()?;
    let date_joined = f
        .date_joined
        .as_deref()
        .map(when)
        .transpose()?
        .unwrap_or_else(time::now);
    let groups = f
        .groups
        .into_iter()
        .map(|g| match g {
            GroupRef::Pk(pk) => group_pks
                .get(&pk)
                .cloned()
                .ok_or_else(|| format!("group pk {pk} is not an auth.group of this fixture")),
            GroupRef::NaturalKey(key) => match <[String; 1]>::try_from(key) {
                Ok([name]) => Ok(name),
                Err(key) => Err(format!("group natural key {key:?} is not [name]")),
            },
        })
        .collect::<Result<_, _>>()?;
    let columns = UserColumns {
        username: f.username,
        // Django never stores an empty hash for a usable password; treat it as unusable.
        password: if f.password.is_empty() {
            "!".to_owned()
        } else {
            f.password
        },
        first_name: f.first_name,
        last_name: f.last_name,
        email: f.email,
        is_active: f.is_active,
        is_staff: f.is_staff,
        is_superuser: f.is_superuser,
        last_login,
        date_joined,
    };
    Ok(FixtureUser { columns, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_natural_keys_pks_and_skips_other_models() {
        let json = br#"[
            {"model": "auth.group", "pk": 7, "fields": {"name": "chatusers", "permissions": []}},
            {"model": "auth.user", "pk": 2, "fields": {"username": "john", "password": "pbkdf2_sha256$1$s$h",
             "groups": [["chatusers"]], "last_login": null, "date_joined": "2014-12-03T15:28:41"}},
            {"model": "auth.user", "pk": 3, "fields": {"username": "mary", "groups": [7]}},
            {"model": "sessions.session", "pk": "abc", "fields": {}},
            {"model": "contenttypes.contenttype", "pk": 1, "fields": {}},
            {"model": "contenttypes.contenttype", "pk": 2, "fields": {}}
        ]"#;
        let (groups, users, skipped) = parse(json).unwrap();
        assert_eq!(groups, ["chatusers"]);
        assert_eq!(users[0].groups, ["chatusers"]);
        assert_eq!(users[0].columns.date_joined, 1_417_620_521);
        assert_eq!(users[0].columns.last_login, None);
        assert_eq!(users[1].groups, ["chatusers"]);
        assert_eq!(
            users[1].columns.password, "!",
            "an empty hash is an unusable password"
        );
        assert!(users[1].columns.is_active);
        assert_eq!(skipped["contenttypes.contenttype"], 2);
        assert_eq!(skipped["sessions.session"], 1);
    }

    #[test]
    fn rejects_bad_objects_with_their_position() {
        let cases: [(&[u8], usize); 5] = [
            (br#"[{"model": "auth.user", "fields": {"username": "a b"}}]"#, 0),
            (br#"[{"model": "auth.group", "fields": {}}, {"model": "auth.user"}]"#, 0),
            (br#"[{"model": "x.y"}, {"model": "auth.user", "fields": {"username": "u", "groups": [9]}}]"#, 1),
            (br#"[{"model": "auth.user", "fields": {"username": "u", "groups": [["a", "b"]]}}]"#, 0),
            (br#"[{"model": "auth.user", "fields": {"username": "u", "date_joined": "yesterday"}}]"#, 0),
        ];
        for (json, at) in cases {
            match parse(json) {
                Err(FixtureError::Object { index, .. }) => assert_eq!(index, at),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("accepted {}", String::from_utf8_lossy(json)),
            }
        }
        assert!(matches!(parse(b"{}"), Err(FixtureError::Json(_))));
        assert!(matches!(
            parse(b"[{\"fields\": {}}]"),
            Err(FixtureError::Json(_))
        ));
    }
}
