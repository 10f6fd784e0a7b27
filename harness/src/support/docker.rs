//! The Docker engine: connecting (DOCKER_HOST or the local socket), the labels
//! every resource of a run carries, the one guard that owns the containers
//! (and network, and images made from them) a step starts and removes them,
//! and sweeping what killed runs left behind.

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::future::join_all;

use crate::support::subnet::Net;

/// Every container, network and run-scoped image the harness makes carries
/// these labels.
pub const LABEL_RUN: &str = "org.release-harness.run";
/// `<hostname>:<pid>` of the process that made it: a resource whose process
/// is gone is stale and swept at the next start.
pub const LABEL_OWNER: &str = "org.release-harness.owner";

/// How long one engine call may take to answer. bollard's default (2 min)
/// is too short for an engine that several runs share: under load, a create,
/// start or forced removal can take longer, and a timed-out call looks like
/// a failure though the engine goes on with it. A longer wait means a stuck
/// engine, not a busy one. `RELEASE_HARNESS_ENGINE_TIMEOUT_SECS` overrides it.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(600);

fn engine_timeout() -> Duration {
    std::env::var("RELEASE_HARNESS_ENGINE_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .unwrap_or(ENGINE_TIMEOUT)
}

/// Connects and checks that the engine answers, with an error that says what
/// to do when it does not.
pub async fn connect() -> Result<Docker> {
    let where_ = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the local socket".into());
    let unreachable = |e: bollard::errors::Error| {
        anyhow::anyhow!(
            "the Docker engine at {where_} does not answer ({e}).\n  fix: start it \
             (`dockerd &` or `systemctl start docker`), or point DOCKER_HOST at a running \
             engine; to skip container tests on purpose set RELEASE_HARNESS_SKIP_DOCKER=1"
        )
    };
    let docker = Docker::connect_with_defaults()
        .map_err(unreachable)?
        .with_timeout(engine_timeout());
    // bollard speaks a newer API than some engines accept (20.10 speaks 1.41);
    // asking the engine first makes every later request use what it speaks.
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    docker.ping().await.map_err(unreachable)?;
    Ok(docker)
}

/// A new run id: short, unique enough on one engine, usable in names.
pub fn new_run_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:04x}",
        (nanos / 1000) & 0xffff_ffff,
        std::process::id() & 0xffff
    )
}

pub fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

pub fn run_labels(run_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_RUN.to_string(), run_id.to_string()),
        (LABEL_OWNER.to_string(), owner()),
    ])
}

/// Owner of a fleet kept for debugging (`--keep`): it outlives its process,
/// so the sweep leaves it alone; `sweep --run ID` removes it.
pub const KEPT: &str = "kept";

/// Labels for a fleet that is kept after the run ends.
pub fn kept_labels(run_id: &str) -> HashMap<String, String> {
    HashMap::from([
        (LABEL_RUN.to_string(), run_id.to_string()),
        (LABEL_OWNER.to_string(), KEPT.to_string()),
    ])
}

/// What a command run in a container left.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

