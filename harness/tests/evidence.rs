//! The soak that shortens on evidence, on the production testbed (real
//! cumin over ssh, the debdeploy stand-in): a release whose changed lines
//! verify all exercised, with enough real syncs on the canaries since the
//! canary rollout, promotes once the evidence floor has passed, long before
//! the full soak; its twin with a changed line verify missed waits for the
//! full soak. The syncs are real copies over ssh from the deploy host, and
//! the evidence check counts them on the canaries through the rollout tool.

use std::time::Duration;

use harness::config::{GateCheck, RolloutTool};
use harness::ledger::{self, CoverageFigures, Ledger, Outcome, StepKind};
use harness::production::gate::Verdict;
use harness::production::testbed::{self, Testbed};
use harness::production::{self, PromoteOptions, PromoteOutcome, ReleaseFacts, State};
use harness::support::git::Repo;
use harness::support::progress::Progress;

static DOCKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use testbed::{RELEASE_NEW as NEW, RELEASE_PREVIOUS as PREVIOUS, RELEASE_TAG as TAG};
const FULL_SOAK_SECS: u64 = 3600;
/// Long enough for the syncs and a gate evaluation on a busy machine.
const FLOOR_SECS: u64 = 90;
/// Where a sync lands on a canary; one file per sync.
const SYNCS: &str = "/srv/minideploy-syncs";

/// What the evidence check counts: syncs since the canary rollout ended.
fn evidence_check() -> GateCheck {
    GateCheck::Evidence {
        name: "successful syncs".into(),
        command: format!("find {SYNCS} -type f -newermt '{{since}}' | wc -l"),
        threshold: 10.0,
    }
}

/// Verify's figures: `exercised` of the 4 changed lines.
fn coverage(exercised: u64) -> CoverageFigures {
    CoverageFigures {
        covered: 120,
        statements: 168,
        changed_exercised: Some(exercised),
        changed: Some(4),
        ..CoverageFigures::default()
    }
}

/// A testbed (2 canaries, 1 app host) and a fixture repository tagged
/// `TAG`, the gate set for the evidence floor; None when Docker tests are
/// skipped on purpose.
async fn start() -> Option<(Testbed, Repo, Progress, tempfile::TempDir)> {
    let docker = harness::support::testing::engine("an evidence test").await?;
    let release = testbed::Release::start(&docker, "minideploy", |config| {
        config.rollout.tool = RolloutTool::Debdeploy;
        config.gate.min_soak_secs = FULL_SOAK_SECS;
        config.gate.evidence_floor_secs = Some(FLOOR_SECS);
        config.gate.change_coverage_min = 1.0;
        config.gate.checks = vec![evidence_check()];
        config.fleet.apps = 1;
    })
    .await
    .unwrap();
    Some((release.tb, release.repo, release.progress, release.dir))
}

fn facts(tb: &Testbed, repo: &Repo, coverage: CoverageFigures) -> ReleaseFacts {
    ReleaseFacts {
        tag: TAG.into(),
        version: NEW.into(),
        commit: repo.head().unwrap(),
        debs: tb.new.built().unwrap(),
        verify_digest: "0".repeat(64),
        coverage: Some(coverage),
        tagged_at: ledger::now(),
        built_at: ledger::now(),
        verified_at: ledger::now(),
    }
}

/// `count` syncs from the deploy host to each canary over ssh, and, on each
/// canary, older syncs from before the canary rollout the check must not
/// count.
async fn sync_to_canaries(tb: &Testbed, count: usize) {
    let syncs = ["canary1", "canary2"].map(|canary| async move {
        let script = format!(
            "set -e; for i in $(seq {count}); do \
               ssh -o BatchMode=yes root@{canary} \"mkdir -p {SYNCS} && cat > {SYNCS}/sync-$i\" \
                 < /etc/os-release; \
             done; \
             ssh -o BatchMode=yes root@{canary} \
               'for i in 1 2 3 4 5 6 7 8; do touch -d \"2 hours ago\" {SYNCS}/stale-$i; done'"
        );
        tb.fleet
            .run(tb.cumin_host(), None, &script)
            .await
            .unwrap_or_else(|e| panic!("syncing to {canary}: {e:#}"));
    });
    futures_util::future::join_all(syncs).await;
}

/// Seconds since the canary rollout ended, as the ledger has it.
fn since_canaries(repo: &Repo) -> u64 {
    let record = Ledger::open(repo).unwrap().record(TAG).unwrap().unwrap();
    let end = record
        .last(StepKind::Canary)
        .and_then(|s| s.finished_at.as_deref())
        .and_then(ledger::parse_time)
        .unwrap();
    (chrono::Utc::now() - end).num_seconds().max(0) as u64
}

