//! Preflight: every check before anything changes (a clean tree on the
//! release branch, the packaging the builder needs, the bump or the tagged
//! release, the Docker engine), with every problem reported at once, each
//! with its fix.

use std::path::Path;

use anyhow::{anyhow, Result};
use bollard::Docker;

use crate::config::{Builder, Config};
use crate::release::bump::{self, Bumped, Plan};
use crate::release::ReleaseOptions;
use crate::support::docker;
use crate::support::git::Repo;

/// A clean tree on the release branch (`any_branch`: a tagged release may
/// stand on a detached HEAD, CI checks tags out that way; a dry run may
/// verify any branch).
pub fn tree_problems(repo: &Repo, config: &Config, any_branch: bool) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let dirty = repo.dirty_paths()?;
    if !dirty.is_empty() {
        let shown: Vec<&str> = dirty.iter().take(5).map(|s| s.as_str()).collect();
        problems.push(format!(
            "the working tree of {} has uncommitted changes ({}{}): commit or stash them",
            repo.root.display(),
            shown.join(", "),
            if dirty.len() > 5 { ", ..." } else { "" }
        ));
    }
    match repo.current_branch()? {
        Some(b) if b == config.package.release_branch => {}
        _ if any_branch => {}
        other => problems.push(format!(
            "on {}, but releases are cut from `{}`: `git switch {}` (or set \
             package.release_branch in {})",
            other
                .map(|b| format!("branch `{b}`"))
                .unwrap_or_else(|| "a detached HEAD".into()),
            config.package.release_branch,
            config.package.release_branch,
            config.path.display()
        )),
    }
    Ok(problems)
}

/// Where a release starts: a bump to make, or a release commit and tag that
/// are already there.
pub enum Start {
    Bump(Plan),
    Tagged(Bumped),
}

/// Every check before anything changes; all problems at once, each with its
/// fix.
pub async fn preflight(
    project: &Path,
    repo: &Repo,
    config: &Config,
    opts: &ReleaseOptions,
) -> Result<(Start, Docker)> {
    // A dry run changes nothing, so it may verify any branch (a merge request).
    let mut problems = tree_problems(repo, config, opts.tagged || opts.dry_run)?;
    if config.build.builder == Builder::DpkgBuildpackage && !project.join("debian").is_dir() {
        problems.push(format!(
            "{} has no debian/ directory: the dpkg-buildpackage builder needs debian/control, \
             debian/rules and debian/changelog (or set build.builder = \"cargo-deb\" in {})",
            project.display(),
            config.path.display()
        ));
    }
    let plan = if opts.tagged {
        bump::tagged(project, repo, config).map(Start::Tagged)
    } else {
        bump::plan(project, repo, config, &opts.version).map(Start::Bump)
    };
    let plan = match plan {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    let docker = match docker::connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(format!("{e:#}"));
            None
        }
    };
    match (plan, docker) {
        (Some(plan), Some(docker)) if problems.is_empty() => Ok((plan, docker)),
        _ => Err(refusal("preflight failed, nothing was changed", &problems)),
    }
}

/// The error for a refused command: `headline` and every problem as an
/// indented list item.
pub fn refusal(headline: &str, problems: &[String]) -> anyhow::Error {
    anyhow!(
        "{headline}:\n{}",
        problems
            .iter()
            .map(|p| format!("  - {}", p.replace('\n', "\n    ")))
            .collect::<Vec<_>>()
            .join("\n")
    )
}