impl ExecOutput {
    pub fn ok(&self) -> bool {
        self.code == 0
    }
    /// The last lines of stderr (or stdout when stderr is empty), for errors.
    pub fn tail(&self, lines: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let all: Vec<&str> = text.trim_end().lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Runs `sh -c script` in a container as `user` (root when None) and waits for
/// it. Callers bound long commands with `timeout` inside the script: killing
/// the exec from outside does not stop the process in the container.
pub async fn exec(
    docker: &Docker,
    container: &str,
    user: Option<&str>,
    script: &str,
) -> Result<ExecOutput> {
    use bollard::exec::{CreateExecOptions, StartExecResults};
    use futures_util::StreamExt;

    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                cmd: Some(vec!["sh", "-c", script]),
                user,
                env: Some(vec!["LC_ALL=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"]),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("starting a command in container {container}"))?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await?
    {
        while let Some(chunk) = output.next().await {
            match chunk? {
                bollard::container::LogOutput::StdOut { message } => {
                    stdout.extend_from_slice(&message)
                }
                bollard::container::LogOutput::StdErr { message } => {
                    stderr.extend_from_slice(&message)
                }
                _ => {}
            }
        }
    }
    let code = docker
        .inspect_exec(&created.id)
        .await?
        .exit_code
        .unwrap_or(-1);
    Ok(ExecOutput {
        code,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// A file to put into a container: (absolute path, content, mode).
pub type FileEntry = (String, Vec<u8>, u32);

/// Writes files into a container by tar (parents created as needed).
pub async fn put_files(docker: &Docker, container: &str, files: &[FileEntry]) -> Result<()> {
    let entries = files
        .iter()
        .map(|(path, content, mode)| (path.trim_start_matches('/'), content.as_slice(), *mode));
    upload_tar(docker, container, tar_of(entries)?).await
}

/// A tar archive of in-memory files (relative path, content, mode), with
/// fixed times so equal inputs give equal archives.
pub fn tar_of<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8], u32)>) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        builder
            .append_data(&mut header, path, content)
            .with_context(|| format!("packing {path}"))?;
    }
    Ok(builder.into_inner()?)
}

/// Unpacks a tar archive at the container's root.
pub async fn upload_tar(docker: &Docker, container: &str, tar: Vec<u8>) -> Result<()> {
    docker
        .upload_to_container(
            container,
            Some(
                bollard::query_parameters::UploadToContainerOptionsBuilder::default()
                    .path("/")
                    .build(),
            ),
            bollard::body_full(tar.into()),
        )
        .await
        .with_context(|| format!("copying files into container {container}"))
}

