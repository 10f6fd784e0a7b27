//! `promote`: the gate, then the rest of the fleet in batches, each checked
//! host by host. Three parts, in order: evaluate the gate (and act on a
//! failure), plan the batches (resume the promote under way, continue one
//! that stopped on failed hosts, or plan a new one), run the batches (never
//! redoing a finished one, stopping past `rollout.max_failed`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::gate::{self, GateReport, Verdict};
use super::rollback::roll_back_hosts;
use super::rollout::{self, DeployReport, HostResult};
use super::{close_cut_off_steps, report_takeover, reread, state_of, State};
use crate::config::Config;
use crate::ledger::{Ledger, Lock, Outcome, Record, Step, StepKind};
use crate::support::git::Repo;
use crate::support::progress::Progress;

#[derive(Debug, Clone, Default)]
pub struct PromoteOptions {
    /// The release tag; default: the newest release waiting on the canaries.
    pub release: Option<String>,
    /// Go on whatever the gate says; needs `reason`.
    pub force: bool,
    pub reason: Option<String>,
    /// Take the production lock even from a live holder.
    pub break_lock: bool,
    /// The CI artifacts: each one's sha256 must be the verified one too.
    pub debs: Vec<PathBuf>,
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
    let mut lock = ledger.lock("promote", &record.tag, options.break_lock)?;
    report_takeover(&lock, progress);
    let promotion = Promotion {
        ledger: &ledger,
        config,
        tag: &record.tag,
        version: &record.version,
        options,
        reason,
        progress,
    };
    let result = promotion.run(&mut lock).await;
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

/// One promote of one release, under the production lock: what every part
/// of it needs.
struct Promotion<'a> {
    ledger: &'a Ledger,
    config: &'a Config,
    tag: &'a str,
    version: &'a str,
    options: &'a PromoteOptions,
    /// The trimmed `--reason`, when one was given.
    reason: Option<&'a str>,
    progress: &'a Progress,
}

/// The batches of a promote and the ledger step that carries them.
struct Plan {
    /// The index of the promote step in the release's steps.
    step: usize,
    batches: Vec<Vec<String>>,
}

