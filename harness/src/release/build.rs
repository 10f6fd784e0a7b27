//! The .deb builders: `dpkg-buildpackage -us -uc -b` in a clean builder
//! container, or `cargo deb` on the host for projects written in Rust. Both end
//! the same way: lintian (errors fail the build), the artifacts and their
//! `SHA256SUMS` in the output directory, and the build log beside them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::config::{Builder, Config};
use crate::support::debian::{self, BuiltDeb};
use crate::support::docker::{self, ContainerSpec, Containers};
use crate::support::images::{self, indent, tail};
use crate::support::process;

/// Where the project goes in the builder; dpkg-buildpackage writes the
/// packages into the parent, `/build`.
const BUILD_ROOT: &str = "/build";
/// Where the artifacts are gathered in a container before download.
const OUT_DIR: &str = "/out";
const SUMS_FILE: &str = "SHA256SUMS";
const LOG_FILE: &str = "build.log";
/// The builder and lintian containers idle on their image's command: there
/// is no line to wait for.
const NO_READY_LINE: Duration = Duration::ZERO;

#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// Every binary package the source built, by package name.
    pub debs: Vec<BuiltDeb>,
    pub changes: Option<PathBuf>,
    pub buildinfo: Option<PathBuf>,
    /// (file name, hex sha256) of every artifact, as written to `SHA256SUMS`.
    pub sha256: Vec<(String, String)>,
    pub log: PathBuf,
    pub lintian_warnings: Vec<String>,
    pub lintian_errors: Vec<String>,
}

