//! Coverage of the released tool, measured on the verify fleet. For a tool
//! written in Python, every process of the tool on every host runs under
//! coverage.py (a `.pth` startup hook, so what the tool starts over ssh on
//! the targets is measured too); the .deb installed is the one built, not an
//! instrumented copy. Owns the instrumentation of the hosts, what coverage.py
//! decides about the new version's files (learned once per run, on the
//! template), the collection of the hosts' line data after each scenario and
//! its combination (lines translated to statements here, paths mapped back to
//! the source tree), change coverage against the previous release tag, the
//! floors, and the Cobertura file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, Hosts};
use crate::ledger::CoverageFigures;
use crate::support::debian::{self, BuiltDeb};
use crate::support::docker;
use crate::support::git::Repo;
use crate::support::process;
use crate::verify::fleet::{Fleet, Host, APT_DIR};

/// Where Debian installs Python modules; measured paths are mapped back to
/// the source tree by what follows it.
const DIST_PACKAGES: &str = "/usr/lib/python3/dist-packages/";
/// One directory per installed version of the tool (mode 1777: the tool runs
/// as the deploy user on the targets), so the previous release's data is
/// never credited to the new source.
const DATA_ROOT: &str = "/var/tmp/release-harness-coverage";
const PTH_FILE: &str = "/usr/lib/python3/dist-packages/zz_release_harness_coverage.pth";
/// The collector the .pth imports (`coverage_hook.py`, filled in).
const HOOK_MODULE: &str = "release_harness_coverage";
const HOOK_FILE: &str = "/usr/lib/python3/dist-packages/release_harness_coverage.py";
/// Set by the harness's own coverage.py runs on a host: the collector stays
/// out of their way.
const HOOK_OFF: &str = "RELEASE_HARNESS_COVERAGE=off";
/// Records the installed version after every dpkg run (apt's Post-Invoke).
const VERSION_HOOK: &str = "/usr/local/sbin/release-harness-coverage-version";
const APT_HOOK: &str = "/etc/apt/apt.conf.d/99release-harness-coverage";
/// Scratch directory for the import-only floor and the statements.
const IMPORT_DIR: &str = "/var/tmp/release-harness-import";

/// The released tool, as coverage.py sees it once installed.
#[derive(Debug, Clone)]
pub struct Instrument {
    pub package: String,
    pub version: String,
    /// Top-level Python modules the .debs install (`minideploy`, `scap`).
    pub modules: Vec<String>,
    /// The binary packages whose installed version names the data directory.
    binaries: Vec<String>,
    /// The .debs' file names in the fleet's apt repository.
    deb_names: Vec<String>,
    /// What coverage.py decides about the new version's files, learned on
    /// the template with the import-only floor and read by every scenario's
    /// `collect` (clones share it), or why it is not known.
    source: Arc<OnceLock<std::result::Result<SourceStatements, String>>>,
}

/// Whether verify measures coverage, and if not, why.
#[derive(Debug, Clone)]
pub enum Plan {
    Measure(Instrument),
    Off(String),
}

