//! Rebuild when a migration is added or edited: `sqlx::migrate!` embeds `migrations/` into the
//! binary, and cargo would not otherwise notice new files there.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
