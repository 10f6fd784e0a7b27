//! The ledger: a durable record of every step of every release (tagged,
//! built, verified, canary, each gate evaluation, each promote batch,
//! rollbacks), with the version, commit, .deb sha256, the digest of the
//! verify report, times, who ran it and why a step was forced.
//!
//! Where it lives: git notes under `refs/notes/release-harness`, one note per
//! release, attached to the release tag's object, pushed to the project's
//! remote when it has one. The CI jobs that release, promote and roll back
//! all have a clone of the project and push rights to it already, so the
//! ledger needs no new service, no database and no new credentials; it
//! travels with the tags it describes, `git log refs/notes/release-harness`
//! is its audit trail, and anybody can read it with `git notes show`.
//!
//! Every write is a compare-and-swap: the new notes commit has the current
//! one as parent and is pushed with `--force-with-lease` naming the commit it
//! was based on (locally, `git update-ref REF NEW OLD`); a writer that lost
//! the race re-reads and re-applies its change. Every step is written twice,
//! started then finished, so a step that is found started and never finished
//! is known to have been cut off: it is reported and resumed, never silently
//! repeated. One production change at a time: a lock ref
//! (`refs/release-harness/lock`, a commit whose message says who holds it)
//! is created and deleted with the same leases, so two CI runners cannot
//! both hold it. A lock whose holder is gone (its lease expired, or its
//! process on this machine is dead) is taken over with a report.
//!
//! The ledger is the bottom of the production side: `record` holds the types
//! it stores (the production steps fill them in), this file the store and
//! the lock; git runs through `support::git`.

mod record;

use std::path::Path;
use std::process::Output;

use anyhow::{bail, Context, Result};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use self::record::hostname;
pub use self::record::{
    now, parse_time, Actor, CheckResult, CoverageFigures, HostResult, Outcome, Record,
    SoakDecision, Step, StepKind, Verdict,
};
use crate::support::git::Repo;
use crate::support::process;

pub const NOTES_REF: &str = "refs/notes/release-harness";
pub const LOCK_REF: &str = "refs/release-harness/lock";
/// How long a lock holds without its holder being seen as gone.
pub const LOCK_LEASE_SECS: i64 = 2 * 3600;
const ZERO_OID: &str = "0000000000000000000000000000000000000000";
const MAX_ATTEMPTS: usize = 20;

/// The ledger of one repository, and the remote it is shared through.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub repo: Repo,
    pub remote: Option<String>,
}

/// Who holds the production lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub operation: String,
    pub release: String,
    pub by: Actor,
    pub since: String,
    pub expires: String,
    /// Unique to one acquisition (two promotes of one process differ).
    pub token: String,
}

/// A held lock; `release` it when done (a crash leaves it, see the module doc).
#[derive(Debug)]
pub struct Lock {
    pub holder: LockHolder,
    /// The holder this lock replaced because it was gone, for the report.
    pub took_over: Option<LockHolder>,
    commit: String,
}

impl Ledger {
    /// The ledger of `repo`, shared through `origin` (or its only remote);
    /// local only when it has none.
    pub fn open(repo: &Repo) -> Result<Ledger> {
        let remotes: Vec<String> = repo.git(&["remote"])?.lines().map(str::to_string).collect();
        let remote = if remotes.iter().any(|r| r == "origin") {
            Some("origin".to_string())
        } else if remotes.len() == 1 {
            Some(remotes[0].clone())
        } else {
            None
        };
        Ok(Ledger {
            repo: repo.clone(),
            remote,
        })
    }

    /// Every release the ledger knows, oldest tag first.
    pub fn records(&self) -> Result<Vec<Record>> {
        let base = self.sync_ref(NOTES_REF)?.0;
        let Some(base) = base else {
            return Ok(Vec::new());
        };
        let tmp = self.temp_ref(&base)?;
        let listed = self.git(&["notes", "--ref", &tmp, "list"]);
        let _ = self.git(&["update-ref", "-d", &tmp]);
        let mut records = Vec::new();
        for line in listed?.lines() {
            let Some((note, _object)) = line.split_once(' ') else {
                continue;
            };
            let text = self.git(&["cat-file", "blob", note])?;
            match serde_json::from_str::<Record>(&text) {
                Ok(r) => records.push(r),
                Err(e) => eprintln!("warning: ledger note {note} is not a release record: {e}"),
            }
        }
        records.sort_by(|a, b| {
            let at = |r: &Record| r.steps.first().map(|s| s.started_at.clone());
            at(a).cmp(&at(b)).then(a.tag.cmp(&b.tag))
        });
        Ok(records)
    }

