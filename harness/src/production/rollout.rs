//! Production rollouts through the tools operators already use: `debdeploy`
//! (Wikimedia's, over cumin) or plain `cumin` running apt-get. Owns the
//! commands (the debdeploy update spec, the cumin calls), reading their
//! output, and the check that follows every rollout: the installed version
//! of the package on every host, asked of dpkg through cumin. Neither tool's
//! exit code is trusted: debdeploy exits 0 when hosts failed.
//!
//! Every command is one shell command line run on the rollout (cumin) host
//! through `rollout.command_prefix`, which gets the line as its last
//! argument: `["ssh", "root@cumin1001.example.org"]` in production, `["docker",
//! "exec", "-i", "<container>", "sh", "-c"]` on the testbed, `["sudo", "sh",
//! "-c"]` on the cumin host itself; an empty prefix runs `sh -c` here.
//!
//! debdeploy does not run `apt-get update`, and a host whose package lists
//! do not know the new version says "already up-to-date". So before every
//! debdeploy call the adapter runs `apt-get -q update` on the same hosts
//! through cumin (as operators do by hand), and a host where that failed is
//! named in the error if its version is then wrong.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::{Config, RolloutTool};
pub use crate::ledger::HostResult;
use crate::support::debian;
use crate::support::docker::ExecOutput;
use crate::support::process;
use crate::support::progress::Progress;

/// Upper bound on one query (version check, host list, gate command).
const QUERY_TIMEOUT: Duration = Duration::from_secs(300);
/// Upper bound on one deploy call: `rollout.timeout_secs`.
fn deploy_timeout(config: &Config) -> Duration {
    Duration::from_secs(config.rollout.timeout_secs)
}

/// Where the txt output of cumin starts.
const CUMIN_TXT_SEPARATOR: &str = "_____FORMATTED_OUTPUT_____";
const SPEC_DELIMITER: &str = "RELEASE_HARNESS_SPEC";

/// The result of one deploy call: one entry per host that was meant to
/// change, whatever the tool claimed.
#[derive(Debug, Clone)]
pub struct DeployReport {
    pub version: String,
    pub tool_exit: i64,
    pub hosts: Vec<HostResult>,
    /// Problems not tied to one host (apt-get update failing, a cumin error).
    pub notes: Vec<String>,
    /// The tool's output, for logs.
    pub output: String,
}

impl DeployReport {
    pub fn failed(&self) -> Vec<&HostResult> {
        self.hosts.iter().filter(|h| !h.ok).collect()
    }

