//! The Docker engine: connecting (DOCKER_HOST or the local socket), the labels
//! every resource of a run carries, and sweeping what killed runs left behind.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::Docker;

/// Every container and network the harness makes carries these labels.
pub const LABEL_RUN: &str = "org.release-harness.run";
/// `<hostname>:<pid>` of the process that made it: a resource whose process
/// is gone is stale and swept at the next start.
pub const LABEL_OWNER: &str = "org.release-harness.owner";

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
    let docker = Docker::connect_with_defaults().map_err(unreachable)?;
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

/// Creates a user-defined network carrying the run's labels.
pub async fn create_network(docker: &Docker, name: &str, run_id: &str) -> Result<()> {
    create_network_labelled(docker, name, run_labels(run_id)).await
}

pub async fn create_network_labelled(
    docker: &Docker,
    name: &str,
    labels: HashMap<String, String>,
) -> Result<()> {
    docker
        .create_network(bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating network {name}"))?;
    Ok(())
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
        removed += remove_run(docker, &run).await?;
    }
    Ok(removed)
}

/// A container or network the harness made.
struct Resource {
    network: bool,
    id: String,
    labels: HashMap<String, String>,
}

/// Containers, then networks (the order they can be removed in), that carry
/// `label` (`key` or `key=value`).
async fn labelled(docker: &Docker, label: &str) -> Result<Vec<Resource>> {
    use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
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
        .map(|c| (false, c.id, c.labels));
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await?
        .into_iter()
        .map(|n| (true, n.id, n.labels));
    Ok(containers
        .chain(networks)
        .filter_map(|(network, id, labels)| {
            Some(Resource {
                network,
                id: id?,
                labels: labels.unwrap_or_default(),
            })
        })
        .collect())
}

async fn remove_labelled(docker: &Docker, label: &str) -> Result<usize> {
    use bollard::errors::Error::DockerResponseServerError;
    let mut removed = 0;
    for r in labelled(docker, label).await? {
        let result = if r.network {
            docker.remove_network(&r.id).await
        } else {
            let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            docker.remove_container(&r.id, Some(opts)).await
        };
        match result {
            Ok(()) => removed += 1,
            // Already gone, or a container already being removed (a
            // concurrent drop): fine. A network still in use is not.
            Err(DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(DockerResponseServerError {
                status_code: 409, ..
            }) if !r.network => {}
            Err(e) => {
                let what = if r.network { "network" } else { "container" };
                return Err(e).with_context(|| format!("removing {what} {}", r.id));
            }
        }
    }
    Ok(removed)
}
