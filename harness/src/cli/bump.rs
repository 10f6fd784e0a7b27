//! `bump`: only the release commit and tag, for a release CI finishes from
//! the tag (`release --tagged`).

use anyhow::Result;
use clap::Args;

use super::{Context, VersionArgs};

#[derive(Args, Debug)]
pub struct BumpArgs {
    #[command(flatten)]
    pub version: VersionArgs,
}

pub fn run(args: &BumpArgs, context: &Context) -> Result<()> {
    let project = context.project_dir()?;
    tracing::info!(project = %project.display(), "bump");
    let b = crate::release::bump_only(&project, &args.version.request())?;
    println!(
        "made commit {} `Release {}` and tag {} ({} commits since the previous release).\n\
         next: git push origin HEAD {} -- CI on the tag runs `release --tagged`",
        &b.commit[..10.min(b.commit.len())],
        b.upstream,
        b.tag,
        b.changes.len(),
        b.tag
    );
    Ok(())
}