    pub fn record(&self, tag: &str) -> Result<Option<Record>> {
        let object = self.tag_object(tag)?;
        let base = self.sync_ref(NOTES_REF)?.0;
        self.read_note(base.as_deref(), &object)
    }

    /// Applies `change` to the record of `tag` (None when it has none yet)
    /// and writes the result, as a compare-and-swap: when another writer got
    /// there first, `change` is applied again to what it wrote.
    pub fn update<T>(
        &self,
        tag: &str,
        mut change: impl FnMut(Option<Record>) -> Result<(Record, T)>,
    ) -> Result<T> {
        let object = self.tag_object(tag)?;
        for _ in 0..MAX_ATTEMPTS {
            let (base, lease) = self.sync_ref(NOTES_REF)?;
            let current = self.read_note(base.as_deref(), &object)?;
            let (record, value) = change(current)?;
            let text = serde_json::to_string_pretty(&record)? + "\n";
            let tmp = match &base {
                Some(b) => self.temp_ref(b)?,
                None => self.temp_ref_empty(),
            };
            let written = self
                .repo
                .notes_add(&tmp, &object, &text)
                .and_then(|_| self.git(&["rev-parse", "--verify", &tmp]));
            let _ = self.git(&["update-ref", "-d", &tmp]);
            let new = written?;
            if self.publish(NOTES_REF, Some(&new), base.as_deref(), lease.as_deref())? {
                return Ok(value);
            }
        }
        bail!(
            "could not write the ledger of {tag} after {MAX_ATTEMPTS} attempts: other writers \
             kept changing {NOTES_REF}; run again"
        )
    }

    /// Appends a step (started) and returns its index.
    pub fn start_step(&self, tag: &str, step: Step) -> Result<usize> {
        self.update(tag, |record| {
            let mut record =
                record.with_context(|| format!("the ledger has no record of release {tag}"))?;
            record.steps.push(step.clone());
            let index = record.steps.len() - 1;
            Ok((record, index))
        })
    }

    /// Marks step `index` finished with `outcome`; `fill` adds what was found.
    pub fn finish_step(
        &self,
        tag: &str,
        index: usize,
        outcome: Outcome,
        fill: impl Fn(&mut Step),
    ) -> Result<()> {
        self.update(tag, |record| {
            let mut record =
                record.with_context(|| format!("the ledger has no record of release {tag}"))?;
            let step = record
                .steps
                .get_mut(index)
                .with_context(|| format!("release {tag}'s ledger has no step {index}"))?;
            step.finished_at = Some(now());
            step.outcome = Some(outcome);
            fill(step);
            Ok((record, ()))
        })
    }

    /// Takes the production lock for `operation` on `release`. A lock held
    /// by a live holder stops here with who holds it and how to go on; a
    /// lock whose holder is gone, or any lock with `break_lock`, is taken
    /// over (see `Lock::took_over`).
    pub fn lock(&self, operation: &str, release: &str, break_lock: bool) -> Result<Lock> {
        for _ in 0..MAX_ATTEMPTS {
            let (current, lease) = self.sync_ref(LOCK_REF)?;
            let held = match &current {
                Some(sha) => Some(self.read_lock(sha)?),
                None => None,
            };
            if let Some(h) = &held {
                if !break_lock && !holder_is_gone(h) {
                    bail!(
                        "stopped: the production lock is held by the {} of {} started {} by {} \
                         (lease until {}). Only one rollout changes production at a time: wait \
                         for it to end. If that job is dead, run again with --break-lock \
                         (recorded in the ledger).",
                        h.operation,
                        h.release,
                        h.since,
                        h.by.describe(),
                        h.expires
                    );
                }
            }
            let holder = LockHolder {
                operation: operation.to_string(),
                release: release.to_string(),
                by: Actor::current(),
                since: now(),
                expires: (Utc::now() + chrono::Duration::seconds(LOCK_LEASE_SECS))
                    .to_rfc3339_opts(SecondsFormat::Millis, true),
                token: format!("{}-{:016x}", std::process::id(), rand_bits()),
            };
            let commit = self.lock_commit(&holder)?;
            if self.publish(
                LOCK_REF,
                Some(&commit),
                current.as_deref(),
                lease.as_deref(),
            )? {
                return Ok(Lock {
                    holder,
                    took_over: held,
                    commit,
                });
            }
        }
        bail!("could not take the production lock {LOCK_REF}: it kept changing; run again")
    }

