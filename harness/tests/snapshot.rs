//! A run prepares its fleet's hosts once and snapshots them into images of
//! its own: those images go with the run, also when a signal cuts it off
//! while a scenario's fleet runs from them.

mod support;

use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
async fn sigterm_during_a_scenario_removes_the_snapshot_images_too() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let out = tempfile::tempdir().unwrap();
    let (mut child, owner, lines, seen) =
        support::release_until(out.path(), "fleet ready from the prepared hosts");
    let images = support::labelled_images(&docker, &owner).await;
    assert_eq!(images, 3, "one snapshot image per role:\n{seen}");
    let (containers, _) = support::labelled(&docker, &owner).await;
    assert!(containers >= 7, "no scenario fleet up:\n{seen}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{}", rest.join("\n"));
    assert_eq!(
        support::labelled_images(&docker, &owner).await,
        0,
        "snapshot images left after SIGTERM"
    );
    assert_eq!(support::labelled(&docker, &owner).await, (0, 0));
}
