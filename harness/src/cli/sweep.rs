//! `sweep`: the containers, networks and run-scoped images (a prepared
//! fleet's snapshot) of runs that died (and, with `--run`, of a kept fleet).

use anyhow::Result;
use clap::Args;

use crate::support::docker;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Remove this run's resources even if its process is alive (after --keep).
    #[arg(long, value_name = "RUN_ID")]
    pub run: Option<String>,
}

pub async fn run(args: &SweepArgs) -> Result<()> {
    tracing::info!(run = ?args.run, "sweep");
    let engine = docker::connect().await?;
    let mut removed = docker::sweep_stale(&engine).await?;
    if let Some(run) = &args.run {
        removed += docker::remove_run(&engine, run).await?;
    }
    println!("removed {removed} containers, networks and images");
    Ok(())
}
