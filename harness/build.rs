//! Build-time settings of the harness crate.
//!
//! `RELEASE_HARNESS_SKIP_DOCKER` (any value but empty or `0`) sets the cfg
//! `skip_docker`, under which every container test is marked ignored: a
//! laptop without Docker sees them as IGNORED in cargo's summary, not as
//! passed.
//!
//! The fixtures (`fixtures/` at the workspace root) are embedded in the
//! binary: `$OUT_DIR/fixtures.rs` lists every file with its mode and an
//! `include_bytes!` of it, so the packaged CLI releases a fixture without
//! the source tree.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a local Python run or build leaves in a fixture: not part of it.
const NOT_FIXTURE_FILES: [&str; 2] = ["__pycache__", ".pybuild"];

fn main() {
    embed_fixtures();

    println!("cargo::rustc-check-cfg=cfg(skip_docker)");
    println!("cargo::rerun-if-env-changed=RELEASE_HARNESS_SKIP_DOCKER");
    let skip =
        std::env::var_os("RELEASE_HARNESS_SKIP_DOCKER").is_some_and(|v| !v.is_empty() && v != "0");
    if skip {
        println!("cargo::rustc-cfg=skip_docker");
    }
}

fn embed_fixtures() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../fixtures");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &root, &mut files);
    files.sort();
    let mut code = String::from(
        "/// Every fixture file: (path under fixtures/, mode, contents).\n\
         pub(crate) static FILES: &[(&str, u32, &[u8])] = &[\n",
    );
    for (relative, mode, absolute) in &files {
        writeln!(
            code,
            "    ({relative:?}, 0o{mode:o}, include_bytes!({absolute:?})),"
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("fixtures.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// (path relative to `root` with `/`, 0o755 or 0o644 as git keeps it, path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, u32, String)>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if NOT_FIXTURE_FILES.iter().any(|n| name == *n) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).unwrap();
        if meta.is_dir() {
            collect(root, &path, files);
            continue;
        }
        let relative = path.strip_prefix(root).unwrap();
        let relative: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        let absolute = path.canonicalize().unwrap();
        files.push((relative.join("/"), mode, absolute.display().to_string()));
    }
}
