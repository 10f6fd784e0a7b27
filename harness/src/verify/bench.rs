//! `bench`: figures, not assertions. For each fleet size: the hosts
//! prepared once and snapshotted (what a verify pays once per run), then a
//! fleet started from that snapshot against plain `docker run` of the same
//! image, every container at once, in the same run (so a busy machine shifts
//! both sides), an install on every host and one deploy; then a warm verify
//! of the default suite with coverage off and on; with `--cold`, first a
//! dry run of the built-in fixture with none of the harness's images made.
//! Where the engine is local, the machine's CPU time spent on each fleet's
//! start and install is read too: per host, it says how far the host count
//! can grow before the cores, not the harness, set the pace. Printed as the
//! table of issue 12, each figure with its ratio and goal; nothing here
//! fails on a number.

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
    /// First remove the harness's images and time a cold dry run.
    pub cold: bool,
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
    /// The machine's CPU time (every process, the engine's included) during
    /// the fleet start and during the install; None when the engine is not
    /// on this machine.
    start_cpu_s: Option<f64>,
    install_cpu_s: Option<f64>,
}

/// A timed piece of work and the machine's CPU time it took.
#[derive(Clone, Copy)]
struct Timed {
    wall: Duration,
    cpu: Option<Duration>,
}

/// The CPU time every process of this machine has used (user, nice, system,
/// irq, softirq in /proc/stat); None where it cannot be read, or when the
/// engine (DOCKER_HOST) runs elsewhere and this machine's CPU says nothing.
fn machine_cpu() -> Option<Duration> {
    if std::env::var("DOCKER_HOST").is_ok_and(|h| !h.starts_with("unix://")) {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum();
    // USER_HZ is 100 on every Linux ABI this runs on.
    Some(Duration::from_millis(busy * 10))
}

/// Times `work`, with the machine's CPU time it took.
async fn timed<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<(T, Timed)> {
    let (t, cpu) = (Instant::now(), machine_cpu());
    let value = work.await?;
    let cpu = cpu.zip(machine_cpu()).map(|(a, b)| b.saturating_sub(a));
    Ok((
        value,
        Timed {
            wall: t.elapsed(),
            cpu,
        },
    ))
}

pub async fn run(opts: &BenchOptions, progress: &Progress) -> Result<()> {
    let docker = docker::connect().await?;
    let cold = if opts.cold {
        Some(cold_dry_run(&docker, progress).await?)
    } else {
        None
    };
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
        let (start_s, install_s) = (start.wall.as_secs_f64(), install.wall.as_secs_f64());
        rows.push(Row {
            hosts,
            prepare_s: secs(prepare),
            docker_run_s: secs(baseline),
            fleet_start_s: secs(start.wall),
            start_ratio: ratio(start_s, baseline.as_secs_f64()),
            start_growth: first.map_or(1.0, |f| ratio(start_s, f.fleet_start_s)),
            install_s: secs(install.wall),
            install_growth: first.map_or(1.0, |f| ratio(install_s, f.install_s)),
            deploy_s: secs(deploy),
            start_cpu_s: start.cpu.map(secs),
            install_cpu_s: install.cpu.map(secs),
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
                "cores": cores(),
                "warm_verify_s": verify_s.map(|v| v.0),
                "warm_verify_without_coverage_s": uncovered_s.map(|v| v.0),
                "cold_dry_run_s": cold.as_ref().map(|c| secs(c.total)),
                "cold_dry_run_steps": cold.as_ref().map(|c| &c.steps),
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
    print_cpu(&rows);
    println!();
    print_goals(&rows, verify_s, uncovered_s, cold.as_ref());
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What each added host costs the machine, from the CPU time of the
/// smallest and largest sizes, and the growth that cost alone allows: the
/// added hosts' CPU spread over every core, on top of the smallest fleet's
/// time. A growth goal below that floor is out of reach on this machine for
/// any harness (plain `docker run` shows the same floor).
fn print_cpu(rows: &[Row]) {
    let (Some(first), Some(last)) = (rows.first(), rows.last().filter(|_| rows.len() > 1)) else {
        return;
    };
    let added = (last.hosts - first.hosts) as f64;
    let cores = cores() as f64;
    for (what, a, b, wall) in [
        (
            "fleet start",
            first.start_cpu_s,
            last.start_cpu_s,
            first.fleet_start_s,
        ),
        (
            "install",
            first.install_cpu_s,
            last.install_cpu_s,
            first.install_s,
        ),
    ] {
        let (Some(a), Some(b)) = (a, b) else {
            continue;
        };
        let per_host = (b - a) / added;
        let floor = (wall + per_host * added / cores) / wall.max(0.001);
        println!(
            "cpu, {what}: {a:.1} s for {} hosts, {b:.1} s for {}: {:.2} CPU-s per added host; \
             on {cores} cores the {} added hosts alone allow no better than {floor:.2}x",
            first.hosts,
            last.hosts,
            per_host,
            last.hosts - first.hosts
        );
    }
}

/// The cold first run: the harness's images removed, then a dry run of the
/// built-in fixture, timed by step.
struct Cold {
    total: Duration,
    steps: Vec<crate::release::StepTime>,
}

async fn cold_dry_run(docker: &Docker, progress: &Progress) -> Result<Cold> {
    progress.step("bench: cold dry run, removing the harness's images");
    let removed = remove_harness_images(docker).await?;
    progress.info(&format!("removed {removed} images"));
    let scratch = tempfile::tempdir()?;
    let options = crate::release::ReleaseOptions {
        project: None,
        fixture: Some("minideploy".into()),
        dry_run: true,
        tagged: false,
        version: crate::release::version::VersionRequest::Bump(
            crate::release::version::Bump::Minor,
        ),
        out: scratch.path().join("out"),
        keep: false,
        scenarios: Vec::new(),
        run_id: docker::new_run_id(),
    };
    // Its own progress: its steps are the release's, not the bench's.
    let release_progress = Progress::new(false);
    let cleanup = std::sync::Arc::new(std::sync::Mutex::new(crate::release::Cleanup::default()));
    let outcome = crate::release::release(&options, cleanup, &release_progress)
        .await
        .context("the cold dry run of the fixture")?;
    Ok(Cold {
        total: outcome.total,
        steps: outcome.steps,
    })
}

/// Removes every `release-harness/*` image. One a container still uses
/// (another run, a kept fleet) stops the bench with its name: a cold figure
/// measured with some images left would not be one.
async fn remove_harness_images(docker: &Docker) -> Result<usize> {
    let reference = format!("{}/*", images::REPOSITORY_PREFIX);
    let filters = std::collections::HashMap::from([("reference", vec![reference.as_str()])]);
    let listed = docker
        .list_images(Some(
            bollard::query_parameters::ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .context("listing the harness's images")?;
    let mut removed = 0;
    for image in listed {
        for tag in &image.repo_tags {
            docker
                .remove_image(
                    tag,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await
                .with_context(|| {
                    format!(
                        "removing image {tag} for a cold run: is a container using it? \
                         (`docker ps -a --filter ancestor={tag}`; `release-harness sweep` \
                         removes those of killed runs)"
                    )
                })?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The figures of issue 12 against their goals.
fn print_goals(
    rows: &[Row],
    verify_s: Option<(f64, bool)>,
    uncovered_s: Option<(f64, bool)>,
    cold: Option<&Cold>,
) {
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
    match cold {
        Some(c) => {
            let s = c.total.as_secs_f64();
            println!(
                "{:<46}  {:<28}  {:<9}  <= 180 s: {}",
                "cold first dry run (no images)",
                format!("{s:.1}s"),
                format!("{:.2}", s / 180.0),
                meets(s <= 180.0)
            );
            let steps: Vec<String> = c
                .steps
                .iter()
                .map(|s| format!("{} {:.1}s", s.step, s.duration.as_secs_f64()))
                .collect();
            println!("  ({})", steps.join(", "));
        }
        None => println!(
            "{:<46}  {:<28}  {:<9}  <= 180 s (`bench --cold` measures it)",
            "cold first dry run (no images)", "not measured", "-"
        ),
    }
}

/// Prepares and snapshots a fleet of `size`, then times plain `docker run`
/// of as many containers of the snapshot's image, the fleet's start from
/// the snapshot, an install on every host and one deploy. Returns (prepare,
/// docker run, fleet start, install, deploy); the start and the install with
/// the machine's CPU time.
async fn one_size(
    docker: &Docker,
    config: &Config,
    image: &str,
    deb: &Debs,
    size: Size,
    progress: &Progress,
) -> Result<(Duration, Duration, Timed, Timed, Duration)> {
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
        let (fleet, start) = timed(snapshot.start_fleet("bench", false, progress)).await?;
        let on_the_fleet = async {
            let ((), install) =
                timed(fleet.install(&fleet.select(Hosts::All), &deb.version)).await?;
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
        let (install, deploy) = on_the_fleet?;
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