impl Promotion<'_> {
    async fn run(&self, lock: &mut Lock) -> Result<PromoteOutcome> {
        let record = reread(self.ledger, self.tag)?;
        self.check_promotable(&record)?;
        close_cut_off_steps(
            self.ledger,
            &record,
            &[StepKind::Gate, StepKind::Batch],
            self.progress,
        )?;
        let (gate, forced) = self.evaluate_gate(&record, lock).await?;
        if !forced {
            match gate.verdict() {
                Verdict::Pass => {}
                Verdict::Inconclusive => return Ok(PromoteOutcome::Soaking(gate)),
                Verdict::Fail => return self.blocked(&record, gate).await,
            }
        }
        let plan = self.plan(forced).await?;
        self.run_batches(&plan, forced, lock).await
    }

    fn check_promotable(&self, record: &Record) -> Result<()> {
        let (tag, version) = (self.tag, self.version);
        match state_of(record) {
            State::Promoted => bail!("{tag} ({version}) is already promoted"),
            State::RolledBack => bail!(
                "{tag} ({version}) was rolled back; release a new version rather than promote \
                 it again"
            ),
            state @ (State::Tagged | State::Built | State::Verified | State::CanaryFailed) => {
                bail!(
                    "{tag} ({version}) has no successful canary rollout to promote from \
                     (state: {})",
                    state.name()
                )
            }
            State::Canary | State::Blocked | State::Promoting => Ok(()),
        }
    }

    /// Evaluates the gate and records it; returns the report and whether
    /// `--force` overrides its verdict.
    async fn evaluate_gate(&self, record: &Record, lock: &Lock) -> Result<(GateReport, bool)> {
        self.progress.step(&format!("gate {}", self.tag));
        let index = self
            .ledger
            .start_step(self.tag, Step::start(StepKind::Gate))?;
        let gate = gate::evaluate(self.config, record, &self.options.debs, self.progress).await;
        let verdict = gate.verdict();
        let forced = self.options.force && verdict != Verdict::Pass;
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
        self.ledger.finish_step(self.tag, index, outcome, |s| {
            s.checks = gate.checks.clone();
            s.soak = Some(gate.soak.clone());
            s.reason = self.forced_reason(forced);
            s.message = takeover.clone().unwrap_or_default();
        })?;
        self.progress
            .finish_step(verdict == Verdict::Pass || forced);
        for c in &gate.checks {
            self.progress.note(&c.line());
        }
        Ok((gate, forced))
    }

    /// The reason recorded on a step done despite the gate.
    fn forced_reason(&self, forced: bool) -> Option<String> {
        forced.then(|| self.reason.unwrap_or_default().to_string())
    }

    /// The gate failed: roll the canaries back when `gate.rollback_on_fail`.
    async fn blocked(&self, record: &Record, gate: GateReport) -> Result<PromoteOutcome> {
        if !self.config.gate.rollback_on_fail {
            return Ok(PromoteOutcome::Blocked {
                gate,
                rolled_back_to: None,
            });
        }
        let to = record.previous_version.clone().with_context(|| {
            format!(
                "the gate failed and gate.rollback_on_fail is set, but the ledger does not know \
                 what the canaries ran before {}; roll back with `rollback --to VERSION`",
                self.version
            )
        })?;
        let hosts = record
            .last(StepKind::Canary)
            .map(|s| s.hosts.clone())
            .unwrap_or_default();
        roll_back_hosts(
            self.ledger,
            self.config,
            record,
            &hosts,
            &to,
            "the gate failed (gate.rollback_on_fail)",
            self.progress,
        )
        .await?;
        Ok(PromoteOutcome::Blocked {
            gate,
            rolled_back_to: Some(to),
        })
    }

    /// Resumes the promote that is under way; continues one that stopped on
    /// failed hosts with the same batches; or plans a new one.
    async fn plan(&self, forced: bool) -> Result<Plan> {
        let record = reread(self.ledger, self.tag)?;
        let last_promote = record
            .steps
            .iter()
            .enumerate()
            .rev()
            .find(|(_, s)| s.kind == StepKind::Promote);
        let batches = match last_promote {
            Some((step, s)) if !s.finished() => {
                self.progress.note(&format!(
                    "resuming the promote started {} by {}",
                    s.started_at,
                    s.by.describe()
                ));
                return Ok(Plan {
                    step,
                    batches: s.batches.clone(),
                });
            }
            Some((_, s)) if s.outcome == Some(Outcome::Failed) => {
                self.progress.note(&format!(
                    "continuing the promote that stopped {} ({})",
                    s.finished_at.as_deref().unwrap_or(""),
                    s.message
                ));
                s.batches.clone()
            }
            _ => self.new_batches(&record).await?,
        };
        let mut step = Step::start(StepKind::Promote);
        step.batches = batches.clone();
        step.hosts = batches.concat();
        step.version = Some(self.version.to_string());
        step.reason = self.forced_reason(forced);
        Ok(Plan {
            step: self.ledger.start_step(self.tag, step)?,
            batches,
        })
    }

    /// The fleet but the canaries, in batches of `rollout.batch_size`.
    async fn new_batches(&self, record: &Record) -> Result<Vec<Vec<String>>> {
        let canaries: BTreeSet<String> = record
            .last(StepKind::Canary)
            .map(|s| s.hosts.iter().cloned().collect())
            .unwrap_or_default();
        let hosts: Vec<String> = rollout::resolve(self.config, &self.config.rollout.fleet)
            .await?
            .into_iter()
            .filter(|h| !canaries.contains(h))
            .collect();
        Ok(hosts
            .chunks(self.config.rollout.batch_size)
            .map(|c| c.to_vec())
            .collect())
    }

    /// The lease of the lock is renewed before each batch rather than by a
    /// background task: a batch is bounded (rollout.timeout_secs, well under
    /// the lease), and the ledger is written by one task only.
    async fn run_batches(
        &self,
        plan: &Plan,
        forced: bool,
        lock: &mut Lock,
    ) -> Result<PromoteOutcome> {
        let (tag, total) = (self.tag, plan.batches.len());
        let total_hosts: usize = plan.batches.iter().map(Vec::len).sum();
        let allowed = (self.config.rollout.max_failed * total_hosts as f64).floor() as usize;
        let mut failed_hosts: Vec<HostResult> = Vec::new();
        let mut run_now = 0;
        for (i, hosts) in plan.batches.iter().enumerate() {
            let number = i + 1;
            if let Some(done) = self.finished_batch(number, hosts)? {
                self.progress.note(&format!(
                    "batch {number}/{total} ({}) done {}: not redone",
                    hosts.join(","),
                    done.finished_at.as_deref().unwrap_or("")
                ));
                continue;
            }
            if self.options.max_batches.is_some_and(|m| run_now >= m) {
                return Ok(PromoteOutcome::Partial { done: i, total });
            }
            self.ledger.renew(lock)?;
            let report = match self.run_batch(number, total, hosts).await {
                Ok(report) => report,
                Err(e) => {
                    // The batch step has the whole error; the promote step
                    // says where it stopped. The next promote goes on from
                    // there with the same batches.
                    let full = format!("{e:#}");
                    let cause = full
                        .strip_prefix(&format!("promote of {tag} stopped at batch {number}: "))
                        .unwrap_or(&full);
                    let why = cause.lines().next().unwrap_or("");
                    self.ledger
                        .finish_step(tag, plan.step, Outcome::Failed, |s| {
                            s.message = format!("stopped at batch {number}/{total}: {why}");
                        })
                        .with_context(|| format!("{e:#}"))?;
                    return Err(e);
                }
            };
            run_now += 1;
            failed_hosts.extend(report.failed().into_iter().cloned());
            if failed_hosts.len() > allowed {
                let summary = batch_failure(&report, self.config);
                self.ledger
                    .finish_step(tag, plan.step, Outcome::Failed, |s| {
                        s.message = format!(
                            "stopped at batch {number}: {} hosts failed, {allowed} allowed",
                            failed_hosts.len()
                        );
                    })?;
                bail!(
                    "promote of {tag} stopped at batch {number}/{total}: {} of {total_hosts} \
                     hosts failed and rollout.max_failed allows {allowed}:\n{summary}  fix: look \
                     at those hosts, then run promote again (finished batches are not redone) \
                     or `rollback`",
                    failed_hosts.len(),
                );
            }
        }
        self.finish(plan, total_hosts, &failed_hosts, forced)
    }

    /// The batch `number` with these `hosts` done since the last canary
    /// rollout, if any.
    fn finished_batch(&self, number: usize, hosts: &[String]) -> Result<Option<Step>> {
        let record = reread(self.ledger, self.tag)?;
        let since_canary = record
            .steps
            .iter()
            .rposition(|s| s.kind == StepKind::Canary)
            .unwrap_or(0);
        Ok(record.steps[since_canary..]
            .iter()
            .find(|s| {
                s.kind == StepKind::Batch && s.batch == Some(number) && s.hosts == hosts && s.ok()
            })
            .cloned())
    }

    /// Deploys one batch and records it; hosts that failed are in the report.
    async fn run_batch(
        &self,
        number: usize,
        total: usize,
        hosts: &[String],
    ) -> Result<DeployReport> {
        let (tag, version) = (self.tag, self.version);
        self.progress
            .step(&format!("promote {tag}: batch {number}/{total}"));
        let mut step = Step::start(StepKind::Batch);
        step.batch = Some(number);
        step.hosts = hosts.to_vec();
        let index = self.ledger.start_step(tag, step)?;
        let query = rollout::query_for_hosts(hosts);
        let report = match rollout::deploy(
            self.config,
            &query,
            hosts,
            version,
            false,
            self.progress,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let message = format!("{e:#}");
                self.ledger
                    .finish_step(tag, index, Outcome::Failed, |s| s.message = message.clone())?;
                self.progress.finish_step(false);
                return Err(e.context(format!("promote of {tag} stopped at batch {number}")));
            }
        };
        let failed = report.failed().len();
        let outcome = if failed == 0 {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        self.ledger.finish_step(tag, index, outcome, |s| {
            s.results = report.hosts.clone();
            s.message = format!(
                "{} of {} hosts on {version}",
                hosts.len() - failed,
                hosts.len()
            );
        })?;
        self.progress.finish_step(failed == 0);
        Ok(report)
    }

    /// Closes the promote step: every batch ran, failures within the limit.
    fn finish(
        &self,
        plan: &Plan,
        total_hosts: usize,
        failed_hosts: &[HostResult],
        forced: bool,
    ) -> Result<PromoteOutcome> {
        let version = self.version;
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
        let outcome = if forced { Outcome::Forced } else { Outcome::Ok };
        self.ledger.finish_step(self.tag, plan.step, outcome, |s| {
            s.message = message.clone()
        })?;
        Ok(PromoteOutcome::Promoted {
            tag: self.tag.to_string(),
            version: version.to_string(),
            hosts: total_hosts,
        })
    }
}

fn batch_failure(report: &DeployReport, config: &Config) -> String {
    format!(
        "  ({} exited {}; dpkg on each host was asked)\n{}",
        rollout::tool_name(config),
        report.tool_exit,
        report.failure_summary()
    )
}
