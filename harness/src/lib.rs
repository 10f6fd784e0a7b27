//! The release harness: from a project checkout to a verified .deb, a canary
//! rollout behind a soak gate, promote, rollback and status.
//!
//! The folders follow the flow, and a dependency points down it or to the
//! ground, never back up:
//! - `cli`: the commands and their exit codes;
//! - `release`: the `release` command's steps before production (preflight,
//!   bump, build) and their order;
//! - `verify`: the throw-away fleet, the scenarios, their report;
//! - `production`: the rollout adapters, canary, gate, promote, rollback,
//!   status, and the testbed that stands in for production;
//! - `ledger`: the durable record of every step (git notes);
//! - `config`: `release.toml`, read by every step;
//! - `support`: the ground (Docker, images, git, processes, progress).

pub mod cli;
pub mod config;
pub mod ledger;
pub mod production;
pub mod release;
pub mod support;
pub mod verify;
