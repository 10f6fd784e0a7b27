//! Shared by the integration tests: the Docker check (a clear failure, or an
//! explicit skip), fixtures in temporary repositories, and a lock that keeps
//! fleet-heavy tests from running at once on a small machine.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The engine for the running container test (see
/// `harness::support::testing`: a clear failure without one, None when
/// container tests are skipped on purpose).
pub async fn docker() -> Option<bollard::Docker> {
    let test = std::thread::current()
        .name()
        .unwrap_or("a container test")
        .to_string();
    harness::support::testing::engine(&test).await
}

/// One fleet-heavy test at a time in a test binary: the machine has 2 cores.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A fixture materialized as a git repository with a previous release tag.
pub fn fixture_repo(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = harness::release::fixture::materialize(name, &dir.path().join(name)).unwrap();
    (dir, repo)
}

pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Everything that tells whether a repository changed: HEAD, refs, status.
pub fn repo_state(repo: &Path) -> String {
    format!(
        "{}\n{}\n{}",
        git(repo, &["rev-parse", "HEAD"]),
        git(repo, &["show-ref"]),
        git(repo, &["status", "--porcelain", "--ignored"])
    )
}

/// Containers, networks and images (a prepared fleet's snapshot) that carry
/// the harness's labels and belong to this run (other runs on a shared engine
/// are not ours to count).
pub async fn leftovers(docker: &bollard::Docker, run_id: &str) -> usize {
    let label = format!("{}={run_id}", harness::support::docker::LABEL_RUN);
    let count = harness::support::docker::count_labelled(docker, &label)
        .await
        .unwrap();
    count.containers + count.networks + count.images
}

/// Images carrying `label` (`key=value`).
pub async fn labelled_images(docker: &bollard::Docker, label: &str) -> usize {
    harness::support::docker::count_labelled(docker, label)
        .await
        .unwrap()
        .images
}

/// (containers, networks) carrying `label` (`key=value`).
pub async fn labelled(docker: &bollard::Docker, label: &str) -> (usize, usize) {
    let count = harness::support::docker::count_labelled(docker, label)
        .await
        .unwrap();
    (count.containers, count.networks)
}

/// Redacts what changes from run to run (durations, commit ids, run ids,
/// addresses, timestamps) so a real report can be a snapshot.
/// A verify summary without the phases each scenario's line ends with
/// (`  (fleet start 2.1s, install ...)`): which phases a scenario has is
/// checked on their own, the snapshot keeps to what it found.
pub fn without_phases(summary: &str) -> String {
    summary
        .lines()
        .map(|l| format!("{}\n", l.split_once("  (").map_or(l, |(line, _)| line)))
        .collect()
}

pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(&redact_word(word));
        word.clear();
    };
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() || ch == '.' || ch == ':' || ch == '-' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    // Column padding depends on the redacted widths: fold inner runs of spaces.
    out.lines()
        .map(|line| {
            let body = line.trim_start();
            let indent = &line[..line.len() - body.len()];
            let folded = body
                .split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>();
            format!("{indent}{}", folded.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn redact_word(w: &str) -> String {
    let trimmed = w.trim_end_matches(['.', ':']);
    let tail = &w[trimmed.len()..];
    let is_hex = trimmed.len() >= 7
        && trimmed.chars().all(|c| c.is_ascii_hexdigit())
        && trimmed.chars().any(|c| c.is_ascii_digit());
    let is_duration = {
        let t = trimmed.strip_suffix('s').unwrap_or("");
        !t.is_empty()
            && t.chars().next().unwrap().is_ascii_digit()
            && t.chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == 'm')
    };
    let is_address = trimmed.split('.').count() == 4
        && trimmed
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let is_timestamp = trimmed.len() >= 19
        && trimmed.as_bytes()[4] == b'-'
        && trimmed.contains('T')
        && trimmed.chars().next().unwrap().is_ascii_digit();
    if is_hex {
        format!("[id]{tail}")
    } else if is_duration {
        format!("[time]{tail}")
    } else if is_address {
        format!("[addr]{tail}")
    } else if is_timestamp {
        format!("[timestamp]{tail}")
    } else {
        w.to_string()
    }
}

/// A running `release-harness` started as CI would start it, read up to a
/// line of its stderr: the child, the owner label of what it makes, the rest
/// of its stderr, and what it printed so far.
pub type Started = (
    std::process::Child,
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    String,
);

/// A dry run of the fixture's fresh-install scenario, started as CI would
/// start it, and read until its fleet is up: the point at which the tests
/// cut it off.
pub fn release_until_fleet_up(out: &Path) -> Started {
    release_until(out, "containers up")
}

/// Like `release_until_fleet_up`, read until a line containing `marker`.
pub fn release_until(out: &Path, marker: &str) -> Started {
    let mut command = Command::new(env!("CARGO_BIN_EXE_release-harness"));
    command
        .args(["release", "--dry-run", "--fixture", "minideploy", "--out"])
        .arg(out)
        .args(["--scenario", "fresh-install"]);
    run_until(command, marker)
}

/// Starts `command` (the CLI, with `CI=true` for plain lines) and reads its
/// stderr until a line contains `marker`; fails with what it printed if it
/// ends first or takes over 15 minutes (a cold machine builds its images).
pub fn run_until(mut command: Command, marker: &str) -> Started {
    use std::io::BufRead;
    let mut child = command
        .env("CI", "true")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let owner = format!(
        "{}={}:{}",
        harness::support::docker::LABEL_OWNER,
        harness::support::docker::owner().split(':').next().unwrap(),
        child.id()
    );
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(900);
    loop {
        let Some(line) = lines.next() else {
            let _ = child.kill();
            panic!("it ended before printing `{marker}`:\n{seen}");
        };
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no `{marker}` after 15 min:\n{seen}"
        );
    }
    (child, owner, lines, seen)
}

/// Sends SIGTERM to `child` (as a cancelled CI job does) and waits for it:
/// its exit code, the rest of its stderr, and how long it took to end.
pub fn terminate(
    child: &mut std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
) -> (Option<i32>, String, std::time::Duration) {
    let sent = std::time::Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -TERM {}", child.id());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    (status.code(), rest.join("\n"), sent.elapsed())
}

/// A bare repository beside `repo`, added as its `origin` and holding its
/// branch and tags: a real (not dry) release pushes there.
pub fn bare_origin(dir: &Path, repo: &Path) -> PathBuf {
    let origin = dir.join("origin.git");
    git(dir, &["init", "-q", "--bare", origin.to_str().unwrap()]);
    git(repo, &["remote", "add", "origin", origin.to_str().unwrap()]);
    git(repo, &["push", "-q", "origin", "main", "--tags"]);
    origin
}

/// A production testbed (cumin host, 2 canaries, 3 app hosts, real cumin
/// and the debdeploy stand-in) whose canaries run release `testbed::RELEASE_TAG` of a
/// fixture repository: the ledger holds the release and its canary step,
/// as after `release`. The testbed's containers go when it is dropped.
pub struct Production {
    pub tb: harness::production::testbed::Testbed,
    pub repo: harness::support::git::Repo,
    pub progress: harness::support::progress::Progress,
    _dir: tempfile::TempDir,
}

/// Starts `Production`, with `tune` applied to the fixture's configuration
/// first.
pub async fn production_on_canaries(
    docker: &bollard::Docker,
    tune: impl FnOnce(&mut harness::config::Config),
) -> Production {
    let release = harness::production::testbed::Release::start(docker, "minideploy", tune)
        .await
        .unwrap();
    harness::production::canary(
        &release.repo,
        &release.tb.config,
        &release.facts,
        false,
        &release.progress,
    )
    .await
    .unwrap();
    Production {
        tb: release.tb,
        repo: release.repo,
        progress: release.progress,
        _dir: release.dir,
    }
}

impl Production {
    /// Writes the testbed's production settings into the project's
    /// release.toml, so the CLI run in the project reaches the testbed's
    /// cumin host as it would reach a production one.
    pub fn write_release_toml(&self) {
        let c = &self.tb.config;
        let path = self.repo.root.join("release.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[rollout]\ncommand_prefix = {:?}\ncanaries = {:?}\nfleet = {:?}\n\
             batch_size = {}\n\n[gate]\nmin_soak_secs = {}\n",
            c.rollout.command_prefix,
            c.rollout.canaries,
            c.rollout.fleet,
            c.rollout.batch_size,
            c.gate.min_soak_secs
        ));
        std::fs::write(&path, text).unwrap();
    }

    /// The release's ledger record.
    pub fn record(&self) -> harness::ledger::Record {
        harness::ledger::Ledger::open(&self.repo)
            .unwrap()
            .record(harness::production::testbed::RELEASE_TAG)
            .unwrap()
            .expect("a ledger record")
    }

    /// (batch number, outcome) of every batch step, in order.
    pub fn batches(&self) -> Vec<(usize, Option<harness::ledger::Outcome>)> {
        self.record()
            .steps
            .iter()
            .filter(|s| s.kind == harness::ledger::StepKind::Batch)
            .map(|s| (s.batch.unwrap(), s.outcome))
            .collect()
    }

    /// `docker pause` or `unpause` of a host's container: a frozen host.
    pub fn docker_on(&self, verb: &str, host: &str) {
        let container = &self.tb.fleet.host(host).unwrap().container;
        harness::support::process::cmd("docker", [verb, container.as_str()])
            .run()
            .unwrap();
    }
}
