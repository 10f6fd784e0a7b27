//! Subcommands, their flags and exit codes; the runtime, logging, and the
//! clean-up on Ctrl-C or panic.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::ScenarioKind;
use crate::release::version::{Bump, VersionRequest};
use crate::release::{self, Cleanup, ReleaseOptions, VerifyFailed};
use crate::support::progress::Progress;

/// Exit codes a CI job can tell apart.
pub mod exit {
    pub const OK: i32 = 0;
    /// Bad input, a failed step, an unreachable engine: read the message.
    pub const ERROR: i32 = 1;
    /// Wrong flags (clap's own code).
    pub const USAGE: i32 = 2;
    /// Verify ran and a scenario failed: nothing reached production.
    pub const VERIFY_FAILED: i32 = 3;
    /// promote: the gate is inconclusive (soak not over, a check without an
    /// answer) or `--max-batches` stopped it: run promote again later.
    pub const SOAKING: i32 = 10;
    /// promote: a gate check failed; nothing beyond the canaries changed.
    pub const BLOCKED: i32 = 11;
    /// Interrupted (Ctrl-C); everything the run made was removed.
    pub const INTERRUPTED: i32 = 130;
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
    /// and a warm verify; prints figures and ratios, asserts nothing.
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
pub struct BumpArgs {
    #[command(flatten)]
    pub version: VersionArgs,
}

/// Which version to release; shared by `release` and `bump`.
#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Release exactly this upstream version (X.Y.Z).
    #[arg(long, value_name = "X.Y.Z", conflicts_with = "bump")]
    pub version: Option<String>,
    /// Which part of the previous release's version to raise.
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

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// App-host counts to measure (repeatable); default: 4 and 30.
    #[arg(long = "apps", value_name = "N")]
    pub apps: Vec<usize>,
    /// Skip the warm verify of the default suite.
    #[arg(long)]
    pub no_verify: bool,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// Release a built-in fixture instead of a project, to try the harness:
    /// `minideploy` or `minideploy-broken`.
    #[arg(long, value_name = "NAME")]
    pub fixture: Option<String>,
    /// Do everything up to verify in a scratch clone: nothing is committed,
    /// tagged or pushed in the project, no production call is made.
    #[arg(long)]
    pub dry_run: bool,
    /// HEAD already is the release commit with its tag (a CI job on a tag,
    /// after `bump`): build, verify and roll out that, without bumping.
    #[arg(long, conflicts_with = "version")]
    pub tagged: bool,
    #[command(flatten)]
    pub version: VersionArgs,
    /// Where the .deb, build log, sums and verify reports go.
    #[arg(long, value_name = "DIR", default_value = "release-out")]
    pub out: PathBuf,
    /// Leave the verify fleet running for debugging (prints how to get a
    /// shell; `sweep --run RUN_ID` removes it).
    #[arg(long)]
    pub keep: bool,
    /// Run only these scenarios (repeatable); default: release.toml's list.
    #[arg(long = "scenario", value_enum, value_name = "NAME")]
    pub scenarios: Vec<ScenarioArg>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The release tag; default: the newest release waiting on the canaries.
    #[arg(long, value_name = "TAG")]
    pub release: Option<String>,
    /// Go on whatever the gate says (emergencies only); needs --reason.
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why the gate is overridden; recorded in the ledger.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Take the production lock from its holder (a job known to be dead).
    #[arg(long)]
    pub break_lock: bool,
    /// A .deb to check first (the release job's artifact): its sha256 must be
    /// the one verify tested.
    #[arg(long, value_name = "FILE")]
    pub deb: Option<PathBuf>,
    /// Roll out at most N batches now; the next promote goes on.
    #[arg(long, value_name = "N")]
    pub max_batches: Option<usize>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The release to take back; default: the newest one in production.
    #[arg(long, value_name = "TAG")]
    pub release: Option<String>,
    /// The Debian version to go back to; default: what the canaries ran
    /// before the release.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Why; recorded in the ledger.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Take the production lock from its holder (a job known to be dead).
    #[arg(long)]
    pub break_lock: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the releases as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Remove this run's resources even if its process is alive (after --keep).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum BumpArg {
    Major,
    Minor,
    Patch,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum ScenarioArg {
    FreshInstall,
    Upgrade,
    MixedFleet,
    Downgrade,
    TargetStopped,
}

impl From<ScenarioArg> for ScenarioKind {
    fn from(a: ScenarioArg) -> Self {
        match a {
            ScenarioArg::FreshInstall => ScenarioKind::FreshInstall,
            ScenarioArg::Upgrade => ScenarioKind::Upgrade,
            ScenarioArg::MixedFleet => ScenarioKind::MixedFleet,
            ScenarioArg::Downgrade => ScenarioKind::Downgrade,
            ScenarioArg::TargetStopped => ScenarioKind::TargetStopped,
        }
    }
}

/// The packaged binary's entry.
pub fn main() -> i32 {
    run(Cli::parse())
}

/// `cargo xtask`'s entry: the built-in fixture is the default target when
/// neither --project nor --fixture is given.
pub fn main_with_default_fixture() -> i32 {
    let mut cli = Cli::parse();
    if let Command::Release(args) = &mut cli.command {
        if cli.project.is_none() && args.fixture.is_none() {
            args.fixture = Some("minideploy".into());
        }
    }
    run(cli)
}

pub fn run(cli: Cli) -> i32 {
    init_logging(cli.verbose, cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return exit::ERROR;
        }
    };
    let progress = Progress::new(cli.quiet);
    runtime.block_on(dispatch(cli, progress))
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

async fn dispatch(cli: Cli, progress: Progress) -> i32 {
    match cli.command {
        Command::Release(ref args) => {
            let opts = ReleaseOptions {
                project: cli.project.clone(),
                fixture: args.fixture.clone(),
                dry_run: args.dry_run,
                tagged: args.tagged,
                version: args.version.request(),
                out: args.out.clone(),
                keep: args.keep,
                scenarios: args.scenarios.iter().map(|s| (*s).into()).collect(),
                run_id: crate::support::docker::new_run_id(),
            };
            let json = args.json;
            let cleanup = Arc::new(Mutex::new(Cleanup::default()));
            // The release runs on this task (its futures need not be Send);
            // a panic is caught here so its containers are still removed.
            let task =
                std::panic::AssertUnwindSafe(release::release(&opts, cleanup.clone(), &progress));
            let result = tokio::select! {
                joined = futures_util::FutureExt::catch_unwind(task) => match joined {
                    Ok(r) => r,
                    Err(_) => {
                        progress.finish_step(false);
                        clean_up(&cleanup).await;
                        eprintln!("error: the release panicked; its containers and any release commit were removed");
                        return exit::ERROR;
                    }
                },
                _ = tokio::signal::ctrl_c() => {
                    progress.finish_step(false);
                    eprintln!("interrupted: removing what this run made ...");
                    clean_up(&cleanup).await;
                    return exit::INTERRUPTED;
                }
            };
            match result {
                Ok(outcome) => {
                    progress.finish_step(true);
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&outcome).unwrap_or_default()
                        );
                    } else {
                        println!(
                            "{} {} {}: {} (sha256 {})",
                            if outcome.dry_run {
                                "dry run of"
                            } else {
                                "released"
                            },
                            outcome.package,
                            outcome.version,
                            outcome.deb.display(),
                            outcome.deb_sha256
                        );
                    }
                    exit::OK
                }
                Err(e) => {
                    progress.finish_step(false);
                    if let Some(v) = e.downcast_ref::<VerifyFailed>() {
                        eprintln!("error: {v}");
                        return exit::VERIFY_FAILED;
                    }
                    eprintln!("error: {e:#}");
                    exit::ERROR
                }
            }
        }
        Command::Bench(args) => {
            let opts = crate::verify::bench::BenchOptions {
                app_counts: if args.apps.is_empty() {
                    vec![4, 30]
                } else {
                    args.apps.clone()
                },
                verify: !args.no_verify,
                json: args.json,
            };
            match crate::verify::bench::run(&opts, &progress).await {
                Ok(()) => exit::OK,
                Err(e) => {
                    progress.finish_step(false);
                    eprintln!("error: {e:#}");
                    exit::ERROR
                }
            }
        }
        Command::Promote(ref args) => {
            let options = crate::production::PromoteOptions {
                release: args.release.clone(),
                force: args.force,
                reason: args.reason.clone(),
                break_lock: args.break_lock,
                deb: args.deb.clone(),
                max_batches: args.max_batches,
            };
            let result = async {
                let (repo, config) = ledger_project(&cli)?;
                crate::production::promote(&repo, &config, &options, &progress).await
            }
            .await;
            progress.finish_step(result.is_ok());
            use crate::production::PromoteOutcome;
            match result {
                Ok(outcome) => {
                    if args.json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&outcome).unwrap_or_default()
                        );
                    }
                    match outcome {
                        PromoteOutcome::Promoted {
                            tag,
                            version,
                            hosts,
                        } => {
                            eprintln!("promoted {tag} ({version}) to {hosts} hosts");
                            exit::OK
                        }
                        PromoteOutcome::Partial { done, total } => {
                            eprintln!(
                                "{done} of {total} batches done (--max-batches); run promote \
                                 again to go on"
                            );
                            exit::SOAKING
                        }
                        PromoteOutcome::Soaking(gate) => {
                            eprintln!("{}not yet: run promote again later", gate.summary());
                            exit::SOAKING
                        }
                        PromoteOutcome::Blocked {
                            gate,
                            rolled_back_to,
                        } => {
                            eprintln!(
                                "{}blocked: nothing beyond the canaries changed",
                                gate.summary()
                            );
                            if let Some(v) = rolled_back_to {
                                eprintln!(
                                    "the canaries were rolled back to {v} (gate.rollback_on_fail)"
                                );
                            }
                            eprintln!(
                                "to override in an emergency: promote --force --reason \"...\""
                            );
                            exit::BLOCKED
                        }
                    }
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit::ERROR
                }
            }
        }
        Command::Rollback(ref args) => {
            let options = crate::production::RollbackOptions {
                release: args.release.clone(),
                to: args.to.clone(),
                reason: args.reason.clone(),
                break_lock: args.break_lock,
            };
            let result = async {
                let (repo, config) = ledger_project(&cli)?;
                crate::production::rollback(&repo, &config, &options, &progress).await
            }
            .await;
            progress.finish_step(result.is_ok());
            match result {
                Ok(hosts) => {
                    eprintln!(
                        "rolled back {} hosts to {}",
                        hosts.len(),
                        hosts
                            .first()
                            .and_then(|h| h.installed.clone())
                            .unwrap_or_default()
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit::ERROR
                }
            }
        }
        Command::Status(ref args) => {
            let result = ledger_project(&cli)
                .and_then(|(repo, config)| crate::production::status(&repo, &config));
            match result {
                Ok(releases) => {
                    if args.json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&releases).unwrap_or_default()
                        );
                    } else {
                        print!("{}", crate::production::render_status(&releases));
                    }
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit::ERROR
                }
            }
        }
        Command::Bump(args) => {
            let result = async {
                let project = match &cli.project {
                    Some(p) => p.clone(),
                    None => std::env::current_dir()?,
                };
                crate::release::bump_only(&project, &args.version.request())
            }
            .await;
            match result {
                Ok(b) => {
                    println!(
                        "made commit {} `Release {}` and tag {} ({} commits since the previous release).\n\
                         next: git push origin HEAD {} -- CI on the tag runs `release --tagged`",
                        &b.commit[..10.min(b.commit.len())],
                        b.upstream,
                        b.tag,
                        b.changes.len(),
                        b.tag
                    );
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit::ERROR
                }
            }
        }
        Command::Sweep(args) => {
            let result = async {
                let docker = crate::support::docker::connect().await?;
                let mut n = crate::support::docker::sweep_stale(&docker).await?;
                if let Some(run) = &args.run {
                    n += crate::support::docker::remove_run(&docker, run).await?;
                }
                anyhow::Ok(n)
            }
            .await;
            match result {
                Ok(n) => {
                    println!("removed {n} containers and networks");
                    exit::OK
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    exit::ERROR
                }
            }
        }
    }
}

/// The project whose ledger promote, rollback and status read.
fn ledger_project(cli: &Cli) -> anyhow::Result<(crate::support::git::Repo, crate::config::Config)> {
    let project = match &cli.project {
        Some(p) => p.clone(),
        None => std::env::current_dir()?,
    };
    let config = crate::config::Config::load(&project)?;
    let repo = crate::support::git::Repo::open(&project)?;
    Ok((repo, config))
}

async fn clean_up(cleanup: &Arc<Mutex<Cleanup>>) {
    let docker = crate::support::docker::connect().await.ok();
    let mut taken = std::mem::take(&mut *cleanup.lock().unwrap());
    taken.run(docker.as_ref()).await;
}
