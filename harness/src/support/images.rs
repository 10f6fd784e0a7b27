//! The images every container of the harness runs. Nothing can be pulled, so
//! each one is made here: a base image (`mmdebstrap` on the host, imported into
//! the engine) and role layers (`containers/<role>/`, built FROM a base). Every
//! tag is a hash of what went into the image, so a warm run builds nothing.
//! Also owns reading package relations (Build-Depends, a .deb's Depends).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Bumped when the way images are made changes, so old tags are not reused.
pub const FORMAT_VERSION: u32 = 1;

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
    let mmdebstrap = mmdebstrap_version().await?;
    let mut recipe = format!("format {FORMAT_VERSION}\n{mmdebstrap}\nsuite {suite}\n");
    for r in &relations {
        recipe.push_str(r);
        recipe.push('\n');
    }
    let tag = format!("{REPOSITORY_PREFIX}/{kind}:{}", hash16(recipe.as_bytes()));

    let lock = tag_lock(&tag);
    let _held = lock.lock().await;
    if image_exists(docker, &tag).await? {
        progress(&format!("image {tag}: up to date"));
        return Ok(tag);
    }
    let started = Instant::now();
    progress(&format!(
        "image {tag}: mmdebstrap {suite} with {} packages",
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

    let lock = tag_lock(&tag);
    let _held = lock.lock().await;
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
        build_depends(&text).with_context(|| format!("reading {}", control.display()))?;
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
/// `deb_depends`) and `fleet.extra_packages`; its command regenerates the
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

/// Depends and Pre-Depends of a .deb, as package names (alternatives kept as
/// `a | b`, versions and arch qualifiers dropped): what an image needs so the
/// package installs without a network.
pub fn deb_depends(deb: &Path) -> Result<Vec<String>> {
    let out = std::process::Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .args(["Pre-Depends", "Depends"])
        .output()
        .with_context(|| {
            format!(
                "running dpkg-deb on {} (install dpkg-dev: apt-get install dpkg-dev)",
                deb.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "dpkg-deb -f {} failed: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // One field per line: `Depends: a, b` (continuations are indented).
    let text = String::from_utf8_lossy(&out.stdout);
    let mut names = Vec::new();
    for (_, value) in control_fields(&text) {
        for relation in parse_relations(&value)
            .with_context(|| format!("reading the Depends of {}", deb.display()))?
        {
            let alternatives: Vec<&str> = relation.iter().map(|a| a.name.as_str()).collect();
            let joined = alternatives.join(" | ");
            if !names.contains(&joined) {
                names.push(joined);
            }
        }
    }
    Ok(names)
}

/// Build-Depends, Build-Depends-Arch and Build-Depends-Indep of a
/// debian/control's source paragraph, as the relations that apply to a plain
/// build on this architecture (arch and profile restrictions evaluated and
/// dropped), each as apt reads it: `debhelper-compat (= 13)`, `a | b`.
pub fn build_depends(control: &str) -> Result<Vec<String>> {
    let source_paragraph = control
        .split("\n\n")
        .find(|p| {
            p.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .unwrap_or("");
    let arch = host_architecture();
    let mut out = Vec::new();
    for (name, value) in control_fields(source_paragraph) {
        if !["build-depends", "build-depends-arch", "build-depends-indep"]
            .contains(&name.to_ascii_lowercase().as_str())
        {
            continue;
        }
        for relation in parse_relations(&value).with_context(|| format!("field {name}"))? {
            let applying: Vec<String> = relation
                .iter()
                .filter(|a| a.applies_to(&arch))
                .map(|a| a.to_string())
                .collect();
            if !applying.is_empty() {
                let joined = applying.join(" | ");
                if !out.contains(&joined) {
                    out.push(joined);
                }
            }
        }
    }
    Ok(out)
}

/// One alternative of a package relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub name: String,
    /// `any` or `native` of `name:any`.
    pub arch_qualifier: Option<String>,
    /// (`>=`, `1.2`)
    pub version: Option<(String, String)>,
    /// `[amd64 !i386]`
    pub architectures: Vec<String>,
    /// `<!nocheck> <cross>`: the outer list is "or", each inner one "and".
    pub profiles: Vec<Vec<String>>,
}

impl Alternative {
    /// Whether this alternative is part of a plain build (no build profile)
    /// on `arch`.
    pub fn applies_to(&self, arch: &str) -> bool {
        let arch_ok = if self.architectures.is_empty() {
            true
        } else if self.architectures.iter().all(|a| a.starts_with('!')) {
            !self
                .architectures
                .iter()
                .any(|a| arch_matches(&a[1..], arch))
        } else {
            self.architectures.iter().any(|a| arch_matches(a, arch))
        };
        let profiles_ok = self.profiles.is_empty()
            || self
                .profiles
                .iter()
                .any(|terms| terms.iter().all(|t| t.starts_with('!')));
        arch_ok && profiles_ok
    }
}

impl std::fmt::Display for Alternative {
    /// As apt reads it, without the restrictions already evaluated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, version)) = &self.version {
            write!(f, " ({op} {version})")?;
        }
        Ok(())
    }
}

/// Parses a relation field (`a (>= 1) [amd64] <!nocheck> | b, c:any`) into
/// relations, each a list of alternatives.
pub fn parse_relations(field: &str) -> Result<Vec<Vec<Alternative>>> {
    let mut relations = Vec::new();
    for relation in field.split(',') {
        if relation.trim().is_empty() {
            continue;
        }
        let mut alternatives = Vec::new();
        for alternative in relation.split('|') {
            alternatives.push(parse_alternative(alternative.trim()).with_context(|| {
                format!("cannot read the package relation `{}`", relation.trim())
            })?);
        }
        relations.push(alternatives);
    }
    Ok(relations)
}

fn parse_alternative(text: &str) -> Result<Alternative> {
    let name_end = text
        .find(|c: char| c.is_whitespace() || "([<".contains(c))
        .unwrap_or(text.len());
    let (full_name, mut rest) = text.split_at(name_end);
    let (name, arch_qualifier) = match full_name.split_once(':') {
        Some((n, q)) => (n, Some(q.to_string())),
        None => (full_name, None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
    {
        bail!("`{full_name}` is not a package name");
    }
    let mut alt = Alternative {
        name: name.to_string(),
        arch_qualifier,
        version: None,
        architectures: Vec::new(),
        profiles: Vec::new(),
    };
    loop {
        rest = rest.trim_start();
        let Some(open) = rest.chars().next() else {
            break;
        };
        let close = match open {
            '(' => ')',
            '[' => ']',
            '<' => '>',
            other => bail!("unexpected `{other}` after {name}"),
        };
        let end = rest
            .find(close)
            .with_context(|| format!("`{open}` without `{close}`"))?;
        let inner = rest[1..end].trim();
        rest = &rest[end + 1..];
        match open {
            '(' => {
                let op_end = inner
                    .find(|c: char| !"<>=".contains(c))
                    .unwrap_or(inner.len());
                let (op, version) = inner.split_at(op_end);
                let version = version.trim();
                if !["<<", "<=", "=", ">=", ">>"].contains(&op) || version.is_empty() {
                    bail!("`({inner})` is not a version constraint like `(>= 1.0)`");
                }
                alt.version = Some((op.to_string(), version.to_string()));
            }
            '[' => alt
                .architectures
                .extend(inner.split_whitespace().map(str::to_string)),
            _ => alt
                .profiles
                .push(inner.split_whitespace().map(str::to_string).collect()),
        }
    }
    Ok(alt)
}

/// `amd64` matches `amd64`, `any`, `linux-any`, `any-amd64`, `linux-amd64`.
fn arch_matches(pattern: &str, arch: &str) -> bool {
    pattern == arch
        || pattern == "any"
        || pattern == "linux-any"
        || pattern == format!("any-{arch}")
        || pattern == format!("linux-{arch}")
}

/// The Debian architecture images are made for: the host's.
fn host_architecture() -> String {
    static ARCH: OnceLock<String> = OnceLock::new();
    ARCH.get_or_init(|| {
        std::process::Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| match std::env::consts::ARCH {
                "x86_64" => "amd64".into(),
                "aarch64" => "arm64".into(),
                other => other.into(),
            })
    })
    .clone()
}

/// Fields of one deb822 paragraph, continuation lines joined.
fn control_fields(paragraph: &str) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in paragraph.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    fields
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
            parse_relations(p).with_context(|| format!("`{p}` from {}", set.origin))?;
            all.insert(p.to_string());
        }
    }
    Ok(all.into_iter().collect())
}

async fn mmdebstrap_version() -> Result<String> {
    let out = tokio::process::Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(o) => bail!(
            "mmdebstrap --version failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mmdebstrap is not installed: apt-get install mmdebstrap")
        }
        Err(e) => Err(e).context("running mmdebstrap"),
    }
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
    let log = std::fs::File::create(&log_path)?;
    let mut command = tokio::process::Command::new("mmdebstrap");
    command.arg("--variant=apt");
    if !plain.is_empty() {
        command.arg(format!(
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
        command.arg(format!(
            "--customize-hook=chroot \"$1\" apt-get satisfy --yes --no-install-recommends '{joined}'"
        ));
    }
    command
        .arg(suite)
        .arg(rootfs)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    let status = command.status().await.context("running mmdebstrap")?;
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
    parse_relations(relation)
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

/// One lock per tag, so callers in this process building the same image at
/// once wait for the first instead of building it twice.
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

/// The engine for a test that needs one: panics with what to do when it is
/// unreachable, or returns None (after saying so) when
/// RELEASE_HARNESS_SKIP_DOCKER=1 asks to skip.
#[cfg(test)]
pub(crate) async fn docker_for_tests(test: &str) -> Option<Docker> {
    if std::env::var("RELEASE_HARNESS_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("skipped {test}: RELEASE_HARNESS_SKIP_DOCKER=1");
        return None;
    }
    match crate::support::docker::connect().await {
        Ok(d) => Some(d),
        Err(e) => panic!("{test} needs a Docker engine: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_depends_reads_continuations_versions_alternatives_and_restrictions() {
        let control = "\
Source: minideploy
Section: admin
Build-Depends: debhelper-compat (= 13),
               dh-python,
# a comment inside the field
               python3-all:any (>= 3.9~) | python3:native,
               python3-pytest <!nocheck>,
               only-with-profile <pkg.foo>,
               libfoo-dev [amd64 arm64] | libbar-dev,
               never-here [!amd64 !arm64 !i386 !armhf !ppc64el !s390x !riscv64 !mips64el !armel],
Build-Depends-Indep: python3-sphinx,
 dh-python
Standards-Version: 4.6.2

Package: minideploy
Depends: ${misc:Depends}, not-a-build-dep
";
        let deps = build_depends(control).unwrap();
        let arch = host_architecture();
        let libfoo = if arch == "amd64" || arch == "arm64" {
            "libfoo-dev | libbar-dev"
        } else {
            "libbar-dev"
        };
        assert_eq!(
            deps,
            vec![
                "debhelper-compat (= 13)",
                "dh-python",
                "python3-all:any (>= 3.9~) | python3:native",
                "python3-pytest",
                libfoo,
                "python3-sphinx",
            ]
        );
    }

    #[test]
    fn relation_parser_keeps_every_part() {
        let rels = parse_relations("a (>= 1:2.0-1) [linux-any] <!nocheck !cross> <stage1>, b:any")
            .unwrap();
        assert_eq!(rels.len(), 2);
        let a = &rels[0][0];
        assert_eq!(a.name, "a");
        assert_eq!(a.version, Some((">=".into(), "1:2.0-1".into())));
        assert_eq!(a.architectures, vec!["linux-any"]);
        assert_eq!(a.profiles, vec![vec!["!nocheck", "!cross"], vec!["stage1"]]);
        assert!(a.applies_to("amd64"));
        assert_eq!(rels[1][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(rels[1][0].to_string(), "b:any");
    }

    #[test]
    fn relation_parser_rejects_garbage() {
        for bad in ["Foo", "a (>= )", "a (~ 1)", "a [amd64", "a b"] {
            let err = parse_relations(bad).unwrap_err();
            assert!(format!("{err:#}").contains(bad.trim()), "{bad}: {err:#}");
        }
    }

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
    #[test]
    fn deb_depends_reads_names_of_a_built_package() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pkg");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: rh-deps\nVersion: 1.0\nArchitecture: all\n\
             Maintainer: T <t@example.org>\nPre-Depends: dpkg (>= 1.19)\n\
             Depends: python3:any (>= 3.9), git | git-core, python3\n\
             Description: test\n dependencies only\n",
        )
        .unwrap();
        let deb = dir.path().join("rh-deps_1.0_all.deb");
        let built = std::process::Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb)
            .output()
            .unwrap();
        assert!(built.status.success(), "{built:?}");
        assert_eq!(
            deb_depends(&deb).unwrap(),
            vec!["dpkg", "python3", "git | git-core"]
        );
        let err = deb_depends(&dir.path().join("missing.deb")).unwrap_err();
        assert!(format!("{err:#}").contains("missing.deb"), "{err:#}");
    }

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

        let run_id = crate::support::docker::new_run_id();
        let network = format!("rh-images-{run_id}");
        crate::support::docker::create_network(&docker, &network, &run_id)
            .await
            .unwrap();
        let result = async {
            // Container names differ from host names, as in a fleet.
            for (suffix, hostname) in [("a", "deploy1"), ("b", "canary1")] {
                let name = format!("rh-images-{run_id}-{suffix}");
                docker
                    .create_container(
                        Some(
                            bollard::query_parameters::CreateContainerOptionsBuilder::default()
                                .name(&name)
                                .build(),
                        ),
                        bollard::models::ContainerCreateBody {
                            image: Some(image.clone()),
                            hostname: Some(hostname.into()),
                            labels: Some(crate::support::docker::run_labels(&run_id)),
                            host_config: Some(bollard::models::HostConfig {
                                network_mode: Some(network.clone()),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    )
                    .await?;
                docker.start_container(&name, None).await?;
            }
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
        crate::support::docker::remove_run(&docker, &run_id)
            .await
            .unwrap();
        result.unwrap();
    }
}
