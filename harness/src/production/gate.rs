//! The soak gate between the canaries and the rest of the fleet. It looks
//! at evidence, not only at the clock: the minimum soak, every canary still
//! on the version (asked of the hosts), the artifact the fleet would install
//! being the one verified (its sha256 in the fleet's apt index against the
//! ledger), and release.toml's health checks (a command on the canaries
//! through the rollout tool; a Prometheus instant query against a
//! threshold). Each check passes, fails or is inconclusive: inconclusive
//! waits, fail blocks. The soak is the full `min_soak_secs` unless evidence
//! shortens it (`soak_decision`): change coverage from verify and a count of
//! real work done on the canaries (an `evidence` check).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{Config, Gate, GateCheck};
use crate::ledger::{self, CoverageFigures, Record, StepKind};
pub use crate::ledger::{CheckResult, SoakDecision, Verdict};
use crate::production::rollout;
use crate::support::process;
use crate::support::progress::Progress;

/// A check over hosts: any failure fails it, hosts that did not answer make
/// it inconclusive, otherwise it passes with `passed`.
fn over_hosts(name: &str, failed: &[String], silent: &[&str], passed: String) -> CheckResult {
    if !failed.is_empty() {
        check(name, Verdict::Fail, failed.join("; "))
    } else if !silent.is_empty() {
        check(
            name,
            Verdict::Inconclusive,
            format!("no answer from {}", silent.join(", ")),
        )
    } else {
        check(name, Verdict::Pass, passed)
    }
}

fn check(name: &str, verdict: Verdict, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        verdict,
        detail: detail.into(),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GateReport {
    pub checks: Vec<CheckResult>,
    /// The soak that applies (the full one, or the evidence floor), and why.
    pub soak: SoakDecision,
    /// Time left of that soak (zero once elapsed).
    pub soak_remaining_secs: u64,
}

impl GateReport {
    /// Fail if any check failed, else inconclusive if any was, else pass.
    pub fn verdict(&self) -> Verdict {
        verdict_of(&self.checks)
    }

    pub fn summary(&self) -> String {
        let mut out = format!("gate: {}\n", self.verdict().word());
        for c in &self.checks {
            out.push_str(&format!("  {}\n", c.line()));
        }
        out
    }
}

pub fn verdict_of(checks: &[CheckResult]) -> Verdict {
    if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.iter().any(|c| c.verdict == Verdict::Inconclusive) {
        Verdict::Inconclusive
    } else {
        Verdict::Pass
    }
}

/// Evaluates every check for the release in `record`. `local_debs`, when
/// given, must also have the verified sha256s (the CI artifacts).
pub async fn evaluate(
    config: &Config,
    record: &Record,
    local_debs: &[PathBuf],
    progress: &Progress,
) -> GateReport {
    let mut checks = Vec::new();
    let mut evidence = None;
    progress.info("gate: versions on the canaries");
    checks.push(canaries_on_version(config, record).await);
    progress.info("gate: the artifact the fleet would install");
    checks.push(artifact(config, record).await);
    for deb in local_debs {
        checks.push(local_artifact(record, deb));
    }
    for c in &config.gate.checks {
        match c {
            GateCheck::Command { name, command } => {
                progress.info(&format!("gate: {name}"));
                checks.push(command_check(config, name, command).await);
            }
            GateCheck::Prometheus {
                name,
                url,
                query,
                op,
                threshold,
            } => {
                progress.info(&format!("gate: {name}"));
                let (url, query, name) = (url.clone(), query.clone(), name.clone());
                let (op, threshold) = (op.clone(), *threshold);
                let result = tokio::task::spawn_blocking(move || {
                    prometheus_check(&name, &url, &query, &op, threshold)
                })
                .await
                .unwrap_or_else(|e| check("prometheus", Verdict::Inconclusive, e.to_string()));
                checks.push(result);
            }
            GateCheck::Evidence {
                name,
                command,
                threshold,
            } => {
                progress.info(&format!("gate: {name}"));
                let (result, count) =
                    evidence_check(config, record, name, command, *threshold).await;
                checks.push(result);
                evidence = Some(count);
            }
        }
    }
    let decision = soak_decision(&config.gate, record.coverage.as_ref(), evidence.as_ref());
    let (soak, remaining) = soak(&decision, record);
    checks.insert(0, soak);
    GateReport {
        checks,
        soak: decision,
        soak_remaining_secs: remaining,
    }
}

/// What an `evidence` check counted on the canaries.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The check's name, a noun for what is counted (`successful syncs`).
    pub name: String,
    pub count: f64,
    pub threshold: f64,
}

