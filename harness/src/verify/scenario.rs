//! The verify suite: the fleet's hosts are prepared once per run (users,
//! keys, repositories, the packages published, coverage instrumentation)
//! and snapshotted; each scenario then starts its own fleet of fresh
//! containers from that snapshot, puts the package versions it needs on the
//! hosts the way production would (apt from a repository), runs real syncs
//! from the deploy host, and checks every target. What a scenario found goes
//! into a `report::ScenarioResult`. Scenarios run `PARALLEL_SCENARIOS` at a
//! time, each on its own network; owns their scheduling and timing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bollard::Docker;

use crate::config::{Config, CustomScenario, Hosts, ScenarioKind};
use crate::support::docker::ExecOutput;
use crate::support::progress::{format_duration, Progress};
use crate::verify::coverage::{self, CoverageReport, Instrument, ScenarioCoverage};
use crate::verify::custom;
use crate::verify::fleet::{Fleet, Host, Launch, Size, Snapshot};
use crate::verify::report::{phases_line, Failure, Phase, ScenarioResult, VerifyReport};

/// One version of the release: every binary .deb its source built, and
/// their full Debian version.
#[derive(Debug, Clone)]
pub struct Debs {
    pub paths: Vec<PathBuf>,
    pub version: String,
}

impl Debs {
    /// Each .deb with its package (from the file name) and sha256.
    pub fn built(&self) -> Result<Vec<crate::support::debian::BuiltDeb>> {
        use sha2::Digest;
        self.paths
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                Ok(crate::support::debian::BuiltDeb {
                    package: crate::support::debian::package_of_deb_file(&name)
                        .unwrap_or(&name)
                        .to_string(),
                    path: p.clone(),
                    sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                })
            })
            .collect()
    }
}

pub struct VerifyInput<'a> {
    pub config: &'a Config,
    /// The fleet image (runtime dependencies preinstalled).
    pub image: &'a str,
    pub new: &'a Debs,
    /// The previous release, for upgrade, mixed-fleet and downgrade.
    pub previous: Option<&'a Debs>,
    pub run_id: &'a str,
    pub keep: bool,
    /// Only these scenarios (default: release.toml's list).
    pub only: &'a [String],
}

/// One scenario of a run: a preset, or one written in release.toml.
#[derive(Debug, Clone, Copy)]
pub enum Planned<'a> {
    Preset(ScenarioKind),
    Custom(&'a CustomScenario),
}

impl Planned<'_> {
    pub fn name(&self) -> &str {
        match self {
            Planned::Preset(kind) => kind.name(),
            Planned::Custom(c) => &c.name,
        }
    }

    pub fn needs_previous(&self) -> bool {
        match self {
            Planned::Preset(kind) => kind.needs_previous(),
            Planned::Custom(c) => c.needs_previous(),
        }
    }
}

/// What a run verifies: `only` those scenarios (presets or release.toml's
/// custom ones, by name), or release.toml's presets followed by its custom
/// scenarios. An unknown name is refused with the names there are.
pub fn plan<'a>(config: &'a Config, only: &[String]) -> Result<Vec<Planned<'a>>> {
    if only.is_empty() {
        let presets = config.verify.scenarios.iter().copied().map(Planned::Preset);
        return Ok(presets
            .chain(config.verify.custom.iter().map(Planned::Custom))
            .collect());
    }
    only.iter()
        .map(|name| {
            if let Some(c) = config.verify.custom.iter().find(|c| c.name == *name) {
                return Ok(Planned::Custom(c));
            }
            if let Some(kind) = ScenarioKind::ALL.iter().find(|k| k.name() == name) {
                return Ok(Planned::Preset(*kind));
            }
            let known: Vec<&str> = ScenarioKind::ALL
                .iter()
                .map(|k| k.name())
                .chain(config.verify.custom.iter().map(|c| c.name.as_str()))
                .collect();
            bail!(
                "--scenario {name}: no such scenario; the presets and {}'s custom scenarios \
                 are: {}",
                config.path.display(),
                known.join(", ")
            )
        })
        .collect()
}

/// Whether the run needs the previous release's package.
pub fn needs_previous(config: &Config, only: &[String]) -> Result<bool> {
    Ok(plan(config, only)?.iter().any(Planned::needs_previous))
}

