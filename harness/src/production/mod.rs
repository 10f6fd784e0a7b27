//! The production steps after verify: the canary rollout, `promote` (the
//! gate, then the rest of the fleet in batches), `rollback` and `status`.
//! Each step is recorded in the ledger before and after it runs, under the
//! production lock; a step found cut off is reported and resumed.

pub mod gate;
pub mod rollout;
pub mod testbed;

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::ledger::{self, Ledger, Lock, Outcome, Record, Step, StepKind};
use crate::production::gate::{CheckResult, GateReport, Verdict};
use crate::production::rollout::{DeployReport, HostResult};
use crate::support::git::Repo;
use crate::support::progress::{format_duration, Progress};

/// What the release flow knows when it reaches the canary step.
#[derive(Debug, Clone)]
pub struct ReleaseFacts {
    pub tag: String,
    /// The full Debian version (`0.2.0-1`).
    pub version: String,
    pub commit: String,
    pub deb: PathBuf,
    pub deb_sha256: String,
    /// `VerifyReport::digest()`.
    pub verify_digest: String,
    /// What verify measured of the tool's code (None: not measured).
    pub coverage: Option<crate::ledger::CoverageFigures>,
    /// When the tag was made, the build ended and verify ended (RFC 3339).
    pub tagged_at: String,
    pub built_at: String,
    pub verified_at: String,
}

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
    let record = ledger
        .record(&facts.tag)?
        .context("the ledger lost the release record")?;
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
                let mut r = r.context("the ledger lost the release record")?;
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
            tool_name(config),
            report.tool_exit,
            report.failure_summary()
        );
    }
    Ok(report.hosts)
}

