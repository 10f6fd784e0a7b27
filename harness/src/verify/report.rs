//! What verify found, in three forms: a summary a person reads at a glance,
//! JUnit XML for CI's test report, and JSON for scripts and the ledger; with
//! the coverage of the tool measured on the fleet, and its Cobertura file.

use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::support::progress::{format_duration, serialize_seconds};
use crate::verify::coverage::CoverageReport;

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub host: String,
    pub assertion: String,
    pub expected: String,
    pub actual: String,
}

impl Failure {
    pub fn one_line(&self) -> String {
        let actual = self.actual.lines().next().unwrap_or("");
        format!(
            "{}: {} (expected {}, got {})",
            self.host, self.assertion, self.expected, actual
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub passed: bool,
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    pub failures: Vec<Failure>,
    /// The scenario could not run to its end (fleet start, an install, ...).
    pub error: Option<String>,
    pub log: Vec<String>,
    /// Where its time went, in the order the phases first ran.
    pub phases: Vec<Phase>,
}

/// Time a scenario spent in one kind of work (fleet start, install, sync,
/// checks...), summed over the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
}

/// The phases as one line: `fleet start 2.1s, install 3.0s, ...`.
pub fn phases_line(phases: &[Phase]) -> String {
    phases
        .iter()
        .map(|p| format!("{} {}", p.name, format_duration(p.duration)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub package: String,
    pub version: String,
    pub previous: Option<String>,
    pub scenarios: Vec<ScenarioResult>,
    #[serde(serialize_with = "serialize_seconds")]
    pub duration: Duration,
    /// Preparing the hosts every scenario's fleet starts from, once.
    #[serde(serialize_with = "serialize_seconds")]
    pub prepare: Duration,
    /// The tool's code executed on the fleet (None: not looked at).
    pub coverage: Option<CoverageReport>,
}

impl VerifyReport {
    /// Every scenario passed and every coverage floor was met.
    pub fn passed(&self) -> bool {
        !self.scenarios.is_empty()
            && self.scenarios.iter().all(|s| s.passed)
            && self.floor_failures().is_empty()
    }

    fn floor_failures(&self) -> &[String] {
        self.coverage
            .as_ref()
            .map(|c| c.floor_failures.as_slice())
            .unwrap_or_default()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report serializes")
    }

    /// sha256 of the JSON report: what the ledger records as "the verify
    /// report this release passed".
    pub fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.to_json().as_bytes()))
    }

