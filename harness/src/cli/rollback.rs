//! `rollback`: every host a release reached back to the version before.

use anyhow::Result;
use clap::Args;

use super::Context;
use crate::production::RollbackOptions;

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

pub async fn run(args: &RollbackArgs, context: &Context) -> Result<()> {
    let options = RollbackOptions {
        release: args.release.clone(),
        to: args.to.clone(),
        reason: args.reason.clone(),
        break_lock: args.break_lock,
    };
    tracing::info!(release = ?options.release, to = ?options.to, "rollback");
    let (repo, config) = context.ledger_project()?;
    let rollback = crate::production::rollback(&repo, &config, &options, &context.progress);
    let hosts = super::record_if_cut_off(&repo, "rollback", &context.progress, rollback).await?;
    context.progress.finish_step(true);
    eprintln!(
        "rolled back {} hosts to {}",
        hosts.len(),
        hosts
            .first()
            .and_then(|h| h.installed.clone())
            .unwrap_or_default()
    );
    Ok(())
}
