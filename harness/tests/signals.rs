//! SIGTERM (a cancelled CI job, `docker stop`, systemd) cuts a run off the
//! way Ctrl-C does: what the run made is removed or recorded, and it exits
//! 130. The CLI runs as a child process, as CI would run it.

mod support;

use std::process::Command;
use std::time::Duration;

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

    let (code, rest, took) = support::terminate(&mut child, lines);
    assert_eq!(code, Some(130), "{seen}{rest}");
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

/// A real release (not a dry run) cut off after its bump made the release
/// commit and tag, before anything was pushed: the repository is as it was
/// (HEAD, tags, notes, a clean tree), origin got nothing, and it exits 130.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
async fn sigterm_after_the_release_commit_and_tag_leaves_the_repository_as_it_was() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let (tmp, repo) = support::fixture_repo("minideploy");
    let origin = support::bare_origin(tmp.path(), &repo);
    let before = support::repo_state(&repo);
    let origin_before = support::git(&origin, &["show-ref"]);
    let out = tempfile::tempdir().unwrap();
    let mut release = Command::new(env!("CARGO_BIN_EXE_release-harness"));
    release
        .arg("--project")
        .arg(&repo)
        .args(["release", "--scenario", "fresh-install", "--out"])
        .arg(out.path());
    // The build starts once the bump has committed and tagged.
    let (mut child, owner, lines, seen) = support::run_until(release, "build: started");
    let tags = support::git(&repo, &["tag", "-l"]);
    assert!(
        tags.lines().any(|t| t == "0.2.0"),
        "no release tag when the build started:\n{tags}\n{seen}"
    );
    assert_ne!(support::repo_state(&repo), before, "no release commit");

    let (code, rest, took) = support::terminate(&mut child, lines);
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(code, Some(130), "{seen}{rest}");
    assert!(
        rest.contains("undid the release commit and tag 0.2.0"),
        "{seen}{rest}"
    );
    assert_eq!(
        support::repo_state(&repo),
        before,
        "the release commit, its tag or a change outlived SIGTERM"
    );
    assert_eq!(
        support::git(&repo, &["for-each-ref", "refs/notes"]),
        "",
        "a ledger note was written"
    );
    assert_eq!(
        support::git(&origin, &["show-ref"]),
        origin_before,
        "something was pushed"
    );
    assert_eq!(
        support::labelled(&docker, &owner).await,
        (0, 0),
        "containers or networks left after SIGTERM"
    );
}

/// A promote cut off by SIGTERM in the middle of a batch (app2 frozen, so
/// the batch is surely under way): it exits 130, the ledger says the batch
/// was interrupted and by what, the production lock is given back at once,
/// and the next promote resumes at that batch, finishes, and redoes none
/// before it. The CLI runs in the project, against the testbed's cumin host.
#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
async fn sigterm_during_a_promote_batch_is_recorded_and_the_next_promote_resumes() {
    use harness::ledger::{Outcome, StepKind, LOCK_REF};
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let prod = support::production_on_canaries(&docker, |c| c.rollout.batch_size = 1).await;
    prod.write_release_toml();
    let promote = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_release-harness"));
        command.arg("--project").arg(&prod.repo.root).arg("promote");
        command
    };

    prod.docker_on("pause", "app2");
    let (mut child, _, lines, seen) = support::run_until(promote(), "batch 2/3: started");
    let (code, rest, took) = support::terminate(&mut child, lines);
    prod.docker_on("unpause", "app2");
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(code, Some(130), "{seen}{rest}");
    assert!(
        rest.contains("0.2.0: batch 2 (app2): interrupted"),
        "{seen}{rest}"
    );
    assert!(
        took < Duration::from_secs(30),
        "the promote took {took:?} to stop"
    );
    assert_eq!(
        prod.batches(),
        [(1, Some(Outcome::Ok)), (2, Some(Outcome::Interrupted))]
    );
    let record = prod.record();
    let batch2 = record.last(StepKind::Batch).unwrap();
    assert!(
        batch2.message.starts_with("interrupted by SIGTERM"),
        "{}",
        batch2.message
    );
    assert!(
        !record.last(StepKind::Promote).unwrap().finished(),
        "the promote is no longer under way"
    );
    let lock = prod
        .repo
        .output(&["rev-parse", "--verify", "--quiet", LOCK_REF])
        .unwrap();
    assert!(!lock.status.success(), "the production lock is still held");

    // The killed call's debdeploy may still run on the cumin host (killing
    // the local end of `docker exec` does not reach it): let it end.
    let waited = prod
        .tb
        .fleet
        .exec(
            prod.tb.cumin_host(),
            None,
            "for i in $(seq 120); do pgrep -f '[d]ebdeploy|[c]umin' >/dev/null || exit 0; \
             sleep 0.5; done; exit 1",
        )
        .await
        .unwrap();
    assert_eq!(waited.code, 0, "debdeploy still runs on the cumin host");

    let again = promote().env("CI", "true").output().unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(stderr.contains("resuming the promote started"), "{stderr}");
    assert!(
        stderr.contains("promoted 0.2.0 (0.2.0-1) to 3 hosts"),
        "{stderr}"
    );
    assert_eq!(
        prod.batches(),
        [
            (1, Some(Outcome::Ok)),
            (2, Some(Outcome::Interrupted)),
            (2, Some(Outcome::Ok)),
            (3, Some(Outcome::Ok))
        ]
    );
    let mut versions = prod.tb.versions().await.unwrap();
    versions.sort();
    assert!(
        versions
            .iter()
            .all(|(_, v)| v == harness::production::testbed::RELEASE_NEW),
        "{versions:?}"
    );
    prod.tb.teardown().await;
}
