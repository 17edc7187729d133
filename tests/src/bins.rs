//! Where the binaries under test live. The suites start the real `firma-transportd` and
//! `firmactl`, built beforehand by `cargo build --workspace --bins` (scripts/test.sh does it).

use std::path::{Path, PathBuf};

use anyhow::bail;

/// The workspace root, from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Directories searched for binaries, best first: `FIRMA_BIN_DIR`; the profile directory this
/// executable was built into (so a release bench finds release daemons); `$CARGO_TARGET_DIR/debug`;
/// `<workspace>/target/debug`.
pub fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("FIRMA_BIN_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir));
        // An explicit choice is the only choice: never fall back to some other build silently.
        return dirs;
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(parent) = exe.parent()
    {
        // Test executables sit in `<profile>/deps`, binaries in `<profile>`.
        if parent.file_name().is_some_and(|n| n == "deps") {
            dirs.extend(parent.parent().map(Path::to_path_buf));
        } else {
            dirs.push(parent.to_path_buf());
        }
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(dir).join("debug"));
    }
    dirs.push(workspace_root().join("target").join("debug"));
    dirs
}

/// The path of binary `name`, or an error listing where it was looked for and how to build it.
pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let dirs = candidate_dirs();
    for dir in &dirs {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    let tried: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "binary `{name}` not found in {}.\n  Build it first: cargo build --workspace --bins\n  or point FIRMA_BIN_DIR at the directory that holds it",
        tried.join(", ")
    )
}

/// `firma-transportd`.
pub fn daemon() -> anyhow::Result<PathBuf> {
    bin("firma-transportd")
}

/// `firmactl`.
pub fn firmactl() -> anyhow::Result<PathBuf> {
    bin("firmactl")
}
