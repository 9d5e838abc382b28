//! Where running guests are found: a per-user runtime directory with, for
//! each `cargo spindle run` (named by the runner's pid), its broker socket
//! `<pid>.sock`, QEMU's control socket `<pid>.qemu.sock` and a JSON entry
//! `<pid>.json` (runner pid, QEMU pid, sockets, image, start time).
//!
//! Theory: an entry is live exactly while its runner process is; the
//! runner removes its files when it ends (a guard, so also on errors and
//! Ctrl-C), and whatever a killed runner left behind is stale: ignored and
//! removed by the next reader. The directory is private (mode 0700).

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Overrides the runtime directory (for tests, or a shared setup).
pub const RUNTIME_DIR_ENV: &str = "SPINDLE_RUNTIME_DIR";
/// The longest unix socket path the kernel takes (`sun_path` less NUL).
const MAX_SOCKET_PATH: usize = 107;

/// One running guest, as its runner registered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub runner_pid: u32,
    pub qemu_pid: Option<u32>,
    /// The broker's socket: what `cargo spindle ctl` connects to.
    pub socket: PathBuf,
    /// QEMU's own control socket (one client: the runner).
    pub qemu_socket: PathBuf,
    /// The guest program's path, if `--image` was given.
    pub image: Option<String>,
    /// Start time, seconds since the Unix epoch.
    pub started: u64,
}

impl Instance {
    pub fn to_json(&self) -> Value {
        json!({
            "runner_pid": self.runner_pid,
            "qemu_pid": self.qemu_pid,
            "socket": self.socket.display().to_string(),
            "qemu_socket": self.qemu_socket.display().to_string(),
            "image": self.image,
            "started": self.started,
        })
    }

    /// Reads an entry; `None` when it is not one.
    pub fn from_json(v: &Value) -> Option<Instance> {
        let pid = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok())
        };
        let path = |k: &str| v.get(k).and_then(Value::as_str).map(PathBuf::from);
        Some(Instance {
            runner_pid: pid("runner_pid")?,
            qemu_pid: pid("qemu_pid"),
            socket: path("socket")?,
            qemu_socket: path("qemu_socket")?,
            image: v.get("image").and_then(Value::as_str).map(str::to_string),
            started: v.get("started").and_then(Value::as_u64).unwrap_or(0),
        })
    }
}

/// The files of one runner in the runtime directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    pub socket: PathBuf,
    pub qemu_socket: PathBuf,
    pub entry: PathBuf,
}

impl Paths {
    pub fn for_runner(dir: &Path, runner_pid: u32) -> Paths {
        Paths {
            socket: dir.join(format!("{runner_pid}.sock")),
            qemu_socket: dir.join(format!("{runner_pid}.qemu.sock")),
            entry: dir.join(format!("{runner_pid}.json")),
        }
    }

    /// Refuses socket paths the kernel cannot bind.
    pub fn check(&self) -> Result<()> {
        for p in [&self.socket, &self.qemu_socket] {
            let len = p.as_os_str().len();
            if len > MAX_SOCKET_PATH {
                bail!(
                    "the socket path {} is {len} bytes, longer than a unix socket allows \
                     ({MAX_SOCKET_PATH}); set {RUNTIME_DIR_ENV} to a shorter directory",
                    p.display()
                );
            }
        }
        Ok(())
    }