    /// The commit that carries `holder` on the lock ref.
    fn lock_commit(&self, holder: &LockHolder) -> Result<String> {
        let tree = self.git(&["hash-object", "-t", "tree", "-w", "/dev/null"])?;
        let message = serde_json::to_string_pretty(holder)?;
        self.git(&["commit-tree", &tree, "-m", &message])
    }

    /// Extends the lock's lease by LOCK_LEASE_SECS from now. Called between
    /// the steps of a long operation (each promote batch, bounded by
    /// rollout.timeout_secs), so a promote longer than one lease is never
    /// taken for dead. Fails when the lock was taken over meanwhile.
    pub fn renew(&self, lock: &mut Lock) -> Result<()> {
        let (current, lease) = self.sync_ref(LOCK_REF)?;
        let mut holder = lock.holder.clone();
        holder.expires = (Utc::now() + chrono::Duration::seconds(LOCK_LEASE_SECS))
            .to_rfc3339_opts(SecondsFormat::Millis, true);
        let commit = self.lock_commit(&holder)?;
        if current.as_deref() != Some(lock.commit.as_str())
            || !self.publish(
                LOCK_REF,
                Some(&commit),
                current.as_deref(),
                lease.as_deref(),
            )?
        {
            bail!(
                "stopped: the production lock of this {} of {} was taken over (--break-lock, \
                 or its lease ran out); the other holder now changes production",
                holder.operation,
                holder.release
            );
        }
        lock.holder = holder;
        lock.commit = commit;
        Ok(())
    }

    /// Gives the lock back, if it is still this one's.
    pub fn unlock(&self, lock: Lock) -> Result<()> {
        let (current, lease) = self.sync_ref(LOCK_REF)?;
        if current.as_deref() != Some(lock.commit.as_str()) {
            eprintln!(
                "warning: the production lock was taken over while {} of {} ran; leaving it",
                lock.holder.operation, lock.holder.release
            );
            return Ok(());
        }
        if !self.publish(LOCK_REF, None, current.as_deref(), lease.as_deref())? {
            eprintln!("warning: the production lock changed while being released; leaving it");
        }
        Ok(())
    }

    /// After a signal cut this process off in the middle of a production
    /// operation: closes every step it started and did not finish as
    /// interrupted, with `why`, and gives back the production lock if it
    /// holds it. A promote step stays under way: the next promote resumes
    /// it from the interrupted batch, as it does after a crash. Returns one
    /// line per step closed (`<tag>: batch 2 (app2)`).
    pub fn close_after_cut_off(&self, why: &str) -> Result<Vec<String>> {
        let me = Actor::current();
        let mine = |s: &Step| s.by.host == me.host && s.by.pid == me.pid;
        let mut closed = Vec::new();
        for record in self.records()? {
            let open: Vec<usize> = record
                .unfinished()
                .into_iter()
                .filter(|(_, s)| mine(s) && s.kind != StepKind::Promote)
                .map(|(i, _)| i)
                .collect();
            for index in open {
                let step = &record.steps[index];
                closed.push(match step.batch {
                    Some(b) => format!(
                        "{}: {} {b} ({})",
                        record.tag,
                        step.kind.name(),
                        step.hosts.join(",")
                    ),
                    None => format!("{}: {}", record.tag, step.kind.name()),
                });
                self.finish_step(&record.tag, index, Outcome::Interrupted, |s| {
                    s.message = why.to_string()
                })?;
            }
        }
        let (current, lease) = self.sync_ref(LOCK_REF)?;
        if let Some(commit) = current {
            let holder = self.read_lock(&commit)?;
            if holder.by.host == me.host
                && holder.by.pid == me.pid
                && !self.publish(LOCK_REF, None, Some(&commit), lease.as_deref())?
            {
                eprintln!("warning: the production lock changed while being released; leaving it");
            }
        }
        Ok(closed)
    }

