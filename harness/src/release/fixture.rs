//! The fixture release targets in `fixtures/`: `minideploy`, a small
//! scap-like deploy tool packaged for Debian; `minideploy-broken`, the same
//! with the sync regression of `fixtures/minideploy-broken.patch`; and
//! `minideploy-split`, one source with two binary packages (a server for the
//! deploy host, an agent for the targets) whose version lives in
//! debian/changelog only. `materialize` turns one into a git repository that
//! looks like a project between releases: a tagged previous release and
//! commits since.
//!
//! The files are built into the binary (harness/build.rs embeds
//! `fixtures/`), so the packaged CLI needs no source tree.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::support::process;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/fixtures.rs"));
}

/// A fixture: its files, the release it starts from and the work since.
struct Fixture {
    name: &'static str,
    /// The directory under `fixtures/` holding its files.
    base: &'static str,
    /// A patch (under `fixtures/`) applied over the base files.
    patch: Option<&'static str>,
    /// The tag of the release the repository starts from: the upstream
    /// version of debian/changelog's newest entry (tag format `{version}`).
    previous_tag: &'static str,
    /// Commits made after the tag, so a release has a changelog to write.
    follow_ups: &'static [FollowUp],
}

/// One commit after the tag: (subject, file, text to replace or `None` to
/// append, new text).
type FollowUp = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
);

const FIXTURES: [Fixture; 3] = [
    Fixture {
        name: "minideploy",
        base: "minideploy",
        patch: None,
        previous_tag: "0.1.0",
        follow_ups: &MINIDEPLOY_FOLLOW_UPS,
    },
    Fixture {
        name: "minideploy-broken",
        base: "minideploy",
        patch: Some("minideploy-broken.patch"),
        previous_tag: "0.1.0",
        follow_ups: &MINIDEPLOY_FOLLOW_UPS,
    },
    Fixture {
        name: "minideploy-split",
        base: "minideploy-split",
        patch: None,
        previous_tag: "1.4.0.2",
        follow_ups: &SPLIT_FOLLOW_UPS,
    },
];

const MINIDEPLOY_FOLLOW_UPS: [FollowUp; 3] = [
    (
        "Document failure_limit in the README",
        "README.md",
        None,
        "\nA group fails when the share of its failed targets exceeds\n\
         `failure_limit` (default 0): every target promoted so far is rolled back.\n",
    ),
    (
        "Name the previous revision in deploy-local's log",
        "minideploy/local.py",
        Some("\"%s: promoted %s (previous: %s)\""),
        "\"%s: promoted %s (previous revision: %s)\"",
    ),
    (
        "Add an example deploy.cfg",
        "doc/deploy.cfg.example",
        None,
        "[global]\nrepo = demo\nssh_user = deploy\nssh_key = /home/deploy/.ssh/id_ed25519\n\
         canary_targets = minideploy/canaries\ntargets = minideploy/targets\n",
    ),
];

/// The agent's store and the server's summary are what every push of the
/// custom scenarios runs: change coverage has lines to count.
const SPLIT_FOLLOW_UPS: [FollowUp; 3] = [
    (
        "agent: fsync the stored file before renaming it into place",
        "minisplit_agent/store.py",
        Some("            out.flush()\n"),
        "            out.flush()\n            # A crash after the rename must not leave an empty file.\n\
         \x20           os.fsync(out.fileno())\n",
    ),
    (
        "server: say how many bytes a push sent",
        "minisplit_server/cli.py",
        Some("print(\"pushed %s to %d agents (sha256 %s)\" % (name, len(hosts), digest))"),
        "print(\"pushed %s to %d agents (%d bytes, sha256 %s)\"\n          \
         % (name, len(hosts), len(payload), digest))",
    ),
    (
        "Add an example server.conf",
        "doc/server.conf.example",
        None,
        "[server]\nssh_user = deploy\nssh_key = /home/deploy/.ssh/id_ed25519\n\
         agents = /etc/minisplit/agents\nconnect_timeout = 3\n",
    ),
];

/// The embedded file at `path` under `fixtures/`.
fn embedded(path: &str) -> Option<&'static [u8]> {
    embedded::FILES
        .iter()
        .find(|(p, ..)| *p == path)
        .map(|(_, _, contents)| *contents)
}

/// The names `materialize` accepts.
pub fn known() -> Vec<&'static str> {
    FIXTURES.iter().map(|f| f.name).collect()
}

