//! What the harness knows of Debian packaging, in one place: debian/control
//! (its source paragraph, the source package's name, Build-Depends),
//! debian/changelog's reading (its top entry and its conventions), package
//! relations (`a (>= 1) [amd64] <!nocheck> | b`), whether installed packages
//! (a dpkg status file) satisfy them, and architectures, and `dpkg-deb`: a
//! .deb's fields and Depends, and building a .deb from a tree.

use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use debian_changelog::ChangeLog;

use crate::support::process;

pub const CHANGELOG: &str = "debian/changelog";

/// `Source:` of the project's debian/control.
pub fn source_package_name(project: &Path) -> Result<String> {
    let control = project.join("debian/control");
    let text = std::fs::read_to_string(&control)
        .with_context(|| format!("reading {}", control.display()))?;
    control_fields(source_paragraph(&text))
        .into_iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Source"))
        .map(|(_, value)| value)
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{}: no `Source:` field", control.display()))
}

/// Reads and parses `debian/changelog`; a malformed one is refused with the
/// line of the first problem.
pub fn read_changelog(project: &Path) -> Result<(String, ChangeLog)> {
    let path = project.join(CHANGELOG);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let what = if project.join("debian").is_dir() {
                "has no debian/changelog"
            } else {
                "has no debian/ directory (so no debian/changelog)"
            };
            bail!(
                "{} {what}: the release adds its entry there\n  fix: package the project for \
                 Debian first (`dh_make`, or copy debian/ from a similar project) and commit it",
                project.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let parsed = ChangeLog::parse(&text);
    if let Some((message, offset)) = parsed.errors_with_offsets().first() {
        let offset = usize::from(*offset).min(text.len());
        let line = text[..offset].matches('\n').count() + 1;
        let shown = text.lines().nth(line - 1).unwrap_or("").trim_end();
        bail!(
            "{CHANGELOG}: cannot parse it: line {line}: {message}: `{shown}`\n  fix: correct the \
             entry (format: `man deb-changelog`; `dpkg-parsechangelog -l {CHANGELOG}` shows \
             how dpkg reads it)"
        );
    }
    Ok((text.clone(), parsed.tree()))
}

/// What the top entry of debian/changelog says: where the package stands,
/// and the conventions a new entry keeps by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogTop {
    pub package: String,
    /// The full Debian version (`4.12.0-1`).
    pub version: String,
    /// The distributions, space-separated as written (`unstable`,
    /// `bookworm-wikimedia`).
    pub distribution: String,
    pub urgency: String,
}

impl ChangelogTop {
    /// The Debian revision (`1+deb12u1` of `4.12.0-1+deb12u1`); None for a
    /// native package.
    pub fn revision(&self) -> Option<&str> {
        self.version.rsplit_once('-').map(|(_, r)| r)
    }
}

/// The top entry of the project's debian/changelog.
pub fn changelog_top(project: &Path) -> Result<ChangelogTop> {
    let (_, changelog) = read_changelog(project)?;
    let entry = changelog.iter().next().with_context(|| {
        format!("{CHANGELOG}: has no entries; add a first one with `dch --create`")
    })?;
    let package = entry
        .package()
        .with_context(|| format!("{CHANGELOG}: line 1: the top entry has no package name"))?;
    let version = match entry.try_version() {
        Some(Ok(v)) => v.to_string(),
        Some(Err(e)) => bail!("{CHANGELOG}: line 1: the top entry's version is invalid: {e}"),
        None => bail!("{CHANGELOG}: line 1: the top entry has no version"),
    };
    Ok(ChangelogTop {
        package,
        version,
        distribution: entry.distributions().unwrap_or_default().join(" "),
        urgency: entry
            .urgency()
            .map(|u| u.to_string())
            .unwrap_or_else(|| "medium".into()),
    })
}

/// The binary packages debian/control declares (`Package:` of every
/// paragraph after the source's), in order.
pub fn binary_package_names(project: &Path) -> Result<Vec<String>> {
    let control = project.join("debian/control");
    let text = std::fs::read_to_string(&control)
        .with_context(|| format!("reading {}", control.display()))?;
    Ok(text
        .split("\n\n")
        .flat_map(control_fields)
        .filter(|(name, _)| name.eq_ignore_ascii_case("Package"))
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
        .collect())
}