/// Creates a bridge network on the subnet the engine itself picks for a
/// new network (its address pools, clear of its other networks and of this
/// machine's routes), set explicitly so that containers can get fixed
/// addresses (`Containers::start`): the network is made once to learn the
/// engine's pick, then again with it. Should another network take that
/// subnet in between, the engine refuses the second create and the engine
/// is asked again.
pub async fn create_network_labelled(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<Net> {
    let request = |ipam: Option<bollard::models::Ipam>| bollard::models::NetworkCreateRequest {
        name: name.to_string(),
        driver: Some("bridge".into()),
        labels: Some(labels.clone()),
        ipam,
        ..Default::default()
    };
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        let created = docker
            .create_network(request(None))
            .await
            .with_context(|| format!("creating network {name}"))?;
        let picked = docker
            .inspect_network(
                created.id.as_str(),
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .map(|n| {
                n.ipam
                    .and_then(|i| i.config)
                    .unwrap_or_default()
                    .iter()
                    .find_map(|c| Net::parse(c.subnet.as_deref()?))
            });
        patiently(|| docker.remove_network(&created.id))
            .await
            .with_context(|| format!("removing network {name} to set its subnet"))?;
        let subnet = picked
            .with_context(|| format!("inspecting network {name}"))?
            .with_context(|| format!("network {name}: the engine gave it no IPv4 subnet"))?;
        let ipam = bollard::models::Ipam {
            config: Some(vec![bollard::models::IpamConfig {
                subnet: Some(subnet.to_string()),
                gateway: Some(subnet.host(1).to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        match docker.create_network(request(Some(ipam))).await {
            Ok(_) => return Ok(subnet),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. })
                if message.contains("overlap") =>
            {
                tracing::debug!("network {name}: {subnet} taken meanwhile ({message})");
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating network {name} on {subnet}"))
            }
        }
    }
    bail!(
        "creating network {name}: {ATTEMPTS} times, the subnet the engine picked was taken \
         by another network before it could be set; too many networks are being made at \
         once, try again"
    )
}

/// One container to start: what from, its name on the engine, and what it
/// answers to.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Container name on the engine (unique per run: `rh-<run>-...`).
    pub name: String,
    pub image: String,
    /// Its host name inside. On a guard's network, the containers started
    /// together resolve each other by it (see `Containers::start`).
    pub hostname: Option<String>,
    /// A line the container prints when it is ready (sshd's `Server listening
    /// on`); `start` returns once every container printed its line.
    pub ready_line: Option<&'static str>,
}

impl ContainerSpec {
    /// A container that idles on its image's command, for `exec`.
    pub fn idle(name: impl Into<String>, image: impl Into<String>) -> ContainerSpec {
        ContainerSpec {
            name: name.into(),
            image: image.into(),
            hostname: None,
            ready_line: None,
        }
    }
}

/// The containers (and the network, when it made one) that one step of a run
/// started. Removed by `remove`, or when the guard is dropped (an error, a
/// panic, Ctrl-C cutting the step off); left running by `keep`, for
/// debugging: then they carry the owner `kept`, which the stale sweep leaves
/// alone. Every caller that starts a container goes through one of these, so
/// no two removals of the same container race.
pub struct Containers {
    docker: Docker,
    run_id: String,
    /// Labelled as kept from the start: labels cannot change on a container.
    kept: bool,
    network: Option<String>,
    /// The network's subnet, and how many of its addresses were given out.
    subnet: Option<Net>,
    addresses_given: u32,
    /// Every container created, started or not.
    names: Vec<String>,
    /// Images made for this run only (a prepared fleet's snapshot), removed
    /// after the containers.
    images: Vec<String>,
}

impl Containers {
    /// Containers on the engine's default network.
    pub fn new(docker: &Docker, run_id: &str) -> Containers {
        Containers {
            docker: docker.clone(),
            run_id: run_id.to_string(),
            kept: false,
            network: None,
            subnet: None,
            addresses_given: 0,
            names: Vec::new(),
            images: Vec::new(),
        }
    }

    /// The same guard, labelling what it makes as kept (see `keep`) when
    /// `kept`.
    pub fn labelled_kept(mut self, kept: bool) -> Containers {
        self.kept = kept;
        self
    }

    /// Containers on a network of their own, `network`, made now. With
    /// `kept`, everything is labelled to survive the run (see `keep`).
    pub async fn on_network(
        docker: &Docker,
        run_id: &str,
        network: &str,
        kept: bool,
    ) -> Result<Containers> {
        let mut guard = Containers::new(docker, run_id);
        guard.kept = kept;
        guard.subnet = Some(create_network_labelled(docker, network, guard.labels()).await?);
        guard.network = Some(network.to_string());
        Ok(guard)
    }

    /// The labels of what this guard makes.
    pub fn labels(&self) -> HashMap<String, String> {
        if self.kept {
            kept_labels(&self.run_id)
        } else {
            run_labels(&self.run_id)
        }
    }

    pub fn network(&self) -> Option<&str> {
        self.network.as_deref()
    }

    /// Creates and starts `specs`, all at once, and waits (up to `ready_within`)
    /// until each has printed its ready line. On the guard's network, each
    /// container with a host name gets the next fixed address, and every
    /// container started in this call finds every such host name with its
    /// address in its /etc/hosts, written by the engine at create: no DNS
    /// server and no exec, and a restarted container keeps its address. On
    /// an error, what was created stays in the guard, to be removed with it.
    pub async fn start(&mut self, specs: &[ContainerSpec], ready_within: Duration) -> Result<()> {
        // Named before creation: a create cut off half-way still leaves a
        // name the removal will look for.
        self.names.extend(specs.iter().map(|s| s.name.clone()));
        let mut addresses = Vec::with_capacity(specs.len());
        for spec in specs {
            addresses.push(match (self.subnet, &spec.hostname) {
                (Some(subnet), Some(_)) => {
                    if self.addresses_given == subnet.hosts() {
                        bail!(
                            "starting {}: network {} ({subnet}) has no address left for more \
                             than {} containers",
                            spec.name,
                            self.network.as_deref().unwrap_or_default(),
                            subnet.hosts()
                        );
                    }
                    self.addresses_given += 1;
                    Some(subnet.host(1 + self.addresses_given))
                }
                _ => None,
            });
        }
        let hosts_lines: Vec<String> = specs
            .iter()
            .zip(&addresses)
            .filter_map(|(spec, address)| {
                Some(format!("{}:{}", spec.hostname.as_ref()?, (*address)?))
            })
            .collect();
        let labels = self.labels();
        let this = &*self;
        let started = join_all(specs.iter().zip(&addresses).map(|(spec, address)| {
            let labels = labels.clone();
            let hosts_lines = &hosts_lines;
            async move {
                this.create_and_start(spec, labels, *address, hosts_lines)
                    .await?;
                if let Some(line) = spec.ready_line {
                    wait_for_line(&this.docker, &spec.name, line, ready_within).await?;
                }
                anyhow::Ok(())
            }
        }))
        .await;
        started.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    async fn create_and_start(
        &self,
        spec: &ContainerSpec,
        labels: HashMap<String, String>,
        address: Option<Ipv4Addr>,
        hosts_lines: &[String],
    ) -> Result<()> {
        use bollard::models::HostConfig;
        self.docker
            .create_container(
                Some(
                    bollard::query_parameters::CreateContainerOptionsBuilder::default()
                        .name(&spec.name)
                        .build(),
                ),
                bollard::models::ContainerCreateBody {
                    image: Some(spec.image.clone()),
                    hostname: spec.hostname.clone(),
                    labels: Some(labels),
                    env: Some(vec![
                        "LC_ALL=C.UTF-8".into(),
                        "DEBIAN_FRONTEND=noninteractive".into(),
                    ]),
                    host_config: Some(HostConfig {
                        network_mode: self.network.clone(),
                        extra_hosts: address.map(|_| hosts_lines.to_vec()),
                        ..Default::default()
                    }),
                    networking_config: self.network.as_ref().zip(address).map(
                        |(network, address)| bollard::models::NetworkingConfig {
                            endpoints_config: Some(HashMap::from([(
                                network.clone(),
                                bollard::models::EndpointSettings {
                                    ipam_config: Some(bollard::models::EndpointIpamConfig {
                                        ipv4_address: Some(address.to_string()),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                },
                            )])),
                        },
                    ),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| {
                format!(
                    "creating container {} from image {}; if the image is missing, it was \
                     not built first (nothing can be pulled)",
                    spec.name, spec.image
                )
            })?;
        self.docker
            .start_container(&spec.name, None)
            .await
            .with_context(|| format!("starting container {}", spec.name))
    }

    /// Takes on a container started some other way (the bench's `docker
    /// run` baseline), to be removed with the others.
    pub fn adopt(&mut self, name: &str) {
        self.names.push(name.to_string());
    }

    /// Takes on an image made for this run (`docker commit`), to be removed
    /// after the containers.
    pub fn adopt_image(&mut self, name: &str) {
        self.images.push(name.to_string());
    }

    /// Leaves the containers and network running past the run (`--keep`).
    /// Only a guard made `kept` may be kept: the labels say so to the sweep.
    pub fn keep(mut self) {
        debug_assert!(self.kept, "keep() on a guard not labelled as kept");
        self.names.clear();
        self.network = None;
        self.images.clear();
    }

    /// Removes the containers, then the network: a failure is only
    /// reported, the stale sweep at the next start takes what is left.
    pub async fn remove(mut self) {
        let names = std::mem::take(&mut self.names);
        let network = self.network.take();
        let images = std::mem::take(&mut self.images);
        if let Err(e) = remove_now(&self.docker, &names, network.as_deref(), &images).await {
            eprintln!("warning: cleaning up run {}: {e:#}", self.run_id);
        }
    }
}

impl Drop for Containers {
    /// Dropped without `remove` or `keep`: the step was cut off. Removes
    /// before returning, on a thread and engine client of its own, so it
    /// works from any runtime (or none) and is done before whatever runs
    /// next, such as the CLI's clean-up after Ctrl-C.
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        let network = self.network.take();
        let images = std::mem::take(&mut self.images);
        if names.is_empty() && network.is_none() && images.is_empty() {
            return;
        }
        let run_id = self.run_id.clone();
        let removal = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let docker = connect().await?;
                remove_now(&docker, &names, network.as_deref(), &images).await
            })
        });
        match removal.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: cleaning up run {run_id}: {e:#}"),
            Err(_) => eprintln!("warning: cleaning up run {run_id}: the removal panicked"),
        }
    }
}

/// Waits until `container` prints a line containing `line` (on stdout or
/// stderr), or errors with where to look.
async fn wait_for_line(
    docker: &Docker,
    container: &str,
    line: &str,
    within: Duration,
) -> Result<()> {
    use futures_util::StreamExt;
    let options = bollard::query_parameters::LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(container, Some(options));
    let mut seen = String::new();
    let within = scaled_to_load(within);
    let found = tokio::time::timeout(within, async {
        while let Some(chunk) = logs.next().await {
            let chunk = chunk.with_context(|| format!("reading the log of {container}"))?;
            seen.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if seen.contains(line) {
                return anyhow::Ok(true);
            }
        }
        // The stream ends when the container does.
        anyhow::Ok(false)
    })
    .await;
    match found {
        Ok(Ok(true)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(false)) => bail!(
            "container {container} stopped before it printed `{line}`; its log:\n{}",
            tail_of(&seen)
        ),
        Err(_) => bail!(
            "container {container} did not print `{line}` within {}s; its log so far:\n{}",
            within.as_secs(),
            tail_of(&seen)
        ),
    }
}

/// `wait` stretched by how busy this machine is: a container's start-up
/// (host keys, sshd) is CPU work, so on a machine whose run queue is N times
/// its cores it takes about N times as long. At most 5 times, so a container
/// that never gets ready is still named within minutes.
fn scaled_to_load(wait: Duration) -> Duration {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    wait.mul_f64(load_factor(load, cores))
}

fn load_factor(load: f64, cores: f64) -> f64 {
    (load / cores.max(1.0)).clamp(1.0, 5.0)
}

fn tail_of(log: &str) -> String {
    crate::support::process::indent(&crate::support::process::tail(log, 10))
}

/// Force-removes `names` (all at once), then `network`, then `images`.
/// Already gone is fine; a busy engine's timeouts and conflicts are waited
/// out (see `patiently`).
async fn remove_now(
    docker: &Docker,
    names: &[String],
    network: Option<&str>,
    images: &[String],
) -> Result<()> {
    let removals = join_all(names.iter().map(|name| async move {
        patiently(|| docker.remove_container(name, Some(force_remove())))
            .await
            .with_context(|| format!("removing container {name}"))
    }))
    .await;
    removals.into_iter().collect::<Result<Vec<()>>>()?;
    if let Some(network) = network {
        patiently(|| docker.remove_network(network))
            .await
            .with_context(|| format!("removing network {network}"))?;
    }
    let removals = join_all(images.iter().map(|image| async move {
        gone_is_fine(remove_image(docker, image).await)
            .with_context(|| format!("removing image {image}"))
    }))
    .await;
    removals.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// How long a removal keeps trying before it reports the failure.
const REMOVAL_PATIENCE: Duration = Duration::from_secs(600);

/// Runs an idempotent removal until it is done or gone (404), retrying with
/// backoff (0.5 s, doubling up to 10 s, for up to `REMOVAL_PATIENCE`) while
/// the engine is busy rather than refusing: a call that timed out (the
/// engine goes on removing), a removal already in progress (409), a network
/// whose endpoints are still being torn down, a 5xx. Anything else fails
/// at once.
async fn patiently<F, Fut>(call: F) -> Result<(), bollard::errors::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), bollard::errors::Error>>,
{
    patiently_within(call, REMOVAL_PATIENCE, Duration::from_millis(500)).await
}

async fn patiently_within<F, Fut>(
    mut call: F,
    patience: Duration,
    first_pause: Duration,
) -> Result<(), bollard::errors::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), bollard::errors::Error>>,
{
    let started = Instant::now();
    let deadline = started + patience;
    let mut pause = first_pause;
    loop {
        match gone_is_fine(call().await) {
            Err(e)
                if engine_busy(&e)
                    && Instant::now() + pause < deadline_for(&e, started, deadline) =>
            {
                tracing::debug!("engine busy ({e}): trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            done => return done,
        }
    }
}

/// "Active endpoints" clears within seconds when containers are still being
/// torn down; an engine that lost track of an endpoint (seen under heavy
/// load) never clears it, and only a dockerd restart does: no point waiting
/// the full patience for that.
const ENDPOINTS_PATIENCE: Duration = Duration::from_secs(30);

fn deadline_for(e: &bollard::errors::Error, started: Instant, deadline: Instant) -> Instant {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 403, ..
        } => deadline.min(started + ENDPOINTS_PATIENCE),
        _ => deadline,
    }
}

/// Whether an engine error says "busy, try again" rather than "no".
fn engine_busy(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    match e {
        E::RequestTimeoutError | E::HyperResponseError { .. } | E::IOError { .. } => true,
        E::DockerResponseServerError {
            status_code,
            message,
        } => {
            *status_code >= 500
                || *status_code == 409
                || (*status_code == 403 && message.contains("active endpoints"))
        }
        _ => false,
    }
}

async fn remove_image(docker: &Docker, image: &str) -> Result<(), bollard::errors::Error> {
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    docker
        .remove_image(image, Some(options), None)
        .await
        .map(|_| ())
}

fn force_remove() -> bollard::query_parameters::RemoveContainerOptions {
    bollard::query_parameters::RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build()
}

fn gone_is_fine(result: Result<(), bollard::errors::Error>) -> Result<(), bollard::errors::Error> {
    match result {
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        other => other,
    }
}

/// Removes every container and network labelled with `run_id`.
pub async fn remove_run(docker: &Docker, run_id: &str) -> Result<usize> {
    remove_labelled(docker, &format!("{LABEL_RUN}={run_id}")).await
}

/// Removes what earlier runs left behind: resources whose owning process (on
/// this machine) is gone. Live runs of other processes are left alone.
pub async fn sweep_stale(docker: &Docker) -> Result<usize> {
    let me = owner();
    let host = me.split(':').next().unwrap_or_default().to_string();
    let is_stale = |labels: &HashMap<String, String>| -> bool {
        let Some(owner) = labels.get(LABEL_OWNER) else {
            return false;
        };
        let (h, pid) = owner.split_once(':').unwrap_or((owner, ""));
        // Kept fleets and other machines' runs are not ours to judge.
        h == host
            && pid.parse::<u32>().is_ok()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    };
    let stale_runs: std::collections::BTreeSet<String> = labelled(docker, LABEL_OWNER)
        .await?
        .into_iter()
        .filter(|r| is_stale(&r.labels))
        .filter_map(|r| r.labels.get(LABEL_RUN).cloned())
        .collect();
    let mut removed = 0;
    for run in stale_runs {
        // What a dead run left and the engine will not let go (a network
        // with an endpoint it lost track of) is not this run's failure.
        match remove_run(docker, &run).await {
            Ok(n) => removed += n,
            Err(e) => eprintln!("warning: sweeping what run {run} left: {e:#}"),
        }
    }
    Ok(removed)
}

/// A container, network or image the harness made.
struct Resource {
    kind: Kind,
    id: String,
    labels: HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Container,
    Network,
    Image,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Network => "network",
            Kind::Image => "image",
        }
    }
}