    /// The object notes attach to: the tag itself (the tag object of an
    /// annotated tag).
    fn tag_object(&self, tag: &str) -> Result<String> {
        let name = format!("refs/tags/{tag}");
        if self.local_ref(&name)?.is_none() {
            // Another runner made the release: its tag is on the remote.
            if let Some(remote) = &self.remote {
                let _ = self.git(&["fetch", "--quiet", remote, &format!("{name}:{name}")]);
            }
        }
        self.git(&["rev-parse", "--verify", &name])
            .with_context(|| {
                format!(
                    "{}: no tag {tag}; the ledger keeps its records on release tags (fetch the \
                     tags: git fetch --tags)",
                    self.repo.root.display()
                )
            })
    }

    /// Brings `git_ref` up to date from the remote; returns the local value to
    /// build on and the remote value to lease against (None: absent).
    fn sync_ref(&self, git_ref: &str) -> Result<(Option<String>, Option<String>)> {
        let Some(remote) = &self.remote else {
            return Ok((self.local_ref(git_ref)?, None));
        };
        let listed = self.git(&["ls-remote", remote, git_ref]).with_context(|| {
            format!(
                "reading {git_ref} from remote {remote} (the ledger is shared through it); \
                 check the network and credentials"
            )
        })?;
        let remote_sha = listed.split_whitespace().next().map(str::to_string);
        match &remote_sha {
            Some(sha) => {
                self.git(&["fetch", "--quiet", remote, &format!("+{git_ref}:{git_ref}")])?;
                Ok((Some(sha.clone()), remote_sha))
            }
            // Nothing shared yet: the lock starts free; notes made locally
            // before a remote existed are built on and then pushed.
            None if git_ref == LOCK_REF => Ok((None, None)),
            None => Ok((self.local_ref(git_ref)?, None)),
        }
    }

    /// Moves `git_ref` from `base` to `new` (None: delete) on the remote
    /// (leased against `lease`) and locally. False when someone else moved
    /// it first.
    fn publish(
        &self,
        git_ref: &str,
        new: Option<&str>,
        base: Option<&str>,
        lease: Option<&str>,
    ) -> Result<bool> {
        if let Some(remote) = &self.remote {
            let lease_arg = format!("--force-with-lease={git_ref}:{}", lease.unwrap_or(""));
            let refspec = format!("{}:{git_ref}", new.unwrap_or(""));
            let out = self.git_output(&["push", "--porcelain", &lease_arg, remote, &refspec])?;
            if !out.status.success() {
                let text = process::redact_urls(&format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
                if text.contains("[rejected]")
                    || text.contains("stale info")
                    || text.contains("fetch first")
                    || text.contains("non-fast-forward")
                {
                    return Ok(false);
                }
                bail!(
                    "pushing {git_ref} to remote {remote} failed: {}\n  fix: the CI job needs \
                     push rights to {git_ref} (protected refs refuse it)",
                    text.trim()
                );
            }
            // The remote has it: the local ref follows whatever it was.
            match new {
                Some(n) => self.git(&["update-ref", git_ref, n])?,
                None => self.git(&["update-ref", "-d", git_ref]).unwrap_or_default(),
            };
            return Ok(true);
        }
        let old = base.unwrap_or(ZERO_OID);
        let out = match new {
            Some(n) => self.git_output(&["update-ref", git_ref, n, old])?,
            None => self.git_output(&["update-ref", "-d", git_ref, old])?,
        };
        Ok(out.status.success())
    }

    fn read_note(&self, base: Option<&str>, object: &str) -> Result<Option<Record>> {
        let Some(base) = base else { return Ok(None) };
        let tmp = self.temp_ref(base)?;
        let shown = self.repo.notes_show(&tmp, object);
        let _ = self.git(&["update-ref", "-d", &tmp]);
        match shown? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text).map(Some).with_context(|| {
                format!("the ledger note on {object} in {NOTES_REF} is not a release record")
            }),
        }
    }

    fn read_lock(&self, commit: &str) -> Result<LockHolder> {
        let message = self.git(&["log", "-1", "--format=%B", commit])?;
        serde_json::from_str(&message)
            .with_context(|| format!("{LOCK_REF} ({commit}) does not say who holds it"))
    }

    /// A private notes ref at `base`, so reads and writes see exactly the
    /// commit the compare-and-swap is against.
    fn temp_ref(&self, base: &str) -> Result<String> {
        let name = self.temp_ref_empty();
        self.git(&["update-ref", &name, base])?;
        Ok(name)
    }

    fn temp_ref_empty(&self) -> String {
        format!(
            "refs/notes/release-harness-tmp-{}-{:x}",
            std::process::id(),
            rand_bits()
        )
    }

    fn local_ref(&self, git_ref: &str) -> Result<Option<String>> {
        let out = self.git_output(&["rev-parse", "--verify", "--quiet", git_ref])?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }

    fn git(&self, args: &[&str]) -> Result<String> {
        self.repo.git(args)
    }

    /// Runs git whatever its exit status: a refused push or a moved ref is
    /// an answer here, not an error.
    fn git_output(&self, args: &[&str]) -> Result<Output> {
        self.repo.output(args)
    }
}

