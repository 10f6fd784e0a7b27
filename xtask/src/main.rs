//! `cargo xtask`: this repository's own entry point. It is the harness CLI with
//! two differences: when no project is named, it releases the built-in
//! fixture, so `cargo xtask release --dry-run` works on a fresh clone; and
//! `cargo xtask dist` packages the harness itself as a .deb (see `dist`).

use std::process::ExitCode;

mod dist;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "dist") {
        return dist::main(args.skip(1));
    }
    harness::cli::main_with_default_fixture()
}
