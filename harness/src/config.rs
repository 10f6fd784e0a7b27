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
    /// Files that carry the version. Default: `<name>/version.py` with
    /// `__version__ = "{version}"`, as scap wrote it.
    pub version_files: Vec<VersionFile>,
    /// Debian revision appended to the upstream version (`4.12.0` -> `4.12.0-1`).
    /// Empty for a native package.
    pub debian_revision: String,
    /// The branch releases are cut from.
    pub release_branch: String,
    /// How a release tag is named; `{version}` is the upstream version.
    pub tag_format: String,
    pub distribution: String,
    pub urgency: String,
    /// `Name <email>` for the changelog trailer; default: the git identity.
    pub maintainer: Option<String>,
}

impl Default for Package {
    fn default() -> Self {
        Package {
            name: None,
            version_files: Vec::new(),
            debian_revision: "1".into(),
            release_branch: "main".into(),
            tag_format: "{version}".into(),
            distribution: "unstable".into(),
            urgency: "medium".into(),
            maintainer: None,
        }
    }
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
    pub scenarios: Vec<ScenarioKind>,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            scenarios: ScenarioKind::ALL.to_vec(),
        }
    }
}

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
    /// Puts the verified .deb into the apt repository production installs
    /// from, before the canaries (run here with `sh -c`; `{deb}` is its path,
    /// `{version}` and `{package}` as usual). Empty: the repository is
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
            cumin_config: "/etc/cumin/config.yaml".into(),
            command_prefix: Vec::new(),
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
        config.complete(project)?;
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
    fn complete(&mut self, project: &Path) -> Result<()> {
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
        if self.package.version_files.is_empty() && self.build.builder != Builder::CargoDeb {
            let name = self.package_name().replace('-', "_");
            self.package.version_files.push(VersionFile {
                path: PathBuf::from(format!("{name}/version.py")),
                line: "__version__ = \"{version}\"".into(),
            });
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
        for (i, vf) in self.package.version_files.iter().enumerate() {
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
        Ok(())
    }

    pub fn package_name(&self) -> &str {
        self.package.name.as_deref().unwrap_or("unnamed")
    }

    /// Full Debian version for an upstream version: `4.12.0` -> `4.12.0-1`.
    pub fn debian_version(&self, upstream: &str) -> String {
        if self.package.debian_revision.is_empty() {
            upstream.to_string()
        } else {
            format!("{upstream}-{}", self.package.debian_revision)
        }
    }

    pub fn tag_for(&self, upstream: &str) -> String {
        self.package.tag_format.replace("{version}", upstream)
    }

    /// The inverse of `tag_for`: the upstream version a tag names, if it is
    /// one of ours.
    pub fn version_of_tag<'a>(&self, tag: &'a str) -> Option<&'a str> {
        let (pre, post) = self.package.tag_format.split_once("{version}")?;
        tag.strip_prefix(pre)?.strip_suffix(post)
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
    fn tags_round_trip() {
        let c = parse("[package]\ntag_format = \"v{version}\"\n").unwrap();
        assert_eq!(c.tag_for("1.2.3"), "v1.2.3");
        assert_eq!(c.version_of_tag("v1.2.3"), Some("1.2.3"));
        assert_eq!(c.version_of_tag("1.2.3"), None);
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
}
