//! What the ledger records: one `Record` per release, its `Step`s, who ran
//! each (`Actor`), and what a step found: the gate's checks (`CheckResult`)
//! and each host's result of a rollout (`HostResult`). The production code
//! fills these in; the ledger stores them as JSON in git notes, so a field's
//! name is part of the format of ledgers that already exist.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// The version of the record's layout, written in every note.
const FORMAT: u32 = 1;

/// Who ran a step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    pub user: String,
    pub host: String,
    pub pid: u32,
    /// The CI job, when run by one (`CI_JOB_URL`, `CI_JOB_ID`, `GITHUB_RUN_ID`).
    #[serde(default)]
    pub ci_job: Option<String>,
}

impl Actor {
    pub fn current() -> Actor {
        let env = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        Actor {
            user: env(&["GITLAB_USER_LOGIN", "GITHUB_ACTOR", "USER", "LOGNAME"])
                .unwrap_or_else(|| "unknown".into()),
            host: hostname(),
            pid: std::process::id(),
            ci_job: env(&["CI_JOB_URL", "CI_JOB_ID", "GITHUB_RUN_ID"]),
        }
    }

    pub fn describe(&self) -> String {
        let job = self
            .ci_job
            .as_ref()
            .map(|j| format!(", CI job {j}"))
            .unwrap_or_default();
        format!("{} on {} (pid {}{job})", self.user, self.host, self.pid)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    Tagged,
    Built,
    Verified,
    Canary,
    Gate,
    Promote,
    Batch,
    Rollback,
}

impl StepKind {
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Tagged => "tagged",
            StepKind::Built => "built",
            StepKind::Verified => "verified",
            StepKind::Canary => "canary",
            StepKind::Gate => "gate",
            StepKind::Promote => "promote",
            StepKind::Batch => "batch",
            StepKind::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    Failed,
    /// The gate said no.
    Blocked,
    /// The gate said not yet.
    Soaking,
    /// Done despite the gate, with a reason.
    Forced,
    /// A later run found it started and not finished.
    Interrupted,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub kind: StepKind,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    pub by: Actor,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Which batch of the promote (from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// The promote's plan, fixed when it first starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batches: Vec<Vec<String>>,
    /// The version installed by this step (a rollback's target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the gate was overridden or a lock broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// The soak a gate evaluation applied, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakDecision>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<HostResult>,
}

impl Step {
    /// A step started now by this process.
    pub fn start(kind: StepKind) -> Step {
        Step {
            kind,
            started_at: now(),
            finished_at: None,
            outcome: None,
            by: Actor::current(),
            hosts: Vec::new(),
            batch: None,
            batches: Vec::new(),
            version: None,
            reason: None,
            message: String::new(),
            checks: Vec::new(),
            soak: None,
            results: Vec::new(),
        }
    }

    /// A step that already happened (tagged, built, verified are recorded
    /// after the fact, with the times they had).
    pub fn done(kind: StepKind, started_at: &str, finished_at: &str, message: &str) -> Step {
        let mut s = Step::start(kind);
        s.started_at = started_at.to_string();
        s.finished_at = Some(finished_at.to_string());
        s.outcome = Some(Outcome::Ok);
        s.message = message.to_string();
        s
    }

    pub fn finished(&self) -> bool {
        self.finished_at.is_some()
    }

    pub fn ok(&self) -> bool {
        matches!(self.outcome, Some(Outcome::Ok) | Some(Outcome::Forced))
    }
}

/// Everything the ledger knows of one release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub format: u32,
    pub package: String,
    /// The full Debian version (`0.2.0-1`).
    pub version: String,
    pub tag: String,
    pub commit: String,
    /// The sha256 of each binary package's .deb, by package name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub debs: BTreeMap<String, String>,
    /// How records before `debs` kept the one .deb's sha256 (read, and
    /// written back as it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deb_sha256: Option<String>,
    /// `VerifyReport::digest()` of the report this release passed.
    #[serde(default)]
    pub verify_digest: Option<String>,
    /// What the canaries ran before (where a rollback goes by default).
    #[serde(default)]
    pub previous_version: Option<String>,
    /// What verify measured of the tool's code on the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<CoverageFigures>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// Coverage figures of a verify run (see `verify::coverage`), kept for the
/// soak gate's decision and for `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CoverageFigures {
    /// Statements executed on the fleet, and statements of the tool.
    pub covered: u64,
    pub statements: u64,
    /// Changed lines since the previous release tag: exercised, and all.
    pub changed_exercised: Option<u64>,
    pub changed: Option<u64>,
    /// Why there are no change figures (not Python, first release, ...).
    #[serde(default)]
    pub note: String,
    /// Some host's data was missing: the figures are a lower bound.
    #[serde(default)]
    pub incomplete: bool,
}

impl Record {
    pub fn new(package: &str, version: &str, tag: &str, commit: &str) -> Record {
        Record {
            format: FORMAT,
            package: package.to_string(),
            version: version.to_string(),
            tag: tag.to_string(),
            commit: commit.to_string(),
            debs: BTreeMap::new(),
            deb_sha256: None,
            verify_digest: None,
            previous_version: None,
            coverage: None,
            steps: Vec::new(),
        }
    }

