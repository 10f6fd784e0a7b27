//! `release`: preflight, bump, build, verify, then (not in a dry run) the
//! canary rollout. Owns the order of the steps and the promise that a failed
//! step leaves nothing half-done: no release commit or tag, no container, no
//! production call.

pub mod build;
pub mod bump;
pub mod changelog;
pub mod fixture;
mod preflight;
#[cfg(test)]
mod testing;
pub mod version;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bollard::Docker;

use crate::config::Config;
use crate::release::preflight::Start;
use crate::release::version::VersionRequest;
use crate::support::debian::{self, BuiltDeb};
use crate::support::git::Repo;
use crate::support::progress::{format_duration, Progress};
use crate::support::{docker, images};
use crate::verify::report::VerifyReport;
use crate::verify::scenario::{self, Debs, VerifyInput};

#[derive(Debug, Clone)]
pub struct ReleaseOptions {
    /// The project checkout; None with `fixture` set.
    pub project: Option<PathBuf>,
    /// Release a built-in fixture (materialized into a scratch repository).
    pub fixture: Option<String>,
    pub dry_run: bool,
    /// HEAD already carries the release commit and tag (CI on a tag):
    /// release it as it is, no bump.
    pub tagged: bool,
    pub version: VersionRequest,
    pub out: PathBuf,
    pub keep: bool,
    /// Only these scenarios, by name (presets or custom).
    pub scenarios: Vec<String>,
    pub run_id: String,
}

/// What a release produced, for the CLI's report and `--json`.
#[derive(Debug, serde::Serialize)]
pub struct ReleaseOutcome {
    pub package: String,
    pub version: String,
    pub tag: String,
    pub previous: Option<String>,
    pub dry_run: bool,
    pub artifacts: PathBuf,
    /// Every binary package built, with its file and sha256.
    pub debs: Vec<BuiltDeb>,
    pub verify_passed: bool,
    pub report_digest: String,
    pub junit: PathBuf,
    /// What the canary step runs (a dry run only prints it).
    pub canary_plan: Vec<String>,
    /// Where the time went: every step in order (the scenarios' own phases
    /// are in the verify report).
    pub steps: Vec<StepTime>,
    /// From the start of the command to the end of the release.
    #[serde(serialize_with = "crate::support::progress::serialize_seconds")]
    pub total: std::time::Duration,
}

/// How long one step of the release took.
#[derive(Debug, serde::Serialize)]
pub struct StepTime {
    pub step: String,
    #[serde(serialize_with = "crate::support::progress::serialize_seconds")]
    pub duration: std::time::Duration,
}

impl ReleaseOutcome {
    /// `time: 1m32s in all: fixture 0.1s, ..., verify 1m19s`.
    pub fn time_line(&self) -> String {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|s| format!("{} {}", s.step, format_duration(s.duration)))
            .collect();
        format!(
            "time: {} in all: {}",
            format_duration(self.total),
            steps.join(", ")
        )
    }
}

/// Verify ran and failed: the release stopped before any production step.
#[derive(Debug)]
pub struct VerifyFailed {
    pub summary: String,
}

impl std::fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "verify failed: the release stopped before any production step\n{}",
            self.summary
        )
    }
}
impl std::error::Error for VerifyFailed {}

/// What must be undone if the run is cut off: shared with the CLI so Ctrl-C
/// and panics clean up too.
#[derive(Default)]
pub struct Cleanup {
    pub run_id: Option<String>,
    /// (repository, HEAD before the release commit, tag made)
    pub release_commit: Option<(Repo, String, String)>,
}

