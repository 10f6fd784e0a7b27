//! `release` end to end on the built-in fixtures: the dry run releases
//! minideploy up to a verified .deb without touching the user's repository,
//! and minideploy-split's server and agent together; the broken variant is
//! stopped by verify, its release commit and tag taken back and nothing
//! pushed; lintian's verdict is tuned by release.toml. Real Docker, real
//! builds, real syncs.

mod support;

use std::process::Command;
use std::sync::{Arc, Mutex};

use harness::release::version::{Bump, VersionRequest};
use harness::release::{self, Cleanup, ReleaseOptions, VerifyFailed};
use harness::support::progress::Progress;

fn options(repo: &std::path::Path, out: &std::path::Path) -> ReleaseOptions {
    ReleaseOptions {
        project: Some(repo.to_path_buf()),
        fixture: None,
        dry_run: true,
        tagged: false,
        version: VersionRequest::Bump(Bump::Minor),
        out: out.to_path_buf(),
        keep: false,
        scenarios: Vec::new(),
        run_id: harness::support::docker::new_run_id(),
    }
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn dry_run_releases_the_fixture_and_leaves_the_repository_as_it_was() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let (_tmp, repo) = support::fixture_repo("minideploy");
    let before = support::repo_state(&repo);
    let out = tempfile::tempdir().unwrap();
    let opts = options(&repo, out.path());

    let outcome = release::release(
        &opts,
        Arc::new(Mutex::new(Cleanup::default())),
        &Progress::new(false),
    )
    .await
    .expect("the dry run of the fixture passes");

    assert_eq!(outcome.version, "0.2.0-1");
    assert_eq!(outcome.previous.as_deref(), Some("0.1.0-1"));
    assert!(outcome.verify_passed);
    let version = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&outcome.debs[0].path)
        .arg("Version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "0.2.0-1");
    // The release's changelog entry is kept beside the .deb, and dpkg reads it.
    let parsed = Command::new("dpkg-parsechangelog")
        .arg("-l")
        .arg(outcome.artifacts.join("changelog"))
        .arg("-SVersion")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&parsed.stdout).trim(), "0.2.0-1");
    let junit = std::fs::read_to_string(&outcome.junit).unwrap();
    for scenario in [
        "fresh-install",
        "upgrade",
        "mixed-fleet",
        "downgrade",
        "target-stopped",
    ] {
        assert!(junit.contains(&format!("name=\"{scenario}\"")), "{junit}");
    }
    assert!(junit.contains("failures=\"0\""), "{junit}");
    let summary = std::fs::read_to_string(outcome.artifacts.join("verify.txt")).unwrap();
    // The scenarios' part; the coverage figures are checked below.
    let (scenarios, coverage) = summary.split_once("coverage of ").expect(&summary);
    // Each scenario's line ends with where its time went; checked below.
    let scenarios = support::without_phases(scenarios);
    insta::assert_snapshot!("verify_summary_fixture", support::redact(&scenarios));
    // minideploy's coverage was measured on the fleet, with the .deb shipped.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outcome.artifacts.join("verify.json")).unwrap(),
    )
    .unwrap();
    // Where the time went: per step of the release, per phase of each
    // scenario, in the summary and in the JSON.
    let steps: Vec<&str> = outcome.steps.iter().map(|s| s.step.as_str()).collect();
    // A project of its own: no fixture step.
    assert_eq!(steps, ["preflight", "bump", "build", "images", "verify"]);
    assert!(
        outcome.time_line().contains(", verify "),
        "{}",
        outcome.time_line()
    );
    for scenario in json["scenarios"].as_array().unwrap() {
        let phases: Vec<&str> = scenario["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for phase in ["fleet start", "install", "sync", "teardown"] {
            assert!(phases.contains(&phase), "{scenario}");
        }
        let line = format!("{:<16}", scenario["name"].as_str().unwrap());
        assert!(
            summary
                .lines()
                .any(|l| l.contains(&line) && l.contains("(fleet start ")),
            "{summary}"
        );
    }
    assert!(json["prepare"].as_f64().unwrap() > 0.0, "{json}");
    let measured = &json["coverage"];
    assert!(
        measured["total"]["covered"].as_u64().unwrap() > 0,
        "{coverage}"
    );
    assert!(coverage.contains("minideploy/deploy.py"), "{coverage}");
    assert_eq!(outcome.debs.len(), 1, "{:?}", outcome.debs);
    let shipped = &outcome.debs[0];
    assert_eq!(
        measured["deb_sha256"][shipped.file_name()],
        shipped.sha256.as_str(),
        "{measured}"
    );
    assert!(
        measured["incomplete"].as_array().unwrap().is_empty(),
        "{measured}"
    );
    assert!(outcome.artifacts.join("coverage.xml").exists());
    assert!(outcome
        .canary_plan
        .iter()
        .any(|l| l.contains("debdeploy deploy -u ")));

    assert_eq!(
        support::repo_state(&repo),
        before,
        "a dry run changed the repository"
    );
    assert_eq!(
        support::leftovers(&docker, &opts.run_id).await,
        0,
        "containers left behind"
    );
}