/// How many scenarios run at once: one per core of the two-core machine the
/// harness is sized for. A scenario mostly waits (exec round trips, ssh), but
/// its busy phases (dpkg on seven hosts at once, the tool's Python on every
/// target during a sync) each fill a core; a third scenario would only queue
/// behind the other two and make every timeout tighter.
pub const PARALLEL_SCENARIOS: usize = 2;

/// Fleets up at once: the running scenarios' and the next one's, started
/// while they run so that it begins as soon as a slot frees. The
/// finished scenarios' coverage collection and teardown also overlap the
/// next one's work.
const FLEETS_UP: usize = PARALLEL_SCENARIOS + 1;

/// Runs every scenario, `PARALLEL_SCENARIOS` at once; a failed scenario does
/// not stop the others, so the report shows the whole picture.
pub async fn verify(
    docker: &Docker,
    input: &VerifyInput<'_>,
    progress: &Progress,
) -> Result<VerifyReport> {
    let started = Instant::now();
    let kinds = plan(input.config, input.only)?;
    if kinds.is_empty() {
        // release.toml refuses this too; verify is never skipped.
        bail!(
            "{}: no verify scenario to run; list presets in verify.scenarios or add a \
             [[verify.custom]] scenario",
            input.config.path.display()
        );
    }
    let plan = coverage::plan(input.config, &input.new.paths, &input.new.version);
    let (instrument, mut measured) = match plan {
        coverage::Plan::Measure(i) => (Some(i.clone()), CoverageReport::new(i.modules)),
        coverage::Plan::Off(why) => {
            progress.note(&format!("coverage: {why}"));
            (None, CoverageReport::unavailable(why))
        }
    };
    let instrument = instrument.as_ref();
    progress.step(&format!(
        "verify: {} scenarios, up to {PARALLEL_SCENARIOS} at once",
        kinds.len()
    ));
    let t = Instant::now();
    let launch = Launch {
        image: input.image,
        size: Size {
            canaries: input.config.fleet.canaries,
            apps: input.config.fleet.apps,
        },
        run_id: input.run_id,
        slot: "prep",
        keep: input.keep,
    };
    let mut debs: Vec<&Path> = input.new.paths.iter().map(PathBuf::as_path).collect();
    // Only when a scenario installs it: a first release has none.
    if let Some(p) = input
        .previous
        .filter(|_| kinds.iter().any(Planned::needs_previous))
    {
        debs.extend(p.paths.iter().map(PathBuf::as_path));
    }
    let (snapshot, import_only) =
        prepare(docker, input.config, &launch, &debs, instrument, progress)
            .await
            .context("preparing the fleet's hosts")?;
    let prepared_in = t.elapsed();
    progress.note(&format!(
        "hosts prepared once for every scenario in {}",
        format_duration(prepared_in)
    ));
    let up = tokio::sync::Semaphore::new(FLEETS_UP);
    let slots = tokio::sync::Semaphore::new(PARALLEL_SCENARIOS);
    let (snapshot_ref, up, slots) = (&snapshot, &up, &slots);
    // Every scenario is polled from the start, in order, so each semaphore
    // lets them in in the order written.
    let runs = kinds
        .iter()
        .copied()
        .enumerate()
        .map(|(i, kind)| async move {
            let _up = up.acquire().await.expect("never closed");
            let (result, timings, found) =
                run_scenario(input, kind, i, snapshot_ref, slots, instrument, progress).await;
            let mark = if result.passed { "✓" } else { "✗" };
            progress.note(&format!(
                "{mark} {} in {} ({})",
                kind.name(),
                format_duration(result.duration),
                timings
            ));
            for f in &result.failures {
                progress.note(&format!("✗ {}: {}", kind.name(), f.one_line()));
            }
            (result, found)
        });
    let done: Vec<(ScenarioResult, Option<ScenarioCoverage>)> =
        futures_util::future::join_all(runs).await;
    snapshot.finish(input.keep).await;
    // In the scenarios' order, so "what each scenario added" reads the same
    // whichever finished first.
    let mut results = Vec::new();
    for (result, found) in done {
        if let Some(mut found) = found {
            // The same for every scenario: measured once, on the template.
            found.import_only = import_only.clone();
            measured.add(&result.name, found);
        }
        results.push(result);
    }
    progress.finish_step(results.iter().all(|r| r.passed));
    Ok(VerifyReport {
        package: input.config.package_name().to_string(),
        version: input.new.version.clone(),
        previous: input.previous.map(|d| d.version.clone()),
        scenarios: results,
        duration: started.elapsed(),
        prepare: prepared_in,
        coverage: Some(measured),
    })
}

