//! The `release-harness` command line: its flags, the async runtime, logging,
//! the clean-up when a run is cut off (SIGINT, SIGTERM, SIGHUP or a panic), and the one
//! mapping from a command's outcome to its exit code and last message.
//!
//! Each subcommand has its own file with its flags and a `run` that returns
//! `Ok(())` for exit 0; every other exit code is a typed [`Stop`] or, for
//! exit 1, any other error.

mod bench;
mod bump;
mod promote;
mod release;
mod rollback;
mod status;
mod sweep;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::Instrument;

pub use self::bench::BenchArgs;
pub use self::bump::BumpArgs;
pub use self::promote::PromoteArgs;
pub use self::release::ReleaseArgs;
pub use self::rollback::RollbackArgs;
pub use self::status::StatusArgs;
pub use self::sweep::SweepArgs;
use crate::release::version::{Bump, VersionRequest};
use crate::release::{Cleanup, VerifyFailed};
use crate::support::host;
use crate::support::progress::Progress;

/// Exit codes a CI job can tell apart.
pub mod exit {
    pub const OK: u8 = 0;
    /// Bad input, a failed step, an unreachable engine: read the message.
    pub const ERROR: u8 = 1;
    /// Wrong flags (clap's own code).
    pub const USAGE: u8 = 2;
    /// Verify ran and a scenario failed: nothing reached production.
    pub const VERIFY_FAILED: u8 = 3;
    /// promote: the gate is inconclusive (soak not over, a check without an
    /// answer) or `--max-batches` stopped it: run promote again later.
    pub const SOAKING: u8 = 10;
    /// promote: a gate check failed; nothing beyond the canaries changed.
    pub const BLOCKED: u8 = 11;
    /// Interrupted (Ctrl-C, SIGTERM, SIGHUP): what a release made was
    /// removed; a promote or rollback recorded in the ledger where it stopped.
    pub const INTERRUPTED: u8 = 130;
}

/// The ends of a command that have an exit code of their own. The message
/// is the command's last line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum Stop {
    #[error("error: {0}")]
    VerifyFailed(#[from] VerifyFailed),
    /// promote: the release is still soaking, or `--max-batches` stopped it.
    #[error("{0}")]
    NotYet(String),
    /// promote: a gate check failed.
    #[error("{0}")]
    Blocked(String),
    /// A signal cut the run off; the message says what became of what it
    /// made (removed, or recorded in the ledger).
    #[error("interrupted: {0}")]
    Interrupted(String),
}

impl Stop {
    pub fn code(&self) -> u8 {
        match self {
            Stop::VerifyFailed(_) => exit::VERIFY_FAILED,
            Stop::NotYet(_) => exit::SOAKING,
            Stop::Blocked(_) => exit::BLOCKED,
            Stop::Interrupted(_) => exit::INTERRUPTED,
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "release-harness",
    version,
    about = "Release a Debian-packaged deploy tool: bump, build, verify on a container fleet, \
             then canaries behind a soak gate",
    long_about = None,
    after_help = "Start with `release --dry-run` in a project that has a release.toml."
)]
pub struct Cli {
    /// The project: a git checkout with release.toml at its root (default:
    /// the current directory).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "RELEASE_HARNESS_PROJECT"
    )]
    pub project: Option<PathBuf>,
    /// Only errors and the final report.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More log detail (-v: debug, -vv: trace); RUST_LOG works too.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Bump the version, build the .deb, verify it on a throw-away fleet, push
    /// the release commit and tag, then roll it out to the canaries.
    Release(ReleaseArgs),
    /// Only the release commit and tag (version files, debian/changelog);
    /// push them and let CI run `release --tagged` on the tag.
    Bump(BumpArgs),
    /// After the soak: check the gate, then roll the release out to the rest
    /// of the fleet in batches (exit 0 promoted, 10 not yet, 11 blocked).
    Promote(PromoteArgs),
    /// Downgrade every host a release reached, through the same rollout tool.
    Rollback(RollbackArgs),
    /// Every release in the ledger: its timeline, lead time, soak, last gate.
    Status(StatusArgs),
    /// Remove containers and networks that killed runs left behind.
    Sweep(SweepArgs),
    /// Measure fleet start, install and deploy against plain `docker run`,
    /// a warm verify, and with --cold a first run from no images; prints
    /// figures and ratios, asserts nothing.
    Bench(BenchArgs),
}

