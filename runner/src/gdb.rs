//! `cargo spindle gdb`: boots Spindle paused with QEMU's gdb stub on
//! 127.0.0.1 and attaches gdb to it with the kernel's symbols.
//!
//! The kernel enters at 32-bit PVH code and only later runs at higher-half
//! addresses, so a software breakpoint on `kmain` set before paging is on
//! is never hit: `hbreak kmain` is the reliable way to stop there.

use crate::guest::{GuardedChild, interrupted};
use crate::qemu::{QemuConfig, shell_quote};
use anyhow::{Context, Result, bail};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; QEMU binds it next).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(l.local_addr()?.port())
}

/// gdb's arguments: load `elf`'s symbols and attach to the stub on `port`.
pub fn gdb_args(elf: &Path, port: u16) -> Vec<String> {
    vec![
        "-q".into(),
        "-ex".into(),
        "set architecture i386:x86-64".into(),
        "-ex".into(),
        format!("target remote 127.0.0.1:{port}"),
        elf.display().to_string(),
    ]
}

/// gdb's arguments for a non-interactive check: stop at `kmain`, print the
/// backtrace, then kill the guest.
pub fn gdb_batch_args(elf: &Path, port: u16) -> Vec<String> {
    let mut args = vec!["-batch".to_string()];
    args.extend(gdb_args(elf, port));
    let script = ["hbreak kmain", "continue", "bt", "kill"];
    let at = args.len() - 1; // before the ELF path
    for cmd in script.iter().rev() {
        args.insert(at, cmd.to_string());
        args.insert(at, "-ex".into());
    }
    args
}

/// A shell-pasteable command line.
pub fn command_line(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when something listens on 127.0.0.1:`port` (reads /proc/net/tcp,
/// so probing does not consume the stub's single connection).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
    })
}

fn wait_for_stub(qemu: &mut GuardedChild, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(port) {
        if let Some(status) = qemu.try_wait()? {
            bail!("QEMU exited before its gdb stub came up ({status})");
        }
        if Instant::now() > deadline {
            bail!("QEMU's gdb stub is not listening on 127.0.0.1:{port} after 10 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Boots `config` (which must have `gdb_port` and `paused` set).
///
/// `print_only`: QEMU runs paused in the foreground with its serial on this
/// terminal; the gdb command to paste elsewhere is printed to stderr; the
/// runner waits for QEMU (Ctrl-C stops it).
/// Otherwise: serial goes to `serial_log`, gdb runs on this terminal, and
/// QEMU is stopped when gdb exits. Returns gdb's (or QEMU's) exit code.
pub fn session(config: &QemuConfig, elf: &Path, print_only: bool) -> Result<i32> {
    let port = config.gdb_port.context("gdb session without a gdb port")?;
    let gdb_line = command_line("gdb", &gdb_args(elf, port));
    let batch_line = command_line("gdb", &gdb_batch_args(elf, port));
    let mut cmd = config.command();
    cmd.stdin(Stdio::null());
    if !print_only {
        // Keep gdb's Ctrl-C (interrupt the target) away from QEMU.
        cmd.process_group(0);
    }
    let mut qemu = GuardedChild::spawn(cmd)?;
    wait_for_stub(&mut qemu, port)?;
    if print_only {
        eprintln!(
            "spindle: QEMU is paused, gdb stub on 127.0.0.1:{port}:\n  {}",
            config.command_line()
        );
        eprintln!(
            "spindle: attach from another terminal:\n  {gdb_line}\n  (gdb) hbreak kmain\n  (gdb) continue"
        );
        eprintln!("spindle: or non-interactively:\n  {batch_line}");
        eprintln!("spindle: Ctrl-C here stops QEMU");
        loop {
            if let Some(status) = qemu.try_wait()? {
                return Ok(status.code().unwrap_or(2));
            }
            if interrupted() {
                qemu.terminate();
                return Ok(130);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("spindle: {gdb_line}");
    eprintln!("spindle: try `hbreak kmain` then `continue`");
    let status = Command::new("gdb")
        .args(gdb_args(elf, port))
        .status()
        .context("cannot start gdb: run `cargo spindle setup`")?;
    // Ctrl-C presses inside gdb set the interrupt flag too; they are gdb's.
    qemu.terminate();
    Ok(status.code().unwrap_or(2))
}
