//! The production testbed: a second fleet that stands in for production, so
//! the rollout adapters, the gate, promote and rollback run against real
//! cumin (Debian's, over ssh as root) and a debdeploy stand-in
//! (`containers/debdeploy/`, see why there). The deploy host is the cumin
//! host; the targets carry the previous version, installed from the fleet's
//! apt repository, which also holds the new one. The harness reaches the
//! cumin host the way it reaches a production one, through
//! `rollout.command_prefix` (here `docker exec -i <cumin host> sh -c`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use bollard::Docker;

use crate::config::{Config, Hosts};
use crate::support::docker;
use crate::support::progress::Progress;
use crate::verify::fleet::{Fleet, Host, Launch, Size};
use crate::verify::scenario::Debs;

/// The stand-in, compiled in so the packaged binary can make a testbed too.
const DEBDEPLOY_SERVER: &[u8] = include_bytes!("../../../containers/debdeploy/debdeploy");
const DEBDEPLOY_CLIENT: &[u8] = include_bytes!("../../../containers/debdeploy/debdeploy-deploy");
const DEBDEPLOY_PKGVERSION: &[u8] =
    include_bytes!("../../../containers/debdeploy/debdeploy-pkgversion");

pub struct Testbed {
    pub fleet: Fleet,
    /// The release.toml given, with `rollout.command_prefix` pointing at the
    /// testbed's cumin host and the aliases `canaries` and `fleet` defined.
    pub config: Config,
    pub previous: Debs,
    pub new: Debs,
}

