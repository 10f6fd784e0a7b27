//! The bump: the plan (which version comes next, the version files' and the
//! changelog's new content, the `Release X.Y.Z` commit and its annotated tag),
//! made with every check and without writing, which preflight uses; applying
//! it, which puts the files, commit and tag back if a step fails; and a
//! release whose commit and tag were made beforehand (`--tagged`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use debversion::Version;

use crate::config::Config;
use crate::release::changelog::{
    changelog_edit, changelog_top, changelog_top_version, ChangelogEntry, CHANGELOG,
};
use crate::release::version::{
    check_greater, next_version, previous_release, read_version_files, release_below, release_toml,
    restore, validate_upstream, version_file_edits, write_edits, FileEdit, VersionRequest,
};
use crate::support::git::{Commit, Repo};

/// Everything decided before anything is written. It holds no path, so it
/// can be applied in a scratch clone of the repository it was made in.
#[derive(Debug, Clone)]
pub struct Plan {
    pub previous_tag: Option<String>,
    pub previous_version: Option<String>,
    pub upstream: String,
    pub debian_version: String,
    pub tag: String,
    /// The commit the release is cut from.
    pub head: String,
    pub changes: Vec<Commit>,
    pub changelog: ChangelogEntry,
    pub commit_message: String,
}

#[derive(Debug, Clone)]
pub struct Bumped {
    pub previous_tag: Option<String>,
    pub previous_version: Option<String>,
    pub upstream: String,
    pub debian_version: String,
    pub tag: String,
    /// The release commit's sha.
    pub commit: String,
    /// The release commit's subject.
    pub subject: String,
    pub changes: Vec<Commit>,
}

/// Decides the release and checks it can be made, without writing anything.
pub fn plan(
    project: &Path,
    repo: &Repo,
    config: &Config,
    request: &VersionRequest,
) -> Result<Plan> {
    let previous = previous_release(repo, config)?;
    let top = changelog_top(project)?;
    let changelog_version = top.version.clone();
    let upstream = match request {
        VersionRequest::Exact(v) => v.trim().to_string(),
        VersionRequest::Bump(bump) => match &previous {
            Some((_, v)) => next_version(v, *bump)?,
            // No release tag yet: the changelog says where the project stands.
            None => {
                let top: Version = changelog_version.parse()?;
                next_version(&top.upstream_version, *bump).with_context(|| {
                    format!(
                        "no release tag matches `{}` and the top of {CHANGELOG} is {}",
                        config.package.tag_format, changelog_version
                    )
                })?
            }
        },
    };
    validate_upstream(&upstream, config)?;
    if let Some(previous) = &previous {
        check_greater(&upstream, previous)?;
    }
    let debian_version = config.debian_version(&upstream);
    if debian_version.parse::<Version>()? <= changelog_version.parse::<Version>()? {
        bail!(
            "{CHANGELOG} already starts with version {changelog_version}, not lower than the \
             new {debian_version}: the harness writes the release's entry itself\n  fix: remove \
             that entry (or pass a higher --version)"
        );
    }

    let tag = config.tag_for(&upstream);
    check_tag_name(repo, &tag)?;
    if let Some(at) = repo.tag_commit(&tag)? {
        bail!("tag {tag} already exists (at {at}): delete it or pick another version");
    }

    let head = repo.head()?;
    // Without a release tag, the last change of the changelog is where the
    // previous release was written down.
    let since = match &previous {
        Some((t, _)) => Some(t.clone()),
        None => last_change_of(repo, &project.join(CHANGELOG))?,
    };
    let changes = repo.commits_since(since.as_deref())?;
    if changes.is_empty() {
        match (&previous, &since) {
            (Some((t, _)), _) => bail!("no commits since {t}: nothing to release"),
            (None, Some(sha)) => bail!(
                "no commits since {} (the last change of {CHANGELOG}): nothing to release",
                &sha[..10.min(sha.len())]
            ),
            (None, None) => bail!("no commits: nothing to release"),
        }
    }

    let identity = repo.identity()?;
    let maintainer = config
        .package
        .maintainer
        .clone()
        .unwrap_or_else(|| format!("{} <{}>", identity.0, identity.1));
    let changelog = ChangelogEntry {
        package: top.package.clone(),
        version: debian_version.clone(),
        distribution: config.distribution().to_string(),
        urgency: config.urgency().to_string(),
        changes: changes.iter().map(|c| c.subject.clone()).collect(),
        maintainer,
        date: chrono::Local::now().fixed_offset(),
    };
    let plan = Plan {
        previous_tag: previous.as_ref().map(|(t, _)| t.clone()),
        previous_version: previous.map(|(_, v)| v),
        upstream: upstream.clone(),
        debian_version: debian_version.clone(),
        tag: tag.clone(),
        head,
        changes,
        commit_message: config.render(
            &config.package.commit_subject,
            &[
                ("version", &upstream),
                ("debian_version", &debian_version),
                ("tag", &tag),
            ],
        ),
        changelog,
    };
    let edits = edits(project, config, &plan)?;
    check_not_dirty(project, repo, &edits)?;
    Ok(plan)
}

