//! Production steps on the testbed: real cumin over ssh as root, the
//! debdeploy stand-in, a fixture repository whose release tag carries the
//! ledger. Every claim the harness makes is checked against dpkg on the
//! hosts themselves. One testbed per test (1 cumin host, 2 canaries, 3 app
//! hosts); the tests take the Docker engine in turn.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use harness::config::{Config, Hosts, RolloutTool};
use harness::ledger::{self, Actor, Ledger, LockHolder, Outcome, Step, StepKind};
use harness::production::testbed::{self, Testbed};
use harness::production::{
    self, PromoteOptions, PromoteOutcome, ReleaseFacts, RollbackOptions, State,
};
use harness::support::git::Repo;
use harness::support::progress::Progress;

static DOCKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use testbed::{RELEASE_NEW as NEW, RELEASE_PREVIOUS as PREVIOUS, RELEASE_TAG as TAG};

struct Env {
    tb: Testbed,
    repo: Repo,
    facts: ReleaseFacts,
    progress: Progress,
    dir: tempfile::TempDir,
}

impl Env {
    fn config(&self) -> &Config {
        &self.tb.config
    }

    async fn versions(&self) -> Vec<(String, String)> {
        let mut v = self.tb.versions().await.unwrap();
        v.sort();
        v
    }

    async fn assert_versions(&self, expected: &[(&str, &str)]) {
        let actual = self.versions().await;
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(h, v)| (h.to_string(), v.to_string()))
            .collect();
        assert_eq!(actual, expected, "versions on the hosts (asked of dpkg)");
    }

    fn record(&self) -> ledger::Record {
        Ledger::open(&self.repo)
            .unwrap()
            .record(TAG)
            .unwrap()
            .expect("a ledger record")
    }

    /// Holds the dpkg frontend lock on a host (as a running apt would),
    /// until `release_dpkg_lock`.
    async fn hold_dpkg_lock(&self, host: &str) {
        let h = self.tb.fleet.host(host).unwrap();
        self.tb
            .fleet
            .run(
                h,
                None,
                "rm -f /run/lock-held; setsid python3 -c 'import fcntl,time,os; \
                 f=open(\"/var/lib/dpkg/lock-frontend\",\"w\"); fcntl.lockf(f, fcntl.LOCK_EX); \
                 open(\"/run/lock-held\",\"w\").close(); time.sleep(600)' >/dev/null 2>&1 & \
                 for i in $(seq 50); do [ -e /run/lock-held ] && exit 0; sleep 0.1; done; exit 1",
            )
            .await
            .unwrap();
    }

    async fn release_dpkg_lock(&self, host: &str) {
        let h = self.tb.fleet.host(host).unwrap();
        self.tb
            .fleet
            .run(h, None, "pkill -f 'sleep.60[0]' || true")
            .await
            .unwrap();
    }
}

/// Starts a testbed (or returns None when Docker tests are skipped on
/// purpose), with a fixture repository tagged for release `TAG`.
async fn start(fixture: &str, tool: RolloutTool, tune: impl FnOnce(&mut Config)) -> Option<Env> {
    let docker = harness::support::testing::engine("a production test").await?;
    let release = testbed::Release::start(&docker, fixture, |config| {
        config.rollout.tool = tool;
        config.rollout.batch_size = 2;
        tune(config);
    })
    .await
    .unwrap();
    Some(Env {
        tb: release.tb,
        repo: release.repo,
        facts: release.facts,
        progress: release.progress,
        dir: release.dir,
    })
}

/// Runs `scenario` on a testbed of the `minideploy` fixture and removes the
/// testbed whatever happened.
async fn run<F, Fut>(tool: RolloutTool, tune: impl FnOnce(&mut Config), scenario: F)
where
    F: FnOnce(Arc<Env>) -> Fut,
    Fut: Future<Output = ()>,
{
    run_fixture("minideploy", tool, tune, scenario).await
}