/// Decides from the built .debs: a release that installs Python modules is
/// measured (unless `coverage.enabled = false`), anything else is not.
pub fn plan(config: &Config, debs: &[PathBuf], version: &str) -> Plan {
    if !config.coverage.enabled {
        return Plan::Off(format!(
            "coverage.enabled = false in {}",
            config.path.display()
        ));
    }
    let mut listing = String::new();
    for deb in debs {
        match process::cmd(
            "dpkg-deb",
            [std::ffi::OsStr::new("--contents"), deb.as_os_str()],
        )
        .read()
        {
            Ok(l) => listing.push_str(&l),
            Err(e) => return Plan::Off(format!("cannot list {}: {e:#}", deb.display())),
        }
        listing.push('\n');
    }
    let modules = python_modules(&listing);
    if modules.is_empty() {
        return Plan::Off(format!(
            "{} {version} installs no Python module under {DIST_PACKAGES}: coverage is \
             measured for Python tools only, so there are no coverage figures and the \
             evidence soak floor is unavailable",
            config.package_name()
        ));
    }
    Plan::Measure(Instrument {
        package: config.package_name().to_string(),
        version: version.to_string(),
        modules,
        binaries: config
            .binary_names()
            .into_iter()
            .map(str::to_string)
            .collect(),
        deb_names: debs
            .iter()
            .map(|d| {
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect(),
        source: Arc::default(),
    })
}

/// Top-level modules under dist-packages in `dpkg-deb --contents` output
/// (packages as directories, single-file modules as `name.py`).
pub fn python_modules(listing: &str) -> Vec<String> {
    let prefix = format!(".{DIST_PACKAGES}");
    let mut modules = BTreeSet::new();
    for line in listing.lines() {
        let Some(rest) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(prefix.as_str()))
        else {
            continue;
        };
        let first = rest.split('/').next().unwrap_or("");
        let is_dir = rest.contains('/');
        let keep = if is_dir {
            !first.ends_with(".egg-info")
                && !first.ends_with(".dist-info")
                && first != "__pycache__"
        } else {
            first.ends_with(".py")
        };
        if !first.is_empty() && keep {
            modules.insert(first.to_string());
        }
    }
    modules.into_iter().collect()
}

impl Instrument {
    /// The files that make every python3 on a host measure the tool.
    fn host_files(&self) -> Vec<docker::FileEntry> {
        // Measured: the files of these modules under dist-packages, by
        // prefix (a package's directory, or a single-file module).
        let prefixes: Vec<String> = self
            .modules
            .iter()
            .map(|m| {
                if m.ends_with(".py") {
                    format!("{DIST_PACKAGES}{m}")
                } else {
                    format!("{DIST_PACKAGES}{m}/")
                }
            })
            .collect();
        let names: Vec<&str> = self
            .modules
            .iter()
            .map(|m| m.strip_suffix(".py").unwrap_or(m))
            .collect();
        // JSON lists of strings are Python literals.
        let collector = include_str!("coverage_hook.py")
            .replace("@MODULES@", &serde_json::json!(names).to_string())
            .replace("@PREFIXES@", &serde_json::json!(prefixes).to_string())
            .replace("@DATA_ROOT@", DATA_ROOT);
        // Processes started over ssh do not inherit the environment, so the
        // start-up hook is a .pth that every python3 reads; it only imports
        // the collector, which waits for the tool to be imported.
        let pth = format!("import {HOOK_MODULE}\n");
        let installed = format!("{DATA_ROOT}/installed");
        let hook = format!(
            "#!/bin/sh\n\
             # After every dpkg run: the installed version of {pkg} names the\n\
             # directory its processes write their coverage data to.\n\
             v=$({query} | awk '$1 ~ /^.i/ {{ print $NF; exit }}')\n\
             if [ -n \"$v\" ]; then\n\
             \x20 install -d -m 1777 {DATA_ROOT}/\"$v\"\n\
             \x20 printf '%s\\n' \"$v\" > {installed}\n\
             else\n\
             \x20 rm -f {installed}\n\
             fi\n",
            pkg = self.package,
            query = debian::installed_query(
                &self.binaries.iter().map(String::as_str).collect::<Vec<_>>()
            )
        );
        let apt = format!("DPkg::Post-Invoke {{ \"{VERSION_HOOK} || true\"; }};\n");
        vec![
            (HOOK_FILE.into(), collector.into_bytes(), 0o644),
            (VERSION_HOOK.into(), hook.into_bytes(), 0o755),
            (APT_HOOK.into(), apt.into_bytes(), 0o644),
            (PTH_FILE.into(), pth.into_bytes(), 0o644),
        ]
    }

    /// Instruments every host of a fresh fleet, before anything is installed.
    pub async fn prepare(&self, fleet: &Fleet) -> Result<()> {
        let files = self.host_files();
        let puts = fleet
            .hosts
            .iter()
            .map(|h| docker::put_files(&fleet.docker, &h.container, &files));
        for r in futures_util::future::join_all(puts).await {
            r?;
        }
        let all = fleet.select(Hosts::All);
        fleet
            .run_on(
                &all,
                None,
                &format!("install -d -m 1777 {DATA_ROOT} && {VERSION_HOOK}"),
            )
            .await
            .context("instrumenting the fleet for coverage")?;
        // coverage.py itself runs only where the data is combined.
        fleet
            .run(
                fleet.deploy_host(),
                None,
                "python3 -c 'import coverage' || { echo 'python3-coverage is missing \
                 from the fleet image (support::images::FLEET_PACKAGES)' >&2; exit 1; }",
            )
            .await
            .context("instrumenting the fleet for coverage")?;
        Ok(())
    }

    /// Copies the new version's line data out of every host (stopped ones
    /// too) and turns it into the lines it executed, by source path, with
    /// the statements learned on the template: no exec, no python3 per
    /// scenario. Hosts that ran the new version and left no data are named
    /// in `missing`, and so is a file the data names that is not known.
    pub async fn collect(&self, fleet: &Fleet) -> ScenarioCoverage {
        let mut found = ScenarioCoverage::default();
        let deploy = fleet.deploy_host();
        // What the fleet installed from: the built .deb, not a copy made
        // for measuring (compared with the build's sum in `finish`).
        let served = served_sha256(&fleet.docker, deploy, &self.deb_names);
        let dir = format!("{DATA_ROOT}/{}", self.version);
        let downloads = fleet
            .hosts
            .iter()
            .map(|h| data_files(&fleet.docker, h, &dir));
        let (served, downloads) =
            futures_util::future::join(served, futures_util::future::join_all(downloads)).await;
        match served {
            Ok(sums) => found.served_sha256 = sums,
            Err(e) => found.missing.push(format!("{}: {e:#}", deploy.name)),
        }
        let mut recorded = Recorded::new();
        for (h, result) in fleet.hosts.iter().zip(downloads) {
            match result {
                // The new version was never installed there.
                Ok(None) => {}
                Ok(Some(data)) if data.is_empty() => found.missing.push(format!(
                    "{}: ran {} and left no coverage data",
                    h.name, self.version
                )),
                Ok(Some(data)) => {
                    found.hosts.push(h.name.clone());
                    for (name, bytes) in data {
                        if let Err(e) = add_recorded(&mut recorded, &bytes) {
                            found.missing.push(format!(
                                "{}: {dir}/{name} is not the collector's line data: {e:#}",
                                h.name
                            ));
                        }
                    }
                }
                Err(e) => found.missing.push(format!("{}: {e:#}", h.name)),
            }
        }
        if recorded.is_empty() {
            return found;
        }
        match self.source.get() {
            Some(Ok(source)) => {
                let (lines, unknown) = combine(source, &recorded);
                found.lines = lines;
                found.missing.extend(
                    unknown
                        .into_iter()
                        .map(|why| format!("combining: {why} (files of {})", self.debs())),
                );
            }
            Some(Err(why)) => found.missing.push(format!(
                "combining: the statements of {}'s files are not known: {why}",
                self.debs()
            )),
            None => found.missing.push(format!(
                "combining: the statements of {}'s files were never learned (the \
                 import-only run on the template did not happen)",
                self.debs()
            )),
        }
        found
    }

    fn debs(&self) -> String {
        self.deb_names.join(", ")
    }

    /// The lines that importing every module of the tool runs (definitions,
    /// imports): the floor any run reaches, to read the total against. The
    /// same for every scenario, so it is measured once per run, on a host
    /// whose apt repository holds the .deb (`Fleet::publish_debs`). The same
    /// exec learns what coverage.py decides about every file of the .debs,
    /// for every scenario's `collect`.
    pub async fn import_only(&self, fleet: &Fleet) -> Result<Lines> {
        let learned = self.learn(fleet).await;
        let (import_only, source) = match learned {
            Ok(l) => (l.import_only, Ok(l.source)),
            Err(e) => {
                let why = format!("{e:#}");
                (Err(why.clone()), Err(why))
            }
        };
        // Only the first run on this instrument's template counts.
        let _ = self.source.set(source);
        match import_only {
            Ok(json) => lines_of_json(&json.to_string()),
            Err(why) => bail!("{why}"),
        }
    }

    async fn learn(&self, fleet: &Fleet) -> Result<Learned> {
        let site = format!("{IMPORT_DIR}/src{DIST_PACKAGES}");
        let include: Vec<String> = self
            .modules
            .iter()
            .map(|m| {
                if m.ends_with(".py") {
                    format!("{site}{m}")
                } else {
                    format!("{site}{m}/*")
                }
            })
            .collect();
        let rc = format!(
            "[run]\ndata_file = {IMPORT_DIR}/.coverage-import\ninclude =\n    {}\n\
             disable_warnings = no-data-collected, module-not-imported, module-not-measured\n",
            include.join("\n    ")
        );
        // Every module, each on its own: one that fails to import (it needs
        // a host's config) does not hide the others.
        let import_all = "import importlib, pkgutil, sys\n\
             for top in sys.argv[1:]:\n\
             \x20   name = top[:-3] if top.endswith('.py') else top\n\
             \x20   try:\n\
             \x20       module = importlib.import_module(name)\n\
             \x20   except Exception:\n\
             \x20       continue\n\
             \x20   for info in pkgutil.walk_packages(getattr(module, '__path__', []), name + '.'):\n\
             \x20       try:\n\
             \x20           importlib.import_module(info.name)\n\
             \x20       except Exception:\n\
             \x20           pass\n";
        // One python3 for the floor's report and the statements. Statements
        // and first lines come from coverage.py's file reporter (`lines`,
        // `translate_lines`), with the configuration the scenarios' data
        // was once combined with (`config_file=False`), so the figures are
        // what coverage.py's report of the same data would give. A file it
        // cannot analyse keeps the error, reported if a scenario ran it.
        let analyse = "import json, os, sys\n\
             import coverage\n\
             from coverage.python import PythonFileReporter\n\
             site, modules = sys.argv[1], sys.argv[2:]\n\
             out = {'source': {}}\n\
             try:\n\
             \x20   floor = coverage.Coverage(config_file='import.rc')\n\
             \x20   floor.load()\n\
             \x20   floor.json_report(outfile='import.json')\n\
             \x20   with open('import.json') as fh:\n\
             \x20       out['import_only'] = json.load(fh)\n\
             except Exception as e:\n\
             \x20   out['import_only_error'] = 'coverage json: %s: %s' % (type(e).__name__, e)\n\
             cov = coverage.Coverage(config_file=False)\n\
             cov.get_exclude_list()  # sets up the exclusions the reporters read\n\
             for top in modules:\n\
             \x20   root = os.path.join(site, top)\n\
             \x20   if top.endswith('.py'):\n\
             \x20       paths = [root]\n\
             \x20   else:\n\
             \x20       paths = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith('.py')]\n\
             \x20   for path in sorted(paths):\n\
             \x20       try:\n\
             \x20           reporter = PythonFileReporter(path, cov)\n\
             \x20           statements = sorted(reporter.lines())\n\
             \x20           first_lines = {}\n\
             \x20           for n in range(1, len(reporter.source().splitlines()) + 2):\n\
             \x20               (first,) = reporter.translate_lines([n])\n\
             \x20               if first != n:\n\
             \x20                   first_lines[n] = first\n\
             \x20           found = {'statements': statements, 'first_lines': first_lines}\n\
             \x20       except Exception as e:\n\
             \x20           found = {'error': '%s: %s' % (type(e).__name__, e)}\n\
             \x20       out['source'][os.path.relpath(path, site)] = found\n\
             json.dump(out, sys.stdout)\n";
        let deploy = fleet.deploy_host();
        fleet
            .run(deploy, None, &format!("rm -rf {IMPORT_DIR}"))
            .await?;
        docker::put_files(
            &fleet.docker,
            &deploy.container,
            &[
                (format!("{IMPORT_DIR}/import.rc"), rc.into_bytes(), 0o644),
                (
                    format!("{IMPORT_DIR}/analyse.py"),
                    analyse.as_bytes().to_vec(),
                    0o644,
                ),
            ],
        )
        .await?;
        // The .deb's files, and the import script beside its modules so that
        // they are the ones imported. Removed after: the host may be
        // snapshotted.
        let json = fleet
            .run(
                deploy,
                None,
                &format!(
                    "set -e; cd {IMPORT_DIR}; export {HOOK_OFF}\n\
                     for deb in {debs}; do dpkg-deb -x {APT_DIR}/$deb src; done\n\
                     cat > {site}release_harness_import_all.py <<'EOF'\n{import_all}EOF\n\
                     timeout 60 python3-coverage run --rcfile=import.rc \
                     {site}release_harness_import_all.py {modules} >/dev/null 2>&1 || true\n\
                     rm {site}release_harness_import_all.py\n\
                     python3 analyse.py {site} {modules}\n\
                     cd /; rm -rf {IMPORT_DIR}",
                    debs = self.deb_names.join(" "),
                    modules = self.modules.join(" ")
                ),
            )
            .await?;
        Learned::parse(&json)
    }
}

/// What the template's analysis printed.
#[derive(Debug)]
struct Learned {
    /// `coverage json` of the import-only run, or why there is none.
    import_only: std::result::Result<serde_json::Value, String>,
    source: SourceStatements,
}

impl Learned {
    fn parse(json: &str) -> Result<Learned> {
        #[derive(Deserialize)]
        struct Printed {
            import_only: Option<serde_json::Value>,
            import_only_error: Option<String>,
            source: BTreeMap<String, Analysed>,
        }
        /// A file's statements, or the error.
        #[derive(Deserialize)]
        struct Analysed {
            #[serde(default)]
            statements: BTreeSet<u32>,
            #[serde(default)]
            first_lines: BTreeMap<u32, u32>,
            error: Option<String>,
        }
        let printed: Printed = serde_json::from_str(json).with_context(|| {
            format!(
                "the analysis of the .debs' files printed no JSON: {}",
                json.chars().take(300).collect::<String>()
            )
        })?;
        Ok(Learned {
            import_only: match (printed.import_only, printed.import_only_error) {
                (Some(report), _) => Ok(report),
                (None, why) => Err(why.unwrap_or_else(|| "no import-only report".into())),
            },
            source: printed
                .source
                .into_iter()
                .map(|(path, a)| {
                    let a = match a.error {
                        Some(why) => Err(why),
                        None => Ok(FileStatements {
                            statements: a.statements,
                            first_lines: a.first_lines,
                        }),
                    };
                    (path, a)
                })
                .collect(),
        })
    }
}

/// What coverage.py decides about one source file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileStatements {
    pub statements: BTreeSet<u32>,
    /// For a line inside a statement that spans several, the statement's
    /// first line (where coverage.py counts it).
    pub first_lines: BTreeMap<u32, u32>,
}

