//! Bad input meets the CLI as a user would run it: each case gets a message
//! that names the file, key or tag and says how to fix it, and the
//! repository is left exactly as it was. Preflight runs before anything
//! changes, so none of these starts a container.

mod support;

use std::path::Path;
use std::process::Command;

/// Runs `release --dry-run` on `repo`; returns (exit code, stderr).
fn release(repo: &Path, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_release-harness"))
        .args(["release", "--dry-run", "--project"])
        .arg(repo)
        .args(extra)
        .env("CI", "true")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Applies `change` to a fresh fixture, commits it (unless `commit` is
/// false), runs the release and checks that it failed with `expected` in
/// its message and changed nothing.
fn refused(change: impl FnOnce(&Path), commit: bool, extra: &[&str], expected: &[&str]) {
    let (_tmp, repo) = support::fixture_repo("minideploy");
    change(&repo);
    if commit {
        support::git(&repo, &["add", "-A"]);
        support::git(&repo, &["commit", "-q", "-m", "Change for the test"]);
    }
    let before = support::repo_state(&repo);
    let (code, stderr) = release(&repo, extra);
    assert_eq!(code, 1, "expected a refusal:\n{stderr}");
    for e in expected {
        assert!(stderr.contains(e), "missing `{e}` in:\n{stderr}");
    }
    assert_eq!(
        support::repo_state(&repo),
        before,
        "a refused release changed the repository"
    );
}

#[test]
fn a_dirty_tree_is_refused() {
    refused(
        |r| std::fs::write(r.join("README.md"), "edited\n").unwrap(),
        false,
        &[],
        &["uncommitted changes", "README.md", "commit or stash them"],
    );
}

#[test]
fn a_taken_tag_is_refused() {
    // 0.2.0 is taken on another branch: not a release of this history (so
    // not "the previous release"), but the name is no longer free.
    refused(
        |r| {
            support::git(r, &["switch", "-q", "-c", "elsewhere"]);
            std::fs::write(r.join("ELSEWHERE"), "work on another branch\n").unwrap();
            support::git(r, &["add", "ELSEWHERE"]);
            support::git(r, &["commit", "-q", "-m", "Work on another branch"]);
            support::git(r, &["tag", "0.2.0"]);
            support::git(r, &["switch", "-q", "main"]);
        },
        false,
        &["--version", "0.2.0"],
        &[
            "tag 0.2.0 already exists (at ",
            "delete it or pick another version",
        ],
    );
}

#[test]
fn a_version_not_greater_than_the_previous_is_refused() {
    refused(
        |_| {},
        false,
        &["--version", "0.0.9"],
        &["0.0.9 is not greater than the previous release 0.1.0"],
    );
}

#[test]
fn a_malformed_version_file_is_refused() {
    refused(
        |r| std::fs::write(r.join("minideploy/version.py"), "VERSION = 'oops'\n").unwrap(),
        true,
        &[],
        &["minideploy/version.py", "__version__ = \"{version}\""],
    );
}

#[test]
fn a_malformed_changelog_is_refused() {
    refused(
        |r| std::fs::write(r.join("debian/changelog"), "this is not a changelog\n").unwrap(),
        true,
        &[],
        &["debian/changelog", "cannot parse"],
    );
}

#[test]
fn a_project_without_debian_directory_is_refused() {
    refused(
        |r| std::fs::remove_dir_all(r.join("debian")).unwrap(),
        true,
        &[],
        &["no debian/ directory", "build.builder"],
    );
}

#[test]
fn a_bad_release_toml_names_file_key_and_line() {
    refused(
        |r| {
            let path = r.join("release.toml");
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str("\n[fleet]\ncanaries = \"two\"\n");
            std::fs::write(path, text).unwrap();
        },
        true,
        &[],
        &["release.toml:", "invalid type"],
    );
}

#[test]
fn a_missing_release_toml_says_how_to_start_one() {
    refused(
        |r| std::fs::remove_file(r.join("release.toml")).unwrap(),
        true,
        &[],
        &["no release.toml in", "fix: create"],
    );
}

#[test]
fn the_wrong_branch_is_refused_for_a_real_release_but_not_a_dry_run() {
    let (_tmp, repo) = support::fixture_repo("minideploy");
    support::git(&repo, &["switch", "-q", "-c", "feature"]);
    let before = support::repo_state(&repo);
    let out = Command::new(env!("CARGO_BIN_EXE_release-harness"))
        .args(["release", "--project"])
        .arg(&repo)
        .env("CI", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("branch `feature`"), "{stderr}");
    assert!(stderr.contains("git switch main"), "{stderr}");
    assert_eq!(support::repo_state(&repo), before);
    // The same branch may be verified with a dry run (a merge request).
    let (_, stderr) = release(&repo, &["--version", "0.0.1"]);
    assert!(!stderr.contains("branch `feature`"), "{stderr}");
}

#[test]
fn bump_makes_the_release_commit_and_tag_that_release_tagged_accepts() {
    let (_tmp, repo) = support::fixture_repo("minideploy");
    // Not tagged yet: --tagged refuses and says how to get there.
    let (code, stderr) = release(&repo, &["--tagged"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("carries no release tag"), "{stderr}");
    assert!(stderr.contains("release-harness bump"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_release-harness"))
        .args(["bump", "--bump", "patch", "--project"])
        .arg(&repo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("tag 0.1.1"), "{stdout}");
    assert_eq!(
        support::git(&repo, &["describe", "--exact-match"]).trim(),
        "0.1.1"
    );
    assert_eq!(
        support::git(&repo, &["log", "-1", "--format=%s"]).trim(),
        "Release 0.1.1"
    );
    let parsed = Command::new("dpkg-parsechangelog")
        .arg("-l")
        .arg(repo.join("debian/changelog"))
        .arg("-SVersion")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&parsed.stdout).trim(), "0.1.1-1");

    // A tag whose commit does not carry its version is refused.
    support::git(&repo, &["tag", "-d", "0.1.1"]);
    support::git(&repo, &["tag", "-a", "0.1.2", "-m", "0.1.2"]);
    let (code, stderr) = release(&repo, &["--tagged"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("HEAD is tagged 0.1.2"), "{stderr}");
}

#[test]
fn a_bump_with_no_rule_for_the_previous_version_is_refused() {
    // A pre-release tagged the DEP-14 way: 0.2.0~rc1 has no part to count.
    refused(
        |r| {
            support::git(r, &["tag", "-a", "0.2.0_rc1", "-m", "0.2.0~rc1"]);
            std::fs::write(r.join("AFTER_RC"), "a fix after the rc\n").unwrap();
        },
        true,
        &["--bump", "patch"],
        &[
            "cannot bump 0.2.0~rc1: its part `0~rc1` is not a number",
            "--version",
        ],
    );
}

#[test]
fn a_run_s_reports_in_the_project_do_not_block_the_next_run() {
    let (_tmp, repo) = support::fixture_repo("minideploy");
    let reports = |out: &Path| {
        let dir = out.join("minideploy_0.2.0-1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("junit.xml"), "<testsuites/>\n").unwrap();
    };
    // Refused for its version, after the clean-tree check: no container.
    let not_greater = ["--version", "0.0.9"];

    // Reports the harness did not write (no .gitignore) make the tree dirty.
    reports(&repo.join("by-hand"));
    let (_, stderr) = release(&repo, &not_greater);
    assert!(stderr.contains("uncommitted changes (by-hand/"), "{stderr}");
    std::fs::remove_dir_all(repo.join("by-hand")).unwrap();

    // The out directory as a first run leaves it.
    let out = repo.join("release-out");
    harness::release::create_out_dir(&out, &repo).unwrap();
    reports(&out);
    let before = support::repo_state(&repo);
    let (code, stderr) = release(&repo, &not_greater);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("0.0.9 is not greater"), "{stderr}");
    assert!(!stderr.contains("uncommitted changes"), "{stderr}");
    assert_eq!(support::repo_state(&repo), before);
    assert_eq!(support::git(&repo, &["status", "--porcelain"]), "");
}
