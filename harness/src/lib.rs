//! The release harness: from a project checkout to a verified .deb, a canary
//! rollout behind a soak gate, promote, rollback and status.
//! `cli` is the entry point; each other module owns one step of the flow.

pub mod bench;
pub mod build;
pub mod cli;
pub mod config;
pub mod docker;
pub mod fixture;
pub mod fleet;
pub mod gate;
pub mod git;
pub mod images;
pub mod ledger;
pub mod production;
pub mod progress;
pub mod release;
pub mod report;
pub mod rollout;
pub mod scenario;
pub mod testbed;
pub mod version;
