//! The version bump: which version comes next, the version file(s) and the
//! new `debian/changelog` entry, the `Release X.Y.Z` commit and its annotated
//! tag. `plan` makes every check without writing (preflight uses it);
//! `apply` writes, commits and tags, and puts the files back if a step fails.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset};
use debian_changelog::{ChangeLog, Urgency};
use debversion::Version;

use crate::config::{Config, VersionFile};
use crate::support::git::{Commit, Repo};

const CHANGELOG: &str = "debian/changelog";
/// Debian's changelog lines stay under 80 columns (lintian warns otherwise).
const CHANGELOG_WIDTH: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bump {
    Major,
    Minor,
    Patch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRequest {
    /// `--version X.Y.Z`: the upstream version, without Debian revision.
    Exact(String),
    /// `--bump`: the previous release's version, bumped.
    Bump(Bump),
}

/// `X.Y.Z` bumped; anything else is refused, since a bump of `1.2rc1` has no
/// obvious answer.
pub fn next_version(previous: &str, bump: Bump) -> Result<String> {
    let parts: Vec<u64> = previous
        .split('.')
        .map(|p| {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                p.parse().ok()
            }
        })
        .collect::<Option<_>>()
        .filter(|parts: &Vec<u64>| parts.len() == 3)
        .with_context(|| {
            format!(
                "cannot bump {previous}: --bump needs a MAJOR.MINOR.PATCH version; pass the \
                 new version with --version instead"
            )
        })?;
    let (major, minor, patch) = (parts[0], parts[1], parts[2]);
    Ok(match bump {
        Bump::Major => format!("{}.0.0", major + 1),
        Bump::Minor => format!("{major}.{}.0", minor + 1),
        Bump::Patch => format!("{major}.{minor}.{}", patch + 1),
    })
}

/// The greatest release tag in HEAD's history (by Debian version order) and its upstream
/// version; tags that `package.tag_format` does not name are ignored.
pub fn previous_release(repo: &Repo, config: &Config) -> Result<Option<(String, String)>> {
    release_below(repo, config, None)
}

/// The greatest release tag whose version sorts below `below` (all when None).
fn release_below(
    repo: &Repo,
    config: &Config,
    below: Option<&Version>,
) -> Result<Option<(String, String)>> {
    let mut best: Option<(Version, String, String)> = None;
    for tag in repo.tags_in_history()? {
        let Some(upstream) = config.version_of_tag(&tag) else {
            continue;
        };
        let Ok(parsed) = upstream.parse::<Version>() else {
            continue;
        };
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        if below.is_some_and(|b| parsed >= *b) {
            continue;
        }
        if best.as_ref().is_none_or(|(v, _, _)| parsed > *v) {
            best = Some((parsed, tag.clone(), upstream.to_string()));
        }
    }
    Ok(best.map(|(_, tag, upstream)| (tag, upstream)))
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
        .filter_map(|t| {
            config
                .version_of_tag(t)
                .map(|v| (t.to_string(), v.to_string()))
        })
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
    Ok(Bumped {
        previous_tag: previous.as_ref().map(|(t, _)| t.clone()),
        previous_version: previous.map(|(_, v)| v),
        upstream,
        debian_version: debian,
        tag,
        commit: head,
        changes,
    })
}

/// The new upstream version must sort after the previous release's
/// (`previous` is `(tag, upstream version)`).
pub fn check_greater(new: &str, previous: &(String, String)) -> Result<()> {
    let (tag, old) = previous;
    let new_v: Version = new
        .parse()
        .with_context(|| format!("version {new} is not a valid Debian version"))?;
    let old_v: Version = old
        .parse()
        .with_context(|| format!("the previous release's version {old} (tag {tag}) is invalid"))?;
    if new_v.cmp(&old_v) != Ordering::Greater {
        bail!(
            "version {new} is not greater than the previous release {old} (tag {tag}); pass a \
             higher --version or use --bump"
        );
    }
    Ok(())
}

