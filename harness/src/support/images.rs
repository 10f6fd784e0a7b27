//! The images every container of the harness runs. Nothing can be pulled, so
//! each one is made here: a base image (`mmdebstrap` on the host, imported into
//! the engine) and role layers (`containers/<role>/`, built FROM a base). Every
//! tag is a hash of what went into the image, so a warm run builds nothing.
//! The packages asked for are Debian package relations, read by
//! `support::debian`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::support::{debian, process};

/// Bumped when the way images are made changes, so old tags are not reused.
/// 2: the tag no longer hashes the version of mmdebstrap, so it is known
/// without mmdebstrap, which is brought only when an image must be made.
pub const FORMAT_VERSION: u32 = 2;

/// Every image the harness makes is named `release-harness/<kind>`.
pub const REPOSITORY_PREFIX: &str = "release-harness";

/// Imported images have no command; this keeps a container alive for `exec`.
const BASE_CMD: &str = r#"CMD ["sleep", "infinity"]"#;

/// Packages the builder needs beside the project's Build-Depends.
pub const BUILDER_PACKAGES: &[&str] = &["build-essential", "dpkg-dev", "fakeroot", "lintian"];

/// Packages of the fleet image (deploy host, canaries, app hosts alike).
pub const FLEET_PACKAGES: &[&str] = &[
    "apt-utils",
    "ca-certificates",
    "cumin",
    "curl",
    "dpkg-dev",
    "git",
    "iproute2",
    "openssh-client",
    "openssh-server",
    "procps",
    "python3",
    "python3-apt",
    // Measures the released tool on every host (verify::coverage).
    "python3-coverage",
    "sudo",
];

/// The role layers, compiled in so the packaged binary needs no source tree.
/// Each file: (path in the build context, content, mode).
type RoleFile = (&'static str, &'static [u8], u32);
const ROLES: &[(&str, &[RoleFile])] = &[(
    "fleet",
    &[
        (
            "Dockerfile",
            include_bytes!("../../../containers/fleet/Dockerfile"),
            0o644,
        ),
        (
            "entrypoint.sh",
            include_bytes!("../../../containers/fleet/entrypoint.sh"),
            0o755,
        ),
        (
            "sshd.conf",
            include_bytes!("../../../containers/fleet/sshd.conf"),
            0o644,
        ),
    ],
)];

/// Packages asked for, with where they came from (for errors: "Build-Depends
/// of debian/control", "fleet.extra_packages in release.toml", ...). Each entry
/// is a package name or a relation (`debhelper-compat (= 13)`, `a | b`).
#[derive(Debug, Clone)]
pub struct PackageSet {
    pub origin: String,
    pub packages: Vec<String>,
}

impl PackageSet {
    pub fn new(origin: impl Into<String>, packages: &[impl AsRef<str>]) -> PackageSet {
        PackageSet {
            origin: origin.into(),
            packages: packages.iter().map(|p| p.as_ref().to_string()).collect(),
        }
    }
}

/// A base image with `packages` of `suite`; see `base_image_of`.
pub async fn base_image(
    docker: &Docker,
    suite: &str,
    packages: &[String],
    progress: &dyn Fn(&str),
) -> Result<String> {
    let sets = [PackageSet::new("the requested packages", packages)];
    base_image_of(docker, "base", suite, &sets, progress).await
}

