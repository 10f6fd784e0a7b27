//! `release.toml`: what the project being released tells the harness. Owns the
//! schema, its defaults (a scap-like layout, so a small file suffices), and the
//! errors for bad input, each naming the file, the key and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "release.toml";

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub package: Package,
    #[serde(default)]
    pub build: Build,
    #[serde(default)]
    pub fleet: Fleet,
    #[serde(default)]
    pub sync: Sync,
    #[serde(default)]
    pub verify: Verify,
    #[serde(default)]
    pub rollout: Rollout,
    #[serde(default)]
    pub gate: Gate,
    #[serde(default)]
    pub coverage: Coverage,
    /// Where the file was read from, for messages.
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Package {
    /// Debian package name; default: `Source:` of `debian/control`.
    pub name: Option<String>,
    /// Files that carry the version. Absent: `<name>/version.py` with
    /// `__version__ = "{version}"`, as scap wrote it; `[]`: none, the version
    /// lives in debian/changelog only.
    pub version_files: Option<Vec<VersionFile>>,
    /// Debian revision appended to the upstream version (`4.12.0` ->
    /// `4.12.0-1`); empty for a native package. Absent: the revision of
    /// debian/changelog's newest entry, as it is (`1+deb12u1` stays).
    pub debian_revision: Option<String>,
    /// The branch releases are cut from.
    pub release_branch: String,
    /// How a release tag is named; `{version}` is the upstream version.
    pub tag_format: String,
    /// The new changelog entry's distribution. Absent: the newest entry's.
    pub distribution: Option<String>,
    /// The new changelog entry's urgency. Absent: the newest entry's.
    pub urgency: Option<String>,
    /// `Name <email>` for the changelog trailer; default: the git identity.
    pub maintainer: Option<String>,
    /// The binary packages of the source and the hosts that carry each.
    /// Absent: the source's one binary on every host (a source with several
    /// must say which goes where).
    pub binaries: Vec<Binary>,
    /// The release commit's subject: `{version}` (upstream),
    /// `{debian_version}`, `{package}` and `{tag}` are filled in.
    pub commit_subject: String,
}

impl Default for Package {
    fn default() -> Self {
        Package {
            name: None,
            version_files: None,
            debian_revision: None,
            release_branch: "main".into(),
            tag_format: "{version}".into(),
            distribution: None,
            urgency: None,
            maintainer: None,
            binaries: Vec::new(),
            commit_subject: "Release {version}".into(),
        }
    }
}

/// A binary package built from the source, and which fleet hosts carry it
/// (verify installs it there; production hosts carry what they have).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Binary {
    pub name: String,
    #[serde(default)]
    pub hosts: Hosts,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VersionFile {
    /// Relative to the project root.
    pub path: PathBuf,
    /// The line that holds the version. `{version}` is the full Debian version
    /// (`4.12.0-1`), `{upstream}` the version without the revision (`4.12.0`).
    pub line: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Builder {
    /// `dpkg-buildpackage -us -uc -b` in a clean builder container.
    DpkgBuildpackage,
    /// `cargo deb` on the host, for projects written in Rust.
    CargoDeb,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Build {
    pub builder: Builder,
    /// Debian suite of every image (builder and fleet).
    pub suite: String,
    /// Run lintian on the result: errors fail the build, warnings are reported.
    pub lintian: bool,
    /// lintian tags not to report (`bad-distribution-in-changes-file` for a
    /// private distribution), beside the package's own lintian-overrides.
    pub lintian_suppress: Vec<String>,
    /// Packages added to the builder image beside the Build-Depends.
    pub extra_packages: Vec<String>,
    /// Upper bound for the build inside the container.
    pub timeout_secs: u64,
}

impl Default for Build {
    fn default() -> Self {
        Build {
            builder: Builder::DpkgBuildpackage,
            suite: "bookworm".into(),
            lintian: true,
            lintian_suppress: Vec::new(),
            extra_packages: Vec::new(),
            timeout_secs: 900,
        }
    }
}

/// Which hosts of the fleet a file or command is for.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Hosts {
    #[default]
    All,
    Deploy,
    Targets,
    Canaries,
    Apps,
}

impl Hosts {
    /// Whether these hosts include every host of `role` (a single role).
    pub fn covers(self, role: Hosts) -> bool {
        match self {
            Hosts::All => true,
            Hosts::Targets => matches!(role, Hosts::Canaries | Hosts::Apps | Hosts::Targets),
            other => other == role,
        }
    }
}

/// How release.toml writes a role.
fn serde_plain_hosts(hosts: Hosts) -> &'static str {
    match hosts {
        Hosts::All => "all",
        Hosts::Deploy => "deploy",
        Hosts::Targets => "targets",
        Hosts::Canaries => "canaries",
        Hosts::Apps => "apps",
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetFile {
    #[serde(default)]
    pub hosts: Hosts,
    /// Absolute path in the container; templated (see `Fleet`).
    pub path: String,
    /// Templated content.
    pub content: String,
    #[serde(default = "default_mode")]
    pub mode: String,
    /// `user` or `root`; default root.
    #[serde(default = "default_owner")]
    pub owner: String,
}

fn default_mode() -> String {
    "0644".into()
}
fn default_owner() -> String {
    "root".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FleetCommand {
    #[serde(default)]
    pub hosts: Hosts,
    /// Run as root with `sh -ec` after files are written; templated.
    pub command: String,
}

/// The throw-away fleet. Host names are production-like: `deploy1`,
/// `canary1`, `app1`, ... Templates in files and commands may use `{user}`,
/// `{deploy_host}`, `{repo}`, `{repo_dir}`, `{package}`, `{canaries}`,
/// `{apps}` and `{targets}` (one host name a line).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fleet {
    pub canaries: usize,
    pub apps: usize,
    pub deploy_prefix: String,
    pub canary_prefix: String,
    pub app_prefix: String,
    /// The non-root user that deploys (on the deploy host) and is ssh-ed into
    /// (on the targets).
    pub user: String,
    /// Where the deploy host's ssh private key goes (mode 0600, owned by user).
    pub ssh_key_path: String,
    /// Packages added to every fleet image.
    pub extra_packages: Vec<String>,
    pub files: Vec<FleetFile>,
    pub setup: Vec<FleetCommand>,
    /// Port of the HTTP server on the deploy host that serves `/srv` (the
    /// deployment repositories and the apt repository).
    pub http_port: u16,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet {
            canaries: 2,
            apps: 4,
            deploy_prefix: "deploy".into(),
            canary_prefix: "canary".into(),
            app_prefix: "app".into(),
            user: "deploy".into(),
            ssh_key_path: "/home/{user}/.ssh/id_ed25519".into(),
            extra_packages: Vec::new(),
            files: Vec::new(),
            setup: Vec::new(),
            http_port: 80,
        }
    }
}

/// How a sync (a deploy with the released tool) is run and checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sync {
    /// Name of the deployment repository made on the deploy host.
    pub repo: String,
    /// Where it lives on the deploy host (served over HTTP under /srv).
    pub repo_dir: String,
    /// Run as `fleet.user` in `repo_dir` on the deploy host; templated, and
    /// `{revision}` is the commit to deploy.
    pub command: String,
    /// Run on each target; prints the deployed revision.
    pub revision_command: String,
    /// Run on each host; its output must contain the installed version.
    pub version_command: String,
    /// A link on each target that must resolve to a directory named after the
    /// deployed revision (empty: not checked).
    pub current_link: String,
    /// The tool's own log on the deploy host (a path or a shell glob; the
    /// newest match is read), templated: its tail goes with a failed check
    /// after a sync that exited 0 (empty: the tool keeps no log).
    pub log: String,
    /// Bound on one sync, enforced inside the container.
    pub timeout_secs: u64,
}