/// A source with two binary packages, its version in debian/changelog only:
/// both are built, summed and verified together across the fleet's roles.
#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn dry_run_releases_the_split_fixture_server_and_agent_together() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let (_tmp, repo) = support::fixture_repo("minideploy-split");
    let before = support::repo_state(&repo);
    let out = tempfile::tempdir().unwrap();
    let mut opts = options(&repo, out.path());
    // Patch raises the last of the four parts.
    opts.version = VersionRequest::Bump(Bump::Patch);

    let outcome = release::release(
        &opts,
        Arc::new(Mutex::new(Cleanup::default())),
        &Progress::new(false),
    )
    .await
    .expect("the dry run of minideploy-split passes");

    let version = "1.4.0.3-1+deb12u1";
    assert_eq!(outcome.version, version);
    assert_eq!(outcome.previous.as_deref(), Some("1.4.0.2-1+deb12u1"));
    assert!(outcome.verify_passed);
    // Both binary packages, of the new version, each listed in SHA256SUMS
    // with the sum of the file beside it.
    let sums = std::fs::read_to_string(outcome.artifacts.join("SHA256SUMS")).unwrap();
    for package in ["minideploy-split-server", "minideploy-split-agent"] {
        let name = format!("{package}_{version}_all.deb");
        let deb = outcome.artifacts.join(&name);
        let bytes = std::fs::read(&deb).unwrap_or_else(|e| panic!("{name}: {e}"));
        let field = |f: &str| {
            let out = Command::new("dpkg-deb")
                .arg("-f")
                .arg(&deb)
                .arg(f)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(field("Package"), package);
        assert_eq!(field("Version"), version);
        assert_eq!(field("Source"), "minideploy-split");
        use sha2::Digest;
        let sum = hex::encode(sha2::Sha256::digest(&bytes));
        assert!(
            sums.lines()
                .any(|l| l.starts_with(&sum) && l.ends_with(&name)),
            "{name} ({sum}) is not in SHA256SUMS:\n{sums}"
        );
        let built = outcome
            .debs
            .iter()
            .find(|d| d.package == package)
            .unwrap_or_else(|| panic!("{package} is not in the outcome: {:?}", outcome.debs));
        assert_eq!(built.sha256, sum);
        assert_eq!(built.file_name(), name);
    }
    assert_eq!(outcome.debs.len(), 2, "{:?}", outcome.debs);
    // The new changelog entry keeps the newest entry's conventions.
    let changelog = outcome.artifacts.join("changelog");
    let parsed = |field: &str| {
        let out = Command::new("dpkg-parsechangelog")
            .arg("-l")
            .arg(&changelog)
            .arg(format!("-S{field}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(parsed("Version"), version);
    assert_eq!(parsed("Distribution"), "bookworm-wikimedia");
    assert_eq!(parsed("Urgency"), "low");
    // Only the custom scenarios ran, and every one passed.
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outcome.artifacts.join("verify.json")).unwrap(),
    )
    .unwrap();
    let ran: Vec<(&str, bool)> = json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["passed"].as_bool().unwrap()))
        .collect();
    let custom = [
        "split-fresh-install",
        "split-upgrade",
        "split-downgrade",
        "split-mixed-fleet",
        "split-dead-target",
    ];
    assert_eq!(
        ran,
        custom.iter().map(|n| (*n, true)).collect::<Vec<_>>(),
        "{json}"
    );
    let junit = std::fs::read_to_string(&outcome.junit).unwrap();
    assert!(junit.contains("failures=\"0\""), "{junit}");
    // Both packages' modules measured on every host that ran them, and the
    // lines changed since 1.4.0.2 exercised.
    let measured = &json["coverage"];
    assert_eq!(
        measured["modules"],
        serde_json::json!(["minisplit_agent", "minisplit_server"]),
        "{measured}"
    );
    assert!(
        measured["incomplete"].as_array().unwrap().is_empty(),
        "{measured}"
    );
    let changed = &measured["changed"];
    assert_eq!(changed["since"], "1.4.0.2", "{changed}");
    assert!(changed["changed"].as_u64().unwrap() > 0, "{changed}");
    assert_eq!(changed["exercised"], changed["changed"], "{changed}");

    assert_eq!(
        support::repo_state(&repo),
        before,
        "a dry run changed the repository"
    );
    assert_eq!(
        support::leftovers(&docker, &opts.run_id).await,
        0,
        "containers left behind"
    );
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn a_regression_in_the_sync_fails_verify_and_stops_the_release() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let (tmp, repo) = support::fixture_repo("minideploy-broken");
    // A real release, not a dry run: it makes the release commit and tag,
    // and must take them back when verify fails, and stop before its first
    // step outside the repository (the push to origin).
    let origin = tmp.path().join("origin.git");
    support::git(
        tmp.path(),
        &["init", "-q", "--bare", origin.to_str().unwrap()],
    );
    support::git(
        &repo,
        &["remote", "add", "origin", origin.to_str().unwrap()],
    );
    support::git(&repo, &["push", "-q", "origin", "main", "--tags"]);
    let before = support::repo_state(&repo);
    let origin_before = support::git(&origin, &["show-ref"]);
    let out = tempfile::tempdir().unwrap();
    let mut opts = options(&repo, out.path());
    opts.dry_run = false;
    // One scenario is enough to show the teeth; the full suite runs above.
    opts.scenarios = vec!["fresh-install".into()];

    let err = release::release(
        &opts,
        Arc::new(Mutex::new(Cleanup::default())),
        &Progress::new(false),
    )
    .await
    .expect_err("the broken fixture must fail verify");
    let failed = err
        .downcast_ref::<VerifyFailed>()
        .unwrap_or_else(|| panic!("expected a verify failure, got: {err:#}"));
    let summary = &failed.summary;
    insta::assert_snapshot!(
        "verify_summary_broken",
        support::redact(&support::without_phases(summary))
    );
    assert!(summary.contains("FAIL fresh-install"), "{summary}");
    assert!(
        summary.contains("deployed revision") || summary.contains("`current` link"),
        "{summary}"
    );
    assert!(
        ["canary1", "canary2", "app1", "app2", "app3", "app4"]
            .iter()
            .any(|h| summary.contains(&format!("{h}: "))),
        "the report names no host: {summary}"
    );
    assert_eq!(
        support::repo_state(&repo),
        before,
        "the release commit and tag outlived a failed verify"
    );
    assert_eq!(
        support::git(&origin, &["show-ref"]),
        origin_before,
        "something was pushed after a failed verify"
    );
    assert_eq!(
        support::leftovers(&docker, &opts.run_id).await,
        0,
        "containers left behind"
    );
}