#[derive(Debug, Clone, Default)]
pub struct PromoteOptions {
    /// The release tag; default: the newest release waiting on the canaries.
    pub release: Option<String>,
    /// Go on whatever the gate says; needs `reason`.
    pub force: bool,
    pub reason: Option<String>,
    /// Take the production lock even from a live holder.
    pub break_lock: bool,
    /// The CI artifact: its sha256 must be the verified one too.
    pub deb: Option<PathBuf>,
    /// Stop after this many batches (the rest at the next promote).
    pub max_batches: Option<usize>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum PromoteOutcome {
    Promoted {
        tag: String,
        version: String,
        hosts: usize,
    },
    /// Stopped after `max_batches`; the next promote goes on.
    Partial { done: usize, total: usize },
    /// Some check is inconclusive (the soak, most often): try later.
    Soaking(GateReport),
    /// Some check failed.
    Blocked {
        gate: GateReport,
        rolled_back_to: Option<String>,
    },
}

/// The gate, then the rest of the fleet in batches, each checked host by
/// host; resumes a promote that was cut off, never redoing finished batches.
pub async fn promote(
    repo: &Repo,
    config: &Config,
    options: &PromoteOptions,
    progress: &Progress,
) -> Result<PromoteOutcome> {
    let reason = options
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if options.force && reason.is_none() {
        bail!("--force needs --reason \"...\": the ledger records why the gate was overridden");
    }
    let ledger = Ledger::open(repo)?;
    let record = match &options.release {
        Some(tag) => ledger.record(tag)?.with_context(|| {
            format!("the ledger has no release {tag}; `status` lists the releases it knows")
        })?,
        None => waiting_release(&ledger)?,
    };
    let lock = ledger.lock("promote", &record.tag, options.break_lock)?;
    report_takeover(&lock, progress);
    let result = promote_locked(
        &ledger,
        config,
        &record.tag,
        options,
        reason,
        &lock,
        progress,
    )
    .await;
    ledger.unlock(lock)?;
    result
}

/// The newest release whose canary rollout succeeded and that is neither
/// promoted nor rolled back since.
fn waiting_release(ledger: &Ledger) -> Result<Record> {
    let records = ledger.records()?;
    records
        .into_iter()
        .rev()
        .find(|r| {
            matches!(
                state_of(r),
                State::Canary | State::Promoting | State::Blocked
            )
        })
        .context(
            "no release is waiting on the canaries in the ledger (status shows where each \
             release stands); a release reaches the canaries with `release`",
        )
}

#[allow(clippy::too_many_arguments)]
async fn promote_locked(
    ledger: &Ledger,
    config: &Config,
    tag: &str,
    options: &PromoteOptions,
    reason: Option<&str>,
    lock: &Lock,
    progress: &Progress,
) -> Result<PromoteOutcome> {
    let record = ledger
        .record(tag)?
        .context("the ledger lost the release record")?;
    match state_of(&record) {
        State::Promoted => bail!("{tag} ({}) is already promoted", record.version),
        State::RolledBack => bail!(
            "{tag} ({}) was rolled back; release a new version rather than promote it again",
            record.version
        ),
        State::Tagged | State::Built | State::Verified | State::CanaryFailed => bail!(
            "{tag} ({}) has no successful canary rollout to promote from (state: {})",
            record.version,
            state_of(&record).name()
        ),
        _ => {}
    }
    close_cut_off_steps(
        ledger,
        &record,
        &[StepKind::Gate, StepKind::Batch],
        progress,
    )?;
    let version = record.version.clone();

    progress.step(&format!("gate {tag}"));
    let index = ledger.start_step(tag, Step::start(StepKind::Gate))?;
    let gate = gate::evaluate(config, &record, options.deb.as_deref(), progress).await;
    let verdict = gate.verdict();
    let forced = options.force && verdict != Verdict::Pass;
    let outcome = match verdict {
        Verdict::Pass => Outcome::Ok,
        _ if forced => Outcome::Forced,
        Verdict::Inconclusive => Outcome::Soaking,
        Verdict::Fail => Outcome::Blocked,
    };
    let takeover = lock.took_over.as_ref().map(|old| {
        format!(
            "took the production lock over from the {} by {} (since {})",
            old.operation,
            old.by.describe(),
            old.since
        )
    });
    ledger.finish_step(tag, index, outcome, |s| {
        s.checks = gate.checks.clone();
        s.reason = forced.then(|| reason.unwrap_or_default().to_string());
        s.message = takeover.clone().unwrap_or_default();
    })?;
    progress.finish_step(verdict == Verdict::Pass || forced);
    for c in &gate.checks {
        progress.note(&c.line());
    }
    if !forced {
        match verdict {
            Verdict::Pass => {}
            Verdict::Inconclusive => return Ok(PromoteOutcome::Soaking(gate)),
            Verdict::Fail => {
                let mut rolled_back_to = None;
                if config.gate.rollback_on_fail {
                    let to = record.previous_version.clone().with_context(|| {
                        format!(
                            "the gate failed and gate.rollback_on_fail is set, but the ledger \
                             does not know what the canaries ran before {version}; roll back \
                             with `rollback --to VERSION`"
                        )
                    })?;
                    let hosts = record
                        .last(StepKind::Canary)
                        .map(|s| s.hosts.clone())
                        .unwrap_or_default();
                    roll_back_hosts(
                        ledger,
                        config,
                        &record,
                        &hosts,
                        &to,
                        "the gate failed (gate.rollback_on_fail)",
                        progress,
                    )
                    .await?;
                    rolled_back_to = Some(to);
                }
                return Ok(PromoteOutcome::Blocked {
                    gate,
                    rolled_back_to,
                });
            }
        }
    }

    // Resume the promote that is under way; continue one that stopped on
    // failed hosts with the same batches; or plan a new one.
    let record = ledger
        .record(tag)?
        .context("the ledger lost the release record")?;
    let last_promote = record
        .steps
        .iter()
        .enumerate()
        .rev()
        .find(|(_, s)| s.kind == StepKind::Promote);
    let (promote_index, batches) = match last_promote {
        Some((i, s)) if !s.finished() => {
            progress.note(&format!(
                "resuming the promote started {} by {}",
                s.started_at,
                s.by.describe()
            ));
            (i, s.batches.clone())
        }
        _ => {
            let batches = match last_promote {
                Some((_, s)) if s.outcome == Some(Outcome::Failed) => {
                    progress.note(&format!(
                        "continuing the promote that stopped {} ({})",
                        s.finished_at.as_deref().unwrap_or(""),
                        s.message
                    ));
                    s.batches.clone()
                }
                _ => {
                    let canaries: BTreeSet<String> = record
                        .last(StepKind::Canary)
                        .map(|s| s.hosts.iter().cloned().collect())
                        .unwrap_or_default();
                    let hosts: Vec<String> = rollout::resolve(config, &config.rollout.fleet)
                        .await?
                        .into_iter()
                        .filter(|h| !canaries.contains(h))
                        .collect();
                    hosts
                        .chunks(config.rollout.batch_size)
                        .map(|c| c.to_vec())
                        .collect()
                }
            };
            let mut step = Step::start(StepKind::Promote);
            step.batches = batches.clone();
            step.hosts = batches.concat();
            step.version = Some(version.clone());
            step.reason = forced.then(|| reason.unwrap_or_default().to_string());
            (ledger.start_step(tag, step)?, batches)
        }
    };
    let total_hosts: usize = batches.iter().map(Vec::len).sum();
    let allowed = (config.rollout.max_failed * total_hosts as f64).floor() as usize;
    let mut failed_hosts: Vec<HostResult> = Vec::new();
    let mut run_now = 0;
    for (i, hosts) in batches.iter().enumerate() {
        let number = i + 1;
        let record = ledger
            .record(tag)?
            .context("the ledger lost the release record")?;
        let since_canary = record
            .steps
            .iter()
            .rposition(|s| s.kind == StepKind::Canary)
            .unwrap_or(0);
        let done = record.steps[since_canary..].iter().find(|s| {
            s.kind == StepKind::Batch && s.batch == Some(number) && s.hosts == *hosts && s.ok()
        });
        if let Some(done) = done {
            progress.note(&format!(
                "batch {number}/{} ({}) done {}: not redone",
                batches.len(),
                hosts.join(","),
                done.finished_at.as_deref().unwrap_or("")
            ));
            continue;
        }
        if options.max_batches.is_some_and(|m| run_now >= m) {
            return Ok(PromoteOutcome::Partial {
                done: i,
                total: batches.len(),
            });
        }
        progress.step(&format!("promote {tag}: batch {number}/{}", batches.len()));
        let mut step = Step::start(StepKind::Batch);
        step.batch = Some(number);
        step.hosts = hosts.clone();
        let index = ledger.start_step(tag, step)?;
        let query = rollout::query_for_hosts(hosts);
        let report = match rollout::deploy(config, &query, hosts, &version, false, progress).await {
            Ok(r) => r,
            Err(e) => {
                let message = format!("{e:#}");
                ledger.finish_step(tag, index, Outcome::Failed, |s| s.message = message.clone())?;
                progress.finish_step(false);
                return Err(e.context(format!("promote of {tag} stopped at batch {number}")));
            }
        };
        run_now += 1;
        let failed = report.failed().len();
        ledger.finish_step(
            tag,
            index,
            if failed == 0 {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            |s| {
                s.results = report.hosts.clone();
                s.message = format!(
                    "{} of {} hosts on {version}",
                    hosts.len() - failed,
                    hosts.len()
                );
            },
        )?;
        progress.finish_step(failed == 0);
        failed_hosts.extend(report.failed().into_iter().cloned());
        if failed_hosts.len() > allowed {
            let summary = batch_failure(&report, config);
            ledger.finish_step(tag, promote_index, Outcome::Failed, |s| {
                s.message = format!(
                    "stopped at batch {number}: {} hosts failed, {allowed} allowed",
                    failed_hosts.len()
                );
            })?;
            bail!(
                "promote of {tag} stopped at batch {number}/{}: {} of {total_hosts} hosts failed \
                 and rollout.max_failed allows {allowed}:\n{summary}  fix: look at those hosts, \
                 then run promote again (finished batches are not redone) or `rollback`",
                batches.len(),
                failed_hosts.len(),
            );
        }
    }
    let message = if failed_hosts.is_empty() {
        format!("{total_hosts} hosts on {version}")
    } else {
        format!(
            "{} of {total_hosts} hosts on {version}; failed within rollout.max_failed: {}",
            total_hosts - failed_hosts.len(),
            failed_hosts
                .iter()
                .map(|h| h.host.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    ledger.finish_step(
        tag,
        promote_index,
        if forced { Outcome::Forced } else { Outcome::Ok },
        |s| s.message = message.clone(),
    )?;
    Ok(PromoteOutcome::Promoted {
        tag: tag.to_string(),
        version,
        hosts: total_hosts,
    })
}

fn batch_failure(report: &DeployReport, config: &Config) -> String {
    format!(
        "  ({} exited {}; dpkg on each host was asked)\n{}",
        tool_name(config),
        report.tool_exit,
        report.failure_summary()
    )
}

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

async fn roll_back_hosts(
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
            tool_name(config),
            last.map(|r| r.tool_exit).unwrap_or(0)
        );
    }
    Ok(results)
}

/// Steps of `kinds` started and never finished: reported, and closed as
/// interrupted so that the caller runs them again knowingly.
fn close_cut_off_steps(
    ledger: &Ledger,
    record: &Record,
    kinds: &[StepKind],
    progress: &Progress,
) -> Result<()> {
    for (index, step) in record.unfinished() {
        if !kinds.contains(&step.kind) {
            continue;
        }
        let what = match step.batch {
            Some(b) => format!("{} {b} ({})", step.kind.name(), step.hosts.join(",")),
            None => step.kind.name().to_string(),
        };
        progress.note(&format!(
            "{what} of {} was started {} by {} and never finished: it was cut off; running it again",
            record.tag,
            step.started_at,
            step.by.describe()
        ));
        let by = ledger::Actor::current().describe();
        ledger.finish_step(&record.tag, index, Outcome::Interrupted, |s| {
            s.message = format!("found cut off by {by}; run again")
        })?;
    }
    Ok(())
}

fn report_takeover(lock: &Lock, progress: &Progress) {
    if let Some(old) = &lock.took_over {
        progress.note(&format!(
            "took the production lock over from the {} of {} by {} (since {})",
            old.operation,
            old.release,
            old.by.describe(),
            old.since
        ));
    }
}

fn tool_name(config: &Config) -> &'static str {
    match config.rollout.tool {
        crate::config::RolloutTool::Debdeploy => "debdeploy",
        crate::config::RolloutTool::Cumin => "cumin",
    }
}

/// Where a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Tagged,
    Built,
    Verified,
    Canary,
    CanaryFailed,
    Blocked,
    Promoting,
    Promoted,
    RolledBack,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Tagged => "tagged",
            State::Built => "built",
            State::Verified => "verified",
            State::Canary => "on the canaries",
            State::CanaryFailed => "canary rollout failed",
            State::Blocked => "blocked by the gate",
            State::Promoting => "promote under way or stopped",
            State::Promoted => "promoted",
            State::RolledBack => "rolled back",
        }
    }
}