impl Default for Sync {
    fn default() -> Self {
        Sync {
            repo: "demo".into(),
            repo_dir: "/srv/deployment/{repo}".into(),
            command: "minideploy deploy -r {revision}".into(),
            revision_command: "git -C /srv/deployment/{repo} rev-parse HEAD".into(),
            version_command: "minideploy version".into(),
            current_link: "/srv/deployment/{repo}-cache/current".into(),
            log: String::new(),
            timeout_secs: 120,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ScenarioKind {
    FreshInstall,
    Upgrade,
    MixedFleet,
    Downgrade,
    TargetStopped,
}

impl ScenarioKind {
    pub const ALL: [ScenarioKind; 5] = [
        ScenarioKind::FreshInstall,
        ScenarioKind::Upgrade,
        ScenarioKind::MixedFleet,
        ScenarioKind::Downgrade,
        ScenarioKind::TargetStopped,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ScenarioKind::FreshInstall => "fresh-install",
            ScenarioKind::Upgrade => "upgrade",
            ScenarioKind::MixedFleet => "mixed-fleet",
            ScenarioKind::Downgrade => "downgrade",
            ScenarioKind::TargetStopped => "target-stopped",
        }
    }
    /// Scenarios that need the previous release's package.
    pub fn needs_previous(self) -> bool {
        matches!(
            self,
            ScenarioKind::Upgrade | ScenarioKind::MixedFleet | ScenarioKind::Downgrade
        )
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Verify {
    /// The preset scenarios, by name.
    pub scenarios: Vec<ScenarioKind>,
    /// Scenarios written here, run after the presets.
    pub custom: Vec<CustomScenario>,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            scenarios: ScenarioKind::ALL.to_vec(),
            custom: Vec::new(),
        }
    }
}

/// A scenario written in release.toml, for tools that do not sync git
/// revisions: its steps run in order on a fresh fleet.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CustomScenario {
    pub name: String,
    pub steps: Vec<CustomStep>,
}

impl CustomScenario {
    /// It installs the previous release or names it.
    pub fn needs_previous(&self) -> bool {
        self.steps.iter().any(|s| {
            s.install == Some(Release::Previous) || s.templates().any(|t| t.contains("{previous}"))
        })
    }
}

/// One step: exactly one of `install`, `run`, `stop`, `start`, with the
/// keys that go with it. A flat table, so an unknown key is refused by name.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CustomStep {
    /// Installs the new or the previous release on `on` (default: all).
    pub install: Option<Release>,
    /// A shell command run on every host of `on` (default: deploy), as
    /// `user` (default: fleet.user); templated.
    pub run: Option<String>,
    /// Kills a host (a target), as a machine going down would.
    pub stop: Option<String>,
    /// Starts a stopped host again.
    pub start: Option<String>,
    /// A role (deploy, canaries, apps, targets, all) or a host name.
    pub on: Option<String>,
    pub user: Option<String>,
    /// An exit code, or "non-zero", or "any"; default 0.
    pub expect_exit: Option<ExpectExit>,
    /// A regular expression the output (stdout then stderr) must match,
    /// `^` and `$` at line ends; templated, the values taken literally.
    pub expect_output: Option<String>,
}