/// The soak that applies: `evidence_floor_secs` when verify exercised at
/// least `change_coverage_min` of the changed lines and the canaries show at
/// least the threshold of real work; else the full `min_soak_secs`, saying
/// what was missing. `evidence` is None without an evidence check, an error
/// when it could not count.
pub fn soak_decision(
    gate: &Gate,
    coverage: Option<&CoverageFigures>,
    evidence: Option<&std::result::Result<Evidence, String>>,
) -> SoakDecision {
    let full = |reason: String| SoakDecision {
        secs: gate.min_soak_secs,
        shortened: false,
        reason,
    };
    let Some(floor) = gate.evidence_floor_secs else {
        return full(format!(
            "the full {} soak applies (no gate.evidence_floor_secs)",
            soak_length(gate.min_soak_secs)
        ));
    };
    let mut missing = Vec::new();
    let mut shown = Vec::new();
    match coverage.map(|c| (c, c.changed_exercised, c.changed)) {
        None => missing.push("the ledger has no coverage figures from verify".to_string()),
        Some((c, Some(exercised), Some(changed))) => {
            let share = if changed == 0 {
                1.0
            } else {
                exercised as f64 / changed as f64
            };
            let line = format!("{exercised} of {changed} changed lines exercised by verify");
            if share + 1e-9 >= gate.change_coverage_min {
                shown.push(line);
            } else {
                missing.push(format!(
                    "{line}, below gate.change_coverage_min {}%",
                    gate.change_coverage_min * 100.0
                ));
            }
            if c.incomplete {
                shown.push("(coverage data incomplete: a lower bound)".into());
            }
        }
        Some((c, _, _)) => missing.push(format!(
            "no change coverage from verify{}",
            if c.note.is_empty() {
                String::new()
            } else {
                format!(": {}", c.note)
            }
        )),
    }
    match evidence {
        None => missing.push("no evidence check in gate.checks".into()),
        Some(Err(why)) => missing.push(format!("no evidence from the canaries: {why}")),
        Some(Ok(e)) if e.count >= e.threshold => {
            shown.push(format!("{} {} on the canaries", e.count, e.name))
        }
        Some(Ok(e)) => missing.push(format!(
            "{} {} on the canaries, below {}",
            e.count, e.name, e.threshold
        )),
    }
    if missing.is_empty() {
        SoakDecision {
            secs: floor,
            shortened: true,
            reason: format!(
                "{}: the {} floor applies",
                shown.join(", "),
                soak_length(floor)
            ),
        }
    } else {
        full(format!(
            "the full {} soak applies: {}",
            soak_length(gate.min_soak_secs),
            missing.join("; ")
        ))
    }
}

/// The soak that applies to `record` now, without asking the canaries: the
/// decision the last gate evaluation since the canary rollout recorded;
/// before one (or from a ledger older than the decision), the decision from
/// the recorded coverage, the evidence not yet counted.
pub fn applied_soak(config: &Config, record: &Record) -> SoakDecision {
    let since_canary = record
        .steps
        .iter()
        .rposition(|s| s.kind == StepKind::Canary && s.ok())
        .map_or(&record.steps[..0], |i| &record.steps[i..]);
    let recorded = since_canary
        .iter()
        .rev()
        .filter(|s| s.kind == StepKind::Gate)
        .find_map(|s| s.soak.clone());
    recorded.unwrap_or_else(|| {
        let has_evidence_check = config
            .gate
            .checks
            .iter()
            .any(|c| matches!(c, GateCheck::Evidence { .. }));
        let not_counted = Err("not counted yet (the gate counts it at `promote`)".to_string());
        soak_decision(
            &config.gate,
            record.coverage.as_ref(),
            has_evidence_check.then_some(&not_counted),
        )
    })
}