/// Runs `scenario` on a fresh testbed and removes it whatever happened.
async fn run<F>(scenario: F)
where
    F: for<'a> FnOnce(
        &'a Testbed,
        &'a Repo,
        &'a Progress,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>,
{
    use futures_util::FutureExt;
    let _engine = DOCKER.lock().await;
    let Some((tb, repo, progress, _dir)) = start().await else {
        return;
    };
    let result = std::panic::AssertUnwindSafe(scenario(&tb, &repo, &progress))
        .catch_unwind()
        .await;
    tb.teardown().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn exercised_changes_and_real_syncs_let_promote_pass_at_the_floor() {
    run(|tb, repo, progress| {
        Box::pin(async move {
            let config = &tb.config;
            production::canary(repo, config, &facts(tb, repo, coverage(4)), false, progress)
                .await
                .unwrap();
            // Before any gate evaluation the evidence is not counted: the
            // full soak applies.
            let status = production::status(repo, config).unwrap();
            let soak = status[0].soak.clone().unwrap();
            assert!(!soak.shortened, "{soak:?}");
            assert!(status[0].soak_remaining_secs.unwrap() > FLOOR_SECS as i64);

            sync_to_canaries(tb, 6).await;
            assert!(
                since_canaries(repo) < FLOOR_SECS,
                "the syncs took longer than the floor; raise FLOOR_SECS"
            );
            // The evidence is there, the floor not yet over: not yet.
            match production::promote(repo, config, &PromoteOptions::default(), progress)
                .await
                .unwrap()
            {
                PromoteOutcome::Soaking(gate) => {
                    assert!(gate.soak.shortened, "{}", gate.summary());
                    assert!(gate.soak_remaining_secs <= FLOOR_SECS, "{}", gate.summary());
                    let evidence = gate
                        .checks
                        .iter()
                        .find(|c| c.name == "successful syncs")
                        .unwrap();
                    assert_eq!(evidence.verdict, Verdict::Pass, "{evidence:?}");
                    // 6 syncs on each canary; the stale ones do not count.
                    assert!(
                        evidence.detail.starts_with("12 successful syncs"),
                        "{evidence:?}"
                    );
                }
                other => panic!("expected soaking at the floor, got {other:?}"),
            }
            // The ledger keeps the gate's decision; status reads it.
            let record = Ledger::open(repo).unwrap().record(TAG).unwrap().unwrap();
            let recorded = record.last(StepKind::Gate).unwrap().soak.clone().unwrap();
            assert_eq!(recorded.secs, FLOOR_SECS);
            assert_eq!(
                recorded.reason,
                "4 of 4 changed lines exercised by verify, 12 successful syncs on the \
                 canaries: the 1m30s floor applies"
            );
            let status = production::status(repo, config).unwrap();
            assert_eq!(status[0].soak.as_ref(), Some(&recorded));
            assert!(status[0].soak_remaining_secs.unwrap() <= FLOOR_SECS as i64);

            let wait = FLOOR_SECS.saturating_sub(since_canaries(repo)) + 1;
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match production::promote(repo, config, &PromoteOptions::default(), progress)
                .await
                .unwrap()
            {
                PromoteOutcome::Promoted { .. } => {}
                other => panic!("expected promoted at the floor, got {other:?}"),
            }
            assert!(since_canaries(repo) < FULL_SOAK_SECS);
            for (host, version) in tb.versions().await.unwrap() {
                assert_eq!(version, NEW, "{host} (asked of dpkg)");
            }
            let record = Ledger::open(repo).unwrap().record(TAG).unwrap().unwrap();
            assert_eq!(
                record.last(StepKind::Gate).unwrap().outcome,
                Some(Outcome::Ok)
            );
            assert_eq!(
                production::status(repo, config).unwrap()[0].state,
                State::Promoted
            );
        })
    })
    .await;
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test]
async fn a_changed_line_verify_missed_keeps_the_full_soak() {
    run(|tb, repo, progress| {
        Box::pin(async move {
            let config = &tb.config;
            production::canary(repo, config, &facts(tb, repo, coverage(3)), false, progress)
                .await
                .unwrap();
            sync_to_canaries(tb, 6).await;
            let wait = FLOOR_SECS.saturating_sub(since_canaries(repo)) + 1;
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match production::promote(repo, config, &PromoteOptions::default(), progress)
                .await
                .unwrap()
            {
                PromoteOutcome::Soaking(gate) => {
                    assert!(!gate.soak.shortened, "{}", gate.summary());
                    assert_eq!(gate.soak.secs, FULL_SOAK_SECS, "{}", gate.summary());
                    // The floor is over; the full soak is not.
                    assert!(gate.soak_remaining_secs > 0, "{}", gate.summary());
                    let soak = gate.checks.iter().find(|c| c.name == "soak").unwrap();
                    assert_eq!(soak.verdict, Verdict::Inconclusive, "{soak:?}");
                    assert!(
                        soak.detail.contains(
                            "the full 1 h soak applies: 3 of 4 changed lines exercised by \
                             verify, below gate.change_coverage_min 100%"
                        ),
                        "{soak:?}"
                    );
                }
                other => panic!("expected soaking for the full soak, got {other:?}"),
            }
            for (host, version) in tb.versions().await.unwrap() {
                let expected = if host.starts_with("canary") {
                    NEW
                } else {
                    PREVIOUS
                };
                assert_eq!(version, expected, "{host} (asked of dpkg)");
            }
            let status = production::status(repo, config).unwrap();
            assert_eq!(status[0].state, State::Canary);
            assert_eq!(status[0].soak.as_ref().unwrap().secs, FULL_SOAK_SECS);
            assert!(status[0].soak_remaining_secs.unwrap() > 0);
        })
    })
    .await;
}