/// A holder is gone when its lease expired, or it ran on this machine and
/// its process is dead.
fn holder_is_gone(h: &LockHolder) -> bool {
    if let Some(expires) = parse_time(&h.expires) {
        if expires < Utc::now() {
            return true;
        }
    }
    h.by.host == hostname() && !Path::new(&format!("/proc/{}", h.by.pid)).exists()
}

fn rand_bits() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::git::testing;

    fn tagged_repo(dir: &Path) -> Repo {
        let repo = testing::init(dir);
        testing::commit_file(&repo, "a", "a", "first");
        repo.tag_annotated("1.0.0", "Release 1.0.0").unwrap();
        repo
    }

    /// Two clones `a` and `b` of one shared bare repository holding a tagged
    /// release: two CI runners that share a remote.
    fn clones_of_one_remote(dir: &Path) -> [Ledger; 2] {
        let origin = tagged_repo(&dir.join("origin"));
        let bare = dir.join("shared.git");
        origin
            .git(&["clone", "--quiet", "--bare", ".", bare.to_str().unwrap()])
            .unwrap();
        ["a", "b"].map(|name| {
            let path = dir.join(name);
            origin
                .git(&[
                    "clone",
                    "--quiet",
                    bare.to_str().unwrap(),
                    path.to_str().unwrap(),
                ])
                .unwrap();
            Ledger::open(&Repo::open(&path).unwrap()).unwrap()
        })
    }

    fn new_record(ledger: &Ledger) {
        ledger
            .update("1.0.0", |r| {
                assert!(r.is_none());
                Ok((Record::new("pkg", "1.0.0-1", "1.0.0", "abc"), ()))
            })
            .unwrap();
    }

    #[test]
    fn steps_are_written_started_then_finished() {
        let dir = tempfile::tempdir().unwrap();
        let repo = tagged_repo(&dir.path().join("r"));
        let ledger = Ledger::open(&repo).unwrap();
        assert!(ledger.remote.is_none());
        new_record(&ledger);
        let i = ledger
            .start_step("1.0.0", Step::start(StepKind::Canary))
            .unwrap();
        let r = ledger.record("1.0.0").unwrap().unwrap();
        assert_eq!(r.unfinished().len(), 1);
        ledger
            .finish_step("1.0.0", i, Outcome::Ok, |s| s.message = "done".into())
            .unwrap();
        let r = ledger.record("1.0.0").unwrap().unwrap();
        assert!(r.unfinished().is_empty());
        assert!(r.steps[0].ok());
        assert_eq!(ledger.records().unwrap().len(), 1);
        // The history of the notes ref is the audit trail: one commit per write.
        let log = repo.git(&["rev-list", "--count", NOTES_REF]).unwrap();
        assert_eq!(log, "3");
    }

    #[test]
    fn writers_through_a_remote_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b] = clones_of_one_remote(dir.path());
        assert_eq!(a.remote.as_deref(), Some("origin"));
        new_record(&a);
        let ia = a.start_step("1.0.0", Step::start(StepKind::Gate)).unwrap();
        // b builds on what a pushed: its step comes after a's.
        let ib = b.start_step("1.0.0", Step::start(StepKind::Gate)).unwrap();
        assert_eq!((ia, ib), (0, 1));
        // a's local ref is now behind; its write is re-applied on top of b's.
        a.finish_step("1.0.0", ia, Outcome::Soaking, |_| {})
            .unwrap();
        let seen = b.record("1.0.0").unwrap().unwrap();
        assert_eq!(seen.steps.len(), 2);
        assert_eq!(seen.steps[0].outcome, Some(Outcome::Soaking));
        assert!(seen.steps[1].finished_at.is_none());
    }

    #[test]
    fn an_unreachable_remote_never_shows_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let repo = tagged_repo(&dir.path().join("r"));
        let url = "https://ci:s3cr3t@127.0.0.1:9/x.git";
        repo.git(&["remote", "add", "origin", url]).unwrap();
        let ledger = Ledger::open(&repo).unwrap();
        let failures = [
            ledger.lock("promote", "1.0.0", false).map(|_| ()),
            ledger
                .start_step("1.0.0", Step::start(StepKind::Canary))
                .map(|_| ()),
            ledger
                .publish(NOTES_REF, Some(&repo.head().unwrap()), None, None)
                .map(|_| ()),
        ];
        for failure in failures {
            let msg = format!("{:#}", failure.unwrap_err());
            assert!(msg.contains("127.0.0.1:9"), "{msg}");
            assert!(!msg.contains("s3cr3t"), "{msg}");
        }
        repo.notes_add("release", "1.0.0", &format!("push to {url} failed"))
            .unwrap();
        let note = repo.notes_show("release", "1.0.0").unwrap().unwrap();
        assert_eq!(note, "push to https://***@127.0.0.1:9/x.git failed\n");
    }

    #[test]
    fn one_lock_at_a_time_across_clones() {
        let dir = tempfile::tempdir().unwrap();
        let ledgers = clones_of_one_remote(dir.path());
        let held = ledgers[0].lock("promote", "1.0.0", false).unwrap();
        assert!(held.took_over.is_none());
        let err = ledgers[1].lock("promote", "1.0.0", false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("stopped: the production lock is held by the promote of 1.0.0"),
            "{msg}"
        );
        assert!(msg.contains("--break-lock"), "{msg}");
        ledgers[0].unlock(held).unwrap();
        let again = ledgers[1].lock("rollback", "1.0.0", false).unwrap();
        // Broken on purpose: the holder is reported.
        let broken = ledgers[0].lock("promote", "1.0.0", true).unwrap();
        assert_eq!(broken.took_over.as_ref().unwrap().operation, "rollback");
        // The broken holder's release leaves the new lock alone.
        ledgers[1].unlock(again).unwrap();
        assert!(ledgers[1].lock("promote", "1.0.0", false).is_err());
        ledgers[0].unlock(broken).unwrap();
    }

    #[test]
    fn a_renewed_lease_runs_from_now_and_a_taken_lock_is_not_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let [a, b] = clones_of_one_remote(dir.path());
        let mut held = a.lock("promote", "1.0.0", false).unwrap();
        let first = parse_time(&held.holder.expires).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        a.renew(&mut held).unwrap();
        let renewed = parse_time(&held.holder.expires).unwrap();
        assert!(renewed > first, "{first} -> {renewed}");
        // The other runner sees the renewed lease, not the first one.
        let msg = format!("{:#}", b.lock("promote", "1.0.0", false).unwrap_err());
        assert!(msg.contains(&held.holder.expires), "{msg}");
        let _taken = b.lock("promote", "1.0.0", true).unwrap();
        let msg = format!("{:#}", a.renew(&mut held).unwrap_err());
        assert!(msg.contains("was taken over"), "{msg}");
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let repo = tagged_repo(&dir.path().join("r"));
        let ledger = Ledger::open(&repo).unwrap();
        let lock = ledger.lock("promote", "1.0.0", false).unwrap();
        // Rewrite the holder as a process of this machine that is gone.
        let mut dead = lock.holder.clone();
        dead.by.pid = u32::MAX - 1;
        let tree = repo
            .git(&["hash-object", "-t", "tree", "-w", "/dev/null"])
            .unwrap();
        let commit = repo
            .git(&[
                "commit-tree",
                &tree,
                "-m",
                &serde_json::to_string(&dead).unwrap(),
            ])
            .unwrap();
        repo.git(&["update-ref", LOCK_REF, &commit]).unwrap();
        let taken = ledger.lock("promote", "1.0.0", false).unwrap();
        assert_eq!(taken.took_over.unwrap().by.pid, u32::MAX - 1);
    }
}