impl BuildOutput {
    /// The .deb files.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.debs.iter().map(|d| d.path.clone()).collect()
    }

    /// The file names, for one line of progress or summary.
    pub fn names(&self) -> String {
        self.debs
            .iter()
            .map(BuiltDeb::file_name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Builds the project's .deb into `out_dir` with `build.builder`.
pub async fn build(
    docker: &Docker,
    config: &Config,
    project: &Path,
    out_dir: &Path,
    progress: &dyn Fn(&str),
) -> Result<BuildOutput> {
    build_in_run(
        docker,
        config,
        project,
        out_dir,
        &docker::new_run_id(),
        progress,
    )
    .await
}

/// `build`, with the containers labelled with the caller's run id.
pub async fn build_in_run(
    docker: &Docker,
    config: &Config,
    project: &Path,
    out_dir: &Path,
    run_id: &str,
    progress: &dyn Fn(&str),
) -> Result<BuildOutput> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating the output directory {}", out_dir.display()))?;
    let started = Instant::now();
    let output = match config.build.builder {
        Builder::DpkgBuildpackage => {
            dpkg_buildpackage(docker, config, project, out_dir, run_id, progress).await?
        }
        Builder::CargoDeb => cargo_deb(docker, config, project, out_dir, run_id, progress).await?,
    };
    progress(&format!(
        "built {} in {:.1}s",
        output.names(),
        started.elapsed().as_secs_f64()
    ));
    Ok(output)
}

async fn dpkg_buildpackage(
    docker: &Docker,
    config: &Config,
    project: &Path,
    out_dir: &Path,
    run_id: &str,
    progress: &dyn Fn(&str),
) -> Result<BuildOutput> {
    let image = images::builder_image(docker, config, project, progress).await?;
    let source = crate::support::debian::source_package_name(project)?;
    // Two builds of one run (the new release and the previous one) at once.
    let container = format!("rh-build-{run_id}-{}", docker::new_run_id());
    let mut builder = Containers::new(docker, run_id);
    builder
        .start(&[ContainerSpec::idle(&container, image)], NO_READY_LINE)
        .await?;
    let result = build_in_container(
        docker, config, project, out_dir, &container, &source, progress,
    )
    .await;
    builder.remove().await;
    result
}

async fn build_in_container(
    docker: &Docker,
    config: &Config,
    project: &Path,
    out_dir: &Path,
    container: &str,
    source: &str,
    progress: &dyn Fn(&str),
) -> Result<BuildOutput> {
    let tree = project_tar(project, &format!("{}/{source}", &BUILD_ROOT[1..]))?;
    docker::upload_tar(docker, container, tree)
        .await
        .with_context(|| format!("copying {} into container {container}", project.display()))?;

    let timeout = config.build.timeout_secs;
    progress(&format!(
        "dpkg-buildpackage -us -uc -b in {container} (up to {timeout}s)"
    ));
    let started = Instant::now();
    let run = docker::exec(
        docker,
        container,
        None,
        &format!(
            "cd {BUILD_ROOT}/{source} && exec timeout {timeout} dpkg-buildpackage -us -uc -b 2>&1"
        ),
    )
    .await?;
    let log = out_dir.join(LOG_FILE);
    std::fs::write(&log, format!("{}{}", run.stdout, run.stderr))
        .with_context(|| format!("writing {}", log.display()))?;
    if !run.ok() {
        let why = if run.code == 124 {
            format!(
                "timed out after {timeout}s (build.timeout_secs in {})",
                config.path.display()
            )
        } else {
            format!("exited with {}", run.code)
        };
        bail!(
            "dpkg-buildpackage of {} {why}; the last lines of its log:\n{}\n  full log: {}",
            project.display(),
            indent(&tail(&run.stdout, 25)),
            log.display()
        );
    }
    progress(&format!(
        "dpkg-buildpackage done in {:.1}s",
        started.elapsed().as_secs_f64()
    ));

    let gathered = docker::exec(
        docker,
        container,
        None,
        &format!(
            "mkdir -p {OUT_DIR} && find {BUILD_ROOT} -maxdepth 1 -type f \\( -name '*.deb' \
             -o -name '*.changes' -o -name '*.buildinfo' \\) -exec cp {{}} {OUT_DIR}/ \\; \
             && ls {OUT_DIR}"
        ),
    )
    .await?;
    if !gathered.ok() || !gathered.stdout.contains(".deb") {
        bail!(
            "dpkg-buildpackage of {} succeeded but left no .deb in {BUILD_ROOT}: {}\n  full \
             log: {}",
            project.display(),
            gathered.tail(5),
            log.display()
        );
    }
    let files = download_dir(docker, container, OUT_DIR, out_dir).await?;
    let (lintian_warnings, lintian_errors) = if config.build.lintian {
        let target = if files.iter().any(|f| has_ext(f, "changes")) {
            "*.changes"
        } else {
            "*.deb"
        };
        run_lintian(docker, config, container, target, progress).await?
    } else {
        (Vec::new(), Vec::new())
    };
    finish(
        config,
        out_dir,
        files,
        log,
        lintian_warnings,
        lintian_errors,
    )
}

async fn cargo_deb(
    docker: &Docker,
    config: &Config,
    project: &Path,
    out_dir: &Path,
    run_id: &str,
    progress: &dyn Fn(&str),
) -> Result<BuildOutput> {
    let installed = process::cmd("cargo", ["deb", "--version"])
        .with(|e| e.dir(project))
        .output();
    match installed {
        Ok(o) if o.status.success() => {}
        Ok(_) => bail!("cargo-deb is not installed: cargo install cargo-deb"),
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
            }) =>
        {
            bail!("cargo is not installed, so cargo-deb cannot run: install a Rust toolchain, then cargo install cargo-deb")
        }
        Err(e) => return Err(e),
    }
    let out_abs = std::path::absolute(out_dir)?;
    let timeout = config.build.timeout_secs;
    progress(&format!(
        "cargo deb in {} (up to {timeout}s)",
        project.display()
    ));
    let started = Instant::now();
    let command = process::cmd(
        "cargo",
        [
            std::ffi::OsStr::new("deb"),
            "--output".as_ref(),
            out_abs.as_os_str(),
        ],
    )
    .with(|e| e.dir(project).stdin_null());
    let out =
        tokio::task::spawn_blocking(move || command.output_within(Duration::from_secs(timeout)))
            .await
            .context("waiting for cargo deb")??
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "cargo deb in {} timed out after {timeout}s (build.timeout_secs in {})",
                    project.display(),
                    config.path.display()
                )
            })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = out_dir.join(LOG_FILE);
    std::fs::write(&log, format!("{stderr}{stdout}"))
        .with_context(|| format!("writing {}", log.display()))?;
    if !out.status.success() {
        bail!(
            "cargo deb in {} failed ({}); the last lines of its log:\n{}\n  full log: {}",
            project.display(),
            out.status,
            indent(&tail(&format!("{stderr}{stdout}"), 25)),
            log.display()
        );
    }
    // cargo deb prints the path of the package it wrote last.
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| {
            format!(
                "cargo deb succeeded but did not print the .deb it made; see {}",
                log.display()
            )
        })?;
    let deb = if deb.is_absolute() {
        deb
    } else {
        project.join(deb)
    };
    progress(&format!(
        "cargo deb done in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    let (warnings, errors) = if config.build.lintian {
        lintian_deb(docker, config, &deb, run_id, progress).await?
    } else {
        (Vec::new(), Vec::new())
    };
    finish(config, out_dir, vec![deb], log, warnings, errors)
}

