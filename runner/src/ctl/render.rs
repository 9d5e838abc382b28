//! Human-readable renderings of control-channel reply values, one per
//! command, and the `--json` form.
//!
//! Theory: a rendering only reads the value; a field it lacks shows as `?`
//! and a `null` as `-`, so a guest that adds or drops fields never makes
//! the runner fail. Tables are aligned, numbers right-aligned; kernel-only
//! LWPs carry the flag `K`, parked (stopped) ones `P`.

use serde_json::Value;
use std::collections::HashMap;

/// The rendering of `value`, the ok reply to `command`.
pub fn render(command: &str, value: &Value) -> String {
    match command.split_whitespace().next().unwrap_or("") {
        "ps" => render_ps(value),
        "lwps" => render_lwps(value),
        "pstack" => render_pstack(value, &HashMap::new()),
        "stats" => render_stats(value),
        "rings" => render_rings(value),
        "help" => render_help(value),
        "pstop" => render_ids(value, "stopped", "stopped"),
        "prun" => render_ids(value, "running", "running again"),
        "kill" => format!(
            "signal {} sent to pid {}\n",
            field(value, "signal"),
            field(value, "pid")
        ),
        "gcore" => format!(
            "core of pid {}: {} bytes\n",
            field(value, "pid"),
            field(value, "bytes")
        ),
        _ => json(value, true) + "\n",
    }
}

/// The value as JSON: pretty (indented) or on one line.
pub fn json(value: &Value, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    text.unwrap_or_else(|_| value.to_string())
}

/// A scalar for a table cell: strings bare, `null` as `-`, missing as `?`.
fn cell(v: Option<&Value>) -> String {
    match v {
        None => "?".into(),
        Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(other) => other.to_string(),
    }
}

fn field(value: &Value, key: &str) -> String {
    cell(value.get(key))
}

/// Milliseconds as seconds with three decimals.
fn seconds(ms: Option<&Value>) -> String {
    match ms.and_then(Value::as_u64) {
        Some(ms) => format!("{}.{:03}", ms / 1000, ms % 1000),
        None => cell(ms),
    }
}