    /// One line per failed host: what the tool said and what dpkg says.
    pub fn failure_summary(&self) -> String {
        let mut out = String::new();
        for h in self.failed() {
            out.push_str(&format!(
                "  {}: expected {}, dpkg says {}; the rollout tool reported: {}\n",
                h.host,
                self.version,
                h.installed.as_deref().unwrap_or("nothing (no answer)"),
                h.reported
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }
}

/// Runs one shell command line on the rollout host through
/// `rollout.command_prefix`, bounded by `timeout`.
pub async fn run_on_rollout_host(
    config: &Config,
    command_line: &str,
    timeout: Duration,
) -> Result<ExecOutput> {
    let prefix = &config.rollout.command_prefix;
    let (program, args): (&str, Vec<&str>) = match prefix.split_first() {
        Some((p, rest)) => (p, rest.iter().map(String::as_str).collect()),
        None => ("sh", vec!["-c"]),
    };
    let command = process::cmd(program, args.iter().copied().chain([command_line]))
        // `docker exec -i` and ssh would read the harness's own stdin.
        .with(|e| e.stdin_null());
    let output = command
        .output_within_async(timeout)
        .await
        .with_context(|| {
            format!(
                "starting `{program}` (rollout.command_prefix in {} is {:?}); fix the prefix \
                 or install {program}",
                config.path.display(),
                prefix
            )
        })?;
    let Some(output) = output else {
        bail!(
            "`{}` did not finish within {}s on the rollout host (a deploy is bounded by \
             rollout.timeout_secs in {}, a query by {}s); a host may hang (neither debdeploy \
             nor cumin bound their calls): look at the hosts, then run again",
            first_line(command_line),
            timeout.as_secs(),
            config.path.display(),
            QUERY_TIMEOUT.as_secs()
        );
    };
    Ok(ExecOutput {
        code: output.status.code().map(i64::from).unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Quotes one word for a POSIX shell. A word with a NUL byte, which no
/// shell can take, is left as it is: the command line holding it then fails
/// to start, naming it.
pub fn shell_quote(word: &str) -> String {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| word.to_string())
}

/// The rollout tool's name, as messages say it.
pub fn tool_name(config: &Config) -> &'static str {
    match config.rollout.tool {
        RolloutTool::Debdeploy => "debdeploy",
        RolloutTool::Cumin => "cumin",
    }
}

/// The cumin query of a list of hosts, for the direct backend.
pub fn query_for_hosts(hosts: &[String]) -> String {
    format!("D{{{}}}", hosts.join(","))
}

fn cumin(config: &Config) -> String {
    format!("cumin -c {}", shell_quote(&config.rollout.cumin_config))
}

/// The hosts a cumin query (or `A:alias`) names, as cumin resolves it.
pub async fn resolve(config: &Config, query: &str) -> Result<Vec<String>> {
    let line = format!("{} --dry-run {} true", cumin(config), shell_quote(query));
    let out = run_on_rollout_host(config, &line, QUERY_TIMEOUT).await?;
    let stdout = console::strip_ansi_codes(&out.stdout);
    if !out.ok() || stdout.trim().is_empty() {
        bail!(
            "cumin cannot resolve the query `{query}` (exit {}): {}\n  fix: rollout.canaries / \
             rollout.fleet in {} must be a cumin query or an alias (`A:name`) of {}'s \
             aliases.yaml",
            out.code,
            console::strip_ansi_codes(&out.tail(5)).trim(),
            config.path.display(),
            config.rollout.cumin_config
        );
    }
    let first = stdout.lines().next().unwrap_or("").trim();
    expand_nodeset(first).with_context(|| format!("reading cumin's hosts for `{query}`"))
}

/// The installed version of the release on every host of `query`, as dpkg
/// says through cumin (`host: version`): the one version of the source's
/// binaries the host carries (`debian::installed_version`), else what is
/// wrong. A host that did not answer is missing.
pub async fn installed_versions(config: &Config, query: &str) -> Result<BTreeMap<String, String>> {
    let line = version_check_command(config, query);
    let out = run_on_rollout_host(config, &line, QUERY_TIMEOUT).await?;
    Ok(parse_cumin_txt(&out.stdout)
        .into_iter()
        .map(|(host, lines)| (host, debian::installed_version(&lines.join("\n"), &[])))
        .collect())
}

pub fn version_check_command(config: &Config, query: &str) -> String {
    let dpkg = debian::installed_query(&config.binary_names());
    format!(
        "{} --force --no-progress -o txt {} {}",
        cumin(config),
        shell_quote(query),
        shell_quote(&dpkg)
    )
}

/// Runs `command` on every host of `query` through cumin; returns each
/// answering host's exit code and last lines of output.
pub async fn run_command(
    config: &Config,
    query: &str,
    command: &str,
) -> Result<BTreeMap<String, (i32, String)>> {
    let wrapped = format!(
        "out=$( ({command}) 2>&1 ); rc=$?; printf '%s\\n' \"$out\" | tail -n 5; \
         echo release-harness-exit=$rc"
    );
    let line = format!(
        "{} --force --no-progress -o txt {} {}",
        cumin(config),
        shell_quote(query),
        shell_quote(&wrapped)
    );
    let out = run_on_rollout_host(config, &line, QUERY_TIMEOUT).await?;
    let mut results = BTreeMap::new();
    for (host, mut lines) in parse_cumin_txt(&out.stdout) {
        let Some(code) = lines
            .last()
            .and_then(|l| l.strip_prefix("release-harness-exit="))
            .and_then(|c| c.trim().parse::<i32>().ok())
        else {
            continue;
        };
        lines.pop();
        results.insert(host, (code, lines.join("\n")));
    }
    Ok(results)
}

/// debdeploy's update spec (`debdeploy deploy -u SPEC`).
#[derive(Debug, Serialize)]
struct UpdateSpec<'a> {
    source: &'a str,
    comment: String,
    update_type: &'a str,
    /// The version for each distro codename (`bookworm: 0.2.0-1`).
    fixes: BTreeMap<&'a str, &'a str>,
    libraries: Vec<String>,
    downgrade: bool,
}

/// debdeploy's update spec as YAML. The version is always quoted: debdeploy
/// reads YAML 1.1 (PyYAML), where a plain `1.10` is the number 1.1 and a
/// plain `1:2.3` (an epoch) the number 62.3.
pub fn update_spec(config: &Config, version: &str, downgrade: bool) -> Result<String> {
    check_version(version)?;
    let package = config.package_name();
    let comment = if downgrade {
        format!("{package} rollback to {version} (release-harness)")
    } else {
        format!("{package} {version} (release-harness)")
    };
    let spec = UpdateSpec {
        source: package,
        comment,
        update_type: &config.rollout.update_type,
        fixes: BTreeMap::from([(config.rollout.distro.as_str(), version)]),
        libraries: Vec::new(),
        downgrade,
    };
    let yaml = serde_norway::to_string(&spec).context("writing debdeploy's update spec")?;
    // serde_norway quotes what YAML 1.2 would misread (`1.10`), not what
    // YAML 1.1 also would (`1:2.3`); `check_version` leaves no quote in it.
    let distro = &config.rollout.distro;
    Ok(yaml.replacen(
        &format!("\n  {distro}: {version}\n"),
        &format!("\n  {distro}: '{version}'\n"),
        1,
    ))
}

fn check_version(version: &str) -> Result<()> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~:-".contains(c))
    {
        bail!("`{version}` is not a Debian version (letters, digits and .+~:- only)");
    }
    Ok(())
}

/// `-s alias` for `A:alias`, `-Q 'query'` otherwise.
fn debdeploy_target(query: &str) -> String {
    match query.strip_prefix("A:") {
        Some(alias) if !alias.contains(char::is_whitespace) => {
            format!("-s {}", shell_quote(alias))
        }
        _ => format!("-Q {}", shell_quote(query)),
    }
}

/// The command lines a deploy of `version` to `query` runs on the rollout
/// host, in order.
pub fn deploy_commands(
    config: &Config,
    query: &str,
    version: &str,
    downgrade: bool,
) -> Result<Vec<String>> {
    check_version(version)?;
    Ok(match config.rollout.tool {
        RolloutTool::Debdeploy => {
            let spec = update_spec(config, version, downgrade)?;
            let update =
                "out=$(apt-get -q update 2>&1) || { printf '%s\\n' \"$out\" | tail -n 3; exit 1; }";
            vec![
                format!(
                    "{} --force --no-progress -o txt {} {}",
                    cumin(config),
                    shell_quote(query),
                    shell_quote(update)
                ),
                format!(
                    "spec=$(mktemp /tmp/release-harness-XXXXXX.yaml) && cat > \"$spec\" <<'{SPEC_DELIMITER}'\n\
                     {spec}{SPEC_DELIMITER}\n\
                     debdeploy deploy -u \"$spec\" {}; rc=$?; rm -f \"$spec\"; exit $rc",
                    debdeploy_target(query)
                ),
            ]
        }
        RolloutTool::Cumin => {
            // As debdeploy's client: the binaries of the source a host has
            // installed are upgraded, and a host with none of them fails.
            let allow = if downgrade { " --allow-downgrades" } else { "" };
            let binaries = config.binary_names();
            let install = format!(
                "pins=$({} | awk '$1 ~ /^.i/ {{ print $2 \"={version}\" }}'); \
                 [ -n \"$pins\" ] || {{ echo 'none of {} is installed'; exit 1; }}; \
                 apt-get -q update && apt-get -q -y{allow} -o DPkg::Options::=--force-confold \
                 install $pins",
                debian::installed_query(&binaries),
                binaries.join(", ")
            );
            vec![format!(
                "{} --force --no-progress -o txt -b {} {} {}",
                cumin(config),
                config.rollout.batch_size,
                shell_quote(query),
                shell_quote(&install)
            )]
        }
    })
}

/// What a deploy would run, for `--dry-run`: each command as the rollout host
/// gets it, behind the prefix.
pub fn describe(config: &Config, query: &str, version: &str, downgrade: bool) -> Result<String> {
    let prefix = if config.rollout.command_prefix.is_empty() {
        "sh -c".to_string()
    } else {
        config
            .rollout
            .command_prefix
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let tool = tool_name(config);
    let mut out = format!(
        "{tool} rollout of {} {version} to `{query}`{}, each command run through `{prefix}`:\n",
        config.package_name(),
        if downgrade { " (downgrade)" } else { "" },
    );
    for (i, c) in deploy_commands(config, query, version, downgrade)?
        .iter()
        .chain(std::iter::once(&version_check_command(config, query)))
        .enumerate()
    {
        out.push_str(&format!("  {}. ", i + 1));
        out.push_str(&c.replace('\n', "\n     "));
        out.push('\n');
    }
    out.push_str("  then every host of the query must report that version\n");
    Ok(out)
}

/// Deploys `version` to `hosts` (the hosts `query` names) and checks every
/// one of them. Hosts that failed are in the report, not an error: the
/// caller decides how many failures are too many.
pub async fn deploy(
    config: &Config,
    query: &str,
    hosts: &[String],
    version: &str,
    downgrade: bool,
    progress: &Progress,
) -> Result<DeployReport> {
    let started = Instant::now();
    let commands = deploy_commands(config, query, version, downgrade)?;
    let mut notes = Vec::new();
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    let output: String;
    let tool_exit: i64;
    match config.rollout.tool {
        RolloutTool::Debdeploy => {
            progress.info(&format!("apt-get update on {query}"));
            let update = run_on_rollout_host(config, &commands[0], QUERY_TIMEOUT).await?;
            for (host, lines) in parse_cumin_txt(&update.stdout) {
                if !lines.is_empty() {
                    notes.push(format!(
                        "apt-get update failed on {host}: {}",
                        lines.join(" / ")
                    ));
                }
            }
            progress.info(&format!("debdeploy deploy {version} to {query}"));
            let out = run_on_rollout_host(config, &commands[1], deploy_timeout(config)).await?;
            tool_exit = out.code;
            output = format!("{}{}", out.stdout, out.stderr);
            if !out.ok() {
                bail!(
                    "debdeploy refused the rollout of {version} to `{query}` (exit {}):\n{}\n  \
                     the update spec was:\n{}",
                    out.code,
                    indent(&output),
                    indent(&update_spec(config, version, downgrade)?)
                );
            }
            let parsed = parse_debdeploy_output(&out.stdout);
            reported = parsed.hosts;
            notes.extend(parsed.problems);
        }
        RolloutTool::Cumin => {
            progress.info(&format!("cumin apt-get install {version} on {query}"));
            let out = run_on_rollout_host(config, &commands[0], deploy_timeout(config)).await?;
            tool_exit = out.code;
            output = format!("{}{}", out.stdout, out.stderr);
            for (host, lines) in parse_cumin_txt(&out.stdout) {
                let tail: Vec<&str> = lines
                    .iter()
                    .rev()
                    .take(2)
                    .rev()
                    .map(String::as_str)
                    .collect();
                reported.insert(host, tail.join(" / "));
            }
            if !out.ok() {
                notes.push(format!(
                    "cumin exited with {}: {}",
                    out.code,
                    console::strip_ansi_codes(&out.stderr)
                        .lines()
                        .filter(|l| l.contains("failed") || l.contains("Aborting"))
                        .collect::<Vec<_>>()
                        .join(" / ")
                ));
            }
        }
    }
    progress.info(&format!("checking the installed version on {query}"));
    let installed = installed_versions(config, query).await?;
    let hosts = hosts
        .iter()
        .map(|host| {
            let now = installed.get(host).cloned();
            HostResult {
                host: host.clone(),
                reported: reported
                    .get(host)
                    .cloned()
                    .unwrap_or_else(|| "nothing about this host".into()),
                ok: now.as_deref() == Some(version),
                installed: now,
            }
        })
        .collect();
    let report = DeployReport {
        version: version.to_string(),
        tool_exit,
        hosts,
        notes,
        output,
    };
    progress.info(&format!(
        "{} of {} hosts on {version} ({:.1}s)",
        report.hosts.len() - report.failed().len(),
        report.hosts.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(report)
}

/// What debdeploy's output says, per host, and the problems it names that
/// are not one host's answer.
#[derive(Debug, Default, PartialEq)]
pub struct DebdeployOutput {
    pub hosts: BTreeMap<String, String>,
    pub problems: Vec<String>,
}

/// Reads `debdeploy deploy` output: a header line (`P was updated: A -> B`,
/// `These hosts are already up-to-date:`, ...) followed by indented
/// `NODESET (N hosts)` lines; `Could not decode JSON response for` and
/// `The following hosts were unreachable:` followed by unindented node sets.
pub fn parse_debdeploy_output(text: &str) -> DebdeployOutput {
    let mut parsed = DebdeployOutput::default();
    let mut header: Option<String> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with("Could not decode JSON response for") {
            let set = lines.next().unwrap_or("").trim().to_string();
            let why = lines.next().unwrap_or("").trim().to_string();
            for host in expand_nodeset(&set).unwrap_or_else(|_| vec![set.clone()]) {
                parsed
                    .hosts
                    .insert(host, format!("could not decode its JSON answer ({why})"));
            }
            parsed
                .problems
                .push(format!("debdeploy could not decode the answer of {set}"));
            header = None;
            continue;
        }
        if trimmed.starts_with("The following hosts were unreachable") {
            while let Some(next) = lines.peek() {
                let host = next.trim();
                if host.is_empty() {
                    break;
                }
                for h in expand_nodeset(host).unwrap_or_else(|_| vec![host.to_string()]) {
                    parsed.hosts.insert(h, "unreachable".into());
                }
                parsed.problems.push(format!("{host} was unreachable"));
                lines.next();
            }
            header = None;
            continue;
        }
        let indented = line.starts_with(' ');
        if indented {
            if let Some(h) = &header {
                let set = trimmed.rsplit_once(" (").map(|(s, _)| s).unwrap_or(trimmed);
                for host in expand_nodeset(set).unwrap_or_else(|_| vec![set.to_string()]) {
                    parsed.hosts.insert(host, h.clone());
                }
            }
            continue;
        }
        header = if let Some((_, change)) = trimmed.split_once(" was updated: ") {
            Some(format!("was updated: {change}"))
        } else if trimmed.starts_with("These hosts are already up-to-date") {
            Some("already up-to-date (nothing changed)".into())
        } else if trimmed.contains("isn't installed on these hosts") {
            Some("the package isn't installed".into())
        } else if trimmed.contains("doesn't apply to the OS") {
            Some("the spec doesn't apply to its OS".into())
        } else if trimmed.starts_with("Unspecified") || trimmed.starts_with("Failed to read") {
            parsed.problems.push(trimmed.to_string());
            Some(trimmed.trim_end_matches(':').to_string())
        } else {
            None
        };
    }
    parsed
}

/// cumin's `-o txt` output: `host: line` after the separator, in order.
pub fn parse_cumin_txt(stdout: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let body = match stdout.split_once(CUMIN_TXT_SEPARATOR) {
        Some((_, after)) => after,
        None => stdout,
    };
    for line in body.lines() {
        let line = console::strip_ansi_codes(line);
        let Some((host, text)) = line.split_once(':') else {
            continue;
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            continue;
        }
        out.entry(host.to_string())
            .or_default()
            .push(text.strip_prefix(' ').unwrap_or(text).to_string());
    }
    // A host that printed nothing still answered.
    out
}

/// Expands a ClusterShell node set (`app[1-3,7],canary1`, `db[01-02]-a`)
/// into host names.
pub fn expand_nodeset(set: &str) -> Result<Vec<String>> {
    let mut hosts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let set = set.trim();
    for (i, c) in set.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                hosts.extend(expand_one(&set[start..i])?);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        bail!("unbalanced brackets in node set `{set}`");
    }
    hosts.extend(expand_one(&set[start..])?);
    Ok(hosts)
}

fn expand_one(pattern: &str) -> Result<Vec<String>> {
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Ok(Vec::new());
    }
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_string()]);
    };
    let close = open
        + pattern[open..]
            .find(']')
            .with_context(|| format!("no `]` in node set `{pattern}`"))?;
    let (head, ranges, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let tails = expand_one(tail)?;
    let tails = if tails.is_empty() {
        vec![String::new()]
    } else {
        tails
    };
    let mut out = Vec::new();
    for range in ranges.split(',') {
        let (from, to) = range.split_once('-').unwrap_or((range, range));
        let width = from.len();
        let a: u64 = from
            .parse()
            .with_context(|| format!("`{range}` in node set `{pattern}` is not a range"))?;
        let b: u64 = to
            .parse()
            .with_context(|| format!("`{range}` in node set `{pattern}` is not a range"))?;
        for n in a..=b {
            for t in &tails {
                out.push(format!("{head}{n:0width$}{t}"));
            }
        }
    }
    Ok(out)
}