/// Runs an evidence command on the canaries (`{since}`: the end of the
/// canary rollout, RFC 3339; `{version}`, `{package}`) and sums the number
/// each prints last. A canary that fails or prints no number fails the
/// check; a count below the threshold passes (the full soak applies).
async fn evidence_check(
    config: &Config,
    record: &Record,
    name: &str,
    command: &str,
    threshold: f64,
) -> (CheckResult, std::result::Result<Evidence, String>) {
    let since = record
        .steps
        .iter()
        .rev()
        .find(|s| s.kind == StepKind::Canary && s.ok())
        .and_then(|s| s.finished_at.clone());
    let Some(since) = since else {
        let why = "no successful canary rollout recorded".to_string();
        return (check(name, Verdict::Fail, why.clone()), Err(why));
    };
    let command = config.render(command, &[("since", &since), ("version", &record.version)]);
    let hosts = record
        .last(StepKind::Canary)
        .map(|s| s.hosts.clone())
        .unwrap_or_default();
    let answers =
        match rollout::run_command(config, &rollout::query_for_hosts(&hosts), &command).await {
            Ok(a) => a,
            Err(e) => {
                let why = format!("{e:#}");
                return (check(name, Verdict::Inconclusive, why.clone()), Err(why));
            }
        };
    let (counts, failed) = evidence_counts(&answers);
    let silent: Vec<&str> = hosts
        .iter()
        .filter(|h| !answers.contains_key(*h))
        .map(String::as_str)
        .collect();
    let count: f64 = counts.iter().sum();
    let detail = if count >= threshold {
        format!("{count} {name} on the canaries since {since} (threshold {threshold})")
    } else {
        format!(
            "{count} {name} on the canaries since {since}, {threshold} needed for the \
             shorter soak"
        )
    };
    let result = over_hosts(name, &failed, &silent, detail.clone());
    let evidence = match result.verdict {
        Verdict::Pass => Ok(Evidence {
            name: name.to_string(),
            count,
            threshold,
        }),
        _ => Err(result.detail.clone()),
    };
    (result, evidence)
}

/// Each canary's count (the last line of its output, a number), and the
/// canaries that failed or printed none, with what they printed.
pub fn evidence_counts(answers: &BTreeMap<String, (i32, String)>) -> (Vec<f64>, Vec<String>) {
    let mut counts = Vec::new();
    let mut failed = Vec::new();
    for (host, (code, output)) in answers {
        let last = output.lines().rev().map(str::trim).find(|l| !l.is_empty());
        match last.map(|l| l.parse::<f64>()) {
            Some(Ok(n)) if *code == 0 && n.is_finite() => counts.push(n),
            _ if *code != 0 => failed.push(format!(
                "{host} exited {code}: {}",
                last.unwrap_or("(no output)")
            )),
            _ => failed.push(format!(
                "{host} printed no number: {}",
                if output.trim().is_empty() {
                    "(no output)".to_string()
                } else {
                    output.trim().replace('\n', " | ")
                }
            )),
        }
    }
    (counts, failed)
}

fn soak(decision: &SoakDecision, record: &Record) -> (CheckResult, u64) {
    let name = "soak";
    let min = decision.secs;
    let Some(canary) = record
        .steps
        .iter()
        .rev()
        .find(|s| s.kind == StepKind::Canary && s.ok())
    else {
        return (
            check(name, Verdict::Fail, "no successful canary rollout recorded"),
            min,
        );
    };
    let Some(since) = canary.finished_at.as_deref().and_then(ledger::parse_time) else {
        return (
            check(name, Verdict::Fail, "the canary step has no end time"),
            min,
        );
    };
    let elapsed = (chrono::Utc::now() - since).num_seconds().max(0) as u64;
    if elapsed >= min {
        (
            check(
                name,
                Verdict::Pass,
                format!(
                    "{} on the canaries (minimum {}): {}",
                    human(elapsed),
                    soak_length(min),
                    decision.reason
                ),
            ),
            0,
        )
    } else {
        let left = min - elapsed;
        (
            check(
                name,
                Verdict::Inconclusive,
                format!(
                    "{} on the canaries, {} left of the minimum {}: {}",
                    human(elapsed),
                    human(left),
                    soak_length(min),
                    decision.reason
                ),
            ),
            left,
        )
    }
}

