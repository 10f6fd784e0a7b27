//! `rollback`: takes a release back to the version before it on every host
//! it reached (its canaries and every promote batch begun), through the same
//! rollout adapter, and checks each host.

use anyhow::{bail, Context, Result};

use super::rollout::{self, HostResult};
use super::{report_takeover, state_of, State};
use crate::config::Config;
use crate::ledger::{Ledger, Outcome, Record, Step, StepKind};
use crate::support::git::Repo;
use crate::support::progress::Progress;

#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    /// The release to take back; default: the newest one in production.
    pub release: Option<String>,
    /// The version to go back to; default: what the canaries ran before.
    pub to: Option<String>,
    pub reason: Option<String>,
    pub break_lock: bool,
}

/// Downgrades every host the release reached (its canaries and the hosts of
/// every promote batch begun) through the same adapter, checks them, records.
pub async fn rollback(
    repo: &Repo,
    config: &Config,
    options: &RollbackOptions,
    progress: &Progress,
) -> Result<Vec<HostResult>> {
    let ledger = Ledger::open(repo)?;
    let record = match &options.release {
        Some(tag) => ledger
            .record(tag)?
            .with_context(|| format!("the ledger has no release {tag}"))?,
        None => ledger
            .records()?
            .into_iter()
            .rev()
            .find(|r| {
                !matches!(
                    state_of(r),
                    State::RolledBack | State::Tagged | State::Built | State::Verified
                )
            })
            .context("no release in the ledger reached production; nothing to roll back")?,
    };
    let to = options
        .to
        .clone()
        .or_else(|| record.previous_version.clone())
        .with_context(|| {
            format!(
                "the ledger does not know what ran before {} {}: say it with --to VERSION",
                record.tag, record.version
            )
        })?;
    let mut hosts: Vec<String> = Vec::new();
    for s in &record.steps {
        if matches!(s.kind, StepKind::Canary | StepKind::Batch) {
            for h in &s.hosts {
                if !hosts.contains(h) {
                    hosts.push(h.clone());
                }
            }
        }
    }
    if hosts.is_empty() {
        bail!("{} never reached a host; nothing to roll back", record.tag);
    }
    let lock = ledger.lock("rollback", &record.tag, options.break_lock)?;
    report_takeover(&lock, progress);
    let reason = options.reason.clone().unwrap_or_else(|| "rollback".into());
    let result = roll_back_hosts(&ledger, config, &record, &hosts, &to, &reason, progress).await;
    ledger.unlock(lock)?;
    result
}

/// Downgrades `hosts` to `to` batch by batch, as one rollback step of
/// `record`; also what a failed gate does with `gate.rollback_on_fail`.
pub(super) async fn roll_back_hosts(
    ledger: &Ledger,
    config: &Config,
    record: &Record,
    hosts: &[String],
    to: &str,
    reason: &str,
    progress: &Progress,
) -> Result<Vec<HostResult>> {
    let tag = &record.tag;
    progress.step(&format!("rollback {tag}: {} -> {to}", record.version));
    let mut step = Step::start(StepKind::Rollback);
    step.hosts = hosts.to_vec();
    step.version = Some(to.to_string());
    step.reason = Some(reason.to_string());
    let index = ledger.start_step(tag, step)?;
    let mut results = Vec::new();
    let mut last = None;
    for batch in hosts.chunks(config.rollout.batch_size) {
        let query = rollout::query_for_hosts(batch);
        // A rollback goes through every batch: the bad version must go
        // everywhere it can, failures are reported at the end.
        match rollout::deploy(config, &query, batch, to, true, progress).await {
            Ok(r) => {
                results.extend(r.hosts.clone());
                last = Some(r);
            }
            Err(e) => {
                let message = format!("{e:#}");
                ledger.finish_step(tag, index, Outcome::Failed, |s| s.message = message.clone())?;
                progress.finish_step(false);
                return Err(e);
            }
        }
    }
    let failed: Vec<&HostResult> = results.iter().filter(|h| !h.ok).collect();
    let summary: String = failed
        .iter()
        .map(|h| {
            format!(
                "  {}: expected {to}, dpkg says {}; the rollout tool reported: {}\n",
                h.host,
                h.installed.as_deref().unwrap_or("nothing (no answer)"),
                h.reported
            )
        })
        .collect();
    ledger.finish_step(
        tag,
        index,
        if failed.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
        |s| {
            s.results = results.clone();
            s.message = format!(
                "{} of {} hosts on {to}",
                results.len() - failed.len(),
                results.len()
            );
        },
    )?;
    progress.finish_step(failed.is_empty());
    if !failed.is_empty() {
        bail!(
            "rollback of {tag} to {to} failed on {} of {} hosts ({} exited {}):\n{summary}  \
             fix: look at those hosts, then run rollback again",
            failed.len(),
            results.len(),
            rollout::tool_name(config),
            last.map(|r| r.tool_exit).unwrap_or(0)
        );
    }
    Ok(results)
}
