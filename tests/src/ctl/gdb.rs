//! Reading a core file back: its ELF header, and what gdb makes of it
//! (`info threads`, `thread apply all bt`) for the `ctl` tests.
//!
//! Theory: the core is judged by the tools a user would point at it; gdb's
//! output is kept whole for failure messages and counted leniently (rows
//! of its thread table), so its cosmetic changes do not break the tests.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Checks an ELF core file's header: magic, 64-bit, ET_CORE, x86_64.
pub fn check_core_header(core: &[u8]) -> Result<(), String> {
    if core.len() < 64 || !core.starts_with(b"\x7fELF") {
        return Err(format!(
            "the core is not an ELF file ({} bytes, starting {:02x?})",
            core.len(),
            &core[..core.len().min(8)]
        ));
    }
    let e_type = u16::from_le_bytes([core[16], core[17]]);
    let machine = u16::from_le_bytes([core[18], core[19]]);
    if core[4] != 2 || e_type != 4 || machine != 62 {
        return Err(format!(
            "the core's ELF header says class {}, type {e_type}, machine {machine}; \
             expected 2 (64-bit), 4 (ET_CORE), 62 (x86_64)",
            core[4]
        ));
    }
    Ok(())
}

/// What gdb made of a core.
#[derive(Clone, Debug)]
pub struct GdbReport {
    /// Rows of `info threads`.
    pub threads: usize,
    /// The whole output.
    pub output: String,
}

/// Counts the rows of gdb's `info threads` table in `output`.
pub fn count_info_threads(output: &str) -> usize {
    let mut rows = 0;
    let mut in_table = false;
    for line in output.lines() {
        let t = line.trim_start();
        if t.starts_with("Id") && t.contains("Target Id") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        let t = t.strip_prefix('*').unwrap_or(t).trim_start();
        match t.split_whitespace().next() {
            Some(first) if first.parse::<u32>().is_ok() => rows += 1,
            _ if t.starts_with("Thread ") => break,
            _ => {}
        }
    }
    rows
}

/// Runs `gdb -batch -nx IMAGE CORE -ex 'info threads' -ex 'thread apply
/// all bt'`; `Ok(None)` when gdb is not installed.
pub fn gdb_on_core(image: &Path, core: &Path) -> Result<Option<GdbReport>, String> {
    gdb_batch(image, core, &["info threads", "thread apply all bt"])
}

/// Runs `gdb -batch -nx IMAGE CORE` with `commands` (each an `-ex`);
/// `Ok(None)` when gdb is not installed.
pub fn gdb_batch(
    image: &Path,
    core: &Path,
    commands: &[&str],
) -> Result<Option<GdbReport>, String> {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("gdb").is_file()));
    if !on_path {
        return Ok(None);
    }
    let mut child = std::process::Command::new("gdb")
        .args(["-batch", "-nx"])
        .arg(image)
        .arg(core)
        .args(commands.iter().flat_map(|command| ["-ex", command]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run gdb: {e}"))?;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut text);
        }
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_string(&mut text);
        }
        text
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("gdb did not finish within 120 s".into());
            }
        }
    }
    let output = reader.join().unwrap_or_default();
    Ok(Some(GdbReport {
        threads: count_info_threads(&output),
        output,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdb_thread_tables_are_counted() {
        let out = "  Id   Target Id         Frame \n\
                   * 1    LWP 3             target::spin_forever () at src/main.rs:10\n  \
                   2    LWP 4             0x0000 in target::wait_in_pause ()\n\n\
                   Thread 2 (LWP 4):\n#0  0x0000 in target::wait_in_pause ()\n\
                   Thread 1 (LWP 3):\n#0  target::spin_forever ()\n";
        assert_eq!(count_info_threads(out), 2);
        assert_eq!(count_info_threads("No threads.\n"), 0);
    }

    #[test]
    fn core_headers_are_checked() {
        let mut core = vec![0u8; 64];
        core[..4].copy_from_slice(b"\x7fELF");
        core[4] = 2;
        core[16] = 4;
        core[18] = 62;
        assert!(check_core_header(&core).is_ok());
        core[16] = 2;
        assert!(check_core_header(&core).is_err());
        assert!(check_core_header(b"\x7fELF").is_err());
    }
}
