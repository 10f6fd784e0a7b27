//! The project's git repository, driven through the `git` command line: tree
//! state, tags, commits, the release commit and tag, notes, scratch clones
//! for `--dry-run`, and exporting an old revision's tree.
//!
//! Shelling out (rather than a git library) keeps behaviour identical to what
//! an operator gets by hand: same config, hooks, credentials and signing.
//! Every git command is made by `git_in`, through `support::process`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{bail, Context, Result};

use crate::support::process::{self, Process};

/// A git work tree; `root` is its top-level directory.
#[derive(Debug, Clone)]
pub struct Repo {
    pub root: PathBuf,
}

/// A commit as the changelog sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    pub subject: String,
    /// `Name <email>` of the author.
    pub author: String,
}

impl Repo {
    /// Opens the work tree that contains `path` (which may be a subdirectory).
    pub fn open(path: &Path) -> Result<Repo> {
        if !path.is_dir() {
            bail!(
                "{} is not a git repository: no such directory\n  fix: pass the path of a git \
                 checkout of the project to release",
                path.display()
            );
        }
        let output = git_in(path, &["rev-parse", "--show-toplevel"])
            .output()
            .context("running git: is git installed and on PATH?")?;
        if !output.status.success() {
            bail!(
                "{} is not a git repository: {}\n  fix: run the harness on a git checkout of \
                 the project (git clone ..., or git init && git add . && git commit)",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let root = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(Repo {
            root: PathBuf::from(root),
        })
    }

    /// `git ARGS` in the work tree, to run as the caller needs (`output` for
    /// the commands whose failure is an answer, stdin with `with`).
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Process {
        git_in(&self.root, args)
    }

    /// Runs `git ARGS` in the work tree and returns its stdout without the
    /// trailing newline; a failure names the command, its exit and the tail
    /// of its stderr.
    pub fn git<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<String> {
        self.command(args).read()
    }

    /// Runs `git ARGS` and returns its output whatever the exit status, for
    /// callers whose failure is an answer (a refused push, a moved ref).
    pub fn output<S: AsRef<OsStr>>(&self, args: &[S]) -> Result<Output> {
        self.command(args).output()
    }

    /// The paths that make the tree dirty (modified, staged, deleted or
    /// untracked; ignored files do not count). Empty means clean.
    pub fn dirty_paths(&self) -> Result<Vec<String>> {
        let output = self
            .command(&["status", "--porcelain=v1", "-z", "--untracked-files=all"])
            .run()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let mut paths = Vec::new();
        let mut records = text.split('\0').filter(|r| !r.is_empty());
        while let Some(record) = records.next() {
            let (status, path) = record.split_at(3.min(record.len()));
            paths.push(path.to_string());
            // A rename or copy is followed by a record with its source path.
            if status.starts_with('R') || status.starts_with('C') {
                records.next();
            }
        }
        Ok(paths)
    }

    /// The checked-out branch, or None on a detached HEAD.
    pub fn current_branch(&self) -> Result<Option<String>> {
        let command = self.command(&["symbolic-ref", "--quiet", "--short", "HEAD"]);
        let output = command.output()?;
        match output.status.code() {
            Some(0) => Ok(Some(
                String::from_utf8_lossy(&output.stdout).trim().to_string(),
            )),
            Some(1) => Ok(None),
            // Any other status is a failure: check says which.
            _ => process::check(command.shown(), &output).map(|()| None),
        }
    }

    pub fn tag_exists(&self, name: &str) -> Result<bool> {
        Ok(self.tag_commit(name)?.is_some())
    }

    /// The commit a tag points at, if the tag exists.
    pub fn tag_commit(&self, name: &str) -> Result<Option<String>> {
        let spec = format!("refs/tags/{name}^{{commit}}");
        let output = self
            .command(&["rev-parse", "--quiet", "--verify", &spec])
            .output()?;
        if output.status.success() {
            Ok(Some(
                String::from_utf8_lossy(&output.stdout).trim().to_string(),
            ))
        } else {
            Ok(None)
        }
    }

    /// The sha of the commit checked out.
    pub fn head(&self) -> Result<String> {
        self.rev_parse("HEAD")
    }

    /// The object name of a revision (an annotated tag gives the tag object;
    /// append `^{commit}` for its commit).
    pub fn rev_parse(&self, rev: &str) -> Result<String> {
        let output = self
            .command(&["rev-parse", "--verify", "--end-of-options", rev])
            .output()?;
        if !output.status.success() {
            bail!(
                "{}: `{rev}` is not a known revision: {}",
                self.root.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    pub fn tags(&self) -> Result<Vec<String>> {
        Ok(self
            .git(&["tag", "--list"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Tags whose commits HEAD contains: the releases of this line of
    /// history (a maintenance branch does not see the next major's tags).
    pub fn tags_in_history(&self) -> Result<Vec<String>> {
        Ok(self
            .git(&["tag", "--list", "--merged", "HEAD"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Non-merge commits reachable from HEAD but not from `from` (all of
    /// history when None), oldest first.
    pub fn commits_since(&self, from: Option<&str>) -> Result<Vec<Commit>> {
        let range = match from {
            Some(from) => format!("{from}..HEAD"),
            None => "HEAD".to_string(),
        };
        let out = self.git(&[
            "log",
            "--no-merges",
            "--reverse",
            "--format=%H%x1f%s%x1f%an <%ae>%x1e",
            &range,
            "--",
        ])?;
        Ok(out
            .split('\x1e')
            .map(|r| r.trim_start_matches('\n'))
            .filter(|r| !r.is_empty())
            .filter_map(|r| {
                let mut fields = r.splitn(3, '\x1f');
                Some(Commit {
                    sha: fields.next()?.to_string(),
                    subject: fields.next()?.to_string(),
                    author: fields.next()?.to_string(),
                })
            })
            .collect())
    }

    /// `(user.name, user.email)`, needed to author the release commit and tag.
    pub fn identity(&self) -> Result<(String, String)> {
        let name = self.config_value("user.name")?;
        let email = self.config_value("user.email")?;
        match (name, email) {
            (Some(name), Some(email)) => Ok((name, email)),
            (name, _) => {
                let missing = if name.is_none() {
                    "user.name"
                } else {
                    "user.email"
                };
                bail!(
                    "{}: git has no {missing} configured, and the release commit and tag need \
                     an author\n  fix: git config user.name \"Your Name\" && git config \
                     user.email you@example.org (add --global to set it for every repository)",
                    self.root.display()
                )
            }
        }
    }

    fn config_value(&self, key: &str) -> Result<Option<String>> {
        let command = self.command(&["config", "--get", key]);
        let output = command.output()?;
        match output.status.code() {
            // An empty value counts as unset: git itself refuses it.
            Some(0) => {
                let value = String::from_utf8_lossy(&output.stdout).trim().to_string();
                Ok((!value.is_empty()).then_some(value))
            }
            Some(1) => Ok(None),
            _ => process::check(command.shown(), &output).map(|()| None),
        }
    }

    fn local_config_value(&self, key: &str) -> Result<Option<String>> {
        let output = self
            .command(&["config", "--local", "--get", key])
            .output()?;
        Ok(output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string()))
    }

    /// Commits exactly `paths` (new files included) whatever else is staged,
    /// and returns the new commit's sha.
    pub fn commit_paths<P: AsRef<Path>>(&self, paths: &[P], message: &str) -> Result<String> {
        if paths.is_empty() {
            bail!("nothing to commit: no paths given for `{message}`");
        }
        let paths: Vec<&OsStr> = paths.iter().map(|p| p.as_ref().as_os_str()).collect();
        let mut add: Vec<&OsStr> = vec!["add".as_ref(), "--".as_ref()];
        add.extend(&paths);
        self.git(&add)?;
        let mut commit: Vec<&OsStr> = vec![
            "commit".as_ref(),
            "--quiet".as_ref(),
            "-m".as_ref(),
            message.as_ref(),
            "--".as_ref(),
        ];
        commit.extend(&paths);
        self.git(&commit)?;
        self.head()
    }

    /// An annotated tag at HEAD.
    pub fn tag_annotated(&self, name: &str, message: &str) -> Result<()> {
        self.git(&["tag", "--annotate", "-m", message, "--", name])?;
        Ok(())
    }

    pub fn delete_tag(&self, name: &str) -> Result<()> {
        self.git(&["tag", "--delete", "--", name])?;
        Ok(())
    }

    /// A full, independent copy of the repository at `dest` (which must not
    /// exist or be empty) with every tag and HEAD at the same commit, for
    /// `--dry-run`. The copy has no remote, so nothing done there can be
    /// pushed by mistake. A locally configured identity is copied over.
    pub fn scratch_clone(&self, dest: &Path) -> Result<Repo> {
        let head = self.head()?;
        let output = self
            .command(&[
                "clone".as_ref(),
                "--quiet".as_ref(),
                "--no-hardlinks".as_ref(),
                "--".as_ref(),
                self.root.as_os_str(),
                dest.as_os_str(),
            ])
            .output()?;
        if !output.status.success() {
            bail!(
                "cannot make a scratch clone of {} at {}: {}",
                self.root.display(),
                dest.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let clone = Repo {
            root: dest.to_path_buf(),
        };
        // Clone only brings tags that point into the cloned history.
        clone.git(&["fetch", "--quiet", "origin", "+refs/tags/*:refs/tags/*"])?;
        if clone.head()? != head {
            clone.git(&["checkout", "--quiet", "--detach", &head])?;
        }
        clone.git(&["remote", "remove", "origin"])?;
        for key in ["user.name", "user.email"] {
            if let Some(value) = self.local_config_value(key)? {
                clone.git(&["config", "--local", key, &value])?;
            }
        }
        Ok(clone)
    }

    /// Takes back the last commit, which touched only `paths`: HEAD goes
    /// back to `parent` and those paths' index entries with it; the work
    /// tree and anything else staged are left alone.
    pub fn undo_commit<P: AsRef<Path>>(&self, parent: &str, paths: &[P]) -> Result<()> {
        self.git(&["reset", "--quiet", "--soft", parent])?;
        let mut args: Vec<&OsStr> = vec![
            "reset".as_ref(),
            "--quiet".as_ref(),
            parent.as_ref(),
            "--".as_ref(),
        ];
        args.extend(paths.iter().map(|p| p.as_ref().as_os_str()));
        self.git(&args)?;
        Ok(())
    }

    pub fn reset_hard(&self, sha: &str) -> Result<()> {
        self.git(&["reset", "--quiet", "--hard", sha])?;
        Ok(())
    }

    /// The content of `path` (relative to the repository root) at `rev`.
    pub fn show_file_at(&self, rev: &str, path: &str) -> Result<String> {
        let output = self.command(&["show", &format!("{rev}:{path}")]).run()?;
        String::from_utf8(output.stdout)
            .with_context(|| format!("{path} at {rev} is not UTF-8 text"))
    }

    /// Writes the tree of `rev` into `dest_dir` (created if missing), as
    /// `git archive | tar -x` would. `rev` may name a subtree (`1.2.0:sub`).
    pub fn archive(&self, rev: &str, dest_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dest_dir)
            .with_context(|| format!("creating {}", dest_dir.display()))?;
        // A source tree fits in memory; reading it whole lets the one runner
        // report git's failure before anything is unpacked.
        let output = self.command(&["archive", "--format=tar", rev]).run()?;
        tar::Archive::new(output.stdout.as_slice())
            .unpack(dest_dir)
            .with_context(|| format!("unpacking {rev} into {}", dest_dir.display()))
    }

    /// Attaches `text` to `object` under `refs/notes/<notes_ref>`, replacing a
    /// note already there. A URL's userinfo (a CI token) is not kept: notes
    /// are pushed and read by everyone.
    pub fn notes_add(&self, notes_ref: &str, object: &str, text: &str) -> Result<()> {
        let text = process::redact_urls(text).into_bytes();
        self.command(&[
            "notes", "--ref", notes_ref, "add", "--force", "--file=-", object,
        ])
        .with(|e| e.stdin_bytes(text))
        .run()?;
        Ok(())
    }

    /// The note on `object` under `refs/notes/<notes_ref>`, if any.
    pub fn notes_show(&self, notes_ref: &str, object: &str) -> Result<Option<String>> {
        let command = self.command(&["notes", "--ref", notes_ref, "show", object]);
        let output = command.output()?;
        if output.status.success() {
            return Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()));
        }
        if String::from_utf8_lossy(&output.stderr).contains("no note found") {
            return Ok(None);
        }
        process::check(command.shown(), &output).map(|()| None)
    }

    pub fn push(&self, remote: &str, refspecs: &[&str]) -> Result<()> {
        let mut args = vec!["push", "--quiet", remote];
        args.extend(refspecs);
        self.git(&args)?;
        Ok(())
    }

    pub fn fetch(&self, remote: &str, refspecs: &[&str]) -> Result<()> {
        let mut args = vec!["fetch", "--quiet", remote];
        args.extend(refspecs);
        self.git(&args)?;
        Ok(())
    }
}

/// `git ARGS` run in `dir`, with the environment every git command of the
/// harness needs.
fn git_in<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Process {
    let dir = dir.to_path_buf();
    process::cmd("git", args).with(move |e| {
        e.dir(dir)
            // Messages are matched ("no note found"); keep them in English.
            .env("LC_ALL", "C")
            // A credential prompt would hang a CI job; fail instead.
            .env("GIT_TERMINAL_PROMPT", "0")
            // Set when the harness runs from a git hook; they would point every
            // command at the hook's repository instead of `dir`.
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
    })
}

/// Test helpers shared with other modules' tests: a repository in a temp
/// directory with a local identity and no signing.
#[cfg(test)]
pub mod testing {
    use super::*;

    pub fn init(dir: &Path) -> Repo {
        std::fs::create_dir_all(dir).unwrap();
        git_in(dir, &["init", "--quiet", "--initial-branch=main"])
            .run()
            .unwrap();
        let repo = Repo::open(dir).unwrap();
        for (k, v) in [
            ("user.name", "Release Tester"),
            ("user.email", "tester@example.org"),
            ("commit.gpgsign", "false"),
            ("tag.gpgsign", "false"),
        ] {
            repo.git(&["config", "--local", k, v]).unwrap();
        }
        repo
    }

    pub fn write(repo: &Repo, path: &str, text: &str) {
        let full = repo.root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    /// Writes a file and commits it; returns the commit sha.
    pub fn commit_file(repo: &Repo, path: &str, text: &str, subject: &str) -> String {
        write(repo, path, text);
        repo.commit_paths(&[path], subject).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn open_rejects_a_plain_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = Repo::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a git repository"), "{err}");
        assert!(err.contains("fix:"), "{err}");
        let err = Repo::open(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("no such directory"), "{err}");
    }

    #[test]
    fn open_from_a_subdirectory_finds_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let sub = Repo::open(&dir.path().join("sub")).unwrap();
        assert_eq!(sub.root, repo.root);
    }

    #[test]
    fn dirty_paths_include_untracked_and_modified() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "a.txt", "a\n", "Add a");
        assert!(repo.dirty_paths().unwrap().is_empty());
        write(&repo, "a.txt", "changed\n");
        write(&repo, "new dir/b.txt", "b\n");
        let mut dirty = repo.dirty_paths().unwrap();
        dirty.sort();
        assert_eq!(dirty, vec!["a.txt", "new dir/b.txt"]);
        repo.git(&["add", "-A"]).unwrap();
        repo.git(&["commit", "--quiet", "-m", "More"]).unwrap();
        assert!(repo.dirty_paths().unwrap().is_empty());
        // A rename is one entry, under its new name.
        repo.git(&["mv", "a.txt", "c.txt"]).unwrap();
        assert_eq!(repo.dirty_paths().unwrap(), vec!["c.txt"]);
    }

    #[test]
    fn branch_tags_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        let first = commit_file(&repo, "a.txt", "1\n", "First");
        assert_eq!(repo.current_branch().unwrap().as_deref(), Some("main"));
        assert_eq!(repo.head().unwrap(), first);
        assert!(!repo.tag_exists("1.0.0").unwrap());
        repo.tag_annotated("1.0.0", "Release 1.0.0").unwrap();
        assert!(repo.tag_exists("1.0.0").unwrap());
        assert_eq!(repo.tag_commit("1.0.0").unwrap().as_deref(), Some(&*first));
        // An annotated tag is its own object.
        assert_ne!(repo.rev_parse("1.0.0").unwrap(), first);
        assert_eq!(repo.rev_parse("1.0.0^{commit}").unwrap(), first);
        assert_eq!(repo.tags().unwrap(), vec!["1.0.0"]);
        let err = repo.rev_parse("nope").unwrap_err().to_string();
        assert!(err.contains("`nope` is not a known revision"), "{err}");
        repo.delete_tag("1.0.0").unwrap();
        assert!(repo.tags().unwrap().is_empty());
        repo.git(&["checkout", "--quiet", "--detach"]).unwrap();
        assert_eq!(repo.current_branch().unwrap(), None);
    }

    #[test]
    fn commits_since_skips_merges_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "a.txt", "1\n", "First");
        repo.tag_annotated("0.1.0", "Release 0.1.0").unwrap();
        repo.git(&["checkout", "--quiet", "-b", "topic"]).unwrap();
        commit_file(&repo, "b.txt", "1\n", "Topic work");
        repo.git(&["checkout", "--quiet", "main"]).unwrap();
        commit_file(&repo, "c.txt", "1\n", "Main work: with a colon");
        repo.git(&["merge", "--quiet", "--no-ff", "-m", "Merge topic", "topic"])
            .unwrap();
        let subjects: Vec<String> = repo
            .commits_since(Some("0.1.0"))
            .unwrap()
            .into_iter()
            .map(|c| c.subject)
            .collect();
        assert_eq!(subjects, vec!["Topic work", "Main work: with a colon"]);
        let all = repo.commits_since(None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].subject, "First");
        assert_eq!(all[0].author, "Release Tester <tester@example.org>");
        assert_eq!(all[0].sha.len(), 40);
        assert!(repo.commits_since(Some("HEAD")).unwrap().is_empty());
    }

    #[test]
    fn failures_name_command_code_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        let err = repo.git(&["frobnicate"]).unwrap_err().to_string();
        assert!(
            err.starts_with("`git frobnicate` exited with 1:\n"),
            "{err}"
        );
        assert!(err.contains("not a git command"), "{err}");
    }

    #[test]
    fn identity_missing_says_which_config() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        assert_eq!(
            repo.identity().unwrap(),
            ("Release Tester".into(), "tester@example.org".into())
        );
        // An empty local value hides any global identity of the machine.
        repo.git(&["config", "--local", "user.name", ""]).unwrap();
        let err = repo.identity().unwrap_err().to_string();
        assert!(err.contains("no user.name configured"), "{err}");
        assert!(err.contains("git config user.name"), "{err}");
        repo.git(&["config", "--local", "user.name", "R"]).unwrap();
        repo.git(&["config", "--local", "user.email", ""]).unwrap();
        let err = repo.identity().unwrap_err().to_string();
        assert!(err.contains("no user.email configured"), "{err}");
    }

    #[test]
    fn commit_paths_commits_only_those_paths() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "a.txt", "1\n", "First");
        write(&repo, "a.txt", "2\n");
        write(&repo, "other.txt", "staged by someone\n");
        repo.git(&["add", "other.txt"]).unwrap();
        let sha = repo.commit_paths(&["a.txt"], "Release 1.0.0").unwrap();
        assert_eq!(repo.head().unwrap(), sha);
        let files = repo
            .git(&["show", "--name-only", "--format=%s", "HEAD"])
            .unwrap();
        assert_eq!(files, "Release 1.0.0\n\na.txt");
        assert_eq!(repo.dirty_paths().unwrap(), vec!["other.txt"]);

        let parent = repo.rev_parse("HEAD~1").unwrap();
        repo.undo_commit(&parent, &["a.txt"]).unwrap();
        assert_eq!(repo.head().unwrap(), parent);
        let status = repo.git(&["status", "--porcelain"]).unwrap();
        assert_eq!(status, " M a.txt\nA  other.txt");
    }

    #[test]
    fn scratch_clone_has_tags_identity_and_no_remote() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "a.txt", "1\n", "First");
        repo.tag_annotated("1.0.0", "Release 1.0.0").unwrap();
        // A tag outside the checked-out history is still wanted.
        repo.git(&["checkout", "--quiet", "-b", "side"]).unwrap();
        commit_file(&repo, "s.txt", "1\n", "Side");
        repo.tag_annotated("0.9.0-side", "side").unwrap();
        repo.git(&["checkout", "--quiet", "main"]).unwrap();
        repo.git(&["branch", "-D", "side"]).unwrap();
        let head = commit_file(&repo, "a.txt", "2\n", "Second");

        let scratch = tempfile::tempdir().unwrap();
        let clone = repo.scratch_clone(&scratch.path().join("clone")).unwrap();
        assert_eq!(clone.head().unwrap(), head);
        let mut tags = clone.tags().unwrap();
        tags.sort();
        assert_eq!(tags, vec!["0.9.0-side", "1.0.0"]);
        assert_eq!(clone.identity().unwrap().0, "Release Tester");
        assert_eq!(clone.git(&["remote"]).unwrap(), "");
        assert!(clone.dirty_paths().unwrap().is_empty());

        commit_file(&clone, "a.txt", "3\n", "Only in the clone");
        clone.tag_annotated("2.0.0", "x").unwrap();
        assert_eq!(repo.head().unwrap(), head);
        assert!(!repo.tag_exists("2.0.0").unwrap());
        clone.reset_hard(&head).unwrap();
        assert_eq!(
            std::fs::read_to_string(clone.root.join("a.txt")).unwrap(),
            "2\n"
        );
    }

