//! `sqlx::migrate!` embeds the migration files at compile time but only tracks files that already exist:
//! make a new migration file trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
