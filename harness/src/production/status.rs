//! `status`: where each release of the ledger stands, its timeline, lead
//! time, soak left and last gate evaluation, as data (`--json`) and as text.

use anyhow::Result;
use serde::Serialize;

use super::{state_of, State};
use crate::config::Config;
use crate::ledger::{self, CheckResult, Ledger, Outcome, Record, Step, StepKind};
use crate::support::git::Repo;
use crate::support::progress::format_duration;

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