/// The import-only floor of the tool's coverage, or why it is not known.
pub type ImportOnly = Option<std::result::Result<coverage::Lines, String>>;

/// Prepares one host per role (users, keys, repositories, coverage
/// instrumentation, `debs` published and indexed on every host) and
/// snapshots it: what each fleet of the run starts from. With an
/// instrument, also measures the import-only floor there.
pub async fn prepare(
    docker: &Docker,
    config: &Config,
    launch: &Launch<'_>,
    debs: &[&std::path::Path],
    instrument: Option<&Instrument>,
    progress: &Progress,
) -> Result<(Snapshot, ImportOnly)> {
    let template = Fleet::start_template(docker, config, launch, progress).await?;
    let ready = async {
        let t = Instant::now();
        if let Some(i) = instrument {
            i.prepare(&template).await?;
        }
        template.publish_debs(debs).await?;
        progress.info(&format!(
            "packages published and indexed in {:.1}s",
            t.elapsed().as_secs_f64()
        ));
        let import_only = match instrument {
            Some(i) => Some(i.import_only(&template).await.map_err(|e| format!("{e:#}"))),
            None => None,
        };
        anyhow::Ok(import_only)
    }
    .await;
    match ready {
        Ok(import_only) => Ok((template.snapshot(launch.keep, progress).await?, import_only)),
        Err(e) => {
            template.teardown().await;
            Err(e)
        }
    }
}

async fn run_scenario(
    input: &VerifyInput<'_>,
    kind: Planned<'_>,
    index: usize,
    snapshot: &Snapshot,
    slots: &tokio::sync::Semaphore,
    instrument: Option<&Instrument>,
    progress: &Progress,
) -> (ScenarioResult, String, Option<ScenarioCoverage>) {
    let started = Instant::now();
    let mut found = None;
    let mut s = Scenario {
        failures: Vec::new(),
        log: Vec::new(),
        progress: progress.clone(),
        timings: Vec::new(),
    };
    let outcome = async {
        if kind.needs_previous() && input.previous.is_none() {
            bail!(
                "scenario {} needs the previous release's package, and there is no previous \
                 release tag; drop it from {} for a first release",
                kind.name(),
                match kind {
                    Planned::Preset(_) => "verify.scenarios",
                    Planned::Custom(_) => "verify.custom",
                }
            );
        }
        let slot = format!("s{index}");
        let t = Instant::now();
        let fleet = snapshot.start_fleet(&slot, input.keep, progress).await?;
        s.took("fleet start", t);
        let t = Instant::now();
        let slot = slots.acquire().await.expect("never closed");
        s.took("waiting for a slot", t);
        let result = match kind {
            Planned::Preset(preset) => s.run(preset, &fleet, input).await,
            Planned::Custom(c) => custom::run(&mut s, c, &fleet, input).await,
        };
        // The slot is the next scenario's while this one's data is collected
        // and its fleet removed.
        drop(slot);
        if let Some(i) = instrument {
            let t = Instant::now();
            found = Some(i.collect(&fleet).await);
            s.took("coverage", t);
        }
        let t = Instant::now();
        fleet.teardown().await;
        s.took("teardown", t);
        result
    }
    .await;
    let error = outcome.err().map(|e| format!("{e:#}"));
    let phases: Vec<Phase> = s
        .timings
        .iter()
        .map(|(name, duration)| Phase {
            name: name.to_string(),
            duration: *duration,
        })
        .collect();
    let timings = phases_line(&phases);
    s.log.push(format!("time: {timings}"));
    let result = ScenarioResult {
        name: kind.name().to_string(),
        passed: error.is_none() && s.failures.is_empty(),
        duration: started.elapsed(),
        failures: s.failures,
        error,
        log: s.log,
        phases,
    };
    (result, timings, found)
}