/// Aligned columns, two spaces apart; `right[i]` right-aligns column i.
fn table(headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            let last = i + 1 == cells.len();
            if i > 0 {
                out.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                out.push_str(&" ".repeat(pad));
                out.push_str(c);
            } else {
                out.push_str(c);
                if !last {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `ps`: PID NAME STATE LWPS REP (the representative LWP).
pub fn render_ps(value: &Value) -> String {
    let Some(procs) = value.as_array() else {
        return json(value, true) + "\n";
    };
    let rows: Vec<Vec<String>> = procs
        .iter()
        .map(|p| {
            vec![
                field(p, "pid"),
                field(p, "name"),
                field(p, "state"),
                field(p, "lwps"),
                field(p, "representative"),
            ]
        })
        .collect();
    table(
        &["PID", "NAME", "STATE", "LWPS", "REP"],
        &[true, false, false, true, true],
        &rows,
    )
}

/// `lwps`: one row per LWP; kernel-only LWPs have the flag `K`, parked
/// ones `P`.
pub fn render_lwps(value: &Value) -> String {
    let Some(lwps) = value.get("lwps").and_then(Value::as_array) else {
        return json(value, true) + "\n";
    };
    let (mut any_kernel, mut any_parked) = (false, false);
    let rows: Vec<Vec<String>> = lwps
        .iter()
        .map(|l| {
            let mut flags: Vec<String> = Vec::new();
            if l.get("kernel_only").and_then(Value::as_bool) == Some(true) {
                any_kernel = true;
                flags.push("K".into());
            }
            if l.get("parked").and_then(Value::as_bool) == Some(true) {
                any_parked = true;
                flags.push("P".into());
            }
            if let Some(list) = l.get("flags").and_then(Value::as_array) {
                flags.extend(list.iter().map(|f| cell(Some(f))));
            }
            let flags = if flags.is_empty() {
                "-".to_string()
            } else {
                flags.join(",")
            };
            vec![
                field(l, "id"),
                field(l, "tid"),
                field(l, "name"),
                field(l, "state"),
                flags,
                field(l, "class"),
                field(l, "priority"),
                field(l, "cpu"),
                seconds(l.get("cpu_ms")),
                field(l, "hold_mask"),
                field(l, "wchan"),
            ]
        })
        .collect();
    let mut out = format!("pid {}\n", field(value, "pid"));
    out.push_str(&table(
        &[
            "ID", "TID", "NAME", "STATE", "FLAGS", "CLASS", "PRI", "CPU", "TIME", "HOLD", "WCHAN",
        ],
        &[
            true, true, false, false, false, false, true, true, true, false, false,
        ],
        &rows,
    ));
    if any_kernel {
        out.push_str("K: kernel-only LWP (runs no user code, holds every signal)\n");
    }
    if any_parked {
        out.push_str("P: parked (held still by a stop)\n");
    }
    out
}

/// `pstack`: `tid NAME:` then one `  #n pc symbol` line per frame. Names
/// come from the thread entry, else from `names` (LWP id -> name).
pub fn render_pstack(value: &Value, names: &HashMap<u64, String>) -> String {
    let Some(threads) = value.get("threads").and_then(Value::as_array) else {
        return json(value, true) + "\n";
    };
    let mut out = String::new();
    for t in threads {
        let name = match t.get("name").and_then(Value::as_str) {
            Some(n) => n.to_string(),
            None => t
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| names.get(&id).cloned())
                .unwrap_or_else(|| format!("lwp {}", field(t, "id"))),
        };
        out.push_str(&format!("{} {name}:\n", field(t, "tid")));
        let frames = t.get("frames").and_then(Value::as_array);
        match frames {
            Some(frames) if !frames.is_empty() => {
                for (i, f) in frames.iter().enumerate() {
                    let symbol = match f.get("symbol") {
                        Some(Value::String(s)) => s.clone(),
                        _ => "??".into(),
                    };
                    out.push_str(&format!("  #{i} {} {symbol}\n", field(f, "pc")));
                }
            }
            _ => out.push_str("  (no frames)\n"),
        }
    }
    out
}

/// `rings`: one row per ring of each process's network attachment:
/// PID NAME KIND STATE REQ FRAMES BYTES KICKS INTR SUPPR DROPS INFLIGHT
/// (`REQ` the pending requests, `-` when none).
pub fn render_rings(value: &Value) -> String {
    let Some(rings) = value.get("rings").and_then(Value::as_array) else {
        return json(value, true) + "\n";
    };
    if rings.is_empty() {
        return "no rings (no process has a network attachment)\n".into();
    }
    let keys = [
        "pid",
        "name",
        "kind",
        "state",
        "requests",
        "frames",
        "bytes",
        "kicks",
        "interrupts",
        "suppressed",
        "drops",
        "in_flight",
    ];
    let rows: Vec<Vec<String>> = rings
        .iter()
        .map(|r| keys.iter().map(|k| field(r, k)).collect())
        .collect();
    table(
        &[
            "PID", "NAME", "KIND", "STATE", "REQ", "FRAMES", "BYTES", "KICKS", "INTR", "SUPPR",
            "DROPS", "INFLIGHT",
        ],
        &[
            true, false, false, false, false, true, true, true, true, true, true, true,
        ],
        &rows,
    )
}

/// `stats`: `key: value` lines.
pub fn render_stats(value: &Value) -> String {
    let Some(map) = value.as_object() else {
        return json(value, true) + "\n";
    };
    map.iter()
        .map(|(k, v)| format!("{k}: {}\n", cell(Some(v))))
        .collect()
}

/// `help`: one command per line.
pub fn render_help(value: &Value) -> String {
    match value.as_array() {
        Some(list) => list.iter().map(|c| cell(Some(c)) + "\n").collect(),
        None => json(value, true) + "\n",
    }
}

/// `pstop` / `prun`: the pid and the LWP ids.
fn render_ids(value: &Value, key: &str, verb: &str) -> String {
    let ids = match value.get(key).and_then(Value::as_array) {
        Some(ids) => ids
            .iter()
            .map(|i| cell(Some(i)))
            .collect::<Vec<_>>()
            .join(" "),
        None => "?".into(),
    };
    format!("pid {} {verb}; LWPs: {ids}\n", field(value, "pid"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lwps_is_an_aligned_table_marking_kernel_only_lwps() {
        let v = json!({"pid": 1, "lwps": [
            {"id": 1, "tid": 1, "name": "target", "state": "sleeping", "kernel_only": false,
             "flags": [], "class": "TS", "priority": 29, "cpu": null, "cpu_ms": 12,
             "hold_mask": "0x0", "wchan": "futex"},
            {"id": 12, "tid": 12, "name": "kworker-0", "state": "sleeping", "kernel_only": true,
             "flags": ["detached"], "parked": true, "class": "SYS", "priority": 60, "cpu": 1, "cpu_ms": 1234,
             "hold_mask": "0xffffffffffffffff", "wchan": null}
        ]});
        let text = render_lwps(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "pid 1");
        assert!(
            lines[1].starts_with("ID  TID  NAME       STATE     FLAGS"),
            "{text}"
        );
        assert!(lines[1].ends_with("WCHAN"), "{text}");
        assert!(
            lines[2].contains("target") && lines[2].contains(" - "),
            "{text}"
        );
        assert!(
            lines[2].contains("0.012") && lines[2].ends_with("futex"),
            "{text}"
        );
        assert!(
            lines[3].contains("K,P,detached") && lines[3].contains("1.234"),
            "{text}"
        );
        assert!(lines[3].contains("0xffffffffffffffff"), "{text}");
        // Columns line up: every row's TIME ends where the header's does.
        let end = lines[1].find("TIME").unwrap() + 4;
        assert_eq!(&lines[2][end - 5..end], "0.012");
        assert_eq!(&lines[3][end - 5..end], "1.234");
        assert!(lines[4].starts_with("K: kernel-only"));
        assert!(lines[5].starts_with("P: parked"));
    }

    #[test]
    fn rings_is_one_row_per_ring() {
        let v = json!({"rings": [
            {"pid": 2, "name": "vnet0-rx0", "kind": "rx", "state": "RUN", "requests": "",
             "worker": 5, "frames": 123, "bytes": 45678, "kicks": 3, "interrupts": 40,
             "suppressed": 12, "drops": 0, "in_flight": 256},
            {"pid": 2, "name": "vnet0-tx0", "kind": "tx", "state": "RUN", "requests": "PAUSE",
             "worker": 6, "frames": 7, "bytes": 900, "kicks": 1000, "interrupts": 2,
             "suppressed": 0, "drops": 5, "in_flight": 0}
        ]});
        let text = render("rings", &v);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            [
                "PID", "NAME", "KIND", "STATE", "REQ", "FRAMES", "BYTES", "KICKS", "INTR", "SUPPR",
                "DROPS", "INFLIGHT"
            ]
        );
        let rx: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            rx,
            [
                "2",
                "vnet0-rx0",
                "rx",
                "RUN",
                "-",
                "123",
                "45678",
                "3",
                "40",
                "12",
                "0",
                "256"
            ]
        );
        let tx: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(tx[4], "PAUSE");
        assert_eq!(tx[10], "5");
        // Numbers are right-aligned under their headers.
        let end = lines[0].find("BYTES").unwrap() + 5;
        assert_eq!(&lines[1][end - 5..end], "45678");
        assert_eq!(&lines[2][end - 5..end], "  900");
        assert!(render("rings", &json!({"rings": []})).starts_with("no rings"));
        assert!(render("rings", &json!({"rings": [{}]})).contains('?'));
        assert!(render("rings", &json!(5)).contains('5'));
    }

    #[test]
    fn ps_pstack_stats_and_the_rest() {
        let ps = json!([{"pid": 0, "name": "proc0", "state": "running", "lwps": 5,
                         "representative": null},
                        {"pid": 1, "name": "target", "state": "stopped", "lwps": 6,
                         "representative": 3}]);
        let text = render(" ps", &ps);
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().nth(1).unwrap().contains("proc0"));
        assert!(text.lines().nth(2).unwrap().ends_with('3'), "{text}");

        let st = json!({"pid": 1, "threads": [
            {"id": 3, "tid": 3, "frames": [{"pc": "0x401000", "symbol": "spin_forever+0x4"},
                                           {"pc": "0x401100", "symbol": null}]},
            {"id": 4, "tid": 4, "name": "pauser", "frames": []}]});
        let names = HashMap::from([(3, "spinner".to_string())]);
        assert_eq!(
            render_pstack(&st, &names),
            "3 spinner:\n  #0 0x401000 spin_forever+0x4\n  #1 0x401100 ??\n4 pauser:\n  (no frames)\n"
        );

        let stats = json!({"free_frames": 100, "heap_bytes": 2000});
        assert_eq!(
            render("stats", &stats),
            "free_frames: 100\nheap_bytes: 2000\n"
        );
        assert_eq!(
            render("pstop 1", &json!({"pid": 1, "stopped": [1, 2]})),
            "pid 1 stopped; LWPs: 1 2\n"
        );
        assert_eq!(
            render("kill -9 1", &json!({"pid": 1, "signal": 9})),
            "signal 9 sent to pid 1\n"
        );
        assert_eq!(render("help", &json!(["ps", "stats"])), "ps\nstats\n");
        // Unknown commands and odd values fall back to JSON; nothing panics.
        assert_eq!(render("new", &json!({"a": 1})), "{\n  \"a\": 1\n}\n");
        assert!(render_lwps(&json!(3)).contains('3'));
        assert!(render_ps(&json!([{}])).contains('?'));
        assert_eq!(json(&json!({"a": [1]}), false), "{\"a\":[1]}");
    }
}
