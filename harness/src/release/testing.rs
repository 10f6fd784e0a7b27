//! Test helpers shared by the release modules' tests: a scap-like
//! configuration and repository, and dpkg's reading of a changelog.

use std::path::Path;

use crate::config::Config;
use crate::release::changelog::CHANGELOG;
use crate::support::git::testing::{commit_file, init, write};
use crate::support::git::Repo;

pub fn config(toml: &str) -> Config {
    Config::parse(toml, Path::new("release.toml")).unwrap()
}

pub fn scap_config() -> Config {
    config(
        "[package]\nname = \"scap\"\n[[package.version_files]]\npath = \
         \"scap/version.py\"\nline = '__version__ = \"{version}\"'\n",
    )
}

pub const VERSION_PY: &str =
    "# -*- coding: utf-8 -*-\n\"\"\"Version.\"\"\"\n\n__version__ = \"4.12.0-1\"\n";

pub const CHANGELOG_4_12: &str = "scap (4.12.0-1) unstable; urgency=medium\n\n  * Old change\n\n \
     -- Old Maintainer <old@example.org>  Mon, 01 Jan 2024 10:00:00 +0000\n";

pub fn msg(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// A scap-like repository released as 4.12.0, with two commits since.
pub fn scap_repo(dir: &Path) -> Repo {
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

/// What `dpkg-parsechangelog` reads as `field` of the project's changelog.
pub fn dpkg_parsechangelog(project: &Path, field: &str) -> String {
    let changelog = project.join(CHANGELOG);
    let out = crate::support::process::cmd(
        "dpkg-parsechangelog",
        [
            std::ffi::OsString::from("-l"),
            changelog.into_os_string(),
            format!("-S{field}").into(),
        ],
    )
    .run()
    .expect("dpkg-parsechangelog (package dpkg-dev) is needed by this test");
    String::from_utf8(out.stdout).unwrap()
}
