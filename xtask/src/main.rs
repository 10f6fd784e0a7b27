//! `cargo xtask`: this repository's own entry point. It is the harness CLI with
//! one difference: when no project is named, it releases the built-in fixture,
//! so `cargo xtask release --dry-run` works on a fresh clone.
fn main() {
    std::process::exit(harness::cli::main_with_default_fixture());
}