/// The state the steps lead to, in order.
pub fn state_of(record: &Record) -> State {
    let mut state = State::Tagged;
    for s in &record.steps {
        state = match (s.kind, s.outcome) {
            (StepKind::Tagged, _) => state,
            (StepKind::Built, Some(Outcome::Ok)) if state == State::Tagged => State::Built,
            (StepKind::Verified, Some(Outcome::Ok)) => State::Verified,
            (StepKind::Canary, Some(Outcome::Ok)) => State::Canary,
            (StepKind::Canary, Some(Outcome::Failed)) => State::CanaryFailed,
            (StepKind::Gate, Some(Outcome::Blocked)) if state == State::Canary => State::Blocked,
            (StepKind::Gate, Some(Outcome::Ok | Outcome::Forced)) if state == State::Blocked => {
                State::Canary
            }
            (StepKind::Promote, Some(Outcome::Ok | Outcome::Forced)) => State::Promoted,
            (StepKind::Promote, _) => State::Promoting,
            (StepKind::Rollback, Some(Outcome::Ok)) => State::RolledBack,
            _ => state,
        };
    }
    state
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    pub step: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: Option<Outcome>,
    pub by: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseStatus {
    pub tag: String,
    pub version: String,
    pub state: State,
    pub commit: String,
    pub deb_sha256: Option<String>,
    pub verify_digest: Option<String>,
    /// What verify measured of the tool's code on the fleet.
    pub coverage: Option<crate::ledger::CoverageFigures>,
    pub timeline: Vec<TimelineEntry>,
    /// From the tag to the end of the promote.
    pub lead_time_secs: Option<i64>,
    /// While on the canaries: time left of the minimum soak.
    pub soak_remaining_secs: Option<i64>,
    pub gate_evaluations: usize,
    pub last_gate: Vec<CheckResult>,
    /// Steps started and not finished (running now, or cut off).
    pub unfinished: Vec<String>,
}

/// Every release in the ledger, oldest first.
pub fn status(repo: &Repo, config: &Config) -> Result<Vec<ReleaseStatus>> {
    let ledger = Ledger::open(repo)?;
    Ok(ledger
        .records()?
        .iter()
        .map(|r| release_status(config, r))
        .collect())
}

pub fn release_status(config: &Config, r: &Record) -> ReleaseStatus {
    let state = state_of(r);
    let at = |kind: StepKind, end: bool| {
        r.steps
            .iter()
            .rev()
            .find(|s| s.kind == kind && s.ok())
            .and_then(|s| {
                if end {
                    s.finished_at.clone()
                } else {
                    Some(s.started_at.clone())
                }
            })
            .and_then(|t| ledger::parse_time(&t))
    };
    let lead_time_secs = match (at(StepKind::Tagged, false), at(StepKind::Promote, true)) {
        (Some(a), Some(b)) if state == State::Promoted => Some((b - a).num_seconds()),
        _ => None,
    };
    let soak_remaining_secs = match (state, at(StepKind::Canary, true)) {
        (State::Canary | State::Blocked, Some(t)) => {
            let elapsed = (chrono::Utc::now() - t).num_seconds();
            Some((config.gate.min_soak_secs as i64 - elapsed).max(0))
        }
        _ => None,
    };
    let gates: Vec<&Step> = r
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::Gate)
        .collect();
    let timeline = r
        .steps
        .iter()
        .filter(|s| s.kind != StepKind::Gate)
        .map(|s| TimelineEntry {
            step: match s.batch {
                Some(b) => format!("batch {b}"),
                None => s.kind.name().to_string(),
            },
            started_at: s.started_at.clone(),
            finished_at: s.finished_at.clone(),
            outcome: s.outcome,
            by: s.by.describe(),
            detail: [
                s.message.clone(),
                s.reason
                    .clone()
                    .map(|r| format!("reason: {r}"))
                    .unwrap_or_default(),
            ]
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
        })
        .collect();
    ReleaseStatus {
        tag: r.tag.clone(),
        version: r.version.clone(),
        state,
        commit: r.commit.clone(),
        deb_sha256: r.deb_sha256.clone(),
        verify_digest: r.verify_digest.clone(),
        coverage: r.coverage.clone(),
        timeline,
        lead_time_secs,
        soak_remaining_secs,
        gate_evaluations: gates.len(),
        last_gate: gates.last().map(|g| g.checks.clone()).unwrap_or_default(),
        unfinished: r
            .unfinished()
            .iter()
            .map(|(_, s)| {
                format!(
                    "{} started {} by {}",
                    s.kind.name(),
                    s.started_at,
                    s.by.describe()
                )
            })
            .collect(),
    }
}