/// By source path (`minideploy/deploy.py`); a file coverage.py could not
/// analyse has the error.
pub type SourceStatements = BTreeMap<String, std::result::Result<FileStatements, String>>;

/// The lines the collector recorded, by installed path, over every process
/// of every host.
pub type Recorded = BTreeMap<String, BTreeSet<u32>>;

/// Adds one of the collector's files (`{path: [line, ...]}`).
fn add_recorded(recorded: &mut Recorded, bytes: &[u8]) -> Result<()> {
    let data: BTreeMap<String, Vec<u32>> = serde_json::from_slice(bytes)?;
    for (path, lines) in data {
        recorded.entry(path).or_default().extend(lines);
    }
    Ok(())
}

/// The recorded lines as coverage.py's report gives them, by source path:
/// each line counted at its statement's first line. The statements are
/// coverage.py's plus any other executed line (a module's docstring): its
/// json report lists those as executed, and the figures have always counted
/// them, so they compare across releases. Also returns why a recorded file
/// has no figures (not a file of the .debs, or not analysable).
pub fn combine(source: &SourceStatements, recorded: &Recorded) -> (Lines, Vec<String>) {
    let mut lines = Lines::new();
    let mut unknown = Vec::new();
    for (measured, ran) in recorded {
        // The collector records the tool's modules under dist-packages only.
        let Some(path) = measured.strip_prefix(DIST_PACKAGES) else {
            continue;
        };
        match source.get(path) {
            Some(Ok(file)) => {
                let executed: BTreeSet<u32> = ran
                    .iter()
                    .map(|n| *file.first_lines.get(n).unwrap_or(n))
                    .collect();
                lines.insert(
                    path.to_string(),
                    FileLines::of(file.statements.clone(), executed),
                );
            }
            Some(Err(why)) => unknown.push(format!("coverage.py cannot analyse {measured}: {why}")),
            None => unknown.push(format!(
                "{measured} ran but is not a .py file of the new version"
            )),
        }
    }
    (lines, unknown)
}

/// The sha256 of each .deb in the deploy host's apt repository, by file name.
async fn served_sha256(
    docker: &bollard::Docker,
    deploy: &Host,
    deb_names: &[String],
) -> Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for name in deb_names {
        let path = format!("{APT_DIR}/{name}");
        let files = download(docker, &deploy.container, &path)
            .await?
            .with_context(|| format!("{path} is missing from the fleet's apt repository"))?;
        let Some((_, bytes)) = files.into_iter().next() else {
            bail!("{path} is not a file");
        };
        sums.insert(name.clone(), hex::encode(Sha256::digest(&bytes)));
    }
    Ok(sums)
}

/// The coverage data files in `dir` on a host, by file name; `None` when the
/// directory does not exist (the version never ran there).
async fn data_files(
    docker: &bollard::Docker,
    host: &Host,
    dir: &str,
) -> Result<Option<Vec<(String, Vec<u8>)>>> {
    Ok(download(docker, &host.container, dir).await?.map(|files| {
        files
            .into_iter()
            .filter(|(name, _)| name.starts_with("lines.") && name.ends_with(".json"))
            .collect()
    }))
}

/// The regular files at `path` in a container (a file, or a directory's),
/// by file name; `None` when there is nothing at `path`.
async fn download(
    docker: &bollard::Docker,
    container: &str,
    path: &str,
) -> Result<Option<Vec<(String, Vec<u8>)>>> {
    let options = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default()
        .path(path)
        .build();
    let mut stream = docker.download_from_container(container, Some(options));
    let mut tar = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => tar.extend_from_slice(&bytes),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("copying {path} out of the host")),
        }
    }
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(tar.as_slice());
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()?
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let Some(name) = name else {
            continue;
        };
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes)?;
        files.push((name, bytes));
    }
    Ok(Some(files))
}

/// Statements and executed lines of one source file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileLines {
    pub statements: BTreeSet<u32>,
    pub executed: BTreeSet<u32>,
}

