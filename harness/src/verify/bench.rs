//! `bench`: figures, not assertions. Fleet start and one deploy at two sizes
//! against plain `docker run` of the same containers in the same run (so a
//! busy machine shifts both sides), and a warm verify of the default suite.
//! Printed as a table with ratios; nothing here fails on a number.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::{Config, Hosts};
use crate::support::progress::Progress;
use crate::verify::fleet::{Fleet, Launch, Size};
use crate::verify::scenario::{self, Deb, VerifyInput};
use crate::{release::build, release::fixture, support::docker, support::images};

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
    docker_run_s: f64,
    fleet_start_s: f64,
    start_ratio: f64,
    install_s: f64,
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
    let deb = Deb {
        path: built.deb().to_path_buf(),
        version: crate::support::debian::deb_field(built.deb(), "Version")?,
    };
    let depends = crate::support::debian::deb_depends(&deb.path)?;
    let image = images::fleet_image(&docker, &config, &depends, &progress.reporter()).await?;

    let mut rows = Vec::new();
    for &apps in &opts.app_counts {
        let size = Size {
            canaries: config.fleet.canaries,
            apps,
        };
        let hosts = 1 + size.canaries + size.apps;
        progress.step(&format!("bench: {hosts} hosts, plain docker run"));
        let baseline = plain_docker_run(&image, hosts).await?;
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
            fleet.publish_debs(&[deb.path.as_path()]).await?;
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
        rows.push(Row {
            hosts,
            docker_run_s: secs(baseline),
            fleet_start_s: secs(start),
            start_ratio: start.as_secs_f64() / baseline.as_secs_f64().max(0.001),
            install_s: secs(install),
            deploy_s: secs(deploy),
        });
    }

    let mut verify_s = None;
    if opts.verify {
        progress.step("bench: warm verify of the default suite");
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
        verify_s = Some((secs(t.elapsed()), report.passed()));
    }
    progress.finish_step(true);

    if opts.json {
        println!(
            "{}",
            serde_json::json!({ "fleets": rows, "warm_verify_s": verify_s.map(|v| v.0) })
        );
        return Ok(());
    }
    println!(
        "{:>6}  {:>12}  {:>12}  {:>6}  {:>10}  {:>10}",
        "hosts", "docker run", "fleet start", "ratio", "install", "deploy"
    );
    for r in &rows {
        println!(
            "{:>6}  {:>11.1}s  {:>11.1}s  {:>5.2}x  {:>9.1}s  {:>9.1}s",
            r.hosts, r.docker_run_s, r.fleet_start_s, r.start_ratio, r.install_s, r.deploy_s
        );
    }
    println!(
        "docker run: the same image started by `docker run` one by one until every sshd answers;\n\
         fleet start: the harness's start (parallel, plus users, keys, known hosts, HTTP and apt\n\
         repository, the deployment repository); install: apt on every host; deploy: one sync."
    );
    if let Some((s, passed)) = verify_s {
        println!(
            "warm verify of the default suite: {s:.1}s ({})",
            if passed { "passed" } else { "FAILED" }
        );
    }
    Ok(())
}

/// The baseline: what a shell script would do with the docker CLI.
async fn plain_docker_run(image: &str, hosts: usize) -> Result<Duration> {
    let run_id = docker::new_run_id();
    let network = format!("rh-{run_id}-plain");
    let labels = [
        format!("{}={run_id}", docker::LABEL_RUN),
        format!("{}={}", docker::LABEL_OWNER, docker::owner()),
    ];
    let cli = |args: &[&str]| -> Result<String> {
        let out = Command::new("docker")
            .args(args)
            .output()
            .context("running the docker CLI (the baseline needs it)")?;
        if !out.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let result = async {
        cli(&[
            "network", "create", "--label", &labels[0], "--label", &labels[1], &network,
        ])?;
        let names: Vec<String> = (0..hosts).map(|i| format!("{network}-h{i}")).collect();
        let t = Instant::now();
        for name in &names {
            cli(&[
                "run",
                "-d",
                "--network",
                &network,
                "--name",
                name,
                "--label",
                &labels[0],
                "--label",
                &labels[1],
                image,
            ])?;
        }
        let scan = format!(
            "ssh-keyscan -T 2 -t ed25519 {} 2>/dev/null",
            names.join(" ")
        );
        loop {
            let out = cli(&["exec", &names[0], "sh", "-c", &scan]).unwrap_or_default();
            if out.lines().count() >= hosts {
                break;
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("plain docker run: sshd did not answer on every host within 120s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok(t.elapsed())
    }
    .await;
    let docker = docker::connect().await?;
    docker::remove_run(&docker, &run_id).await?;
    result
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