/// `mmdebstrap --variant=apt` of `suite` with the packages of `sets`, imported
/// as `release-harness/<kind>:<hash>`. Returns at once when that tag exists.
pub async fn base_image_of(
    docker: &Docker,
    kind: &str,
    suite: &str,
    sets: &[PackageSet],
    progress: &dyn Fn(&str),
) -> Result<String> {
    let relations = checked_relations(sets)?;
    // What goes into the image, not the tool that made it: a host without
    // mmdebstrap finds the images another host made on the engine.
    let mut recipe = format!("format {FORMAT_VERSION}\nsuite {suite}\n");
    for r in &relations {
        recipe.push_str(r);
        recipe.push('\n');
    }
    let tag = format!("{REPOSITORY_PREFIX}/{kind}:{}", hash16(recipe.as_bytes()));

    let _held = hold_tag(&tag).await?;
    if image_exists(docker, &tag).await? {
        progress(&format!("image {tag}: up to date"));
        return Ok(tag);
    }
    crate::support::host::ensure_for_images(progress)?;
    let mmdebstrap = mmdebstrap_version().await?;
    let started = Instant::now();
    progress(&format!(
        "image {tag}: {mmdebstrap} {suite} with {} packages",
        relations.len()
    ));
    let dir = tempfile::tempdir().context("making a temporary directory for mmdebstrap")?;
    let rootfs = dir.path().join("rootfs.tar");
    run_mmdebstrap(suite, &relations, &rootfs, sets, &tag).await?;
    let built = started.elapsed();
    import_rootfs(docker, &rootfs, &tag).await?;
    progress(&format!(
        "image {tag}: built in {:.1}s (mmdebstrap {:.1}s, import {:.1}s)",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
    ));
    Ok(tag)
}

/// A role layer: `containers/<dir>/` built FROM `base` (passed as the build
/// argument `BASE`), tagged `release-harness/<dir>:<hash of the files + base>`.
pub async fn role_image(
    docker: &Docker,
    dir: &str,
    base: &str,
    progress: &dyn Fn(&str),
) -> Result<String> {
    let files = ROLES
        .iter()
        .find(|(name, _)| *name == dir)
        .map(|(_, files)| *files)
        .with_context(|| {
            format!(
                "no role image definition containers/{dir}/ (known: {})",
                ROLES.iter().map(|r| r.0).collect::<Vec<_>>().join(", ")
            )
        })?;
    let mut recipe = Sha256::new();
    recipe.update(format!("format {FORMAT_VERSION}\nbase {base}\n"));
    for (path, content, mode) in files {
        recipe.update(format!("{path} {mode:o} {}\n", content.len()));
        recipe.update(content);
    }
    let tag = format!(
        "{REPOSITORY_PREFIX}/{dir}:{}",
        &hex::encode(recipe.finalize())[..16]
    );

    let _held = hold_tag(&tag).await?;
    if image_exists(docker, &tag).await? {
        progress(&format!("image {tag}: up to date"));
        return Ok(tag);
    }
    if !image_exists(docker, base).await? {
        bail!("building {tag}: its base image {base} does not exist; build the base first");
    }
    let started = Instant::now();
    progress(&format!(
        "image {tag}: building containers/{dir}/ on {base}"
    ));
    let context = crate::support::docker::tar_of(files.iter().map(|(p, c, m)| (*p, *c, *m)))?;
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&tag)
        .buildargs(&HashMap::from([("BASE".to_string(), base.to_string())]))
        .rm(true)
        .forcerm(true)
        .build();
    let mut log = String::new();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(s) = info.stream {
                    log.push_str(&s);
                }
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    failure = Some(message);
                }
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    if let Some(message) = failure {
        bail!(
            "building image {tag} from containers/{dir}/Dockerfile failed: {message}\n  \
             build output (last lines):\n{}",
            indent(&tail(&log, 20))
        );
    }
    progress(&format!(
        "image {tag}: built in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(tag)
}

/// The builder: the tools of `dpkg-buildpackage` and lintian plus the
/// project's Build-Depends and `build.extra_packages`.
pub async fn builder_image(
    docker: &Docker,
    config: &Config,
    project: &Path,
    progress: &dyn Fn(&str),
) -> Result<String> {
    let control = project.join("debian/control");
    let text = match std::fs::read_to_string(&control) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} has no debian/ directory (debian/control not found): the dpkg-buildpackage \
             builder needs one; or set build.builder = \"cargo-deb\" in {}",
            project.display(),
            config.path.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", control.display())),
    };
    let build_depends =
        debian::build_depends(&text).with_context(|| format!("reading {}", control.display()))?;
    let sets = [
        PackageSet::new("the builder's own tools", BUILDER_PACKAGES),
        PackageSet::new(
            format!("Build-Depends of {}", control.display()),
            &build_depends,
        ),
        PackageSet::new(
            format!("build.extra_packages in {}", config.path.display()),
            &config.build.extra_packages,
        ),
    ];
    base_image_of(docker, "builder", &config.build.suite, &sets, progress).await
}

