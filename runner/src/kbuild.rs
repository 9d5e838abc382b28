//! Building the kernel for `x86_64-unknown-none` into `target/kernel`.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

pub const KERNEL_PACKAGE: &str = "spindle-kernel";
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Which cargo profile to build the kernel with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release(release: bool) -> Self {
        if release {
            Profile::Release
        } else {
            Profile::Debug
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// The cargo target directory for kernel builds.
pub fn kernel_target_dir() -> PathBuf {
    crate::workspace_root().join("target").join("kernel")
}

/// Where the kernel ELF lands for `profile`.
pub fn kernel_artifact(profile: Profile) -> PathBuf {
    kernel_target_dir()
        .join(KERNEL_TARGET)
        .join(profile.dir())
        .join(KERNEL_PACKAGE)
}

/// Builds the kernel (cargo's output goes to our stderr) and returns the
/// artifact path.
pub fn build_kernel(profile: Profile) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root())
        .args([
            "build",
            "-p",
            KERNEL_PACKAGE,
            "--target",
            KERNEL_TARGET,
            "--target-dir",
        ])
        .arg(kernel_target_dir())
        // These would silently override .cargo/config.toml's kernel flags.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("cannot run cargo to build the kernel")?;
    if !status.success() {
        bail!("building the kernel failed ({status}); see cargo's errors above");
    }
    let artifact = kernel_artifact(profile);
    if !artifact.is_file() {
        bail!("the kernel built but {} is missing", artifact.display());
    }
    Ok(artifact)
}