/// lintian on a .deb made outside the builder, in a lintian-only container.
async fn lintian_deb(
    docker: &Docker,
    config: &Config,
    deb: &Path,
    run_id: &str,
    progress: &dyn Fn(&str),
) -> Result<(Vec<String>, Vec<String>)> {
    let image = images::lintian_image(docker, config, progress).await?;
    let container = format!("rh-lintian-{run_id}-{}", docker::new_run_id());
    let mut checker = Containers::new(docker, run_id);
    checker
        .start(&[ContainerSpec::idle(&container, image)], NO_READY_LINE)
        .await?;
    let result = async {
        let name = deb.file_name().unwrap().to_string_lossy();
        let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
        docker::put_files(
            docker,
            &container,
            &[(format!("{OUT_DIR}/{name}"), bytes, 0o644)],
        )
        .await?;
        run_lintian(docker, config, &container, &name, progress).await
    }
    .await;
    checker.remove().await;
    result
}

/// Runs lintian in `OUT_DIR` of the container. Returns (warnings, errors);
/// errors fail the build unless the caller turned lintian off.
async fn run_lintian(
    docker: &Docker,
    config: &Config,
    container: &str,
    target: &str,
    progress: &dyn Fn(&str),
) -> Result<(Vec<String>, Vec<String>)> {
    let started = Instant::now();
    // lintian refuses to run with an unknown tag in --suppress-tags: only
    // the tags it knows are passed, the others are reported.
    let mut suppress = config.build.lintian_suppress.clone();
    let mut unknown = Vec::new();
    if !suppress.is_empty() {
        let known =
            docker::exec(docker, container, None, "lintian-explain-tags --list-tags").await?;
        if known.ok() {
            (suppress, unknown) = split_suppressed(config, &known.stdout);
        }
    }
    let run = docker::exec(
        docker,
        container,
        None,
        &format!(
            "cd {OUT_DIR} && {} 2>&1",
            lintian_command(target, &suppress)
        ),
    )
    .await?;
    let (mut warnings, errors) = lintian_tags(&run.stdout);
    warnings.extend(unknown);
    progress(&format!(
        "lintian: {} errors, {} warnings ({:.1}s)",
        errors.len(),
        warnings.len(),
        started.elapsed().as_secs_f64()
    ));
    if !errors.is_empty() {
        bail!(
            "lintian found errors in the built package:\n{}\n  fix: correct the packaging; \
             or override a tag in debian/<package>.lintian-overrides, or list it in \
             build.lintian_suppress in {}; build.lintian = false skips the check",
            indent(&errors.join("\n")),
            config.path.display()
        );
    }
    // lintian exits 1 for errors (handled above) and 2 when it could not run.
    if !run.ok() && run.code != 1 {
        bail!(
            "lintian could not check the package (exit {}):\n{}",
            run.code,
            indent(&tail(&run.stdout, 15))
        );
    }
    Ok((warnings, errors))
}