/// An upstream version as Debian accepts it: starts with a digit, only
/// `[0-9A-Za-z.+~-]`, and no `-` when there is no Debian revision to split
/// it from.
fn validate_upstream(upstream: &str, config: &Config) -> Result<()> {
    let fix = "pass a version like 1.2.3 with --version";
    if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("version `{upstream}` must start with a digit; {fix}");
    }
    if let Some(c) = upstream.chars().find(|c| !is_version_char(*c)) {
        bail!(
            "version `{upstream}` contains `{c}`; Debian versions use only letters, digits \
             and . + ~ -; {fix}"
        );
    }
    if config.package.debian_revision.is_empty() && upstream.contains('-') {
        bail!(
            "version `{upstream}` contains `-`, which a native package (empty \
             package.debian_revision in {}) cannot have; {fix}",
            release_toml(config)
        );
    }
    config
        .debian_version(upstream)
        .parse::<Version>()
        .with_context(|| format!("version `{upstream}` is not a valid Debian version; {fix}"))?;
    Ok(())
}

fn is_version_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | '-')
}

fn release_toml(config: &Config) -> String {
    if config.path.as_os_str().is_empty() {
        crate::config::FILE_NAME.to_string()
    } else {
        config.path.display().to_string()
    }
}

// ---------------------------------------------------------------------------
// Version files

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    /// `{version}`: the full Debian version.
    Version,
    /// `{upstream}`: without the Debian revision.
    Upstream,
}

/// Where a placeholder's version sits in a line (bytes) and which it is.
type Span = (std::ops::Range<usize>, Piece);

/// The `line` template of a version file, split at its placeholders.
fn parse_template(template: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut rest = template;
    loop {
        let next = [
            ("{version}", Piece::Version),
            ("{upstream}", Piece::Upstream),
        ]
        .into_iter()
        .filter_map(|(p, piece)| rest.find(p).map(|at| (at, p.len(), piece)))
        .min_by_key(|(at, _, _)| *at);
        let Some((at, len, piece)) = next else {
            if !rest.is_empty() {
                pieces.push(Piece::Text(rest.to_string()));
            }
            return pieces;
        };
        if at > 0 {
            pieces.push(Piece::Text(rest[..at].to_string()));
        }
        pieces.push(piece);
        rest = &rest[at + len..];
    }
}

/// Where each placeholder's version sits in `line` (byte ranges), if the
/// line is the template with versions filled in. Leading and trailing
/// whitespace of the line and the template are ignored.
fn match_line(pieces: &[Piece], line: &str) -> Option<Vec<Span>> {
    let start = line.len() - line.trim_start().len();
    let end = line.trim_end().len();
    let mut pieces = pieces.to_vec();
    if let Some(Piece::Text(t)) = pieces.first_mut() {
        *t = t.trim_start().to_string();
    }
    if let Some(Piece::Text(t)) = pieces.last_mut() {
        *t = t.trim_end().to_string();
    }
    let mut spans = Vec::new();
    match_from(&pieces, line, start, end, &mut spans).then_some(spans)
}

/// Backtracking, so a version followed by text that could itself be part of
/// a version (`{version}-beta`) still matches.
fn match_from(pieces: &[Piece], line: &str, at: usize, end: usize, spans: &mut Vec<Span>) -> bool {
    let Some((piece, rest)) = pieces.split_first() else {
        return at == end;
    };
    match piece {
        Piece::Text(text) => {
            line[at..end].starts_with(text.as_str())
                && match_from(rest, line, at + text.len(), end, spans)
        }
        Piece::Version | Piece::Upstream => {
            let run = line[at..end]
                .find(|c: char| !is_version_char(c))
                .unwrap_or(end - at);
            for len in (1..=run).rev() {
                spans.push((at..at + len, piece.clone()));
                if match_from(rest, line, at + len, end, spans) {
                    return true;
                }
                spans.pop();
            }
            false
        }
    }
}

