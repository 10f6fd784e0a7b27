//! Running a program on this host (git, dpkg-deb, mmdebstrap, cargo-deb,
//! cumin through the rollout prefix): one way, through `duct`, and one way to
//! report a failure: the command line, how it ended, and the tail of what it
//! printed on stderr.
//!
//! Every caller builds a `duct::Expression` (`duct::cmd!` or `duct::cmd`),
//! then hands it here with the words to show the user.
//!
//! What a command line or its output shows is passed through
//! `redact_urls` first: CI pushes through a token in a URL's userinfo
//! (`https://ci:TOKEN@host/...`), and a failed push must not print it.

use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// How many lines of a failed command's output an error shows.
pub const TAIL_LINES: usize = 20;

/// A command and how it is shown in messages (`git tag -a 0.2.0 ...`).
pub struct Process {
    expression: duct::Expression,
    shown: String,
}

/// Builds the command `program args...`; `shown` in errors as it would be typed.
pub fn cmd<I, S>(program: &str, args: I) -> Process
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| shown_word(&a.to_string_lossy())))
        .collect::<Vec<_>>()
        .join(" ");
    let shown = redact_urls(&shown);
    Process {
        expression: duct::cmd(program, args),
        shown,
    }
}

impl Process {
    /// Changes the duct expression (dir, env, stdin...) and keeps the name.
    pub fn with(self, f: impl FnOnce(duct::Expression) -> duct::Expression) -> Process {
        Process {
            expression: f(self.expression),
            shown: self.shown,
        }
    }

    /// How the command is shown in messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs it and returns what it printed, whatever the exit status: for the
    /// commands whose failure is an answer ("no such tag").
    pub fn output(&self) -> Result<Output> {
        self.expression
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .with_context(|| format!("starting `{}`", self.shown))
    }

    /// Runs it; non-zero is an error that says how it ended, with the tail of
    /// its stderr (or stdout when stderr is empty). Returns stdout.
    pub fn run(&self) -> Result<Output> {
        let output = self.output()?;
        check(&self.shown, &output)?;
        Ok(output)
    }

    /// Runs it and returns stdout as text, without the trailing newline.
    pub fn read(&self) -> Result<String> {
        let output = self.run()?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end_matches(['\n', '\r'])
            .to_string())
    }

    /// Runs it, killing it after `timeout`: `Ok(None)` when it was killed.
    /// Blocking: async code calls `output_within_async`.
    pub fn output_within(&self, timeout: Duration) -> Result<Option<Output>> {
        let handle = self.start()?;
        wait_or_kill(&handle, timeout, &self.shown)
    }

    /// `output_within` for async code; the command is also killed when the
    /// returned future is dropped (a harness interrupted by Ctrl-C or
    /// SIGTERM drops it), so it never outlives what waited for it.
    pub async fn output_within_async(&self, timeout: Duration) -> Result<Option<Output>> {
        let handle = Arc::new(self.start()?);
        let mut guard = KillOnDrop(Some(handle.clone()));
        let shown = self.shown.clone();
        let waited =
            tokio::task::spawn_blocking(move || wait_or_kill(&handle, timeout, &shown)).await;
        guard.0 = None;
        waited.with_context(|| format!("waiting for `{}`", self.shown))?
    }

    fn start(&self) -> Result<duct::Handle> {
        self.expression
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .start()
            .with_context(|| format!("starting `{}`", self.shown))
    }
}

fn wait_or_kill(handle: &duct::Handle, timeout: Duration, shown: &str) -> Result<Option<Output>> {
    match handle
        .wait_deadline(Instant::now() + timeout)
        .with_context(|| format!("waiting for `{shown}`"))?
    {
        Some(output) => Ok(Some(output.clone())),
        None => {
            let _ = handle.kill();
            Ok(None)
        }
    }
}

/// Kills the command it holds when dropped, unless disarmed (`.0 = None`).
struct KillOnDrop(Option<Arc<duct::Handle>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            let _ = handle.kill();
        }
    }
}

