//! The throw-away fleet: one network per run, a deploy host, canaries and app
//! hosts with production-like names, a per-run ssh key, known hosts, a
//! non-root deploy user, the HTTP server that serves the deployment
//! repository and an apt repository to the fleet. Owns the hosts' lifetime:
//! everything is labelled with the run id and removed by `teardown`, or kept
//! with `keep` for debugging. A run that starts several fleets prepares one
//! host per role once and snapshots it (`Snapshot`): each fleet then starts
//! from ready hosts, still in fresh containers.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bollard::Docker;
use futures_util::future::join_all;

use crate::config::{Config, Hosts};
use crate::support::debian;
use crate::support::docker::{self, ContainerSpec, Containers, ExecOutput};
use crate::support::images;
use crate::support::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Deploy,
    Canary,
    App,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Deploy => "deploy",
            Role::Canary => "canary",
            Role::App => "app",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    /// Production-like host name (`canary1`), resolvable inside the fleet.
    pub name: String,
    pub role: Role,
    /// Container name on the engine (`rh-<run>-<slot>-canary1`).
    pub container: String,
}

impl Host {
    /// The host's role as release.toml names it.
    pub fn hosts(&self) -> Hosts {
        match self.role {
            Role::Deploy => Hosts::Deploy,
            Role::Canary => Hosts::Canaries,
            Role::App => Hosts::Apps,
        }
    }

    fn matches(&self, hosts: Hosts) -> bool {
        match hosts {
            Hosts::All => true,
            Hosts::Deploy => self.role == Role::Deploy,
            Hosts::Targets => self.role != Role::Deploy,
            Hosts::Canaries => self.role == Role::Canary,
            Hosts::Apps => self.role == Role::App,
        }
    }
}

/// How many hosts of each role; defaults come from release.toml, the
/// benchmark overrides them.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub canaries: usize,
    pub apps: usize,
}

impl Size {
    /// `config` with this fleet size in place of release.toml's.
    pub fn of(self, config: &Config) -> Config {
        let mut config = config.clone();
        config.fleet.canaries = self.canaries;
        config.fleet.apps = self.apps;
        config
    }
}

/// What a fleet is started from and how it is named and kept.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// The fleet image (see `images::fleet_image`).
    pub image: &'a str,
    pub size: Size,
    /// Labels everything, for clean-up and sweeps.
    pub run_id: &'a str,
    /// Tells apart several fleets of one run (`rh-<run>-<slot>-<host>`).
    pub slot: &'a str,
    /// Leave it running when the fleet is torn down (`--keep`).
    pub keep: bool,
}

pub struct Fleet {
    pub docker: Docker,
    pub run_id: String,
    pub network: String,
    pub hosts: Vec<Host>,
    pub config: Config,
    /// The hosts' containers and the network: removed at teardown, or kept.
    containers: Containers,
    keep: bool,
}

/// The deploy host's apt repository (served under /srv), where the debs go.
pub const APT_DIR: &str = "/srv/apt";

impl Fleet {
    /// Starts the fleet from `image` and prepares it for syncs. On any
    /// failure, what was started is removed before the error is returned.
    pub async fn start(
        docker: &Docker,
        config: &Config,
        launch: &Launch<'_>,
        progress: &Progress,
    ) -> Result<Fleet> {
        let Launch {
            size,
            run_id,
            slot,
            keep,
            ..
        } = *launch;
        let mut fleet =
            Fleet::on_network(docker, size.of(config), run_id, slot, keep, size).await?;
        match fleet.bring_up(launch.image, progress).await {
            Ok(()) => {
                fleet.keep = keep;
                Ok(fleet)
            }
            Err(e) => {
                fleet.teardown().await;
                Err(e)
            }
        }
    }