fn first_line(s: &str) -> &str {
    let line = s.trim().lines().next().unwrap_or("");
    &line[..line.len().min(120)]
}

fn indent(s: &str) -> String {
    s.trim_end()
        .lines()
        .map(|l| format!("    {l}\n"))
        .collect::<String>()
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let mut c = Config::parse(
            &format!("[package]\nname = \"minideploy\"\n{extra}"),
            Path::new("release.toml"),
        )
        .unwrap();
        c.rollout.command_prefix = vec!["ssh".into(), "cumin1".into()];
        c
    }

    #[test]
    fn spec_quotes_the_version() {
        for version in ["1.10", "1:2.3", "0.2.0-1"] {
            let spec = update_spec(&config(""), version, false).unwrap();
            assert!(
                spec.contains(&format!("\n  bookworm: '{version}'\n")),
                "{spec}"
            );
            let read: serde_norway::Value = serde_norway::from_str(&spec).unwrap();
            assert_eq!(read["fixes"]["bookworm"].as_str(), Some(version), "{spec}");
            assert_eq!(read["downgrade"].as_bool(), Some(false), "{spec}");
            assert_eq!(read["update_type"].as_str(), Some("tool"), "{spec}");
            assert_eq!(read["source"].as_str(), Some("minideploy"), "{spec}");
            assert!(spec.contains("libraries: []\n"), "{spec}");
        }
        let spec = update_spec(&config(""), "0.1.0-1", true).unwrap();
        assert!(spec.contains("downgrade: true\n"), "{spec}");
        assert!(
            spec.contains("comment: minideploy rollback to 0.1.0-1"),
            "{spec}"
        );
        assert!(update_spec(&config(""), "1.0; rm -rf /", false).is_err());
    }

    #[test]
    fn debdeploy_takes_an_alias_or_a_query() {
        let c = config("");
        let cmds = deploy_commands(&c, "A:canaries", "0.2.0-1", false).unwrap();
        assert!(cmds[0].contains("apt-get -q update"), "{}", cmds[0]);
        assert!(
            cmds[1].contains("debdeploy deploy -u \"$spec\" -s canaries;"),
            "{}",
            cmds[1]
        );
        let cmds = deploy_commands(&c, "D{app1,app2}", "0.2.0-1", false).unwrap();
        assert!(cmds[1].contains("-Q 'D{app1,app2}'"), "{}", cmds[1]);
    }

    #[test]
    fn cumin_tool_allows_downgrades_only_on_rollback() {
        let c = config("[rollout]\ntool = \"cumin\"\nbatch_size = 3\n");
        let up = &deploy_commands(&c, "A:fleet", "0.2.0-1", false).unwrap()[0];
        assert!(up.contains("-b 3 A:fleet"), "{up}");
        // What each host has of the source's binaries, pinned to the version.
        let remote = shlex::split(up).unwrap().pop().unwrap();
        assert!(remote.contains("' minideploy 2>&1"), "{remote}");
        assert!(remote.contains(r#"print $2 "=0.2.0-1""#), "{remote}");
        assert!(remote.ends_with("install $pins"), "{remote}");
        assert!(!up.contains("--allow-downgrades"));
        let down = &deploy_commands(&c, "A:fleet", "0.1.0-1", true).unwrap()[0];
        assert!(down.contains("--allow-downgrades"), "{down}");
    }

    #[test]
    fn describe_shows_prefix_commands_and_check() {
        let text = describe(&config(""), "A:canaries", "0.2.0-1", false).unwrap();
        assert!(text.contains("through `ssh cumin1`"), "{text}");
        assert!(text.contains("dpkg-query -W -f="), "{text}");
        assert!(text.contains("bookworm: '0.2.0-1'"), "{text}");
    }

    #[test]
    fn version_check_quotes_for_the_remote_shell() {
        let line = version_check_command(&config(""), "A:fleet");
        assert_eq!(
            shlex::split(&line).unwrap(),
            [
                "cumin",
                "-c",
                "/etc/cumin/config.yaml",
                "--force",
                "--no-progress",
                "-o",
                "txt",
                "A:fleet",
                "dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' minideploy 2>&1"
            ],
            "{line}"
        );
    }

    #[test]
    fn reads_debdeploy_output() {
        let text = "Rolling out h2demo:\nNon-daemon update, no service restart needed\n\n\
                    h2demo was updated: 1.0-1 -> 1.1-1\n  app[1-2] (2 hosts)\n\n\
                    These hosts are already up-to-date:\n  canary1 (1 hosts)\n\n\
                    The package to be updated isn't installed on these hosts:\n  app3 (1 hosts)\n\n\
                    Could not decode JSON response for\napp4\nExpecting value: line 1 column 1\n\n\
                    The following hosts were unreachable:\napp5\n";
        let parsed = parse_debdeploy_output(text);
        assert_eq!(parsed.hosts["app1"], "was updated: 1.0-1 -> 1.1-1");
        assert_eq!(parsed.hosts["app2"], "was updated: 1.0-1 -> 1.1-1");
        assert_eq!(
            parsed.hosts["canary1"],
            "already up-to-date (nothing changed)"
        );
        assert_eq!(parsed.hosts["app3"], "the package isn't installed");
        assert!(parsed.hosts["app4"].starts_with("could not decode"));
        assert_eq!(parsed.hosts["app5"], "unreachable");
        assert_eq!(parsed.problems.len(), 2, "{:?}", parsed.problems);
    }

    #[test]
    fn reads_cumin_txt() {
        let out = "\x1b[36mjunk\x1b[39m\n_____FORMATTED_OUTPUT_____\napp1: 0.1.0-1\napp2: dpkg-query: no packages found matching x\n";
        let parsed = parse_cumin_txt(out);
        assert_eq!(parsed["app1"], vec!["0.1.0-1"]);
        assert_eq!(
            parsed["app2"],
            vec!["dpkg-query: no packages found matching x"]
        );
        assert_eq!(parsed.len(), 2);
    }

    #[test]
    fn expands_node_sets() {
        assert_eq!(
            expand_nodeset("app[1-3],canary[1-2]").unwrap(),
            vec!["app1", "app2", "app3", "canary1", "canary2"]
        );
        assert_eq!(
            expand_nodeset("db[08-10,12]-a.eqiad").unwrap(),
            vec![
                "db08-a.eqiad",
                "db09-a.eqiad",
                "db10-a.eqiad",
                "db12-a.eqiad"
            ]
        );
        assert_eq!(expand_nodeset("r[1-2]h[1-2]").unwrap().len(), 4);
        assert_eq!(expand_nodeset("solo").unwrap(), vec!["solo"]);
        assert!(expand_nodeset("bad[1-").is_err());
    }

    fn here(prefix: &[&str]) -> Config {
        let mut c = config("");
        c.rollout.command_prefix = prefix.iter().map(|w| w.to_string()).collect();
        c
    }

    #[tokio::test]
    async fn runs_through_the_prefix_within_the_timeout() {
        let second = Duration::from_secs(5);
        let out = run_on_rollout_host(&here(&[]), "echo hi; cat; exit 3", second)
            .await
            .unwrap();
        assert_eq!((out.code, out.stdout.as_str()), (3, "hi\n"), "{out:?}");
        let out = run_on_rollout_host(&here(&["sh", "-c"]), "echo $0", second)
            .await
            .unwrap();
        assert_eq!(out.stdout, "sh\n");
        let err = run_on_rollout_host(&here(&[]), "sleep 5", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`sleep 5` did not finish within 0s on the rollout host"),
            "{err:#}"
        );
        let err = run_on_rollout_host(&here(&["no-such-rollout-prefix"]), "true", second)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("rollout.command_prefix in release.toml"),
            "{err:#}"
        );
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(shell_quote("A:fleet"), "A:fleet");
        for word in [
            "D{a,b}",
            "it's",
            "",
            "dpkg-query -W -f='${Version}' x",
            "a\"b\\c $HOME `id` *",
        ] {
            let line = format!("printf %s {}", shell_quote(word));
            let said = crate::support::process::cmd("sh", ["-c", &line])
                .read()
                .unwrap();
            assert_eq!(said, word, "{line}");
        }
    }
}