impl FileLines {
    /// A line that ran counts as a statement, whatever the analysis said
    /// (coverage.py reports a module's docstring as run, not as a
    /// statement): the figures have always been read this way.
    fn of(mut statements: BTreeSet<u32>, executed: BTreeSet<u32>) -> FileLines {
        statements.extend(&executed);
        FileLines {
            statements,
            executed,
        }
    }
}

/// By source path (`minideploy/deploy.py`).
pub type Lines = BTreeMap<String, FileLines>;

/// The source path of a measured file: what follows `dist-packages/`.
pub fn source_path(measured: &str) -> Option<&str> {
    let marker = DIST_PACKAGES.trim_start_matches('/');
    measured.find(marker).map(|i| &measured[i + marker.len()..])
}

/// The lines of `coverage json` output, by source path.
pub fn lines_of_json(json: &str) -> Result<Lines> {
    let value: serde_json::Value =
        serde_json::from_str(json).context("coverage json printed no JSON")?;
    let Some(files) = value["files"].as_object() else {
        bail!("coverage json has no `files`");
    };
    let numbers = |v: &serde_json::Value| -> BTreeSet<u32> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_u64())
                    .map(|n| n as u32)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut lines = Lines::new();
    for (measured, file) in files {
        let Some(path) = source_path(measured) else {
            continue;
        };
        let executed = numbers(&file["executed_lines"]);
        lines.insert(
            path.to_string(),
            FileLines::of(numbers(&file["missing_lines"]), executed),
        );
    }
    Ok(lines)
}

/// What one scenario's fleet left.
#[derive(Debug, Clone, Default)]
pub struct ScenarioCoverage {
    pub lines: Lines,
    /// Hosts whose data was combined.
    pub hosts: Vec<String>,
    /// Hosts whose data is missing, and why.
    pub missing: Vec<String>,
    /// sha256 of each .deb the fleet's apt repository served, by file name.
    pub served_sha256: BTreeMap<String, String>,
    /// What importing every module alone runs, or why it is not known.
    pub import_only: Option<std::result::Result<Lines, String>>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Figure {
    pub covered: u64,
    pub statements: u64,
    pub percent: f64,
}

impl Figure {
    fn of(covered: usize, statements: usize) -> Figure {
        let percent = if statements == 0 {
            0.0
        } else {
            (covered as f64 * 1000.0 / statements as f64).round() / 10.0
        };
        Figure {
            covered: covered as u64,
            statements: statements as u64,
            percent,
        }
    }