/// How many containers, networks and images carry a label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Labelled {
    pub containers: usize,
    pub networks: usize,
    pub images: usize,
}

/// Counts what carries `label` (`key` or `key=value`): what a run left
/// behind, for the tests that check nothing is.
pub async fn count_labelled(docker: &Docker, label: &str) -> Result<Labelled> {
    let mut count = Labelled::default();
    for r in labelled(docker, label).await? {
        match r.kind {
            Kind::Container => count.containers += 1,
            Kind::Network => count.networks += 1,
            Kind::Image => count.images += 1,
        }
    }
    Ok(count)
}

/// Containers, then networks, then images (the order they can be removed
/// in), that carry `label` (`key` or `key=value`).
async fn labelled(docker: &Docker, label: &str) -> Result<Vec<Resource>> {
    use bollard::query_parameters::{
        ListContainersOptionsBuilder, ListImagesOptionsBuilder, ListNetworksOptionsBuilder,
    };
    let filters = HashMap::from([("label", vec![label])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await?
        .into_iter()
        .map(|c| (Kind::Container, c.id, c.labels));
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?
        .into_iter()
        .map(|n| (Kind::Network, n.id, n.labels));
    let images = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?
        .into_iter()
        .map(|i| (Kind::Image, Some(i.id), Some(i.labels)));
    Ok(containers
        .chain(networks)
        .chain(images)
        .filter_map(|(kind, id, labels)| {
            Some(Resource {
                kind,
                id: id?,
                labels: labels.unwrap_or_default(),
            })
        })
        .collect())
}

async fn remove_labelled(docker: &Docker, label: &str) -> Result<usize> {
    let mut removed = 0;
    for r in labelled(docker, label).await? {
        let result = match r.kind {
            Kind::Container => {
                patiently(|| docker.remove_container(&r.id, Some(force_remove()))).await
            }
            Kind::Network => patiently(|| docker.remove_network(&r.id)).await,
            Kind::Image => patiently(|| remove_image(docker, &r.id)).await,
        };
        if let Err(e) = result {
            return Err(e).with_context(|| format!("removing {} {}", r.kind.name(), r.id));
        }
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::support::images;

    fn refused(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    /// A busy engine's answers are waited out: a call that timed out, then a
    /// removal in progress, then gone.
    #[tokio::test]
    async fn a_removal_waits_out_a_busy_engine_and_stops_at_a_real_refusal() {
        let answers = std::sync::Mutex::new(vec![
            Err(bollard::errors::Error::RequestTimeoutError),
            Err(refused(
                409,
                "removal of container x is already in progress",
            )),
            Err(refused(404, "No such container: x")),
        ]);
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let call = || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answer = answers.lock().unwrap().remove(0);
            async move { answer }
        };
        patiently_within(call, Duration::from_secs(5), Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);

        let refusals = std::sync::Mutex::new(vec![Err(refused(400, "bad parameter"))]);
        let err = patiently(|| {
            let answer = refusals.lock().unwrap().remove(0);
            async move { answer }
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("bad parameter"), "{err}");
    }

    #[tokio::test]
    async fn a_removal_that_never_gets_through_gives_up_after_its_patience() {
        let started = Instant::now();
        let patience = Duration::from_millis(400);
        let err = patiently_within(
            || async { Err(bollard::errors::Error::RequestTimeoutError) },
            patience,
            Duration::from_millis(10),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, bollard::errors::Error::RequestTimeoutError));
        let waited = started.elapsed();
        assert!(
            waited <= patience + Duration::from_millis(200) && waited > patience / 4,
            "{waited:?}"
        );
    }

    #[test]
    fn busy_is_told_apart_from_no() {
        assert!(engine_busy(&bollard::errors::Error::RequestTimeoutError));
        assert!(engine_busy(&refused(500, "driver failed")));
        assert!(engine_busy(&refused(409, "removal already in progress")));
        assert!(engine_busy(&refused(
            403,
            "error while removing network: network rh-x has active endpoints"
        )));
        assert!(!engine_busy(&refused(403, "operation not permitted")));
        assert!(!engine_busy(&refused(400, "bad parameter")));
    }

    #[test]
    fn waits_stretch_with_the_load_up_to_five_times() {
        assert_eq!(load_factor(0.3, 2.0), 1.0);
        assert_eq!(load_factor(6.0, 2.0), 3.0);
        assert_eq!(load_factor(34.0, 2.0), 5.0);
        assert_eq!(load_factor(1.0, 0.0), 1.0);
    }

    async fn idle_image(docker: &Docker) -> String {
        let config = Config::parse("", std::path::Path::new("release.toml")).unwrap();
        images::lintian_image(docker, &config, &|line| eprintln!("  {line}"))
            .await
            .unwrap()
    }

    async fn left_of(docker: &Docker, run_id: &str) -> Vec<Resource> {
        labelled(docker, &format!("{LABEL_RUN}={run_id}"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn networks_made_at_once_get_subnets_of_their_own() {
        let Some(docker) = images::docker_for_tests("networks_made_at_once").await else {
            return;
        };
        let run_id = new_run_id();
        let guards = join_all((0..6).map(|i| {
            let docker = &docker;
            let run_id = &run_id;
            async move {
                Containers::on_network(docker, run_id, &format!("rh-{run_id}-{i}"), false).await
            }
        }))
        .await;
        let guards: Vec<Containers> = guards.into_iter().map(Result::unwrap).collect();
        let subnets: std::collections::BTreeSet<String> = guards
            .iter()
            .map(|g| g.subnet.unwrap().to_string())
            .collect();
        assert_eq!(subnets.len(), 6, "{subnets:?}");
        // What the engine says each network is on is what the guard gave out.
        for guard in &guards {
            let info = docker
                .inspect_network(
                    guard.network().unwrap(),
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .unwrap();
            let config = info.ipam.unwrap().config.unwrap();
            assert_eq!(
                config[0].subnet.as_deref(),
                Some(guard.subnet.unwrap().to_string().as_str())
            );
        }
        join_all(guards.into_iter().map(Containers::remove)).await;
        assert_eq!(left_of(&docker, &run_id).await.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_guard_removes_its_containers_and_network() {
        let Some(docker) = images::docker_for_tests("a_dropped_guard").await else {
            return;
        };
        let image = idle_image(&docker).await;
        let run_id = new_run_id();
        let mut guard = Containers::on_network(&docker, &run_id, &format!("rh-{run_id}"), false)
            .await
            .unwrap();
        let specs: Vec<ContainerSpec> = ["a", "b"]
            .iter()
            .map(|s| ContainerSpec::idle(format!("rh-{run_id}-{s}"), &image))
            .collect();
        guard.start(&specs, Duration::ZERO).await.unwrap();
        assert_eq!(left_of(&docker, &run_id).await.len(), 3);
        // A step cut off (an error, a panic, Ctrl-C) drops its guard.
        drop(guard);
        assert_eq!(left_of(&docker, &run_id).await.len(), 0);
    }

    #[tokio::test]
    async fn a_kept_guard_leaves_them_labelled_kept_and_remove_run_takes_them() {
        let Some(docker) = images::docker_for_tests("a_kept_guard").await else {
            return;
        };
        let image = idle_image(&docker).await;
        let run_id = new_run_id();
        let mut guard = Containers::on_network(&docker, &run_id, &format!("rh-{run_id}"), true)
            .await
            .unwrap();
        let spec = ContainerSpec::idle(format!("rh-{run_id}-kept"), &image);
        guard.start(&[spec], Duration::ZERO).await.unwrap();
        guard.keep();
        let left = left_of(&docker, &run_id).await;
        assert_eq!(left.len(), 2);
        assert!(left
            .iter()
            .all(|r| r.labels.get(LABEL_OWNER).map(String::as_str) == Some(KEPT)));
        // The sweep of a later run leaves a kept fleet alone.
        sweep_stale(&docker).await.unwrap();
        assert_eq!(left_of(&docker, &run_id).await.len(), 2);
        assert_eq!(remove_run(&docker, &run_id).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_container_that_never_says_it_is_ready_is_named() {
        let Some(docker) = images::docker_for_tests("never_ready").await else {
            return;
        };
        let image = idle_image(&docker).await;
        let run_id = new_run_id();
        let mut guard = Containers::new(&docker, &run_id);
        let name = format!("rh-{run_id}-mute");
        let spec = ContainerSpec {
            ready_line: Some("a line sleep never prints"),
            ..ContainerSpec::idle(&name, &image)
        };
        let err = guard
            .start(&[spec], Duration::from_millis(500))
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!(
                "container {name} did not print `a line sleep never prints`"
            )),
            "{msg}"
        );
        guard.remove().await;
        assert_eq!(left_of(&docker, &run_id).await.len(), 0);
    }
}