/// A base with lintian only, to check packages not built in the builder.
pub async fn lintian_image(
    docker: &Docker,
    config: &Config,
    progress: &dyn Fn(&str),
) -> Result<String> {
    let sets = [PackageSet::new("the lintian checker", &["lintian"])];
    base_image_of(docker, "lintian", &config.build.suite, &sets, progress).await
}

/// The one image of every fleet role: sshd, git, python3, cumin, an apt
/// repository's tools, the built package's Depends (`runtime_depends`, see
/// `debian::deb_depends`) and `fleet.extra_packages`; its command regenerates the
/// ssh host keys and runs sshd in the foreground.
pub async fn fleet_image(
    docker: &Docker,
    config: &Config,
    runtime_depends: &[String],
    progress: &dyn Fn(&str),
) -> Result<String> {
    let sets = [
        PackageSet::new("the fleet's own tools", FLEET_PACKAGES),
        PackageSet::new(
            format!("the Depends of the built {}", config.package_name()),
            runtime_depends,
        ),
        PackageSet::new(
            format!("fleet.extra_packages in {}", config.path.display()),
            &config.fleet.extra_packages,
        ),
    ];
    let base = base_image_of(docker, "fleet-base", &config.build.suite, &sets, progress).await?;
    role_image(docker, "fleet", &base, progress).await
}

/// Every package of `sets`, checked, deduplicated and sorted (the order
/// must not change the hash).
fn checked_relations(sets: &[PackageSet]) -> Result<Vec<String>> {
    let mut all = BTreeSet::new();
    for set in sets {
        for p in &set.packages {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            // Quoted into a shell command below: keep to what relations use.
            if !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " +-.:~()<>=|_".contains(c))
            {
                bail!(
                    "`{p}` (from {}) is not a package name or relation",
                    set.origin
                );
            }
            debian::parse_relations(p).with_context(|| format!("`{p}` from {}", set.origin))?;
            all.insert(p.to_string());
        }
    }
    Ok(all.into_iter().collect())
}

async fn mmdebstrap_version() -> Result<String> {
    let version = process::cmd("mmdebstrap", ["--version"]);
    match tokio::task::spawn_blocking(move || version.read()).await? {
        Ok(v) => Ok(v.trim().to_string()),
        Err(e) if not_found(&e) => bail!("mmdebstrap is not installed: apt-get install mmdebstrap"),
        Err(e) => Err(e),
    }
}

/// Whether running a program failed because it is not installed.
fn not_found(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    })
}

