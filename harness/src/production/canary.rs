//! The canary step: records the release (tag, build, verify) in the ledger,
//! notes what the canaries ran before (where a rollback goes), rolls the
//! release out to the canaries and checks every one of them.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use super::rollout::{self, HostResult};
use super::{close_cut_off_steps, report_takeover, reread, ReleaseFacts, LOST_RECORD};
use crate::config::Config;
use crate::ledger::{Ledger, Outcome, Record, Step, StepKind};
use crate::support::git::Repo;
use crate::support::progress::Progress;

/// Rolls the release out to the canaries and records it (with the tag,
/// build and verify before it). Every canary must end on the version.
pub async fn canary(
    repo: &Repo,
    config: &Config,
    facts: &ReleaseFacts,
    break_lock: bool,
    progress: &Progress,
) -> Result<Vec<HostResult>> {
    let ledger = Ledger::open(repo)?;
    ledger.update(&facts.tag, |existing| {
        let sums: std::collections::BTreeMap<String, String> = facts
            .debs
            .iter()
            .map(|d| (d.package.clone(), d.sha256.clone()))
            .collect();
        let mut record = match existing {
            Some(r) => {
                if r.version != facts.version || r.deb_sums() != sums {
                    bail!(
                        "the ledger already has release {} as {} with .debs {}; this run has {} \
                         with {}: a tag is released once (make a new version)",
                        facts.tag,
                        r.version,
                        describe_sums(&r.deb_sums()),
                        facts.version,
                        describe_sums(&sums)
                    );
                }
                r
            }
            None => Record::new(
                config.package_name(),
                &facts.version,
                &facts.tag,
                &facts.commit,
            ),
        };
        record.deb_sha256 = None;
        record.debs = sums;
        record.verify_digest = Some(facts.verify_digest.clone());
        record.coverage = facts.coverage.clone();
        let built = facts
            .debs
            .iter()
            .map(|d| format!("{} sha256 {}", d.file_name(), d.sha256))
            .collect::<Vec<_>>()
            .join(", ");
        let facts_steps = [
            (
                StepKind::Tagged,
                &facts.tagged_at,
                format!("tag {} at {}", facts.tag, short(&facts.commit)),
            ),
            (StepKind::Built, &facts.built_at, built),
            (
                StepKind::Verified,
                &facts.verified_at,
                format!("verify report sha256 {}", facts.verify_digest),
            ),
        ];
        for (kind, at, message) in facts_steps {
            if record.last(kind).is_none() {
                record.steps.push(Step::done(kind, at, at, &message));
            }
        }
        Ok((record, ()))
    })?;

    let lock = ledger.lock("canary rollout", &facts.tag, break_lock)?;
    report_takeover(&lock, progress);
    let result = canary_locked(&ledger, config, facts, progress).await;
    ledger.unlock(lock)?;
    result
}

async fn canary_locked(
    ledger: &Ledger,
    config: &Config,
    facts: &ReleaseFacts,
    progress: &Progress,
) -> Result<Vec<HostResult>> {
    let record = reread(ledger, &facts.tag)?;
    close_cut_off_steps(ledger, &record, &[StepKind::Canary], progress)?;
    let query = &config.rollout.canaries;
    progress.step(&format!(
        "canary {} {}",
        config.package_name(),
        facts.version
    ));
    let hosts = rollout::resolve(config, query).await?;
    // What the canaries run now is what a rollback goes back to.
    let before = rollout::installed_versions(config, query).await?;
    let previous: BTreeSet<&String> = hosts.iter().filter_map(|h| before.get(h)).collect();
    if previous.len() == 1 {
        let previous = previous.into_iter().next().unwrap().clone();
        if previous != facts.version {
            ledger.update(&facts.tag, |r| {
                let mut r = r.context(LOST_RECORD)?;
                r.previous_version = Some(previous.clone());
                Ok((r, ()))
            })?;
        }
    }
    let mut step = Step::start(StepKind::Canary);
    step.hosts = hosts.clone();
    step.version = Some(facts.version.clone());
    let index = ledger.start_step(&facts.tag, step)?;
    let report = rollout::deploy(config, query, &hosts, &facts.version, false, progress).await;
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            let message = format!("{e:#}");
            ledger.finish_step(&facts.tag, index, Outcome::Failed, |s| {
                s.message = message.clone()
            })?;
            progress.finish_step(false);
            return Err(e);
        }
    };
    let failed = report.failed().len();
    let outcome = if failed == 0 {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    ledger.finish_step(&facts.tag, index, outcome, |s| {
        s.results = report.hosts.clone();
        s.message = format!(
            "{} of {} canaries on {}",
            hosts.len() - failed,
            hosts.len(),
            facts.version
        );
    })?;
    progress.finish_step(failed == 0);
    if failed > 0 {
        bail!(
            "canary rollout of {} failed on {failed} of {} canaries ({} exited {}; its exit \
             code is not trusted, dpkg on each host was asked):\n{}  fix: look at those hosts, \
             then roll the canaries back (`rollback`) or run the rollout again",
            facts.version,
            hosts.len(),
            rollout::tool_name(config),
            report.tool_exit,
            report.failure_summary()
        );
    }
    Ok(report.hosts)
}

/// `package sha256, ...` for messages.
pub(super) fn describe_sums(sums: &std::collections::BTreeMap<String, String>) -> String {
    if sums.is_empty() {
        return "none".into();
    }
    sums.iter()
        .map(|(p, s)| format!("{p} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
