//! Verify's messages point at the fault: the broken fixture's sync exits 0
//! while its targets stay behind, and the target-stopped scenario reports
//! that as the tool's failure (host, expected, got) with the sync's output,
//! not as an inconclusive run. Real build, real fleet.

mod support;

use std::process::Command;

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn target_stopped_names_the_tool_failure_when_a_clean_sync_left_targets_behind() {
    let Some(_docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_release-harness"))
        .args([
            "release",
            "--dry-run",
            "--fixture",
            "minideploy-broken",
            "--scenario",
            "target-stopped",
            "--out",
        ])
        .arg(out.path())
        .env("CI", "true")
        .output()
        .unwrap();
    // The summary and the progress notes, wherever the CLI prints them.
    let stderr = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(run.status.code(), Some(3), "verify must fail:\n{stderr}");
    assert!(!stderr.contains("inconclusive"), "{stderr}");
    assert!(
        stderr.contains("sync before a target could be stopped: deployed revision"),
        "the report names the targets left behind:\n{stderr}"
    );
    assert!(
        stderr.contains("| sync exited 0; its last lines:"),
        "the report shows the sync's output:\n{stderr}"
    );
}