    fn share(&self) -> f64 {
        if self.statements == 0 {
            0.0
        } else {
            self.covered as f64 / self.statements as f64
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FileFigure {
    pub path: String,
    #[serde(flatten)]
    pub figure: Figure,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScenarioFigure {
    pub name: String,
    /// Lines this scenario executed that no scenario before it had.
    pub added: u64,
    /// Lines it executed in all.
    pub executed: u64,
    pub hosts: Vec<String>,
}

/// Changed lines since the previous release against the lines executed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChangeCoverage {
    /// The previous release tag.
    pub since: String,
    pub exercised: u64,
    pub changed: u64,
    /// `file:first-last` of the changed lines no scenario executed.
    pub unexercised: Vec<String>,
}

impl ChangeCoverage {
    pub fn share(&self) -> f64 {
        if self.changed == 0 {
            1.0
        } else {
            self.exercised as f64 / self.changed as f64
        }
    }

    pub fn line(&self) -> String {
        format!(
            "{} of {} changed lines exercised (since {})",
            self.exercised, self.changed, self.since
        )
    }
}

/// Coverage of the released tool over every scenario: the verify report's
/// `coverage`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoverageReport {
    /// Why nothing was measured (not a Python tool, disabled).
    pub unavailable: Option<String>,
    pub modules: Vec<String>,
    pub total: Figure,
    pub files: Vec<FileFigure>,
    pub scenarios: Vec<ScenarioFigure>,
    /// `scenario: host: why` for data that is missing: the figures are a
    /// lower bound, never silently lower.
    pub incomplete: Vec<String>,
    pub changed: Option<ChangeCoverage>,
    /// Why there is no change coverage.
    pub changed_unavailable: Option<String>,
    /// Floors of release.toml's `[coverage]` that were not met (and a
    /// measured package that is not the one built).
    pub floor_failures: Vec<String>,
    /// sha256 of each .deb the measured fleets installed, by file name.
    pub deb_sha256: BTreeMap<String, String>,
    /// Statements that importing every module alone runs: the floor any
    /// run reaches (the total flatters the suite by that much).
    pub import_only: Option<Figure>,
    /// Why `import_only` is missing.
    pub import_only_unavailable: Option<String>,
    #[serde(skip)]
    import_lines: Lines,
    #[serde(skip)]
    pub lines: Lines,
}

impl CoverageReport {
    pub fn unavailable(why: String) -> CoverageReport {
        CoverageReport {
            unavailable: Some(why),
            ..CoverageReport::default()
        }
    }

    pub fn new(modules: Vec<String>) -> CoverageReport {
        CoverageReport {
            modules,
            ..CoverageReport::default()
        }
    }

    /// Adds a scenario's lines; recomputes the totals.
    pub fn add(&mut self, scenario: &str, found: ScenarioCoverage) {
        let mut added = 0;
        let mut executed = 0;
        for (path, file) in found.lines {
            executed += file.executed.len();
            let into = self.lines.entry(path).or_default();
            added += file.executed.difference(&into.executed).count();
            into.statements.extend(&file.statements);
            into.executed.extend(&file.executed);
        }
        self.incomplete
            .extend(found.missing.iter().map(|m| format!("{scenario}: {m}")));
        match found.import_only {
            Some(Ok(lines)) => {
                for (path, file) in lines {
                    self.import_lines
                        .entry(path)
                        .or_default()
                        .executed
                        .extend(file.executed);
                }
                self.import_only_unavailable = None;
            }
            Some(Err(why)) if self.import_lines.is_empty() => {
                self.import_only_unavailable = Some(why)
            }
            _ => {}
        }
        for (name, sum) in found.served_sha256 {
            match self.deb_sha256.get(&name) {
                Some(seen) if *seen != sum => self.floor_failures.push(format!(
                    "{scenario} installed {name} with sha256 {sum}, an earlier scenario {seen}"
                )),
                Some(_) => {}
                None => {
                    self.deb_sha256.insert(name, sum);
                }
            }
        }
        self.scenarios.push(ScenarioFigure {
            name: scenario.to_string(),
            added: added as u64,
            executed: executed as u64,
            hosts: found.hosts,
        });
        self.files = self
            .lines
            .iter()
            .map(|(path, f)| FileFigure {
                path: path.clone(),
                figure: Figure::of(f.executed.len(), f.statements.len()),
            })
            .collect();
        let covered = self.lines.values().map(|f| f.executed.len()).sum();
        let statements = self.lines.values().map(|f| f.statements.len()).sum();
        self.total = Figure::of(covered, statements);
        if !self.import_lines.is_empty() {
            // Over the statements the scenarios saw, so the two compare.
            let imported = self
                .lines
                .iter()
                .map(|(path, f)| {
                    self.import_lines
                        .get(path)
                        .map(|i| i.executed.intersection(&f.statements).count())
                        .unwrap_or(0)
                })
                .sum();
            self.import_only = Some(Figure::of(imported, statements));
        }
    }

    /// Change coverage against the previous release tag of `repo` and the
    /// floors of `[coverage]`, and the measured package against the built
    /// one's sha256. Call once every scenario was added.
    pub fn finish(
        &mut self,
        config: &Config,
        repo: &Repo,
        previous_tag: Option<&str>,
        built: &[BuiltDeb],
    ) {
        if self.unavailable.is_some() {
            return;
        }
        for deb in built {
            let name = deb.file_name();
            if let Some(served) = self.deb_sha256.get(&name).filter(|s| **s != deb.sha256) {
                self.floor_failures.push(format!(
                    "the fleet installed {name} with sha256 {served}, but the built one has \
                     {}: the figures are not of the package that ships",
                    deb.sha256
                ));
            }
        }
        match previous_tag {
            None => {
                self.changed_unavailable =
                    Some("no previous release tag: every line is new".to_string())
            }
            Some(tag) => match change_coverage(repo, tag, &self.modules, &self.lines) {
                Ok(c) => self.changed = Some(c),
                Err(e) => self.changed_unavailable = Some(format!("{e:#}")),
            },
        }
        let file = config.path.display();
        if let Some(min) = config.coverage.total_min {
            if self.total.share() < min {
                let least: Vec<String> = {
                    let mut files = self.files.clone();
                    files.sort_by(|a, b| a.figure.percent.total_cmp(&b.figure.percent));
                    files
                        .iter()
                        .take(5)
                        .map(|f| format!("{} {}%", f.path, f.figure.percent))
                        .collect()
                };
                self.floor_failures.push(format!(
                    "total coverage {}% is below coverage.total_min = {min} in {file}; \
                     least covered: {}",
                    self.total.percent,
                    least.join(", ")
                ));
            }
        }
        if let Some(min) = config.coverage.changed_min {
            match &self.changed {
                Some(c) if c.share() < min => self.floor_failures.push(format!(
                    "{}, below coverage.changed_min = {min} in {file}; not exercised: {}",
                    c.line(),
                    c.unexercised.join(", ")
                )),
                Some(_) => {}
                None => self.floor_failures.push(format!(
                    "coverage.changed_min = {min} in {file} cannot be checked: {}",
                    self.changed_unavailable
                        .as_deref()
                        .unwrap_or("no change coverage")
                )),
            }
        }
    }

    /// What the ledger keeps for the gate and `status`.
    pub fn figures(&self) -> CoverageFigures {
        CoverageFigures {
            covered: self.total.covered,
            statements: self.total.statements,
            changed_exercised: self.changed.as_ref().map(|c| c.exercised),
            changed: self.changed.as_ref().map(|c| c.changed),
            note: self
                .unavailable
                .clone()
                .or_else(|| self.changed_unavailable.clone())
                .unwrap_or_default(),
            incomplete: !self.incomplete.is_empty(),
        }
    }

    /// The summary's coverage section.
    pub fn summary(&self) -> String {
        if let Some(why) = &self.unavailable {
            return format!("coverage: not measured: {why}\n");
        }
        let mut out = format!(
            "coverage of {} on the fleet: {}% ({} of {} statements){}\n",
            self.modules.join(", "),
            self.total.percent,
            self.total.covered,
            self.total.statements,
            if self.incomplete.is_empty() {
                ""
            } else {
                " INCOMPLETE: a lower bound"
            }
        );
        for m in &self.incomplete {
            out.push_str(&format!("  missing data: {m}\n"));
        }
        match (&self.import_only, &self.import_only_unavailable) {
            (Some(f), _) => out.push_str(&format!(
                "  importing every module alone runs {}% ({} statements): the floor\n",
                f.percent, f.covered
            )),
            (None, Some(why)) => {
                out.push_str(&format!("  import-only floor: not measured: {why}\n"))
            }
            (None, None) => {}
        }
        match (&self.changed, &self.changed_unavailable) {
            (Some(c), _) => {
                out.push_str(&format!("  change coverage: {}\n", c.line()));
                if !c.unexercised.is_empty() {
                    out.push_str(&format!(
                        "  changed lines not exercised: {}\n",
                        c.unexercised.join(", ")
                    ));
                }
            }
            (None, Some(why)) => out.push_str(&format!("  change coverage: none: {why}\n")),
            (None, None) => {}
        }
        for f in &self.files {
            out.push_str(&format!(
                "  {:<40} {:>5} / {:<5} {:>5.1}%\n",
                f.path, f.figure.covered, f.figure.statements, f.figure.percent
            ));
        }
        let added: Vec<String> = self
            .scenarios
            .iter()
            .map(|s| format!("{} +{}", s.name, s.added))
            .collect();
        if !added.is_empty() {
            out.push_str(&format!(
                "  lines added by scenario: {}\n",
                added.join(", ")
            ));
        }
        for f in &self.floor_failures {
            out.push_str(&format!("  FLOOR: {f}\n"));
        }
        out
    }

    /// Cobertura XML of the executed lines, paths relative to the project
    /// root (what GitLab's coverage_report reads).
    pub fn cobertura(&self, timestamp: i64) -> String {
        let rate = |f: &Figure| format!("{:.4}", f.share());
        let mut by_package: BTreeMap<String, Vec<(&String, &FileLines)>> = BTreeMap::new();
        for (path, lines) in &self.lines {
            let package = match path.rsplit_once('/') {
                Some((dir, _)) => dir.replace('/', "."),
                None => ".".to_string(),
            };
            by_package.entry(package).or_default().push((path, lines));
        }
        let mut out = format!(
            "<?xml version=\"1.0\" ?>\n<coverage version=\"release-harness\" \
             timestamp=\"{timestamp}\" lines-valid=\"{}\" lines-covered=\"{}\" \
             line-rate=\"{}\" branches-valid=\"0\" branches-covered=\"0\" \
             branch-rate=\"0\" complexity=\"0\">\n  <sources>\n    <source>.</source>\n  \
             </sources>\n  <packages>\n",
            self.total.statements,
            self.total.covered,
            rate(&self.total)
        );
        for (package, files) in by_package {
            let covered = files.iter().map(|(_, f)| f.executed.len()).sum();
            let statements = files.iter().map(|(_, f)| f.statements.len()).sum();
            out.push_str(&format!(
                "    <package name=\"{}\" line-rate=\"{}\" branch-rate=\"0\" complexity=\"0\">\n      <classes>\n",
                xml_escape(&package),
                rate(&Figure::of(covered, statements))
            ));
            for (path, f) in files {
                let name = path.rsplit('/').next().unwrap_or(path);
                out.push_str(&format!(
                    "        <class name=\"{}\" filename=\"{}\" line-rate=\"{}\" \
                     branch-rate=\"0\" complexity=\"0\">\n          <methods/>\n          <lines>\n",
                    xml_escape(name),
                    xml_escape(path),
                    rate(&Figure::of(f.executed.len(), f.statements.len()))
                ));
                for n in &f.statements {
                    out.push_str(&format!(
                        "            <line number=\"{n}\" hits=\"{}\"/>\n",
                        u8::from(f.executed.contains(n))
                    ));
                }
                out.push_str("          </lines>\n        </class>\n");
            }
            out.push_str("      </classes>\n    </package>\n");
        }
        out.push_str("  </packages>\n</coverage>\n");
        out
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The lines changed since `tag` in the tool's modules (what goes into the
/// package), against the lines executed on the fleet. A changed line that
/// coverage.py never saw as a statement (a module never imported) counts
/// when it is code: not blank, not a comment.
pub fn change_coverage(
    repo: &Repo,
    tag: &str,
    modules: &[String],
    lines: &Lines,
) -> Result<ChangeCoverage> {
    let mut args = vec![
        "diff".to_string(),
        "-U0".into(),
        "--no-color".into(),
        "--no-ext-diff".into(),
        format!("{tag}..HEAD"),
        "--".into(),
    ];
    args.extend(modules.iter().cloned());
    let diff = repo
        .git(&args)
        .with_context(|| format!("diffing the tool's modules since {tag}"))?;
    let mut changed = 0;
    let mut missed_total = 0;
    let mut unexercised = Vec::new();
    for (path, numbers) in changed_lines(&diff) {
        if !path.ends_with(".py") {
            continue;
        }
        let missed: Vec<u32> = match lines.get(&path) {
            Some(file) => {
                let code: Vec<u32> = numbers.intersection(&file.statements).copied().collect();
                changed += code.len();
                code.into_iter()
                    .filter(|n| !file.executed.contains(n))
                    .collect()
            }
            None => {
                let text = std::fs::read_to_string(repo.root.join(&path)).unwrap_or_default();
                let source: Vec<&str> = text.lines().collect();
                let code: Vec<u32> = numbers
                    .into_iter()
                    .filter(|n| {
                        let l = source
                            .get((*n as usize).saturating_sub(1))
                            .map(|l| l.trim())
                            .unwrap_or("");
                        !l.is_empty() && !l.starts_with('#')
                    })
                    .collect();
                changed += code.len();
                code
            }
        };
        missed_total += missed.len();
        unexercised.extend(ranges(&missed).into_iter().map(|r| format!("{path}:{r}")));
    }
    Ok(ChangeCoverage {
        since: tag.to_string(),
        exercised: (changed - missed_total) as u64,
        changed: changed as u64,
        unexercised,
    })
}

/// The new-side line numbers of a `git diff -U0`, by path.
pub fn changed_lines(diff: &str) -> BTreeMap<String, BTreeSet<u32>> {
    let mut out: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in diff.lines() {
        if let Some(path) = line.strip_prefix("+++ ") {
            current = path.strip_prefix("b/").map(str::to_string);
        } else if let Some(hunk) = line.strip_prefix("@@ ") {
            let Some(path) = &current else { continue };
            // `@@ -a,b +c,d @@`: d lines from c (d absent means 1).
            let Some(new) = hunk.split_whitespace().find_map(|w| w.strip_prefix('+')) else {
                continue;
            };
            let (start, count) = match new.split_once(',') {
                Some((s, c)) => (s.parse::<u32>().unwrap_or(0), c.parse::<u32>().unwrap_or(0)),
                None => (new.parse::<u32>().unwrap_or(0), 1),
            };
            if count > 0 {
                out.entry(path.clone())
                    .or_default()
                    .extend(start..start + count);
            }
        }
    }
    out
}

/// `3-5`, `9` for runs of consecutive numbers.
fn ranges(numbers: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last = iter.next().unwrap();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::production::gate::{soak_decision, Evidence};
    use crate::support::git::testing::{commit_file, init};

    const DEPLOY_V1: &str = "\
import os


def deploy(targets, dry_run):
    done = []
    for t in targets:
        done.append(t)
    return done
";

    /// What the fleet ran of DEPLOY_V1: every statement but none of a
    /// dry-run path (there is none yet).
    fn ran(executed: &[u32], statements: &[u32]) -> Lines {
        Lines::from([(
            "pkg/deploy.py".to_string(),
            FileLines {
                statements: statements.iter().copied().collect(),
                executed: executed.iter().copied().collect(),
            },
        )])
    }

    #[test]
    fn modules_are_what_the_deb_installs_under_dist_packages() {
        let listing = "\
drwxr-xr-x root/root         0 2026-01-01 00:00 ./
drwxr-xr-x root/root         0 2026-01-01 00:00 ./usr/lib/python3/dist-packages/
drwxr-xr-x root/root         0 2026-01-01 00:00 ./usr/lib/python3/dist-packages/minideploy/
-rw-r--r-- root/root      4131 2026-01-01 00:00 ./usr/lib/python3/dist-packages/minideploy/deploy.py
drwxr-xr-x root/root         0 2026-01-01 00:00 ./usr/lib/python3/dist-packages/minideploy-0.2.0.egg-info/
-rw-r--r-- root/root        10 2026-01-01 00:00 ./usr/lib/python3/dist-packages/single.py
-rwxr-xr-x root/root       900 2026-01-01 00:00 ./usr/bin/minideploy
";
        assert_eq!(python_modules(listing), vec!["minideploy", "single.py"]);
        assert!(
            python_modules("-rwxr-xr-x root/root 9 2026-01-01 00:00 ./usr/bin/tool\n").is_empty()
        );
    }

    #[test]
    fn recorded_lines_count_at_their_statements_first_line_as_coverage_py_reports_them() {
        let analysed = r#"{"source": {
            "pkg/deploy.py": {"statements": [3, 4, 9], "first_lines": {"5": 4, "6": 4, "2": 1}},
            "pkg/broken.py": {"error": "NotPython: Couldn't parse"}
        }, "import_only_error": "coverage json: NoDataError: No data to report."}"#;
        let learned = Learned::parse(analysed).unwrap();
        assert_eq!(
            learned.import_only,
            Err("coverage json: NoDataError: No data to report.".to_string())
        );
        let mut recorded = Recorded::new();
        add_recorded(
            &mut recorded,
            br#"{"/usr/lib/python3/dist-packages/pkg/deploy.py": [1, 3, 5, 6]}"#,
        )
        .unwrap();
        add_recorded(
            &mut recorded,
            br#"{"/usr/lib/python3/dist-packages/pkg/deploy.py": [3, 4],
                "/usr/lib/python3/dist-packages/pkg/broken.py": [1],
                "/usr/lib/python3/dist-packages/pkg/generated.py": [1],
                "/opt/elsewhere.py": [1]}"#,
        )
        .unwrap();
        assert!(add_recorded(&mut recorded, b"{\"truncated").is_err());
        let (lines, unknown) = combine(&learned.source, &recorded);
        assert_eq!(lines.keys().collect::<Vec<_>>(), vec!["pkg/deploy.py"]);
        let f = &lines["pkg/deploy.py"];
        // 5 and 6 are 4's statement; 1 (a module docstring) is no statement
        // for coverage.py, but its report lists it executed.
        assert_eq!(f.executed, BTreeSet::from([1, 3, 4]));
        assert_eq!(f.statements, BTreeSet::from([1, 3, 4, 9]));
        assert_eq!(unknown.len(), 2, "{unknown:?}");
        assert!(unknown[0].contains("cannot analyse") && unknown[0].contains("NotPython"));
        assert!(unknown[1].contains("pkg/generated.py ran but is not a .py file"));
        assert!(Learned::parse("Traceback (most recent call last)").is_err());
    }

    #[test]
    fn measured_paths_map_back_to_the_source_tree() {
        let json = r#"{"files": {
            "src/usr/lib/python3/dist-packages/minideploy/deploy.py":
                {"executed_lines": [1, 2, 5], "missing_lines": [7], "excluded_lines": []},
            "/tmp/elsewhere.py": {"executed_lines": [1], "missing_lines": []}
        }, "totals": {}}"#;
        let lines = lines_of_json(json).unwrap();
        assert_eq!(
            lines.keys().collect::<Vec<_>>(),
            vec!["minideploy/deploy.py"]
        );
        let f = &lines["minideploy/deploy.py"];
        assert_eq!(f.statements, BTreeSet::from([1, 2, 5, 7]));
        assert_eq!(f.executed, BTreeSet::from([1, 2, 5]));
        assert!(lines_of_json("Traceback").is_err());
    }

