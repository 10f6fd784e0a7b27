//! Build-time settings of the harness crate.
//!
//! `RELEASE_HARNESS_SKIP_DOCKER` (any value but empty or `0`) sets the cfg
//! `skip_docker`, under which every container test is marked ignored: a
//! laptop without Docker sees them as IGNORED in cargo's summary, not as
//! passed.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(skip_docker)");
    println!("cargo::rerun-if-env-changed=RELEASE_HARNESS_SKIP_DOCKER");
    let skip =
        std::env::var_os("RELEASE_HARNESS_SKIP_DOCKER").is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        println!("cargo::rustc-cfg=skip_docker");
    }
}
