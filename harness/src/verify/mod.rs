//! Verify: every scenario on a fresh throw-away fleet of containers running
//! real syncs with the built package, and the report of what they found.

pub mod bench;
pub mod coverage;
pub mod custom;
pub mod fleet;
pub mod report;
pub mod scenario;