    #[test]
    fn scenarios_add_up_and_missing_hosts_mark_the_figure() {
        let mut report = CoverageReport::new(vec!["pkg".into()]);
        report.add(
            "fresh-install",
            ScenarioCoverage {
                lines: ran(&[1, 4, 5], &[1, 4, 5, 6, 7, 8]),
                hosts: vec!["deploy1".into(), "canary1".into()],
                missing: vec![],
                served_sha256: BTreeMap::new(),
                import_only: Some(Ok(ran(&[1], &[1, 4]))),
            },
        );
        report.add(
            "target-stopped",
            ScenarioCoverage {
                lines: ran(&[1, 4, 5, 6], &[1, 4, 5, 6, 7, 8]),
                hosts: vec!["deploy1".into()],
                missing: vec!["app4: ran 0.2.0-1 and left no coverage data".into()],
                served_sha256: BTreeMap::new(),
                import_only: None,
            },
        );
        assert_eq!(report.total.covered, 4);
        assert_eq!(report.total.statements, 6);
        assert_eq!(report.total.percent, 66.7);
        assert_eq!(report.scenarios[0].added, 3);
        assert_eq!(report.scenarios[1].added, 1);
        let summary = report.summary();
        assert!(
            summary.contains("66.7% (4 of 6 statements) INCOMPLETE"),
            "{summary}"
        );
        assert!(summary.contains("target-stopped: app4"), "{summary}");
        assert!(
            summary.contains("importing every module alone runs 16.7% (1 statements)"),
            "{summary}"
        );
        assert!(report.figures().incomplete);
        let xml = report.cobertura(0);
        assert!(
            xml.contains("lines-valid=\"6\" lines-covered=\"4\""),
            "{xml}"
        );
        assert!(xml.contains("filename=\"pkg/deploy.py\""), "{xml}");
        assert!(xml.contains("<line number=\"7\" hits=\"0\"/>"), "{xml}");
        assert!(xml.contains("<line number=\"6\" hits=\"1\"/>"), "{xml}");
    }