/// Plain names go to `--include`; relations with versions or alternatives
/// are not accepted there, so apt-get satisfy installs them in the chroot.
async fn run_mmdebstrap(
    suite: &str,
    relations: &[String],
    rootfs: &Path,
    sets: &[PackageSet],
    tag: &str,
) -> Result<()> {
    let (plain, complex): (Vec<&String>, Vec<&String>) = relations
        .iter()
        .partition(|r| !r.contains(|c: char| " (|:".contains(c)));
    let log_path = rootfs.with_file_name("mmdebstrap.log");
    let mut args = vec!["--variant=apt".to_string()];
    if !plain.is_empty() {
        args.push(format!(
            "--include={}",
            plain
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if !complex.is_empty() {
        let joined = complex
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        args.push(format!(
            "--customize-hook=chroot \"$1\" apt-get satisfy --yes --no-install-recommends '{joined}'"
        ));
    }
    args.push(suite.to_string());
    args.push(rootfs.display().to_string());
    // Its whole output (mostly stderr) goes to a log: the error below reads
    // its tail.
    let command = process::cmd("mmdebstrap", args).with(|e| e.stdin_null().stderr_to_stdout());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await?
        .context("running mmdebstrap")?;
    std::fs::write(&log_path, &output.stdout)
        .with_context(|| format!("writing {}", log_path.display()))?;
    let status = output.status;
    if status.success() {
        return Ok(());
    }
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let missing = uninstallable_packages(&output);
    let tail = indent(&tail(&output, 15));
    if missing.is_empty() {
        bail!("making image {tag}: mmdebstrap {suite} failed ({status}); its last lines:\n{tail}");
    }
    let named: Vec<String> = missing
        .iter()
        .map(|name| {
            let origins: Vec<&str> = sets
                .iter()
                .filter(|s| s.packages.iter().any(|p| mentions(p, name)))
                .map(|s| s.origin.as_str())
                .collect();
            if origins.is_empty() {
                name.clone()
            } else {
                format!("{name} (from {})", origins.join(" and "))
            }
        })
        .collect();
    bail!(
        "making image {tag}: apt cannot install {} from Debian {suite}.\n  fix: correct the \
         name or version there, or make sure the package exists in {suite} \
         (apt-cache policy NAME)\n  mmdebstrap's last lines:\n{tail}",
        named.join(", ")
    )
}

/// Whether a package string (name or relation) names package `name`.
fn mentions(relation: &str, name: &str) -> bool {
    debian::parse_relations(relation)
        .map(|rels| rels.iter().flatten().any(|a| a.name == name))
        .unwrap_or(false)
}

/// The packages apt's output says it could not find or install.
pub fn uninstallable_packages(apt_output: &str) -> Vec<String> {
    let mut not_found = Vec::new();
    let mut blocked = Vec::new();
    let push = |list: &mut Vec<String>, name: &str| {
        let name = name.trim_matches(|c| c == '\'' || c == '"');
        if !name.is_empty() && !list.iter().any(|n| n == name) {
            list.push(name.to_string());
        }
    };
    for line in apt_output.lines() {
        let line = line.trim();
        let line = line.strip_prefix("E: ").unwrap_or(line);
        if let Some(name) = line.strip_prefix("Unable to locate package ") {
            push(&mut not_found, name.trim());
        } else if let Some(rest) = line.strip_prefix("Package ") {
            if let Some(name) = rest.strip_suffix(" has no installation candidate") {
                push(&mut not_found, name);
            }
        } else if let Some((before, why)) = line.split_once(" but ") {
            // ` satisfy:command-line : Depends: foo (>= 1) but it is not installable or`
            // and the continuation `    bar but it is not installable`.
            let before = before.rsplit_once(": ").map(|(_, b)| b).unwrap_or(before);
            let name = before.split_whitespace().next().unwrap_or("");
            if why.starts_with("it is not installable") || why.starts_with("it is a virtual") {
                push(&mut not_found, name);
            } else {
                push(&mut blocked, name);
            }
        }
    }
    if not_found.is_empty() {
        blocked
    } else {
        not_found
    }
}

/// Streams the rootfs tar into the engine (`docker import`), with a command.
async fn import_rootfs(docker: &Docker, rootfs: &Path, tag: &str) -> Result<()> {
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let file = tokio::fs::File::open(rootfs)
        .await
        .with_context(|| format!("opening {}", rootfs.display()))?;
    let chunks = futures_util::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf.into()), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let options = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(vec![BASE_CMD.to_string()])
        .build();
    let mut stream =
        docker.create_image(Some(options), Some(bollard::body_try_stream(chunks)), None);
    while let Some(item) = stream.next().await {
        item.with_context(|| format!("importing {} as image {tag}", rootfs.display()))?;
    }
    if !image_exists(docker, tag).await? {
        bail!(
            "importing {} as image {tag}: the engine reported success but has no such image",
            rootfs.display()
        );
    }
    Ok(())
}

pub async fn image_exists(docker: &Docker, tag: &str) -> Result<bool> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("looking up image {tag}")),
    }
}

