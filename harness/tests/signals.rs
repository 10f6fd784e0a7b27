//! SIGTERM (a cancelled CI job, `docker stop`, systemd) cuts a run off the
//! way Ctrl-C does: what the run made is removed, and it exits 130. The CLI
//! runs as a child process, as CI would run it.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
async fn sigterm_during_verify_removes_the_fleet_and_its_network() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let out = tempfile::tempdir().unwrap();
    let (mut child, owner, lines, seen) = support::release_until_fleet_up(out.path());
    let (containers, networks) = support::labelled(&docker, &owner).await;
    assert!(
        containers > 0 && networks > 0,
        "no fleet to cut off: {containers} containers, {networks} networks"
    );

    let sent = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    let rest = rest.join("\n");
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("interrupted: removing what this run made"),
        "{rest}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the clean-up after SIGTERM took {took:?}"
    );
    assert_eq!(
        support::labelled(&docker, &owner).await,
        (0, 0),
        "containers or networks left after SIGTERM"
    );
}
