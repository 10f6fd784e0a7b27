//! The images every container of the harness runs. Nothing can be pulled, so
//! each one is made here, in one layer: `mmdebstrap` on the host makes the
//! rootfs (packages, then a role's files of `containers/<role>/`), imported
//! into the engine with the role's command. Every tag is a hash of what went
//! into the image, so a warm run builds nothing. Each image records the
//! packages installed in it (a label), so a caller can check relations
//! against it without starting a container. The packages asked for are Debian
//! package relations, read by `support::debian`.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
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
/// 3: the fleet image is one mmdebstrap layer with its role's files (no
/// `docker build` on a fleet-base), and every image carries the label of its
/// installed packages; dpkg leaves documentation out (`DPKG_PATH_EXCLUDES`).
pub const FORMAT_VERSION: u32 = 3;

/// Every image the harness makes is named `release-harness/<kind>`.
pub const REPOSITORY_PREFIX: &str = "release-harness";

/// Imported images have no command; this keeps a container alive for `exec`.
const BASE_CMD: &str = r#"CMD ["sleep", "infinity"]"#;

/// What dpkg leaves out of every image's packages: documentation (the
/// copyright files kept), manual and info pages, translations. Nothing of the
/// harness reads them; leaving them out cuts a fifth of mmdebstrap's time and
/// a quarter of the rootfs the engine imports. Only while the image is made:
/// packages installed in its containers later (the released ones) are whole.
const DPKG_PATH_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
];

/// The image label listing its installed packages (see `installed_label`).
const INSTALLED_LABEL: &str = "release-harness.installed";

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

/// One file of a role: its name in `containers/<dir>/` (compiled in, so the
/// packaged binary needs no source tree), where it goes in the image, and
/// its mode there.
struct RoleFile {
    name: &'static str,
    content: &'static [u8],
    path: &'static str,
    mode: u32,
}

/// What an image of a role adds to its packages, in the same layer.
struct Role {
    dir: &'static str,
    files: &'static [RoleFile],
    /// Shell run on the finished rootfs (`$1`) after the files are placed.
    customize: &'static str,
    /// The image's config, as `docker import --change` takes it.
    changes: &'static [&'static str],
}

/// sshd in the foreground, with the harness's sshd settings.
const FLEET_ROLE: Role = Role {
    dir: "fleet",
    files: &[
        RoleFile {
            name: "entrypoint.sh",
            content: include_bytes!("../../../containers/fleet/entrypoint.sh"),
            path: "/usr/local/sbin/fleet-entrypoint",
            mode: 0o755,
        },
        RoleFile {
            name: "dpkg.cfg",
            content: include_bytes!("../../../containers/fleet/dpkg.cfg"),
            path: "/etc/dpkg/dpkg.cfg.d/release-harness",
            mode: 0o644,
        },
        RoleFile {
            name: "apt.conf",
            content: include_bytes!("../../../containers/fleet/apt.conf"),
            path: "/etc/apt/apt.conf.d/70release-harness",
            mode: 0o644,
        },
        RoleFile {
            name: "sshd.conf",
            content: include_bytes!("../../../containers/fleet/sshd.conf"),
            path: "/etc/ssh/sshd_config.d/release-harness.conf",
            mode: 0o644,
        },
    ],
    // The host keys openssh-server's install made would be shared by every
    // container of this image: drop them; the entrypoint makes new ones at
    // start.
    customize: r#"rm -f "$1"/etc/ssh/ssh_host_*"#,
    changes: &["EXPOSE 22", r#"CMD ["/usr/local/sbin/fleet-entrypoint"]"#],
};

/// Every role, for the check against `containers/`.
#[cfg(test)]
const ROLES: &[&Role] = &[&FLEET_ROLE];

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
    image_of(docker, "base", suite, &sets, None, progress).await
}

