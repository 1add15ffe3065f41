//! The demo's own programs (hello-cf, app-that-calls-externally, traffic), taken from the cargo
//! output directory local-mesh runs from, and built there when missing or older than their
//! sources.
//!
//! A fresh clone's first `cargo run --release -p local-mesh` builds local-mesh, whose
//! dependencies include the three programs' libraries (local-mesh/Cargo.toml), so every crate
//! they need is compiled there, once. The build here then names local-mesh too: cargo unifies
//! the features of shared crates over the packages it is asked for, and with local-mesh among
//! them the set is exactly the one of the first build, so nothing is compiled again but the
//! three main.rs files; without it, crates such as tokio would get other features (traffic's
//! `io-std`, ...) and be rebuilt with everything above them. For the same reason the build runs
//! without the variables `cargo run` set for local-mesh.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context as _, bail};

pub const HELLO_CF: &str = "hello-cf";
pub const PROXY: &str = "app-that-calls-externally";
pub const CALLER: &str = "traffic";
/// local-mesh's own package, named in every build of the programs to keep features unified.
const LOCAL_MESH: &str = "local-mesh";

/// Paths of the three binaries.
#[derive(Debug, Clone)]
pub struct Programs {
    pub hello_cf: PathBuf,
    pub proxy: PathBuf,
    pub caller: PathBuf,
}

/// Finds the binaries in `bin_dir` (e.g. `target/release`), building those that are missing
/// or stale with `$CARGO build` (the profile is the directory's name).
pub async fn ensure_built(bin_dir: &Path, repo: &Path) -> anyhow::Result<Programs> {
    let (dir, root) = (bin_dir.to_owned(), repo.to_owned());
    tokio::task::spawn_blocking(move || {
        let stale = stale(&dir, &root, &[HELLO_CF, PROXY, CALLER])?;
        if stale.is_empty() {
            return Ok(());
        }
        build(&dir, &root, &stale, &[LOCAL_MESH])
    })
    .await
    .context("the build task failed")??;
    Ok(Programs {
        hello_cf: bin_dir.join(HELLO_CF),
        proxy: bin_dir.join(PROXY),
        caller: bin_dir.join(CALLER),
    })
}

/// Builds, with one `$CARGO build` into `bin_dir`, those of `packages` (each a workspace
/// package whose binary has its name) that are missing or older than their sources or the
/// shared crate's. Blocks until cargo is done; its progress goes to stderr.
pub fn build_stale(bin_dir: &Path, repo: &Path, packages: &[&str]) -> anyhow::Result<()> {
    let stale = stale(bin_dir, repo, packages)?;
    if stale.is_empty() {
        return Ok(());
    }
    build(bin_dir, repo, &stale, &[])
}

/// Those of `packages` whose binary in `bin_dir` is missing or older than their sources.
fn stale<'p>(bin_dir: &Path, repo: &Path, packages: &[&'p str]) -> anyhow::Result<Vec<&'p str>> {
    let mut stale = Vec::new();
    for &package in packages {
        let built = modified(&bin_dir.join(package));
        let newest_source = newest_source(repo, package)?;
        if built.is_none_or(|built| newest_source.is_some_and(|source| source > built)) {
            stale.push(package);
        }
    }
    Ok(stale)
}

/// Builds `packages`, with `also` named on the same command line (built if stale, and part of
/// the feature unification).
fn build(bin_dir: &Path, repo: &Path, packages: &[&str], also: &[&str]) -> anyhow::Result<()> {
    let profile = bin_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("");
    let target_dir = bin_dir
        .parent()
        .filter(|_| profile == "release" || profile == "debug");
    let Some(target_dir) = target_dir else {
        bail!(
            "{} are missing or stale in {}, which is not a cargo target/<profile> directory; build them with cargo",
            packages.join(", "),
            bin_dir.display()
        );
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    // `cargo run` sets these for local-mesh; the user's shell, where the first build ran, had
    // none of them. Build scripts that ask to rerun when one changes (ring's does, for
    // CARGO_MANIFEST_DIR and CARGO_PKG_*) would otherwise run again and rebuild everything above
    // them: ring, rustls, reqwest, ...
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name
            .to_str()
            .filter(|name| set_by_cargo_for_a_program(name))
        {
            command.env_remove(name);
        }
    }
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(repo.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if profile == "release" {
        command.arg("--release");
    }
    for package in packages.iter().chain(also) {
        command.arg("-p").arg(package);
    }
    // The command alone: its Debug form would list every variable removed above.
    let shown = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "local-mesh: {} missing or older than the sources in {}; building: {shown}",
        packages.join(", "),
        bin_dir.display(),
    );
    // Cargo's progress goes to stderr; nothing it prints belongs on stdout.
    let stderr = std::os::fd::AsFd::as_fd(&std::io::stderr())
        .try_clone_to_owned()
        .context("cannot duplicate stderr")?;
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("building {} failed: {status}", packages.join(", "));
    }
    Ok(())
}

/// Whether `name` is one of the variables cargo sets for the program it runs (`CARGO`, which
/// names cargo itself, is kept).
fn set_by_cargo_for_a_program(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "OUT_DIR"
        )
}

/// The newest modification time among a package's sources and the shared crate's.
fn newest_source(repo: &Path, package: &str) -> anyhow::Result<Option<SystemTime>> {
    let mut newest = None;
    for root in [repo.join(package), repo.join("common")] {
        newest = newest.max(newest_in(&root.join("src"))?);
        newest = newest.max(modified(&root.join("Cargo.toml")));
    }
    Ok(newest)
}

fn newest_in(dir: &Path) -> anyhow::Result<Option<SystemTime>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut newest = None;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        let time = if file_type.is_dir() {
            newest_in(&path)?
        } else {
            modified(&path)
        };
        newest = newest.max(time);
    }
    Ok(newest)
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|meta| meta.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_cargo_sets_for_a_program_is_dropped() {
        for dropped in [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            assert!(set_by_cargo_for_a_program(dropped), "{dropped}");
        }
        // The user's own settings reach the build.
        for kept in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_PROFILE_RELEASE_LTO",
            "CARGO_BUILD_JOBS",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!set_by_cargo_for_a_program(kept), "{kept}");
        }
    }
}