/// The CLI, as a user meets it: no engine answers.
#[test]
fn an_unreachable_engine_is_a_preflight_failure_that_says_what_to_do() {
    let (_tmp, repo) = support::fixture_repo("minideploy");
    let before = support::repo_state(&repo);
    let out = Command::new(env!("CARGO_BIN_EXE_release-harness"))
        .args(["release", "--dry-run", "--project"])
        .arg(&repo)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("CI", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("preflight failed, nothing was changed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
    assert!(stderr.contains("fix: start it"), "{stderr}");
    assert_eq!(support::repo_state(&repo), before);
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn lintian_errors_fail_the_build_unless_release_toml_suppresses_their_tag() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let _heavy = support::HEAVY.lock().await;
    let (_tmp, repo) = support::fixture_repo("minideploy");
    // A private distribution is an error to lintian.
    let changelog = repo.join("debian/changelog");
    let text = std::fs::read_to_string(&changelog).unwrap();
    std::fs::write(
        &changelog,
        text.replacen(") unstable;", ") bookworm-wikimedia;", 1),
    )
    .unwrap();
    let mut config = harness::config::Config::load(&repo).unwrap();
    let say = |line: &str| eprintln!("  {line}");

    let out = tempfile::tempdir().unwrap();
    let err = harness::release::build::build(&docker, &config, &repo, out.path(), &say)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("lintian found errors"), "{msg}");
    assert!(
        msg.contains("E: minideploy") && msg.contains("bad-distribution-in-changes-file"),
        "the tag and its line: {msg}"
    );
    assert!(msg.contains("build.lintian_suppress"), "{msg}");

    config.build.lintian_suppress = vec![
        "bad-distribution-in-changes-file".into(),
        "no-such-tag-xyz".into(),
    ];
    let out = tempfile::tempdir().unwrap();
    let built = harness::release::build::build(&docker, &config, &repo, out.path(), &say)
        .await
        .unwrap();
    assert!(
        built.lintian_errors.is_empty(),
        "{:?}",
        built.lintian_errors
    );
    let warnings = built.lintian_warnings.join("\n");
    assert!(!warnings.contains("bad-distribution"), "{warnings}");
    assert!(
        warnings.contains("names `no-such-tag-xyz`, a tag this lintian does not know"),
        "{warnings}"
    );
}