async fn canaries_on_version(config: &Config, record: &Record) -> CheckResult {
    let name = "canary versions";
    let hosts: Vec<String> = record
        .last(StepKind::Canary)
        .map(|s| s.hosts.clone())
        .unwrap_or_default();
    if hosts.is_empty() {
        return check(name, Verdict::Fail, "the ledger names no canary hosts");
    }
    let versions =
        match rollout::installed_versions(config, &rollout::query_for_hosts(&hosts)).await {
            Ok(v) => v,
            Err(e) => return check(name, Verdict::Inconclusive, format!("{e:#}")),
        };
    let wrong: Vec<String> = hosts
        .iter()
        .filter_map(|h| match versions.get(h) {
            Some(v) if *v == record.version => None,
            Some(v) => Some(format!("{h} has {v}")),
            None => None,
        })
        .collect();
    let silent: Vec<&str> = hosts
        .iter()
        .filter(|h| !versions.contains_key(*h))
        .map(String::as_str)
        .collect();
    let wrong: Vec<String> = if wrong.is_empty() {
        wrong
    } else {
        vec![format!(
            "expected {} on every canary: {}",
            record.version,
            wrong.join(", ")
        )]
    };
    over_hosts(
        name,
        &wrong,
        &silent,
        format!("{} on {}", record.version, hosts.join(", ")),
    )
}

/// The sha256 of each binary package the fleet's apt would fetch for this
/// version, read from the canaries' apt index after an update.
async fn artifact(config: &Config, record: &Record) -> CheckResult {
    let name = "artifact";
    let expected = record.deb_sums();
    if expected.is_empty() {
        return check(
            name,
            Verdict::Fail,
            "no sha256 of the verified .deb in the ledger: nothing proves the fleet gets \
             the package that was tested",
        );
    }
    // One `package sha256` line per binary the index has at this version.
    let command = format!(
        "apt-get -q update >/dev/null 2>&1; for p in {}; do apt-cache show \"$p={}\" \
         2>/dev/null | sed -n \"s/^SHA256: /$p /p\"; done",
        expected
            .keys()
            .map(|p| rollout::shell_quote(p))
            .collect::<Vec<_>>()
            .join(" "),
        record.version
    );
    let hosts: Vec<String> = record
        .last(StepKind::Canary)
        .map(|s| s.hosts.clone())
        .unwrap_or_default();
    let query = if hosts.is_empty() {
        config.rollout.canaries.clone()
    } else {
        rollout::query_for_hosts(&hosts)
    };
    let answers = match rollout::run_command(config, &query, &command).await {
        Ok(a) => a,
        Err(e) => return check(name, Verdict::Inconclusive, format!("{e:#}")),
    };
    let mut seen = Vec::new();
    for (host, (_, output)) in &answers {
        let served: Vec<(&str, &str)> = output
            .lines()
            .filter_map(|l| l.trim().split_once(' '))
            .collect();
        for (package, want) in &expected {
            let sums: Vec<&str> = served
                .iter()
                .filter(|(p, _)| p == package)
                .map(|(_, s)| *s)
                .collect();
            if sums.is_empty() {
                return check(
                    name,
                    Verdict::Fail,
                    format!("{host}'s apt index has no {package} {}", record.version),
                );
            }
            if let Some(sum) = sums.iter().find(|s| *s != want) {
                return check(
                    name,
                    Verdict::Fail,
                    format!(
                        "the apt repository serves {package} {} with sha256 {sum} (seen from \
                         {host}), but the verified .deb had {want}: the package changed after \
                         verify",
                        record.version
                    ),
                );
            }
        }
        seen.push(host.as_str());
    }
    if seen.is_empty() {
        return check(name, Verdict::Inconclusive, "no canary answered");
    }
    let shown: Vec<String> = expected
        .iter()
        .map(|(p, s)| format!("{p} {}", &s[..s.len().min(16)]))
        .collect();
    check(
        name,
        Verdict::Pass,
        format!("sha256 as verified: {}", shown.join(", ")),
    )
}

/// A .deb file (the CI artifact) against the verified sha256 of its package.
fn local_artifact(record: &Record, deb: &Path) -> CheckResult {
    let name = "artifact file";
    let file = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sums = record.deb_sums();
    let package = crate::support::debian::package_of_deb_file(&file).unwrap_or(&file);
    let Some(expected) = sums.get(package) else {
        return check(
            name,
            Verdict::Fail,
            format!(
                "the ledger has no verified sha256 of package {package} ({}): {} is not one \
                 of this release's .debs",
                super::canary::describe_sums(&sums),
                deb.display()
            ),
        );
    };
    match std::fs::read(deb) {
        Ok(bytes) => {
            let sum = hex::encode(Sha256::digest(&bytes));
            if &sum == expected {
                check(
                    name,
                    Verdict::Pass,
                    format!("{} as verified", deb.display()),
                )
            } else {
                check(
                    name,
                    Verdict::Fail,
                    format!(
                        "{} has sha256 {sum}, the verified .deb {expected}",
                        deb.display()
                    ),
                )
            }
        }
        Err(e) => check(
            name,
            Verdict::Fail,
            format!("cannot read {}: {e}", deb.display()),
        ),
    }
}

