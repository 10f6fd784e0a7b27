//! The Docker engine: connecting (DOCKER_HOST or the local socket), the labels
//! every resource of a run carries, and sweeping what killed runs left behind.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::Docker;

/// Every container and network the harness makes carries these labels.
pub const LABEL_RUN: &str = "org.release-harness.run";
/// `<hostname>:<pid>` of the process that made it: a resource whose process
/// is gone is stale and swept at the next start.
pub const LABEL_OWNER: &str = "org.release-harness.owner";

/// Connects and checks that the engine answers, with an error that says what
/// to do when it does not.
pub async fn connect() -> Result<Docker> {
    let where_ = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the local socket".into());
    let docker = Docker::connect_with_defaults()
        .with_context(|| format!("cannot reach the Docker engine at {where_}"))?;
    docker.ping().await.map_err(|e| {
        anyhow::anyhow!(
            "the Docker engine at {where_} does not answer ({e}).\n  fix: start it \
             (`dockerd &` or `systemctl start docker`), or point DOCKER_HOST at a running \
             engine; to skip container tests on purpose set RELEASE_HARNESS_SKIP_DOCKER=1"
        )
    })?;
    Ok(docker)
}

/// A new run id: short, unique enough on one engine, usable in names.
pub fn new_run_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:04x}",
        (nanos / 1000) & 0xffff_ffff,
        std::process::id() & 0xffff
    )
}

pub fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

pub fn run_labels(run_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_RUN.to_string(), run_id.to_string()),
        (LABEL_OWNER.to_string(), owner()),
    ])
}
