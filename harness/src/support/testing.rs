//! What the container tests share, in the library so the unit tests and the
//! integration tests skip and fail the same way: the engine, or a skip when
//! the build was made with `RELEASE_HARNESS_SKIP_DOCKER` set (see build.rs:
//! those tests are marked ignored then, and only run with `--ignored`).

use bollard::Docker;

/// The `ignore` reason container tests carry under `skip_docker`.
pub const SKIP_REASON: &str = "RELEASE_HARNESS_SKIP_DOCKER is set";

/// The engine for container test `test`: None (saying so) when Docker tests
/// are skipped on purpose; without an engine, the test fails with what to do.
pub async fn engine(test: &str) -> Option<Docker> {
    if cfg!(skip_docker) {
        eprintln!("skipped {test}: {SKIP_REASON}");
        return None;
    }
    host_tools();
    match crate::support::docker::connect().await {
        Ok(docker) => Some(docker),
        Err(e) => panic!("{test} needs a Docker engine and none answers:\n{e:#}"),
    }
}

/// The README's test command on a fresh machine brings the host programs the
/// container tests run, the way the CLI's commands do: once per test binary.
fn host_tools() {
    static ENSURED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ensured = ENSURED.get_or_init(|| {
        use crate::support::host;
        host::ensure(
            host::FOR_RELEASE,
            &host::on_path,
            host::running_as_root(),
            &|line: &str| eprintln!("{line}"),
        )
        .map_err(|e| format!("{e:#}"))
    });
    if let Err(e) = ensured {
        panic!("the container tests need programs this host lacks:\n{e}");
    }
}