/// lintian's command line. The package's own overrides
/// (`debian/<pkg>.lintian-overrides`, installed into the .deb by dh_lintian)
/// are read by lintian from the .deb; `build.lintian_suppress` is passed as
/// `--suppress-tags` (its names are checked by `Config::parse`, so they need
/// no quoting).
fn lintian_command(target: &str, suppress: &[String]) -> String {
    let mut command = String::from("lintian --no-tag-display-limit");
    if !suppress.is_empty() {
        command.push_str(&format!(" --suppress-tags {}", suppress.join(",")));
    }
    format!("{command} {target}")
}

/// `build.lintian_suppress` split by `lintian-explain-tags --list-tags`
/// (`known`): the tags lintian knows, and a warning for each other one (a
/// typo suppresses nothing).
fn split_suppressed(config: &Config, known: &str) -> (Vec<String>, Vec<String>) {
    let known: std::collections::HashSet<&str> = known.lines().map(str::trim).collect();
    let (known, unknown): (Vec<String>, Vec<String>) = config
        .build
        .lintian_suppress
        .iter()
        .cloned()
        .partition(|tag| known.contains(tag.as_str()));
    let warnings = unknown
        .iter()
        .map(|tag| {
            format!(
                "build.lintian_suppress in {} names `{tag}`, a tag this lintian does not \
                 know: it suppresses nothing (a typo, or a tag of another lintian version?)",
                config.path.display()
            )
        })
        .collect();
    (known, warnings)
}

/// `W:` and `E:` lines of lintian's output.
pub fn lintian_tags(output: &str) -> (Vec<String>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for line in output.lines() {
        if line.starts_with("E: ") {
            errors.push(line.to_string());
        } else if line.starts_with("W: ") {
            warnings.push(line.to_string());
        }
    }
    (warnings, errors)
}

/// Sorts the artifacts, writes `SHA256SUMS` and makes the output.
fn finish(
    config: &Config,
    out_dir: &Path,
    files: Vec<PathBuf>,
    log: PathBuf,
    lintian_warnings: Vec<String>,
    lintian_errors: Vec<String>,
) -> Result<BuildOutput> {
    let mut sums = Vec::new();
    let mut sums_text = String::new();
    let mut sorted = files.clone();
    sorted.sort();
    for f in &sorted {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let hash = hex::encode(Sha256::digest(&bytes));
        sums_text.push_str(&format!("{hash}  {name}\n"));
        sums.push((name, hash));
    }
    let debs: Vec<BuiltDeb> = sorted
        .iter()
        .filter(|f| has_ext(f, "deb"))
        .zip(sums.iter().filter(|(n, _)| n.ends_with(".deb")))
        .map(|(path, (name, hash))| BuiltDeb {
            package: debian::package_of_deb_file(name)
                .unwrap_or(name)
                .to_string(),
            path: path.clone(),
            sha256: hash.clone(),
        })
        .collect();
    if debs.is_empty() {
        bail!("the build made no .deb; see {}", log.display());
    }
    let missing: Vec<&str> = config
        .binary_names()
        .into_iter()
        .filter(|b| !debs.iter().any(|d| d.package == *b))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: key package.binaries names {}, but the build made no .deb for it (it made {}); \
             see {}\n  fix: build it (debian/control, its Architecture and Build-Profiles) or \
             remove it from package.binaries",
            config.path.display(),
            missing.join(", "),
            debs.iter()
                .map(BuiltDeb::file_name)
                .collect::<Vec<_>>()
                .join(", "),
            log.display()
        );
    }
    let sums_path = out_dir.join(SUMS_FILE);
    std::fs::write(&sums_path, sums_text)
        .with_context(|| format!("writing {}", sums_path.display()))?;
    Ok(BuildOutput {
        debs,
        changes: files.iter().find(|f| has_ext(f, "changes")).cloned(),
        buildinfo: files.iter().find(|f| has_ext(f, "buildinfo")).cloned(),
        sha256: sums,
        log,
        lintian_warnings,
        lintian_errors,
    })
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