/// `run`, for the release of fixture `fixture`.
async fn run_fixture<F, Fut>(
    fixture: &str,
    tool: RolloutTool,
    tune: impl FnOnce(&mut Config),
    scenario: F,
) where
    F: FnOnce(Arc<Env>) -> Fut,
    Fut: Future<Output = ()>,
{
    let _engine = DOCKER.lock().await;
    let Some(env) = start(fixture, tool, tune).await else {
        return;
    };
    let env = Arc::new(env);
    let result = AssertUnwindSafe(scenario(env.clone())).catch_unwind().await;
    match Arc::try_unwrap(env) {
        Ok(env) => env.tb.teardown().await,
        Err(_) => eprintln!("warning: the testbed is still in use; its containers stay"),
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a script on the testbed's cumin host.
async fn on_cumin_host(env: &Env, script: &str) -> harness::support::docker::ExecOutput {
    env.tb
        .fleet
        .exec(env.tb.cumin_host(), None, script)
        .await
        .unwrap()
}

fn all(version: &'static str) -> Vec<(&'static str, &'static str)> {
    ["app1", "app2", "app3", "canary1", "canary2"]
        .into_iter()
        .map(|h| (h, version))
        .collect()
}

fn canaries_new_apps_old() -> Vec<(&'static str, &'static str)> {
    vec![
        ("app1", PREVIOUS),
        ("app2", PREVIOUS),
        ("app3", PREVIOUS),
        ("canary1", NEW),
        ("canary2", NEW),
    ]
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn tag_canaries_soak_promote_rollback() {
    run(
        RolloutTool::Debdeploy,
        // Long enough that a loaded machine's canary step and gate do not
        // outlast it; the test then waits only what status says is left.
        |c| c.gate.min_soak_secs = 25,
        |env| async move {
            let config = env.config();
            let hosts = production::canary(&env.repo, config, &env.facts, false, &env.progress)
                .await
                .unwrap();
            assert_eq!(hosts.len(), 2);
            env.assert_versions(&canaries_new_apps_old()).await;
            let status = production::status(&env.repo, config).unwrap();
            assert_eq!(status.len(), 1);
            assert_eq!(status[0].state, State::Canary);
            assert!(status[0].soak_remaining_secs.unwrap() > 0);

            // Too early: the soak is not over.
            match production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                .await
                .unwrap()
            {
                PromoteOutcome::Soaking(gate) => {
                    let soak = gate.checks.iter().find(|c| c.name == "soak").unwrap();
                    assert!(soak.detail.contains("left"), "{soak:?}");
                    assert!(
                        gate.checks
                            .iter()
                            .filter(|c| c.name != "soak")
                            .all(|c| c.verdict == harness::production::gate::Verdict::Pass),
                        "{}",
                        gate.summary()
                    );
                }
                other => panic!("expected soaking, got {other:?}"),
            }
            env.assert_versions(&canaries_new_apps_old()).await;

            let left = production::status(&env.repo, config).unwrap()[0]
                .soak_remaining_secs
                .unwrap();
            assert!((1..=25).contains(&left), "{left} s of soak left");
            tokio::time::sleep(std::time::Duration::from_secs(left as u64 + 1)).await;
            match production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                .await
                .unwrap()
            {
                PromoteOutcome::Promoted { hosts, version, .. } => {
                    assert_eq!((hosts, version.as_str()), (3, NEW));
                }
                other => panic!("expected promoted, got {other:?}"),
            }
            env.assert_versions(&all(NEW)).await;

            let status = production::status(&env.repo, config).unwrap();
            let s = &status[0];
            assert_eq!(s.state, State::Promoted);
            assert!(s.lead_time_secs.is_some());
            assert_eq!(s.gate_evaluations, 2);
            let steps: Vec<&str> = s.timeline.iter().map(|e| e.step.as_str()).collect();
            assert_eq!(
                steps,
                ["tagged", "built", "verified", "canary", "promote", "batch 1", "batch 2"]
            );
            let text = production::render_status(&status);
            assert!(text.contains("0.2.0 (0.2.0-1): promoted"), "{text}");
            assert!(text.contains("lead time"), "{text}");

            // Rollback goes back to what the canaries ran before, everywhere.
            let back = production::rollback(
                &env.repo,
                config,
                &RollbackOptions::default(),
                &env.progress,
            )
            .await
            .unwrap();
            assert_eq!(back.len(), 5);
            env.assert_versions(&all(PREVIOUS)).await;
            let status = production::status(&env.repo, config).unwrap();
            assert_eq!(status[0].state, State::RolledBack);
            let rollback = env.record().last(StepKind::Rollback).cloned().unwrap();
            assert_eq!(rollback.version.as_deref(), Some(PREVIOUS));
            assert_eq!(rollback.outcome, Some(Outcome::Ok));
            let again = production::promote(
                &env.repo,
                config,
                &PromoteOptions {
                    release: Some(TAG.into()),
                    ..Default::default()
                },
                &env.progress,
            )
            .await
            .unwrap_err();
            assert!(
                format!("{again:#}").contains("was rolled back"),
                "{again:#}"
            );
        },
    )
    .await;
}

/// What dpkg says of both binaries on every target.
async fn split_binaries_on_targets(env: &Env) -> Vec<String> {
    let mut seen = Vec::new();
    for h in env.tb.fleet.select(Hosts::Targets) {
        let out = env
            .tb
            .fleet
            .exec(
                h,
                None,
                "dpkg-query -W -f='${db:Status-Abbrev}${Package}=${Version}\\n' minideploy-split-server \
                 minideploy-split-agent 2>/dev/null | sed -n 's/^ii //p' | tr '\\n' ' '",
            )
            .await
            .unwrap();
        seen.push(format!("{}: {}", h.name, out.stdout.trim()));
    }
    seen.sort();
    seen
}

async fn split_release_through_production(tool: RolloutTool) {
    // minideploy-split's release.toml places the server on the deploy host
    // and the agent on the targets.
    run_fixture(
        "minideploy-split",
        tool,
        |_| {},
        |env| async move {
            let config = env.config();
            assert_eq!(
                split_binaries_on_targets(&env).await,
                ["app1", "app2", "app3", "canary1", "canary2"]
                    .map(|h| format!("{h}: minideploy-split-agent={PREVIOUS}"))
            );
            if tool == RolloutTool::Debdeploy {
                // debdeploy's spec names the source, not a binary.
                let spec = harness::production::rollout::update_spec(config, NEW, false).unwrap();
                assert!(spec.starts_with("source: minideploy-split\n"), "{spec}");
            }
            production::canary(&env.repo, config, &env.facts, false, &env.progress)
                .await
                .unwrap();
            env.assert_versions(&canaries_new_apps_old()).await;
            // Each binary's sha256 in the ledger, and the gate checks both.
            let record = env.record();
            assert_eq!(
                record.debs.keys().collect::<Vec<_>>(),
                ["minideploy-split-agent", "minideploy-split-server"]
            );
            match production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                .await
                .unwrap()
            {
                PromoteOutcome::Promoted { hosts, version, .. } => {
                    assert_eq!((hosts, version.as_str()), (3, NEW));
                }
                other => panic!("expected promoted, got {other:?}"),
            }
            let gate = env.record().last(StepKind::Gate).cloned().unwrap();
            let artifact = gate.checks.iter().find(|c| c.name == "artifact").unwrap();
            assert!(
                artifact.detail.contains("minideploy-split-agent"),
                "{artifact:?}"
            );
            assert!(
                artifact.detail.contains("minideploy-split-server"),
                "{artifact:?}"
            );
            // The targets were upgraded in what they carry, the agent, and got
            // no server.
            assert_eq!(
                split_binaries_on_targets(&env).await,
                ["app1", "app2", "app3", "canary1", "canary2"]
                    .map(|h| format!("{h}: minideploy-split-agent={NEW}"))
            );
            production::rollback(
                &env.repo,
                config,
                &RollbackOptions::default(),
                &env.progress,
            )
            .await
            .unwrap();
            env.assert_versions(&all(PREVIOUS)).await;
        },
    )
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn a_source_of_two_binaries_canaries_promotes_and_rolls_back_with_debdeploy() {
    split_release_through_production(RolloutTool::Debdeploy).await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn a_source_of_two_binaries_canaries_promotes_and_rolls_back_with_cumin() {
    split_release_through_production(RolloutTool::Cumin).await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn debdeploy_exit_0_does_not_hide_a_failed_canary() {
    run(RolloutTool::Debdeploy, |_| {}, |env| async move {
        let config = env.config();
        env.hold_dpkg_lock("canary2").await;
        // debdeploy itself says all is well.
        let spec = harness::production::rollout::update_spec(config, NEW, false).unwrap();
        let out = on_cumin_host(
            &env,
            &format!(
                "apt-get -q update >/dev/null; cat > /tmp/spec.yaml <<'EOF'\n{spec}EOF\n\
                 debdeploy deploy -u /tmp/spec.yaml -s canaries"
            ),
        )
        .await;
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("These hosts are already up-to-date:\n  canary2"), "{}", out.stdout);
        // The harness does not believe it.
        let err = production::canary(&env.repo, config, &env.facts, false, &env.progress)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("failed on 1 of 2 canaries"), "{msg}");
        assert!(msg.contains("debdeploy exited 0"), "{msg}");
        assert!(
            msg.contains("canary2: expected 0.2.0-1, dpkg says 0.1.0-1; the rollout tool reported: already up-to-date"),
            "{msg}"
        );
        assert!(!msg.contains("canary1:"), "{msg}");
        let record = env.record();
        let canary = record.last(StepKind::Canary).unwrap();
        assert_eq!(canary.outcome, Some(Outcome::Failed));
        assert_eq!(production::state_of(&record), State::CanaryFailed);
        env.release_dpkg_lock("canary2").await;
    })
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn debdeploy_stand_in_checks_usage_and_spec() {
    run(RolloutTool::Debdeploy, |_| {}, |env| async move {
        let good = "source: minideploy\ncomment: c\nupdate_type: tool\nfixes: {bookworm: \"0.2.0-1\"}\nlibraries: []\ndowngrade: false\n";
        let cases: &[(&str, &str, i64, &str)] = &[
            ("no verb", "debdeploy", 2, "required"),
            ("unknown verb", "debdeploy rollback -u /tmp/s.yaml -s canaries", 2, "invalid choice"),
            ("no hosts", "debdeploy deploy -u /tmp/s.yaml", 2, "one of the arguments -s/--servers -Q/--query is required"),
            ("alias and query", "debdeploy deploy -u /tmp/s.yaml -s canaries -Q 'D{app1}'", 2, "not allowed with"),
            ("query_version without packages", "debdeploy query_version -s canaries", 2, "--packages"),
            ("unknown alias", "debdeploy deploy -u /tmp/s.yaml -s nosuch", 1, "Invalid host group alias"),
            ("bad query", "debdeploy deploy -u /tmp/s.yaml -Q 'X{{'", 1, "Invalid cumin query"),
            ("missing spec", "debdeploy deploy -u /tmp/none.yaml -s canaries", 1, "Could not open"),
        ];
        // As the real tool: a few messages, then Python's own tracebacks; the
        // crashes after the `Rolling out` header deploy nothing either.
        let bad_specs: &[(&str, &str, &str)] = &[
            ("no fixes", "source: minideploy\nupdate_type: tool\n", "'fixes' stanza"),
            ("no source", "update_type: tool\nfixes: {bookworm: \"1\"}\n", "'source' stanza"),
            ("bad update_type", "source: minideploy\nupdate_type: upgrade\nfixes: {bookworm: \"1\"}\n", "invalid 'update_type'"),
            ("a YAML scanner error", "source: minideploy\n\tupdate_type: tool\n", "Invalid YAML file:"),
            ("a YAML parser error", "source: [unclosed\n", "yaml.parser.ParserError"),
            ("an empty spec", "", "TypeError: argument of type 'NoneType' is not iterable"),
            ("fixes as a list", "source: minideploy\nupdate_type: tool\nfixes: [bookworm]\n", "AttributeError: 'list' object has no attribute 'get'"),
        ];
        let crashes: &[(&str, &str, &str)] = &[
            ("unknown distro", "source: minideploy\nupdate_type: tool\nfixes: {buster: \"0.2.0-1\"}\n", "KeyError: 'buster'"),
            ("daemon-cluster", "source: minideploy\nupdate_type: daemon-cluster\nfixes: {bookworm: \"0.2.0-1\"}\n", "KeyError: 'daemon-cluster'"),
            ("reboot", "source: minideploy\nupdate_type: reboot\nfixes: {bookworm: \"0.2.0-1\"}\n", "KeyError: 'reboot'"),
            ("reboot-cluster", "source: minideploy\nupdate_type: reboot-cluster\nfixes: {bookworm: \"0.2.0-1\"}\n", "KeyError: 'reboot-cluster'"),
        ];
        for (what, command, code, says) in cases {
            let out = on_cumin_host(&env, &format!("cat > /tmp/s.yaml <<'EOF'\n{good}EOF\n{command}")).await;
            let text = format!("{}{}", out.stdout, out.stderr);
            assert_eq!(out.code, *code, "{what}: {text}");
            assert!(text.contains(says), "{what}: expected `{says}` in: {text}");
        }
        // The hosts are resolved before the spec is read.
        let out = on_cumin_host(&env, "debdeploy deploy -u /tmp/none.yaml -s nosuch").await;
        assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("Invalid host group alias"), "{}{}", out.stdout, out.stderr);
        // The canaries' package lists know 0.2.0-1: a spec that deployed would show.
        let out = on_cumin_host(&env, "cumin --force --no-progress 'D{canary[1-2]}' 'apt-get -q update'").await;
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        for (what, spec, says, header) in bad_specs
            .iter()
            .map(|(w, s, t)| (w, s, t, false))
            .chain(crashes.iter().map(|(w, s, t)| (w, s, t, true)))
        {
            let out = on_cumin_host(&env, &format!(
                "cat > /tmp/b.yaml <<'EOF'\n{spec}EOF\ndebdeploy deploy -u /tmp/b.yaml -s canaries"
            ))
            .await;
            let text = format!("{}{}", out.stdout, out.stderr);
            assert_eq!(out.code, 1, "{what}: {text}");
            assert!(text.contains(says), "{what}: expected `{says}` in: {text}");
            let traceback = !says.contains("stanza") && !says.contains("invalid") && !says.contains("Invalid");
            assert_eq!(out.stderr.contains("Traceback (most recent call last)"), traceback, "{what}: {text}");
            assert_eq!(out.stdout.starts_with("Rolling out minideploy:\n"), header, "{what}: {text}");
        }
        // Nothing was installed by any of them; the good spec works.
        env.assert_versions(&all(PREVIOUS)).await;
        let out = on_cumin_host(&env, &format!(
            "apt-get -q update >/dev/null; cat > /tmp/s.yaml <<'EOF'\n{good}EOF\n\
             debdeploy deploy -u /tmp/s.yaml -Q 'D{{canary1}}' && debdeploy query_version --packages minideploy -s canaries"
        ))
        .await;
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("minideploy was updated: 0.1.0-1 -> 0.2.0-1\n  canary1 (1 hosts)"), "{}", out.stdout);
        assert!(out.stdout.contains("canary1\n  minideploy: 0.2.0-1"), "{}", out.stdout);
        assert!(out.stdout.contains("canary2\n  minideploy: 0.1.0-1"), "{}", out.stdout);
        // `downgrade` is Python truthiness, as in the real tool.
        let maybe = "source: minideploy\nupdate_type: tool\nfixes: {bookworm: \"0.1.0-1\"}\ndowngrade: maybe\n";
        let out = on_cumin_host(&env, &format!(
            "cat > /tmp/d.yaml <<'EOF'\n{maybe}EOF\ndebdeploy deploy -u /tmp/d.yaml -Q 'D{{canary1}}'"
        ))
        .await;
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("minideploy was updated: 0.2.0-1 -> 0.1.0-1"), "{}", out.stdout);
        env.assert_versions(&all(PREVIOUS)).await;
    })
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn a_canary_downgraded_by_hand_blocks_promote_until_forced() {
    run(
        RolloutTool::Debdeploy,
        |_| {},
        |env| async move {
            let config = env.config();
            production::canary(&env.repo, config, &env.facts, false, &env.progress)
                .await
                .unwrap();
            let canary1 = env.tb.fleet.host("canary1").unwrap();
            env.tb.fleet.install(&[canary1], PREVIOUS).await.unwrap();
            match production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                .await
                .unwrap()
            {
                PromoteOutcome::Blocked {
                    gate,
                    rolled_back_to,
                } => {
                    assert!(rolled_back_to.is_none());
                    let c = gate
                        .checks
                        .iter()
                        .find(|c| c.name == "canary versions")
                        .unwrap();
                    assert_eq!(c.verdict, harness::production::gate::Verdict::Fail);
                    assert!(c.detail.contains("canary1 has 0.1.0-1"), "{c:?}");
                }
                other => panic!("expected blocked, got {other:?}"),
            }
            // The fleet was not touched.
            let apps: Vec<(String, String)> = env
                .versions()
                .await
                .into_iter()
                .filter(|(h, _)| h.starts_with("app"))
                .collect();
            assert!(apps.iter().all(|(_, v)| v == PREVIOUS), "{apps:?}");
            assert_eq!(
                production::status(&env.repo, config).unwrap()[0].state,
                State::Blocked
            );

            let no_reason = PromoteOptions {
                force: true,
                ..Default::default()
            };
            let err = production::promote(&env.repo, config, &no_reason, &env.progress)
                .await
                .unwrap_err();
            assert!(
                format!("{err:#}").contains("--force needs --reason"),
                "{err:#}"
            );
            let forced = PromoteOptions {
                force: true,
                reason: Some("canary1 was downgraded by an operator testing a fix".into()),
                ..Default::default()
            };
            let outcome = production::promote(&env.repo, config, &forced, &env.progress)
                .await
                .unwrap();
            assert!(
                matches!(outcome, PromoteOutcome::Promoted { .. }),
                "{outcome:?}"
            );
            let record = env.record();
            let gate = record.last(StepKind::Gate).unwrap();
            assert_eq!(gate.outcome, Some(Outcome::Forced));
            assert_eq!(gate.reason.as_deref(), forced.reason.as_deref());
            let promote = record.last(StepKind::Promote).unwrap();
            assert_eq!(promote.outcome, Some(Outcome::Forced));
            let text = production::render_status(&production::status(&env.repo, config).unwrap());
            assert!(text.contains("reason: canary1 was downgraded"), "{text}");
        },
    )
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn a_deb_changed_after_verify_blocks_promote_and_rolls_the_canaries_back() {
    run(
        RolloutTool::Debdeploy,
        |c| c.gate.rollback_on_fail = true,
        |env| async move {
            let config = env.config();
            production::canary(&env.repo, config, &env.facts, false, &env.progress)
                .await
                .unwrap();
            // Same name and version, other bytes, republished.
            let changed = testbed::make_deb_with(
                &env.dir.path().join("changed"),
                "minideploy",
                NEW,
                "rebuilt",
            )
            .unwrap();
            assert_ne!(
                std::fs::read(&changed.paths[0]).unwrap(),
                std::fs::read(&env.facts.debs[0].path).unwrap()
            );
            env.tb
                .fleet
                .publish_debs(&[changed.paths[0].as_path()])
                .await
                .unwrap();
            match production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                .await
                .unwrap()
            {
                PromoteOutcome::Blocked {
                    gate,
                    rolled_back_to,
                } => {
                    let c = gate.checks.iter().find(|c| c.name == "artifact").unwrap();
                    assert_eq!(
                        c.verdict,
                        harness::production::gate::Verdict::Fail,
                        "{}",
                        gate.summary()
                    );
                    assert!(c.detail.contains("changed after verify"), "{c:?}");
                    assert_eq!(rolled_back_to.as_deref(), Some(PREVIOUS));
                }
                other => panic!("expected blocked, got {other:?}"),
            }
            env.assert_versions(&all(PREVIOUS)).await;
            let record = env.record();
            let rollback = record.last(StepKind::Rollback).unwrap();
            assert_eq!(rollback.hosts, ["canary1", "canary2"]);
            assert!(rollback
                .reason
                .as_deref()
                .unwrap()
                .contains("rollback_on_fail"));
            assert_eq!(production::state_of(&record), State::RolledBack);
        },
    )
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn a_promote_cut_off_halfway_resumes_without_redoing_batches() {
    run(
        RolloutTool::Debdeploy,
        |c| c.rollout.batch_size = 1,
        |env| async move {
            let config = env.config();
            production::canary(&env.repo, config, &env.facts, false, &env.progress)
                .await
                .unwrap();
            let first = PromoteOptions {
                max_batches: Some(1),
                ..Default::default()
            };
            let outcome = production::promote(&env.repo, config, &first, &env.progress)
                .await
                .unwrap();
            assert!(
                matches!(outcome, PromoteOutcome::Partial { done: 1, total: 3 }),
                "{outcome:?}"
            );

            // A second promote dies in batch 2: its step is written started, the
            // package reached app2, the lock stays with the dead process.
            let ledger = Ledger::open(&env.repo).unwrap();
            let mut dead = Actor::current();
            dead.pid = u32::MAX - 7;
            dead.ci_job = Some("job 4242".into());
            let mut cut = Step::start(StepKind::Batch);
            cut.by = dead.clone();
            cut.batch = Some(2);
            cut.hosts = vec!["app2".into()];
            ledger.start_step(TAG, cut).unwrap();
            let app2 = env.tb.fleet.host("app2").unwrap();
            env.tb.fleet.install(&[app2], NEW).await.unwrap();
            let holder = LockHolder {
                operation: "promote".into(),
                release: TAG.into(),
                by: dead,
                since: ledger::now(),
                expires: "2999-01-01T00:00:00.000Z".into(),
                token: "dead".into(),
            };
            let tree = env
                .repo
                .git(&["hash-object", "-t", "tree", "-w", "/dev/null"])
                .unwrap();
            let commit = env
                .repo
                .git(&[
                    "commit-tree",
                    &tree,
                    "-m",
                    &serde_json::to_string(&holder).unwrap(),
                ])
                .unwrap();
            env.repo
                .git(&["update-ref", ledger::LOCK_REF, &commit])
                .unwrap();

            let outcome =
                production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                    .await
                    .unwrap();
            assert!(
                matches!(outcome, PromoteOutcome::Promoted { hosts: 3, .. }),
                "{outcome:?}"
            );
            env.assert_versions(&all(NEW)).await;

            let record = env.record();
            let batches: Vec<(usize, Option<Outcome>)> = record
                .steps
                .iter()
                .filter(|s| s.kind == StepKind::Batch)
                .map(|s| (s.batch.unwrap(), s.outcome))
                .collect();
            assert_eq!(
                batches,
                [
                    (1, Some(Outcome::Ok)),
                    (2, Some(Outcome::Interrupted)),
                    (2, Some(Outcome::Ok)),
                    (3, Some(Outcome::Ok))
                ]
            );
            assert_eq!(
                record
                    .steps
                    .iter()
                    .filter(|s| s.kind == StepKind::Promote)
                    .count(),
                1
            );
            // app1 (batch 1) was upgraded once; app2's cut-off batch was run again,
            // and found it already on the version.
            let app1 = env.tb.fleet.host("app1").unwrap();
            let upgrades = env
                .tb
                .fleet
                .run(
                    app1,
                    None,
                    "grep -c ' upgrade minideploy:all 0.1.0-1 0.2.0-1' /var/log/dpkg.log",
                )
                .await
                .unwrap();
            assert_eq!(upgrades.trim(), "1");
            let second = record
                .steps
                .iter()
                .rev()
                .find(|s| s.batch == Some(2))
                .unwrap();
            assert!(
                second.results[0].reported.contains("already up-to-date"),
                "{:?}",
                second.results
            );
            assert!(
                ledger.lock("promote", TAG, false).is_ok(),
                "the lock was given back"
            );
        },
    )
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn a_frozen_host_times_out_its_batch_and_the_next_promote_resumes() {
    // A deploy to a frozen host waits at least for cumin's ssh ConnectTimeout
    // (10 s): a deploy timeout of 7 s fires first. Only batch 2 (app2, frozen)
    // runs under it: on a loaded machine a healthy deploy may take longer.
    run(
        RolloutTool::Debdeploy,
        |c| c.rollout.batch_size = 1,
        |env| async move {
            let config = env.config();
            production::canary(&env.repo, config, &env.facts, false, &env.progress)
                .await
                .unwrap();
            let one_batch = PromoteOptions {
                max_batches: Some(1),
                ..Default::default()
            };
            let outcome = production::promote(&env.repo, config, &one_batch, &env.progress)
                .await
                .unwrap();
            assert!(
                matches!(outcome, PromoteOutcome::Partial { done: 1, total: 3 }),
                "{outcome:?}"
            );
            let mut short = config.clone();
            short.rollout.timeout_secs = 7;
            let app2 = env.tb.fleet.host("app2").unwrap().container.clone();
            let docker = |verb: &str| {
                harness::support::process::cmd("docker", [verb, app2.as_str()])
                    .run()
                    .unwrap();
            };
            docker("pause");
            let started = std::time::Instant::now();
            let result =
                production::promote(&env.repo, &short, &one_batch, &env.progress).await;
            docker("unpause");
            let msg = format!("{:#}", result.unwrap_err());
            assert!(msg.contains("promote of 0.2.0 stopped at batch 2"), "{msg}");
            assert!(msg.contains("did not finish within 7s"), "{msg}");
            assert!(msg.contains("rollout.timeout_secs in "), "{msg}");
            assert!(started.elapsed().as_secs() < 120, "{:?}", started.elapsed());
            let record = env.record();
            let batch2 = record
                .steps
                .iter()
                .find(|s| s.kind == StepKind::Batch && s.batch == Some(2))
                .unwrap();
            assert_eq!(batch2.outcome, Some(Outcome::Failed));
            assert!(batch2.message.contains("did not finish within 7s"), "{}", batch2.message);
            let promote = record.last(StepKind::Promote).unwrap();
            assert_eq!(promote.outcome, Some(Outcome::Failed));
            assert!(
                promote.message.starts_with("stopped at batch 2/3: `spec=$(mktemp"),
                "{}",
                promote.message
            );
            // The killed call's debdeploy may still run on the cumin host (killing
            // the local end of `docker exec` or ssh does not reach it): let it end.
            let out = on_cumin_host(
                &env,
                "for i in $(seq 60); do pgrep -f '[d]ebdeploy deploy' >/dev/null || exit 0; sleep 0.5; done; exit 1",
            )
            .await;
            assert_eq!(out.code, 0, "debdeploy still runs on the cumin host");

            let outcome =
                production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                    .await
                    .unwrap();
            assert!(
                matches!(outcome, PromoteOutcome::Promoted { hosts: 3, .. }),
                "{outcome:?}"
            );
            env.assert_versions(&all(NEW)).await;
            let batches: Vec<(usize, Option<Outcome>)> = env
                .record()
                .steps
                .iter()
                .filter(|s| s.kind == StepKind::Batch)
                .map(|s| (s.batch.unwrap(), s.outcome))
                .collect();
            assert_eq!(
                batches,
                [
                    (1, Some(Outcome::Ok)),
                    (2, Some(Outcome::Failed)),
                    (2, Some(Outcome::Ok)),
                    (3, Some(Outcome::Ok))
                ]
            );
        },
    )
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn two_promotes_at_once_one_stops_and_says_why() {
    run(
        RolloutTool::Cumin,
        |_| {},
        |env| async move {
            let config = env.config();
            // Two CI runners: two clones of one shared repository.
            let shared = env.dir.path().join("shared.git");
            env.repo
                .git(&["clone", "--quiet", "--bare", ".", shared.to_str().unwrap()])
                .unwrap();
            let clone = |name: &str| {
                let path = env.dir.path().join(name);
                env.repo
                    .git(&[
                        "clone",
                        "--quiet",
                        shared.to_str().unwrap(),
                        path.to_str().unwrap(),
                    ])
                    .unwrap();
                Repo::open(&path).unwrap()
            };
            let (a, b) = (clone("runner-a"), clone("runner-b"));
            production::canary(&a, config, &env.facts, false, &env.progress)
                .await
                .unwrap();
            let options = PromoteOptions::default();
            let (ra, rb) = tokio::join!(
                production::promote(&a, config, &options, &env.progress),
                production::promote(&b, config, &options, &env.progress)
            );
            let (won, lost) = match (ra, rb) {
                (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
                (ra, rb) => panic!("expected one promote to stop: {ra:?} / {rb:?}"),
            };
            assert!(
                matches!(won, PromoteOutcome::Promoted { hosts: 3, .. }),
                "{won:?}"
            );
            let msg = format!("{lost:#}");
            assert!(
                msg.contains("stopped: the production lock is held by the promote of 0.2.0"),
                "{msg}"
            );
            assert!(msg.contains("--break-lock"), "{msg}");
            env.assert_versions(&all(NEW)).await;
            // One promote in the shared ledger, seen from either runner.
            for repo in [&a, &b] {
                let record = Ledger::open(repo).unwrap().record(TAG).unwrap().unwrap();
                assert_eq!(
                    record
                        .steps
                        .iter()
                        .filter(|s| s.kind == StepKind::Promote)
                        .count(),
                    1
                );
                assert_eq!(production::state_of(&record), State::Promoted);
            }
        },
    )
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn cumin_tool_names_a_failed_host_and_promote_goes_on_from_there() {
    run(
        RolloutTool::Cumin,
        |_| {},
        |env| async move {
            let config = env.config();
            production::canary(&env.repo, config, &env.facts, false, &env.progress)
                .await
                .unwrap();
            env.hold_dpkg_lock("app3").await;
            let err =
                production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                    .await
                    .unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains("stopped at batch 2/2"), "{msg}");
            assert!(
                msg.contains("app3: expected 0.2.0-1, dpkg says 0.1.0-1"),
                "{msg}"
            );
            assert!(msg.contains("lock"), "apt's complaint is passed on: {msg}");
            env.release_dpkg_lock("app3").await;
            let outcome =
                production::promote(&env.repo, config, &PromoteOptions::default(), &env.progress)
                    .await
                    .unwrap();
            assert!(
                matches!(outcome, PromoteOutcome::Promoted { .. }),
                "{outcome:?}"
            );
            env.assert_versions(&all(NEW)).await;
            let record = env.record();
            let batches: Vec<(usize, Option<Outcome>)> = record
                .steps
                .iter()
                .filter(|s| s.kind == StepKind::Batch)
                .map(|s| (s.batch.unwrap(), s.outcome))
                .collect();
            assert_eq!(
                batches,
                [
                    (1, Some(Outcome::Ok)),
                    (2, Some(Outcome::Failed)),
                    (2, Some(Outcome::Ok))
                ]
            );
        },
    )
    .await;
}

/// The subcommands as a CI job runs them, on a project whose ledger is
/// empty: no Docker needed, nothing reaches a host.
#[test]
fn cli_exit_codes_on_an_empty_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = harness::release::fixture::materialize("minideploy", dir.path()).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_release-harness"))
            .args(args)
            .arg("--project")
            .arg(&path)
            .env("CI", "true")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = run(&["status"]);
    assert_eq!(code, 0);
    assert!(stdout.contains("has no release yet"), "{stdout}");
    let (code, stdout, _) = run(&["status", "--json"]);
    assert_eq!((code, stdout.trim()), (0, "[]"));
    let (code, _, stderr) = run(&["promote", "--force"]);
    assert_eq!(
        code, 2,
        "--force without --reason is a usage error: {stderr}"
    );
    assert!(stderr.contains("--reason"), "{stderr}");
    let (code, _, stderr) = run(&["promote"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no release is waiting on the canaries"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["rollback"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("nothing to roll back"), "{stderr}");
}
