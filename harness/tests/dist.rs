//! The packaged CLI: `cargo xtask dist` builds the harness's .deb, which
//! installs on a bare Debian image holding only the package's declared
//! dependencies (so a missing Depends fails here, not on a CI runner), and the
//! installed `release-harness` answers, reads a project, says what to do when
//! the engine it needs is not there, and, driving this host's engine through
//! its socket, releases its built-in fixture through a whole dry run without
//! the source tree and without mmdebstrap (the images this host made are
//! found by their content hash), leaving nothing on the engine.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use testcontainers::core::{ImageExt, Mount};
use testcontainers::runners::AsyncRunner;
use testcontainers::GenericImage;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `cargo xtask dist --out <out>`: the xtask binary's own `dist`, so the
/// code path is the one the README gives. The release profile is made cheap
/// through cargo's environment overrides (no optimization, no debug info) in
/// a target directory of its own: what is tested is the packaging, and an
/// optimized build would cost the test run several minutes on two cores.
fn cargo_xtask_dist(out: &Path) -> std::process::Output {
    let built = Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "xtask"])
        .current_dir(workspace_root())
        .status()
        .expect("building xtask");
    assert!(built.success(), "cargo build -p xtask failed");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .to_path_buf();
    Command::new(target.join("debug/xtask"))
        .args(["dist", "--out"])
        .arg(out)
        .current_dir(workspace_root())
        .env("CARGO_TARGET_DIR", target.join("dist-test"))
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true")
        .output()
        .expect("running cargo xtask dist")
}

/// Every file of `dir` (with `.git`), for `docker::put_files` under `dest`.
fn files_of(dir: &Path, dest: &str) -> Vec<(String, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if meta.is_file() {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                files.push((
                    format!("{dest}/{rel}"),
                    std::fs::read(&path).unwrap(),
                    meta.permissions().mode() & 0o777,
                ));
            }
        }
    }
    files
}

