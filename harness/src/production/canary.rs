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
        let mut record = match existing {
            Some(r) => {
                if r.version != facts.version
                    || r.deb_sha256.as_deref() != Some(facts.deb_sha256.as_str())
                {
                    bail!(
                        "the ledger already has release {} as {} with .deb sha256 {}; this run \
                         has {} with {}: a tag is released once (make a new version)",
                        facts.tag,
                        r.version,
                        r.deb_sha256.as_deref().unwrap_or("none"),
                        facts.version,
                        facts.deb_sha256
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
        record.deb_sha256 = Some(facts.deb_sha256.clone());
        record.verify_digest = Some(facts.verify_digest.clone());
        record.coverage = facts.coverage.clone();
        let name = facts
            .deb
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let facts_steps = [
            (
                StepKind::Tagged,
                &facts.tagged_at,
                format!("tag {} at {}", facts.tag, short(&facts.commit)),
            ),
            (
                StepKind::Built,
                &facts.built_at,
                format!("{name} sha256 {}", facts.deb_sha256),
            ),
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

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