/// Held while an image tag is looked up and, when missing, made: callers
/// building the same tag at once (tasks of this process, and other processes
/// on this machine) wait for the first and then find the image there. Dropped,
/// it lets the next in.
pub struct TagHeld {
    _task: tokio::sync::OwnedMutexGuard<()>,
    /// flock(2) on a file named after the tag, released when closed.
    _process: std::fs::File,
}

/// Waits for `tag`'s lock: first among this process's tasks, then on the
/// tag's lock file in the system's temporary directory (one engine per
/// machine is the common case; a remote engine shared by several machines
/// still gets one image, because tagging an image that exists only moves the
/// tag).
pub async fn hold_tag(tag: &str) -> Result<TagHeld> {
    let task = tag_lock(tag).lock_owned().await;
    let path = tag_lock_path(tag);
    let process = tokio::task::spawn_blocking(move || -> Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            // Made by another user: a read-only handle locks it as well.
            .or_else(|_| std::fs::File::open(&path))
            .with_context(|| format!("opening the image lock {}", path.display()))?;
        // flock(2) (std's File::lock is newer than the supported toolchain);
        // the kernel drops it when the process dies, so a killed run leaves
        // no stale lock.
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    return Err(std::io::Error::from(e))
                        .with_context(|| format!("locking {}", path.display()))
                }
            }
        }
        Ok(file)
    })
    .await??;
    Ok(TagHeld {
        _task: task,
        _process: process,
    })
}

/// The lock file of `tag` (left in place: removing it would race a waiter).
pub fn tag_lock_path(tag: &str) -> PathBuf {
    let name: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    std::env::temp_dir().join(format!("release-harness-image-{name}.lock"))
}

/// One lock per tag among this process's tasks, so a task waits for
/// another of its process without tying up a blocking thread on the file.
fn tag_lock(tag: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(tag.to_string()).or_default().clone()
}

