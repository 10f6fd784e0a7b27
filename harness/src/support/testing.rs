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
    match crate::support::docker::connect().await {
        Ok(docker) => Some(docker),
        Err(e) => panic!("{test} needs a Docker engine and none answers:\n{e:#}"),
    }
}