impl Cleanup {
    pub async fn run(&mut self, docker: Option<&Docker>) {
        if let (Some(docker), Some(run)) = (docker, self.run_id.as_ref()) {
            // A container whose create call was in flight when the run was
            // cut off appears after the first pass: look again until a pass
            // finds nothing (at least twice, a few times at most).
            for pass in 0..5 {
                match docker::remove_run(docker, run).await {
                    Ok(0) if pass > 0 => break,
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("warning: removing the containers of run {run}: {e:#}");
                        break;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
        if let Some((repo, head, tag)) = self.release_commit.take() {
            let undo = repo.delete_tag(&tag).and_then(|_| repo.reset_hard(&head));
            match undo {
                Ok(()) => eprintln!("undid the release commit and tag {tag}"),
                Err(e) => eprintln!(
                    "warning: could not undo the release commit and tag {tag} in {}: {e:#}\n  \
                     fix by hand: git tag -d {tag} && git reset --hard {head}",
                    repo.root.display()
                ),
            }
        }
    }
}

pub async fn release(
    opts: &ReleaseOptions,
    cleanup: Arc<Mutex<Cleanup>>,
    progress: &Progress,
) -> Result<ReleaseOutcome> {
    let scratch = tempfile::Builder::new()
        .prefix("release-harness-")
        .tempdir()
        .context("making a scratch directory")?;
    let project = match (&opts.fixture, &opts.project) {
        (Some(_), Some(_)) => bail!("--fixture and --project name two targets: pick one"),
        (Some(name), None) => {
            progress.step("fixture");
            let dir = fixture::materialize(name, &scratch.path().join("fixture"))?;
            progress.info(&format!("released target: the built-in fixture `{name}`"));
            dir
        }
        (None, Some(p)) => p.clone(),
        (None, None) => std::env::current_dir()?,
    };

    progress.step("preflight");
    let config = Config::load(&project)?;
    // An unknown --scenario is refused before anything is changed.
    scenario::plan(&config, &opts.scenarios)?;
    let repo = Repo::open(&project)?;
    let (start, docker) = preflight::preflight(&project, &repo, &config, opts).await?;
    let (previous_version, next, changes) = match &start {
        Start::Bump(p) => (&p.previous_version, &p.debian_version, p.changes.len()),
        Start::Tagged(b) => (&b.previous_version, &b.debian_version, b.changes.len()),
    };
    progress.info(&format!(
        "{} {} -> {} ({changes} commits)",
        config.package_name(),
        previous_version.as_deref().unwrap_or("(first release)"),
        next,
    ));
    let swept = docker::sweep_stale(&docker).await?;
    if swept > 0 {
        progress.note(&format!(
            "swept {swept} containers/networks left by killed runs"
        ));
    }
    cleanup.lock().unwrap().run_id = Some(opts.run_id.clone());

    // A dry run works in a scratch clone: the user's repository is never
    // touched. A real run commits and tags where it stands.
    let work = if opts.dry_run {
        repo.scratch_clone(&scratch.path().join("work"))?
    } else {
        repo.clone()
    };

    let made_release_commit = matches!(start, Start::Bump(_));
    let bumped = match start {
        Start::Bump(plan) => {
            progress.step("bump");
            let head_before = work.head()?;
            let bumped = bump::apply(&work.root, &work, &config, &plan)?;
            if !opts.dry_run {
                cleanup.lock().unwrap().release_commit =
                    Some((work.clone(), head_before, bumped.tag.clone()));
            }
            bumped
        }
        Start::Tagged(bumped) => {
            progress.info(&format!(
                "HEAD is the release commit of tag {}: released as it is",
                bumped.tag
            ));
            bumped
        }
    };
    let tagged_at = crate::ledger::now();
    progress.info(&format!(
        "commit {} `{}`, tag {}",
        &bumped.commit[..10.min(bumped.commit.len())],
        bumped.subject,
        bumped.tag
    ));

    let artifacts = opts.out.join(format!(
        "{}_{}",
        config.package_name(),
        bumped.debian_version
    ));
    create_out_dir(&opts.out, &repo.root)?;
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    // The release's changelog beside its .deb: what a reviewer reads first.
    let changelog = work.root.join("debian/changelog");
    if changelog.exists() {
        std::fs::copy(&changelog, artifacts.join("changelog"))?;
    }

    let needs_previous = scenario::needs_previous(&config, &opts.scenarios)?;
    progress.step("build");
    // The fleet image is made while the packages build, from the Depends
    // debian/control declares (the new release's and the previous one's); the
    // "images" step checks it against the Depends of the built packages.
    let mut declared = debian::project_declared_depends(&work.root)?;
    if let Some(tag) = bumped.previous_tag.as_ref().filter(|_| needs_previous) {
        // A previous release without debian/control adds nothing.
        if let Ok(control) = work.show_file_at(tag, "debian/control") {
            declared.extend(
                debian::declared_depends(&control)
                    .with_context(|| format!("reading debian/control of tag {tag}"))?,
            );
        }
    }
    declared.sort();
    declared.dedup();
    let previous = async {
        let Some(tag) = bumped.previous_tag.as_ref().filter(|_| needs_previous) else {
            return Ok(None);
        };
        let prev = build_previous(
            &docker,
            &config,
            &work,
            tag,
            &scratch.path().join("prev"),
            &opts.run_id,
            progress,
        )
        .await?;
        anyhow::Ok(Some(prev))
    };
    let reporter = progress.reporter();
    let (built, previous, early_image) = tokio::try_join!(
        // Labelled with the run, so a cut-off run's clean-up finds them.
        build::build_in_run(
            &docker,
            &config,
            &work.root,
            &artifacts,
            &opts.run_id,
            &reporter
        ),
        previous,
        images::fleet_image(&docker, &config, &declared, &reporter),
    )?;
    let built_at = crate::ledger::now();
    let new = Debs {
        paths: built.paths(),
        version: bumped.debian_version.clone(),
    };
    check_deb_version(&new)?;
    for w in &built.lintian_warnings {
        progress.note(&format!("lintian: {w}"));
    }

    progress.step("images");
    let debs: Vec<&Path> = new
        .paths
        .iter()
        .chain(previous.iter().flat_map(|p| &p.paths))
        .map(PathBuf::as_path)
        .collect();
    let image = images::fleet_image_satisfying(
        &docker,
        &config,
        &early_image,
        &declared,
        &debs,
        &progress.reporter(),
    )
    .await?;

    let mut report = scenario::verify(
        &docker,
        &VerifyInput {
            config: &config,
            image: &image,
            new: &new,
            previous: previous.as_ref(),
            run_id: &opts.run_id,
            keep: opts.keep,
            only: &opts.scenarios,
        },
        progress,
    )
    .await?;
    if let Some(coverage) = report.coverage.as_mut() {
        coverage.finish(&config, &work, bumped.previous_tag.as_deref(), &built.debs);
    }
    let junit = write_reports(&report, &artifacts)?;
    eprintln!("\n{}", report.summary());
    eprintln!("reports: {}", artifacts.display());
    if !report.passed() {
        if !opts.dry_run {
            let mut undo = std::mem::take(&mut *cleanup.lock().unwrap());
            undo.run(None).await;
        }
        return Err(VerifyFailed {
            summary: report.summary(),
        }
        .into());
    }

    let verified_at = crate::ledger::now();
    let canary_plan: Vec<String> = crate::production::rollout::describe(
        &config,
        &config.rollout.canaries,
        &bumped.debian_version,
        false,
    )?
    .lines()
    .map(str::to_string)
    .collect();
    if opts.dry_run {
        eprintln!("dry run: nothing pushed, no production call. The canary step would run:");
        for line in &canary_plan {
            eprintln!("  {line}");
        }
    } else {
        // Other CI jobs (promote, rollback) find the release by its tag: it
        // is pushed before production is touched, and a failed push undoes
        // the release commit and tag like any failed step.
        if !made_release_commit {
            // Released from a tag: it is on the remote already.
        } else if work.git(&["remote"])?.lines().any(|r| r == "origin") {
            progress.step("push");
            let branch = format!("HEAD:refs/heads/{}", config.package.release_branch);
            let tag = format!("refs/tags/{}", bumped.tag);
            if let Err(e) = work.push("origin", &[branch.as_str(), tag.as_str()]) {
                let mut undo = std::mem::take(&mut *cleanup.lock().unwrap());
                undo.run(None).await;
                return Err(e.context(format!(
                    "pushing the release commit and tag {} to origin; nothing reached \
                     production",
                    bumped.tag
                )));
            }
        } else {
            progress.note("no `origin` remote: the release commit and tag stay local");
        }
        publish(&config, &new, progress)?;
        // From here production changes: the release commit and tag stay,
        // whatever happens; the ledger hangs on the tag.
        cleanup.lock().unwrap().release_commit = None;
        let facts = crate::production::ReleaseFacts {
            tag: bumped.tag.clone(),
            version: bumped.debian_version.clone(),
            commit: bumped.commit.clone(),
            debs: built.debs.clone(),
            verify_digest: report.digest(),
            coverage: report.coverage.as_ref().map(|c| c.figures()),
            tagged_at,
            built_at,
            verified_at,
        };
        crate::production::canary(&work, &config, &facts, false, progress).await?;
    }
    // Released: nothing to undo any more.
    cleanup.lock().unwrap().release_commit = None;
    progress.finish_step(true);
    let steps = progress
        .timeline()
        .into_iter()
        .map(|(step, duration)| StepTime { step, duration })
        .collect();

    Ok(ReleaseOutcome {
        package: config.package_name().to_string(),
        version: bumped.debian_version.clone(),
        tag: bumped.tag.clone(),
        previous: bumped
            .previous_version
            .as_ref()
            .map(|v| config.debian_version(v)),
        dry_run: opts.dry_run,
        debs: built.debs,
        artifacts,
        verify_passed: true,
        report_digest: report.digest(),
        junit,
        canary_plan,
        steps,
        total: progress.elapsed(),
    })
}

/// Creates `out` (the reports and the .deb). Inside the project's
/// repository it carries a `.gitignore` of `*`, so one run's reports never
/// make the next run's tree dirty; no tracked file is touched.
pub fn create_out_dir(out: &Path, repo_root: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let inside = match (out.canonicalize(), repo_root.canonicalize()) {
        (Ok(out), Ok(root)) => out.starts_with(root),
        _ => false,
    };
    let ignore = out.join(".gitignore");
    if inside && !ignore.exists() {
        std::fs::write(
            &ignore,
            "# release-harness reports: not part of the project\n*\n",
        )
        .with_context(|| format!("writing {}", ignore.display()))?;
    }
    Ok(())
}

/// `bump`: only the release commit and tag, for a team whose CI releases
/// tags (`release --tagged`). The same checks as a release's preflight.
pub fn bump_only(project: &Path, request: &VersionRequest) -> Result<bump::Bumped> {
    let config = Config::load(project)?;
    let repo = Repo::open(project)?;
    let mut problems = preflight::tree_problems(&repo, &config, false)?;
    let plan = bump::plan(project, &repo, &config, request);
    if let Err(e) = &plan {
        problems.push(format!("{e:#}"));
    }
    if !problems.is_empty() {
        return Err(preflight::refusal("nothing was changed", &problems));
    }
    bump::apply(project, &repo, &config, &plan?)
}

/// `rollout.publish_command`: the verified package into production's apt
/// repository. A failure stops the release before any host is touched.
fn publish(config: &Config, deb: &Debs, progress: &Progress) -> Result<()> {
    let template = &config.rollout.publish_command;
    if template.is_empty() {
        progress.note(
            "rollout.publish_command is empty: the canary step expects the package in the \
             fleet's apt repository already",
        );
        return Ok(());
    }
    progress.step("publish");
    // Every .deb of the source, each quoted: `{deb}` is the older name.
    let files = deb
        .paths
        .iter()
        .map(|p| crate::production::rollout::shell_quote(&p.display().to_string()))
        .collect::<Vec<_>>()
        .join(" ");
    let command = config.render(
        template,
        &[("debs", &files), ("deb", &files), ("version", &deb.version)],
    );
    crate::support::process::cmd("sh", ["-c", &command])
        .run()
        .with_context(|| {
            format!(
                "{}: rollout.publish_command failed; nothing reached the canaries",
                config.path.display()
            )
        })?;
    Ok(())
}

/// The previous release's packages, built from its tag once and cached by
/// the tag's commit, so later releases reuse them.
async fn build_previous(
    docker: &Docker,
    config: &Config,
    repo: &Repo,
    tag: &str,
    scratch: &Path,
    run_id: &str,
    progress: &Progress,
) -> Result<Debs> {
    let commit = repo.rev_parse(&format!("{tag}^{{commit}}"))?;
    let cache = cache_dir()
        .join("previous")
        .join(config.package_name())
        .join(&commit);
    // The binaries this release installs; the previous release must have
    // built each of them (a new binary has no previous release to upgrade).
    let wanted = config.binary_names();
    let cached: Vec<PathBuf> = std::fs::read_dir(&cache)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let f = p.file_name().unwrap_or_default().to_string_lossy();
                    debian::package_of_deb_file(&f).is_some_and(|pkg| wanted.contains(&pkg))
                })
                .collect()
        })
        .unwrap_or_default();
    let paths = if cached.len() == wanted.len() {
        progress.info(&format!("cached: {}", cache.display()));
        cached
    } else {
        let src = scratch.join("src");
        repo.archive(tag, &src)?;
        let out = scratch.join("out");
        std::fs::create_dir_all(&out)?;
        let built = build::build_in_run(docker, config, &src, &out, run_id, &progress.reporter())
            .await
            .with_context(|| format!("building the previous release {tag}"))?;
        std::fs::create_dir_all(&cache)?;
        let mut paths = Vec::new();
        for deb in built
            .debs
            .iter()
            .filter(|d| wanted.contains(&d.package.as_str()))
        {
            let dest = cache.join(deb.file_name());
            std::fs::copy(&deb.path, &dest)?;
            paths.push(dest);
        }
        paths
    };
    let version = debian::deb_field(&paths[0], "Version")?;
    Ok(Debs { paths, version })
}

