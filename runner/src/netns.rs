//! A private network namespace with a tap device, for `--net tap`.
//!
//! Owns one namespace `spindle-<runner pid>` holding the tap `sptap0`
//! (host side 192.168.100.1/30, the guest 192.168.100.2/30). QEMU and the
//! host's side of a test (`iperf3`) run inside it with `ip netns exec`,
//! so nothing touches the host's own network. Deleting the namespace
//! deletes the tap with it; that happens when the `TapNamespace` is
//! dropped, which the runner's paths all reach: success, errors and
//! Ctrl-C (the interrupt handler only sets a flag the wait loops check).
//! A runner killed outright (SIGKILL) cannot clean up: the next
//! `TapNamespace::create` removes namespaces whose runner is gone.
//!
//! Needs root (`CAP_NET_ADMIN`); without it `create` says so.

use anyhow::{Context, Result, bail};
use std::process::{Command, Stdio};

/// The namespace prefix; the suffix is the runner's pid.
const PREFIX: &str = "spindle-";
/// The tap inside the namespace.
pub const TAP_NAME: &str = "sptap0";
/// The host side's address in the namespace.
pub const HOST_IP: &str = "192.168.100.1";
/// The guest's address (give it `net.ip=192.168.100.2/30 net.gw=...`).
pub const GUEST_IP: &str = "192.168.100.2";
/// The kernel command-line words that configure the guest on the tap.
pub const GUEST_NET_ARGS: &str = "net.ip=192.168.100.2/30 net.gw=192.168.100.1";

/// A namespace with a tap, deleted on drop.
#[derive(Debug)]
pub struct TapNamespace {
    name: String,
}

impl TapNamespace {
    /// Creates `spindle-<pid>` with the tap up and addressed.
    pub fn create() -> Result<TapNamespace> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "--net tap needs root: it creates a network namespace with a tap device \
                 (use --net user without privileges)"
            );
        }
        remove_stale();
        let name = format!("{PREFIX}{}", std::process::id());
        // A namespace left by an earlier runner with our pid (pid reuse).
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = TapNamespace { name };
        ns.configure()?;
        Ok(ns)
    }

    fn configure(&self) -> Result<()> {
        let n = self.name.as_str();
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "tuntap", "add", "dev", TAP_NAME, "mode", "tap"])?;
        ip(&[
            "-n",
            n,
            "addr",
            "add",
            &format!("{HOST_IP}/30"),
            "dev",
            TAP_NAME,
        ])?;
        ip(&["-n", n, "link", "set", TAP_NAME, "up"])?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program args...` to run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for TapNamespace {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "spindle: could not delete network namespace {}: {e:#}",
                self.name
            );
        }
    }
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (package iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Names of namespaces a dead runner left behind.
fn stale_names(listing: &str, alive: impl Fn(u32) -> bool) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let pid: u32 = name.strip_prefix(PREFIX)?.parse().ok()?;
            (!alive(pid)).then(|| name.to_string())
        })
        .collect()
}

fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listing = String::from_utf8_lossy(&out.stdout);
    for name in stale_names(&listing, crate::ctl::registry::pid_alive) {
        eprintln!("spindle: removing network namespace {name} (its runner is gone)");
        let _ = ip(&["netns", "del", &name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dead_runners_namespaces_are_stale() {
        let listing = "spindle-100 (id: 3)\nspindle-200\nother-300\nspindle-x\nlgb-5\n";
        let stale = stale_names(listing, |pid| pid == 200);
        assert_eq!(stale, vec!["spindle-100".to_string()]);
    }
}