pub(super) struct Scenario {
    failures: Vec<Failure>,
    log: Vec<String>,
    progress: Progress,
    /// Time per phase (fleet start, install, sync, checks...), summed.
    timings: Vec<(&'static str, Duration)>,
}

impl Scenario {
    pub(super) fn took(&mut self, phase: &'static str, since: Instant) {
        let d = since.elapsed();
        match self.timings.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, total)) => *total += d,
            None => self.timings.push((phase, d)),
        }
    }

    pub(super) fn say(&mut self, msg: String) {
        self.progress.info(&msg);
        self.log.push(msg);
    }

    pub(super) fn fail(&mut self, host: &str, assertion: &str, expected: &str, actual: &str) {
        self.failures.push(Failure {
            host: host.to_string(),
            assertion: assertion.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }

    async fn run(
        &mut self,
        kind: ScenarioKind,
        fleet: &Fleet,
        input: &VerifyInput<'_>,
    ) -> Result<()> {
        let new = &input.new.version;
        let all = fleet.select(Hosts::All);
        match kind {
            ScenarioKind::FreshInstall => {
                self.install(fleet, &all, new).await?;
                self.sync_and_check(fleet, "first deploy").await?;
                self.sync_and_check(fleet, "second deploy").await?;
                self.check_versions(fleet, &|_| new.clone()).await?;
            }
            ScenarioKind::Upgrade => {
                let old = &input.previous.unwrap().version;
                self.install(fleet, &all, old).await?;
                self.sync_and_check(fleet, "deploy with the previous release")
                    .await?;
                self.install(fleet, &all, new).await?;
                self.check_versions(fleet, &|_| new.clone()).await?;
                self.sync_and_check(fleet, "deploy after the upgrade")
                    .await?;
            }
            ScenarioKind::MixedFleet => {
                let old = input.previous.unwrap().version.clone();
                let (upgraded, behind): (Vec<&Host>, Vec<&Host>) = all
                    .iter()
                    .partition(|h| h.role != crate::verify::fleet::Role::App);
                self.install(fleet, &upgraded, new).await?;
                self.install(fleet, &behind, &old).await?;
                let expected = |h: &Host| {
                    if h.role == crate::verify::fleet::Role::App {
                        old.clone()
                    } else {
                        new.clone()
                    }
                };
                self.check_versions(fleet, &expected).await?;
                self.sync_and_check(fleet, "deploy across a mixed fleet")
                    .await?;
            }
            ScenarioKind::Downgrade => {
                let old = &input.previous.unwrap().version;
                self.install(fleet, &all, new).await?;
                self.sync_and_check(fleet, "deploy with the new release")
                    .await?;
                self.install(fleet, &all, old).await?;
                self.check_versions(fleet, &|_| old.clone()).await?;
                self.sync_and_check(fleet, "deploy after the downgrade")
                    .await?;
            }
            ScenarioKind::TargetStopped => {
                self.install(fleet, &all, new).await?;
                let before = self
                    .sync_and_check(fleet, "deploy before the failure")
                    .await?;
                self.stop_target_mid_sync(fleet, &before).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn install(
        &mut self,
        fleet: &Fleet,
        hosts: &[&Host],
        version: &str,
    ) -> Result<()> {
        let t = Instant::now();
        fleet.install(hosts, version).await?;
        self.took("install", t);
        self.say(format!(
            "installed {} {version} on {} ({:.1}s)",
            fleet.config.package_name(),
            names(hosts),
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// A new revision, a sync, and the checks on every target. Returns the
    /// revision.
    async fn sync_and_check(&mut self, fleet: &Fleet, what: &str) -> Result<String> {
        let t = Instant::now();
        let rev = fleet.new_revision(what).await?;
        let out = fleet.sync(&rev).await?;
        self.took("sync", t);
        self.say(format!(
            "{what}: sync of {} exited {} ({:.1}s)",
            short(&rev),
            out.code,
            t.elapsed().as_secs_f64()
        ));
        if !out.ok() {
            let deploy = fleet.deploy_host().name.clone();
            self.fail(
                &deploy,
                &format!("{what}: sync exit code"),
                "0",
                &format!("{}\n{}", out.code, out.tail(12)),
            );
            return Ok(rev);
        }
        let targets = fleet.select(Hosts::Targets);
        let t = Instant::now();
        let found_before = self.failures.len();
        self.check_revisions(fleet, &targets, &rev, what).await?;
        self.took("checks", t);
        self.attach_sync_evidence(fleet, &out, found_before).await;
        Ok(rev)
    }

    /// When checks after a sync failed, the first of those failures carries
    /// the tail of the sync's output and of the tool's own log
    /// (`sync.log`): a sync that exited 0 and left targets behind is then
    /// diagnosed from the report, without keeping the fleet.
    async fn attach_sync_evidence(&mut self, fleet: &Fleet, out: &ExecOutput, found_before: usize) {
        if self.failures.len() <= found_before {
            return;
        }
        let log = fleet.tool_log_tail(EVIDENCE_LINES).await;
        let evidence = sync_evidence(out, log.as_ref().map(|(p, t)| (p.as_str(), t.as_str())));
        attach_evidence(&mut self.failures[found_before..], &evidence);
    }

    async fn check_revisions(
        &mut self,
        fleet: &Fleet,
        targets: &[&Host],
        rev: &str,
        what: &str,
    ) -> Result<()> {
        let link = fleet.config.render(&fleet.config.sync.current_link, &[]);
        let (link, revision) = (&link, &fleet.revision_script());
        // The revision and the link in one exec per target.
        let checks = targets.iter().map(|h| async move {
            if link.is_empty() {
                return (h, fleet.deployed_revision(h).await.map(|d| (d, None)));
            }
            let both = fleet
                .exec_both(h, Some(fleet.user()), revision, &resolve_link_script(link))
                .await;
            (
                h,
                both.map(|(deployed, current)| (deployed, Some(current.stdout.trim().to_string()))),
            )
        });
        for (h, asked) in futures_util::future::join_all(checks).await {
            let (deployed, current) = asked?;
            let actual = if deployed.ok() {
                deployed.stdout.trim().to_string()
            } else {
                format!("(exit {}) {}", deployed.code, deployed.tail(3))
            };
            if actual != rev {
                self.fail(&h.name, &format!("{what}: deployed revision"), rev, &actual);
            }
            if let Some(current) = current {
                if !current.ends_with(rev) {
                    self.fail(
                        &h.name,
                        &format!("{what}: `current` link"),
                        &format!(".../{rev}"),
                        if current.is_empty() {
                            "(missing)"
                        } else {
                            &current
                        },
                    );
                }
            }
        }
        Ok(())
    }

    async fn check_versions(
        &mut self,
        fleet: &Fleet,
        expected: &dyn Fn(&Host) -> String,
    ) -> Result<()> {
        let t = Instant::now();
        let cmd = fleet.config.render(&fleet.config.sync.version_command, &[]);
        let cmd = &cmd;
        // Every host at once, the package database and the command in one
        // exec; the findings are recorded in host order. What the command
        // says counts only on a host with the expected version installed.
        let asks = fleet.select(Hosts::All).into_iter().map(|h| async move {
            let want = expected(h);
            let (query, said) = fleet
                .exec_both(
                    h,
                    Some(fleet.user()),
                    &fleet.installed_query(h),
                    &format!("timeout 60 {cmd}"),
                )
                .await?;
            let installed = fleet.installed_version_in(h, &query.stdout);
            let said = (installed == want).then_some(said);
            anyhow::Ok((h, want, installed, said))
        });
        for answer in futures_util::future::join_all(asks).await {
            let (h, want, installed, said) = answer?;
            let Some(out) = said else {
                self.fail(&h.name, "installed package version", &want, &installed);
                continue;
            };
            if !out.ok() || !out.stdout.contains(&want) {
                self.fail(
                    &h.name,
                    &format!("`{cmd}` reports the installed version"),
                    &want,
                    &format!("exit {}: {}", out.code, out.tail(3)),
                );
            }
        }
        self.took("checks", t);
        Ok(())
    }

    /// Starts a sync, kills the last app host once the canaries have the new
    /// revision, and checks that the tool failed and rolled every other
    /// target back to the revision before.
    async fn stop_target_mid_sync(&mut self, fleet: &Fleet, before: &str) -> Result<()> {
        let targets = fleet.select(Hosts::Targets);
        let Some(victim) = targets.last().copied() else {
            bail!("target-stopped needs at least one target");
        };
        let canary = fleet.select(Hosts::Canaries)[0];
        let t = Instant::now();
        let rev = fleet.new_revision("deploy during a failure").await?;
        let sync = fleet.sync(&rev);
        tokio::pin!(sync);
        let deadline = Instant::now() + Duration::from_secs(fleet.config.sync.timeout_secs);
        let mut killed = false;
        let out = loop {
            tokio::select! {
                out = &mut sync => break out?,
                _ = tokio::time::sleep(Duration::from_millis(100)), if !killed => {
                    let on_canary = fleet.deployed_revision(canary).await?;
                    if on_canary.stdout.trim() == rev {
                        fleet.kill_host(victim).await?;
                        killed = true;
                        self.say(format!("stopped {} while the sync was under way", victim.name));
                    } else if Instant::now() > deadline {
                        bail!("the canaries never reached {} during the sync", short(&rev));
                    }
                }
            }
        };
        self.took("sync", t);
        if !killed {
            return self
                .sync_ended_early(fleet, &targets, &rev, victim, &out)
                .await;
        }
        self.say(format!(
            "sync with {} down exited {}: {}",
            victim.name,
            out.code,
            out.tail(1)
        ));
        if out.ok() {
            self.fail(
                &fleet.deploy_host().name,
                &format!("sync with {} stopped: exit code", victim.name),
                "non-zero (the tool must report the failed target)",
                "0",
            );
        }
        let others: Vec<&Host> = targets
            .iter()
            .filter(|h| h.name != victim.name)
            .copied()
            .collect();
        let found_before = self.failures.len();
        self.check_revisions(
            fleet,
            &others,
            before,
            "after the failed sync (rolled back)",
        )
        .await?;
        self.attach_sync_evidence(fleet, &out, found_before).await;
        Ok(())
    }

    /// The sync ended before the canaries had the revision, so no target was
    /// stopped. When a target is not on the revision (or the sync failed with
    /// every host up), that is the tool's failure, reported per host; only a
    /// sync that really deployed everywhere that fast is inconclusive.
    async fn sync_ended_early(
        &mut self,
        fleet: &Fleet,
        targets: &[&Host],
        rev: &str,
        victim: &Host,
        out: &ExecOutput,
    ) -> Result<()> {
        let what = "sync before a target could be stopped";
        if !out.ok() {
            self.fail(
                &fleet.deploy_host().name,
                &format!("{what}: exit code (every host up)"),
                "0",
                &format!("{}\n{}", out.code, out.tail(EVIDENCE_LINES)),
            );
            return Ok(());
        }
        let found_before = self.failures.len();
        self.check_revisions(fleet, targets, rev, what).await?;
        if self.failures.len() > found_before {
            self.attach_sync_evidence(fleet, out, found_before).await;
            return Ok(());
        }
        bail!(
            "inconclusive: the sync reached every target before {} could be stopped (exit 0); \
             the scenario could not put a target down mid-deploy",
            victim.name
        )
    }
}

/// How many lines of a sync's output (and of the tool's log) a failure shows.
const EVIDENCE_LINES: usize = 12;

/// Prints where `link` resolves to, or nothing when there is no such link:
/// `readlink -f` alone prints the path itself for a link that does not
/// exist, which would read as a wrong target instead of a missing link.
fn resolve_link_script(link: &str) -> String {
    format!("if [ -L {link} ] || [ -e {link} ]; then readlink -f {link}; fi")
}

/// The tail of a sync's output (stdout, then stderr) and of the tool's log.
fn sync_evidence(out: &ExecOutput, log: Option<(&str, &str)>) -> String {
    let mut text = format!(
        "sync exited {}; its last lines:\n{}",
        out.code,
        indent(&last_lines(&out.stdout, EVIDENCE_LINES))
    );
    if !out.stderr.trim().is_empty() {
        text.push_str(&format!(
            "sync stderr:\n{}",
            indent(&last_lines(&out.stderr, EVIDENCE_LINES))
        ));
    }
    if let Some((path, tail)) = log {
        text.push_str(&format!("tool log {path}:\n{}", indent(tail)));
    }
    text.trim_end().to_string()
}

/// Puts the evidence under the first failure only: the summary shows it
/// once, whatever the number of hosts that failed.
fn attach_evidence(failures: &mut [Failure], evidence: &str) {
    if let Some(first) = failures.first_mut() {
        first.actual = format!("{}\n{evidence}", first.actual);
    }
}

fn last_lines(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn names(hosts: &[&Host]) -> String {
    if hosts.len() > 6 {
        format!("{} hosts", hosts.len())
    } else {
        hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn short(rev: &str) -> &str {
    &rev[..rev.len().min(10)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::process;

    #[test]
    fn scenario_names_pick_presets_and_custom_scenarios() {
        let config = Config::parse(
            "[verify]\nscenarios = [\"fresh-install\"]\n\n[[verify.custom]]\nname = \"ping\"\n\
             steps = [{ install = \"new\" }, { run = \"true\" }]\n",
            std::path::Path::new("proj/release.toml"),
        )
        .unwrap();
        let names = |only: &[&str]| -> Vec<String> {
            let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
            plan(&config, &only)
                .unwrap()
                .iter()
                .map(|p| p.name().to_string())
                .collect()
        };
        assert_eq!(names(&[]), ["fresh-install", "ping"]);
        assert_eq!(names(&["ping"]), ["ping"]);
        assert_eq!(names(&["downgrade", "ping"]), ["downgrade", "ping"]);
        let err = plan(&config, &["pong".to_string()]).err().unwrap();
        assert_eq!(
            format!("{err:#}"),
            "--scenario pong: no such scenario; the presets and proj/release.toml's custom \
             scenarios are: fresh-install, upgrade, mixed-fleet, downgrade, target-stopped, ping"
        );
    }

    fn resolve(link: &std::path::Path) -> String {
        let script = resolve_link_script(&link.display().to_string());
        process::cmd("sh", ["-c", script.as_str()])
            .read()
            .unwrap()
            .trim()
            .to_string()
    }

    #[test]
    fn a_missing_current_link_resolves_to_nothing_not_to_its_own_path() {
        let dir = tempfile::tempdir().unwrap();
        let rev = dir.path().join("revs").join("0123abcd");
        std::fs::create_dir_all(&rev).unwrap();
        let link = dir.path().join("current");
        assert_eq!(resolve(&link), "", "a link that does not exist");
        std::os::unix::fs::symlink(&rev, &link).unwrap();
        assert!(
            resolve(&link).ends_with("/revs/0123abcd"),
            "{}",
            resolve(&link)
        );
    }

    fn failure(host: &str) -> Failure {
        Failure {
            host: host.into(),
            assertion: "second deploy: deployed revision".into(),
            expected: "bbbb".into(),
            actual: "aaaa".into(),
        }
    }

    #[test]
    fn failed_checks_after_a_clean_sync_carry_its_output_and_the_tool_log_once() {
        let out = ExecOutput {
            code: 0,
            stdout: (1..=20).map(|i| format!("line {i}\n")).collect::<String>()
                + "minideploy: deployed demo bbbb to 6 of 6 targets\n",
            stderr: String::new(),
        };
        let evidence = sync_evidence(
            &out,
            Some(("/srv/demo/scap/log/x.log", "{\"host\": \"app1\"}")),
        );
        let mut failures = vec![failure("app1"), failure("app2")];
        attach_evidence(&mut failures, &evidence);
        let first = &failures[0].actual;
        assert!(first.starts_with("aaaa\nsync exited 0"), "{first}");
        assert!(
            first.contains("deployed demo bbbb to 6 of 6 targets"),
            "{first}"
        );
        assert!(!first.contains("line 9\n"), "only the tail: {first}");
        assert!(
            first.contains("tool log /srv/demo/scap/log/x.log:\n  {\"host\": \"app1\"}"),
            "{first}"
        );
        assert_eq!(failures[1].actual, "aaaa", "the evidence is shown once");
        // The one-line form stays one line.
        assert!(!failures[0].one_line().contains('\n'));
    }
}
