//! `cargo spindle setup`: makes sure the host has what Spindle needs —
//! the two Rust targets, QEMU (with qboot), iperf3, musl-tools and, for
//! `cargo spindle gdb`, gdb. Installs with apt-get when root; otherwise
//! says exactly what to run. Silent when nothing is missing.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Command, Stdio};

pub const RUST_TARGETS: [&str; 2] = ["x86_64-unknown-none", "x86_64-unknown-linux-musl"];

/// A Debian package and how to tell whether it is installed.
struct Tool {
    package: &'static str,
    present: fn() -> bool,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn tools(with_gdb: bool) -> Vec<Tool> {
    let mut t = vec![
        Tool {
            package: "qemu-system-x86",
            present: || {
                on_path(crate::qemu::QEMU_BIN) && Path::new(crate::qemu::QBOOT_ROM).is_file()
            },
        },
        Tool {
            package: "iperf3",
            present: || on_path("iperf3"),
        },
        Tool {
            package: "musl-tools",
            present: || on_path("musl-gcc"),
        },
        // The Linux baseline's build script (`bench syscalls`) needs these.
        Tool {
            package: "cpio",
            present: || on_path("cpio"),
        },
        Tool {
            package: "xz-utils",
            present: || on_path("xz"),
        },
    ];
    if with_gdb {
        t.push(Tool {
            package: "gdb",
            present: || on_path("gdb"),
        });
    }
    t
}

/// Installs whatever is missing. `with_gdb` adds gdb to the list.
pub fn setup(with_gdb: bool) -> Result<()> {
    ensure_rust_targets()?;
    let missing: Vec<&str> = tools(with_gdb)
        .iter()
        .filter(|t| !(t.present)())
        .map(|t| t.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)?;
    let still: Vec<&str> = tools(with_gdb)
        .iter()
        .filter(|t| !(t.present)())
        .map(|t| t.package)
        .collect();
    if !still.is_empty() {
        bail!(
            "installed {} but still missing: {} (is {} present?)",
            missing.join(" "),
            still.join(" "),
            crate::qemu::QBOOT_ROM
        );
    }
    Ok(())
}

fn ensure_rust_targets() -> Result<()> {
    let out = match Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    {
        Ok(out) if out.status.success() => out,
        // Without rustup we cannot check; the kernel build will say what is
        // missing.
        _ => return Ok(()),
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("spindle: adding Rust targets {}", missing.join(" "));
    let status = Command::new("rustup")
        .args(["target", "add"])
        .args(&missing)
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!(
            "`rustup target add {}` failed ({status})",
            missing.join(" ")
        );
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True when apt has no package lists yet (a fresh container).
fn apt_lists_empty() -> bool {
    std::fs::read_dir("/var/lib/apt/lists").map_or(true, |entries| {
        !entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
    })
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let command = format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    if !is_root() {
        bail!(
            "missing packages: {}\nrun as root:\n  apt-get update && DEBIAN_FRONTEND=noninteractive {command}",
            packages.join(" ")
        );
    }
    if !on_path("apt-get") {
        bail!(
            "missing packages: {} (no apt-get here: install them with your package manager)",
            packages.join(" ")
        );
    }
    eprintln!("spindle: installing {}", packages.join(" "));
    if !apt_lists_empty() && apt(&["install", "-y", "--no-install-recommends"], packages).is_ok() {
        return Ok(());
    }
    apt(&["update"], &[]).context("apt-get update failed")?;
    apt(&["install", "-y", "--no-install-recommends"], packages)
        .with_context(|| format!("`{command}` failed"))
}

/// Runs apt-get quietly; its output is shown only when it fails.
fn apt(args: &[&str], packages: &[&str]) -> Result<()> {
    let out = Command::new("apt-get")
        .args(args)
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .context("running apt-get")?;
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "apt-get {} {} exited with {}:\n{}{}",
        args.join(" "),
        packages.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
