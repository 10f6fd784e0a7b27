//! The production steps after verify, in their order: `canary` (the
//! release to the canaries), the soak `gate`, `promote` (the gate, then the
//! rest of the fleet in batches), then `rollback` or `status` at any time.
//! Each step is recorded in the ledger before and after it runs, under the
//! production lock; a step found cut off is reported and resumed.
//!
//! This module holds what the steps share: the facts a release brings to
//! the canary step, the state a ledger record leads to, closing steps found
//! cut off and reporting a lock take-over. `rollout` runs the tools,
//! `testbed` stands in for production.

mod canary;
pub mod gate;
mod promote;
mod rollback;
pub mod rollout;
mod status;
pub mod testbed;

use anyhow::{Context, Result};
use serde::Serialize;

pub use self::canary::canary;
pub use self::promote::{promote, PromoteOptions, PromoteOutcome};
pub use self::rollback::{rollback, RollbackOptions};
pub use self::status::{release_status, render_status, status, ReleaseStatus, TimelineEntry};
use crate::ledger::{self, Ledger, Lock, Outcome, Record, StepKind};
use crate::support::progress::Progress;

/// The error when a record read before is gone: only a hand edit of the
/// notes ref does that.
const LOST_RECORD: &str = "the ledger lost the release record";

/// What the release flow knows when it reaches the canary step.
#[derive(Debug, Clone)]
pub struct ReleaseFacts {
    pub tag: String,
    /// The full Debian version (`0.2.0-1`).
    pub version: String,
    pub commit: String,
    /// Every binary package built (the ledger keeps each one's sha256).
    pub debs: Vec<crate::support::debian::BuiltDeb>,
    /// `VerifyReport::digest()`.
    pub verify_digest: String,
    /// What verify measured of the tool's code (None: not measured).
    pub coverage: Option<crate::ledger::CoverageFigures>,
    /// When the tag was made, the build ended and verify ended (RFC 3339).
    pub tagged_at: String,
    pub built_at: String,
    pub verified_at: String,
}

/// The record of `tag` as the ledger has it now.
fn reread(ledger: &Ledger, tag: &str) -> Result<Record> {
    ledger.record(tag)?.context(LOST_RECORD)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Actor, Step};

    /// A step of `kind` started at `at` by a fixed actor, finished a minute
    /// later with `outcome` (None: never finished).
    pub(super) fn step(kind: StepKind, outcome: Option<Outcome>, at: &str) -> Step {
        let mut s = Step::start(kind);
        s.by = Actor {
            user: "ci".into(),
            host: "runner1".into(),
            pid: 4242,
            ci_job: Some("https://ci.example.org/jobs/7".into()),
        };
        s.started_at = at.to_string();
        s.finished_at = outcome.map(|_| {
            let t =
                ledger::parse_time(at).expect("an RFC 3339 time") + chrono::Duration::minutes(1);
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
        s.outcome = outcome;
        s
    }

    /// Steps by kind and outcome (None: started, never finished).
    type Steps = Vec<(StepKind, Option<Outcome>)>;

    fn after(steps: &[(StepKind, Option<Outcome>)]) -> State {
        let mut record = Record::new("minideploy", "0.2.0-1", "0.2.0", "abc");
        record.steps = steps
            .iter()
            .map(|(kind, outcome)| step(*kind, *outcome, "2026-01-05T10:00:00.000Z"))
            .collect();
        state_of(&record)
    }

    #[test]
    fn every_state_and_the_steps_that_lead_to_it() {
        use Outcome::*;
        use StepKind::*;
        let verified = [(Tagged, Some(Ok)), (Built, Some(Ok)), (Verified, Some(Ok))];
        let on_canaries = [&verified[..], &[(Canary, Some(Ok))]].concat();
        let with = |more: &[(StepKind, Option<Outcome>)]| [&on_canaries[..], more].concat();
        let table: Vec<(&str, Steps, State)> = vec![
            ("nothing yet", vec![], State::Tagged),
            ("tagged", vec![(Tagged, Some(Ok))], State::Tagged),
            ("built", verified[..2].to_vec(), State::Built),
            (
                "a failed build",
                vec![(Tagged, Some(Ok)), (Built, Some(Failed))],
                State::Tagged,
            ),
            ("verified", verified.to_vec(), State::Verified),
            ("canaries", on_canaries.clone(), State::Canary),
            (
                "a failed canary rollout",
                [&verified[..], &[(Canary, Some(Failed))]].concat(),
                State::CanaryFailed,
            ),
            (
                "a canary rollout cut off",
                [&verified[..], &[(Canary, None)]].concat(),
                State::Verified,
            ),
            (
                "still soaking",
                with(&[(Gate, Some(Soaking))]),
                State::Canary,
            ),
            ("blocked", with(&[(Gate, Some(Blocked))]), State::Blocked),
            (
                "blocked, then passed",
                with(&[(Gate, Some(Blocked)), (Gate, Some(Ok))]),
                State::Canary,
            ),
            (
                "blocked, then forced",
                with(&[(Gate, Some(Blocked)), (Gate, Some(Forced))]),
                State::Canary,
            ),
            (
                "a promote under way",
                with(&[(Gate, Some(Ok)), (Promote, None), (Batch, Some(Ok))]),
                State::Promoting,
            ),
            (
                "a promote stopped on failed hosts",
                with(&[(Gate, Some(Ok)), (Promote, Some(Failed))]),
                State::Promoting,
            ),
            (
                "a gate that blocks during a promote changes nothing",
                with(&[(Promote, Some(Failed)), (Gate, Some(Blocked))]),
                State::Promoting,
            ),
            (
                "promoted",
                with(&[(Gate, Some(Ok)), (Promote, Some(Ok))]),
                State::Promoted,
            ),
            (
                "promoted despite the gate",
                with(&[(Gate, Some(Forced)), (Promote, Some(Forced))]),
                State::Promoted,
            ),
            (
                "rolled back from the canaries",
                with(&[(Gate, Some(Blocked)), (Rollback, Some(Ok))]),
                State::RolledBack,
            ),
            (
                "rolled back after a promote",
                with(&[(Promote, Some(Ok)), (Rollback, Some(Ok))]),
                State::RolledBack,
            ),
            (
                "a failed rollback leaves the state",
                with(&[(Promote, Some(Ok)), (Rollback, Some(Failed))]),
                State::Promoted,
            ),
            (
                "canaries again after a rollback",
                with(&[(Rollback, Some(Ok)), (Canary, Some(Ok))]),
                State::Canary,
            ),
        ];
        let mut reached = std::collections::BTreeSet::new();
        for (case, steps, expected) in table {
            assert_eq!(after(&steps), expected, "{case}: {steps:?}");
            reached.insert(expected.name());
        }
        assert_eq!(reached.len(), 9, "a state has no case: {reached:?}");
    }
}