async fn command_check(config: &Config, name: &str, command: &str) -> CheckResult {
    let hosts = match rollout::resolve(config, &config.rollout.canaries).await {
        Ok(h) => h,
        Err(e) => return check(name, Verdict::Inconclusive, format!("{e:#}")),
    };
    let answers = match rollout::run_command(config, &config.rollout.canaries, command).await {
        Ok(a) => a,
        Err(e) => return check(name, Verdict::Inconclusive, format!("{e:#}")),
    };
    let failed: Vec<String> = answers
        .iter()
        .filter(|(_, (code, _))| *code != 0)
        .map(|(h, (code, out))| {
            format!(
                "{h} exited {code}: {}",
                out.lines().last().unwrap_or("").trim()
            )
        })
        .collect();
    let silent: Vec<&str> = hosts
        .iter()
        .filter(|h| !answers.contains_key(*h))
        .map(String::as_str)
        .collect();
    over_hosts(
        name,
        &failed,
        &silent,
        format!("`{command}` exited 0 on {}", hosts.join(", ")),
    )
}

/// A Prometheus instant query; every returned sample must satisfy
/// `value OP threshold`. No data or no answer is inconclusive.
pub fn prometheus_check(
    name: &str,
    url: &str,
    query: &str,
    op: &str,
    threshold: f64,
) -> CheckResult {
    let values = match prometheus_query(url, query, Duration::from_secs(10)) {
        Ok(v) => v,
        // A Prometheus URL may carry basic-auth credentials; the detail is
        // printed and kept in the ledger.
        Err(e) => {
            return check(
                name,
                Verdict::Inconclusive,
                process::redact_urls(&format!("{e:#}")),
            )
        }
    };
    if values.is_empty() {
        return check(
            name,
            Verdict::Inconclusive,
            format!("`{query}` returned no data"),
        );
    }
    let holds = |v: f64| match op {
        "<" => v < threshold,
        "<=" => v <= threshold,
        ">" => v > threshold,
        ">=" => v >= threshold,
        _ => false,
    };
    let bad: Vec<String> = values
        .iter()
        .filter(|v| !holds(**v))
        .map(|v| v.to_string())
        .collect();
    if bad.is_empty() {
        check(
            name,
            Verdict::Pass,
            format!("{} {op} {threshold}", join_values(&values)),
        )
    } else {
        check(
            name,
            Verdict::Fail,
            format!("`{query}` = {} is not {op} {threshold}", bad.join(", ")),
        )
    }
}

fn join_values(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sample values of an instant query (`/api/v1/query`), over http or
/// https, bounded by `timeout` from connecting to the last byte.
pub fn prometheus_query(url: &str, query: &str, timeout: Duration) -> Result<Vec<f64>> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("Prometheus URL `{url}` must start with http:// or https://");
    }
    let endpoint = format!("{}/api/v1/query", url.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        // A refused query's body says why (a parse error): read it.
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(&endpoint)
        .query("query", query)
        .header("Accept", "application/json")
        .call()
        .with_context(|| format!("asking Prometheus at {url}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading Prometheus' answer from {url}"))?;
    if status != ureq::http::StatusCode::OK {
        bail!("Prometheus at {url} answered `{status}`: {}", body.trim());
    }
    let json: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{url} did not answer JSON"))?;
    if json["status"] != "success" {
        bail!("Prometheus query `{query}` failed: {}", json["error"]);
    }
    let sample = |v: &serde_json::Value| -> Result<f64> {
        v.get(1)
            .and_then(|s| s.as_str())
            .with_context(|| format!("unexpected sample {v}"))?
            .parse::<f64>()
            .context("a sample value is not a number")
    };
    let data = &json["data"];
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|a| a.iter().map(|s| sample(&s["value"])).collect())
            .unwrap_or(Ok(Vec::new())),
        Some("scalar") => Ok(vec![sample(&data["result"])?]),
        other => bail!(
            "Prometheus query `{query}` returned a {} result; use a query that gives an \
             instant vector or a scalar",
            other.unwrap_or("missing")
        ),
    }
}

