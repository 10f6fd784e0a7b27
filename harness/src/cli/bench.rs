//! `bench`: fleet start, install and deploy timed against plain `docker
//! run`, and a warm verify.

use anyhow::Result;
use clap::Args;

use super::Context;
use crate::verify::bench::BenchOptions;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// App-host counts to measure (repeatable); default: 4 and 30.
    #[arg(long = "apps", value_name = "N")]
    pub apps: Vec<usize>,
    /// Skip the warm verify of the default suite.
    #[arg(long)]
    pub no_verify: bool,
    /// First remove every release-harness image and time a dry run of the
    /// built-in fixture from nothing (the cold first run); the images are
    /// made again by it.
    #[arg(long)]
    pub cold: bool,
    /// Print the figures as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &BenchArgs, context: &Context) -> Result<()> {
    let options = BenchOptions {
        app_counts: if args.apps.is_empty() {
            vec![4, 30]
        } else {
            args.apps.clone()
        },
        verify: !args.no_verify,
        cold: args.cold,
        json: args.json,
    };
    tracing::info!(apps = ?options.app_counts, verify = options.verify, "bench");
    crate::verify::bench::run(&options, &context.progress).await
}