/// What a custom step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction<'a> {
    Install(Release),
    Run(&'a str),
    Stop(&'a str),
    Start(&'a str),
}

impl CustomStep {
    /// The one thing the step does; None when it names none or several.
    pub fn action(&self) -> Option<StepAction<'_>> {
        let mut actions = [
            self.install.map(StepAction::Install),
            self.run.as_deref().map(StepAction::Run),
            self.stop.as_deref().map(StepAction::Stop),
            self.start.as_deref().map(StepAction::Start),
        ]
        .into_iter()
        .flatten();
        let first = actions.next()?;
        actions.next().is_none().then_some(first)
    }

    /// Where it runs: `on`, or the action's default.
    pub fn on(&self) -> &str {
        match (self.on.as_deref(), self.action()) {
            (Some(on), _) => on,
            (None, Some(StepAction::Stop(h) | StepAction::Start(h))) => h,
            (None, Some(StepAction::Run(_))) => "deploy",
            _ => "all",
        }
    }

    /// The texts placeholders are filled in.
    pub fn templates(&self) -> impl Iterator<Item = &str> {
        [self.run.as_deref(), self.expect_output.as_deref()]
            .into_iter()
            .flatten()
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Release {
    New,
    Previous,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ExpectExit {
    Code(i64),
    Word(ExitWord),
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ExitWord {
    NonZero,
    Any,
}

impl ExpectExit {
    pub fn accepts(self, code: i64) -> bool {
        match self {
            ExpectExit::Code(c) => c == code,
            ExpectExit::Word(ExitWord::NonZero) => code != 0,
            ExpectExit::Word(ExitWord::Any) => true,
        }
    }

    pub fn describe(self) -> String {
        match self {
            ExpectExit::Code(c) => c.to_string(),
            ExpectExit::Word(ExitWord::NonZero) => "non-zero".into(),
            ExpectExit::Word(ExitWord::Any) => "any".into(),
        }
    }
}

/// The placeholders of a custom step's `run` and `expect_output`. Lists of
/// hosts are space-separated, for a command line.
pub const CUSTOM_PLACEHOLDERS: [&str; 9] = [
    "version",
    "previous",
    "package",
    "deploy_host",
    "targets",
    "canaries",
    "apps",
    "user",
    "host",
];

/// Which hosts a custom step's `on` (or `stop`/`start`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum On {
    Role(Hosts),
    Host(String),
}

/// cumin's default configuration: the only one debdeploy reads (it has no
/// option for another file).
pub const CUMIN_DEFAULT_CONFIG: &str = "/etc/cumin/config.yaml";

/// The `update_type`s debdeploy deploys. It also accepts `daemon-cluster`,
/// `reboot` and `reboot-cluster` in a spec, then crashes (a KeyError where it
/// prints the update's description) with nothing deployed.
pub const DEBDEPLOY_UPDATE_TYPES: [&str; 4] =
    ["tool", "daemon-direct", "daemon-disrupt", "library"];

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutTool {
    Debdeploy,
    Cumin,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rollout {
    pub tool: RolloutTool,
    /// Cumin query or `A:alias` for the canaries.
    pub canaries: String,
    /// Cumin query or `A:alias` for the rest of the fleet.
    pub fleet: String,
    /// Hosts per batch at promote.
    pub batch_size: usize,
    /// Share of hosts (0.0-1.0) allowed to fail before the rollout stops.
    pub max_failed: f64,
    /// debdeploy's `update_type`.
    pub update_type: String,
    /// Codename used under the spec's `fixes:`.
    pub distro: String,
    /// cumin's configuration file.
    pub cumin_config: String,
    /// Extra arguments to every debdeploy/cumin call (for wrappers, sudo, ...).
    pub command_prefix: Vec<String>,
    /// Upper bound on one deploy call (debdeploy and cumin have none: a
    /// frozen host would block the rollout forever).
    pub timeout_secs: u64,
    /// Puts the verified .debs into the apt repository production installs
    /// from, before the canaries (run here with `sh -c`; `{debs}` (or `{deb}`)
    /// is their paths, quoted; `{version}` and `{package}` as usual). Empty: the repository is
    /// filled some other way, and the canary step checks the version landed.
    pub publish_command: String,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            tool: RolloutTool::Debdeploy,
            canaries: "A:canaries".into(),
            fleet: "A:fleet".into(),
            batch_size: 10,
            max_failed: 0.0,
            update_type: "tool".into(),
            distro: "bookworm".into(),
            cumin_config: CUMIN_DEFAULT_CONFIG.into(),
            command_prefix: Vec::new(),
            timeout_secs: 1800,
            publish_command: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GateCheck {
    /// A command run on every canary through the rollout tool; exit 0 passes.
    Command { name: String, command: String },
    /// A Prometheus instant query compared with a threshold.
    Prometheus {
        name: String,
        url: String,
        query: String,
        /// `<`, `<=`, `>`, `>=`
        op: String,
        threshold: f64,
    },
    /// Evidence of real work on the canaries: a command run on every canary
    /// (`{since}`, `{version}`, `{package}` filled in) whose last line is a
    /// count of successful operations with the new version; the canaries'
    /// sum must reach `threshold` for the shorter soak
    /// (`gate.evidence_floor_secs`). A canary that prints no number fails it.
    Evidence {
        name: String,
        command: String,
        threshold: f64,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gate {
    /// Minimum time on the canaries before promote, in seconds (default 24 h).
    pub min_soak_secs: u64,
    pub checks: Vec<GateCheck>,
    /// Roll the canaries back when a check fails.
    pub rollback_on_fail: bool,
    /// A shorter soak, in seconds, that applies only on evidence: change
    /// coverage at least `change_coverage_min` and an `evidence` check
    /// reaching its threshold. None: the full soak always applies.
    pub evidence_floor_secs: Option<u64>,
    /// Share (0.0-1.0) of the changed lines verify must have exercised for
    /// `evidence_floor_secs` to apply.
    pub change_coverage_min: f64,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            min_soak_secs: 24 * 3600,
            checks: Vec::new(),
            rollback_on_fail: false,
            evidence_floor_secs: None,
            change_coverage_min: 1.0,
        }
    }
}

/// Coverage of the released tool measured on the verify fleet (Python tools:
/// the package's modules under /usr/lib/python3/dist-packages/).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Coverage {
    /// Measure every process of the tool on every fleet host. A package
    /// with no Python module is reported once and verify goes on.
    pub enabled: bool,
    /// Share (0.0-1.0) of the tool's statements verify must execute; below
    /// it verify fails with what was missed. None: no floor.
    pub total_min: Option<f64>,
    /// Share (0.0-1.0) of the lines changed since the previous release tag
    /// verify must execute; below it verify fails listing them. None: no floor.
    pub changed_min: Option<f64>,
}

impl Default for Coverage {
    fn default() -> Self {
        Coverage {
            enabled: true,
            total_min: None,
            changed_min: None,
        }
    }
}

impl Config {
    /// Reads `release.toml` from the root of `project`. A missing file gets an
    /// error saying where it looked and how to start one.
    pub fn load(project: &Path) -> Result<Config> {
        let path = project.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no {FILE_NAME} in {}: the harness reads its configuration from the root of the \
                 project being released.\n  fix: create {} (an empty file takes the scap-like \
                 defaults; see examples/scap/release.toml and the README's configuration \
                 reference)",
                project.display(),
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut config = Config::parse(&text, &path)?;
        config.complete(project, &text)?;
        Ok(config)
    }

    /// Parses the text of a release.toml; `path` is for messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            anyhow::anyhow!(
                "{}:{line}:{col}: {}",
                path.display(),
                e.message().trim_end()
            )
        })?;
        config.path = path.to_path_buf();
        config.validate(text)?;
        Ok(config)
    }

    /// Fills in defaults that depend on the project (the package name from
    /// debian/control, the version file named after it).
    fn complete(&mut self, project: &Path, text: &str) -> Result<()> {
        if self.package.name.is_none() {
            self.package.name = Some(
                crate::support::debian::source_package_name(project).with_context(|| {
                    format!(
                        "{}: key package.name is not set and the project has no readable \
                     debian/control to take it from; set package.name",
                        self.path.display()
                    )
                })?,
            );
        }
        if self.package.version_files.is_none() {
            // A Rust project's version is in Cargo.toml, which cargo-deb reads.
            let defaults = if self.build.builder == Builder::CargoDeb {
                Vec::new()
            } else {
                let name = self.package_name().replace('-', "_");
                vec![VersionFile {
                    path: PathBuf::from(format!("{name}/version.py")),
                    line: "__version__ = \"{version}\"".into(),
                }]
            };
            self.package.version_files = Some(defaults);
        }
        self.complete_binaries(project, text)?;
        // The changelog's own conventions, unless release.toml says otherwise;
        // an unreadable changelog is reported by the bump, with its line.
        if let Ok(top) = crate::support::debian::changelog_top(project) {
            let p = &mut self.package;
            p.debian_revision
                .get_or_insert_with(|| top.revision().unwrap_or("").to_string());
            p.distribution.get_or_insert(top.distribution);
            p.urgency.get_or_insert(top.urgency);
        }
        Ok(())
    }

    /// `package.binaries` against what debian/control declares: every
    /// named binary is built by the source; with none named, the source's
    /// one binary goes everywhere, and several must be placed by hand.
    fn complete_binaries(&mut self, project: &Path, text: &str) -> Result<()> {
        // cargo-deb names the one package it builds after the project.
        let declared = match crate::support::debian::binary_package_names(project) {
            Ok(names) if !names.is_empty() && self.build.builder != Builder::CargoDeb => names,
            _ => vec![self.package_name().to_string()],
        };
        let source = self.package_name().to_string();
        if self.package.binaries.is_empty() {
            if let [only] = declared.as_slice() {
                self.package.binaries.push(Binary {
                    name: only.clone(),
                    hosts: Hosts::All,
                });
                return Ok(());
            }
            let example: String = declared
                .iter()
                .map(|b| {
                    format!("\n    [[package.binaries]]\n    name = \"{b}\"\n    hosts = \"all\"")
                })
                .collect();
            bail!(
                "{}: the source {source} builds {} binary packages ({}), and release.toml does \
                 not say which fleet hosts carry which.\n  fix: add to release.toml, with hosts \
                 one of deploy, targets, canaries, apps, all:{example}",
                self.path.display(),
                declared.len(),
                declared.join(", ")
            );
        }
        for binary in &self.package.binaries {
            if !declared.contains(&binary.name) {
                let line = text
                    .lines()
                    .position(|l| l.contains(&format!("\"{}\"", binary.name)))
                    .map(|i| format!(":{}", i + 1))
                    .unwrap_or_default();
                bail!(
                    "{}{line}: key package.binaries: the source {source} builds no binary \
                     package `{}`; debian/control declares {}\n  fix: name one of those",
                    self.path.display(),
                    binary.name,
                    declared.join(", ")
                );
            }
        }
        Ok(())
    }

    fn validate(&self, text: &str) -> Result<()> {
        let at = |key: &str| -> String {
            let line = find_key_line(text, key);
            match line {
                Some(l) => format!("{}:{l}: key {key}", self.path.display()),
                None => format!("{}: key {key}", self.path.display()),
            }
        };
        for (i, vf) in self.version_files().iter().enumerate() {
            if !vf.line.contains("{version}") && !vf.line.contains("{upstream}") {
                bail!(
                    "{} (entry {}): `{}` has no {{version}} or {{upstream}} placeholder; \
                     write the line as it stands in {}, with the version replaced by {{version}}",
                    at("line"),
                    i + 1,
                    vf.line,
                    vf.path.display()
                );
            }
            if vf.path.is_absolute() {
                bail!(
                    "{} (entry {}): {} is absolute; give it relative to the project root",
                    at("path"),
                    i + 1,
                    vf.path.display()
                );
            }
        }
        if !self.package.tag_format.contains("{version}") {
            bail!(
                "{}: `{}` has no {{version}} placeholder (e.g. \"v{{version}}\")",
                at("tag_format"),
                self.package.tag_format
            );
        }
        let lintian_tag = |t: &String| {
            t.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && t.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
        };
        if let Some(bad) = self.build.lintian_suppress.iter().find(|t| !lintian_tag(t)) {
            bail!(
                "{}: `{bad}` is not a lintian tag name (lowercase letters, digits, - + .; \
                 e.g. \"bad-distribution-in-changes-file\")",
                at("lintian_suppress")
            );
        }
        if self.fleet.canaries == 0 {
            bail!(
                "{}: a fleet needs at least one canary; set fleet.canaries = 1 or more",
                at("canaries")
            );
        }
        if self.fleet.user == "root" || self.fleet.user.is_empty() {
            bail!(
                "{}: the deploy user must be a non-root user name (deploy tools like scap \
                 refuse to run as root)",
                at("user")
            );
        }
        if !(0.0..=1.0).contains(&self.rollout.max_failed) {
            bail!(
                "{}: {} is not a share between 0.0 and 1.0",
                at("max_failed"),
                self.rollout.max_failed
            );
        }
        if self.rollout.batch_size == 0 {
            bail!("{}: must be at least 1", at("batch_size"));
        }
        // A promote renews its lock's lease before each batch: a batch must
        // end well within one lease.
        let max_timeout = crate::ledger::LOCK_LEASE_SECS as u64 / 2;
        if !(1..=max_timeout).contains(&self.rollout.timeout_secs) {
            bail!(
                "{}: rollout.timeout_secs = {} is not between 1 and {max_timeout} seconds (half \
                 the production lock's lease, renewed at each batch)",
                at("timeout_secs"),
                self.rollout.timeout_secs
            );
        }
        if self.rollout.tool == RolloutTool::Debdeploy {
            let update_type = self.rollout.update_type.as_str();
            if !DEBDEPLOY_UPDATE_TYPES.contains(&update_type) {
                let why = if ["daemon-cluster", "reboot", "reboot-cluster"].contains(&update_type) {
                    "debdeploy accepts it in a spec, then crashes with nothing deployed"
                } else {
                    "debdeploy does not know it"
                };
                bail!(
                    "{}: `{update_type}` cannot be rolled out ({why}); use one of {} \
                     (restart or reboot the hosts yourself afterwards)",
                    at("update_type"),
                    DEBDEPLOY_UPDATE_TYPES.join(", ")
                );
            }
            if self.rollout.cumin_config != CUMIN_DEFAULT_CONFIG {
                bail!(
                    "{}: debdeploy always reads cumin's {CUMIN_DEFAULT_CONFIG} (it has no option \
                     for another file), so its aliases and the harness's checks through `{}` \
                     would resolve hosts from different files; remove the key, or set \
                     rollout.tool = \"cumin\" to use another cumin configuration",
                    at("cumin_config"),
                    self.rollout.cumin_config
                );
            }
        }
        let shares = [
            ("change_coverage_min", Some(self.gate.change_coverage_min)),
            ("total_min", self.coverage.total_min),
            ("changed_min", self.coverage.changed_min),
        ];
        for (key, share) in shares {
            if let Some(share) = share.filter(|s| !(0.0..=1.0).contains(s)) {
                bail!(
                    "{}: {share} is not a share between 0.0 and 1.0 (0.9 means 90%)",
                    at(key)
                );
            }
        }
        if let Some(floor) = self.gate.evidence_floor_secs {
            if floor > self.gate.min_soak_secs {
                bail!(
                    "{}: {floor} is longer than gate.min_soak_secs ({}); the evidence floor \
                     is the shorter soak",
                    at("evidence_floor_secs"),
                    self.gate.min_soak_secs
                );
            }
        }
        for c in &self.gate.checks {
            if let GateCheck::Prometheus { op, .. } = c {
                if !["<", "<=", ">", ">="].contains(&op.as_str()) {
                    bail!("{}: `{op}` is not one of <, <=, >, >=", at("op"));
                }
            }
        }
        let mut named: Vec<&str> = Vec::new();
        for binary in &self.package.binaries {
            if named.contains(&binary.name.as_str()) {
                bail!(
                    "{}: `{}` is listed twice; give each binary once, with the hosts that carry \
                     it (hosts = \"all\" for every host)",
                    at("binaries"),
                    binary.name
                );
            }
            named.push(&binary.name);
        }
        if !self.package.binaries.is_empty() {
            let roles = [
                (Hosts::Deploy, "the deploy host", true),
                (Hosts::Canaries, "the canaries", true),
                (Hosts::Apps, "the app hosts", self.fleet.apps > 0),
            ];
            for (role, what, present) in roles {
                if present && !self.package.binaries.iter().any(|b| b.hosts.covers(role)) {
                    bail!(
                        "{}: no binary package goes on {what}, so verify would have nothing to \
                         install there\n  fix: give one of {} hosts = \"{}\" (or \"all\")",
                        at("binaries"),
                        named.join(", "),
                        serde_plain_hosts(role)
                    );
                }
            }
        }
        if self.verify.scenarios.is_empty() && self.verify.custom.is_empty() {
            bail!(
                "{}: no scenario to run: verify is the only evidence a build works before \
                 it reaches production, so it cannot be turned off.\n  fix: list presets \
                 (e.g. verify.scenarios = [\"fresh-install\"]) or add a [[verify.custom]] \
                 scenario for a tool that does not sync git revisions",
                at("scenarios")
            );
        }
        self.validate_custom(text)
    }

    /// Custom scenarios: unique names, one action a step with only its keys,
    /// known hosts and placeholders, patterns that compile.
    fn validate_custom(&self, text: &str) -> Result<()> {
        let placeholder = regex::Regex::new(r"\{([A-Za-z_][A-Za-z0-9_]*)\}").unwrap();
        let mut seen: Vec<&str> = Vec::new();
        for scenario in &self.verify.custom {
            let name = scenario.name.as_str();
            // Messages point at the first line holding `needle` from the
            // step on (a step starts a line with `{`, or is a table of its
            // own), or from the scenario's name on.
            let at = |step: Option<usize>, needle: &str| -> String {
                let lines: Vec<&str> = text.lines().collect();
                let named = lines
                    .iter()
                    .position(|l| l.contains(&format!("\"{name}\"")))
                    .unwrap_or(0);
                let from = step.and_then(|n| {
                    (named..lines.len())
                        .filter(|&i| {
                            let l = lines[i].trim_start();
                            l.starts_with('{') || l.starts_with("[[verify.custom.steps]]")
                        })
                        .nth(n)
                });
                let from = from.unwrap_or(named);
                let line = (from..lines.len())
                    .find(|&i| lines[i].contains(needle))
                    .unwrap_or(from)
                    + 1;
                let step = step.map(|i| format!(" step {}", i + 1)).unwrap_or_default();
                format!(
                    "{}:{line}: verify.custom \"{name}\"{step}",
                    self.path.display()
                )
            };
            if name.trim().is_empty() {
                bail!("{}: the name is empty; name the scenario", at(None, "name"));
            }
            if ScenarioKind::ALL.iter().any(|k| k.name() == name) || seen.contains(&name) {
                bail!(
                    "{}: the name is taken (by a preset or another custom scenario); \
                     give each scenario its own name",
                    at(None, name)
                );
            }
            seen.push(name);
            if scenario.steps.is_empty() {
                bail!("{}: has no steps; add steps = [ ... ]", at(None, "steps"));
            }
            for (i, step) in scenario.steps.iter().enumerate() {
                let step_at = |needle: &str| at(Some(i), needle);
                let Some(action) = step.action() else {
                    bail!(
                        "{}: a step does exactly one of install, run, stop, start; \
                         split it into one step each, or name the one it does",
                        step_at("=")
                    );
                };
                let is_run = matches!(action, StepAction::Run(_));
                let misplaced = [
                    ("user", step.user.is_some() && !is_run),
                    ("expect_exit", step.expect_exit.is_some() && !is_run),
                    ("expect_output", step.expect_output.is_some() && !is_run),
                    (
                        "on",
                        step.on.is_some()
                            && matches!(action, StepAction::Stop(_) | StepAction::Start(_)),
                    ),
                ];
                if let Some((key, _)) = misplaced.iter().find(|(_, bad)| *bad) {
                    bail!(
                        "{}: key {key} does not go with this step (user, expect_exit and \
                         expect_output go with run; stop and start name their host \
                         themselves); remove it",
                        step_at(key)
                    );
                }
                let on = step.on();
                let Some(hosts) = self.resolve_on(on) else {
                    bail!(
                        "{}: `{on}` is no role or host of the fleet; use one of deploy, \
                         canaries, apps, targets, all, or a host name: {}",
                        step_at(&format!("\"{on}\"")),
                        self.host_names().join(", ")
                    );
                };
                let stops = matches!(action, StepAction::Stop(_) | StepAction::Start(_));
                let deploy = format!("{}1", self.fleet.deploy_prefix);
                let takes_deploy = match &hosts {
                    On::Role(role) => matches!(role, Hosts::All | Hosts::Deploy),
                    On::Host(host) => *host == deploy,
                };
                if stops && takes_deploy {
                    bail!(
                        "{}: `{on}` takes in the deploy host, which serves the fleet's apt \
                         and deployment repositories; stop and start targets only",
                        step_at(&format!("\"{on}\""))
                    );
                }
                for template in step.templates() {
                    for found in placeholder.captures_iter(template) {
                        let word = &found[1];
                        if !CUSTOM_PLACEHOLDERS.contains(&word) {
                            bail!(
                                "{}: unknown placeholder {{{word}}} in `{template}`; the \
                                 placeholders are {}",
                                step_at(&format!("{{{word}}}")),
                                CUSTOM_PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
                            );
                        }
                    }
                }
                if let Some(pattern) = &step.expect_output {
                    let sample = placeholder.replace_all(pattern, "x");
                    if let Err(e) = regex::RegexBuilder::new(&sample).multi_line(true).build() {
                        bail!(
                            "{}: expect_output `{pattern}` is not a regular expression: {e}",
                            step_at("expect_output")
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The host names of the fleet release.toml describes, deploy host first.
    pub fn host_names(&self) -> Vec<String> {
        let f = &self.fleet;
        let mut names = vec![format!("{}1", f.deploy_prefix)];
        names.extend((1..=f.canaries).map(|i| format!("{}{i}", f.canary_prefix)));
        names.extend((1..=f.apps).map(|i| format!("{}{i}", f.app_prefix)));
        names
    }

    /// What a custom step's `on` names: a role, or one host of the fleet.
    pub fn resolve_on(&self, on: &str) -> Option<On> {
        let role = match on {
            "all" => Hosts::All,
            "deploy" => Hosts::Deploy,
            "targets" => Hosts::Targets,
            "canaries" => Hosts::Canaries,
            "apps" => Hosts::Apps,
            host => {
                return self
                    .host_names()
                    .iter()
                    .any(|n| n == host)
                    .then(|| On::Host(host.to_string()))
            }
        };
        Some(On::Role(role))
    }

    /// The source package's name (what debdeploy's spec and the ledger name).
    pub fn package_name(&self) -> &str {
        self.package.name.as_deref().unwrap_or("unnamed")
    }

    /// The binary packages (filled in by `load`; the source's name alone
    /// before that).
    pub fn binary_names(&self) -> Vec<&str> {
        if self.package.binaries.is_empty() {
            return vec![self.package_name()];
        }
        self.package
            .binaries
            .iter()
            .map(|b| b.name.as_str())
            .collect()
    }

    /// The binaries a fleet host of `role` carries.
    pub fn binaries_on(&self, role: Hosts) -> Vec<&str> {
        if self.package.binaries.is_empty() {
            return vec![self.package_name()];
        }
        self.package
            .binaries
            .iter()
            .filter(|b| b.hosts.covers(role))
            .map(|b| b.name.as_str())
            .collect()
    }

    /// The version files (none before `load` fills in the default).
    pub fn version_files(&self) -> &[VersionFile] {
        self.package.version_files.as_deref().unwrap_or_default()
    }

    /// The Debian revision a release gets: release.toml's, else the
    /// changelog's (filled in by `load`), else `1`.
    pub fn debian_revision(&self) -> &str {
        self.package.debian_revision.as_deref().unwrap_or("1")
    }

    /// The new changelog entry's distribution and urgency: release.toml's,
    /// else the newest entry's (filled in by `load`), else Debian's usual.
    pub fn distribution(&self) -> &str {
        self.package.distribution.as_deref().unwrap_or("unstable")
    }

    pub fn urgency(&self) -> &str {
        self.package.urgency.as_deref().unwrap_or("medium")
    }

    /// Full Debian version for an upstream version: `4.12.0` -> `4.12.0-1`.
    pub fn debian_version(&self, upstream: &str) -> String {
        match self.debian_revision() {
            "" => upstream.to_string(),
            revision => format!("{upstream}-{revision}"),
        }
    }

    /// The release tag of an upstream version. A `~` (`1.0~rc1`), which git
    /// refuses in a tag name, is written `_` as DEP-14 does; a Debian
    /// version never holds a `_`, so the tag reads back unambiguously.
    pub fn tag_for(&self, upstream: &str) -> String {
        self.package
            .tag_format
            .replace("{version}", &upstream.replace('~', "_"))
    }

    /// The inverse of `tag_for`: the upstream version a tag names, if it is
    /// one of ours.
    pub fn version_of_tag(&self, tag: &str) -> Option<String> {
        let (pre, post) = self.package.tag_format.split_once("{version}")?;
        let version = tag.strip_prefix(pre)?.strip_suffix(post)?;
        Some(version.replace('_', "~"))
    }

    /// Template variables shared by fleet files, commands and the sync.
    pub fn template_vars(&self) -> BTreeMap<&'static str, String> {
        let f = &self.fleet;
        let canaries: Vec<String> = (1..=f.canaries)
            .map(|i| format!("{}{i}", f.canary_prefix))
            .collect();
        let apps: Vec<String> = (1..=f.apps)
            .map(|i| format!("{}{i}", f.app_prefix))
            .collect();
        let targets: Vec<String> = canaries.iter().chain(&apps).cloned().collect();
        let repo_dir = self.sync.repo_dir.replace("{repo}", &self.sync.repo);
        BTreeMap::from([
            ("user", f.user.clone()),
            ("deploy_host", format!("{}1", f.deploy_prefix)),
            ("repo", self.sync.repo.clone()),
            ("repo_dir", repo_dir),
            ("package", self.package_name().to_string()),
            ("canaries", canaries.join("\n")),
            ("apps", apps.join("\n")),
            ("targets", targets.join("\n")),
            ("http_port", f.http_port.to_string()),
        ])
    }

    /// Replaces `{name}` for every template variable (and `extra`).
    pub fn render(&self, template: &str, extra: &[(&str, &str)]) -> String {
        let mut out = template.to_string();
        for (k, v) in self.template_vars() {
            out = out.replace(&format!("{{{k}}}"), &v);
        }
        for (k, v) in extra {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

/// Line of the first `key =` in the text, for messages about values that
/// parsed but do not make sense.
fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .map(|rest| rest.trim_start().starts_with('='))
                .unwrap_or(false)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("proj/release.toml"))
    }

    #[test]
    fn empty_file_takes_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.fleet.canaries, 2);
        assert_eq!(c.fleet.apps, 4);
        assert_eq!(c.verify.scenarios.len(), 5);
        assert_eq!(c.gate.min_soak_secs, 86400);
        assert_eq!(c.debian_version("1.2.3"), "1.2.3-1");
    }

    #[test]
    fn unknown_key_names_file_key_and_line() {
        let err = parse("[package]\nname = \"x\"\nversoin_files = []\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("proj/release.toml:3:"), "{msg}");
        assert!(msg.contains("versoin_files"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse("[fleet]\n\ncanaries = \"two\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("proj/release.toml:3:"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn missing_required_value_is_named() {
        let err = parse("[[package.version_files]]\npath = \"x/version.py\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("missing field `line`"), "{msg}");
        assert!(msg.starts_with("proj/release.toml:1:"), "{msg}");
    }

    #[test]
    fn senseless_value_names_key_and_line() {
        let err = parse("[fleet]\nuser = \"root\"\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("proj/release.toml:2: key user"), "{msg}");
        let err =
            parse("[[package.version_files]]\npath = \"v.py\"\nline = \"V = 1\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("placeholder"));
    }

    #[test]
    fn missing_file_says_how_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(dir.path()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("no release.toml in"), "{msg}");
        assert!(msg.contains("fix: create"), "{msg}");
    }

    #[test]
    fn lintian_suppress_takes_tag_names_only() {
        let c =
            parse("[build]\nlintian_suppress = [\"bad-distribution-in-changes-file\"]\n").unwrap();
        assert_eq!(
            c.build.lintian_suppress,
            ["bad-distribution-in-changes-file"]
        );
        let err = parse("[build]\n\nlintian_suppress = [\"x; rm -rf /\"]\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("proj/release.toml:3: key lintian_suppress: `x; rm -rf /` is not"),
            "{msg}"
        );
    }

    #[test]
    fn binaries_are_placed_by_role_and_checked_against_debian_control() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("debian")).unwrap();
        std::fs::write(
            dir.path().join("debian/control"),
            "Source: split\n\nPackage: split-server\nArchitecture: all\n\n\
             Package: split-agent\nArchitecture: all\n",
        )
        .unwrap();
        let load = |toml: &str| {
            std::fs::write(dir.path().join(FILE_NAME), toml).unwrap();
            Config::load(dir.path()).map_err(|e| format!("{e:#}"))
        };
        let placed = "[[package.binaries]]\nname = \"split-server\"\nhosts = \"deploy\"\n\
                      [[package.binaries]]\nname = \"split-agent\"\nhosts = \"targets\"\n";
        let c = load(placed).unwrap();
        assert_eq!(c.package_name(), "split");
        assert_eq!(c.binary_names(), ["split-server", "split-agent"]);
        assert_eq!(c.binaries_on(Hosts::Deploy), ["split-server"]);
        assert_eq!(c.binaries_on(Hosts::Canaries), ["split-agent"]);
        assert_eq!(c.binaries_on(Hosts::Apps), ["split-agent"]);

        // Several binaries and no word on where they go: no silent pick.
        let msg = load("").unwrap_err();
        assert!(
            msg.contains("the source split builds 2 binary packages (split-server, split-agent)"),
            "{msg}"
        );
        assert!(
            msg.contains("name = \"split-agent\"\n    hosts = \"all\""),
            "{msg}"
        );

        // A binary the source does not build, with its line.
        let msg = load(&placed.replace("split-agent", "split-client")).unwrap_err();
        assert!(
            msg.contains("release.toml:5: key package.binaries"),
            "{msg}"
        );
        assert!(
            msg.contains(
                "builds no binary package `split-client`; debian/control declares \
                          split-server, split-agent"
            ),
            "{msg}"
        );

        // A role that gets nothing to install.
        let msg = load(&placed.replace("\"targets\"", "\"canaries\"")).unwrap_err();
        assert!(
            msg.contains("key binaries: no binary package goes on the app hosts"),
            "{msg}"
        );
        assert!(msg.contains("hosts = \"apps\""), "{msg}");

        // One binary per source needs no word.
        std::fs::write(
            dir.path().join("debian/control"),
            "Source: solo\n\nPackage: solo\nArchitecture: all\n",
        )
        .unwrap();
        let c = load("").unwrap();
        assert_eq!(c.binaries_on(Hosts::Deploy), ["solo"]);
        assert_eq!(c.binaries_on(Hosts::Apps), ["solo"]);
    }

    #[test]
    fn absent_keys_take_the_changelog_s_conventions_set_ones_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("debian")).unwrap();
        std::fs::write(
            dir.path().join("debian/changelog"),
            "tool (2.1-1+deb12u1) bookworm-wikimedia; urgency=high\n\n  * x\n\n \
             -- A B <a@example.org>  Mon, 01 Jan 2024 10:00:00 +0000\n",
        )
        .unwrap();
        let load = |toml: &str| {
            std::fs::write(dir.path().join(FILE_NAME), toml).unwrap();
            Config::load(dir.path()).unwrap()
        };
        let c = load("[package]\nname = \"tool\"\n");
        assert_eq!(c.debian_version("2.2"), "2.2-1+deb12u1");
        assert_eq!(c.distribution(), "bookworm-wikimedia");
        assert_eq!(c.urgency(), "high");
        assert_eq!(c.version_files()[0].path, Path::new("tool/version.py"));
        let c = load(
            "[package]\nname = \"tool\"\ndebian_revision = \"\"\ndistribution = \
             \"unstable\"\nurgency = \"low\"\nversion_files = []\n",
        );
        assert_eq!(c.debian_version("2.2"), "2.2");
        assert_eq!(c.distribution(), "unstable");
        assert_eq!(c.urgency(), "low");
        assert!(c.version_files().is_empty());
    }

    #[test]
    fn tags_round_trip() {
        let c = parse("[package]\ntag_format = \"v{version}\"\n").unwrap();
        assert_eq!(c.tag_for("1.2.3"), "v1.2.3");
        assert_eq!(c.version_of_tag("v1.2.3").as_deref(), Some("1.2.3"));
        assert_eq!(c.version_of_tag("1.2.3"), None);
        // DEP-14: git refuses `~` in a tag name.
        assert_eq!(c.tag_for("1.0~rc1"), "v1.0_rc1");
        assert_eq!(c.version_of_tag("v1.0_rc1").as_deref(), Some("1.0~rc1"));
    }

    const CUSTOM: &str = r#"[verify]
scenarios = []

[[verify.custom]]
name = "agent-talks-to-server"
steps = [
    { install = "new" },
    { run = "my-tool ping {targets}", user = "root", expect_output = "ok .* {version}" },
    { stop = "app1" },
    { run = "my-tool ping {targets}", on = "canaries", expect_exit = "non-zero" },
    { start = "app1" },
]
"#;

    #[test]
    fn custom_scenarios_parse_with_their_defaults() {
        let c = parse(CUSTOM).unwrap();
        let steps = &c.verify.custom[0].steps;
        assert_eq!(steps[0].action(), Some(StepAction::Install(Release::New)));
        assert_eq!(steps[0].on(), "all");
        assert_eq!(steps[1].on(), "deploy", "a command runs on the deploy host");
        assert_eq!(steps[2].action(), Some(StepAction::Stop("app1")));
        assert_eq!(c.resolve_on(steps[2].on()), Some(On::Host("app1".into())));
        assert_eq!(
            steps[3].expect_exit,
            Some(ExpectExit::Word(ExitWord::NonZero))
        );
        assert!(steps[3].expect_exit.unwrap().accepts(255));
        assert!(!steps[3].expect_exit.unwrap().accepts(0));
        assert!(!c.verify.custom[0].needs_previous());
    }

    /// The error for a custom scenario's bad step, with `from` replaced by
    /// `to` in CUSTOM.
    fn custom_error(from: &str, to: &str) -> String {
        let text = CUSTOM.replace(from, to);
        assert_ne!(text, CUSTOM, "{from} is in CUSTOM");
        format!("{:#}", parse(&text).unwrap_err())
    }

    #[test]
    fn unknown_custom_step_names_file_line_and_key() {
        let msg = custom_error("{ stop = \"app1\" }", "{ reboot = \"app1\" }");
        assert!(msg.starts_with("proj/release.toml:9:"), "{msg}");
        assert!(msg.contains("unknown field `reboot`"), "{msg}");
        assert!(msg.contains("`run`"), "the known steps are listed: {msg}");
        let msg = custom_error("{ stop = \"app1\" }", "{ on = \"app1\" }");
        assert!(
            msg.starts_with("proj/release.toml:9: verify.custom \"agent-talks-to-server\" step 3"),
            "{msg}"
        );
        assert!(
            msg.contains("exactly one of install, run, stop, start"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_placeholder_names_file_line_and_the_known_ones() {
        let msg = custom_error("ping {targets}\", user", "ping {hosts}\", user");
        assert!(
            msg.starts_with("proj/release.toml:8: verify.custom \"agent-talks-to-server\" step 2"),
            "{msg}"
        );
        assert!(msg.contains("unknown placeholder {hosts}"), "{msg}");
        assert!(msg.contains("{deploy_host}"), "{msg}");
        let msg = custom_error("ok .* {version}", "ok ({version}");
        assert!(msg.contains("is not a regular expression"), "{msg}");
    }

    #[test]
    fn step_on_an_unknown_role_or_host_names_the_ones_there_are() {
        let msg = custom_error("on = \"canaries\"", "on = \"canary\"");
        assert!(
            msg.starts_with("proj/release.toml:10: verify.custom \"agent-talks-to-server\" step 4"),
            "{msg}"
        );
        assert!(msg.contains("`canary` is no role or host"), "{msg}");
        assert!(msg.contains("deploy1, canary1, canary2, app1"), "{msg}");
        let msg = custom_error("{ stop = \"app1\" }", "{ stop = \"app9\" }");
        assert!(msg.contains("proj/release.toml:9:"), "{msg}");
        assert!(msg.contains("`app9` is no role or host"), "{msg}");
        let msg = custom_error("{ stop = \"app1\" }", "{ stop = \"deploy1\" }");
        assert!(msg.contains("stop and start targets only"), "{msg}");
    }

    #[test]
    fn no_scenario_at_all_is_refused_with_the_fix() {
        let err = parse("[verify]\nscenarios = []\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("proj/release.toml:2: key scenarios: no scenario to run"),
            "{msg}"
        );
        assert!(msg.contains("cannot be turned off"), "{msg}");
        assert!(msg.contains("fix:"), "{msg}");
    }

    #[test]
    fn coverage_and_evidence_keys_parse_and_are_checked() {
        let c = parse(
            "[coverage]\nchanged_min = 1.0\n[gate]\nevidence_floor_secs = 3600\n\
             [[gate.checks]]\nkind = \"evidence\"\nname = \"successful syncs\"\n\
             command = \"echo 3\"\nthreshold = 10\n",
        )
        .unwrap();
        assert!(
            c.coverage.enabled,
            "on by default: a Python tool is measured"
        );
        assert_eq!(c.coverage.changed_min, Some(1.0));
        assert_eq!(c.gate.evidence_floor_secs, Some(3600));
        assert!(
            matches!(&c.gate.checks[0], GateCheck::Evidence { threshold, .. } if *threshold == 10.0)
        );
        let err = parse("[coverage]\n\ntotal_min = 80\n").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("proj/release.toml:3: key total_min"),
            "{msg}"
        );
        assert!(msg.contains("0.9 means 90%"), "{msg}");
        let err = parse("[gate]\nmin_soak_secs = 600\nevidence_floor_secs = 3600\n").unwrap_err();
        assert!(format!("{err:#}").contains("shorter soak"), "{err:#}");
    }

    #[test]
    fn rollout_refuses_what_debdeploy_cannot_do() {
        for update_type in ["daemon-cluster", "reboot", "reboot-cluster"] {
            let err = parse(&format!("[rollout]\nupdate_type = \"{update_type}\"\n")).unwrap_err();
            let msg = format!("{err:#}");
            assert!(
                msg.starts_with("proj/release.toml:2: key update_type"),
                "{msg}"
            );
            assert!(msg.contains("crashes with nothing deployed"), "{msg}");
            assert!(msg.contains("use one of tool, daemon-direct"), "{msg}");
        }
        let err = parse("[rollout]\nupdate_type = \"upgrade\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("does not know it"), "{err:#}");
        for update_type in DEBDEPLOY_UPDATE_TYPES {
            parse(&format!("[rollout]\nupdate_type = \"{update_type}\"\n")).unwrap();
        }
        let other = "[rollout]\ncumin_config = \"/etc/cumin/config-installer.yaml\"\n";
        let msg = format!("{:#}", parse(other).unwrap_err());
        assert!(
            msg.starts_with("proj/release.toml:2: key cumin_config"),
            "{msg}"
        );
        assert!(
            msg.contains("always reads cumin's /etc/cumin/config.yaml"),
            "{msg}"
        );
        assert!(msg.contains("rollout.tool = \"cumin\""), "{msg}");
        for bad in ["0", "7200"] {
            let msg = format!(
                "{:#}",
                parse(&format!("[rollout]\ntimeout_secs = {bad}\n")).unwrap_err()
            );
            assert!(
                msg.contains(&format!(
                    "rollout.timeout_secs = {bad} is not between 1 and 3600"
                )),
                "{msg}"
            );
        }
        // The cumin tool takes any configuration, and has no update_type.
        parse(&format!(
            "{other}tool = \"cumin\"\nupdate_type = \"reboot\"\n"
        ))
        .unwrap();
    }
}