    #[test]
    fn the_measured_package_must_be_the_built_one() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        let mut report = CoverageReport::new(vec!["pkg".into()]);
        report.add(
            "fresh-install",
            ScenarioCoverage {
                served_sha256: BTreeMap::from([("pkg_1_all.deb".into(), "aa11".into())]),
                ..ScenarioCoverage::default()
            },
        );
        let built = |sha: &str| {
            vec![BuiltDeb {
                package: "pkg".into(),
                path: "out/pkg_1_all.deb".into(),
                sha256: sha.into(),
            }]
        };
        let mut same = report.clone();
        same.finish(&Config::default(), &repo, None, &built("aa11"));
        assert!(same.floor_failures.is_empty(), "{:?}", same.floor_failures);
        report.finish(&Config::default(), &repo, None, &built("bb22"));
        assert_eq!(report.floor_failures.len(), 1);
        assert!(report.floor_failures[0].contains("sha256 aa11"));
        assert!(report.floor_failures[0].contains("bb22"));
    }

    #[test]
    fn diff_hunks_give_the_new_side_lines() {
        let diff = "\
diff --git a/pkg/a.py b/pkg/a.py
--- a/pkg/a.py
+++ b/pkg/a.py
@@ -3 +3 @@ def f():
-    x = 1
+    x = 2
@@ -10,0 +11,3 @@ def g():
+    a
+    b
+    c
@@ -20,2 +23,0 @@
diff --git a/pkg/new.py b/pkg/new.py
--- /dev/null
+++ b/pkg/new.py
@@ -0,0 +1,2 @@
+x
+y
";
        let lines = changed_lines(diff);
        assert_eq!(lines["pkg/a.py"], BTreeSet::from([3, 11, 12, 13]));
        assert_eq!(lines["pkg/new.py"], BTreeSet::from([1, 2]));
        assert_eq!(ranges(&[3, 11, 12, 13, 20]), vec!["3", "11-13", "20"]);
    }

    /// A commit that adds a line on a path no scenario runs: change
    /// coverage falls below 100%, the line is listed, the floor fails verify
    /// and the gate keeps the full soak.
    #[test]
    fn an_unexercised_change_is_listed_and_keeps_the_full_soak() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "pkg/deploy.py", DEPLOY_V1, "deploy");
        commit_file(&repo, "README", "x\n", "readme");
        repo.git(&["tag", "1.0.0"]).unwrap();
        let v2 = DEPLOY_V1.replace(
            "    done = []\n",
            "    done = []\n    if dry_run:\n        return []\n",
        );
        commit_file(&repo, "pkg/deploy.py", &v2, "deploy: a dry run");
        commit_file(&repo, "README", "y\n", "readme again");
        // v2's statements are 1, 4, 5, 6, 7, 8, 9, 10; the fleet never
        // asked for a dry run, so 7 (the return) did not run.
        let lines = ran(&[1, 4, 5, 6, 8, 9, 10], &[1, 4, 5, 6, 7, 8, 9, 10]);
        let change = change_coverage(&repo, "1.0.0", &["pkg".into()], &lines).unwrap();
        assert_eq!((change.exercised, change.changed), (1, 2), "{change:?}");
        assert_eq!(change.unexercised, vec!["pkg/deploy.py:7"]);
        assert_eq!(
            change.line(),
            "1 of 2 changed lines exercised (since 1.0.0)"
        );

        let mut config = Config::default();
        config.coverage.changed_min = Some(1.0);
        config.path = "release.toml".into();
        let mut report = CoverageReport::new(vec!["pkg".into()]);
        report.add(
            "fresh-install",
            ScenarioCoverage {
                lines,
                hosts: vec!["deploy1".into()],
                missing: vec![],
                served_sha256: BTreeMap::new(),
                import_only: None,
            },
        );
        report.finish(&config, &repo, Some("1.0.0"), &[]);
        assert_eq!(
            report.floor_failures.len(),
            1,
            "{:?}",
            report.floor_failures
        );
        assert!(report.floor_failures[0].contains("pkg/deploy.py:7"));
        assert!(report
            .summary()
            .contains("changed lines not exercised: pkg/deploy.py:7"));

        config.gate.evidence_floor_secs = Some(3600);
        let evidence = Ok(Evidence {
            name: "successful syncs".into(),
            count: 17.0,
            threshold: 5.0,
        });
        let decision = soak_decision(&config.gate, Some(&report.figures()), Some(&evidence));
        assert!(!decision.shortened, "{decision:?}");
        assert_eq!(decision.secs, config.gate.min_soak_secs);
        assert!(
            decision
                .reason
                .contains("1 of 2 changed lines exercised by verify, below"),
            "{}",
            decision.reason
        );
    }

    /// The same release measured over every scenario, then with one
    /// dropped: the scenario that alone ran the new dry-run path takes its
    /// lines with it (total and change coverage fall, the soak is the full
    /// one again); dropping one that ran nothing new changes nothing.
    #[test]
    fn dropping_scenarios_lowers_the_coverage() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "pkg/deploy.py", DEPLOY_V1, "deploy");
        repo.git(&["tag", "1.0.0"]).unwrap();
        let v2 = DEPLOY_V1.replace(
            "    done = []\n",
            "    done = []\n    if dry_run:\n        return []\n",
        );
        commit_file(&repo, "pkg/deploy.py", &v2, "deploy: a dry run");
        let statements = [1, 4, 5, 6, 7, 8, 9, 10];
        let scenarios = [
            ("fresh-install", ran(&[1, 4, 5, 6, 8, 9, 10], &statements)),
            ("dry-run", ran(&[1, 4, 5, 6, 7], &statements)),
            ("upgrade", ran(&[1, 4, 5, 6, 8], &statements)),
        ];
        let measure = |names: &[&str]| {
            let mut report = CoverageReport::new(vec!["pkg".into()]);
            for (name, lines) in scenarios.iter().filter(|(n, _)| names.contains(n)) {
                report.add(
                    name,
                    ScenarioCoverage {
                        lines: lines.clone(),
                        hosts: vec!["deploy1".into()],
                        ..ScenarioCoverage::default()
                    },
                );
            }
            report.finish(&Config::default(), &repo, Some("1.0.0"), &[]);
            report
        };
        let mut gate = Config::default().gate;
        gate.evidence_floor_secs = Some(3600);
        let syncs = Ok(Evidence {
            name: "successful syncs".into(),
            count: 17.0,
            threshold: 10.0,
        });
        let decide = |r: &CoverageReport| soak_decision(&gate, Some(&r.figures()), Some(&syncs));

        let all = measure(&["fresh-install", "dry-run", "upgrade"]);
        assert_eq!((all.total.covered, all.total.statements), (8, 8));
        let change = all.changed.as_ref().unwrap();
        assert_eq!((change.exercised, change.changed), (2, 2));
        assert!(decide(&all).shortened);

        let without_upgrade = measure(&["fresh-install", "dry-run"]);
        assert_eq!(without_upgrade.total, all.total);
        assert_eq!(without_upgrade.changed, all.changed);

        let without_dry_run = measure(&["fresh-install", "upgrade"]);
        assert_eq!(
            (without_dry_run.total.covered, without_dry_run.total.percent),
            (7, 87.5)
        );
        let change = without_dry_run.changed.as_ref().unwrap();
        assert_eq!((change.exercised, change.changed), (1, 2));
        assert_eq!(change.unexercised, vec!["pkg/deploy.py:7"]);
        let decision = decide(&without_dry_run);
        assert!(!decision.shortened, "{decision:?}");
        assert_eq!(decision.secs, gate.min_soak_secs);
    }

    #[test]
    fn a_module_never_imported_counts_its_changed_code() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "pkg/deploy.py", DEPLOY_V1, "deploy");
        repo.git(&["tag", "1.0.0"]).unwrap();
        commit_file(&repo, "pkg/extra.py", "# a comment\n\nX = 1\n", "extra");
        let lines = ran(&[1, 4, 5, 6, 7, 8], &[1, 4, 5, 6, 7, 8]);
        let change = change_coverage(&repo, "1.0.0", &["pkg".into()], &lines).unwrap();
        assert_eq!((change.exercised, change.changed), (0, 1));
        assert_eq!(change.unexercised, vec!["pkg/extra.py:3"]);
    }

    #[test]
    fn the_first_release_has_no_change_coverage_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let repo = init(dir.path());
        commit_file(&repo, "pkg/deploy.py", DEPLOY_V1, "deploy");
        let mut config = Config::default();
        config.coverage.total_min = Some(0.9);
        let mut report = CoverageReport::new(vec!["pkg".into()]);
        report.add(
            "fresh-install",
            ScenarioCoverage {
                lines: ran(&[1], &[1, 4]),
                ..ScenarioCoverage::default()
            },
        );
        report.finish(&config, &repo, None, &[]);
        assert!(report.changed.is_none());
        assert!(report.figures().note.contains("no previous release tag"));
        assert_eq!(report.floor_failures.len(), 1);
        assert!(report.floor_failures[0].contains("50% is below coverage.total_min"));
    }
}