impl Testbed {
    /// Starts the fleet from `image`, publishes both packages, installs
    /// `previous` on every target, and sets up cumin (root's key, known
    /// hosts, config, aliases) and the debdeploy stand-in.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        docker: &Docker,
        config: &Config,
        image: &str,
        size: Size,
        previous: Debs,
        new: Debs,
        run_id: &str,
        keep: bool,
        progress: &Progress,
    ) -> Result<Testbed> {
        let fleet = Fleet::start(
            docker,
            config,
            &Launch {
                image,
                size,
                run_id,
                slot: "prod",
                keep,
            },
            progress,
        )
        .await?;
        let mut config = size.of(config);
        config.rollout.command_prefix = vec![
            "docker".into(),
            "exec".into(),
            "-i".into(),
            fleet.deploy_host().container.clone(),
            "sh".into(),
            "-c".into(),
        ];
        config.rollout.canaries = "A:canaries".into();
        config.rollout.fleet = "A:fleet".into();
        let testbed = Testbed {
            fleet,
            config,
            previous,
            new,
        };
        match testbed.prepare(progress).await {
            Ok(()) => Ok(testbed),
            Err(e) => {
                testbed.fleet.teardown().await;
                Err(e)
            }
        }
    }

    async fn prepare(&self, progress: &Progress) -> Result<()> {
        let fleet = &self.fleet;
        fleet
            .publish_debs(
                &self
                    .previous
                    .paths
                    .iter()
                    .chain(&self.new.paths)
                    .map(PathBuf::as_path)
                    .collect::<Vec<_>>(),
            )
            .await?;
        let targets = fleet.select(Hosts::Targets);
        fleet.install(&targets, &self.previous.version).await?;
        progress.info(&format!(
            "testbed: {} {} on {} targets",
            self.config.package_name(),
            self.previous.version,
            targets.len()
        ));
        self.setup_cumin().await?;
        self.install_debdeploy().await
    }

    pub fn cumin_host(&self) -> &Host {
        self.fleet.deploy_host()
    }

    /// Root on the cumin host logs into every target as root, as cumin does
    /// in production; the fleet's known hosts already name every target.
    async fn setup_cumin(&self) -> Result<()> {
        let fleet = &self.fleet;
        let cumin = self.cumin_host();
        let public = fleet
            .run(
                cumin,
                None,
                "install -d -m 700 /root/.ssh && ssh-keygen -q -t ed25519 -N '' \
                 -f /root/.ssh/id_ed25519 && cat /root/.ssh/id_ed25519.pub",
            )
            .await?;
        let targets = fleet.select(Hosts::Targets);
        let authorize = format!(
            "install -d -m 700 /root/.ssh && echo '{}' >> /root/.ssh/authorized_keys && \
             chmod 600 /root/.ssh/authorized_keys",
            public.trim()
        );
        fleet.run_on(&targets, None, &authorize).await?;
        let names = |role: Hosts| -> String {
            fleet
                .select(role)
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let config_yaml = "transport: clustershell\n\
             default_backend: direct\n\
             log_file: /var/log/cumin/cumin.log\n\
             clustershell:\n  \
               ssh_options:\n    \
                 - '-o BatchMode=yes'\n    \
                 - '-o ConnectTimeout=10'\n    \
                 - '-o StrictHostKeyChecking=yes'\n  \
               fanout: 16\n";
        let mut aliases = format!("canaries: D{{{}}}\n", names(Hosts::Canaries));
        if !fleet.select(Hosts::Apps).is_empty() {
            aliases.push_str(&format!("fleet: D{{{}}}\n", names(Hosts::Apps)));
        }
        let debdeploy_conf = format!("[distros]\n{} = debian, 12\n", self.config.rollout.distro);
        docker::put_files(
            &fleet.docker,
            &cumin.container,
            &[
                (
                    "/etc/cumin/config.yaml".into(),
                    config_yaml.as_bytes().to_vec(),
                    0o644,
                ),
                (
                    "/etc/cumin/aliases.yaml".into(),
                    aliases.into_bytes(),
                    0o644,
                ),
                (
                    "/etc/debdeploy.conf".into(),
                    debdeploy_conf.into_bytes(),
                    0o644,
                ),
            ],
        )
        .await?;
        // A first call proves the whole chain (config, key, known hosts, sshd).
        let all = format!("D{{{}}}", names(Hosts::Targets));
        let out = fleet
            .exec(
                cumin,
                None,
                &format!("mkdir -p /var/log/cumin && cumin --force --no-progress -o txt '{all}' 'echo ok'"),
            )
            .await?;
        for target in &targets {
            if !out.stdout.contains(&format!("{}: ok", target.name)) {
                bail!(
                    "testbed: cumin on {} does not reach {} as root:\n{}",
                    cumin.name,
                    target.name,
                    out.tail(15)
                );
            }
        }
        Ok(())
    }

    async fn install_debdeploy(&self) -> Result<()> {
        let fleet = &self.fleet;
        docker::put_files(
            &fleet.docker,
            &self.cumin_host().container,
            &[(
                "/usr/bin/debdeploy".into(),
                DEBDEPLOY_SERVER.to_vec(),
                0o755,
            )],
        )
        .await?;
        for target in fleet.select(Hosts::Targets) {
            docker::put_files(
                &fleet.docker,
                &target.container,
                &[
                    (
                        "/usr/bin/debdeploy-deploy".into(),
                        DEBDEPLOY_CLIENT.to_vec(),
                        0o755,
                    ),
                    (
                        "/usr/bin/debdeploy-pkgversion".into(),
                        DEBDEPLOY_PKGVERSION.to_vec(),
                        0o755,
                    ),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// The version each target has, asked of dpkg directly (not through the
    /// rollout tool), for tests that check what the harness claims.
    pub async fn versions(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for host in self.fleet.select(Hosts::Targets) {
            out.push((host.name.clone(), self.fleet.installed_version(host).await?));
        }
        Ok(out)
    }

    pub async fn teardown(self) {
        self.fleet.teardown().await
    }
}

/// The versions a testbed's release goes between, and its tag.
pub const RELEASE_TAG: &str = "0.2.0";
pub const RELEASE_PREVIOUS: &str = "0.1.0-1";
pub const RELEASE_NEW: &str = "0.2.0-1";

/// A testbed of a built-in fixture's release, as `release` leaves it just
/// before the canary step: the fixture's repository tagged `RELEASE_TAG`,
/// one small .deb per binary of its source at `RELEASE_PREVIOUS` (on the
/// targets) and `RELEASE_NEW`, and the facts the ledger records of that
/// release. The repository lives in `dir`.
pub struct Release {
    pub tb: Testbed,
    pub repo: crate::support::git::Repo,
    pub facts: super::ReleaseFacts,
    pub progress: Progress,
    pub dir: tempfile::TempDir,
}

impl Release {
    /// Starts it: `tune` changes the fixture's release.toml first (rollout
    /// tool, batch size, gate, fleet size...); 2 canaries and 3 app hosts,
    /// and a soak gate minimum of 0, unless `tune` says otherwise.
    pub async fn start(
        docker: &Docker,
        fixture: &str,
        tune: impl FnOnce(&mut Config),
    ) -> Result<Release> {
        let dir = tempfile::tempdir()?;
        let path = crate::release::fixture::materialize(fixture, dir.path())?;
        let repo = crate::support::git::Repo::open(&path)?;
        repo.tag_annotated(RELEASE_TAG, "Release 0.2.0")?;
        let mut config = Config::load(&path)?;
        config.gate.min_soak_secs = 0;
        config.fleet.canaries = 2;
        config.fleet.apps = 3;
        tune(&mut config);
        let progress = Progress::new(false);
        let image =
            crate::support::images::fleet_image(docker, &config, &[], &progress.reporter()).await?;
        // One .deb per binary of the source, as release.toml (after `tune`)
        // has it.
        let source = config.package_name().to_string();
        let binaries = config.binary_names();
        let previous = make_debs(
            &dir.path().join("previous"),
            &source,
            &binaries,
            RELEASE_PREVIOUS,
            "",
        )?;
        let new = make_debs(&dir.path().join("new"), &source, &binaries, RELEASE_NEW, "")?;
        let report = crate::verify::report::VerifyReport {
            package: source,
            version: RELEASE_NEW.into(),
            previous: Some(RELEASE_PREVIOUS.into()),
            ..Default::default()
        };
        let now = crate::ledger::now();
        let facts = super::ReleaseFacts {
            tag: RELEASE_TAG.into(),
            version: RELEASE_NEW.into(),
            commit: repo.head()?,
            debs: new.built()?,
            verify_digest: report.digest(),
            coverage: None,
            tagged_at: now.clone(),
            built_at: now.clone(),
            verified_at: now,
        };
        let size = Size {
            canaries: config.fleet.canaries,
            apps: config.fleet.apps,
        };
        let run_id = docker::new_run_id();
        let tb = Testbed::start(
            docker, &config, &image, size, previous, new, &run_id, false, &progress,
        )
        .await?;
        Ok(Release {
            tb,
            repo,
            facts,
            progress,
            dir,
        })
    }
}

/// A minimal .deb of `package` at `version` with `extra` in its marker
/// file, for a package that differs from another of the same version.
pub fn make_deb_with(dir: &Path, package: &str, version: &str, extra: &str) -> Result<Debs> {
    make_debs(dir, package, &[package], version, extra)
}

/// One minimal .deb for each of `binaries` (a marker file, no
/// dependencies), all built from source `source` (their `Source:` field,
/// which debdeploy's client goes by), made with `dpkg-deb` on this machine:
/// the rollout path does not care what a package holds, and this is much
/// faster than a build.
pub fn make_debs(
    dir: &Path,
    source: &str,
    binaries: &[&str],
    version: &str,
    extra: &str,
) -> Result<Debs> {
    let mut paths = Vec::new();
    for package in binaries {
        let root = dir.join(format!(
            "{package}_{version}{}",
            if extra.is_empty() { "" } else { "_x" }
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("DEBIAN"))?;
        std::fs::create_dir_all(root.join(format!("usr/share/{package}")))?;
        let source_field = if source == *package {
            String::new()
        } else {
            format!("Source: {source}\n")
        };
        std::fs::write(
            root.join("DEBIAN/control"),
            format!(
                "Package: {package}\n{source_field}Version: {version}\nArchitecture: all\n\
                 Maintainer: Release Harness <release-harness@localhost>\n\
                 Description: testbed package\n testbed package\n"
            ),
        )?;
        std::fs::write(
            root.join(format!("usr/share/{package}/release")),
            format!("{version}\n{extra}"),
        )?;
        let deb = dir.join(format!("{package}_{version}_all.deb"));
        crate::support::debian::build_deb(&root, &deb)?;
        paths.push(deb);
    }
    Ok(Debs {
        paths,
        version: version.to_string(),
    })
}