impl Command {
    /// The subcommand's name, for logs.
    fn name(&self) -> &'static str {
        match self {
            Command::Release(_) => "release",
            Command::Bump(_) => "bump",
            Command::Promote(_) => "promote",
            Command::Rollback(_) => "rollback",
            Command::Status(_) => "status",
            Command::Sweep(_) => "sweep",
            Command::Bench(_) => "bench",
        }
    }

    /// The host programs the command runs, brought before it starts.
    fn host_tools(&self) -> &'static [host::Tool] {
        match self {
            Command::Release(_) => host::FOR_RELEASE,
            Command::Bench(_) => host::FOR_BENCH,
            Command::Bump(_) | Command::Promote(_) | Command::Rollback(_) | Command::Status(_) => {
                host::FOR_PROJECT
            }
            Command::Sweep(_) => &[],
        }
    }
}

/// Which version to release; shared by `release` and `bump`.
#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Release exactly this upstream version (any Debian upstream version
    /// greater than the previous release's).
    #[arg(long, value_name = "VERSION", conflicts_with = "bump")]
    pub version: Option<String>,
    /// Which part of the previous release's version to raise: patch the last
    /// dotted number, minor the one before it, major the first.
    #[arg(long, value_enum, default_value = "minor")]
    pub bump: BumpArg,
}