fn cache_dir() -> PathBuf {
    std::env::var_os("RELEASE_HARNESS_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("release-harness"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/release-harness"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("release-harness-cache"))
}

/// The .deb must carry the version the bump wrote: the changelog is the
/// source of truth at build time, and a mismatch means the bump did not land.
fn check_deb_version(debs: &Debs) -> Result<()> {
    for path in &debs.paths {
        let found = debian::deb_field(path, "Version")?;
        if found != debs.version {
            bail!(
                "{} has version {found}, expected {}: debian/changelog and the version bump \
                 disagree",
                path.display(),
                debs.version
            );
        }
    }
    Ok(())
}

fn write_reports(report: &VerifyReport, dir: &Path) -> Result<PathBuf> {
    let junit = dir.join("junit.xml");
    std::fs::write(&junit, report.junit())?;
    std::fs::write(dir.join("verify.json"), report.to_json())?;
    std::fs::write(dir.join("verify.txt"), report.summary())?;
    if let Some(coverage) = report.coverage.as_ref().filter(|c| c.unavailable.is_none()) {
        let xml = coverage.cobertura(chrono::Utc::now().timestamp());
        std::fs::write(dir.join("coverage.xml"), xml)?;
    }
    Ok(junit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::testing::scap_config;
    use crate::support::git::testing::{commit_file, init};

    #[test]
    fn a_run_s_reports_do_not_dirty_the_next_run_s_tree() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "a", "1\n", "First");
        let c = scap_config();
        let write_reports = |out: &Path| {
            let artifacts = out.join("scap_4.13.0-1");
            std::fs::create_dir_all(&artifacts).unwrap();
            std::fs::write(artifacts.join("junit.xml"), "<testsuites/>\n").unwrap();
        };

        // Without the harness's .gitignore, the next preflight is refused.
        write_reports(&dir.path().join("by-hand"));
        let problems = preflight::tree_problems(&repo, &c, false).unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.contains("uncommitted changes (by-hand/")),
            "{problems:?}"
        );
        std::fs::remove_dir_all(dir.path().join("by-hand")).unwrap();

        let out = dir.path().join("release-out");
        create_out_dir(&out, &repo.root).unwrap();
        write_reports(&out);
        assert_eq!(
            preflight::tree_problems(&repo, &c, false).unwrap(),
            Vec::<String>::new()
        );
        // The second run finds it as it left it.
        create_out_dir(&out, &repo.root).unwrap();
        assert!(repo.dirty_paths().unwrap().is_empty());

        // Outside the repository nothing is added.
        let elsewhere = tempfile::tempdir().unwrap();
        create_out_dir(&elsewhere.path().join("out"), &repo.root).unwrap();
        assert!(!elsewhere.path().join("out/.gitignore").exists());
    }
}