/// The tag of the release fixture `name` starts from (None for an unknown
/// name).
pub fn previous_tag(name: &str) -> Option<&'static str> {
    fixture(name).map(|f| f.previous_tag)
}

fn fixture(name: &str) -> Option<&'static Fixture> {
    FIXTURES.iter().find(|f| f.name == name)
}

/// Copies fixture `name` (with its patch applied) into `dest/<name>`, makes
/// it a git repository on `main` with its previous release tagged and its
/// follow-up commits since, and returns the repository's path.
pub fn materialize(name: &str, dest: &Path) -> Result<PathBuf> {
    let Some(fixture) = fixture(name) else {
        bail!(
            "unknown fixture `{name}`; the known fixtures are: {}",
            known().join(", ")
        );
    };
    let repo = dest.join(name);
    if repo.exists() && repo.read_dir()?.next().is_some() {
        bail!(
            "cannot materialize fixture `{name}` into {}: it is not empty; \
             give an empty or new directory",
            repo.display()
        );
    }
    write_base(fixture.base, &repo).with_context(|| format!("writing fixture `{name}`"))?;
    git(&repo, &["init", "--quiet", "-b", "main"])?;
    if let Some(patch) = fixture.patch {
        let diff = embedded(patch)
            .with_context(|| format!("fixture `{name}`: {patch} is not built into the harness"))?;
        process::cmd("git", ["apply", "-"])
            .with(|e| git_env(e.dir(&repo)).stdin_bytes(diff))
            .run()
            .with_context(|| format!("applying {patch} for fixture `{name}`"))?;
    }
    git(&repo, &["config", "user.name", "Fixture Maintainer"])?;
    git(&repo, &["config", "user.email", "fixture@example.org"])?;
    git(&repo, &["add", "--all"])?;
    let tag = fixture.previous_tag;
    let release = format!("Release {tag}");
    git(&repo, &["commit", "--quiet", "-m", &release])?;
    git(&repo, &["tag", "-a", tag, "-m", &release])?;
    for (subject, file, from, to) in fixture.follow_ups {
        let path = repo.join(file);
        let text = match from {
            Some(from) => {
                let old = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                if !old.contains(from) {
                    bail!(
                        "fixture `{name}`: {file} no longer contains {from:?}; update the \
                         follow-up commit \"{subject}\" in harness/src/release/fixture.rs"
                    );
                }
                old.replacen(from, to, 1)
            }
            None => {
                let old = std::fs::read_to_string(&path).unwrap_or_default();
                old + to
            }
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        git(&repo, &["add", "--all"])?;
        git(&repo, &["commit", "--quiet", "-m", subject])?;
    }
    Ok(repo)
}

/// Writes the embedded files under `fixtures/<base>/` into `to`, with their
/// modes (debian/rules stays executable).
fn write_base(base: &str, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let prefix = format!("{base}/");
    for (path, mode, contents) in embedded::FILES {
        let Some(relative) = path.strip_prefix(&prefix) else {
            continue;
        };
        let target = to.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, contents)
            .with_context(|| format!("writing {}", target.display()))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(*mode))
            .with_context(|| format!("setting the mode of {}", target.display()))?;
    }
    Ok(())
}

