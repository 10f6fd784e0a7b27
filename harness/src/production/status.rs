//! `status`: where each release of the ledger stands, its timeline, lead
//! time, soak left and last gate evaluation, as data (`--json`) and as text.

use anyhow::Result;
use serde::Serialize;

use super::{gate, state_of, State};
use crate::config::Config;
use crate::ledger::{self, CheckResult, Ledger, Outcome, Record, SoakDecision, Step, StepKind};
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
    /// The sha256 of each binary package's .deb, by package name.
    pub debs: std::collections::BTreeMap<String, String>,
    pub verify_digest: Option<String>,
    /// What verify measured of the tool's code on the fleet.
    pub coverage: Option<crate::ledger::CoverageFigures>,
    pub timeline: Vec<TimelineEntry>,
    /// From the tag to the end of the promote.
    pub lead_time_secs: Option<i64>,
    /// While on the canaries: time left of the soak that applies.
    pub soak_remaining_secs: Option<i64>,
    /// While on the canaries: the soak that applies (the full one or the
    /// evidence floor), and why (`gate::applied_soak`).
    pub soak: Option<SoakDecision>,
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
    let soak = match (state, at(StepKind::Canary, true)) {
        (State::Canary | State::Blocked, Some(t)) => Some((t, gate::applied_soak(config, r))),
        _ => None,
    };
    let soak_remaining_secs = soak.as_ref().map(|(t, decision)| {
        let elapsed = (chrono::Utc::now() - *t).num_seconds();
        (decision.secs as i64 - elapsed).max(0)
    });
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
        debs: r.deb_sums(),
        verify_digest: r.verify_digest.clone(),
        coverage: r.coverage.clone(),
        timeline,
        lead_time_secs,
        soak_remaining_secs,
        soak: soak.map(|(_, decision)| decision),
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
                "  soak remaining: {}{}\n",
                format_duration(std::time::Duration::from_secs(s.max(0) as u64)),
                r.soak
                    .as_ref()
                    .map(|d| format!("; {}", d.reason))
                    .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{CheckResult, HostResult, Verdict};
    use crate::production::tests::step;
    use Outcome::*;
    use StepKind::*;

    fn check(name: &str, verdict: Verdict, detail: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            verdict,
            detail: detail.into(),
        }
    }

    fn release(version: &str, tag: &str) -> Record {
        let mut r = Record::new("minideploy", version, tag, "0123456789abcdef");
        r.debs.insert("minideploy".into(), "5e6f".into());
        r.verify_digest = Some("7a8b".into());
        r.previous_version = Some("0.1.0-1".into());
        r
    }

    /// Everything up to the canaries, the hour of `day`.
    fn up_to_canaries(r: &mut Record, day: &str) {
        for (kind, minute) in [(Tagged, "00"), (Built, "10"), (Verified, "20")] {
            let mut s = step(kind, Some(Ok), &format!("{day}T09:{minute}:00.000Z"));
            s.message = format!("{} step", kind.name());
            r.steps.push(s);
        }
        let mut canary = step(Canary, Some(Ok), &format!("{day}T09:30:00.000Z"));
        canary.hosts = vec!["canary1".into(), "canary2".into()];
        canary.message = "2 of 2 canaries on the version".into();
        canary.results = vec![HostResult {
            host: "canary1".into(),
            reported: "was updated: 0.1.0-1 -> 0.2.0-1".into(),
            installed: Some(r.version.clone()),
            ok: true,
        }];
        r.steps.push(canary);
    }

    /// 0.2.0: soaked, gate passed on the second try, promoted in two
    /// batches with one forced gate reason.
    fn promoted() -> Record {
        let mut r = release("0.2.0-1", "0.2.0");
        up_to_canaries(&mut r, "2026-01-05");
        let mut soaking = step(Gate, Some(Soaking), "2026-01-05T10:00:00.000Z");
        soaking.checks = vec![check("soak", Verdict::Inconclusive, "30m on the canaries")];
        r.steps.push(soaking);
        let mut passed = step(Gate, Some(Forced), "2026-01-05T12:00:00.000Z");
        passed.reason = Some("security fix".into());
        passed.checks = vec![
            check("soak", Verdict::Pass, "2h 30m on the canaries (minimum 1h)"),
            check(
                "errors",
                Verdict::Inconclusive,
                "`rate(x[5m])` returned no data",
            ),
        ];
        r.steps.push(passed);
        let mut promote = step(Promote, Some(Forced), "2026-01-05T12:01:00.000Z");
        promote.reason = Some("security fix".into());
        promote.message = "3 hosts on 0.2.0-1".into();
        r.steps.push(promote);
        for (n, at) in [
            (1, "2026-01-05T12:01:30.000Z"),
            (2, "2026-01-05T12:03:00.000Z"),
        ] {
            let mut b = step(Batch, Some(Ok), at);
            b.batch = Some(n);
            b.message = "hosts on 0.2.0-1".into();
            r.steps.push(b);
        }
        r
    }

    /// 0.3.0: on the canaries, blocked by the gate, a rollback cut off.
    fn blocked() -> Record {
        let mut r = release("0.3.0-1", "0.3.0");
        up_to_canaries(&mut r, "2026-01-06");
        let mut gate = step(Gate, Some(Blocked), "2026-01-06T11:00:00.000Z");
        gate.checks = vec![
            check("soak", Verdict::Pass, "1h 30m on the canaries (minimum 1h)"),
            check("canary versions", Verdict::Fail, "canary2 has 0.1.0-1"),
        ];
        r.steps.push(gate);
        r.steps
            .push(step(Rollback, None, "2026-01-06T11:05:00.000Z"));
        r.coverage = Some(crate::ledger::CoverageFigures {
            covered: 120,
            statements: 168,
            changed_exercised: Some(3),
            changed: Some(4),
            note: String::new(),
            incomplete: false,
        });
        r
    }

    fn statuses() -> Vec<ReleaseStatus> {
        let config = Config::default();
        [promoted(), blocked()]
            .iter()
            .map(|r| release_status(&config, r))
            .collect()
    }

    #[test]
    fn status_of_a_promoted_and_a_blocked_release() {
        let statuses = statuses();
        assert_eq!(statuses[0].state, State::Promoted);
        assert_eq!(statuses[0].lead_time_secs, Some(3 * 3600 + 2 * 60));
        assert_eq!(statuses[0].gate_evaluations, 2);
        assert_eq!(statuses[1].state, State::Blocked);
        // The canaries finished long ago: nothing left of the soak.
        assert_eq!(statuses[1].soak_remaining_secs, Some(0));
        insta::assert_snapshot!(serde_json::to_string_pretty(&statuses).unwrap());
    }

    #[test]
    fn renders_the_timeline_gate_and_unfinished_steps() {
        insta::assert_snapshot!(render_status(&statuses()));
    }

    /// On the canaries for ten minutes, of a release whose every changed
    /// line verify exercised; the config has a one-hour evidence floor.
    fn soaking_with_evidence() -> (Config, Record) {
        let mut config = Config::default();
        config.gate.evidence_floor_secs = Some(3600);
        config.gate.checks.push(crate::config::GateCheck::Evidence {
            name: "successful syncs".into(),
            command: "count-syncs --since {since}".into(),
            threshold: 10.0,
        });
        let mut r = release("0.4.0-1", "0.4.0");
        let ago = |minutes: i64| {
            (chrono::Utc::now() - chrono::Duration::minutes(minutes))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        r.steps
            .push(Step::done(Canary, &ago(10), &ago(10), "on the canaries"));
        r.coverage = Some(crate::ledger::CoverageFigures {
            covered: 120,
            statements: 168,
            changed_exercised: Some(4),
            changed: Some(4),
            ..Default::default()
        });
        (config, r)
    }

    #[test]
    fn soak_remaining_follows_the_soak_that_applies() {
        let (config, mut r) = soaking_with_evidence();
        // No gate evaluation yet: the evidence is not counted, the full
        // soak applies.
        let s = release_status(&config, &r);
        let left = s.soak_remaining_secs.unwrap();
        assert!((86400 - 610..=86400 - 590).contains(&left), "{left}");
        let reason = &s.soak.as_ref().unwrap().reason;
        assert!(
            reason.starts_with(
                "the full 24 h soak applies: no evidence from the canaries: not counted yet"
            ),
            "{reason}"
        );
        let text = render_status(&[s]);
        assert!(
            text.contains("soak remaining: 14") && text.contains("s; the full 24 h soak applies"),
            "{text}"
        );

        // The gate counted enough syncs: its decision, the floor, applies.
        let mut gate_step = Step::start(Gate);
        gate_step.outcome = Some(Soaking);
        gate_step.finished_at = gate_step.started_at.clone().into();
        gate_step.soak = Some(gate::soak_decision(
            &config.gate,
            r.coverage.as_ref(),
            Some(&std::result::Result::Ok(gate::Evidence {
                name: "successful syncs".into(),
                count: 17.0,
                threshold: 10.0,
            })),
        ));
        r.steps.push(gate_step);
        let s = release_status(&config, &r);
        let left = s.soak_remaining_secs.unwrap();
        assert!((3600 - 610..=3600 - 590).contains(&left), "{left}");
        assert!(s.soak.as_ref().unwrap().shortened);
        let text = render_status(&[s]);
        assert!(
            text.contains(
                "; 4 of 4 changed lines exercised by verify, 17 successful syncs on the \
                 canaries: the 1 h floor applies"
            ),
            "{text}"
        );

        // A decision from before the last canary rollout does not apply.
        let mut again = r.steps[0].clone();
        again.finished_at = Some(ledger::now());
        r.steps.push(again);
        let s = release_status(&config, &r);
        assert!(!s.soak.unwrap().shortened);
        assert!(s.soak_remaining_secs.unwrap() > 86000);
    }

    #[test]
    fn an_empty_ledger_says_how_a_release_gets_in() {
        insta::assert_snapshot!(render_status(&[]));
    }
}
