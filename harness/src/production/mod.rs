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

use std::path::PathBuf;

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
    pub deb: PathBuf,
    pub deb_sha256: String,
    /// `VerifyReport::digest()`.
    pub verify_digest: String,
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
