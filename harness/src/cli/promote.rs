//! `promote`: the soak gate, then the rest of the fleet in batches; a gate
//! that says "not yet" or "blocked" ends in its own exit code.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::{Context, Stop};
use crate::production::{PromoteOptions, PromoteOutcome};

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
    /// the one verify tested for its package. Repeat it for each binary.
    #[arg(long, value_name = "FILE")]
    pub deb: Vec<PathBuf>,
    /// Roll out at most N batches now; the next promote goes on.
    #[arg(long, value_name = "N")]
    pub max_batches: Option<usize>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &PromoteArgs, context: &Context) -> Result<()> {
    let options = PromoteOptions {
        release: args.release.clone(),
        force: args.force,
        reason: args.reason.clone(),
        break_lock: args.break_lock,
        debs: args.deb.clone(),
        max_batches: args.max_batches,
    };
    tracing::info!(release = ?options.release, force = options.force, "promote");
    let (repo, config) = context.ledger_project()?;
    let outcome = crate::production::promote(&repo, &config, &options, &context.progress).await?;
    // The promote itself went through; what the gate said is the outcome.
    context.progress.finish_step(true);
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
            Ok(())
        }
        PromoteOutcome::Partial { done, total } => Err(Stop::NotYet(format!(
            "{done} of {total} batches done (--max-batches); run promote again to go on"
        ))
        .into()),
        PromoteOutcome::Soaking(gate) => Err(Stop::NotYet(format!(
            "{}not yet: run promote again later",
            gate.summary()
        ))
        .into()),
        PromoteOutcome::Blocked {
            gate,
            rolled_back_to,
        } => {
            let mut message = format!(
                "{}blocked: nothing beyond the canaries changed\n",
                gate.summary()
            );
            if let Some(v) = rolled_back_to {
                message +=
                    &format!("the canaries were rolled back to {v} (gate.rollback_on_fail)\n");
            }
            message += "to override in an emergency: promote --force --reason \"...\"";
            Err(Stop::Blocked(message).into())
        }
    }
}