/// Writes the version files and the changelog entry, commits them as
/// `Release X.Y.Z` and makes the annotated tag, in `repo` (the repository the
/// plan was made in, or a scratch clone of it). On a failure nothing is left
/// behind: files, commit and tag are taken back.
pub fn apply(project: &Path, repo: &Repo, config: &Config, plan: &Plan) -> Result<Bumped> {
    let head = repo.head()?;
    if head != plan.head {
        bail!(
            "{}: HEAD is at {head}, but the release was planned at {}; run the release again",
            repo.root.display(),
            plan.head
        );
    }
    if let Some(at) = repo.tag_commit(&plan.tag)? {
        bail!(
            "tag {} already exists (at {at}): delete it or pick another version",
            plan.tag
        );
    }
    let edits = edits(project, config, plan)?;
    let paths: Vec<PathBuf> = edits.iter().map(|e| project.join(&e.path)).collect();
    write_edits(project, &edits)?;
    let commit = match repo.commit_paths(&paths, &plan.commit_message) {
        Ok(sha) => sha,
        Err(e) => {
            restore(project, &edits);
            // A failed commit (a hook, say) may have left the files staged.
            let _ = repo.undo_commit(&head, &paths);
            return Err(e.context("committing the release"));
        }
    };
    let message = format!(
        "Release {} ({} {})",
        plan.upstream, plan.changelog.package, plan.debian_version
    );
    if let Err(e) = repo.tag_annotated(&plan.tag, &message) {
        let undone = repo.undo_commit(&head, &paths);
        restore(project, &edits);
        if let Err(u) = undone {
            return Err(e.context(format!(
                "tagging the release; the release commit {commit} could not be taken back \
                 ({u:#}): `git reset --hard {head}` does it"
            )));
        }
        return Err(e.context("tagging the release (the release commit was taken back)"));
    }
    Ok(Bumped {
        previous_tag: plan.previous_tag.clone(),
        previous_version: plan.previous_version.clone(),
        upstream: plan.upstream.clone(),
        debian_version: plan.debian_version.clone(),
        tag: plan.tag.clone(),
        commit,
        subject: plan.commit_message.clone(),
        changes: plan.changes.clone(),
    })
}

/// `plan` then `apply`, in one repository.
pub fn bump(
    project: &Path,
    repo: &Repo,
    config: &Config,
    request: &VersionRequest,
) -> Result<Bumped> {
    let plan = plan(project, repo, config, request)?;
    apply(project, repo, config, &plan)
}

