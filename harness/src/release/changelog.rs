//! The release's `debian/changelog` entry: reading the changelog (its top
//! entry says where the package stands), rendering the new entry the Debian
//! way and putting it on top, leaving the rest byte for byte.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, FixedOffset};
use debian_changelog::{ChangeLog, Urgency};
use debversion::Version;

use crate::release::version::{write_edits, FileEdit};
use crate::support::debian::read_changelog;
pub use crate::support::debian::{changelog_top, ChangelogTop, CHANGELOG};

/// Debian's changelog lines stay under 80 columns (lintian warns otherwise).
const CHANGELOG_WIDTH: usize = 80;

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

/// The version of the top entry of `debian/changelog`.
pub fn changelog_top_version(project: &Path) -> Result<String> {
    Ok(changelog_top(project)?.version)
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
        .flat_map(|change| wrap_bullet(change))
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

/// `* text` wrapped under 80 columns once the builder's two-space indent is
/// added, continuation lines indented under the text, with the changelog
/// crate's wrapping (which keeps `Closes: #123` together); a word longer
/// than the width stays whole. Blank text gives no line.
fn wrap_bullet(text: &str) -> Vec<String> {
    let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.is_empty() {
        return Vec::new();
    }
    debian_changelog::textwrap::textwrap(&words, Some(CHANGELOG_WIDTH - 2), Some("* "), Some("  "))
        .into_iter()
        .map(|line| line.trim_end().to_string())
        .collect()
}

pub(super) fn changelog_edit(project: &Path, entry: &ChangelogEntry) -> Result<FileEdit> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::testing::{dpkg_parsechangelog, msg, CHANGELOG_4_12};

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

        // A word longer than a line stays whole; a bug reference stays together.
        let url = format!("https://example.org/{}", "x".repeat(80));
        // "Closes:" fits on the first line, its number would not.
        let closes = "sync: stop retrying forever on a host that is gone for good now \
                      Closes: #1234567";
        let text =
            render_changelog_entry(&entry(&[&format!("See {url} for why"), closes])).unwrap();
        let bullets: Vec<&str> = text.lines().skip(2).take_while(|l| !l.is_empty()).collect();
        assert_eq!(
            bullets,
            vec![
                "  * See".to_string(),
                format!("    {url}"),
                "    for why".to_string(),
                "  * sync: stop retrying forever on a host that is gone for good now".to_string(),
                "    Closes: #1234567".to_string(),
            ]
        );

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
}