/// A soak's length as an operator writes it: `24 h`, `1 h`, else `90m00s`.
fn soak_length(secs: u64) -> String {
    if secs > 0 && secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else {
        human(secs)
    }
}

fn human(secs: u64) -> String {
    crate::support::progress::format_duration(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-request HTTP server answering `body` with `status`; the
    /// request's first line goes to `REQUESTS` for the test to read.
    fn serve(status: &str, body: &str) -> String {
        serve_seen(status, body).0
    }

    fn serve_seen(status: &str, body: &str) -> (String, std::sync::mpsc::Receiver<String>) {
        let (seen, requests) = std::sync::mpsc::channel();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let response = format!("HTTP/1.0 {status}\r\nContent-Type: application/json\r\n\r\n{body}");
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let _ = seen.send(request.lines().next().unwrap_or("").to_string());
            conn.write_all(response.as_bytes()).unwrap();
        });
        (url, requests)
    }

    fn vector(values: &[&str]) -> String {
        let samples: Vec<String> = values
            .iter()
            .map(|v| format!("{{\"metric\":{{}},\"value\":[1700000000.1,\"{v}\"]}}"))
            .collect();
        format!(
            "{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[{}]}}}}",
            samples.join(",")
        )
    }

    #[test]
    fn prometheus_pass_fail_and_no_data() {
        let (url, requests) = serve_seen("200 OK", &vector(&["0.01", "0.02"]));
        let c = prometheus_check("errors", &url, "sum(rate(x[5m]))", "<", 0.05);
        assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
        let request = requests.recv().unwrap();
        assert!(
            request.starts_with("GET /api/v1/query?query=sum(rate(x%5B5m%5D)) "),
            "{request}"
        );
        let url = serve("200 OK", &vector(&["0.01", "0.2"]));
        let c = prometheus_check("errors", &url, "x", "<", 0.05);
        assert_eq!(c.verdict, Verdict::Fail, "{c:?}");
        assert!(c.detail.contains("0.2"), "{c:?}");
        let url = serve("200 OK", &vector(&[]));
        assert_eq!(
            prometheus_check("errors", &url, "x", "<", 0.05).verdict,
            Verdict::Inconclusive
        );
        let url = serve(
            "400 Bad Request",
            "{\"status\":\"error\",\"error\":\"parse error\"}",
        );
        let c = prometheus_check("errors", &url, "x(", "<", 0.05);
        assert_eq!(c.verdict, Verdict::Inconclusive);
        assert!(c.detail.contains("400"), "{c:?}");
        let secret = url.replace("http://", "http://ci:s3cr3t@");
        let c = prometheus_check("errors", &secret, "x(", "<", 0.05);
        assert!(c.detail.contains("http://***@127.0.0.1:"), "{c:?}");
        assert!(!c.detail.contains("s3cr3t"), "{c:?}");
        let c = prometheus_check("errors", "http://ci:s3cr3t@127.0.0.1:9", "x", "<", 0.05);
        assert!(!c.detail.contains("s3cr3t"), "{c:?}");
    }

    #[test]
    fn prometheus_unreachable_is_inconclusive() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let c = prometheus_check("errors", &url, "x", "<", 1.0);
        assert_eq!(c.verdict, Verdict::Inconclusive, "{c:?}");
        let c = prometheus_check("errors", "prom:9090", "x", "<", 1.0);
        assert_eq!(c.verdict, Verdict::Inconclusive, "{c:?}");
        assert!(c.detail.contains("must start with http://"), "{c:?}");
    }

    #[test]
    fn fail_wins_over_inconclusive() {
        let p = check("a", Verdict::Pass, "");
        let i = check("b", Verdict::Inconclusive, "");
        let f = check("c", Verdict::Fail, "");
        assert_eq!(verdict_of(std::slice::from_ref(&p)), Verdict::Pass);
        assert_eq!(verdict_of(&[p.clone(), i.clone()]), Verdict::Inconclusive);
        assert_eq!(verdict_of(&[i, f, p]), Verdict::Fail);
    }

    #[test]
    fn soak_counts_from_the_canary_end() {
        let mut config = Config::default();
        config.gate.min_soak_secs = 3600;
        let full = |c: &Config| soak_decision(&c.gate, None, None);
        let mut record = Record::new("pkg", "1.0-1", "1.0", "abc");
        let (c, _) = soak(&full(&config), &record);
        assert_eq!(c.verdict, Verdict::Fail);
        let ago = (chrono::Utc::now() - chrono::Duration::seconds(600))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        record
            .steps
            .push(ledger::Step::done(StepKind::Canary, &ago, &ago, ""));
        let (c, left) = soak(&full(&config), &record);
        assert_eq!(c.verdict, Verdict::Inconclusive);
        assert!((2990..=3000).contains(&left), "{left}");
        config.gate.min_soak_secs = 60;
        assert_eq!(soak(&full(&config), &record).0.verdict, Verdict::Pass);
    }

    fn figures(exercised: u64, changed: u64) -> CoverageFigures {
        CoverageFigures {
            covered: 120,
            statements: 168,
            changed_exercised: Some(exercised),
            changed: Some(changed),
            ..CoverageFigures::default()
        }
    }

    fn syncs(count: f64) -> std::result::Result<Evidence, String> {
        Ok(Evidence {
            name: "successful syncs".into(),
            count,
            threshold: 10.0,
        })
    }

    #[test]
    fn the_floor_applies_only_on_both_kinds_of_evidence() {
        let mut gate = Gate {
            evidence_floor_secs: Some(3600),
            ..Gate::default()
        };
        let both = soak_decision(&gate, Some(&figures(42, 42)), Some(&syncs(17.0)));
        assert_eq!(both.secs, 3600);
        assert!(both.shortened);
        assert_eq!(
            both.reason,
            "42 of 42 changed lines exercised by verify, 17 successful syncs on the canaries: \
             the 1 h floor applies"
        );

        let low_coverage = soak_decision(&gate, Some(&figures(40, 42)), Some(&syncs(17.0)));
        assert_eq!(low_coverage.secs, 86400);
        assert!(low_coverage
            .reason
            .contains("40 of 42 changed lines exercised by verify, below"));

        let quiet = soak_decision(&gate, Some(&figures(42, 42)), Some(&syncs(3.0)));
        assert!(!quiet.shortened);
        assert!(quiet
            .reason
            .contains("3 successful syncs on the canaries, below 10"));

        let no_check = soak_decision(&gate, Some(&figures(42, 42)), None);
        assert!(no_check.reason.contains("no evidence check in gate.checks"));

        let broken = soak_decision(
            &gate,
            Some(&figures(42, 42)),
            Some(&Err("canary1 printed no number: oops".into())),
        );
        assert!(
            broken.reason.contains("canary1 printed no number"),
            "{broken:?}"
        );

        let not_python = CoverageFigures {
            note: "mytool 1.0 installs no Python module".into(),
            ..CoverageFigures::default()
        };
        let d = soak_decision(&gate, Some(&not_python), Some(&syncs(17.0)));
        assert!(!d.shortened);
        assert!(
            d.reason.contains("no change coverage from verify: mytool"),
            "{d:?}"
        );
        assert!(soak_decision(&gate, None, Some(&syncs(17.0)))
            .reason
            .contains("no coverage figures"));

        // A share below 1.0 lets a few unexercised lines through.
        gate.change_coverage_min = 0.9;
        assert!(soak_decision(&gate, Some(&figures(40, 42)), Some(&syncs(17.0))).shortened);
        // Nothing changed in the tool's code: nothing left unexercised.
        assert!(soak_decision(&gate, Some(&figures(0, 0)), Some(&syncs(17.0))).shortened);

        gate.evidence_floor_secs = None;
        let off = soak_decision(&gate, Some(&figures(42, 42)), Some(&syncs(17.0)));
        assert_eq!(off.secs, 86400);
        assert!(off.reason.contains("no gate.evidence_floor_secs"));
    }

    #[test]
    fn an_evidence_command_must_print_a_number() {
        let answers = BTreeMap::from([
            ("canary1".to_string(), (0, "scanning\n12\n".to_string())),
            ("canary2".to_string(), (0, "5".to_string())),
            ("canary3".to_string(), (0, "no deploys found".to_string())),
            ("canary4".to_string(), (2, "find: bad option".to_string())),
        ]);
        let (counts, failed) = evidence_counts(&answers);
        assert_eq!(counts, vec![12.0, 5.0]);
        assert_eq!(
            failed,
            vec![
                "canary3 printed no number: no deploys found",
                "canary4 exited 2: find: bad option"
            ]
        );
    }
}