/// The collector on a real host: Debian's python3, the files the harness
/// writes, a small package standing in for the tool.
#[cfg(test)]
mod collector_tests {
    use super::*;
    use crate::config::Config;
    use crate::support::docker::{ContainerSpec, Containers};
    use crate::support::images;
    use std::time::Duration;

    const DEMO: &str = "\
import multiprocessing
import threading


def in_thread(out):
    out.append('thread')


def in_child():
    return 'child'


def main():
    out = []
    t = threading.Thread(target=in_thread, args=(out,))
    t.start()
    t.join()
    p = multiprocessing.get_context('fork').Process(target=in_child)
    p.start()
    p.join()
    return out
";

    #[cfg_attr(skip_docker, ignore = "RELEASE_HARNESS_SKIP_DOCKER is set")]
    #[tokio::test]
    async fn the_collector_records_only_the_tools_processes_threads_and_forks_included() {
        let Some(docker) = images::docker_for_tests("the_collector_records").await else {
            return;
        };
        let config = Config::parse("", std::path::Path::new("release.toml")).unwrap();
        let image = images::fleet_image(&docker, &config, &["python3".to_string()], &|_| {})
            .await
            .unwrap();
        let run_id = docker::new_run_id();
        let mut guard = Containers::new(&docker, &run_id);
        let name = format!("rh-{run_id}-collector");
        let result = async {
            guard
                .start(&[ContainerSpec::idle(&name, &image)], Duration::ZERO)
                .await?;
            let instrument = Instrument {
                package: "rhdemo".into(),
                version: "1.0-1".into(),
                modules: vec!["rhdemo".into()],
                binaries: vec!["rhdemo".into()],
                deb_names: Vec::new(),
                source: Arc::default(),
            };
            let mut files = instrument.host_files();
            files.push((
                format!("{DIST_PACKAGES}rhdemo/__init__.py"),
                DEMO.as_bytes().to_vec(),
                0o644,
            ));
            docker::put_files(&docker, &name, &files).await?;
            let sh = |script: &str| {
                let script = script.to_string();
                let (docker, name) = (docker.clone(), name.clone());
                async move { docker::exec(&docker, &name, None, &script).await }
            };
            let dir = format!("{DATA_ROOT}/1.0-1");
            let setup = format!("install -d -m 1777 {dir} && echo 1.0-1 > {DATA_ROOT}/installed");
            assert!(sh(&setup).await?.ok());
            let count = format!("ls {dir} | grep -c '^lines\\..*\\.json$' || true");

            // Python that never imports the tool leaves nothing.
            assert!(sh("python3 -c 'import json, http.server'").await?.ok());
            assert_eq!(sh(&count).await?.stdout.trim(), "0");
            // Nor does the harness's own run, with the collector switched off.
            let off = format!("{HOOK_OFF} python3 -c 'import rhdemo; rhdemo.main()'");
            assert!(sh(&off).await?.ok());
            assert_eq!(sh(&count).await?.stdout.trim(), "0");

            // The tool's process, and its forked child, each leave their lines.
            let ran = sh("python3 -c 'import rhdemo; rhdemo.main()'").await?;
            assert!(ran.ok(), "{ran:?}");
            assert_eq!(sh(&count).await?.stdout.trim(), "2");
            let all = sh(&format!("cat {dir}/lines.*.json")).await?.stdout;
            let mut lines = BTreeSet::new();
            for data in all.split_inclusive('}') {
                let v: serde_json::Value = serde_json::from_str(data)?;
                let file = format!("{DIST_PACKAGES}rhdemo/__init__.py");
                assert_eq!(v.as_object().unwrap().len(), 1, "only the tool: {v}");
                lines.extend(
                    v[&file]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| n.as_u64().unwrap()),
                );
            }
            // 1: the module's first line; 6: the thread's; 10: the forked
            // child's; 21: after the child ended.
            for line in [1, 5, 6, 9, 10, 13, 14, 18, 21] {
                assert!(lines.contains(&line), "line {line} of {lines:?}");
            }
            anyhow::Ok(())
        }
        .await;
        guard.remove().await;
        result.unwrap();
    }
}
