//! Versions: reading and rewriting the version files (`package.version_files`
//! and their `line` templates), and the version arithmetic (the next version
//! of a bump, the previous release among the tags, Debian ordering and what
//! an upstream version may contain).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use debversion::Version;

use crate::config::{Config, VersionFile};
use crate::support::git::Repo;

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

/// `previous` bumped, for versions of any number of dotted numeric parts:
/// patch raises the last part; minor the one before it and zeroes the last;
/// major the first and zeroes the rest (`0.0.99.13`: patch `0.0.99.14`,
/// minor `0.0.100.0`, major `1.0.0.0`). A part that is not a plain number
/// (`1.0~rc1`, `2.0b`) has no rule: refused with that part named.
pub fn next_version(previous: &str, bump: Bump) -> Result<String> {
    let fix = "pass the new version with --version instead";
    let mut parts = Vec::new();
    for part in previous.split('.') {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            bail!(
                "cannot bump {previous}: its part `{part}` is not a number, and --bump only \
                 counts dotted numbers (like 4.12.0 or 0.0.99.13); {fix}"
            );
        }
        let n: u64 = part
            .parse()
            .with_context(|| format!("cannot bump {previous}: `{part}` is too large; {fix}"))?;
        parts.push(n);
    }
    let raised = match bump {
        Bump::Patch => parts.len() - 1,
        Bump::Major => 0,
        Bump::Minor if parts.len() >= 2 => parts.len() - 2,
        Bump::Minor => bail!(
            "cannot bump {previous}: --bump minor raises the part before the last, and \
             {previous} has one part; use --bump major or patch, or {fix}"
        ),
    };
    parts[raised] += 1;
    for later in &mut parts[raised + 1..] {
        *later = 0;
    }
    Ok(parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("."))
}

/// The greatest release tag in HEAD's history (by Debian version order) and its upstream
/// version; tags that `package.tag_format` does not name are ignored.
pub fn previous_release(repo: &Repo, config: &Config) -> Result<Option<(String, String)>> {
    release_below(repo, config, None)
}

/// The greatest release tag whose version sorts below `below` (all when None).
pub(super) fn release_below(
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
            best = Some((parsed, tag.clone(), upstream));
        }
    }
    Ok(best.map(|(_, tag, upstream)| (tag, upstream)))
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
pub(super) fn validate_upstream(upstream: &str, config: &Config) -> Result<()> {
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
    if config.debian_revision().is_empty() && upstream.contains('-') {
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

pub(super) fn release_toml(config: &Config) -> String {
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
        .version_files()
        .iter()
        .map(|f| Ok((f.path.clone(), read_version_file(project, config, f)?)))
        .collect()
}

/// A file's content before and after the bump; `path` is relative to the
/// project.
#[derive(Debug, Clone)]
pub(super) struct FileEdit {
    pub path: PathBuf,
    pub before: String,
    pub after: String,
}

pub(super) fn version_file_edits(
    project: &Path,
    config: &Config,
    upstream: &str,
) -> Result<Vec<FileEdit>> {
    let debian = config.debian_version(upstream);
    let mut edits: Vec<FileEdit> = Vec::new();
    for file in config.version_files() {
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
pub(super) fn write_edits(project: &Path, edits: &[FileEdit]) -> Result<()> {
    for (i, edit) in edits.iter().enumerate() {
        let path = project.join(&edit.path);
        if let Err(e) = std::fs::write(&path, &edit.after) {
            restore(project, &edits[..i]);
            return Err(e).with_context(|| format!("writing {}", path.display()));
        }
    }
    Ok(())
}

pub(super) fn restore(project: &Path, edits: &[FileEdit]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::testing::{config, msg, scap_config};
    use crate::support::git::testing::{commit_file, init};

    #[test]
    fn next_versions() {
        assert_eq!(next_version("4.12.3", Bump::Major).unwrap(), "5.0.0");
        assert_eq!(next_version("4.12.3", Bump::Minor).unwrap(), "4.13.0");
        assert_eq!(next_version("4.12.3", Bump::Patch).unwrap(), "4.12.4");
        // Any number of parts: patch the last, minor the one before, major the first.
        assert_eq!(next_version("0.0.99.13", Bump::Patch).unwrap(), "0.0.99.14");
        assert_eq!(next_version("0.0.99.13", Bump::Minor).unwrap(), "0.0.100.0");
        assert_eq!(next_version("0.0.99.13", Bump::Major).unwrap(), "1.0.0.0");
        assert_eq!(next_version("4.12", Bump::Patch).unwrap(), "4.13");
        assert_eq!(next_version("4.12", Bump::Minor).unwrap(), "5.0");
        assert_eq!(next_version("7", Bump::Patch).unwrap(), "8");
        let err = msg(next_version("7", Bump::Minor).unwrap_err());
        assert!(err.contains("7 has one part"), "{err}");
        for (bad, part) in [
            ("1.0~rc1", "0~rc1"),
            ("4.12.0rc1", "0rc1"),
            ("v1.2.3", "v1"),
            ("1..2", ""),
            ("1.2+dfsg", "2+dfsg"),
        ] {
            let err = msg(next_version(bad, Bump::Patch).unwrap_err());
            assert!(
                err.starts_with(&format!(
                    "cannot bump {bad}: its part `{part}` is not a number"
                )),
                "{err}"
            );
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
        let err = msg(read_version_file(dir.path(), &c, &c.version_files()[0]).unwrap_err());
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
}
