//! `status`: every release in the ledger, as a table or JSON.

use anyhow::Result;
use clap::Args;

use super::Context;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the releases as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &StatusArgs, context: &Context) -> Result<()> {
    let (repo, config) = context.ledger_project()?;
    let releases = crate::production::status(&repo, &config)?;
    tracing::debug!(releases = releases.len(), "status");
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&releases).unwrap_or_default()
        );
    } else {
        print!("{}", crate::production::render_status(&releases));
    }
    Ok(())
}
