//! `cargo spindle ctl`: one command to a running guest, through the broker
//! of the `cargo spindle run` that started it, and its reply rendered.
//!
//! Theory: the instance is found in the registry without the user naming
//! a socket; the exit status tells the three outcomes apart: 0 the guest
//! said ok, 1 the guest said error, 2 no answer (no instance, connection
//! failed, timed out); `main` maps an `Err` to 2.

use super::registry;
use super::render::{self, json};
use super::{CtlConnection, Reply};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// How long `ctl` tries to connect to the broker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct CtlOptions {
    /// Print the reply's JSON value instead of its rendering.
    pub json: bool,
    /// The runner pid of the instance to use.
    pub instance: Option<u32>,
    /// A socket to use instead of the registry (broker or QEMU socket).
    pub socket: Option<PathBuf>,
    /// `gcore`: the file for the core (default `core.<pid>`).
    pub output: Option<PathBuf>,
    /// The command and its arguments.
    pub words: Vec<String>,
}

/// Runs one `ctl` command; the exit status (0 ok, 1 guest error).
pub fn run(o: &CtlOptions) -> Result<u8> {
    let command = o.words.join(" ");
    let verb = o.words.first().map(String::as_str).unwrap_or("");
    if verb.is_empty() {
        bail!("no command given (try `cargo spindle ctl help`)");
    }
    if o.output.is_some() && verb != "gcore" {
        bail!("-o/--output only goes with gcore");
    }
    let (socket, runner) = match &o.socket {
        Some(path) => (path.clone(), None),
        None => {
            let dir = registry::runtime_dir();
            let live = registry::live_instances(&dir);
            let (instance, note) = registry::choose(&live, o.instance)?;
            if let Some(note) = note {
                eprintln!("spindle: {note}");
            }
            (instance.socket, Some(instance.runner_pid))
        }
    };
    let mut conn =
        CtlConnection::connect_timeout(&socket, CONNECT_TIMEOUT).with_context(|| match runner {
            Some(pid) => format!("the `cargo spindle run` with pid {pid} does not answer"),
            None => format!("nothing answers on {}", socket.display()),
        })?;
    let reply = conn.request(&command)?;
    let (value, payload) = match reply {
        Reply::Error(message) => {
            if o.json {
                println!("{}", json(&serde_json::json!({ "error": message }), true));
            } else {
                eprintln!("spindle: the guest said: {message}");
            }
            return Ok(1);
        }
        Reply::Ok { value, payload } => (value, payload),
    };
    match verb {
        "gcore" => save_core(o, &value, payload)?,
        _ if o.json => println!("{}", json(&value, true)),
        "pstack" => print!(
            "{}",
            render::render_pstack(&value, &lwp_names(&mut conn, &value))
        ),
        _ => print!("{}", render::render(&command, &value)),
    }
    Ok(0)
}

/// The LWP names of a `pstack` reply's process, when its threads lack
/// them (asked with `lwps PID`; empty if that fails).
fn lwp_names(conn: &mut CtlConnection, pstack: &Value) -> HashMap<u64, String> {
    let threads = pstack.get("threads").and_then(Value::as_array);
    let named = threads.is_some_and(|t| t.iter().all(|t| t.get("name").is_some()));
    let Some(pid) = pstack.get("pid").and_then(Value::as_u64) else {
        return HashMap::new();
    };
    if named {
        return HashMap::new();
    }
    let Ok(Reply::Ok { value, .. }) = conn.request(&format!("lwps {pid}")) else {
        return HashMap::new();
    };
    value
        .get("lwps")
        .and_then(Value::as_array)
        .map(|lwps| {
            lwps.iter()
                .filter_map(|l| {
                    let id = l.get("id")?.as_u64()?;
                    let name = l.get("name")?.as_str()?;
                    Some((id, name.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a `gcore` payload to `-o FILE` or `core.<pid>` and says where.
fn save_core(o: &CtlOptions, value: &Value, payload: Option<Vec<u8>>) -> Result<()> {
    let Some(data) = payload else {
        bail!("the guest's gcore reply carried no core (no `bytes` in {value})");
    };
    let pid = match value.get("pid").and_then(Value::as_u64) {
        Some(pid) => pid.to_string(),
        None => o.words.get(1).cloned().unwrap_or_else(|| "unknown".into()),
    };
    let path = o
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("core.{pid}")));
    std::fs::write(&path, &data)
        .with_context(|| format!("writing the core to {}", path.display()))?;
    if o.json {
        let mut v = value.clone();
        if let Some(map) = v.as_object_mut() {
            map.insert("path".into(), Value::String(path.display().to_string()));
        }
        println!("{}", json(&v, true));
    } else {
        println!(
            "core of pid {pid} saved to {} ({} bytes)",
            path.display(),
            data.len()
        );
    }
    Ok(())
}