/// The one line of `text` that matches the template: (byte offset of the
/// line, its spans). Errors name the file and say how to fix it.
fn find_version_line(
    text: &str,
    file: &VersionFile,
    config: &Config,
) -> Result<(usize, Vec<Span>)> {
    let pieces = parse_template(&file.line);
    let mut found = Vec::new();
    let mut offset = 0;
    for (number, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches('\n').trim_end_matches('\r');
        if let Some(spans) = match_line(&pieces, line) {
            found.push((number + 1, offset, spans));
        }
        offset += raw.len();
    }
    match found.len() {
        1 => {
            let (_, offset, spans) = found.remove(0);
            Ok((offset, spans))
        }
        0 => bail!(
            "{}: no line looks like `{}` (a version is made of letters, digits and . + ~ -)\n  \
             fix the file or the `line` key in {} package.version_files",
            file.path.display(),
            file.line,
            release_toml(config)
        ),
        _ => bail!(
            "{}: {} lines look like `{}` (lines {}), so which one holds the version is \
             ambiguous\n  fix: make the `line` key in {} package.version_files match only one",
            file.path.display(),
            found.len(),
            file.line,
            found
                .iter()
                .map(|(n, _, _)| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            release_toml(config)
        ),
    }
}

fn read_listed_file(project: &Path, file: &VersionFile, config: &Config) -> Result<String> {
    let path = project.join(&file.path);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{}: not found; it is listed in {} package.version_files\n  fix: correct the \
             `path` there (relative to {}) or add the file",
            file.path.display(),
            release_toml(config),
            project.display()
        ),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The version written in one version file (as the template's first
/// placeholder stands: full Debian version for `{version}`).
pub fn read_version_file(project: &Path, config: &Config, file: &VersionFile) -> Result<String> {
    let text = read_listed_file(project, file, config)?;
    let (offset, spans) = find_version_line(&text, file, config)?;
    let (range, _) = &spans[0];
    Ok(text[offset + range.start..offset + range.end].to_string())
}

/// Every version file's current version, in `package.version_files` order.
pub fn read_version_files(project: &Path, config: &Config) -> Result<Vec<(PathBuf, String)>> {
    config
        .package
        .version_files
        .iter()
        .map(|f| Ok((f.path.clone(), read_version_file(project, config, f)?)))
        .collect()
}

/// A file's content before and after the bump; `path` is relative to the
/// project.
#[derive(Debug, Clone)]
struct FileEdit {
    path: PathBuf,
    before: String,
    after: String,
}

fn version_file_edits(project: &Path, config: &Config, upstream: &str) -> Result<Vec<FileEdit>> {
    let debian = config.debian_version(upstream);
    let mut edits: Vec<FileEdit> = Vec::new();
    for file in &config.package.version_files {
        // Two entries for one file (two lines) edit the same text in turn.
        let index = match edits.iter().position(|e| e.path == file.path) {
            Some(i) => i,
            None => {
                let text = read_listed_file(project, file, config)?;
                edits.push(FileEdit {
                    path: file.path.clone(),
                    before: text.clone(),
                    after: text,
                });
                edits.len() - 1
            }
        };
        let edit = &mut edits[index];
        let (offset, spans) = find_version_line(&edit.after, file, config)?;
        for (range, piece) in spans.iter().rev() {
            let value = if *piece == Piece::Version {
                &debian
            } else {
                upstream
            };
            edit.after
                .replace_range(offset + range.start..offset + range.end, value);
        }
    }
    Ok(edits)
}

/// Writes `upstream` into every version file; returns the files written
/// (relative to `project`). All files are checked before any is written.
pub fn rewrite_version_files(
    project: &Path,
    config: &Config,
    upstream: &str,
) -> Result<Vec<PathBuf>> {
    let edits = version_file_edits(project, config, upstream)?;
    write_edits(project, &edits)?;
    Ok(edits.into_iter().map(|e| e.path).collect())
}

/// Writes every edit's new content; on a failure the files already written
/// get their old content back.
fn write_edits(project: &Path, edits: &[FileEdit]) -> Result<()> {
    for (i, edit) in edits.iter().enumerate() {
        let path = project.join(&edit.path);
        if let Err(e) = std::fs::write(&path, &edit.after) {
            restore(project, &edits[..i]);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
    }
    Ok(())
}

fn restore(project: &Path, edits: &[FileEdit]) {
    for edit in edits {
        let path = project.join(&edit.path);
        if let Err(e) = std::fs::write(&path, &edit.before) {
            eprintln!(
                "warning: could not restore {}: {e}; `git checkout -- {}` puts it back",
                path.display(),
                edit.path.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// debian/changelog

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogEntry {
    pub package: String,
    /// The full Debian version (`4.13.0-1`).
    pub version: String,
    pub distribution: String,
    pub urgency: String,
    /// One bullet each (commit subjects).
    pub changes: Vec<String>,
    /// `Name <email>`.
    pub maintainer: String,
    pub date: DateTime<FixedOffset>,
}

/// Reads and parses `debian/changelog`; a malformed one is refused with the
/// line of the first problem.
fn read_changelog(project: &Path) -> Result<(String, ChangeLog)> {
    let path = project.join(CHANGELOG);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let what = if project.join("debian").is_dir() {
                "has no debian/changelog"
            } else {
                "has no debian/ directory (so no debian/changelog)"
            };
            bail!(
                "{} {what}: the release adds its entry there\n  fix: package the project for \
                 Debian first (`dh_make`, or copy debian/ from a similar project) and commit it",
                project.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let parsed = ChangeLog::parse(&text);
    if let Some((message, offset)) = parsed.errors_with_offsets().first() {
        let offset = usize::from(*offset).min(text.len());
        let line = text[..offset].matches('\n').count() + 1;
        let shown = text.lines().nth(line - 1).unwrap_or("").trim_end();
        bail!(
            "{CHANGELOG}: cannot parse it: line {line}: {message}: `{shown}`\n  fix: correct the \
             entry (format: `man deb-changelog`; `dpkg-parsechangelog -l {CHANGELOG}` shows \
             how dpkg reads it)"
        );
    }
    Ok((text.clone(), parsed.tree()))
}

/// The top entry's package and version.
fn changelog_top(project: &Path) -> Result<(String, String)> {
    let (_, changelog) = read_changelog(project)?;
    let entry = changelog.iter().next().with_context(|| {
        format!("{CHANGELOG}: has no entries; add a first one with `dch --create`")
    })?;
    let package = entry
        .package()
        .with_context(|| format!("{CHANGELOG}: line 1: the top entry has no package name"))?;
    let version = match entry.try_version() {
        Some(Ok(v)) => v.to_string(),
        Some(Err(e)) => bail!("{CHANGELOG}: line 1: the top entry's version is invalid: {e}"),
        None => bail!("{CHANGELOG}: line 1: the top entry has no version"),
    };
    Ok((package, version))
}

/// The version of the top entry of `debian/changelog`.
pub fn changelog_top_version(project: &Path) -> Result<String> {
    Ok(changelog_top(project)?.1)
}

/// The entry as Debian writes it: header, blank line, `  * change` bullets
/// (wrapped under 80 columns), blank line, ` -- Name <email>  date`.
pub fn render_changelog_entry(entry: &ChangelogEntry) -> Result<String> {
    let version: Version = entry.version.parse().with_context(|| {
        format!(
            "changelog entry: `{}` is not a valid Debian version",
            entry.version
        )
    })?;
    let urgency: Urgency = entry.urgency.parse().map_err(|_| {
        anyhow::anyhow!(
            "urgency `{}` is not one of low, medium, high, emergency, critical; fix \
             package.urgency in release.toml",
            entry.urgency
        )
    })?;
    let (name, email) = match debian_changelog::parseaddr(entry.maintainer.trim()) {
        (Some(name), email) if !email.is_empty() && !name.trim().is_empty() => {
            (name.trim().to_string(), email.to_string())
        }
        _ => bail!(
            "maintainer `{}` is not `Name <email>`; fix package.maintainer in release.toml \
             (or the git identity it defaults to)",
            entry.maintainer
        ),
    };
    if entry.package.is_empty() || entry.distribution.trim().is_empty() {
        bail!("changelog entry: the package name and the distribution must not be empty");
    }
    let lines: Vec<String> = entry
        .changes
        .iter()
        .flat_map(|change| wrap_bullet(change, CHANGELOG_WIDTH - 2))
        .collect();
    if lines.is_empty() {
        bail!("changelog entry for {}: no changes to list", entry.version);
    }
    let mut changelog = ChangeLog::new();
    let mut builder = changelog
        .new_empty_entry()
        .package(entry.package.clone())
        .version(version)
        .distributions(
            entry
                .distribution
                .split_whitespace()
                .map(String::from)
                .collect(),
        )
        .urgency(urgency)
        .maintainer((name, email))
        .datetime(entry.date);
    for line in lines {
        builder = builder.change_line(line);
    }
    builder
        .verify()
        .map_err(|e| anyhow::anyhow!("changelog entry: {e}"))?;
    builder.finish();
    Ok(changelog.to_string())
}

/// `* text` wrapped to `width` columns, continuation lines indented under
/// the text; a word longer than the width stays whole.
fn wrap_bullet(text: &str, width: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return Vec::new();
    }
    let mut lines = Vec::new();
    let mut current = String::from("*");
    for (i, word) in words.into_iter().enumerate() {
        // The first word of a line goes on it however long it is.
        let starts_line = i == 0 || current.trim().is_empty();
        if !starts_line && current.len() + 1 + word.len() > width {
            lines.push(std::mem::replace(&mut current, String::from(" ")));
        }
        current.push(' ');
        current.push_str(word);
    }
    lines.push(current);
    lines
}

fn changelog_edit(project: &Path, entry: &ChangelogEntry) -> Result<FileEdit> {
    let (before, _) = read_changelog(project)?;
    let rendered = render_changelog_entry(entry)?;
    let after = if before.trim().is_empty() {
        rendered
    } else {
        format!("{rendered}\n{before}")
    };
    // Read back what will be written: the new entry must be the top one.
    let parsed = ChangeLog::parse(&after);
    let top = parsed.tree().iter().next().and_then(|e| e.version());
    if !parsed.errors().is_empty() || top.map(|v| v.to_string()) != Some(entry.version.clone()) {
        bail!(
            "{CHANGELOG}: the new entry for {} does not read back as the top entry ({:?}); \
             this is a bug in the harness",
            entry.version,
            parsed.errors()
        );
    }
    Ok(FileEdit {
        path: PathBuf::from(CHANGELOG),
        before,
        after,
    })
}

/// Adds `entry` at the top of `debian/changelog`, leaving the rest byte for
/// byte.
pub fn prepend_changelog_entry(project: &Path, entry: &ChangelogEntry) -> Result<()> {
    let edit = changelog_edit(project, entry)?;
    write_edits(project, &[edit])
}

// ---------------------------------------------------------------------------
// The bump

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
    let (changelog_package, changelog_version) = changelog_top(project)?;
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
    let top: Version = changelog_version.parse()?;
    if debian_version.parse::<Version>()? <= top {
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
    let changes = repo.commits_since(previous.as_ref().map(|(t, _)| t.as_str()))?;
    if changes.is_empty() {
        match &previous {
            Some((t, _)) => bail!("no commits since {t}: nothing to release"),
            None => bail!("no commits: nothing to release"),
        }
    }

    let identity = repo.identity()?;
    let maintainer = config
        .package
        .maintainer
        .clone()
        .unwrap_or_else(|| format!("{} <{}>", identity.0, identity.1));
    let changelog = ChangelogEntry {
        package: changelog_package,
        version: debian_version.clone(),
        distribution: config.package.distribution.clone(),
        urgency: config.package.urgency.clone(),
        changes: changes.iter().map(|c| c.subject.clone()).collect(),
        maintainer,
        date: chrono::Local::now().fixed_offset(),
    };
    let plan = Plan {
        previous_tag: previous.as_ref().map(|(t, _)| t.clone()),
        previous_version: previous.map(|(_, v)| v),
        upstream: upstream.clone(),
        debian_version,
        tag,
        head,
        changes,
        changelog,
        commit_message: format!("Release {upstream}"),
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
    let dirty = repo.is_clean()?;
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
    use crate::support::git::testing::{commit_file, init, write};

    fn config(toml: &str) -> Config {
        Config::parse(toml, Path::new("release.toml")).unwrap()
    }

    fn scap_config() -> Config {
        config(
            "[package]\nname = \"scap\"\n[[package.version_files]]\npath = \
             \"scap/version.py\"\nline = '__version__ = \"{version}\"'\n",
        )
    }

    const VERSION_PY: &str =
        "# -*- coding: utf-8 -*-\n\"\"\"Version.\"\"\"\n\n__version__ = \"4.12.0-1\"\n";

    const CHANGELOG_4_12: &str = "scap (4.12.0-1) unstable; urgency=medium\n\n  * Old change\n\n \
         -- Old Maintainer <old@example.org>  Mon, 01 Jan 2024 10:00:00 +0000\n";

    fn msg(e: anyhow::Error) -> String {
        format!("{e:#}")
    }

    /// A scap-like repository released as 4.12.0, with two commits since.
    fn scap_repo(dir: &Path) -> Repo {
        let repo = init(dir);
        write(&repo, "scap/version.py", VERSION_PY);
        write(&repo, "debian/changelog", CHANGELOG_4_12);
        repo.git(&["add", "."]).unwrap();
        repo.git(&["commit", "--quiet", "-m", "Release 4.12.0"])
            .unwrap();
        repo.tag_annotated("4.12.0", "Release 4.12.0").unwrap();
        commit_file(&repo, "scap/sync.py", "x = 1\n", "sync: retry ssh once");
        commit_file(&repo, "scap/main.py", "y = 1\n", "Speed up canary checks");
        repo
    }

    fn dpkg_parsechangelog(project: &Path, field: &str) -> String {
        let out = std::process::Command::new("dpkg-parsechangelog")
            .arg("-l")
            .arg(project.join(CHANGELOG))
            .arg(format!("-S{field}"))
            .output()
            .expect("dpkg-parsechangelog (package dpkg-dev) is needed by this test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn next_versions() {
        assert_eq!(next_version("4.12.3", Bump::Major).unwrap(), "5.0.0");
        assert_eq!(next_version("4.12.3", Bump::Minor).unwrap(), "4.13.0");
        assert_eq!(next_version("4.12.3", Bump::Patch).unwrap(), "4.12.4");
        for bad in ["4.12", "4.12.0rc1", "v1.2.3", "1..2", "1.2.3.4"] {
            let err = msg(next_version(bad, Bump::Patch).unwrap_err());
            assert!(err.contains(&format!("cannot bump {bad}")), "{err}");
            assert!(err.contains("--version"), "{err}");
        }
    }

    #[test]
    fn previous_release_is_the_greatest_matching_tag() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "a", "1\n", "First");
        for tag in ["v1.9.0", "v1.10.0", "v1.2", "v2.0.0-beta", "2.5.0", "vnext"] {
            repo.tag_annotated(tag, "t").unwrap();
        }
        let c = config("[package]\ntag_format = \"v{version}\"\n");
        // 2.0.0-beta is greater than 1.10.0 for dpkg; 2.5.0 has no `v`.
        assert_eq!(
            previous_release(&repo, &c).unwrap(),
            Some(("v2.0.0-beta".into(), "2.0.0-beta".into()))
        );
        repo.delete_tag("v2.0.0-beta").unwrap();
        assert_eq!(
            previous_release(&repo, &c).unwrap(),
            Some(("v1.10.0".into(), "1.10.0".into()))
        );
        let none = config("[package]\ntag_format = \"release-{version}\"\n");
        assert_eq!(previous_release(&repo, &none).unwrap(), None);
    }

    #[test]
    fn a_maintenance_branch_sees_only_its_own_releases() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "a", "1\n", "First");
        repo.tag_annotated("1.0.0", "t").unwrap();
        commit_file(&repo, "a", "2\n", "Second");
        repo.tag_annotated("2.0.0", "t").unwrap();
        repo.git(&["switch", "-q", "-c", "maint-1", "1.0.0"])
            .unwrap();
        commit_file(&repo, "b", "fix\n", "A fix for 1.x");
        let c = config("");
        assert_eq!(
            previous_release(&repo, &c).unwrap(),
            Some(("1.0.0".into(), "1.0.0".into()))
        );
        assert_eq!(next_version("1.0.0", Bump::Patch).unwrap(), "1.0.1");
    }

    #[test]
    fn check_greater_uses_debian_order() {
        let prev = ("1.2.0".to_string(), "1.2.0".to_string());
        check_greater("1.10.0", &prev).unwrap();
        let err = msg(check_greater("1.2.0", &prev).unwrap_err());
        assert_eq!(
            err,
            "version 1.2.0 is not greater than the previous release 1.2.0 (tag 1.2.0); pass a \
             higher --version or use --bump"
        );
        assert!(check_greater("1.2.0~rc1", &prev).is_err());
    }

    #[test]
    fn template_matching() {
        let pieces = parse_template("__version__ = \"{version}\"");
        let spans = match_line(&pieces, "  __version__ = \"4.12.0-1\"  ").unwrap();
        assert_eq!(spans, vec![(17..25, Piece::Version)]);
        assert!(match_line(&pieces, "__version__ = '4.12.0-1'").is_none());
        assert!(match_line(&pieces, "__version__ = \"\"").is_none());
        assert!(match_line(&pieces, "x__version__ = \"1\"").is_none());
        // Text after the placeholder that could belong to a version.
        let pieces = parse_template("v{upstream}-beta ({version})");
        let spans = match_line(&pieces, "v1.2-beta (1.2-1)").unwrap();
        assert_eq!(
            spans,
            vec![(1..4, Piece::Upstream), (11..16, Piece::Version)]
        );
    }

    #[test]
    fn version_file_rewrite_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let text = "# header\r\n__version__ = \"4.12.0-1\"  # keep me? no\r\n";
        std::fs::create_dir_all(dir.path().join("scap")).unwrap();
        // A trailing comment is not part of the template: no match.
        std::fs::write(dir.path().join("scap/version.py"), text).unwrap();
        let err = msg(rewrite_version_files(dir.path(), &scap_config(), "4.13.0").unwrap_err());
        assert!(
            err.contains("scap/version.py: no line looks like `__version__ = \"{version}\"`"),
            "{err}"
        );
        assert!(
            err.contains("fix the file or the `line` key in release.toml"),
            "{err}"
        );

        let text = "# header\r\n\t__version__ = \"4.12.0-1\"\r\nother = \"4.12.0-1\"\r\n";
        std::fs::write(dir.path().join("scap/version.py"), text).unwrap();
        let written = rewrite_version_files(dir.path(), &scap_config(), "4.13.0").unwrap();
        assert_eq!(written, vec![PathBuf::from("scap/version.py")]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("scap/version.py")).unwrap(),
            "# header\r\n\t__version__ = \"4.13.0-1\"\r\nother = \"4.12.0-1\"\r\n"
        );
        assert_eq!(
            read_version_files(dir.path(), &scap_config()).unwrap(),
            vec![(PathBuf::from("scap/version.py"), "4.13.0-1".to_string())]
        );
    }

    #[test]
    fn version_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let c = scap_config();
        let err = msg(rewrite_version_files(dir.path(), &c, "4.13.0").unwrap_err());
        assert!(
            err.starts_with(
                "scap/version.py: not found; it is listed in release.toml package.version_files"
            ),
            "{err}"
        );

        std::fs::create_dir_all(dir.path().join("scap")).unwrap();
        let twice = "__version__ = \"1.0-1\"\nx = 1\n__version__ = \"2.0-1\"\n";
        std::fs::write(dir.path().join("scap/version.py"), twice).unwrap();
        let err = msg(rewrite_version_files(dir.path(), &c, "4.13.0").unwrap_err());
        assert!(err.contains("scap/version.py: 2 lines look like"), "{err}");
        assert!(err.contains("(lines 1, 3)"), "{err}");
        // Nothing was written.
        assert_eq!(
            std::fs::read_to_string(dir.path().join("scap/version.py")).unwrap(),
            twice
        );

        std::fs::write(dir.path().join("scap/version.py"), "VERSION = 3\n").unwrap();
        let err = msg(read_version_file(dir.path(), &c, &c.package.version_files[0]).unwrap_err());
        assert!(err.contains("scap/version.py: no line looks like"), "{err}");
    }

    #[test]
    fn upstream_placeholder_has_no_revision() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("setup.py"),
            "setup(\n    name='scap',\n    version='4.12.0',\n)\n",
        )
        .unwrap();
        let c = config(
            "[package]\nname = \"scap\"\n[[package.version_files]]\npath = \"setup.py\"\n\
             line = \"version='{upstream}',\"\n",
        );
        rewrite_version_files(dir.path(), &c, "4.13.0").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("setup.py")).unwrap(),
            "setup(\n    name='scap',\n    version='4.13.0',\n)\n"
        );
    }

    fn entry(changes: &[&str]) -> ChangelogEntry {
        ChangelogEntry {
            package: "scap".into(),
            version: "4.13.0-1".into(),
            distribution: "unstable".into(),
            urgency: "medium".into(),
            changes: changes.iter().map(|s| s.to_string()).collect(),
            maintainer: "Release Tester <tester@example.org>".into(),
            date: DateTime::parse_from_rfc3339("2024-03-05T14:07:09+01:00").unwrap(),
        }
    }

    #[test]
    fn changelog_entry_is_rendered_the_debian_way() {
        let long = "sync: when a target is unreachable, retry the rsync once with a longer \
                    timeout before counting it as failed";
        let text = render_changelog_entry(&entry(&["Speed up canary checks", long])).unwrap();
        assert_eq!(
            text,
            "scap (4.13.0-1) unstable; urgency=medium\n\
             \n  * Speed up canary checks\
             \n  * sync: when a target is unreachable, retry the rsync once with a longer\
             \n    timeout before counting it as failed\
             \n\n -- Release Tester <tester@example.org>  Tue, 05 Mar 2024 14:07:09 +0100\n"
        );
        assert!(text.lines().all(|l| l.len() < 80));

        let mut bad = entry(&["x"]);
        bad.maintainer = "tester@example.org".into();
        let err = msg(render_changelog_entry(&bad).unwrap_err());
        assert!(err.contains("is not `Name <email>`"), "{err}");
        let mut bad = entry(&["x"]);
        bad.urgency = "whenever".into();
        assert!(msg(render_changelog_entry(&bad).unwrap_err()).contains("package.urgency"));
        assert!(render_changelog_entry(&entry(&[" "])).is_err());
    }

    #[test]
    fn changelog_prepend_is_read_by_dpkg() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("debian")).unwrap();
        std::fs::write(dir.path().join(CHANGELOG), CHANGELOG_4_12).unwrap();
        prepend_changelog_entry(dir.path(), &entry(&["First", "Second"])).unwrap();
        let text = std::fs::read_to_string(dir.path().join(CHANGELOG)).unwrap();
        assert!(text.ends_with(&format!("\n\n{CHANGELOG_4_12}")), "{text}");
        assert_eq!(dpkg_parsechangelog(dir.path(), "Version"), "4.13.0-1\n");
        assert_eq!(
            dpkg_parsechangelog(dir.path(), "Changes"),
            "\nscap (4.13.0-1) unstable; urgency=medium\n.\n  * First\n  * Second\n"
        );
        assert_eq!(changelog_top_version(dir.path()).unwrap(), "4.13.0-1");
    }

    #[test]
    fn changelog_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = msg(changelog_top_version(dir.path()).unwrap_err());
        assert!(err.contains("has no debian/ directory"), "{err}");
        std::fs::create_dir_all(dir.path().join("debian")).unwrap();
        let err = msg(changelog_top_version(dir.path()).unwrap_err());
        assert!(err.contains("has no debian/changelog"), "{err}");

        let broken = "scap (4.12.0-1) unstable; urgency=medium\n\n  * Old change\n\n \
                      -- Old Maintainer <old@example.org> Mon, 01 Jan 2024\n";
        std::fs::write(dir.path().join(CHANGELOG), broken).unwrap();
        let err = msg(prepend_changelog_entry(dir.path(), &entry(&["x"])).unwrap_err());
        assert!(
            err.starts_with("debian/changelog: cannot parse it: line 5: "),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CHANGELOG)).unwrap(),
            broken
        );
        std::fs::write(
            dir.path().join(CHANGELOG),
            format!("scap 4.12.1 unstable; urgency=medium\n\n{CHANGELOG_4_12}"),
        )
        .unwrap();
        let err = msg(changelog_top_version(dir.path()).unwrap_err());
        assert!(
            err.starts_with("debian/changelog: cannot parse it: line 1: "),
            "{err}"
        );
    }

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

        assert!(repo.is_clean().unwrap().is_empty());
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
        assert!(repo.is_clean().unwrap().is_empty());

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
        let err = msg(plan(dir.path(), &repo, &c, &exact("5.0~rc1")).unwrap_err());
        assert!(
            err.contains("`5.0~rc1` is not a valid git tag name"),
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
        c2.package.version_files[0].path = "scap/_version.py".into();
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
        let p = plan(
            dir.path(),
            &repo,
            &scap_config(),
            &VersionRequest::Bump(Bump::Patch),
        )
        .unwrap();
        assert_eq!(p.previous_tag, None);
        assert_eq!(p.upstream, "4.12.1");
        assert_eq!(p.changes.len(), 1);
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
        assert!(repo.is_clean().unwrap().is_empty(), "{:?}", repo.is_clean());
        assert_eq!(changelog_top_version(dir.path()).unwrap(), "4.12.0-1");
    }
}