/// A release whose commit and tag were made beforehand (by `bump`, or by
/// hand as scap's maintainers did): HEAD carries a release tag, and the
/// version files and debian/changelog already say its version. Nothing is
/// written; the result reads like a bump that just happened.
pub fn tagged(project: &Path, repo: &Repo, config: &Config) -> Result<Bumped> {
    let head = repo.head()?;
    let at_head: Vec<(String, String)> = repo
        .git(&["tag", "--points-at", "HEAD"])?
        .lines()
        .filter_map(|t| config.version_of_tag(t).map(|v| (t.to_string(), v)))
        .collect();
    let (tag, upstream) = match at_head.as_slice() {
        [one] => one.clone(),
        [] => bail!(
            "--tagged: HEAD ({}) carries no release tag (tag_format `{}`)\n  fix: tag the \
             release commit (`release-harness bump` does it), or drop --tagged to bump here",
            &head[..10.min(head.len())],
            config.package.tag_format
        ),
        many => bail!(
            "--tagged: HEAD carries several release tags ({}); keep one",
            many.iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let debian = config.debian_version(&upstream);
    for (path, found) in read_version_files(project, config)? {
        if found != debian && found != upstream {
            bail!(
                "--tagged: {} says {found}, but HEAD is tagged {tag} ({debian})\n  fix: the \
                 release commit must carry the version; bump with `release-harness bump`",
                path.display()
            );
        }
    }
    let top = changelog_top_version(project)?;
    if top != debian {
        bail!(
            "--tagged: debian/changelog's top entry is {top}, but HEAD is tagged {tag} \
             ({debian})\n  fix: add the {debian} entry (`release-harness bump` writes it)"
        );
    }
    let parsed: Version = upstream
        .parse()
        .with_context(|| format!("tag {tag}: `{upstream}` is not a version"))?;
    let previous = release_below(repo, config, Some(&parsed))?;
    let mut changes = repo.commits_since(previous.as_ref().map(|(t, _)| t.as_str()))?;
    // The release commit itself is not a change of the release.
    changes.retain(|c| c.sha != head);
    let subject = repo.git(&["log", "-1", "--format=%s", "HEAD"])?;
    Ok(Bumped {
        previous_tag: previous.as_ref().map(|(t, _)| t.clone()),
        previous_version: previous.map(|(_, v)| v),
        upstream,
        debian_version: debian,
        tag,
        commit: head,
        subject,
        changes,
    })
}

fn edits(project: &Path, config: &Config, plan: &Plan) -> Result<Vec<FileEdit>> {
    let mut edits = version_file_edits(project, config, &plan.upstream)?;
    if edits.iter().any(|e| e.path == Path::new(CHANGELOG)) {
        bail!(
            "{}: package.version_files lists {CHANGELOG}, which the harness writes itself; \
             remove that entry",
            release_toml(config)
        );
    }
    edits.push(changelog_edit(project, &plan.changelog)?);
    Ok(edits)
}

/// The last commit in HEAD's history that changed `path`, if any.
fn last_change_of(repo: &Repo, path: &Path) -> Result<Option<String>> {
    let path = path.to_string_lossy();
    let sha = repo.git(&["log", "-1", "--format=%H", "HEAD", "--", &path])?;
    Ok(Some(sha.trim().to_string()).filter(|s| !s.is_empty()))
}

fn check_tag_name(repo: &Repo, tag: &str) -> Result<()> {
    let valid = repo
        .git(&["check-ref-format", &format!("refs/tags/{tag}")])
        .is_ok();
    if !valid {
        bail!("`{tag}` is not a valid git tag name; check package.tag_format and the version");
    }
    Ok(())
}

/// The files the bump writes must not carry uncommitted edits: the release
/// commit would take them along.
fn check_not_dirty(project: &Path, repo: &Repo, edits: &[FileEdit]) -> Result<()> {
    let dirty = repo.dirty_paths()?;
    if dirty.is_empty() {
        return Ok(());
    }
    let root = repo.root.canonicalize()?;
    let project = project
        .canonicalize()
        .with_context(|| format!("resolving {}", project.display()))?;
    for edit in edits {
        let full = project.join(&edit.path);
        let relative = full.strip_prefix(&root).unwrap_or(&full);
        if dirty.iter().any(|d| Path::new(d) == relative) {
            bail!(
                "{} has uncommitted changes, and the release commit would take them along\n  \
                 fix: commit or discard them first",
                edit.path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::testing::{
        dpkg_parsechangelog, msg, scap_config, scap_repo, CHANGELOG_4_12, VERSION_PY,
    };
    use crate::release::version::Bump;
    use crate::support::git::testing::{commit_file, init, write};

    #[test]
    fn bump_round_trip_on_a_scap_like_repository() {
        let dir = tempfile::tempdir().unwrap();
        let repo = scap_repo(dir.path());
        let c = scap_config();
        let bumped = bump(dir.path(), &repo, &c, &VersionRequest::Bump(Bump::Minor)).unwrap();
        assert_eq!(bumped.previous_tag.as_deref(), Some("4.12.0"));
        assert_eq!(bumped.previous_version.as_deref(), Some("4.12.0"));
        assert_eq!(bumped.upstream, "4.13.0");
        assert_eq!(bumped.debian_version, "4.13.0-1");
        assert_eq!(bumped.tag, "4.13.0");
        let subjects: Vec<&str> = bumped.changes.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(
            subjects,
            vec!["sync: retry ssh once", "Speed up canary checks"]
        );

        assert_eq!(
            std::fs::read_to_string(dir.path().join("scap/version.py")).unwrap(),
            VERSION_PY.replace("4.12.0-1", "4.13.0-1")
        );
        assert_eq!(dpkg_parsechangelog(dir.path(), "Version"), "4.13.0-1\n");
        let changes = dpkg_parsechangelog(dir.path(), "Changes");
        assert!(
            changes.ends_with("\n.\n  * sync: retry ssh once\n  * Speed up canary checks\n"),
            "{changes}"
        );
        assert_eq!(
            dpkg_parsechangelog(dir.path(), "Maintainer"),
            "Release Tester <tester@example.org>\n"
        );

        assert!(repo.dirty_paths().unwrap().is_empty());
        assert_eq!(repo.head().unwrap(), bumped.commit);
        assert_eq!(
            repo.git(&["log", "-1", "--format=%s"]).unwrap(),
            "Release 4.13.0"
        );
        let files = repo
            .git(&["show", "--name-only", "--format=", "HEAD"])
            .unwrap();
        assert_eq!(files, "debian/changelog\nscap/version.py");
        assert_eq!(repo.git(&["cat-file", "-t", "4.13.0"]).unwrap(), "tag");
        assert_eq!(
            repo.tag_commit("4.13.0").unwrap(),
            Some(bumped.commit.clone())
        );

        // Right after a release there is nothing new to release.
        let err = msg(plan(dir.path(), &repo, &c, &VersionRequest::Bump(Bump::Patch)).unwrap_err());
        assert_eq!(err, "no commits since 4.13.0: nothing to release");
    }

    #[test]
    fn plan_in_the_repository_apply_in_a_scratch_clone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = scap_repo(dir.path());
        let c = scap_config();
        let plan = plan(
            dir.path(),
            &repo,
            &c,
            &VersionRequest::Exact("5.0.0".into()),
        )
        .unwrap();
        assert_eq!(plan.debian_version, "5.0.0-1");
        assert_eq!(plan.changes.len(), 2);
        // Planning wrote nothing.
        assert!(repo.dirty_paths().unwrap().is_empty());

        let scratch = tempfile::tempdir().unwrap();
        let clone = repo.scratch_clone(&scratch.path().join("w")).unwrap();
        let bumped = apply(&clone.root, &clone, &c, &plan).unwrap();
        assert_eq!(clone.tag_commit("5.0.0").unwrap(), Some(bumped.commit));
        assert!(!repo.tag_exists("5.0.0").unwrap());
        assert_eq!(changelog_top_version(&clone.root).unwrap(), "5.0.0-1");
        assert_eq!(changelog_top_version(dir.path()).unwrap(), "4.12.0-1");
    }

    #[test]
    fn plan_errors() {
        let dir = tempfile::tempdir().unwrap();
        let repo = scap_repo(dir.path());
        let c = scap_config();
        let exact = |v: &str| VersionRequest::Exact(v.into());

        let err = msg(plan(dir.path(), &repo, &c, &exact("4.12.0")).unwrap_err());
        assert!(
            err.contains(
                "version 4.12.0 is not greater than the previous release 4.12.0 (tag 4.12.0)"
            ),
            "{err}"
        );
        let err = msg(plan(dir.path(), &repo, &c, &exact("v5")).unwrap_err());
        assert!(err.contains("must start with a digit"), "{err}");
        // Any Debian upstream version; git's refusal of `~` is met as DEP-14 does.
        let rc = plan(dir.path(), &repo, &c, &exact("5.0~rc1")).unwrap();
        assert_eq!(
            (rc.tag.as_str(), rc.debian_version.as_str()),
            ("5.0_rc1", "5.0~rc1-1")
        );
        let err = msg(plan(dir.path(), &repo, &c, &exact("4.12.0~rc1")).unwrap_err());
        assert!(
            err.contains("version 4.12.0~rc1 is not greater than the previous release 4.12.0"),
            "{err}"
        );

        write(
            &repo,
            "scap/version.py",
            "__version__ = \"4.12.0-1\"\n# wip\n",
        );
        let err = msg(plan(dir.path(), &repo, &c, &exact("4.13.0")).unwrap_err());
        assert!(
            err.starts_with("scap/version.py has uncommitted changes"),
            "{err}"
        );
        repo.git(&["checkout", "--", "scap/version.py"]).unwrap();

        let mut c2 = c.clone();
        c2.package.version_files.as_mut().unwrap()[0].path = "scap/_version.py".into();
        let err = msg(plan(dir.path(), &repo, &c2, &exact("4.13.0")).unwrap_err());
        assert!(err.contains("scap/_version.py: not found"), "{err}");

        // A hand-written entry at the top is not silently duplicated.
        let top = CHANGELOG_4_12.replace("4.12.0-1", "4.13.0-1");
        commit_file(
            &repo,
            CHANGELOG,
            &format!("{top}\n{CHANGELOG_4_12}"),
            "changelog by hand",
        );
        let err = msg(plan(dir.path(), &repo, &c, &exact("4.13.0")).unwrap_err());
        assert!(
            err.contains("already starts with version 4.13.0-1"),
            "{err}"
        );
    }

    #[test]
    fn first_release_bumps_from_the_changelog() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        write(&repo, "scap/version.py", VERSION_PY);
        write(&repo, CHANGELOG, CHANGELOG_4_12);
        repo.git(&["add", "."]).unwrap();
        repo.git(&["commit", "--quiet", "-m", "Initial import"])
            .unwrap();
        let c = scap_config();
        let err = msg(plan(dir.path(), &repo, &c, &VersionRequest::Bump(Bump::Patch)).unwrap_err());
        assert!(
            err.starts_with("no commits since ")
                && err.ends_with("(the last change of debian/changelog): nothing to release"),
            "{err}"
        );
        // Without a release tag, the changes are those since the changelog
        // last changed, not the whole history.
        commit_file(&repo, "scap/a.py", "1\n", "Before the 4.12.0 entry");
        commit_file(
            &repo,
            CHANGELOG,
            &format!("{CHANGELOG_4_12}\n"),
            "changelog: tidy",
        );
        commit_file(&repo, "scap/b.py", "1\n", "After the 4.12.0 entry");
        let p = plan(dir.path(), &repo, &c, &VersionRequest::Bump(Bump::Patch)).unwrap();
        assert_eq!(p.previous_tag, None);
        assert_eq!(p.upstream, "4.12.1");
        let subjects: Vec<&str> = p.changes.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(subjects, ["After the 4.12.0 entry"]);
    }

    #[test]
    fn the_new_entry_keeps_the_changelogs_conventions() {
        let dir = tempfile::tempdir().unwrap();
        let repo = scap_repo(dir.path());
        let wikimedia = CHANGELOG_4_12
            .replace("4.12.0-1", "4.12.0-1+deb12u1")
            .replace(
                "unstable; urgency=medium",
                "bookworm-wikimedia; urgency=low",
            );
        commit_file(&repo, CHANGELOG, &wikimedia, "Backport to bookworm");
        write(
            &repo,
            "release.toml",
            "[package]\nname = \"scap\"\ncommit_subject = \"Release {debian_version}\"\n\
             [[package.version_files]]\npath = \"scap/version.py\"\n\
             line = '__version__ = \"{upstream}\"'\n",
        );
        repo.git(&["add", "release.toml"]).unwrap();
        repo.git(&["commit", "--quiet", "-m", "release.toml"])
            .unwrap();
        let c = Config::load(dir.path()).unwrap();
        let bumped = bump(dir.path(), &repo, &c, &VersionRequest::Bump(Bump::Minor)).unwrap();
        assert_eq!(bumped.debian_version, "4.13.0-1+deb12u1");
        assert_eq!(
            dpkg_parsechangelog(dir.path(), "Distribution"),
            "bookworm-wikimedia\n"
        );
        assert_eq!(dpkg_parsechangelog(dir.path(), "Urgency"), "low\n");
        assert_eq!(
            repo.git(&["log", "-1", "--format=%s"]).unwrap(),
            "Release 4.13.0-1+deb12u1"
        );
        assert_eq!(bumped.subject, "Release 4.13.0-1+deb12u1");

        // release.toml says otherwise: it wins; a native changelog stays native.
        let mut c = c;
        c.package.distribution = Some("unstable".into());
        c.package.debian_revision = Some("2".into());
        assert_eq!(c.debian_version("5.0.0"), "5.0.0-2");
        let native = tempfile::tempdir().unwrap();
        let nrepo = init(native.path());
        write(
            &nrepo,
            CHANGELOG,
            &CHANGELOG_4_12.replace("4.12.0-1", "4.12.0"),
        );
        write(
            &nrepo,
            "release.toml",
            "[package]\nname = \"scap\"\nversion_files = []\n",
        );
        nrepo.git(&["add", "."]).unwrap();
        nrepo.git(&["commit", "--quiet", "-m", "Import"]).unwrap();
        let c = Config::load(native.path()).unwrap();
        assert!(c.version_files().is_empty(), "[] means none");
        assert_eq!(c.debian_version("4.13.0"), "4.13.0");
        commit_file(&nrepo, "tool.sh", "echo\n", "A change");
        let bumped = bump(
            native.path(),
            &nrepo,
            &c,
            &VersionRequest::Bump(Bump::Patch),
        )
        .unwrap();
        assert_eq!(bumped.debian_version, "4.12.1");
        let files = nrepo
            .git(&["show", "--name-only", "--format=", "HEAD"])
            .unwrap();
        assert_eq!(files, "debian/changelog", "the version lives there only");
    }

    #[test]
    fn apply_takes_everything_back_when_tagging_fails() {
        let dir = tempfile::tempdir().unwrap();
        let repo = scap_repo(dir.path());
        let c = scap_config();
        let p = plan(dir.path(), &repo, &c, &VersionRequest::Bump(Bump::Minor)).unwrap();
        let head = repo.head().unwrap();
        // A tag appearing between plan and apply.
        repo.tag_annotated("4.13.0", "race").unwrap();
        let err = msg(apply(dir.path(), &repo, &c, &p).unwrap_err());
        assert_eq!(
            err,
            format!("tag 4.13.0 already exists (at {head}): delete it or pick another version")
        );
        repo.delete_tag("4.13.0").unwrap();

        // A tag the ref store refuses: a directory in the way of the name.
        std::fs::create_dir_all(dir.path().join(".git/refs/tags/4.13.0/x")).unwrap();
        std::fs::write(
            dir.path().join(".git/refs/tags/4.13.0/x/y"),
            format!("{head}\n"),
        )
        .unwrap();
        let err = msg(apply(dir.path(), &repo, &c, &p).unwrap_err());
        assert!(err.contains("tagging the release"), "{err}");
        assert_eq!(repo.head().unwrap(), head);
        assert!(
            repo.dirty_paths().unwrap().is_empty(),
            "{:?}",
            repo.dirty_paths()
        );
        assert_eq!(changelog_top_version(dir.path()).unwrap(), "4.12.0-1");
    }
}
