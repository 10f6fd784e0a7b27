//! `bench`: figures, not assertions. Fleet start, install and one deploy at
//! several sizes, against plain `docker run` of the same containers started
//! all at once in the same run (so a busy machine shifts both sides), and a
//! warm verify of the default suite. Printed as a table where each figure has
//! its ratio; nothing here fails on a number.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;

use crate::config::{Config, Hosts};
use crate::support::docker::{self, Containers};
use crate::support::process;
use crate::support::progress::Progress;
use crate::verify::fleet::{Fleet, Launch, Size};
use crate::verify::scenario::{self, Debs, VerifyInput};
use crate::{release::build, release::fixture, support::images};
use bollard::Docker;

pub struct BenchOptions {
    /// App-host counts to measure (each with the configured canaries).
    pub app_counts: Vec<usize>,
    /// Also time a warm verify of the default suite.
    pub verify: bool,
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Row {
    hosts: usize,
    /// Plain `docker run` of every host at once, until every sshd answers.
    docker_run_s: f64,
    fleet_start_s: f64,
    /// fleet start / docker run.
    start_ratio: f64,
    /// fleet start / the first (smallest) size's fleet start.
    start_growth: f64,
    install_s: f64,
    /// install / the first size's install.
    install_growth: f64,
    deploy_s: f64,
}

pub async fn run(opts: &BenchOptions, progress: &Progress) -> Result<()> {
    let docker = docker::connect().await?;
    let scratch = tempfile::tempdir()?;
    progress.step("bench: prepare");
    let project = fixture::materialize("minideploy", &scratch.path().join("fixture"))?;
    let config = Config::load(&project)?;
    let out = scratch.path().join("out");
    std::fs::create_dir_all(&out)?;
    let built = build::build(&docker, &config, &project, &out, &progress.reporter()).await?;
    let deb = Debs {
        paths: built.paths(),
        version: crate::support::debian::deb_field(&built.debs[0].path, "Version")?,
    };
    let depends = deb.depends()?;
    let image = images::fleet_image(&docker, &config, &depends, &progress.reporter()).await?;

    let mut rows = Vec::new();
    for &apps in &opts.app_counts {
        let size = Size {
            canaries: config.fleet.canaries,
            apps,
        };
        let hosts = 1 + size.canaries + size.apps;
        progress.step(&format!("bench: {hosts} hosts, plain docker run"));
        let baseline = plain_docker_run(&docker, &image, hosts).await?;
        progress.step(&format!("bench: {hosts} hosts, harness fleet"));
        let run_id = docker::new_run_id();
        let t = Instant::now();
        let launch = Launch {
            image: &image,
            size,
            run_id: &run_id,
            slot: "bench",
            keep: false,
        };
        let fleet = Fleet::start(&docker, &config, &launch, progress).await?;
        let start = t.elapsed();
        let measured = async {
            fleet
                .publish_debs(&deb.paths.iter().map(|p| p.as_path()).collect::<Vec<_>>())
                .await?;
            let t = Instant::now();
            fleet
                .install(&fleet.select(Hosts::All), &deb.version)
                .await?;
            let install = t.elapsed();
            let rev = fleet.new_revision("bench").await?;
            let t = Instant::now();
            let out = fleet.sync(&rev).await?;
            if !out.ok() {
                bail!(
                    "the bench deploy failed (exit {}):\n{}",
                    out.code,
                    out.tail(10)
                );
            }
            anyhow::Ok((install, t.elapsed()))
        }
        .await;
        fleet.teardown().await;
        let (install, deploy) = measured?;
        let first = rows.first();
        rows.push(Row {
            hosts,
            docker_run_s: secs(baseline),
            fleet_start_s: secs(start),
            start_ratio: ratio(start.as_secs_f64(), baseline.as_secs_f64()),
            start_growth: first.map_or(1.0, |f: &Row| ratio(start.as_secs_f64(), f.fleet_start_s)),
            install_s: secs(install),
            install_growth: first.map_or(1.0, |f: &Row| ratio(install.as_secs_f64(), f.install_s)),
            deploy_s: secs(deploy),
        });
    }

    // The warm verify without coverage, then with it: their ratio is what
    // measuring costs.
    let mut verify_s = None;
    let mut uncovered_s = None;
    if opts.verify {
        for coverage in [false, true] {
            let mut config = config.clone();
            config.coverage.enabled = coverage;
            // verify names its own step.
            let previous = deb.clone(); // the suite needs one; the same package will do
            let t = Instant::now();
            let report = scenario::verify(
                &docker,
                &VerifyInput {
                    config: &config,
                    image: &image,
                    new: &deb,
                    previous: Some(&previous),
                    run_id: &docker::new_run_id(),
                    keep: false,
                    only: &[],
                },
                progress,
            )
            .await?;
            let figures = (secs(t.elapsed()), report.passed());
            if coverage {
                verify_s = Some(figures);
            } else {
                uncovered_s = Some(figures);
            }
        }
    }
    progress.finish_step(true);

    if opts.json {
        println!(
            "{}",
            serde_json::json!({
                "fleets": rows,
                "warm_verify_s": verify_s.map(|v| v.0),
                "warm_verify_without_coverage_s": uncovered_s.map(|v| v.0),
            })
        );
        return Ok(());
    }
    println!(
        "{:>6}  {:>10}  {:>11}  {:>7}  {:>8}  {:>8}  {:>8}  {:>7}",
        "hosts", "docker run", "fleet start", "ratio", "growth", "install", "growth", "deploy"
    );
    for r in &rows {
        println!(
            "{:>6}  {:>9.1}s  {:>10.1}s  {:>6.2}x  {:>7.2}x  {:>7.1}s  {:>7.2}x  {:>6.1}s",
            r.hosts,
            r.docker_run_s,
            r.fleet_start_s,
            r.start_ratio,
            r.start_growth,
            r.install_s,
            r.install_growth,
            r.deploy_s
        );
    }
    println!(
        "docker run: the same image, every container started at once by `docker run`, until\n\
         every sshd answers; fleet start: the harness's start (plus users, keys, known hosts,\n\
         HTTP and apt repository, the deployment repository); ratio: fleet start / docker run;\n\
         growth: against the first row; install: the package on every host; deploy: one sync."
    );
    let word = |passed: bool| if passed { "passed" } else { "FAILED" };
    if let (Some((s, passed)), Some((off, off_passed))) = (verify_s, uncovered_s) {
        println!(
            "warm verify of the default suite: {s:.1}s with coverage ({}), {off:.1}s without \
             ({}): coverage costs {:.2}x",
            word(passed),
            word(off_passed),
            ratio(s, off)
        );
    }
    Ok(())
}

/// The baseline: what a shell script would do with the docker CLI, every
/// `docker run` at once. The guard owns what it started, as for a fleet.
async fn plain_docker_run(docker: &Docker, image: &str, hosts: usize) -> Result<Duration> {
    let run_id = docker::new_run_id();
    let network = format!("rh-{run_id}-plain");
    let mut containers = Containers::on_network(docker, &run_id, &network, false).await?;
    let labels: Vec<String> = docker::run_labels(&run_id)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let names: Vec<String> = (0..hosts).map(|i| format!("{network}-h{i}")).collect();
    let result = async {
        let t = Instant::now();
        let runs = names.iter().map(|name| {
            containers.adopt(name);
            let mut args = vec!["run", "-d", "--network", &network, "--name", name];
            for label in &labels {
                args.extend(["--label", label]);
            }
            args.push(image);
            let run = process::cmd("docker", args);
            async move { tokio::task::spawn_blocking(move || run.read()).await? }
        });
        let runs: Vec<_> = runs.collect();
        join_all(runs)
            .await
            .into_iter()
            .collect::<Result<Vec<String>>>()
            .context("the baseline needs the docker CLI")?;
        let scan = format!(
            "ssh-keyscan -T 2 -t ed25519 {} 2>/dev/null",
            names.join(" ")
        );
        loop {
            let out = docker::exec(docker, &names[0], None, &scan).await?;
            if out.stdout.lines().count() >= hosts {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("plain docker run: sshd did not answer on every host within 120s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(t.elapsed())
    }
    .await;
    containers.remove().await;
    result
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b.max(0.001)
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
