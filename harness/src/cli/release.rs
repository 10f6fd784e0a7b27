//! `release`: bump, build, verify, push, canaries (or `--dry-run`: up to
//! verify in a scratch clone), undone when cut off before the push.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use clap::Args;

use super::{Context, Stop, VersionArgs};
use crate::release::{Cleanup, ReleaseOptions, VerifyFailed};

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
    /// A preset (fresh-install, upgrade, mixed-fleet, downgrade,
    /// target-stopped) or the name of a [[verify.custom]] scenario.
    #[arg(long = "scenario", value_name = "NAME")]
    pub scenarios: Vec<String>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &ReleaseArgs, context: &Context) -> Result<()> {
    let options = ReleaseOptions {
        project: context.project.clone(),
        fixture: args.fixture.clone(),
        dry_run: args.dry_run,
        tagged: args.tagged,
        version: args.version.request(),
        out: args.out.clone(),
        keep: args.keep,
        scenarios: args.scenarios.clone(),
        run_id: crate::support::docker::new_run_id(),
    };
    tracing::info!(
        run = %options.run_id,
        fixture = ?options.fixture,
        dry_run = options.dry_run,
        tagged = options.tagged,
        "release"
    );
    let cleanup = Arc::new(Mutex::new(Cleanup::default()));
    let release = crate::release::release(&options, cleanup.clone(), &context.progress);
    let outcome = super::undo_if_cut_off(&cleanup, &context.progress, release)
        .await
        .map_err(|e| match e.downcast::<VerifyFailed>() {
            Ok(failed) => Stop::VerifyFailed(failed).into(),
            Err(e) => e,
        })?;
    context.progress.finish_step(true);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&outcome).unwrap_or_default()
        );
    } else {
        println!(
            "{} {} {}:",
            if outcome.dry_run {
                "dry run of"
            } else {
                "released"
            },
            outcome.package,
            outcome.version,
        );
        for deb in &outcome.debs {
            println!("  {} (sha256 {})", deb.path.display(), deb.sha256);
        }
        println!("{}", outcome.time_line());
    }
    Ok(())
}