/// A .deb the build made: its binary package, file and sha256.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuiltDeb {
    pub package: String,
    pub path: std::path::PathBuf,
    pub sha256: String,
}

impl BuiltDeb {
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The binary package a .deb file carries, from its name
/// (`name_version_arch.deb`, as dpkg-deb and dpkg-buildpackage name them).
pub fn package_of_deb_file(file_name: &str) -> Option<&str> {
    let stem = file_name
        .strip_suffix(".deb")
        .or(file_name.strip_suffix(".udeb"))?;
    let (package, _) = stem.split_once('_')?;
    (!package.is_empty()).then_some(package)
}

/// A shell line that prints what dpkg knows of `binaries` on a host, one
/// line each (`ii  name version`, or dpkg-query's message for a package it
/// never saw); read by `installed_version`.
pub fn installed_query(binaries: &[&str]) -> String {
    let names: Vec<String> = binaries
        .iter()
        .map(|b| {
            shlex::try_quote(b)
                .map(|q| q.into_owned())
                .unwrap_or_default()
        })
        .collect();
    format!(
        "dpkg-query -W -f='${{db:Status-Abbrev}} ${{Package}} ${{Version}}\\n' {} 2>&1",
        names.join(" ")
    )
}

/// The version a host carries, from `installed_query`'s output: the one
/// version of the `required` binaries (or, with none required, of those the
/// host has installed: what a production host carries is up to it, as
/// debdeploy upgrades what is installed). Anything else is described: a
/// binary missing, or several versions.
pub fn installed_version(output: &str, required: &[&str]) -> String {
    let mut installed: Vec<(&str, &str)> = Vec::new();
    for line in output.lines() {
        // `ii  name version`: want, status and error flags, then the fields.
        let (Some(status), Some(rest)) = (line.get(..3), line.get(3..)) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        if let (Some(name), Some(version)) = (fields.next(), fields.next()) {
            if status.as_bytes()[1] == b'i' && status.is_ascii() {
                installed.push((name, version));
            }
        }
    }
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|r| !installed.iter().any(|(n, _)| n == r))
        .collect();
    if !missing.is_empty() {
        return format!("{} not installed", missing.join(", "));
    }
    let relevant: Vec<(&str, &str)> = if required.is_empty() {
        installed
    } else {
        installed
            .into_iter()
            .filter(|(n, _)| required.contains(n))
            .collect()
    };
    match relevant.first() {
        None => {
            let said = output.trim();
            if said.is_empty() {
                "not installed".into()
            } else {
                format!("not installed ({})", said.replace('\n', "; "))
            }
        }
        Some((_, first)) if relevant.iter().all(|(_, v)| v == first) => first.to_string(),
        Some(_) => relevant
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The first paragraph of a debian/control, which describes the source
/// package (comment-only paragraphs skipped).
fn source_paragraph(control: &str) -> &str {
    control
        .split("\n\n")
        .find(|p| {
            p.lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        })
        .unwrap_or("")
}

/// The control fields `fields` of a .deb as `dpkg-deb -f` prints them
/// (`Name: value` lines; one field alone is printed as its bare value).
fn deb_fields(deb: &Path, fields: &[&str]) -> Result<String> {
    let mut args = vec![OsString::from("-f"), deb.into()];
    args.extend(fields.iter().map(OsString::from));
    process::cmd("dpkg-deb", args).read().with_context(|| {
        format!(
            "reading {} of {} (dpkg-deb comes with dpkg: apt-get install dpkg)",
            fields.join(", "),
            deb.display()
        )
    })
}

/// One control field of a .deb (`Version`, `Package`...).
pub fn deb_field(deb: &Path, field: &str) -> Result<String> {
    Ok(deb_fields(deb, &[field])?.trim().to_string())
}

/// Builds the .deb `deb` from the tree `root` (its `DEBIAN/control` and the
/// files to install), owned by root, compressed with gzip.
pub fn build_deb(root: &Path, deb: &Path) -> Result<()> {
    process::cmd(
        "dpkg-deb",
        [
            OsString::from("--root-owner-group"),
            "-Zgzip".into(),
            "--build".into(),
            root.into(),
            deb.into(),
        ],
    )
    .run()
    .context("building a .deb (dpkg-deb comes with dpkg: apt-get install dpkg)")?;
    Ok(())
}

/// Depends and Pre-Depends of a .deb, as package names (alternatives kept as
/// `a | b`, versions and arch qualifiers dropped): what an image needs so the
/// package installs without a network.
pub fn deb_depends(deb: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for relation in deb_relations(deb)? {
        let alternatives: Vec<&str> = relation.iter().map(|a| a.name.as_str()).collect();
        let joined = alternatives.join(" | ");
        if !names.contains(&joined) {
            names.push(joined);
        }
    }
    Ok(names)
}

/// Pre-Depends and Depends of a .deb as relations, versions kept.
pub fn deb_relations(deb: &Path) -> Result<Vec<Vec<Alternative>>> {
    // One field per line: `Depends: a, b` (continuations are indented).
    let text = deb_fields(deb, &["Pre-Depends", "Depends"])?;
    let mut relations = Vec::new();
    for (_, value) in control_fields(&text) {
        relations.extend(
            parse_relations(&value)
                .with_context(|| format!("reading the Depends of {}", deb.display()))?,
        );
    }
    Ok(relations)
}

/// Pre-Depends and Depends that debian/control declares for its binary
/// packages, before any build: what the built .debs will at least depend on.
/// Substitution variables (`${python3:Depends}`, `${misc:Depends}`) are only
/// known after the build and are left out, as are relations on the source's
/// own binaries (installed from the .debs themselves). Each relation as apt
/// reads it, arch restrictions evaluated.
pub fn declared_depends(control: &str) -> Result<Vec<String>> {
    let arch = host_architecture();
    let paragraphs: Vec<Vec<(String, String)>> = control
        .split("\n\n")
        .map(control_fields)
        .filter(|fields| {
            fields
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("Package"))
        })
        .collect();
    let own: Vec<&str> = paragraphs
        .iter()
        .flatten()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Package"))
        .map(|(_, v)| v.as_str())
        .collect();
    let mut out = Vec::new();
    for (name, value) in paragraphs.iter().flatten() {
        if !["depends", "pre-depends"].contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        let known: Vec<&str> = value.split(',').filter(|r| !r.contains("${")).collect();
        for relation in
            parse_relations(&known.join(",")).with_context(|| format!("field {name}"))?
        {
            if relation.iter().any(|a| own.contains(&a.name.as_str())) {
                continue;
            }
            let applying: Vec<String> = relation
                .iter()
                .filter(|a| a.applies_to(&arch))
                .map(|a| a.to_string())
                .collect();
            let joined = applying.join(" | ");
            if !applying.is_empty() && !out.contains(&joined) {
                out.push(joined);
            }
        }
    }
    Ok(out)
}

/// `declared_depends` of the project's debian/control; none without one
/// (a `cargo deb` project's Depends are only known from its build).
pub fn project_declared_depends(project: &Path) -> Result<Vec<String>> {
    let control = project.join("debian/control");
    match std::fs::read_to_string(&control) {
        Ok(text) => {
            declared_depends(&text).with_context(|| format!("reading {}", control.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", control.display())),
    }
}

/// A package dpkg has installed, as its status file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    /// `Provides:` as written (`python3-foo (= 1.0), bar`).
    pub provides: String,
}

/// The installed packages of a dpkg status file (`/var/lib/dpkg/status`).
pub fn installed_packages(status: &str) -> Vec<InstalledPackage> {
    status
        .split("\n\n")
        .map(control_fields)
        .filter_map(|fields| {
            let field = |key: &str| {
                fields
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v.clone())
            };
            let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
            installed.then(|| InstalledPackage {
                name: field("Package").unwrap_or_default(),
                version: field("Version").unwrap_or_default(),
                provides: field("Provides").unwrap_or_default(),
            })
        })
        .filter(|p| !p.name.is_empty())
        .collect()
}

/// The relations of `relations` that no package of `installed` satisfies, as
/// dpkg judges them: an alternative is met by an installed package of its
/// name whose version fits, or by a Provides of its name (a versioned
/// relation only by a versioned Provides that fits).
pub fn unmet_relations(
    installed: &[InstalledPackage],
    relations: &[Vec<Alternative>],
) -> Vec<String> {
    let mut provided: Vec<(String, Option<String>)> = Vec::new();
    for package in installed {
        for relation in parse_relations(&package.provides).unwrap_or_default() {
            for p in relation {
                provided.push((p.name, p.version.map(|(_, v)| v)));
            }
        }
    }
    let fits = |version: &str, constraint: &Option<(String, String)>| -> bool {
        let Some((op, wanted)) = constraint else {
            return true;
        };
        let (Ok(have), Ok(wanted)) = (
            version.parse::<debversion::Version>(),
            wanted.parse::<debversion::Version>(),
        ) else {
            return false;
        };
        let order = have.cmp(&wanted);
        match op.as_str() {
            "<<" => order.is_lt(),
            "<=" => order.is_le(),
            "=" => order.is_eq(),
            ">=" => order.is_ge(),
            _ => order.is_gt(),
        }
    };
    let met = |a: &Alternative| {
        installed
            .iter()
            .any(|p| p.name == a.name && fits(&p.version, &a.version))
            || provided.iter().any(|(name, version)| {
                *name == a.name
                    && match version {
                        Some(v) => fits(v, &a.version),
                        None => a.version.is_none(),
                    }
            })
    };
    let mut unmet = Vec::new();
    for relation in relations {
        if !relation.iter().any(met) {
            let shown = relation
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" | ");
            if !unmet.contains(&shown) {
                unmet.push(shown);
            }
        }
    }
    unmet
}

/// Build-Depends, Build-Depends-Arch and Build-Depends-Indep of a
/// debian/control's source paragraph, as the relations that apply to a plain
/// build on this architecture (arch and profile restrictions evaluated and
/// dropped), each as apt reads it: `debhelper-compat (= 13)`, `a | b`.
pub fn build_depends(control: &str) -> Result<Vec<String>> {
    let arch = host_architecture();
    let mut out = Vec::new();
    for (name, value) in control_fields(source_paragraph(control)) {
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
        process::cmd("dpkg", ["--print-architecture"])
            .read()
            .map(|a| a.trim().to_string())
            .unwrap_or_else(|_| match std::env::consts::ARCH {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_version_reads_the_binaries_a_host_carries() {
        let both = "ii  split-server 1.0-1\nii  split-agent 1.0-1\n";
        assert_eq!(
            installed_version(both, &["split-server", "split-agent"]),
            "1.0-1"
        );
        assert_eq!(installed_version(both, &[]), "1.0-1");
        let agent_only = "un  split-server \nii  split-agent 1.1-1\n";
        assert_eq!(installed_version(agent_only, &[]), "1.1-1");
        assert_eq!(
            installed_version(agent_only, &["split-server"]),
            "split-server not installed"
        );
        let mixed = "ii  split-server 1.0-1\nii  split-agent 1.1-1\n";
        assert_eq!(
            installed_version(mixed, &[]),
            "split-server 1.0-1, split-agent 1.1-1"
        );
        assert_eq!(installed_version(mixed, &["split-agent"]), "1.1-1");
        let none = "dpkg-query: no packages found matching split-agent\n";
        assert_eq!(
            installed_version(none, &[]),
            "not installed (dpkg-query: no packages found matching split-agent)"
        );
        // Removed but configuration left (`rc`): not installed.
        assert_eq!(
            installed_version("rc  x 1.0-1\n", &[]),
            "not installed (rc  x 1.0-1)"
        );
        assert_eq!(
            installed_query(&["a", "b c"]),
            "dpkg-query -W -f='${db:Status-Abbrev} ${Package} ${Version}\\n' a 'b c' 2>&1"
        );
    }

    #[test]
    fn binary_packages_and_deb_file_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("debian")).unwrap();
        std::fs::write(
            dir.path().join("debian/control"),
            "Source: split\nBuild-Depends: debhelper-compat (= 13)\n\nPackage: split-server\nArchitecture: all\n\n# a comment\nPackage: split-agent\nArchitecture: all\n",
        )
        .unwrap();
        assert_eq!(
            binary_package_names(dir.path()).unwrap(),
            vec!["split-server", "split-agent"]
        );
        assert_eq!(
            package_of_deb_file("split-agent_1.0.0.1-1+deb12u1_all.deb"),
            Some("split-agent")
        );
        assert_eq!(package_of_deb_file("split.changes"), None);
    }

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
    fn declared_depends_leave_out_substvars_and_own_binaries() {
        let control = "\
Source: split
Build-Depends: debhelper-compat (= 13), not-a-runtime-dep

Package: split-server
Depends: ${python3:Depends}, ${misc:Depends}, openssh-client,
 python3 (>= 3.9) | python3-minimal, split-agent (= ${binary:Version})
Pre-Depends: dpkg (>= 1.19)

Package: split-agent
Depends: ${misc:Depends}, openssh-client, only-elsewhere [!amd64 !arm64 !i386 !armhf !ppc64el !s390x !riscv64 !mips64el !armel]
";
        assert_eq!(
            declared_depends(control).unwrap(),
            vec![
                "openssh-client",
                "python3 (>= 3.9) | python3-minimal",
                "dpkg (>= 1.19)"
            ]
        );
        assert_eq!(
            declared_depends("Source: x\n\nPackage: x\n").unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn unmet_relations_judge_alternatives_versions_and_provides() {
        let status = "\
Package: python3
Status: install ok installed
Version: 3.11.2-1+b1
Provides: python3-profiler

Package: git
Status: install ok installed
Version: 1:2.39.5-0+deb12u2

Package: removed-one
Status: deinstall ok config-files
Version: 1.0

Package: python3-apt
Status: install ok installed
Version: 2.6.0
Provides: python3.11-apt, python3-apt-api (= 3.0)
";
        let installed = installed_packages(status);
        assert_eq!(
            installed
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            vec!["python3", "git", "python3-apt"]
        );
        let unmet = |field: &str| unmet_relations(&installed, &parse_relations(field).unwrap());
        // Plain names, versions with an epoch, alternatives.
        assert!(unmet("python3, git (>= 1:2.30), git (<< 1:3)").is_empty());
        assert!(unmet("python3:any (>= 3.9~), no-such | git").is_empty());
        // Provides: unversioned, and versioned only by a versioned Provides.
        assert!(unmet("python3-profiler, python3.11-apt, python3-apt-api (>= 2)").is_empty());
        assert_eq!(
            unmet("python3-profiler (>= 1), python3-apt-api (>> 3.0)"),
            vec!["python3-profiler (>= 1)", "python3-apt-api (>> 3.0)"]
        );
        // Too old, too new, absent, and removed (config files only).
        assert_eq!(
            unmet("python3 (>= 3.12), git (= 2.39.5-0+deb12u2), rsync | removed-one, python3-apt (<= 2.6.0)"),
            vec!["python3 (>= 3.12)", "git (= 2.39.5-0+deb12u2)", "rsync | removed-one"]
        );
    }

    #[test]
    fn relation_parser_rejects_garbage() {
        for bad in ["Foo", "a (>= )", "a (~ 1)", "a [amd64", "a b"] {
            let err = parse_relations(bad).unwrap_err();
            assert!(format!("{err:#}").contains(bad.trim()), "{bad}: {err:#}");
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
        build_deb(&root, &deb).unwrap();
        assert_eq!(deb_field(&deb, "Version").unwrap(), "1.0");
        assert_eq!(
            deb_depends(&deb).unwrap(),
            vec!["dpkg", "python3", "git | git-core"]
        );
        let err = deb_depends(&dir.path().join("missing.deb")).unwrap_err();
        assert!(format!("{err:#}").contains("missing.deb"), "{err:#}");
        let err = deb_field(&dir.path().join("missing.deb"), "Version").unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("reading Version of "), "{err}");
        assert!(err.contains("`dpkg-deb -f "), "{err}");
    }

    #[test]
    fn the_source_package_name_comes_from_the_source_paragraph() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("debian")).unwrap();
        let control = dir.path().join("debian/control");
        std::fs::write(
            &control,
            "# generated\n\nSource: minideploy\nSection: admin\n\nPackage: other\n",
        )
        .unwrap();
        assert_eq!(source_package_name(dir.path()).unwrap(), "minideploy");
        std::fs::write(&control, "Section: admin\n\nSource: not-here\n").unwrap();
        let err = format!("{:#}", source_package_name(dir.path()).unwrap_err());
        assert!(err.ends_with("debian/control: no `Source:` field"), "{err}");
    }
}
