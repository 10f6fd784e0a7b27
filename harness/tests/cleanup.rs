//! Nothing is left behind: Ctrl-C in the middle of verify removes the fleet;
//! `--keep` leaves it up with directions, and `sweep --run` removes it.
//! The CLI runs as a child process, as a user would run it.

mod support;

use std::process::Command;

async fn containers_with(docker: &bollard::Docker, label: &str) -> usize {
    support::labelled(docker, label).await.0
}

fn harness(args: &[&str], out: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_release-harness"));
    cmd.args(["release", "--dry-run", "--fixture", "minideploy", "--out"])
        .arg(out)
        .args(args)
        .env("CI", "true");
    cmd
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_during_verify_removes_the_fleet() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let out = tempfile::tempdir().unwrap();
    let (mut child, owner, lines, seen) = support::release_until_fleet_up(out.path());
    assert!(
        containers_with(&docker, &owner).await > 0,
        "no fleet to interrupt"
    );
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let rest = rest.join("\n");
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("interrupted: removing what this run made"),
        "{rest}"
    );
    assert_eq!(
        containers_with(&docker, &owner).await,
        0,
        "containers left after Ctrl-C"
    );
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn keep_leaves_the_fleet_up_and_sweep_removes_it() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let out = tempfile::tempdir().unwrap();
    let result = harness(&["--scenario", "fresh-install", "--keep"], out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stderr}");
    let run = stderr
        .lines()
        .find_map(|l| l.strip_prefix("keeping the fleet of run "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no directions for the kept fleet:\n{stderr}"))
        .to_string();
    assert!(stderr.contains("docker exec -it "), "{stderr}");
    let label = format!("{}={run}", harness::support::docker::LABEL_RUN);
    assert_eq!(containers_with(&docker, &label).await, 7, "the kept fleet");

    // A later run's sweep leaves a kept fleet alone ...
    harness::support::docker::sweep_stale(&docker)
        .await
        .unwrap();
    assert_eq!(containers_with(&docker, &label).await, 7);
    // ... and `sweep --run` removes it.
    let swept = Command::new(env!("CARGO_BIN_EXE_release-harness"))
        .args(["sweep", "--run", &run])
        .output()
        .unwrap();
    assert!(swept.status.success());
    assert_eq!(containers_with(&docker, &label).await, 0);
    assert_eq!(support::leftovers(&docker, &run).await, 0, "network left");
}