/// The error for a command that ended badly, or Ok when it exited 0.
pub fn check(shown: &str, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let how = match output.status.code() {
        Some(code) => format!("exited with {code}"),
        None => "was killed by a signal".to_string(),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout).into_owned()
    } else {
        stderr.into_owned()
    };
    let tail = redact_urls(&tail(&said, TAIL_LINES));
    if tail.is_empty() {
        Err(anyhow!("`{shown}` {how}"))
    } else {
        Err(anyhow!("`{shown}` {how}:\n{}", indent(&tail)))
    }
}

/// `text` with the userinfo of every URL in it (`user:password@` after
/// `scheme://`) replaced by `***@`: for anything shown that may quote a
/// remote's URL (a command line, git's stderr, a ledger note).
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        // The authority ends at the path, the end of the word or a quote.
        let authority_end = after
            .find(|c: char| {
                c == '/' || c == '?' || c == '#' || c.is_whitespace() || "'\"`<>".contains(c)
            })
            .unwrap_or(after.len());
        match after[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &after[userinfo_end..];
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// The last `n` non-empty lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every line indented by four spaces, for output quoted inside a message.
pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A word as a shell would need it typed, for messages only.
fn shown_word(word: &str) -> String {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .unwrap_or_else(|_| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_command_its_exit_and_the_tail_of_stderr() {
        let err = cmd("sh", ["-c", "echo one >&2; echo two >&2; exit 3"])
            .read()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("`sh -c 'echo one >&2; echo two >&2; exit 3'` exited with 3"),
            "{err}"
        );
        assert!(err.ends_with("    one\n    two"), "{err}");
    }

    #[test]
    fn urls_lose_their_userinfo() {
        assert_eq!(
            redact_urls("fatal: unable to access 'https://ci:s3cr3t@127.0.0.1:9/x.git/': no"),
            "fatal: unable to access 'https://***@127.0.0.1:9/x.git/': no"
        );
        assert_eq!(
            redact_urls("To https://oauth2:t0k@gitlab.example.org/a.git\nssh://git@h:22/r x@y"),
            "To https://***@gitlab.example.org/a.git\nssh://***@h:22/r x@y"
        );
        for kept in [
            "https://h/x.git?a=b@c",
            "user@host:x.git",
            "http://h",
            "://",
            "",
        ] {
            assert_eq!(redact_urls(kept), kept);
        }
    }

    #[test]
    fn a_failure_never_shows_a_token() {
        let err = cmd(
            "sh",
            [
                "-c",
                "echo \"fatal: repository 'https://ci:s3cr3t@h/x.git' not found\" >&2; exit 128",
                "https://ci:s3cr3t@h/x.git",
            ],
        )
        .read()
        .unwrap_err()
        .to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(err.contains("'https://***@h/x.git' not found"), "{err}");
    }

    #[test]
    fn read_returns_stdout_without_the_newline() {
        assert_eq!(cmd("printf", ["a b\\n"]).read().unwrap(), "a b");
    }

    #[test]
    fn a_missing_program_is_named() {
        let err = cmd("no-such-program-here", ["x"]).read().unwrap_err();
        assert!(
            format!("{err:#}").contains("starting `no-such-program-here x`"),
            "{err:#}"
        );
    }

    #[test]
    fn a_command_past_its_timeout_is_killed() {
        let out = cmd("sleep", ["5"])
            .output_within(Duration::from_millis(200))
            .unwrap();
        assert!(out.is_none());
        let out = cmd("true", [] as [&str; 0])
            .output_within(Duration::from_secs(5))
            .unwrap();
        assert!(out.unwrap().status.success());
    }

    #[tokio::test]
    async fn a_dropped_wait_kills_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let wait = cmd("sh", ["-c", &script]);
        let interrupted = tokio::time::timeout(
            Duration::from_millis(500),
            wait.output_within_async(Duration::from_secs(60)),
        )
        .await;
        assert!(interrupted.is_err(), "the command cannot have finished");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .is_ok_and(|stat| !stat.contains(") Z "))
        };
        for _ in 0..50 {
            if !alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "`sleep 30` still runs after its wait was dropped");
        let out = cmd("sh", ["-c", "echo hi"])
            .output_within_async(Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }
}
