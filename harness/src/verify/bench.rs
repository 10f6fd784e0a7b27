//! `bench`: figures, not assertions. For each fleet size: the hosts
//! prepared once and snapshotted (what a verify pays once per run), then a
//! fleet started from that snapshot against plain `docker run` of the same
//! image, every container at once, in the same run (so a busy machine shifts
//! both sides), an install on every host and one deploy; then a warm verify
//! of the default suite with coverage off and on. Printed as the table of
//! issue 12, each figure with its ratio and goal; nothing here fails on a
//! number.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::future::join_all;

use crate::config::{Config, Hosts};
use crate::support::docker::{self, Containers};
use crate::support::process;
use crate::support::progress::Progress;
use crate::verify::fleet::{Launch, Role, Size};
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
    /// One host per role prepared and snapshotted (once per run).
    prepare_s: f64,
    /// Plain `docker run` of every host at once, until every sshd answers.
    docker_run_s: f64,
    /// A fleet of `hosts` started from the snapshot, ready for a sync.
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
    // The image a release makes (see `images::fleet_image_satisfying`).
    let declared = crate::support::debian::project_declared_depends(&project)?;
    let early = images::fleet_image(&docker, &config, &declared, &progress.reporter()).await?;
    let debs: Vec<&std::path::Path> = deb.paths.iter().map(|p| p.as_path()).collect();
    let image = images::fleet_image_satisfying(
        &docker,
        &config,
        &early,
        &declared,
        &debs,
        &progress.reporter(),
    )
    .await?;

    let mut rows: Vec<Row> = Vec::new();
    for &apps in &opts.app_counts {
        let size = Size {
            canaries: config.fleet.canaries,
            apps,
        };
        let hosts = 1 + size.canaries + size.apps;
        let (prepare, baseline, start, install, deploy) =
            one_size(&docker, &config, &image, &deb, size, progress).await?;
        let first = rows.first();
        rows.push(Row {
            hosts,
            prepare_s: secs(prepare),
            docker_run_s: secs(baseline),
            fleet_start_s: secs(start),
            start_ratio: ratio(start.as_secs_f64(), baseline.as_secs_f64()),
            start_growth: first.map_or(1.0, |f| ratio(start.as_secs_f64(), f.fleet_start_s)),
            install_s: secs(install),
            install_growth: first.map_or(1.0, |f| ratio(install.as_secs_f64(), f.install_s)),
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
        "{:>6}  {:>8}  {:>10}  {:>11}  {:>7}  {:>8}  {:>8}  {:>8}  {:>7}",
        "hosts",
        "prepare",
        "docker run",
        "fleet start",
        "ratio",
        "growth",
        "install",
        "growth",
        "deploy"
    );
    for r in &rows {
        println!(
            "{:>6}  {:>7.1}s  {:>9.1}s  {:>10.1}s  {:>6.2}x  {:>7.2}x  {:>7.1}s  {:>7.2}x  {:>6.1}s",
            r.hosts,
            r.prepare_s,
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
        "prepare: one host per role made ready (users, keys, known hosts, HTTP and apt\n\
         repository with the package indexed, the deployment repository) and snapshotted, once\n\
         per run; docker run: the snapshot's image, every container started at once by\n\
         `docker run`, until every sshd answers; fleet start: the harness's fleet from the\n\
         snapshot, ready for a sync; ratio: fleet start / docker run; growth: against the\n\
         first row; install: the package on every host; deploy: one sync."
    );
    println!();
    print_goals(&rows, verify_s, uncovered_s);
    Ok(())
}

/// The figures of issue 12 against their goals.
fn print_goals(rows: &[Row], verify_s: Option<(f64, bool)>, uncovered_s: Option<(f64, bool)>) {
    let word = |passed: bool| if passed { "passed" } else { "FAILED" };
    let meets = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("{:<46}  {:<28}  {:<9}  goal", "figure", "measured", "ratio");
    if let Some((s, passed)) = verify_s {
        println!(
            "{:<46}  {:<28}  {:<9}  <= 60 s: {}",
            "warm verify, default five scenarios",
            format!("{s:.1}s ({})", word(passed)),
            format!("{:.2}", s / 60.0),
            meets(s <= 60.0)
        );
    }
    if let (Some((on, _)), Some((off, off_passed))) = (verify_s, uncovered_s) {
        println!(
            "{:<46}  {:<28}  {:<9}  (cost of measuring)",
            "coverage on / off (warm verify)",
            format!("{on:.1}s / {off:.1}s ({})", word(off_passed)),
            format!("{:.2}x", ratio(on, off)),
        );
    }
    if let Some(first) = rows.first() {
        println!(
            "{:<46}  {:<28}  {:<9}  <= 1.2x: {}",
            format!("fleet start, {} hosts, against docker run", first.hosts),
            format!("{:.1}s vs {:.1}s", first.fleet_start_s, first.docker_run_s),
            format!("{:.2}x", first.start_ratio),
            meets(first.start_ratio <= 1.2)
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last().filter(|_| rows.len() > 1)) {
        println!(
            "{:<46}  {:<28}  {:<9}  <= 2x: {}",
            format!("fleet start, {} hosts, against {}", last.hosts, first.hosts),
            format!("{:.1}s vs {:.1}s", last.fleet_start_s, first.fleet_start_s),
            format!("{:.2}x", last.start_growth),
            meets(last.start_growth <= 2.0)
        );
        println!(
            "{:<46}  {:<28}  {:<9}  <= 2x: {}",
            format!(
                "install on every host, {} -> {} hosts",
                first.hosts, last.hosts
            ),
            format!("{:.1}s -> {:.1}s", first.install_s, last.install_s),
            format!("{:.2}x", last.install_growth),
            meets(last.install_growth <= 2.0)
        );
    }
    println!(
        "{:<46}  {:<28}  {:<9}  <= 180 s",
        "cold first dry run (no images)", "not measured here", "-"
    );
    println!(
        "  (the cold run needs the images gone: time `release --dry-run` after removing\n   \
         the release-harness/* images)"
    );
}

/// Prepares and snapshots a fleet of `size`, then times plain `docker run`
/// of as many containers of the snapshot's image, the fleet's start from
/// the snapshot, an install on every host and one deploy. Returns (prepare,
/// docker run, fleet start, install, deploy).
async fn one_size(
    docker: &Docker,
    config: &Config,
    image: &str,
    deb: &Debs,
    size: Size,
    progress: &Progress,
) -> Result<(Duration, Duration, Duration, Duration, Duration)> {
    let hosts = 1 + size.canaries + size.apps;
    progress.step(&format!("bench: {hosts} hosts, prepared once"));
    let run_id = docker::new_run_id();
    let launch = Launch {
        image,
        size,
        run_id: &run_id,
        slot: "prep",
        keep: false,
    };
    let t = Instant::now();
    let (snapshot, _) = scenario::prepare(
        docker,
        config,
        &launch,
        &deb.paths.iter().map(|p| p.as_path()).collect::<Vec<_>>(),
        None,
        progress,
    )
    .await?;
    let prepare = t.elapsed();
    let measured = async {
        let same_image = snapshot
            .images()
            .iter()
            .find(|(role, _)| *role == Role::App)
            .or_else(|| snapshot.images().first())
            .map(|(_, image)| image.clone())
            .unwrap_or_else(|| image.to_string());
        progress.step(&format!("bench: {hosts} hosts, plain docker run"));
        let baseline = plain_docker_run(docker, &same_image, hosts).await?;
        progress.step(&format!("bench: {hosts} hosts, harness fleet"));
        let t = Instant::now();
        let fleet = snapshot.start_fleet("bench", false, progress).await?;
        let start = t.elapsed();
        let timed = async {
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
        let (install, deploy) = timed?;
        anyhow::Ok((baseline, start, install, deploy))
    }
    .await;
    snapshot.finish(false).await;
    let (baseline, start, install, deploy) = measured?;
    Ok((prepare, baseline, start, install, deploy))
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