    pub fn summary(&self) -> String {
        let passed = self.scenarios.iter().filter(|s| s.passed).count();
        let mut out = format!(
            "verify {} {}{}: {} of {} scenarios passed in {}\n",
            self.package,
            self.version,
            self.previous
                .as_ref()
                .map(|p| format!(" (previous {p})"))
                .unwrap_or_default(),
            passed,
            self.scenarios.len(),
            format_duration(self.duration)
        );
        if !self.prepare.is_zero() {
            out.push_str(&format!(
                "  hosts prepared once for every scenario in {}\n",
                format_duration(self.prepare)
            ));
        }
        for s in &self.scenarios {
            out.push_str(&format!(
                "  {} {:<16} {:>7}{}\n",
                if s.passed { "PASS" } else { "FAIL" },
                s.name,
                format_duration(s.duration),
                if s.phases.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", phases_line(&s.phases))
                }
            ));
            if let Some(e) = &s.error {
                for line in e.lines() {
                    out.push_str(&format!("       error: {line}\n"));
                }
            }
            for f in &s.failures {
                out.push_str(&format!("       {}\n", f.one_line()));
                for extra in f.actual.lines().skip(1) {
                    out.push_str(&format!("         | {extra}\n"));
                }
            }
        }
        if let Some(c) = &self.coverage {
            out.push_str(&c.summary());
        }
        out
    }

    pub fn junit(&self) -> String {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("release-harness verify");
        let mut suite = TestSuite::new(format!("verify {} {}", self.package, self.version));
        for s in &self.scenarios {
            let status = if s.passed {
                TestCaseStatus::success()
            } else {
                let kind = if s.error.is_some() {
                    NonSuccessKind::Error
                } else {
                    NonSuccessKind::Failure
                };
                let mut st = TestCaseStatus::non_success(kind);
                if let TestCaseStatus::NonSuccess {
                    message,
                    description,
                    ..
                } = &mut st
                {
                    let first = s
                        .failures
                        .first()
                        .map(|f| f.one_line())
                        .or_else(|| s.error.clone())
                        .unwrap_or_default();
                    *message = Some(first.into());
                    let mut text = String::new();
                    if let Some(e) = &s.error {
                        text.push_str(&format!("error: {e}\n"));
                    }
                    for f in &s.failures {
                        text.push_str(&format!(
                            "host {}: {}\n  expected: {}\n  actual:   {}\n",
                            f.host, f.assertion, f.expected, f.actual
                        ));
                    }
                    *description = Some(text.into());
                }
                st
            };
            let mut case = TestCase::new(s.name.clone(), status);
            case.set_classname(format!("verify.{}", self.package));
            case.set_time(s.duration);
            case.set_system_out(s.log.join("\n"));
            suite.add_test_case(case);
        }
        if !self.floor_failures().is_empty() {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
            if let TestCaseStatus::NonSuccess {
                message,
                description,
                ..
            } = &mut st
            {
                *message = Some(self.floor_failures()[0].clone().into());
                *description = Some(self.floor_failures().join("\n").into());
            }
            let mut case = TestCase::new("coverage floors", st);
            case.set_classname(format!("verify.{}", self.package));
            suite.add_test_case(case);
        }
        report.add_test_suite(suite);
        report.to_string().expect("a JUnit report serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VerifyReport {
        let ok = ScenarioResult {
            name: "fresh-install".into(),
            passed: true,
            duration: Duration::from_millis(8300),
            failures: vec![],
            error: None,
            log: vec!["installed minideploy 0.2.0-1 on deploy1, canary1".into()],
            phases: vec![
                Phase {
                    name: "fleet start".into(),
                    duration: Duration::from_millis(2100),
                },
                Phase {
                    name: "install".into(),
                    duration: Duration::from_millis(3000),
                },
                Phase {
                    name: "sync".into(),
                    duration: Duration::from_millis(3200),
                },
            ],
        };
        let bad = ScenarioResult {
            name: "upgrade".into(),
            passed: false,
            duration: Duration::from_millis(12100),
            failures: vec![Failure {
                host: "app2".into(),
                assertion: "deploy after the upgrade: deployed revision".into(),
                expected: "2f6c0d1".into(),
                actual: "9a81b44".into(),
            }],
            error: None,
            log: vec![],
            phases: vec![],
        };
        let broken = ScenarioResult {
            name: "downgrade".into(),
            passed: false,
            duration: Duration::from_millis(900),
            failures: vec![],
            error: Some("on host canary1: `apt-get install` exited with 100".into()),
            log: vec![],
            phases: vec![],
        };
        VerifyReport {
            package: "minideploy".into(),
            version: "0.2.0-1".into(),
            previous: Some("0.1.0-1".into()),
            scenarios: vec![ok, bad, broken],
            duration: Duration::from_secs(21),
            prepare: Duration::from_millis(6400),
            coverage: None,
        }
    }

    #[test]
    fn summary_reads_at_a_glance() {
        insta::assert_snapshot!(sample().summary());
    }

    #[test]
    fn junit_names_scenario_host_and_assertion() {
        let xml = sample().junit();
        insta::assert_snapshot!(xml);
        assert!(xml.contains("tests=\"3\""));
        assert!(xml.contains("failures=\"1\""));
        assert!(xml.contains("errors=\"1\""));
    }

    #[test]
    fn passed_needs_every_scenario() {
        let mut r = sample();
        assert!(!r.passed());
        r.scenarios.retain(|s| s.passed);
        assert!(r.passed());
        r.scenarios.clear();
        assert!(!r.passed(), "an empty suite proves nothing");
    }
}