fn hash16(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))[..16].to_string()
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The engine for a test that needs one (see `support::testing`).
#[cfg(test)]
pub(crate) async fn docker_for_tests(test: &str) -> Option<Docker> {
    crate::support::testing::engine(test).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_failures_name_the_packages() {
        let locate = "Building dependency tree...\nE: Unable to locate package no-such-package-xyz\n\
                      E: setup failed: E: apt-get ... install build-essential no-such-package-xyz failed";
        assert_eq!(uninstallable_packages(locate), vec!["no-such-package-xyz"]);
        let satisfy = "\
The following packages have unmet dependencies:
 satisfy:command-line : Depends: no-such-package-xyz (>= 1) but it is not installable or
                                 other-missing-abc but it is not installable
                        Depends: fine-package but it is not going to be installed
E: Unable to correct problems, you have held broken packages.";
        assert_eq!(
            uninstallable_packages(satisfy),
            vec!["no-such-package-xyz", "other-missing-abc"]
        );
        let candidate = "E: Package 'oldpkg' has no installation candidate";
        assert_eq!(uninstallable_packages(candidate), vec!["oldpkg"]);
    }

    #[test]
    fn package_lists_are_checked_and_order_free() {
        let a = checked_relations(&[PackageSet::new("x", &["b", "a (>= 1)"])]).unwrap();
        let b = checked_relations(&[
            PackageSet::new("y", &["a (>= 1)"]),
            PackageSet::new("z", &["b", "b"]),
        ])
        .unwrap();
        assert_eq!(a, b);
        let err =
            checked_relations(&[PackageSet::new("fleet.extra_packages", &["x'; rm"])]).unwrap_err();
        assert!(format!("{err:#}").contains("fleet.extra_packages"));
    }

    #[test]
    fn role_definitions_match_the_containers_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../containers");
        for (dir, files) in ROLES {
            let mut on_disk: Vec<String> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            let mut listed: Vec<String> = files.iter().map(|f| f.0.to_string()).collect();
            listed.sort();
            assert_eq!(on_disk, listed, "containers/{dir}/ and ROLES differ");
            let dockerfile = std::str::from_utf8(files[0].1).unwrap();
            assert!(
                dockerfile.starts_with("ARG BASE\nFROM ${BASE}"),
                "{dockerfile}"
            );
        }
    }
    #[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
    #[tokio::test]
    async fn fleet_image_runs_sshd_with_host_keys_of_its_own() {
        let Some(docker) = docker_for_tests("fleet_image_runs_sshd").await else {
            return;
        };
        let config = Config::parse("", Path::new("release.toml")).unwrap();
        let say = |line: &str| eprintln!("  {line}");
        let image = fleet_image(&docker, &config, &["python3".to_string()], &say)
            .await
            .unwrap();
        let again = fleet_image(&docker, &config, &["python3".to_string()], &say)
            .await
            .unwrap();
        assert_eq!(image, again);

        use crate::support::docker::{ContainerSpec, Containers};
        let run_id = crate::support::docker::new_run_id();
        let network = format!("rh-images-{run_id}");
        let mut containers = Containers::on_network(&docker, &run_id, &network, false)
            .await
            .unwrap();
        let result = async {
            // Container names differ from host names, as in a fleet.
            let specs: Vec<ContainerSpec> = [("a", "deploy1"), ("b", "canary1")]
                .iter()
                .map(|(suffix, hostname)| ContainerSpec {
                    hostname: Some(hostname.to_string()),
                    ready_line: Some("Server listening on"),
                    ..ContainerSpec::idle(format!("rh-images-{run_id}-{suffix}"), &image)
                })
                .collect();
            containers
                .start(&specs, std::time::Duration::from_secs(60))
                .await?;
            let a = format!("rh-images-{run_id}-a");
            let b = format!("rh-images-{run_id}-b");
            let run = |container: String, script: String| {
                let docker = docker.clone();
                async move { crate::support::docker::exec(&docker, &container, None, &script).await }
            };
            // The host name (not only the container name) resolves, and sshd answers there.
            let scan = run(
                b.clone(),
                "for i in $(seq 50); do ssh-keyscan -T 2 -t ed25519 deploy1 2>/dev/null \
                 && exit 0; sleep 0.2; done; exit 1"
                    .into(),
            )
            .await?;
            assert!(
                scan.ok(),
                "sshd on deploy1 does not answer: {}",
                scan.tail(5)
            );
            let resolved = run(b.clone(), "getent hosts deploy1".into()).await?;
            assert!(resolved.ok(), "deploy1 does not resolve: {resolved:?}");
            let key = "cat /etc/ssh/ssh_host_ed25519_key.pub";
            let key_a = run(a.clone(), key.into()).await?.stdout;
            let key_b = run(b.clone(), key.into()).await?.stdout;
            assert!(key_a.starts_with("ssh-ed25519 "), "{key_a}");
            assert_ne!(key_a, key_b, "two containers of one image share a host key");
            let sshd = run(
                a.clone(),
                "sshd -T | grep -i '^passwordauthentication'".into(),
            )
            .await?
            .stdout;
            assert_eq!(sshd.trim(), "passwordauthentication no");
            let tools = run(
                a.clone(),
                "command -v cumin git python3 dpkg-scanpackages sudo curl ip".into(),
            )
            .await?;
            assert!(tools.ok(), "missing tools: {tools:?}");
            anyhow::Ok(())
        }
        .await;
        containers.remove().await;
        result.unwrap();
        assert_eq!(
            crate::support::docker::remove_run(&docker, &run_id)
                .await
                .unwrap(),
            0,
            "the guard left something of run {run_id}"
        );
    }
}
