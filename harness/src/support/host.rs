//! The programs the harness runs on this host (git, mmdebstrap, dpkg-deb,
//! dpkg-parsechangelog, ...), the Debian package of each, and the first-run
//! step that brings the missing ones: as root with apt-get, it installs them;
//! otherwise it stops with the one apt-get command that does. The image
//! makers (mmdebstrap and its certificates) are brought only when an image
//! must be made (`ensure_for_images`): a host whose engine has the images
//! already, such as a CI runner on a warm shared engine, needs neither.

use std::path::Path;

use anyhow::{bail, Result};

use crate::support::process;

/// A program the harness runs, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    /// Looked up on PATH (and in the sbin directories, where root's tools
    /// live even when a user's PATH lacks them).
    pub program: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
    /// What the harness uses it for, for the line that installs it.
    pub why: &'static str,
}

pub const GIT: Tool = Tool {
    program: "git",
    package: "git",
    why: "reads and writes the project and its ledger",
};
pub const MMDEBSTRAP: Tool = Tool {
    program: "mmdebstrap",
    package: "mmdebstrap",
    why: "makes the images",
};
pub const DPKG_DEB: Tool = Tool {
    program: "dpkg-deb",
    package: "dpkg",
    why: "reads the built packages",
};
pub const DPKG_PARSECHANGELOG: Tool = Tool {
    program: "dpkg-parsechangelog",
    package: "dpkg-dev",
    why: "reads debian/changelog",
};
/// Not run by the harness itself: the sign that the CA certificates
/// mmdebstrap needs for https mirrors are installed.
pub const CA_CERTIFICATES: Tool = Tool {
    program: "update-ca-certificates",
    package: "ca-certificates",
    why: "lets mmdebstrap fetch from https mirrors",
};
/// `bench` times plain `docker run` against the harness's own fleet start.
pub const DOCKER_CLI: Tool = Tool {
    program: "docker",
    package: "docker.io",
    why: "bench times plain `docker run` for comparison",
};

/// What `release` needs before it starts: everything from the project to
/// the verified .deb but the image makers (`FOR_IMAGES`).
pub const FOR_RELEASE: &[Tool] = &[DPKG_DEB, DPKG_PARSECHANGELOG, GIT];
/// What `bump`, `promote`, `rollback` and `status` need.
pub const FOR_PROJECT: &[Tool] = &[GIT, DPKG_PARSECHANGELOG];
/// What `bench` needs before it starts: the plain docker CLI (and
/// `FOR_IMAGES` if an image is missing).
pub const FOR_BENCH: &[Tool] = &[DPKG_DEB, DOCKER_CLI];
/// What making a base image needs, brought when one is missing.
pub const FOR_IMAGES: &[Tool] = &[MMDEBSTRAP, CA_CERTIFICATES];

/// `ensure(FOR_IMAGES)` with the real lookup, once at a time in a process:
/// the builder and the fleet images can be missing at once, and two
/// apt-gets would fight over dpkg's lock. Called only when an image must
/// be made.
pub fn ensure_for_images(say: &dyn Fn(&str)) -> Result<()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    ensure(FOR_IMAGES, &on_path, running_as_root(), say)
}

