//! `cargo xtask`: this repository's own entry point. It is the harness CLI with
//! two differences: when no project is named, it releases the built-in
//! fixture, so `cargo xtask release --dry-run` works on a fresh clone; and
//! `cargo xtask dist` packages the harness itself as a .deb (see `dist`).

mod dist;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("dist") {
        std::process::exit(dist::main(&args[1..]));
    }
    std::process::exit(harness::cli::main_with_default_fixture());
}