/// `mmdebstrap --variant=apt` of `suite` with the packages of `sets` and
/// `role`'s files, imported as `release-harness/<kind>:<hash>` with the
/// role's command (without a role, one that idles). Returns at once when that
/// tag exists.
async fn image_of(
    docker: &Docker,
    kind: &str,
    suite: &str,
    sets: &[PackageSet],
    role: Option<&Role>,
    progress: &dyn Fn(&str),
) -> Result<String> {
    let relations = checked_relations(sets)?;
    // What goes into the image, not the tool that made it: a host without
    // mmdebstrap finds the images another host made on the engine.
    let mut recipe = format!("format {FORMAT_VERSION}\nsuite {suite}\n").into_bytes();
    for r in &relations {
        recipe.extend_from_slice(r.as_bytes());
        recipe.push(b'\n');
    }
    if let Some(role) = role {
        for file in role.files {
            let line = format!("{} {:o} {}\n", file.path, file.mode, file.content.len());
            recipe.extend_from_slice(line.as_bytes());
            recipe.extend_from_slice(file.content);
        }
        let line = format!("{}\n{}\n", role.customize, role.changes.join("\n"));
        recipe.extend_from_slice(line.as_bytes());
    }
    let tag = format!("{REPOSITORY_PREFIX}/{kind}:{}", hash16(&recipe));

    let _held = hold_tag(&tag).await?;
    if image_exists(docker, &tag).await? {
        progress(&format!("image {tag}: up to date"));
        return Ok(tag);
    }
    crate::support::host::ensure_for_images(progress)?;
    let mmdebstrap = mmdebstrap_version().await?;
    let started = Instant::now();
    let role_files = role
        .map(|r| format!(" and containers/{}/", r.dir))
        .unwrap_or_default();
    progress(&format!(
        "image {tag}: {mmdebstrap} {suite} with {} packages{role_files}",
        relations.len()
    ));
    let dir = tempfile::tempdir().context("making a temporary directory for mmdebstrap")?;
    let rootfs = dir.path().join("rootfs.tar");
    let status = run_mmdebstrap(suite, &relations, &rootfs, sets, role, &tag).await?;
    let built = started.elapsed();
    let mut changes: Vec<String> = match role {
        Some(role) => role.changes.iter().map(|c| c.to_string()).collect(),
        None => vec![BASE_CMD.to_string()],
    };
    changes.push(format!(
        "LABEL {INSTALLED_LABEL}=\"{}\"",
        installed_label(&debian::installed_packages(&status))
    ));
    import_rootfs(docker, &rootfs, &tag, changes).await?;
    progress(&format!(
        "image {tag}: built in {:.1}s (mmdebstrap {:.1}s, import {:.1}s)",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        (started.elapsed() - built).as_secs_f64()
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
    image_of(
        docker,
        "builder",
        &config.build.suite,
        &sets,
        None,
        progress,
    )
    .await
}

/// A base with lintian only, to check packages not built in the builder.
pub async fn lintian_image(
    docker: &Docker,
    config: &Config,
    progress: &dyn Fn(&str),
) -> Result<String> {
    let sets = [PackageSet::new("the lintian checker", &["lintian"])];
    image_of(
        docker,
        "lintian",
        &config.build.suite,
        &sets,
        None,
        progress,
    )
    .await
}

/// The one image of every fleet role: sshd, git, python3, cumin, an apt
/// repository's tools, the package's Depends (`runtime_depends`: those
/// debian/control declares, see `debian::declared_depends`, or those of the
/// built .debs, see `debian::deb_depends`) and `fleet.extra_packages`; its
/// command makes an ssh host key and runs sshd in the foreground.
pub async fn fleet_image(
    docker: &Docker,
    config: &Config,
    runtime_depends: &[String],
    progress: &dyn Fn(&str),
) -> Result<String> {
    let sets = [
        PackageSet::new("the fleet's own tools", FLEET_PACKAGES),
        PackageSet::new(
            format!("the Depends of {}", config.package_name()),
            runtime_depends,
        ),
        PackageSet::new(
            format!("fleet.extra_packages in {}", config.path.display()),
            &config.fleet.extra_packages,
        ),
    ];
    image_of(
        docker,
        "fleet",
        &config.build.suite,
        &sets,
        Some(&FLEET_ROLE),
        progress,
    )
    .await
}

/// `image`, the fleet image `fleet_image` made from `declared` (the Depends
/// debian/control declares) before the build, when its packages satisfy the
/// Depends of the built `debs`; otherwise, said in one progress line, the
/// fleet image with those Depends added.
pub async fn fleet_image_satisfying(
    docker: &Docker,
    config: &Config,
    image: &str,
    declared: &[String],
    debs: &[&Path],
    progress: &dyn Fn(&str),
) -> Result<String> {
    // The release's own binaries come from the .debs, not the image.
    let own: Vec<&str> = debs
        .iter()
        .filter_map(|d| d.file_name()?.to_str())
        .filter_map(debian::package_of_deb_file)
        .collect();
    let mut relations = Vec::new();
    let mut depends = declared.to_vec();
    for deb in debs {
        relations.extend(
            debian::deb_relations(deb)?
                .into_iter()
                .filter(|r| !r.iter().any(|a| own.contains(&a.name.as_str()))),
        );
        depends.extend(
            debian::deb_depends(deb)?
                .into_iter()
                .filter(|r| !r.split(" | ").any(|name| own.contains(&name))),
        );
    }
    let unmet = debian::unmet_relations(&installed_packages(docker, image).await?, &relations);
    if unmet.is_empty() {
        return Ok(image.to_string());
    }
    progress(&format!(
        "image {image} lacks {} (Depends of the built packages, unknown before the build): \
         making a fleet image with them",
        unmet.join(", ")
    ));
    depends.sort();
    depends.dedup();
    fleet_image(docker, config, &depends, progress).await
}

/// The packages installed in `image` (made here: its label records them).
pub async fn installed_packages(
    docker: &Docker,
    image: &str,
) -> Result<Vec<debian::InstalledPackage>> {
    let inspected = docker
        .inspect_image(image)
        .await
        .with_context(|| format!("looking up image {image}"))?;
    let label = inspected
        .config
        .and_then(|c| c.labels)
        .and_then(|labels| labels.get(INSTALLED_LABEL).cloned())
        .with_context(|| {
            format!(
                "image {image} has no label {INSTALLED_LABEL}: it was not made by this \
                 harness; remove it (docker rmi {image}) and it is made again"
            )
        })?;
    Ok(parse_installed_label(&label))
}

/// `name=version[=provides]` of each package, `;` between them: what a
/// Dockerfile label holds between double quotes (no quote or backslash
/// appears in a Debian name, version or Provides).
fn installed_label(packages: &[debian::InstalledPackage]) -> String {
    let mut label = String::new();
    for p in packages {
        if !label.is_empty() {
            label.push(';');
        }
        let _ = write!(label, "{}={}", p.name, p.version);
        if !p.provides.is_empty() {
            let _ = write!(label, "={}", p.provides);
        }
    }
    label
}

fn parse_installed_label(label: &str) -> Vec<debian::InstalledPackage> {
    label
        .split(';')
        .filter_map(|entry| {
            let mut parts = entry.splitn(3, '=');
            Some(debian::InstalledPackage {
                name: parts.next()?.to_string(),
                version: parts.next()?.to_string(),
                provides: parts.next().unwrap_or("").to_string(),
            })
        })
        .collect()
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
/// Then `role`'s files and commands. Returns the rootfs's dpkg status file.
async fn run_mmdebstrap(
    suite: &str,
    relations: &[String],
    rootfs: &Path,
    sets: &[PackageSet],
    role: Option<&Role>,
    tag: &str,
) -> Result<String> {
    let (plain, complex): (Vec<&String>, Vec<&String>) = relations
        .iter()
        .partition(|r| !r.contains(|c: char| " (|:".contains(c)));
    let log_path = rootfs.with_file_name("mmdebstrap.log");
    let mut args = vec!["--variant=apt".to_string()];
    args.extend(DPKG_PATH_EXCLUDES.iter().map(|o| format!("--dpkgopt={o}")));
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
    let work = rootfs.parent().unwrap_or(Path::new("."));
    if let Some(role) = role {
        for file in role.files {
            let local = work.join(file.name);
            std::fs::write(&local, file.content)
                .with_context(|| format!("writing {}", local.display()))?;
            args.push(format!(
                "--customize-hook=install -D -m {:o} {} \"$1\"{}",
                file.mode,
                quoted(&local)?,
                file.path
            ));
        }
        args.push(format!("--customize-hook={}", role.customize));
    }
    // Where mmdebstrap wrote the --dpkgopt options.
    args.push(r#"--customize-hook=rm -f "$1"/etc/dpkg/dpkg.cfg.d/99mmdebstrap"#.to_string());
    let status = work.join("dpkg-status");
    args.push(format!(
        "--customize-hook=cp \"$1\"/var/lib/dpkg/status {}",
        quoted(&status)?
    ));
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
    if output.status.success() {
        return std::fs::read_to_string(&status).with_context(|| {
            format!(
                "reading the dpkg status mmdebstrap left in {}",
                status.display()
            )
        });
    }
    let status = output.status;
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

/// `path` quoted for a hook's shell.
fn quoted(path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(shlex::try_quote(text)
        .with_context(|| format!("{} cannot be quoted for a shell", path.display()))?
        .into_owned())
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

/// Streams the rootfs tar into the engine (`docker import`), with `changes`
/// (Dockerfile instructions: its command, labels).
async fn import_rootfs(
    docker: &Docker,
    rootfs: &Path,
    tag: &str,
    changes: Vec<String>,
) -> Result<()> {
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
        .changes(changes)
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
        for role in ROLES {
            let mut on_disk: Vec<String> = std::fs::read_dir(root.join(role.dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            on_disk.sort();
            let mut listed: Vec<String> = role.files.iter().map(|f| f.name.to_string()).collect();
            listed.sort();
            assert_eq!(
                on_disk, listed,
                "containers/{}/ and its Role differ",
                role.dir
            );
            for file in role.files {
                assert!(file.path.starts_with('/'), "{}", file.path);
            }
        }
    }

    #[test]
    fn the_installed_label_reads_back() {
        let packages = debian::installed_packages(
            "Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1+b1\n\
             Provides: python3-profiler, python3-api (= 3.11)\n\n\
             Package: git\nStatus: install ok installed\nVersion: 1:2.39.5-0+deb12u2\n",
        );
        assert_eq!(packages.len(), 2);
        let label = installed_label(&packages);
        assert!(!label.contains(['"', '\\', '\n']), "{label}");
        assert_eq!(parse_installed_label(&label), packages);
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
        // Its label names what is installed: built Depends it meets keep it.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: rh-met\nVersion: 1.0\nArchitecture: all\nMaintainer: T <t@example.org>\n\
             Depends: git, python3:any (>= 3.9), dropbear | openssh-server, rh-met-data\n\
             Description: test\n Depends met by the fleet image\n",
        )
        .unwrap();
        let deb = dir.path().join("rh-met_1.0_all.deb");
        debian::build_deb(&root, &deb).unwrap();
        let data = dir.path().join("rh-met-data_1.0_all.deb");
        std::fs::copy(&deb, &data).unwrap();
        let kept = fleet_image_satisfying(&docker, &config, &image, &[], &[&deb, &data], &say)
            .await
            .unwrap();
        assert_eq!(kept, image);
        let installed = installed_packages(&docker, &image).await.unwrap();
        assert!(installed.iter().any(|p| p.name == "openssh-server"));

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