pub fn render_status(releases: &[ReleaseStatus]) -> String {
    if releases.is_empty() {
        return format!(
            "the ledger ({}) has no release yet: `release` records one\n",
            ledger::NOTES_REF
        );
    }
    let mut out = String::new();
    for r in releases {
        out.push_str(&format!("{} ({}): {}\n", r.tag, r.version, r.state.name()));
        for e in &r.timeline {
            let outcome = match e.outcome {
                Some(o) => serde_json::to_value(o)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                None => "unfinished".into(),
            };
            out.push_str(&format!(
                "  {:<10} {:<24} {:<11} {}{}\n",
                e.step,
                e.finished_at.as_deref().unwrap_or(&e.started_at),
                outcome,
                e.detail,
                if e.by.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", e.by)
                }
            ));
        }
        if let Some(c) = &r.coverage {
            out.push_str(&format!("  coverage: {}\n", coverage_line(c)));
        }
        if let Some(l) = r.lead_time_secs {
            out.push_str(&format!(
                "  lead time (tag to fleet): {}\n",
                format_duration(std::time::Duration::from_secs(l.max(0) as u64))
            ));
        }
        if let Some(s) = r.soak_remaining_secs {
            out.push_str(&format!(
                "  soak remaining: {}\n",
                format_duration(std::time::Duration::from_secs(s.max(0) as u64))
            ));
        }
        if !r.last_gate.is_empty() {
            out.push_str(&format!("  gate (last of {}):\n", r.gate_evaluations));
            for c in &r.last_gate {
                out.push_str(&format!("    {}\n", c.line()));
            }
        }
        for u in &r.unfinished {
            out.push_str(&format!("  not finished: {u}\n"));
        }
    }
    out
}

/// `71.4% (120 of 168 statements), 2 of 2 changed lines exercised`.
fn coverage_line(c: &crate::ledger::CoverageFigures) -> String {
    let percent = if c.statements == 0 {
        0.0
    } else {
        (c.covered as f64 * 1000.0 / c.statements as f64).round() / 10.0
    };
    let changed = match (c.changed_exercised, c.changed) {
        (Some(e), Some(n)) => format!("{e} of {n} changed lines exercised"),
        _ if c.note.is_empty() => "no change coverage".to_string(),
        _ => c.note.clone(),
    };
    format!(
        "{percent}% ({} of {} statements){}, {changed}",
        c.covered,
        c.statements,
        if c.incomplete { ", incomplete" } else { "" }
    )
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
