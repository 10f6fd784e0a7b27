//! A scenario written in release.toml, run by `release --dry-run` on the
//! built-in fixture: installs, commands checked by exit code and output on
//! every host, a target stopped and started again. Real Docker, real build,
//! real ssh.

mod support;

use std::sync::{Arc, Mutex};

use harness::release::version::{Bump, VersionRequest};
use harness::release::{self, Cleanup, ReleaseOptions};
use harness::support::progress::Progress;

const CUSTOM: &str = r#"
[verify]
scenarios = []

[[verify.custom]]
name = "version-and-a-host-down"
steps = [
    { install = "new", on = "all" },
    { run = "minideploy --version", on = "all", expect_output = "^{version}$" },
    { stop = "app1" },
    { run = "cd /srv/deployment/demo && minideploy deploy -r $(git rev-parse HEAD)", expect_exit = "non-zero", expect_output = "app1" },
    { start = "app1" },
]
"#;

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn a_custom_scenario_runs_its_steps_on_the_fixture() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let (_tmp, repo) = support::fixture_repo("minideploy");
    let toml = repo.join("release.toml");
    let text = std::fs::read_to_string(&toml).unwrap() + CUSTOM;
    std::fs::write(&toml, text).unwrap();
    support::git(&repo, &["commit", "-qam", "A custom verify scenario"]);
    let out = tempfile::tempdir().unwrap();
    let opts = ReleaseOptions {
        project: Some(repo.clone()),
        fixture: None,
        dry_run: true,
        tagged: false,
        version: VersionRequest::Bump(Bump::Minor),
        out: out.path().to_path_buf(),
        keep: false,
        scenarios: Vec::new(),
        run_id: harness::support::docker::new_run_id(),
    };
    let outcome = release::release(
        &opts,
        Arc::new(Mutex::new(Cleanup::default())),
        &Progress::new(false),
    )
    .await;
    let leftovers = support::leftovers(&docker, &opts.run_id).await;
    let outcome = outcome.unwrap_or_else(|e| panic!("the custom scenario failed: {e:#}"));
    assert!(outcome.verify_passed);
    let summary = std::fs::read_to_string(outcome.artifacts.join("verify.txt")).unwrap();
    assert!(
        summary.contains("1 of 1 scenarios passed"),
        "only the custom scenario runs: {summary}"
    );
    assert!(
        summary.contains("PASS version-and-a-host-down"),
        "{summary}"
    );
    let report = std::fs::read_to_string(outcome.artifacts.join("verify.json")).unwrap();
    for logged in [
        "step 2: `minideploy --version` on app4 exited 0",
        "step 3: stopped app1",
        "step 5: started app1 again",
    ] {
        assert!(report.contains(logged), "{logged} not in {report}");
    }
    assert_eq!(leftovers, 0, "containers left behind");
}