/// The project as a tar under `prefix`, without `.git` and the top `target/`.
fn project_tar(project: &Path, prefix: &str) -> Result<Vec<u8>> {
    fn add(builder: &mut tar::Builder<Vec<u8>>, dir: &Path, name: &str, top: bool) -> Result<()> {
        builder.append_dir(name, dir)?;
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            if file_name == ".git" || (top && file_name == "target") {
                continue;
            }
            let path = entry.path();
            let inner = format!("{name}/{file_name}");
            if entry.file_type()?.is_dir() {
                add(builder, &path, &inner, false)?;
            } else {
                builder
                    .append_path_with_name(&path, &inner)
                    .with_context(|| format!("packing {}", path.display()))?;
            }
        }
        Ok(())
    }
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    add(&mut builder, project, prefix, true)?;
    Ok(builder.into_inner()?)
}

/// Copies the files of a container directory into `dest`.
async fn download_dir(
    docker: &Docker,
    container: &str,
    dir: &str,
    dest: &Path,
) -> Result<Vec<PathBuf>> {
    let mut stream = docker.download_from_container(
        container,
        Some(bollard::query_parameters::DownloadFromContainerOptions { path: dir.into() }),
    );
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(
            &chunk.with_context(|| format!("downloading {dir} from {container}"))?,
        );
    }
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.into_owned();
        let Some(name) = path.file_name() else {
            continue;
        };
        let target = dest.join(name);
        let mut file = std::fs::File::create(&target)
            .with_context(|| format!("writing {}", target.display()))?;
        std::io::copy(&mut entry, &mut file)?;
        files.push(target);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_binary_gets_its_sum_and_a_named_binary_not_built_is_an_error() {
        let out = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let path = out.path().join(name);
            std::fs::write(&path, name).unwrap();
            path
        };
        let files = vec![
            file("split-server_1.0.0.1-1+deb12u1_all.deb"),
            file("split-agent_1.0.0.1-1+deb12u1_all.deb"),
            file("split_1.0.0.1-1+deb12u1_amd64.changes"),
        ];
        let mut config = Config::default();
        config.package.name = Some("split".into());
        config.package.binaries = ["split-server", "split-agent"]
            .map(|name| crate::config::Binary {
                name: name.into(),
                hosts: crate::config::Hosts::All,
            })
            .to_vec();
        let log = out.path().join(LOG_FILE);
        let built = finish(
            &config,
            out.path(),
            files.clone(),
            log.clone(),
            vec![],
            vec![],
        )
        .unwrap();
        let packages: Vec<&str> = built.debs.iter().map(|d| d.package.as_str()).collect();
        assert_eq!(packages, ["split-agent", "split-server"]);
        let sums = std::fs::read_to_string(out.path().join(SUMS_FILE)).unwrap();
        for deb in &built.debs {
            assert!(
                sums.contains(&format!("{}  {}\n", deb.sha256, deb.file_name())),
                "{sums}"
            );
        }
        assert_eq!(sums.lines().count(), 3);

        config.package.binaries.push(crate::config::Binary {
            name: "split-doc".into(),
            hosts: crate::config::Hosts::All,
        });
        let err = finish(&config, out.path(), files, log, vec![], vec![]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("key package.binaries names split-doc, but the build made no .deb for it"),
            "{msg}"
        );
    }

    #[test]
    fn lintian_suppress_reaches_the_command_and_unknown_tags_warn() {
        assert_eq!(
            lintian_command("*.changes", &[]),
            "lintian --no-tag-display-limit *.changes"
        );
        let suppress = vec![
            "bad-distribution-in-changes-file".to_string(),
            "no-such-tagg".to_string(),
        ];
        assert_eq!(
            lintian_command("x.deb", &suppress),
            "lintian --no-tag-display-limit --suppress-tags \
             bad-distribution-in-changes-file,no-such-tagg x.deb"
        );
        let mut config = Config {
            path: "release.toml".into(),
            ..Config::default()
        };
        config.build.lintian_suppress = suppress;
        let known = "bad-distribution-in-changes-file\nbinary-without-manpage\n";
        let (passed, warnings) = split_suppressed(&config, known);
        assert_eq!(passed, ["bad-distribution-in-changes-file"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(
                "build.lintian_suppress in release.toml names `no-such-tagg`, a tag this \
                 lintian does not know"
            ),
            "{warnings:?}"
        );
    }

    #[test]
    fn lintian_lines_are_sorted_by_level() {
        let out = "E: rh-hello: no-copyright-file\nW: rh-hello: some-warning x\n\
                   N: rh-hello: note\nI: rh-hello: info\n";
        let (w, e) = lintian_tags(out);
        assert_eq!(e, vec!["E: rh-hello: no-copyright-file"]);
        assert_eq!(w, vec!["W: rh-hello: some-warning x"]);
    }

    #[test]
    fn project_tar_skips_git_and_target() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for f in [
            ".git/HEAD",
            "target/debug/x",
            "src/target/keep",
            "debian/rules",
        ] {
            std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
            std::fs::write(p.join(f), "x").unwrap();
        }
        let tar = project_tar(p, "build/pkg").unwrap();
        let mut names: Vec<String> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with('/'))
            .collect();
        names.sort();
        assert!(
            names.contains(&"build/pkg/debian/rules".to_string()),
            "{names:?}"
        );
        assert!(
            names.contains(&"build/pkg/src/target/keep".to_string()),
            "{names:?}"
        );
        assert!(
            !names
                .iter()
                .any(|n| n.contains(".git") || n.contains("pkg/target")),
            "{names:?}"
        );
    }
    /// A tiny native Debian package: one installed file, debhelper 13.
    fn write_project(dir: &Path, build_depends: &str, rules_extra: &str) {
        let files = [
            (
                "release.toml",
                "[package]\nname = \"rh-hello\"\n".to_string(),
            ),
            ("hello.txt", "hello from the harness tests\n".to_string()),
            (
                "debian/control",
                format!(
                    "Source: rh-hello\nSection: misc\nPriority: optional\n\
                     Maintainer: Release Harness Tests <tests@example.org>\n\
                     Build-Depends: {build_depends}\nStandards-Version: 4.6.2\n\
                     Rules-Requires-Root: no\n\n\
                     Package: rh-hello\nArchitecture: all\nDepends: ${{misc:Depends}}\n\
                     Description: tiny package for the release harness tests\n \
                     It installs one file so there is something to check.\n"
                ),
            ),
            (
                "debian/changelog",
                "rh-hello (1.2.3) unstable; urgency=medium\n\n  * Test release.\n\n \
                 -- Release Harness Tests <tests@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n"
                    .to_string(),
            ),
            (
                "debian/rules",
                format!("#!/usr/bin/make -f\n%:\n\tdh $@\n{rules_extra}"),
            ),
            ("debian/source/format", "3.0 (native)\n".to_string()),
            (
                "debian/install",
                "hello.txt usr/share/rh-hello/\n".to_string(),
            ),
            (
                "debian/copyright",
                "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
                 Upstream-Name: rh-hello\n\nFiles: *\nCopyright: 2024 Release Harness Tests\n\
                 License: Apache-2.0\n On Debian systems, the full text of the Apache License \
                 2.0 is in\n /usr/share/common-licenses/Apache-2.0.\n"
                    .to_string(),
            ),
            (".git/HEAD", "ref: refs/heads/main\n".to_string()),
        ];
        for (path, content) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, content).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("debian/rules"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    fn say(line: &str) {
        eprintln!("  {line}");
    }

    async fn containers_of_run(docker: &Docker, run_id: &str) -> usize {
        let label = format!("{}={run_id}", docker::LABEL_RUN);
        let filters = std::collections::HashMap::from([("label", vec![label.as_str()])]);
        docker
            .list_containers(Some(
                bollard::query_parameters::ListContainersOptionsBuilder::default()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap()
            .len()
    }

    const GOOD_DEPENDS: &str = "debhelper-compat (= 13)";

    #[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
    #[tokio::test]
    async fn dpkg_buildpackage_builds_sums_and_reuses_the_builder() {
        let Some(docker) = images::docker_for_tests("dpkg_buildpackage_builds").await else {
            return;
        };
        let project = tempfile::tempdir().unwrap();
        write_project(project.path(), GOOD_DEPENDS, "");
        let config = Config::load(project.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let run_id = docker::new_run_id();
        let built = build_in_run(&docker, &config, project.path(), out.path(), &run_id, &say)
            .await
            .unwrap();

        assert_eq!(built.debs.len(), 1, "{:?}", built.debs);
        let deb = &built.debs[0].path;
        assert_eq!(built.debs[0].package, "rh-hello");
        assert_eq!(deb.file_name().unwrap(), "rh-hello_1.2.3_all.deb");
        let version = std::process::Command::new("dpkg-deb")
            .arg("-f")
            .arg(deb)
            .arg("Version")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&version.stdout).trim(), "1.2.3");
        assert!(built.changes.as_ref().unwrap().exists());
        assert!(built.buildinfo.as_ref().unwrap().exists());
        assert!(std::fs::read_to_string(&built.log)
            .unwrap()
            .contains("dh_builddeb"));
        assert!(built.lintian_errors.is_empty());

        let sums = std::fs::read_to_string(out.path().join(SUMS_FILE)).unwrap();
        let actual = hex::encode(Sha256::digest(std::fs::read(deb).unwrap()));
        assert!(
            sums.contains(&format!("{actual}  rh-hello_1.2.3_all.deb\n")),
            "{sums}"
        );
        assert_eq!(built.debs[0].sha256, actual);
        assert_eq!(sums.lines().count(), built.sha256.len());
        assert_eq!(containers_of_run(&docker, &run_id).await, 0);

        // Same Build-Depends: the same tag, and the image is not made again.
        let tag = images::builder_image(&docker, &config, project.path(), &say)
            .await
            .unwrap();
        let before = docker.inspect_image(&tag).await.unwrap();
        let started = Instant::now();
        let again = images::builder_image(&docker, &config, project.path(), &say)
            .await
            .unwrap();
        let after = docker.inspect_image(&again).await.unwrap();
        assert_eq!(tag, again);
        assert_eq!(before.id, after.id);
        assert_eq!(before.created, after.created);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
    #[tokio::test]
    async fn failing_build_shows_the_log_tail_and_leaves_no_container() {
        let Some(docker) = images::docker_for_tests("failing_build").await else {
            return;
        };
        let project = tempfile::tempdir().unwrap();
        write_project(
            project.path(),
            GOOD_DEPENDS,
            "\noverride_dh_auto_build:\n\techo the-build-broke-here\n\texit 1\n",
        );
        let config = Config::load(project.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let run_id = docker::new_run_id();
        let err = build_in_run(&docker, &config, project.path(), out.path(), &run_id, &say)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        eprintln!("{msg}");
        assert!(msg.contains("the-build-broke-here"), "{msg}");
        assert!(
            msg.contains(&out.path().join(LOG_FILE).display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("exited with"), "{msg}");
        assert_eq!(containers_of_run(&docker, &run_id).await, 0);
    }

    #[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
    #[tokio::test]
    async fn uninstallable_build_depends_are_named() {
        let Some(docker) = images::docker_for_tests("uninstallable_build_depends").await else {
            return;
        };
        let project = tempfile::tempdir().unwrap();
        write_project(
            project.path(),
            "debhelper-compat (= 13), no-such-package-xyz",
            "",
        );
        let config = Config::load(project.path()).unwrap();
        let err = images::builder_image(&docker, &config, project.path(), &say)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        eprintln!("{msg}");
        assert!(
            msg.contains("apt cannot install no-such-package-xyz"),
            "{msg}"
        );
        assert!(msg.contains("Build-Depends of"), "{msg}");
        assert!(msg.contains("debian/control"), "{msg}");
    }

    #[tokio::test]
    async fn project_without_debian_dir_is_told_what_to_do() {
        // Fails before any request: no engine needed.
        let docker = Docker::connect_with_defaults().unwrap();
        let project = tempfile::tempdir().unwrap();
        std::fs::write(
            project.path().join("release.toml"),
            "[package]\nname = \"x\"\n",
        )
        .unwrap();
        let config = Config::load(project.path()).unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = build(&docker, &config, project.path(), out.path(), &say)
            .await
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(
                "has no debian/ directory (debian/control not found): the \
                          dpkg-buildpackage builder needs one; or set build.builder = \
                          \"cargo-deb\""
            ),
            "{msg}"
        );
        assert!(
            msg.starts_with(&project.path().display().to_string()),
            "{msg}"
        );
    }
    #[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
    #[tokio::test]
    async fn cargo_deb_builds_sums_and_lints_or_says_how_to_install_it() {
        let Some(docker) = images::docker_for_tests("cargo_deb_builds").await else {
            return;
        };
        let project = tempfile::tempdir().unwrap();
        let p = project.path();
        std::fs::create_dir_all(p.join("src")).unwrap();
        std::fs::write(
            p.join("Cargo.toml"),
            "[package]\nname = \"rh-rusty\"\nversion = \"0.3.1\"\nedition = \"2021\"\n\
             license = \"Apache-2.0\"\ndescription = \"A tiny tool for the harness tests\"\n\
             [package.metadata.deb]\nmaintainer = \"Release Harness Tests <tests@example.org>\"\n\
             copyright = \"2024 Release Harness Tests\"\n\
             extended-description = \"It prints one line so there is something to package.\"\n\
             changelog = \"debian/changelog\"\n\
             [workspace]\n",
        )
        .unwrap();
        std::fs::write(p.join("src/main.rs"), "fn main() { println!(\"hi\"); }\n").unwrap();
        // Without a changelog lintian fails a non-native package (no-changelog).
        std::fs::create_dir_all(p.join("debian")).unwrap();
        std::fs::write(
            p.join("debian/changelog"),
            "rh-rusty (0.3.1-1) unstable; urgency=medium\n\n  * Test release.\n\n \
             -- Release Harness Tests <tests@example.org>  Mon, 01 Jan 2024 00:00:00 +0000\n",
        )
        .unwrap();
        std::fs::write(
            p.join("release.toml"),
            "[package]\nname = \"rh-rusty\"\n[build]\nbuilder = \"cargo-deb\"\n",
        )
        .unwrap();
        let config = Config::load(p).unwrap();
        let out = tempfile::tempdir().unwrap();
        let installed = std::process::Command::new("cargo")
            .args(["deb", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        let result = build(&docker, &config, p, out.path(), &say).await;
        if !installed {
            let msg = format!("{:#}", result.unwrap_err());
            assert_eq!(msg, "cargo-deb is not installed: cargo install cargo-deb");
            eprintln!("cargo-deb is not installed: checked only its error");
            return;
        }
        let built = result.unwrap();
        let deb = &built.debs[0].path;
        let name = built.debs[0].file_name();
        assert!(name.starts_with("rh-rusty_0.3.1"), "{name}");
        assert_eq!(deb.parent().unwrap(), out.path());
        let sums = std::fs::read_to_string(out.path().join(SUMS_FILE)).unwrap();
        let actual = hex::encode(Sha256::digest(std::fs::read(deb).unwrap()));
        assert_eq!(sums, format!("{actual}  {name}\n"));
        assert!(built.changes.is_none());
        assert!(built.log.exists());
        eprintln!("lintian warnings: {:#?}", built.lintian_warnings);
    }
}