    /// Removes every file (missing ones are fine).
    pub fn remove_all(&self) {
        for p in [&self.entry, &self.socket, &self.qemu_socket] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The runtime directory: `$SPINDLE_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/spindle`, else `/tmp/spindle-<uid>`. Not created.
pub fn runtime_dir() -> PathBuf {
    let from_env = |k: &str| {
        std::env::var_os(k)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(dir) = from_env(RUNTIME_DIR_ENV) {
        return dir;
    }
    if let Some(xdg) = from_env("XDG_RUNTIME_DIR").filter(|p| p.is_dir()) {
        return xdg.join("spindle");
    }
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/tmp/spindle-{uid}"))
}

/// Creates `dir` (mode 0700) if needed and checks it is a private
/// directory of ours, not a symlink someone else planted.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the runtime directory {}", dir.display()))?;
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading the runtime directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    // SAFETY: getuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid {
        bail!(
            "the runtime directory {} belongs to uid {}, not to you (uid {uid})",
            dir.display(),
            meta.uid()
        );
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

/// Writes `instance`'s entry (whole, by rename, so a reader never sees
/// half of it).
pub fn write_entry(paths: &Paths, instance: &Instance) -> Result<()> {
    let tmp = paths.entry.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(&instance.to_json())? + "\n";
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &paths.entry)
        .with_context(|| format!("writing {}", paths.entry.display()))
}

/// True while a process `pid` exists (ours or another user's) and is not
/// a zombie (a killed runner whose parent has not reaped it yet).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    // SAFETY: kill(2) with signal 0 only checks for the process.
    let r = unsafe { libc::kill(raw, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// `/proc/<pid>/stat` says state `Z` (after the parenthesised name).
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// The live entries in `dir`, newest first; stale files (of runners that
/// are gone) are removed on the way. A missing directory has none.
pub fn live_instances(dir: &Path) -> Vec<Instance> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut live = Vec::new();
    for entry in read.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Every file of a runner starts with its pid.
        let Some(pid) = name.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if !name.ends_with(".json") || name.ends_with(".json.tmp") {
            continue;
        }
        let parsed = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| Instance::from_json(&v));
        if let Some(instance) = parsed.filter(|i| i.runner_pid == pid) {
            live.push(instance);
        }
    }
    live.sort_by_key(|i| std::cmp::Reverse((i.started, i.runner_pid)));
    live
}

/// Picks the instance to talk to: runner `pid` if given, else the only
/// one, else the newest (with a note saying so).
pub fn choose(live: &[Instance], pid: Option<u32>) -> Result<(Instance, Option<String>)> {
    if let Some(pid) = pid {
        return match live.iter().find(|i| i.runner_pid == pid) {
            Some(i) => Ok((i.clone(), None)),
            None if live.is_empty() => bail!(
                "no running Spindle guest with runner pid {pid}: none is running (start one with `cargo spindle run`)"
            ),
            None => bail!(
                "no running Spindle guest with runner pid {pid}; running: {}",
                pids(live)
            ),
        };
    }
    match live {
        [] => bail!("no running Spindle guest: start one with `cargo spindle run`"),
        [only] => Ok((only.clone(), None)),
        [newest, ..] => Ok((
            newest.clone(),
            Some(format!(
                "{} guests are running (runner pids {}); using the newest, {} (choose with --instance PID)",
                live.len(),
                pids(live),
                newest.runner_pid
            )),
        )),
    }
}

fn pids(live: &[Instance]) -> String {
    live.iter()
        .map(|i| i.runner_pid.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spindle-reg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn instance(dir: &Path, pid: u32, started: u64) -> Instance {
        let p = Paths::for_runner(dir, pid);
        Instance {
            runner_pid: pid,
            qemu_pid: Some(pid + 1),
            socket: p.socket,
            qemu_socket: p.qemu_socket,
            image: Some("/images/target".into()),
            started,
        }
    }

    /// A pid that is surely dead: a child we reaped.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn entries_round_trip_and_stale_ones_are_cleaned() {
        let dir = temp_dir("clean");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let me = std::process::id();
        let live = instance(&dir, me, 100);
        write_entry(&Paths::for_runner(&dir, me), &live).unwrap();
        let dead = dead_pid();
        let stale = Paths::for_runner(&dir, dead);
        write_entry(&stale, &instance(&dir, dead, 200)).unwrap();
        std::fs::write(&stale.socket, b"").unwrap();
        std::fs::write(dir.join("notes.txt"), b"").unwrap();

        assert_eq!(live_instances(&dir), vec![live.clone()]);
        assert!(!stale.entry.exists() && !stale.socket.exists());
        assert!(dir.join("notes.txt").exists());

        let (chosen, note) = choose(std::slice::from_ref(&live), None).unwrap();
        assert_eq!((chosen.runner_pid, note), (me, None));
        Paths::for_runner(&dir, me).remove_all();
        assert!(live_instances(&dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(live_instances(&dir).is_empty());
    }

    #[test]
    fn the_newest_is_chosen_and_errors_are_clear() {
        let dir = PathBuf::from("/run/x");
        let a = instance(&dir, 10, 50);
        let b = instance(&dir, 20, 60);
        let live = vec![b.clone(), a.clone()];
        let (chosen, note) = choose(&live, None).unwrap();
        assert_eq!(chosen, b);
        let note = note.unwrap();
        assert!(
            note.contains("2 guests") && note.contains("20, 10"),
            "{note}"
        );
        assert_eq!(choose(&live, Some(10)).unwrap().0, a);
        let err = choose(&live, Some(30)).unwrap_err().to_string();
        assert!(err.contains("30") && err.contains("20, 10"), "{err}");
        let err = choose(&[], None).unwrap_err().to_string();
        assert_eq!(
            err,
            "no running Spindle guest: start one with `cargo spindle run`"
        );
        assert_eq!(Instance::from_json(&b.to_json()), Some(b));
        assert_eq!(Instance::from_json(&json!({"runner_pid": 1})), None);
        assert!(!pid_alive(0) && !pid_alive(u32::MAX));
        // A child that ended but is not reaped yet is a zombie: dead.
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let zpid = zombie.id();
        while !is_zombie(zpid) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!pid_alive(zpid));
        zombie.wait().unwrap();
        assert!(pid_alive(std::process::id()));
        let long = Paths::for_runner(&PathBuf::from("/x".repeat(60)), 1);
        assert!(
            long.check()
                .unwrap_err()
                .to_string()
                .contains(RUNTIME_DIR_ENV)
        );
        assert!(Paths::for_runner(&dir, 1).check().is_ok());
    }
}