/// Whether `program` can be run from this host: an executable file on PATH
/// or in the sbin directories.
pub fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(Into::into))
        .any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root (the owner of /proc/self is the
/// process's user).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The tools of `needed` that `found` does not find, without repeats.
pub fn missing(needed: &[Tool], found: &dyn Fn(&str) -> bool) -> Vec<Tool> {
    let mut missing: Vec<Tool> = Vec::new();
    for tool in needed {
        if !missing.contains(tool) && !found(tool.program) {
            missing.push(*tool);
        }
    }
    missing
}

/// Brings the tools of `needed` that `found` does not find: as root on a
/// host with apt-get, installs their packages (`apt-get update`, then one
/// `apt-get install -y`), saying one line for each; otherwise fails with the
/// one command that installs them all.
pub fn ensure(
    needed: &[Tool],
    found: &dyn Fn(&str) -> bool,
    as_root: bool,
    say: &dyn Fn(&str),
) -> Result<()> {
    let missing = missing(needed, found);
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = Vec::new();
    for tool in &missing {
        if !packages.contains(&tool.package) {
            packages.push(tool.package);
        }
    }
    let what = missing
        .iter()
        .map(|t| format!("{} ({})", t.program, t.why))
        .collect::<Vec<_>>()
        .join(", ");
    let command = format!("apt-get install -y {}", packages.join(" "));
    if !found("apt-get") {
        bail!(
            "this host lacks {what}, and has no apt-get to install them.\n  fix: install the \
             Debian packages {} (or their equivalent) and run again",
            packages.join(" ")
        );
    }
    if !as_root {
        bail!(
            "this host lacks {what}.\n  fix: sudo {command}\n  (run as root, the harness installs \
             them itself)"
        );
    }
    for tool in &missing {
        say(&format!("installing {} ({})", tool.package, tool.why));
    }
    tracing::info!(packages = ?packages, "installing host packages");
    let noninteractive = |e: duct::Expression| e.env("DEBIAN_FRONTEND", "noninteractive");
    process::cmd("apt-get", ["-q", "update"])
        .with(noninteractive)
        .run()?;
    process::cmd(
        "apt-get",
        ["-q", "install", "-y"]
            .into_iter()
            .chain(packages.iter().copied()),
    )
    .with(noninteractive)
    .run()?;
    let still = self::missing(&missing, found);
    if !still.is_empty() {
        let programs: Vec<&str> = still.iter().map(|t| t.program).collect();
        bail!(
            "`{command}` succeeded but {} still cannot be found on PATH.\n  fix: add the \
             directory that holds {} to PATH",
            programs.join(", "),
            if programs.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// The real lookup, except that `absent` programs are not found.
    fn without<'a>(absent: &'a [&'a str]) -> impl Fn(&str) -> bool + 'a {
        move |program| !absent.contains(&program) && on_path(program)
    }

    #[test]
    fn the_programs_the_harness_runs_are_found_here() {
        // The machine that runs the tests has everything a release needs;
        // a false negative of the lookup would install for nothing.
        assert_eq!(missing(FOR_RELEASE, &on_path), vec![]);
        assert_eq!(missing(FOR_IMAGES, &on_path), vec![]);
        assert!(!on_path("no-such-program-here"));
    }

    #[test]
    fn not_root_stops_with_one_command_for_everything_missing() {
        let said = RefCell::new(Vec::new());
        let needed = [FOR_IMAGES, FOR_RELEASE].concat();
        let err = ensure(
            &needed,
            &without(&["mmdebstrap", "dpkg-parsechangelog"]),
            false,
            &|line| said.borrow_mut().push(line.to_string()),
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("mmdebstrap (makes the images)")
                && msg.contains("dpkg-parsechangelog (reads debian/changelog)"),
            "{msg}"
        );
        assert!(
            msg.contains("fix: sudo apt-get install -y mmdebstrap dpkg-dev\n"),
            "{msg}"
        );
        assert_eq!(msg.matches("apt-get install").count(), 1, "{msg}");
        assert!(said.borrow().is_empty(), "nothing installed: {said:?}");
    }

    #[test]
    fn without_apt_get_names_the_packages() {
        let err = ensure(&[GIT], &without(&["git", "apt-get"]), true, &|_| {}).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("no apt-get"), "{msg}");
        assert!(msg.contains("packages git"), "{msg}");
    }

    #[test]
    fn nothing_missing_does_nothing() {
        let said = RefCell::new(0);
        ensure(FOR_RELEASE, &|_| true, false, &|_| *said.borrow_mut() += 1).unwrap();
        assert_eq!(*said.borrow(), 0);
    }

    /// As root, a tool the lookup reports missing is installed for real
    /// (ca-certificates, which is there already, so apt-get changes nothing
    /// but its package lists); the lookup is asked again afterwards.
    #[test]
    fn as_root_installs_the_missing_package_with_apt_get() {
        if !running_as_root() {
            let err = ensure(
                &[CA_CERTIFICATES],
                &without(&["update-ca-certificates"]),
                false,
                &|_| {},
            )
            .unwrap_err();
            assert!(format!("{err:#}").contains("sudo apt-get install -y ca-certificates"));
            return;
        }
        let said = RefCell::new(Vec::new());
        let asked = RefCell::new(0);
        let found = |program: &str| {
            if program == "update-ca-certificates" {
                // Missing at first, there after the install.
                *asked.borrow_mut() += 1;
                return *asked.borrow() > 1;
            }
            on_path(program)
        };
        ensure(&[CA_CERTIFICATES], &found, true, &|line| {
            said.borrow_mut().push(line.to_string())
        })
        .unwrap();
        assert_eq!(
            *said.borrow(),
            ["installing ca-certificates (lets mmdebstrap fetch from https mirrors)"]
        );
        assert_eq!(*asked.borrow(), 2, "looked up before and after the install");
    }
}