    async fn bring_up(&mut self, image: &str, progress: &Progress) -> Result<()> {
        let started = Instant::now();
        self.start_hosts(&|_| image.to_string(), progress).await?;
        self.prepare_hosts().await?;
        self.exchange_keys(&|h| vec![h.name.clone()]).await?;
        progress.info(&format!(
            "fleet ready (users, repositories, keys exchanged) in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// A fleet of `hosts` on a network of its own, `rh-<run>[-<slot>]`,
    /// with no container yet; `config` is already of the fleet's size. What
    /// it makes is labelled kept when `keep` (a template's snapshot images
    /// carry its labels, and a kept fleet needs them); whether it outlives
    /// the teardown is set once the fleet is up.
    async fn on_network(
        docker: &Docker,
        config: Config,
        run_id: &str,
        slot: &str,
        keep: bool,
        hosts: Size,
    ) -> Result<Fleet> {
        let network = if slot.is_empty() {
            format!("rh-{run_id}")
        } else {
            format!("rh-{run_id}-{slot}")
        };
        let containers = Containers::on_network(docker, run_id, &network, keep).await?;
        Ok(Fleet {
            docker: docker.clone(),
            run_id: run_id.to_string(),
            hosts: host_list(&config, hosts, &network),
            network,
            config,
            containers,
            keep: false,
        })
    }

    /// Creates and starts every host's container, from the image `image_of`
    /// names for its role, and waits for each sshd.
    async fn start_hosts(
        &mut self,
        image_of: &dyn Fn(Role) -> String,
        progress: &Progress,
    ) -> Result<()> {
        let started = Instant::now();
        let specs: Vec<ContainerSpec> = self
            .hosts
            .iter()
            .map(|h| ContainerSpec {
                // Every host resolves every other by this name, from
                // /etc/hosts, in every fleet and after a restart.
                hostname: Some(h.name.clone()),
                // The fleet entrypoint runs sshd with -e: it logs this line
                // once it accepts connections.
                ready_line: Some("Server listening on"),
                ..ContainerSpec::idle(&h.container, image_of(h.role))
            })
            .collect();
        self.containers
            .start(&specs, Duration::from_secs(60))
            .await
            .context("starting the fleet")?;
        progress.info(&format!(
            "{} containers up, sshd listening, in {:.1}s",
            self.hosts.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// A fleet of one host per role (the deploy host, the first canary, the
    /// first app host), prepared as `start` prepares a whole fleet, whose
    /// known hosts name every host of `launch.size` with the key of its
    /// role's host: what `snapshot` turns into the images every fleet of the
    /// run starts from. Set it up further (instrument it, publish the
    /// packages) before the snapshot.
    pub async fn start_template(
        docker: &Docker,
        config: &Config,
        launch: &Launch<'_>,
        progress: &Progress,
    ) -> Result<Fleet> {
        let Launch {
            image,
            size,
            run_id,
            slot,
            keep,
        } = *launch;
        let one_each = Size {
            canaries: size.canaries.min(1),
            apps: size.apps.min(1),
        };
        let mut fleet =
            Fleet::on_network(docker, size.of(config), run_id, slot, keep, one_each).await?;
        let everyone = host_list(&fleet.config, size, "");
        let names_of = |h: &Host| -> Vec<String> {
            everyone
                .iter()
                .filter(|e| e.role == h.role)
                .map(|e| e.name.clone())
                .collect()
        };
        let started = Instant::now();
        let ready = async {
            fleet.start_hosts(&|_| image.to_string(), progress).await?;
            fleet.prepare_hosts().await?;
            fleet.exchange_keys(&names_of).await
        }
        .await;
        if let Err(e) = ready {
            fleet.teardown().await;
            return Err(e);
        }
        progress.info(&format!(
            "one host per role prepared (users, repositories, keys) in {:.1}s",
            started.elapsed().as_secs_f64()
        ));
        Ok(fleet)
    }

    /// Commits each host of a template (`start_template`) into an image of
    /// its role, labelled with the run (removed with the `Snapshot`, by
    /// `sweep` after a killed run), then removes the template. `keep`: the
    /// fleets started from it are kept for debugging, and so are the images.
    pub async fn snapshot(self, keep: bool, progress: &Progress) -> Result<Snapshot> {
        let started = Instant::now();
        let mut guard = Containers::new(&self.docker, &self.run_id).labelled_kept(keep);
        let labels = guard.labels();
        let tag_prefix = self.network.trim_start_matches("rh-").to_string();
        let images: Vec<(Role, String)> = self
            .hosts
            .iter()
            .map(|h| {
                let image = format!(
                    "{}/fleet-snapshot:{tag_prefix}-{}",
                    images::REPOSITORY_PREFIX,
                    h.role.name()
                );
                (h.role, image)
            })
            .collect();
        // Named before they exist: a commit cut off half-way still leaves a
        // name the removal looks for.
        for (_, image) in &images {
            guard.adopt_image(image);
        }
        let commits = self.hosts.iter().zip(&images).map(|(h, (_, image))| {
            let labels = labels.clone();
            let docker = &self.docker;
            async move {
                let (repo, tag) = image.split_once(':').unwrap_or((image, "latest"));
                let options = bollard::query_parameters::CommitContainerOptionsBuilder::default()
                    .container(&h.container)
                    .repo(repo)
                    .tag(tag)
                    .comment("release-harness: a prepared fleet host, for this run only")
                    .pause(true)
                    .build();
                let config = bollard::models::ContainerConfig {
                    labels: Some(labels),
                    ..Default::default()
                };
                docker
                    .commit_container(options, config)
                    .await
                    .with_context(|| format!("snapshotting host {} as {image}", h.name))
            }
        });
        let committed = join_all(commits)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>();
        let docker = self.docker.clone();
        let config = self.config.clone();
        let run_id = self.run_id.clone();
        let size = Size {
            canaries: config.fleet.canaries,
            apps: config.fleet.apps,
        };
        self.teardown().await;
        if let Err(e) = committed {
            guard.remove().await;
            return Err(e);
        }
        progress.info(&format!(
            "prepared hosts snapshotted as {} images in {:.1}s",
            images.len(),
            started.elapsed().as_secs_f64()
        ));
        Ok(Snapshot {
            docker,
            config,
            run_id,
            size,
            images,
            guard,
        })
    }

    pub fn deploy_host(&self) -> &Host {
        &self.hosts[0]
    }

    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .with_context(|| format!("no host {name} in this fleet"))
    }

    pub fn select(&self, hosts: Hosts) -> Vec<&Host> {
        self.hosts.iter().filter(|h| h.matches(hosts)).collect()
    }

    pub fn user(&self) -> &str {
        &self.config.fleet.user
    }

    /// Runs a script on a host (as `user`, or root) and returns what it left.
    pub async fn exec(&self, host: &Host, user: Option<&str>, script: &str) -> Result<ExecOutput> {
        let script = match user {
            // A login-like environment: HOME and the user's git identity.
            Some(u) => format!("export HOME=/home/{u} USER={u}; {script}"),
            None => script.to_string(),
        };
        docker::exec(&self.docker, &host.container, user, &script)
            .await
            .with_context(|| format!("on host {}", host.name))
    }

    /// Runs two scripts on a host (as `user`, or root) in one exec round
    /// trip, the second after the first whatever its exit code, and returns
    /// what each left as if it had run alone: its exit code, stdout and
    /// stderr. An exec costs the engine as much CPU whatever it runs, so a
    /// check that asks a host two things asks once.
    pub async fn exec_both(
        &self,
        host: &Host,
        user: Option<&str>,
        first: &str,
        second: &str,
    ) -> Result<(ExecOutput, ExecOutput)> {
        let marker = split_marker();
        let out = self
            .exec(host, user, &both_script(first, second, &marker))
            .await?;
        split_both(out, &marker).with_context(|| {
            format!(
                "on host {}: `{}` then `{}` ended before the second began",
                host.name,
                first_line(first),
                first_line(second)
            )
        })
    }

    /// Like `exec`, but a non-zero exit is an error naming the host, what was
    /// run and the tail of its output.
    pub async fn run(&self, host: &Host, user: Option<&str>, script: &str) -> Result<String> {
        let out = self.exec(host, user, script).await?;
        if !out.ok() {
            bail!(
                "on host {}: `{}` exited with {}:\n{}",
                host.name,
                first_line(script),
                out.code,
                indent(&out.tail(15))
            );
        }
        Ok(out.stdout)
    }

    /// Runs the same script on several hosts at once.
    pub async fn run_on(&self, hosts: &[&Host], user: Option<&str>, script: &str) -> Result<()> {
        let results = join_all(hosts.iter().map(|h| self.run(h, user, script))).await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// Puts .deb files into the deploy host's apt repository, indexes it, and
    /// has every host read the new index (all at once), so an install is
    /// apt-get install alone.
    pub async fn publish_debs(&self, debs: &[&Path]) -> Result<()> {
        let mut files = Vec::new();
        for deb in debs {
            let name = deb.file_name().unwrap().to_string_lossy();
            let bytes = std::fs::read(deb).with_context(|| format!("reading {}", deb.display()))?;
            files.push((format!("{APT_DIR}/{name}"), bytes, 0o644));
        }
        let deploy = self.deploy_host();
        docker::put_files(&self.docker, &deploy.container, &files).await?;
        self.run(
            deploy,
            None,
            &format!("cd {APT_DIR} && dpkg-scanpackages --multiversion . > Packages 2>/dev/null"),
        )
        .await?;
        self.run_on(
            &self.select(Hosts::All),
            None,
            "timeout 120 apt-get -q update >/dev/null",
        )
        .await
    }

    /// Installs `version` of the binaries each of `hosts` carries (by its
    /// role, `package.binaries`) the way debdeploy's client does (apt-get
    /// from the fleet's repository, whose index `publish_debs` brought to
    /// every host), downgrades allowed; all hosts at once.
    pub async fn install(&self, hosts: &[&Host], version: &str) -> Result<()> {
        let results = join_all(hosts.iter().map(|h| {
            let pins: Vec<String> = self
                .config
                .binaries_on(h.hosts())
                .iter()
                .map(|b| format!("{b}={version}"))
                .collect();
            let script = format!(
                "timeout 300 apt-get -q -y --allow-downgrades \
                 -o DPkg::Options::=--force-confold install {}",
                pins.join(" ")
            );
            async move { self.run(h, None, &script).await }
        }))
        .await;
        results.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(())
    }

    /// The version of the binaries a host carries (see
    /// `debian::installed_version`: a description when one is missing or
    /// they differ; empty when none is installed).
    pub async fn installed_version(&self, host: &Host) -> Result<String> {
        let out = self.exec(host, None, &self.installed_query(host)).await?;
        Ok(self.installed_version_in(host, &out.stdout))
    }

    /// What asks a host for the versions of the binaries it carries; its
    /// output is read by `installed_version_in`.
    pub fn installed_query(&self, host: &Host) -> String {
        debian::installed_query(&self.config.binaries_on(host.hosts()))
    }

    /// The version `installed_query` printed on `host` (see
    /// `installed_version`).
    pub fn installed_version_in(&self, host: &Host, query_output: &str) -> String {
        if debian::installed_version(query_output, &[]).starts_with("not installed") {
            return String::new();
        }
        debian::installed_version(query_output, &self.config.binaries_on(host.hosts()))
    }

    /// Commits a change to the deployment repository; returns the new sha.
    pub async fn new_revision(&self, label: &str) -> Result<String> {
        let dir = self.config.render(&self.config.sync.repo_dir, &[]);
        let out = self
            .run(
                self.deploy_host(),
                Some(self.user()),
                &format!(
                    "cd {dir} && printf '%s\\n' '{label}' > CONTENT && git add -A && \
                     git commit -q -m '{label}' && git rev-parse HEAD"
                ),
            )
            .await?;
        Ok(out.trim().to_string())
    }

    /// Runs the sync (`sync.command`) on the deploy host for `revision`,
    /// bounded inside the container.
    pub async fn sync(&self, revision: &str) -> Result<ExecOutput> {
        let dir = self.config.render(&self.config.sync.repo_dir, &[]);
        let cmd = self
            .config
            .render(&self.config.sync.command, &[("revision", revision)]);
        let script = format!(
            "cd {dir} && timeout -k 5 {} sh -c '{}' </dev/null",
            self.config.sync.timeout_secs,
            cmd.replace('\'', "'\\''")
        );
        self.exec(self.deploy_host(), Some(self.user()), &script)
            .await
    }

    /// The newest file matching `sync.log` on the deploy host and its last
    /// `lines` lines; None when no log is configured or none is there.
    pub async fn tool_log_tail(&self, lines: usize) -> Option<(String, String)> {
        let pattern = self.config.render(&self.config.sync.log, &[]);
        if pattern.trim().is_empty() {
            return None;
        }
        // The glob is left unquoted so the shell expands it.
        let script = format!(
            "f=$(ls -t {pattern} 2>/dev/null | head -n 1); \
             [ -n \"$f\" ] && echo \"$f\" && tail -n {lines} \"$f\""
        );
        let out = self
            .exec(self.deploy_host(), Some(self.user()), &script)
            .await
            .ok()?;
        let (path, tail) = out.stdout.split_once('\n')?;
        Some((path.to_string(), tail.trim_end().to_string()))
    }

    /// The revision a target says is deployed.
    pub async fn deployed_revision(&self, host: &Host) -> Result<ExecOutput> {
        self.exec(host, Some(self.user()), &self.revision_script())
            .await
    }

    /// What `deployed_revision` runs, as the deploy user.
    pub fn revision_script(&self) -> String {
        let cmd = self.config.render(&self.config.sync.revision_command, &[]);
        // A guard against a hung tool, not a measure: a loaded machine starting
        // python with coverage on every host at once needs well over 20 s.
        format!("timeout 60 {cmd}")
    }

    /// Kills a host's container at once, as a machine dying mid-deploy would.
    pub async fn kill_host(&self, host: &Host) -> Result<()> {
        self.docker
            .kill_container(
                &host.container,
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await
            .with_context(|| format!("stopping host {}", host.name))
    }

    /// Starts a killed host again, once its sshd listens. It keeps its
    /// address, which every host's /etc/hosts gives for its name.
    pub async fn restart_host(&self, host: &Host) -> Result<()> {
        self.docker
            .start_container(&host.container, None)
            .await
            .with_context(|| format!("starting host {} again", host.name))?;
        let listening = "for i in $(seq 100); do python3 -S -c 'import socket; \
             socket.create_connection((\"127.0.0.1\", 22), 1)' 2>/dev/null && exit 0; \
             sleep 0.1; done; echo 'sshd did not listen within 10s' >&2; exit 1";
        self.run(host, None, listening).await?;
        Ok(())
    }

    /// Removes every container and the network of this run, unless the
    /// fleet is kept for debugging (then prints how to get in).
    pub async fn teardown(self) {
        if self.keep {
            eprintln!(
                "keeping the fleet of run {} for debugging; a shell on a host:\n  \
                 docker exec -it {} bash\n  remove it with: release-harness sweep --run {}",
                self.run_id,
                self.deploy_host().container,
                self.run_id
            );
            self.containers.keep();
            return;
        }
        self.containers.remove().await;
    }

    /// Users, directories, the apt source, keys, the HTTP server, the
    /// deployment repository, and the files and commands from release.toml.
    /// Few round trips per host, all hosts at once: start-up cost is what a
    /// verify pays five times.
    async fn prepare_hosts(&self) -> Result<()> {
        let c = &self.config;
        let user = self.user();
        let deploy = self.deploy_host();
        let port = c.fleet.http_port;
        let repo_dir = c.render(&c.sync.repo_dir, &[]);
        let key = c.render(&c.fleet.ssh_key_path, &[]);
        // The deploy user's key first: every target needs its public half. Its
        // directory may be root's (scap's /etc/keyholder.d), the key is the
        // user's.
        let keygen = format!(
            "set -e\n\
             id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user}\n\
             dir=$(dirname {key})\n\
             case \"$dir\" in /home/{user}*) install -d -m 700 -o {user} -g {user} \"$dir\" ;; *) install -d -m 755 \"$dir\" ;; esac\n\
             ssh-keygen -q -t ed25519 -N '' -f {key}\n\
             chown {user}: {key} {key}.pub && chmod 600 {key}\n\
             cat {key}.pub"
        );
        let public = self.run(deploy, None, &keygen).await?;

        // Files from release.toml, templated.
        let mut per_host: HashMap<&str, Vec<docker::FileEntry>> = HashMap::new();
        let mut owned: HashMap<&str, Vec<String>> = HashMap::new();
        for f in &c.fleet.files {
            let path = c.render(&f.path, &[]);
            let mode =
                u32::from_str_radix(f.mode.trim_start_matches("0o"), 8).with_context(|| {
                    format!(
                        "{}: fleet.files entry {path}: mode `{}` is not octal (e.g. \"0644\")",
                        c.path.display(),
                        f.mode
                    )
                })?;
            let mut content = c.render(&f.content, &[]);
            if !content.ends_with('\n') {
                content.push('\n');
            }
            for h in self.select(f.hosts) {
                per_host.entry(&h.container).or_default().push((
                    path.clone(),
                    content.clone().into_bytes(),
                    mode,
                ));
                if f.owner == "user" {
                    owned.entry(&h.container).or_default().push(path.clone());
                }
            }
        }

        // Only the fleet's own apt repository: hosts never reach a mirror, so
        // what they install is what was built.
        let common = format!(
            "set -e\n\
             id -u {user} >/dev/null 2>&1 || useradd -m -s /bin/bash {user}\n\
             mkdir -p /srv/deployment && chown {user}: /srv/deployment\n\
             chmod 1777 /var/lock\n\
             rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*\n\
             echo 'deb [trusted=yes] http://{}:{port}/apt ./' > /etc/apt/sources.list.d/release-harness.list\n",
            deploy.name
        );
        let authorize = format!(
            "install -d -m 700 -o {user} -g {user} /home/{user}/.ssh\n\
             echo '{}' > /home/{user}/.ssh/authorized_keys\n\
             chown {user}: /home/{user}/.ssh/authorized_keys\n\
             chmod 600 /home/{user}/.ssh/authorized_keys\n",
            public.trim()
        );
        // On the deploy host, after its common part: the deployment
        // repository (holding any files release.toml put in it), owned by the
        // user who deploys, and the HTTP server for /srv, which the fleet
        // image's entrypoint starts again in every container made from it.
        let deploy_setup = format!(
            "mkdir -p {APT_DIR} {repo_dir} && touch {APT_DIR}/Packages\n\
             chown -R {user}: {repo_dir}\n\
             su {user} -c 'set -e; git config --global user.name \"Release Harness\"; \
             git config --global user.email release-harness@localhost; cd {repo_dir}; \
             git init -q -b main; echo initial > CONTENT; git add -A; git commit -q -m \"Initial content\"'\n\
             mkdir -p $(dirname {HTTP_PORT_FILE}) && echo {port} > {HTTP_PORT_FILE}\n\
             {ENTRYPOINT} serve-http\n"
        );
        let per_host_setup = self.hosts.iter().map(|h| {
            let files = per_host.remove(h.container.as_str()).unwrap_or_default();
            let mut script = common.clone();
            if h.role != Role::Deploy {
                script.push_str(&authorize);
            }
            if let Some(paths) = owned.get(h.container.as_str()) {
                script.push_str(&format!("chown {user}: {}\n", paths.join(" ")));
            }
            if h.role == Role::Deploy {
                script.push_str(&deploy_setup);
            }
            async move {
                if !files.is_empty() {
                    docker::put_files(&self.docker, &h.container, &files).await?;
                }
                self.run(h, None, &script).await
            }
        });
        let per_host_setup: Vec<_> = per_host_setup.collect();
        join_all(per_host_setup)
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;

        for cmd in &c.fleet.setup {
            let script = c.render(&cmd.command, &[]);
            let hosts = self.select(cmd.hosts);
            self.run_on(&hosts, None, &format!("set -e\n{script}"))
                .await
                .with_context(|| format!("{}: fleet.setup command", c.path.display()))?;
        }
        Ok(())
    }

    /// Every target's host key into the deploy host's known hosts, under the
    /// names `names_of` gives for that target (its own short name; for a
    /// template, every name of its role: the snapshot's hosts share the key).
    /// Every sshd already said it listens (`start_hosts` waited for it), so
    /// one scan answers for all.
    async fn exchange_keys(&self, names_of: &dyn Fn(&Host) -> Vec<String>) -> Result<()> {
        let deploy = self.deploy_host();
        let targets = self.select(Hosts::Targets);
        let names: Vec<&str> = targets.iter().map(|h| h.name.as_str()).collect();
        let scan = self
            .exec(
                deploy,
                None,
                &format!(
                    "ssh-keyscan -T 5 -t ed25519 {} 2>/dev/null",
                    names.join(" ")
                ),
            )
            .await?;
        let mut known = String::new();
        let mut missing = Vec::new();
        for h in &targets {
            let prefix = format!("{} ", h.name);
            match scan.stdout.lines().find_map(|l| l.strip_prefix(&prefix)) {
                Some(key) => known.push_str(&format!("{} {key}\n", names_of(h).join(","))),
                None => missing.push(h.name.as_str()),
            }
        }
        if let Some(first) = missing.first() {
            bail!(
                "sshd did not answer the key scan on {} (container logs: docker logs {})",
                missing.join(", "),
                self.host(first)?.container
            );
        }
        docker::put_files(
            &self.docker,
            &deploy.container,
            &[("/etc/ssh/ssh_known_hosts".into(), known.into_bytes(), 0o644)],
        )
        .await
    }
}

/// The fleet image's entrypoint (containers/fleet/entrypoint.sh): started
/// with `serve-http`, it starts the deploy host's HTTP server and returns
/// once it answers.
const ENTRYPOINT: &str = "/usr/local/sbin/fleet-entrypoint";

/// Where the deploy host keeps its HTTP server's port: the entrypoint starts
/// the server when it is there, so a fleet from a snapshot (which holds no
/// processes) serves from its start.
const HTTP_PORT_FILE: &str = "/etc/release-harness/http-port";

/// A prepared fleet kept as one image per role (`Fleet::snapshot`): users,
/// keys, known hosts, the deployment repository, the apt repository and
/// index, whatever the run set up on the template. Every fleet started from
/// it gets fresh containers of those images. Its images are removed by
/// `remove`, or when it is dropped (an error, Ctrl-C).
pub struct Snapshot {
    docker: Docker,
    config: Config,
    run_id: String,
    size: Size,
    images: Vec<(Role, String)>,
    guard: Containers,
}

impl Snapshot {
    /// A fleet of the snapshot's size, `rh-<run>-<slot>-<host>`, on a
    /// network of its own. On any failure, what was started is removed
    /// before the error is returned.
    pub async fn start_fleet(&self, slot: &str, keep: bool, progress: &Progress) -> Result<Fleet> {
        let mut fleet = Fleet::on_network(
            &self.docker,
            self.config.clone(),
            &self.run_id,
            slot,
            keep,
            self.size,
        )
        .await?;
        let started = Instant::now();
        let image_of = |role: Role| -> String {
            self.images
                .iter()
                .find(|(r, _)| *r == role)
                .map(|(_, image)| image.clone())
                .unwrap_or_default()
        };
        // Nothing to run on the hosts: names resolve from /etc/hosts and the
        // deploy host's entrypoint starts its HTTP server.
        let ready = fleet.start_hosts(&image_of, progress).await;
        match ready {
            Ok(()) => {
                progress.info(&format!(
                    "fleet ready from the prepared hosts in {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                fleet.keep = keep;
                Ok(fleet)
            }
            Err(e) => {
                fleet.teardown().await;
                Err(e)
            }
        }
    }

    /// The images, by role.
    pub fn images(&self) -> &[(Role, String)] {
        &self.images
    }

    /// Removes the images; with `keep` (the fleets were kept for debugging)
    /// leaves them, labelled kept, for `sweep --run`.
    pub async fn finish(self, keep: bool) {
        if keep {
            self.guard.keep();
        } else {
            self.guard.remove().await;
        }
    }
}

fn host_list(config: &Config, size: Size, prefix: &str) -> Vec<Host> {
    let f = &config.fleet;
    let mut hosts = vec![(format!("{}1", f.deploy_prefix), Role::Deploy)];
    hosts.extend((1..=size.canaries).map(|i| (format!("{}{i}", f.canary_prefix), Role::Canary)));
    hosts.extend((1..=size.apps).map(|i| (format!("{}{i}", f.app_prefix), Role::App)));
    hosts
        .into_iter()
        .map(|(name, role)| Host {
            container: format!("{prefix}-{name}"),
            name,
            role,
        })
        .collect()
}

/// A line no command prints by chance: it splits `both_script`'s output.
fn split_marker() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "release-harness-split-{:x}-{nanos:x}-{:x}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    )
}

/// `first`, then `second`, each in a subshell of its own (an `exit` or a
/// `set -e` in one does not end the other), with `marker` and the first's
/// exit code between their outputs on stdout, and `marker` alone between
/// them on stderr. The script exits with the second's code. Each marker
/// comes after a newline of its own, so an output that does not end in one
/// is split back exactly.
fn both_script(first: &str, second: &str, marker: &str) -> String {
    format!(
        "(\n{first}\n)\nprintf '\\n{marker} %d\\n' $?\nprintf '\\n{marker}\\n' >&2\n(\n{second}\n)\n"
    )
}

/// Splits what `both_script` left into what each part left; None when
/// the markers are not there (the script was cut off before the second).
fn split_both(out: ExecOutput, marker: &str) -> Option<(ExecOutput, ExecOutput)> {
    let (first_stdout, rest) = out.stdout.split_once(&format!("\n{marker} "))?;
    let (first_code, second_stdout) = rest.split_once('\n')?;
    let (first_stderr, second_stderr) = out.stderr.split_once(&format!("\n{marker}\n"))?;
    Some((
        ExecOutput {
            code: first_code.trim().parse().ok()?,
            stdout: first_stdout.to_string(),
            stderr: first_stderr.to_string(),
        },
        ExecOutput {
            code: out.code,
            stdout: second_stdout.to_string(),
            stderr: second_stderr.to_string(),
        },
    ))
}

fn first_line(s: &str) -> &str {
    let line = s.trim().lines().next().unwrap_or("");
    if line.len() > 100 {
        &line[..100]
    } else {
        line
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::support::images;

    /// Runs `both_script` with the local sh, as an exec would.
    fn run_both(first: &str, second: &str) -> (ExecOutput, ExecOutput) {
        let marker = split_marker();
        let out = crate::support::process::cmd("sh", ["-c", &both_script(first, second, &marker)])
            .output()
            .unwrap();
        let out = ExecOutput {
            code: out.status.code().unwrap_or(-1).into(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        };
        split_both(out, &marker).unwrap()
    }

    #[test]
    fn two_scripts_in_one_exec_leave_what_each_would_alone() {
        let (a, b) = run_both(
            "printf 'no newline'; echo oops >&2; exit 3",
            "echo two; echo 'line\nline' >&2; false",
        );
        assert_eq!(
            (a.code, a.stdout.as_str(), a.stderr.as_str()),
            (3, "no newline", "oops\n")
        );
        assert_eq!(
            (b.code, b.stdout.as_str(), b.stderr.as_str()),
            (1, "two\n", "line\nline\n")
        );
        // An exit or set -e in the first does not stop the second; empty
        // outputs stay empty, trailing blank lines stay.
        let (a, b) = run_both("set -e\nfalse\necho never", "printf '\\n\\n'");
        assert_eq!((a.code, a.stdout.as_str(), a.stderr.as_str()), (1, "", ""));
        assert_eq!(
            (b.code, b.stdout.as_str(), b.stderr.as_str()),
            (0, "\n\n", "")
        );
        // A marker of another call in an output is only text.
        let other = split_marker();
        let (a, _) = run_both(&format!("echo '{other} 0'"), "true");
        assert_eq!(a.stdout, format!("{other} 0\n"));
    }

    #[test]
    fn an_exec_cut_off_before_the_second_script_is_not_split() {
        let out = ExecOutput {
            code: 137,
            stdout: "half".into(),
            stderr: String::new(),
        };
        assert!(split_both(out, &split_marker()).is_none());
    }

    async fn images_of(docker: &Docker, run_id: &str) -> usize {
        let label = format!("{}={run_id}", docker::LABEL_RUN);
        docker::count_labelled(docker, &label).await.unwrap().images
    }

    #[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
    #[tokio::test]
    async fn fleets_start_ready_from_a_snapshot_whose_images_go_with_it() {
        let Some(docker) = images::docker_for_tests("fleets_from_a_snapshot").await else {
            return;
        };
        let config = Config::parse("", Path::new("release.toml")).unwrap();
        let image = images::fleet_image(&docker, &config, &["python3".to_string()], &|_| {})
            .await
            .unwrap();
        let run_id = docker::new_run_id();
        let size = Size {
            canaries: 2,
            apps: 2,
        };
        let launch = Launch {
            image: &image,
            size,
            run_id: &run_id,
            slot: "prep",
            keep: false,
        };
        let progress = Progress::silent();
        let template = Fleet::start_template(&docker, &config, &launch, &progress)
            .await
            .unwrap();
        let names: Vec<&str> = template.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["deploy1", "canary1", "app1"], "one host per role");
        let snapshot = template.snapshot(false, &progress).await.unwrap();
        assert_eq!(images_of(&docker, &run_id).await, 3, "one image per role");

        let checked = async {
            let fleet = snapshot.start_fleet("s0", false, &progress).await?;
            let checks = async {
                // Every target by its name, as the deploy user, with strict
                // host key checking: the known hosts made once name them all.
                let targets: Vec<String> = fleet
                    .select(Hosts::Targets)
                    .iter()
                    .map(|h| h.name.clone())
                    .collect();
                let ask_name = |t: &str| {
                    format!("ssh -n -o BatchMode=yes -o StrictHostKeyChecking=yes {t} hostname")
                };
                let script: Vec<String> = targets.iter().map(|t| ask_name(t)).collect();
                let said = fleet
                    .run(
                        fleet.deploy_host(),
                        Some(fleet.user()),
                        &script.join(" && "),
                    )
                    .await?;
                assert_eq!(said.lines().collect::<Vec<_>>(), targets);
                // The deploy host serves /srv again (a process is not in an
                // image), to every host.
                let app = fleet.host("app2")?;
                fleet
                    .run(
                        app,
                        None,
                        "curl -sf -o /dev/null http://deploy1/apt/Packages",
                    )
                    .await?;
                // Every name resolves from /etc/hosts alone, not through the
                // engine's DNS.
                let everyone: Vec<&str> = fleet.hosts.iter().map(|h| h.name.as_str()).collect();
                fleet
                    .run(
                        app,
                        None,
                        &format!("getent -s files hosts {}", everyone.join(" ")),
                    )
                    .await?;
                // A killed host comes back at its address, by its name.
                let address = || async {
                    let info = fleet
                        .docker
                        .inspect_container(
                            &app.container,
                            None::<bollard::query_parameters::InspectContainerOptions>,
                        )
                        .await?;
                    anyhow::Ok(
                        info.network_settings
                            .and_then(|n| n.networks?.get(&fleet.network)?.ip_address.clone())
                            .unwrap_or_default(),
                    )
                };
                let before = address().await?;
                fleet.kill_host(app).await?;
                fleet.restart_host(app).await?;
                assert_eq!(address().await?, before, "app2 came back elsewhere");
                assert!(!before.is_empty());
                let said = fleet
                    .run(fleet.deploy_host(), Some(fleet.user()), &ask_name("app2"))
                    .await?;
                assert_eq!(said.trim(), "app2");
                anyhow::Ok(())
            }
            .await;
            fleet.teardown().await;
            checks
        }
        .await;
        // Dropped without `finish`, as when a run is cut off: the images go.
        drop(snapshot);
        assert_eq!(images_of(&docker, &run_id).await, 0, "images left behind");
        assert_eq!(docker::remove_run(&docker, &run_id).await.unwrap(), 0);
        checked.unwrap();
    }
}