    /// The sha256 of each binary's .deb, by package name, from either form.
    pub fn deb_sums(&self) -> BTreeMap<String, String> {
        match &self.deb_sha256 {
            Some(sum) if self.debs.is_empty() => {
                BTreeMap::from([(self.package.clone(), sum.clone())])
            }
            _ => self.debs.clone(),
        }
    }

    pub fn last(&self, kind: StepKind) -> Option<&Step> {
        self.steps.iter().rev().find(|s| s.kind == kind)
    }

    /// Steps that were started and never finished.
    pub fn unfinished(&self) -> Vec<(usize, &Step)> {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.finished())
            .collect()
    }
}

/// Which soak applies to a release on the canaries, and why (see
/// `production::gate::soak_decision`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SoakDecision {
    pub secs: u64,
    /// The evidence floor applies.
    pub shortened: bool,
    pub reason: String,
}

/// What one gate check concluded.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One check of a gate evaluation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckResult {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

impl CheckResult {
    /// `verdict  name  detail`, as the gate summary, promote and status show it.
    pub fn line(&self) -> String {
        format!(
            "{:<12} {:<22} {}",
            self.verdict.word(),
            self.name,
            self.detail
        )
    }
}

/// What happened on one host in a rollout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostResult {
    pub host: String,
    /// What the tool said about the host (`was updated: 0.1.0-1 ->
    /// 0.2.0-1`, `already up-to-date`, the tail of apt's output, ...).
    pub reported: String,
    /// What dpkg says is installed afterwards; None when the host did not
    /// answer the version check.
    pub installed: Option<String>,
    pub ok: bool,
}

pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A note as earlier versions wrote it: it must read back, and write out
    /// with the same field names, or existing ledgers would be lost.
    const EXISTING_NOTE: &str = r#"{
  "format": 1,
  "package": "minideploy",
  "version": "0.2.0-1",
  "tag": "0.2.0",
  "commit": "abc",
  "deb_sha256": "00ff",
  "verify_digest": "11ee",
  "previous_version": "0.1.0-1",
  "steps": [
    {
      "kind": "canary",
      "started_at": "2026-01-01T00:00:00.000Z",
      "finished_at": "2026-01-01T00:01:00.000Z",
      "outcome": "ok",
      "by": { "user": "ci", "host": "runner1", "pid": 42, "ci_job": "7" },
      "hosts": ["canary1"],
      "version": "0.2.0-1",
      "message": "1 of 1 canaries on 0.2.0-1",
      "results": [
        { "host": "canary1", "reported": "was updated: 0.1.0-1 -> 0.2.0-1",
          "installed": "0.2.0-1", "ok": true }
      ]
    },
    {
      "kind": "gate",
      "started_at": "2026-01-01T02:00:00.000Z",
      "finished_at": "2026-01-01T02:00:05.000Z",
      "outcome": "forced",
      "by": { "user": "ci", "host": "runner1", "pid": 43, "ci_job": null },
      "reason": "hotfix",
      "checks": [
        { "name": "soak", "verdict": "inconclusive", "detail": "10m left" },
        { "name": "artifact", "verdict": "pass", "detail": "as verified" }
      ]
    }
  ]
}"#;

    #[test]
    fn an_existing_note_reads_and_writes_back_the_same() {
        let record: Record = serde_json::from_str(EXISTING_NOTE).unwrap();
        assert_eq!(record.steps[1].checks[0].verdict, Verdict::Inconclusive);
        assert_eq!(
            record.steps[0].results[0].installed.as_deref(),
            Some("0.2.0-1")
        );
        assert_eq!(
            record.deb_sums(),
            BTreeMap::from([("minideploy".to_string(), "00ff".to_string())])
        );
        let written = serde_json::to_value(&record).unwrap();
        let original: serde_json::Value = serde_json::from_str(EXISTING_NOTE).unwrap();
        assert_eq!(written, original);
    }
}
