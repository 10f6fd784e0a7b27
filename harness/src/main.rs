//! The packaged binary: the same CLI as `cargo xtask`, installable without a
//! Rust toolchain.
fn main() -> std::process::ExitCode {
    harness::cli::main()
}
