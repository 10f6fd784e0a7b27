//! `cargo xtask dist`: the harness CLI as a Debian package (cargo-deb, with
//! `[package.metadata.deb]` of harness/Cargo.toml) in `target/dist/`, beside
//! its `SHA256SUMS` and build log. It is the harness's own cargo-deb builder
//! (`harness::release::build`) pointed at the harness crate, so the harness ships with
//! the code path it offers to Rust projects.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use harness::config::Config;

/// `cargo xtask dist`'s flags.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask dist",
    about = "Package the harness CLI as a .deb with cargo-deb.",
    after_help = "Needs cargo-deb: cargo install cargo-deb --locked"
)]
struct DistArgs {
    /// Where the .deb, SHA256SUMS and build.log go [default: target/dist]
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The build settings of the harness's own package, in release.toml's terms.
/// A cold release build on two cores takes several minutes. No lintian: the
/// package has no Debian changelog, which lintian counts as an error.
const DIST_CONFIG: &str = r#"
[package]
name = "release-harness"
[build]
builder = "cargo-deb"
lintian = false
timeout_secs = 3600
"#;

/// Parses the flags after `dist` (clap exits 2 on wrong ones) and builds.
pub fn main(args: impl Iterator<Item = OsString>) -> ExitCode {
    let args =
        DistArgs::parse_from(std::iter::once(OsString::from("cargo xtask dist")).chain(args));
    let out = args
        .out
        .unwrap_or_else(|| workspace_root().join("target/dist"));
    match dist(&out) {
        Ok(deb) => {
            println!("{}", deb.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the package into `out` and returns the .deb's path.
pub fn dist(out: &Path) -> Result<PathBuf> {
    let cargo_deb = harness::support::process::cmd("cargo", ["deb", "--version"]).output();
    if !cargo_deb.is_ok_and(|o| o.status.success()) {
        bail!(
            "cargo-deb is not installed, and `cargo xtask dist` runs it.\n  fix: cargo install \
             cargo-deb --locked"
        );
    }
    let config = Config::parse(DIST_CONFIG, Path::new("xtask/src/dist.rs"))?;
    let crate_dir = workspace_root().join("harness");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let built = runtime.block_on(async {
        // The builder talks to the engine only for lintian, which is off:
        // a machine without Docker can still package the harness.
        let docker = bollard::Docker::connect_with_defaults()
            .context("setting up the Docker client (DOCKER_HOST?)")?;
        let say = |line: &str| eprintln!("  {line}");
        harness::release::build::build(&docker, &config, &crate_dir, out, &say).await
    })?;
    // cargo-deb makes the one package of the crate.
    Ok(built.debs[0].path.clone())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}