/// The user's own configuration (signing, hooks, templates) must not change
/// what the fixture looks like.
fn git_env(e: duct::Expression) -> duct::Expression {
    e.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    process::cmd("git", args)
        .with(|e| git_env(e.dir(repo)))
        .read()
        .map(|out| out.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Hosts};

    #[test]
    fn materialized_fixture_has_previous_release_and_commits_since() {
        let dest = tempfile::tempdir().unwrap();
        let repo = materialize("minideploy", dest.path()).unwrap();
        assert_eq!(repo, dest.path().join("minideploy"));
        assert_eq!(previous_tag("minideploy"), Some("0.1.0"));
        assert_eq!(git(&repo, &["cat-file", "-t", "0.1.0"]).unwrap(), "tag");
        assert_eq!(
            git(&repo, &["describe", "--tags", "--abbrev=0"]).unwrap(),
            "0.1.0"
        );
        let count = git(&repo, &["rev-list", "--count", "0.1.0..HEAD"]).unwrap();
        assert_eq!(count, "3");
        let subjects = git(&repo, &["log", "--format=%s", "0.1.0..HEAD"]).unwrap();
        assert_eq!(subjects.lines().count(), 3);
        for (subject, ..) in MINIDEPLOY_FOLLOW_UPS {
            assert!(subjects.contains(subject), "{subjects}");
        }
        assert_eq!(git(&repo, &["status", "--porcelain"]).unwrap(), "");
        assert_eq!(git(&repo, &["branch", "--show-current"]).unwrap(), "main");
        let version = git(&repo, &["show", "0.1.0:minideploy/version.py"]).unwrap();
        assert_eq!(version, "__version__ = \"0.1.0-1\"");
        let rules = std::fs::metadata(repo.join("debian/rules")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_ne!(
            rules.permissions().mode() & 0o111,
            0,
            "debian/rules must stay executable"
        );
    }

    #[test]
    fn broken_patch_changes_the_sync() {
        let dest = tempfile::tempdir().unwrap();
        let good = materialize("minideploy", dest.path()).unwrap();
        let broken = materialize("minideploy-broken", dest.path()).unwrap();
        let read = |repo: &Path| std::fs::read_to_string(repo.join("minideploy/local.py")).unwrap();
        assert_ne!(read(&good), read(&broken));
        assert!(read(&broken).contains("if not os.path.lexists(paths.final):"));
        // Only the patched file differs.
        let diff = std::process::Command::new("git")
            .args(["diff", "--no-index", "--name-only"])
            .arg(good.join("minideploy"))
            .arg(broken.join("minideploy"))
            .output()
            .unwrap();
        let changed = String::from_utf8_lossy(&diff.stdout);
        assert_eq!(changed.lines().count(), 1, "{changed}");
        assert!(changed.trim().ends_with("local.py"), "{changed}");
        assert_eq!(
            git(&broken, &["rev-list", "--count", "0.1.0..HEAD"]).unwrap(),
            "3"
        );
    }

    #[test]
    fn split_fixture_starts_from_a_four_part_release_in_the_changelog_only() {
        let dest = tempfile::tempdir().unwrap();
        let repo = materialize("minideploy-split", dest.path()).unwrap();
        let tag = previous_tag("minideploy-split").unwrap();
        assert_eq!(tag, "1.4.0.2");
        assert_eq!(git(&repo, &["cat-file", "-t", tag]).unwrap(), "tag");
        assert_eq!(
            git(&repo, &["describe", "--tags", "--abbrev=0"]).unwrap(),
            tag
        );
        // The tagged release's changelog is the previous version, with its
        // own distribution, revision and urgency.
        let top = crate::support::debian::changelog_top(&repo).unwrap();
        assert_eq!(top.package, "minideploy-split");
        assert_eq!(top.version, "1.4.0.2-1+deb12u1");
        assert_eq!(top.revision(), Some("1+deb12u1"));
        assert_eq!(top.distribution, "bookworm-wikimedia");
        assert_eq!(top.urgency, "low");
        let tagged = git(&repo, &["show", &format!("{tag}:debian/changelog")]).unwrap();
        assert!(tagged.starts_with("minideploy-split (1.4.0.2-1+deb12u1) "));
        // Follow-ups change code the scenarios run, and leave the
        // changelog to the release.
        let subjects = git(&repo, &["log", "--format=%s", &format!("{tag}..HEAD")]).unwrap();
        assert_eq!(subjects.lines().count(), SPLIT_FOLLOW_UPS.len());
        let changed = git(&repo, &["diff", "--name-only", tag, "HEAD"]).unwrap();
        assert!(changed.contains("minisplit_agent/store.py"), "{changed}");
        assert!(changed.contains("minisplit_server/cli.py"), "{changed}");
        assert!(!changed.contains("debian/"), "{changed}");
        // No version file: the build writes it from the changelog.
        let files = git(&repo, &["ls-files"]).unwrap();
        assert!(!files.contains("_version.py"), "{files}");
        assert!(files.contains("debian/minideploy-split-agent.install"));
        assert_eq!(git(&repo, &["status", "--porcelain"]).unwrap(), "");
        // The follow-ups leave the tool working: its own tests pass.
        let tests = std::process::Command::new("python3")
            .args(["-m", "unittest", "discover", "-s", "tests", "-t", "."])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(
            tests.status.success(),
            "{}",
            String::from_utf8_lossy(&tests.stderr)
        );
    }

    #[test]
    fn split_release_toml_places_the_binaries_and_verifies_with_its_own_scenarios() {
        let dest = tempfile::tempdir().unwrap();
        let repo = materialize("minideploy-split", dest.path()).unwrap();
        let config = Config::load(&repo).unwrap();
        assert_eq!(config.package_name(), "minideploy-split");
        assert!(config.version_files().is_empty());
        assert_eq!(
            config.binaries_on(Hosts::Deploy),
            ["minideploy-split-server"]
        );
        assert_eq!(
            config.binaries_on(Hosts::Canaries),
            ["minideploy-split-agent"]
        );
        assert_eq!(config.binaries_on(Hosts::Apps), ["minideploy-split-agent"]);
        // The changelog's conventions, kept.
        assert_eq!(config.debian_revision(), "1+deb12u1");
        assert_eq!(config.distribution(), "bookworm-wikimedia");
        assert_eq!(config.urgency(), "low");
        assert_eq!(
            config.build.lintian_suppress,
            ["bad-distribution-in-changes-file"]
        );
        assert!(config.verify.scenarios.is_empty());
        let names: Vec<&str> = config
            .verify
            .custom
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "split-fresh-install",
                "split-upgrade",
                "split-downgrade",
                "split-mixed-fleet",
                "split-dead-target"
            ]
        );
        let needs_previous: Vec<bool> = config
            .verify
            .custom
            .iter()
            .map(|c| c.needs_previous())
            .collect();
        assert_eq!(needs_previous, [false, true, true, true, false]);
    }

    #[test]
    fn the_embedded_fixtures_are_the_tracked_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let tracked = git(&root, &["ls-files", "."]).unwrap();
        let embedded: Vec<&str> = embedded::FILES.iter().map(|(p, ..)| *p).collect();
        for path in tracked.lines() {
            assert!(embedded.contains(&path), "{path} is not embedded");
            let on_disk = std::fs::read(root.join(path)).unwrap();
            assert!(self::embedded(path) == Some(&on_disk[..]), "{path} differs");
        }
        assert_eq!(
            embedded::FILES
                .iter()
                .find(|(p, ..)| *p == "minideploy/debian/rules")
                .map(|(_, mode, _)| *mode),
            Some(0o755)
        );
    }

    #[test]
    fn unknown_fixture_lists_the_known_ones() {
        let dest = tempfile::tempdir().unwrap();
        let err = materialize("scap", dest.path()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("unknown fixture `scap`"), "{msg}");
        assert!(
            msg.contains("minideploy, minideploy-broken, minideploy-split"),
            "{msg}"
        );
        assert!(!dest.path().join("scap").exists());
    }

    #[test]
    fn non_empty_destination_is_refused() {
        let dest = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dest.path().join("minideploy")).unwrap();
        std::fs::write(dest.path().join("minideploy/x"), "").unwrap();
        let err = materialize("minideploy", dest.path()).unwrap_err();
        assert!(format!("{err:#}").contains("not empty"), "{err:#}");
    }

    #[test]
    fn release_toml_configures_the_fleet() {
        let dest = tempfile::tempdir().unwrap();
        let repo = materialize("minideploy", dest.path()).unwrap();
        let config = Config::load(&repo).unwrap();
        assert_eq!(config.package_name(), "minideploy");
        assert_eq!(
            config.version_files()[0].path,
            Path::new("minideploy/version.py")
        );
        let rendered: Vec<(Hosts, String, String)> = config
            .fleet
            .files
            .iter()
            .map(|f| {
                (
                    f.hosts,
                    config.render(&f.path, &[]),
                    config.render(&f.content, &[]),
                )
            })
            .collect();
        let file = |path: &str| {
            rendered
                .iter()
                .find(|(_, p, _)| p == path)
                .unwrap_or_else(|| panic!("no fleet file {path}: {rendered:?}"))
        };
        let system = file("/etc/minideploy.cfg");
        assert_eq!(system.0, Hosts::All);
        assert!(system.2.contains("git_server = deploy1:80"), "{}", system.2);
        let deploy = file("/srv/deployment/demo/minideploy/deploy.cfg");
        assert_eq!(deploy.0, Hosts::Deploy);
        assert!(deploy.2.contains("ssh_key = /home/deploy/.ssh/id_ed25519"));
        assert!(!deploy.2.contains('{'), "unrendered template: {}", deploy.2);
        assert_eq!(
            file("/srv/deployment/demo/minideploy/canaries").2.trim(),
            "canary1\ncanary2"
        );
        assert!(file("/srv/deployment/demo/minideploy/targets")
            .2
            .contains("app4"));
    }
}