#[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
#[tokio::test(flavor = "multi_thread")]
async fn the_packaged_cli_installs_on_a_bare_image_and_runs() {
    let Some(docker) = support::docker().await else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    if !cargo_deb.is_ok_and(|o| o.status.success()) {
        let run = cargo_xtask_dist(out.path());
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success());
        assert!(
            stderr.contains("cargo install cargo-deb --locked"),
            "without cargo-deb, dist must say how to install it:\n{stderr}"
        );
        eprintln!("cargo-deb is not installed: checked only the install hint of cargo xtask dist");
        return;
    }

    // A release build of the harness: minutes when cold.
    let run = cargo_xtask_dist(out.path());
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "cargo xtask dist failed:\n{stderr}");
    let deb = PathBuf::from(stdout.lines().last().expect("dist prints the .deb").trim());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("release-harness_"), "{name}");
    assert_eq!(deb.parent().unwrap(), out.path());
    let sums = std::fs::read_to_string(out.path().join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("  {name}\n")), "{sums}");

    let field = |f: &str| harness::support::debian::deb_field(&deb, f).unwrap();
    assert_eq!(field("Package"), "release-harness");
    let depends = field("Depends");
    for needed in ["git", "mmdebstrap", "dpkg-dev"] {
        assert!(
            depends.split(',').any(|d| d.trim().starts_with(needed)),
            "{needed} not in Depends: {depends}"
        );
    }
    assert!(field("Recommends").contains("docker.io"));

    // A bare bookworm with the package's Depends and nothing else.
    let say = |line: &str| eprintln!("  {line}");
    let depends = harness::support::debian::deb_depends(&deb).unwrap();
    let image = harness::support::images::base_image(&docker, "bookworm", &depends, &say)
        .await
        .expect("an image with the package's Depends");
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let run_id = harness::support::docker::new_run_id();
    // The harness inside drives this host's engine, as a CI job in a
    // container does: through the engine's socket, or DOCKER_HOST when it
    // is a TCP address.
    let container = GenericImage::new(repo, tag)
        .with_container_name(format!("rh-{run_id}-dist"))
        .with_labels(harness::support::docker::run_labels(&run_id));
    let container = match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.starts_with("unix://") => container.with_env_var("DOCKER_HOST", host),
        host => {
            let socket = host
                .ok()
                .and_then(|h| h.strip_prefix("unix://").map(str::to_string))
                .unwrap_or_else(|| "/var/run/docker.sock".into());
            container.with_mount(Mount::bind_mount(socket, "/var/run/docker.sock"))
        }
    };
    let container = container.start().await.expect("a container from the image");
    let id = container.id().to_string();

    let (_fixture_dir, project) = support::fixture_repo("minideploy");
    let mut files = files_of(&project, "/srv/minideploy");
    files.push((
        "/tmp/release-harness.deb".into(),
        std::fs::read(&deb).unwrap(),
        0o644,
    ));
    harness::support::docker::put_files(&docker, &id, &files)
        .await
        .unwrap();

    let exec = |script: &'static str| {
        let docker = docker.clone();
        let id = id.clone();
        async move {
            harness::support::docker::exec(&docker, &id, None, script)
                .await
                .unwrap()
        }
    };
    let installed = exec("dpkg -i /tmp/release-harness.deb").await;
    assert!(
        installed.ok(),
        "dpkg -i with only the declared Depends present:\n{}{}",
        installed.stdout,
        installed.stderr
    );

    let help = exec("release-harness --help").await;
    assert!(help.ok(), "{}", help.stderr);
    for word in [
        "Usage: release-harness",
        "release",
        "bump",
        "promote",
        "rollback",
        "status",
        "sweep",
    ] {
        assert!(
            help.stdout.contains(word),
            "`{word}` not in --help:\n{}",
            help.stdout
        );
    }
    let version = exec("release-harness --version").await;
    assert_eq!(
        version.stdout.trim(),
        format!("release-harness {}", env!("CARGO_PKG_VERSION"))
    );

    // A project with no release yet: status reads its release.toml and ledger.
    let status = exec("cd /srv/minideploy && release-harness status").await;
    assert!(
        status.ok(),
        "status of a fixture repository:\n{}{}",
        status.stdout,
        status.stderr
    );
    assert!(
        status.stdout.to_lowercase().contains("no release"),
        "{}",
        status.stdout
    );

    // No engine where DOCKER_HOST points: the release stops at preflight,
    // changes nothing, and says what to do.
    let release = exec(
        "DOCKER_HOST=unix:///nonexistent.sock release-harness release --dry-run \
         --project /srv/minideploy",
    )
    .await;
    assert_eq!(release.code, 1, "{}{}", release.stdout, release.stderr);
    assert!(
        release
            .stderr
            .contains("preflight failed, nothing was changed"),
        "{}",
        release.stderr
    );
    assert!(release.stderr.contains("DOCKER_HOST"), "{}", release.stderr);

    // The README's first command, from the installed package: the built-in
    // fixture comes from the binary (there is no source tree here), the
    // engine is this host's, and its images were made by this host. Without
    // mmdebstrap (taken away, as on a CI runner that only drives a warm
    // engine) nothing is built, so nothing is installed either.
    // This host makes the images first, as the runs of a CI runner's
    // shared engine did before: the builder, by building the fixture, and
    // the fleet's, from what the .deb depends on.
    let config = harness::config::Config::load(&project).unwrap();
    let built_here = tempfile::tempdir().unwrap();
    let built = harness::release::build::build(&docker, &config, &project, built_here.path(), &say)
        .await
        .expect("building the fixture on this host");
    let runtime = harness::support::debian::deb_depends(&built.debs[0].path).unwrap();
    harness::support::images::fleet_image(&docker, &config, &runtime, &say)
        .await
        .expect("the fleet image on this host");
    let removed =
        exec("dpkg -r --force-depends mmdebstrap >/dev/null 2>&1; ! command -v mmdebstrap").await;
    assert!(
        removed.ok(),
        "mmdebstrap is still there:\n{}",
        removed.stderr
    );
    let hostname = exec("cat /proc/sys/kernel/hostname").await.stdout;
    let made_here = format!("{}:", hostname.trim());
    let before = owned_by(&docker, &made_here).await;
    let started = std::time::Instant::now();
    let dry_run = exec(
        "cd /tmp && CI=true release-harness release --dry-run --fixture minideploy --out /tmp/out",
    )
    .await;
    eprintln!("the packaged dry run took {:?}", started.elapsed());
    let shown = format!("{}{}", dry_run.stdout, dry_run.stderr);
    assert_eq!(dry_run.code, 0, "the packaged dry run failed:\n{shown}");
    assert!(
        dry_run.stderr.contains(": 5 of 5 scenarios passed"),
        "{shown}"
    );
    assert!(
        dry_run.stdout.contains("dry run of minideploy 0.2.0-1"),
        "{shown}"
    );
    assert!(
        !dry_run.stderr.contains("installing mmdebstrap")
            && !dry_run.stderr.contains("mmdebstrap "),
        "an image was made or mmdebstrap installed, though this host made them all:\n{shown}"
    );
    let junit = exec("cat /tmp/out/minideploy_0.2.0-1/junit.xml").await;
    assert!(junit.stdout.contains("failures=\"0\""), "{}", junit.stdout);
    // What the run inside made on the engine carries its owner label
    // (`<container's hostname>:<pid>`): all of it is gone.
    assert_eq!(before, Vec::<String>::new());
    assert_eq!(
        owned_by(&docker, &made_here).await,
        Vec::<String>::new(),
        "the packaged dry run left containers or networks"
    );

    container.rm().await.expect("removing the dist container");
    assert_eq!(
        support::leftovers(&docker, &run_id).await,
        0,
        "the dist container is still there"
    );
}

/// Names of the containers and networks whose owner label starts with
/// `prefix` (`<hostname>:`): what runs on that host made.
async fn owned_by(docker: &bollard::Docker, prefix: &str) -> Vec<String> {
    use bollard::query_parameters::{ListContainersOptionsBuilder, ListNetworksOptionsBuilder};
    use std::collections::HashMap;
    let owner = harness::support::docker::LABEL_OWNER;
    let filters = HashMap::from([("label", vec![owner])]);
    let ours = |labels: Option<HashMap<String, String>>| {
        labels
            .and_then(|l| l.get(owner).cloned())
            .is_some_and(|o| o.starts_with(prefix))
    };
    let mut names: Vec<String> = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter(|c| ours(c.labels.clone()))
        .map(|c| c.names.unwrap_or_default().join(","))
        .collect();
    names.extend(
        docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap()
            .into_iter()
            .filter(|n| ours(n.labels.clone()))
            .map(|n| n.name.unwrap_or_default()),
    );
    names
}