impl VersionArgs {
    fn request(&self) -> VersionRequest {
        match &self.version {
            Some(v) => VersionRequest::Exact(v.clone()),
            None => VersionRequest::Bump(match self.bump {
                BumpArg::Major => Bump::Major,
                BumpArg::Minor => Bump::Minor,
                BumpArg::Patch => Bump::Patch,
            }),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum BumpArg {
    Major,
    Minor,
    Patch,
}

/// What every command gets besides its own flags.
pub struct Context {
    /// `--project`, when given.
    pub project: Option<PathBuf>,
    pub progress: Progress,
}

impl Context {
    /// The project directory: `--project` or the current directory.
    fn project_dir(&self) -> Result<PathBuf> {
        match &self.project {
            Some(p) => Ok(p.clone()),
            None => Ok(std::env::current_dir()?),
        }
    }

    /// The project whose ledger promote, rollback and status read.
    fn ledger_project(&self) -> Result<(crate::support::git::Repo, crate::config::Config)> {
        let project = self.project_dir()?;
        let config = crate::config::Config::load(&project)?;
        let repo = crate::support::git::Repo::open(&project)?;
        Ok((repo, config))
    }
}

/// The packaged binary's entry.
pub fn main() -> ExitCode {
    run(Cli::parse())
}

/// `cargo xtask`'s entry: the built-in fixture is the default target when
/// neither --project nor --fixture is given.
pub fn main_with_default_fixture() -> ExitCode {
    let mut cli = Cli::parse();
    if let Command::Release(args) = &mut cli.command {
        if cli.project.is_none() && args.fixture.is_none() {
            args.fixture = Some("minideploy".into());
        }
    }
    run(cli)
}

pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let context = Context {
        project: cli.project,
        progress: Progress::new(cli.quiet),
    };
    let span = tracing::info_span!("command", name = cli.command.name());
    let result = runtime.block_on(dispatch(cli.command, &context).instrument(span));
    ExitCode::from(exit_code(result, &context.progress))
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "harness=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn dispatch(command: Command, context: &Context) -> Result<()> {
    tracing::debug!(project = ?context.project, "dispatching");
    // A fresh machine: the first command brings the programs it runs.
    let say = |line: &str| context.progress.info(line);
    host::ensure(
        command.host_tools(),
        &host::on_path,
        host::running_as_root(),
        &say,
    )?;
    match command {
        Command::Release(args) => release::run(&args, context).await,
        Command::Bump(args) => bump::run(&args, context),
        Command::Promote(args) => promote::run(&args, context).await,
        Command::Rollback(args) => rollback::run(&args, context).await,
        Command::Status(args) => status::run(&args, context),
        Command::Sweep(args) => sweep::run(&args).await,
        Command::Bench(args) => bench::run(&args, context).await,
    }
}

/// The one place an outcome becomes an exit code and its last message.
fn exit_code(result: Result<()>, progress: &Progress) -> u8 {
    let code = match result {
        Ok(()) => exit::OK,
        Err(e) => {
            progress.finish_step(false);
            match e.downcast_ref::<Stop>() {
                Some(stop) => {
                    eprintln!("{stop}");
                    stop.code()
                }
                None => {
                    eprintln!("error: {e:#}");
                    exit::ERROR
                }
            }
        }
    };
    tracing::debug!(code, "exit");
    code
}

/// Runs `work` to its end unless it panics or a signal cuts it off; then
/// what `cleanup` lists (containers, network, release commit and tag) is
/// undone before the error is returned.
async fn undo_if_cut_off<T>(
    cleanup: &Arc<Mutex<Cleanup>>,
    progress: &Progress,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    // The work runs on this task (its futures need not be Send); a panic is
    // caught here so its containers are still removed.
    let work = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(work));
    tokio::select! {
        joined = work => match joined {
            Ok(result) => result,
            Err(_) => {
                progress.finish_step(false);
                tracing::warn!("the work panicked: cleaning up");
                clean_up(cleanup).await;
                anyhow::bail!("the release panicked; its containers and any release commit were removed")
            }
        },
        signal = cut_off() => {
            progress.finish_step(false);
            tracing::warn!(signal, "cut off: cleaning up");
            eprintln!("interrupted: removing what this run made ...");
            clean_up(cleanup).await;
            Err(Stop::Interrupted("what this run made was removed".into()).into())
        }
    }
}

/// Runs a production command (`promote`, `rollback`) to its end unless a
/// signal cuts it off. Then the command's future is dropped, which kills the
/// rollout call under way, and the ledger is brought to where production
/// stands: the step it was in is closed as interrupted (a promote stays under
/// way, so the next one resumes at that batch) and the production lock is
/// given back, so the next run neither waits for a lease nor needs
/// --break-lock.
async fn record_if_cut_off<T>(
    repo: &crate::support::git::Repo,
    command: &str,
    progress: &Progress,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let signal = tokio::select! {
        done = work => return done,
        signal = cut_off() => signal,
    };
    progress.finish_step(false);
    tracing::warn!(signal, command, "cut off: recording it in the ledger");
    eprintln!("interrupted by {signal}: recording where the {command} stopped ...");
    let why = format!(
        "interrupted by {signal} ({}); the next {command} runs it again",
        crate::ledger::Actor::current().describe()
    );
    let closed = crate::ledger::Ledger::open(repo).and_then(|l| l.close_after_cut_off(&why));
    match closed {
        Ok(steps) => {
            for step in &steps {
                eprintln!("  {step}: interrupted");
            }
            Err(Stop::Interrupted(format!(
                "the ledger says where the {command} stopped and the production lock was given \
                 back; run {command} again to go on"
            ))
            .into())
        }
        // Still exit 130: the next run finds the steps open and the lock's
        // holder dead, and takes over, as after a crash.
        Err(e) => Err(Stop::Interrupted(format!(
            "the ledger could not be updated ({e:#}); the next {command} finds the cut-off \
             step and takes the lock over"
        ))
        .into()),
    }
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT), SIGTERM (a
/// CI job cancelled, `docker stop`, systemd) or SIGHUP (the terminal closed).
/// Returns the signal's name.
async fn cut_off() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind| match signal(kind) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!("cannot listen for a signal ({e}): it will not clean up");
            None
        }
    };
    let (mut int, mut term, mut hup) = (
        listen(SignalKind::interrupt()),
        listen(SignalKind::terminate()),
        listen(SignalKind::hangup()),
    );
    async fn received(stream: &mut Option<tokio::signal::unix::Signal>) {
        match stream {
            Some(stream) => {
                stream.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = received(&mut int) => "SIGINT",
        _ = received(&mut term) => "SIGTERM",
        _ = received(&mut hup) => "SIGHUP",
    }
}

async fn clean_up(cleanup: &Arc<Mutex<Cleanup>>) {
    let docker = crate::support::docker::connect().await.ok();
    let mut taken = std::mem::take(&mut *cleanup.lock().unwrap());
    taken.run(docker.as_ref()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_stop_has_its_documented_exit_code() {
        let code = |e: anyhow::Error| exit_code(Err(e), &Progress::silent());
        let failed = VerifyFailed {
            summary: "fresh-install: FAILED".into(),
        };
        assert_eq!(code(Stop::VerifyFailed(failed).into()), 3);
        assert_eq!(code(Stop::NotYet("soaking".into()).into()), 10);
        assert_eq!(code(Stop::Blocked("blocked".into()).into()), 11);
        assert_eq!(code(Stop::Interrupted("removed".into()).into()), 130);
        // Context added on the way up does not hide the code.
        let wrapped = anyhow::Error::from(Stop::Blocked("b".into())).context("promoting 0.2.0");
        assert_eq!(code(wrapped), 11);
        assert_eq!(code(anyhow::anyhow!("no release.toml")), 1);
        assert_eq!(exit_code(Ok(()), &Progress::silent()), 0);
    }

    #[test]
    fn verify_failed_reads_as_before() {
        let failed = VerifyFailed {
            summary: "upgrade: FAILED".into(),
        };
        assert_eq!(
            Stop::VerifyFailed(failed).to_string(),
            "error: verify failed: the release stopped before any production step\nupgrade: FAILED"
        );
    }
}