    #[test]
    fn old_revisions_can_be_read_and_exported() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "pkg/version.py", "V = \"1\"\n", "First");
        commit_file(&repo, "debian/changelog", "x\n", "Changelog");
        repo.tag_annotated("1.0.0", "Release 1.0.0").unwrap();
        commit_file(&repo, "pkg/version.py", "V = \"2\"\n", "Second");
        assert_eq!(
            repo.show_file_at("1.0.0", "pkg/version.py").unwrap(),
            "V = \"1\"\n"
        );
        let err = repo.show_file_at("1.0.0", "missing").unwrap_err();
        assert!(err.to_string().contains("git show 1.0.0:missing"), "{err}");

        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("prev");
        repo.archive("1.0.0", &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("pkg/version.py")).unwrap(),
            "V = \"1\"\n"
        );
        assert!(dest.join("debian/changelog").is_file());
        assert!(!dest.join(".git").exists());
        let err = repo.archive("nope", &out.path().join("x")).unwrap_err();
        assert!(err.to_string().contains("git archive"), "{err}");
    }

    #[test]
    fn notes_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        let sha = commit_file(&repo, "a.txt", "1\n", "First");
        assert_eq!(repo.notes_show("release", &sha).unwrap(), None);
        repo.notes_add("release", &sha, "{\"stage\": \"built\"}\n")
            .unwrap();
        repo.notes_add("release", &sha, "{\"stage\": \"verified\"}\n")
            .unwrap();
        assert_eq!(
            repo.notes_show("release", &sha).unwrap().as_deref(),
            Some("{\"stage\": \"verified\"}\n")
        );
        assert!(repo.notes_show("release", "nope").is_err());
    }

    #[test]
    fn push_and_fetch_between_repositories() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(&dir.path().join("work"));
        let sha = commit_file(&repo, "a.txt", "1\n", "First");
        repo.tag_annotated("1.0.0", "Release 1.0.0").unwrap();
        let remote = dir.path().join("remote.git");
        git_in(
            dir.path(),
            &[
                "init".as_ref(),
                "--quiet".as_ref(),
                "--bare".as_ref(),
                remote.as_os_str(),
            ],
        )
        .run()
        .unwrap();
        let url = remote.to_str().unwrap();
        repo.push(url, &["main", "refs/tags/1.0.0"]).unwrap();
        repo.notes_add("release", &sha, "built").unwrap();
        repo.push(url, &["refs/notes/release"]).unwrap();

        let other = init(&dir.path().join("other"));
        other
            .fetch(
                url,
                &["refs/tags/*:refs/tags/*", "refs/notes/*:refs/notes/*"],
            )
            .unwrap();
        assert!(other.tag_exists("1.0.0").unwrap());
        assert_eq!(
            other.notes_show("release", &sha).unwrap().as_deref(),
            Some("built\n")
        );
        let err = repo.push(url, &["no-such-branch"]).unwrap_err().to_string();
        assert!(err.contains("git push --quiet"), "{err}");
    }

    #[test]
    fn a_failed_push_or_fetch_never_shows_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(&dir.path().join("work"));
        commit_file(&repo, "a.txt", "1\n", "First");
        let url = "https://ci:s3cr3t@127.0.0.1:9/x.git";
        repo.git(&["remote", "add", "origin", url]).unwrap();
        for remote in ["origin", url] {
            for err in [
                repo.push(remote, &["HEAD:refs/heads/main"]).unwrap_err(),
                repo.fetch(remote, &["refs/tags/*:refs/tags/*"])
                    .unwrap_err(),
            ] {
                let msg = format!("{err:#}");
                assert!(msg.contains("127.0.0.1:9"), "{msg}");
                assert!(!msg.contains("s3cr3t"), "{msg}");
            }
        }
    }
}
