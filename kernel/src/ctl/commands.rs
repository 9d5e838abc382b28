//! The control channel's commands: parsing a line into a `Command`, and
//! the reply to each (docs/control-channel.md has the shapes).
//!
//! Owns nothing between commands. A command takes the process table, a
//! process's LWP list, LWP `sched` locks and an address space's locks
//! only while it gathers what it reports, never the UART (the caller
//! writes the reply), except `gcore`, which streams its core through the
//! channel after the process is stopped. Inspections (`pstack`, `gcore`)
//! hold the process still (`HeldStill`): stopped here for
//! `StopReason::Control` and resumed when done, or left as it was if it
//! was stopped already. Bad input is an error reply, never a panic.

use ::core::sync::atomic::Ordering;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::core::CorePlan;
use super::json::{JsonWriter, error_line};
use super::stack;
use crate::mm::vm::AddressSpace;
use crate::proc::lwp::{Lwp, LwpId, LwpState, SchedClass, flags as lwp_flags};
use crate::proc::{self, Pid, Process, flags as process_flags};
use crate::signal::{self, SigInfo, StopReason};
use crate::{mm, sched};

/// How long a stop may take before `pstop`, `pstack` or `gcore` give up.
const STOP_TIMEOUT_NS: u64 = 10_000_000_000;

const HELP: &[&str] = &[
    "ps",
    "lwps [PID]",
    "pstop PID",
    "prun PID",
    "pstack PID",
    "gcore PID",
    "kill -SIG PID",
    "stats",
    "rings",
    "help",
];

/// A parsed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Ps,
    Lwps(Option<Pid>),
    Pstop(Pid),
    Prun(Pid),
    Pstack(Pid),
    Gcore(Pid),
    Kill { signal: u32, pid: Pid },
    Stats,
    Rings,
    Help,
}

fn parse_pid(text: &str) -> Result<Pid, String> {
    let digits = !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit());
    match digits.then(|| text.parse::<Pid>().ok()).flatten() {
        Some(pid) => Ok(pid),
        None => Err(format!("bad pid {text:?}: a decimal number is expected")),
    }
}

fn parse_command(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    let Some((&name, arguments)) = words.split_first() else {
        return Err(String::from("empty command (try help)"));
    };
    let one_pid = |usage: &str| match arguments {
        [pid] => parse_pid(pid),
        _ => Err(format!("usage: {usage}")),
    };
    let command = match name {
        "ps" | "stats" | "rings" | "help" if !arguments.is_empty() => {
            return Err(format!("usage: {name}"));
        }
        "ps" => Command::Ps,
        "stats" => Command::Stats,
        "rings" => Command::Rings,
        "help" => Command::Help,
        "lwps" => match arguments {
            [] => Command::Lwps(None),
            [pid] => Command::Lwps(Some(parse_pid(pid)?)),
            _ => return Err(String::from("usage: lwps [PID]")),
        },
        "pstop" => Command::Pstop(one_pid("pstop PID")?),
        "prun" => Command::Prun(one_pid("prun PID")?),
        "pstack" => Command::Pstack(one_pid("pstack PID")?),
        "gcore" => Command::Gcore(one_pid("gcore PID")?),
        "kill" => match arguments {
            [signal, pid] => {
                let Some(name) = signal.strip_prefix('-') else {
                    return Err(String::from("usage: kill -SIG PID"));
                };
                let Some(signal) = signal::parse(name) else {
                    return Err(format!("unknown signal {name:?}"));
                };
                Command::Kill {
                    signal,
                    pid: parse_pid(pid)?,
                }
            }
            _ => return Err(String::from("usage: kill -SIG PID")),
        },
        other => return Err(format!("unknown command {other:?} (try help)")),
    };
    Ok(command)
}

/// The reply line to `line`, or None when the command wrote its reply
/// itself (`gcore`).
pub fn answer(line: &str) -> Option<String> {
    let command = match parse_command(line) {
        Ok(command) => command,
        Err(message) => return Some(error_line(&message)),
    };
    let mut json = JsonWriter::new();
    json.begin_object().key("ok");
    let outcome = match command {
        Command::Ps => ps(&mut json),
        Command::Lwps(pid) => lwps(&mut json, pid),
        Command::Pstop(pid) => pstop(&mut json, pid),
        Command::Prun(pid) => prun(&mut json, pid),
        Command::Pstack(pid) => pstack(&mut json, pid),
        Command::Gcore(pid) => return gcore(pid).err().map(|message| error_line(&message)),
        Command::Kill { signal, pid } => kill(&mut json, signal, pid),
        Command::Stats => stats(&mut json),
        Command::Rings => rings(&mut json),
        Command::Help => {
            json.begin_array();
            for entry in HELP {
                json.string(entry);
            }
            json.end_array();
            Ok(())
        }
    };
    Some(match outcome {
        Ok(()) => {
            json.end_object();
            json.finish()
        }
        Err(message) => error_line(&message),
    })
}

fn find_process(pid: Pid) -> Result<Arc<Process>, String> {
    proc::find(pid).ok_or_else(|| format!("no process with pid {pid}"))
}

/// A user process: the kernel's own are refused for `what`.
fn find_user_process(pid: Pid, what: &str) -> Result<Arc<Process>, String> {
    let process = find_process(pid)?;
    if process.has_flag(process_flags::SYSTEM) {
        return Err(format!("pid {pid} is a kernel process: cannot {what} it"));
    }
    Ok(process)
}

fn process_state(process: &Process) -> &'static str {
    if process.has_flag(process_flags::ZOMBIE) {
        "zombie"
    } else if process.has_flag(process_flags::EXITING) {
        "exiting"
    } else if process.has_flag(process_flags::STOPPED) {
        "stopped"
    } else {
        "running"
    }
}

fn ps(json: &mut JsonWriter) -> Result<(), String> {
    json.begin_array();
    for process in proc::all() {
        json.begin_object()
            .key("pid")
            .unsigned(u64::from(process.pid))
            .key("name")
            .string(&process.name())
            .key("state")
            .string(process_state(&process))
            .key("lwps")
            .unsigned(process.lwp_count() as u64)
            .key("representative");
        match signal::representative(&process) {
            Some(lwp) => json.unsigned(u64::from(lwp.id)),
            None => json.null(),
        };
        json.end_object();
    }
    json.end_array();
    Ok(())
}

fn lwp_state_name(state: LwpState) -> &'static str {
    match state {
        LwpState::Idle => "idle",
        LwpState::Runnable => "runnable",
        LwpState::OnCpu => "on_cpu",
        LwpState::Sleeping => "sleeping",
        LwpState::Stopped => "stopped",
        LwpState::Zombie => "zombie",
    }
}

fn class_name(class: SchedClass) -> &'static str {
    match class {
        SchedClass::FixedRoundRobin => "fixed_rr",
        SchedClass::Timeshare => "timeshare",
        SchedClass::Idle => "idle",
    }
}

const FLAG_NAMES: &[(u32, &str)] = &[
    (lwp_flags::KTHREAD, "kthread"),
    (lwp_flags::KERNEL_THREAD, "kernel_thread"),
    (lwp_flags::MPSAFE, "mpsafe"),
    (lwp_flags::INTR, "intr"),
    (lwp_flags::JOINABLE, "joinable"),
    (lwp_flags::IDLE_LOOP, "idle_loop"),
    (lwp_flags::USES_FPU, "uses_fpu"),
    (lwp_flags::HOLD, "hold"),
    (lwp_flags::USER, "user"),
];

/// A user LWP (runs in user mode; not a kernel-only one).
fn is_user_lwp(lwp: &Lwp) -> bool {
    lwp.has_flag(lwp_flags::USER) && !lwp.has_flag(lwp_flags::KTHREAD)
}

/// `kernel/src/sync/condvar.rs` as `sync/condvar.rs`.
fn source_file(path: &str) -> &str {
    path.find("kernel/src/")
        .map_or(path, |index| &path[index + "kernel/src/".len()..])
}

fn lwps(json: &mut JsonWriter, pid: Option<Pid>) -> Result<(), String> {
    let process = match pid {
        Some(pid) => find_process(pid)?,
        None => proc::all()
            .into_iter()
            .find(|process| !process.has_flag(process_flags::SYSTEM))
            .unwrap_or_else(proc::proc0),
    };
    let tick_hz = crate::time::tick_hz().max(1);
    json.begin_object()
        .key("pid")
        .unsigned(u64::from(process.pid))
        .key("lwps")
        .begin_array();
    for lwp in process.lwps() {
        let (state, class, priority, cpu) = {
            let info = lwp.sched.lock();
            (info.state, info.class, info.priority, info.last_cpu)
        };
        let ticks = lwp.cpu_ticks.load(Ordering::Relaxed);
        json.begin_object()
            .key("id")
            .unsigned(u64::from(lwp.id))
            .key("tid")
            .signed(i64::from(crate::uproc::tid_of(&lwp)))
            .key("name")
            .string(&lwp.name())
            .key("state")
            .string(lwp_state_name(state))
            .key("kernel_only")
            .boolean(!is_user_lwp(&lwp))
            .key("flags")
            .begin_array();
        for &(flag, name) in FLAG_NAMES {
            if lwp.has_flag(flag) {
                json.string(name);
            }
        }
        json.end_array()
            .key("class")
            .string(class_name(class))
            .key("priority")
            .unsigned(u64::from(priority))
            .key("cpu")
            .unsigned(cpu as u64)
            .key("cpu_ms")
            .unsigned(ticks.saturating_mul(1000) / tick_hz)
            .key("switches")
            .unsigned(lwp.switches.load(Ordering::Relaxed))
            .key("parked")
            .boolean(lwp.is_parked())
            .key("hold_mask")
            .string_fmt(format_args!("{:#x}", lwp.hold_mask().0))
            .key("pending")
            .string_fmt(format_args!("{:#x}", crate::signal::own_pending(&lwp).0))
            .key("wchan");
        match lwp.wait_channel() {
            Some(location) => json.string_fmt(format_args!(
                "{}:{}",
                source_file(location.file()),
                location.line()
            )),
            None => json.null(),
        };
        json.end_object();
    }
    json.end_array().end_object();
    Ok(())
}

fn ids(json: &mut JsonWriter, pid: Pid, key: &str, lwp_ids: &[LwpId]) {
    json.begin_object()
        .key("pid")
        .unsigned(u64::from(pid))
        .key(key)
        .begin_array();
    for id in lwp_ids {
        json.unsigned(u64::from(*id));
    }
    json.end_array().end_object();
}

fn pstop(json: &mut JsonWriter, pid: Pid) -> Result<(), String> {
    let process = find_user_process(pid, "stop")?;
    let stopped = signal::stop_process(&process, StopReason::Control, false, STOP_TIMEOUT_NS)
        .map_err(|error| format!("cannot stop pid {pid}: {error}"))?;
    ids(json, pid, "stopped", &stopped);
    Ok(())
}

fn prun(json: &mut JsonWriter, pid: Pid) -> Result<(), String> {
    let process = find_user_process(pid, "run")?;
    let running = signal::resume_process(&process, StopReason::Control);
    ids(json, pid, "running", &running);
    Ok(())
}

fn kill(json: &mut JsonWriter, signal: u32, pid: Pid) -> Result<(), String> {
    let process = find_user_process(pid, "signal")?;
    let info = SigInfo::from_sender(signal, signal::code::SI_KERNEL, 0);
    signal::send_to_process(&process, info)
        .map_err(|error| format!("cannot signal pid {pid}: {error}"))?;
    json.begin_object()
        .key("pid")
        .unsigned(u64::from(pid))
        .key("signal")
        .unsigned(u64::from(signal))
        .end_object();
    Ok(())
}

fn stats(json: &mut JsonWriter) -> Result<(), String> {
    // The figures first (as the supervisor's memory lines take them), and
    // only then the reply's own allocations.
    let (free_frames, heap_bytes) = {
        let _quiet = crate::compat::sysinit::quiesce();
        sched::trim_caches();
        proc::trim_caches();
        mm::stack::trim_caches();
        (mm::frame::free_count(), mm::heap::bytes_in_use())
    };
    let lwp_count = proc::lwp_count();
    let processes = proc::all().len();
    json.begin_object()
        .key("free_frames")
        .unsigned(free_frames as u64)
        .key("heap_bytes")
        .unsigned(heap_bytes as u64)
        .key("lwps")
        .unsigned(lwp_count as u64)
        .key("processes")
        .unsigned(processes as u64)
        .end_object();
    Ok(())
}

/// Every ring of every process's network attachment, with its counters.
fn rings(json: &mut JsonWriter) -> Result<(), String> {
    use crate::net::ring::request;
    json.begin_object().key("rings").begin_array();
    for process in proc::all() {
        // The rings and the interrupt kind only, never the attachment: a
        // clone of it would keep the device open past the process's
        // teardown, and the next process's attach would find it busy.
        let Some((rings, interrupts_via)) = process
            .net
            .lock()
            .as_ref()
            .map(|attachment| (attachment.rings.clone(), attachment.device.interrupt_kind()))
        else {
            continue;
        };
        for ring in &rings {
            let view = ring.view();
            let mut requests = String::new();
            for (bit, name) in [
                (request::START, "start"),
                (request::STOP, "stop"),
                (request::PAUSE, "pause"),
            ] {
                if view.requests & bit != 0 {
                    if !requests.is_empty() {
                        requests.push(',');
                    }
                    requests.push_str(name);
                }
            }
            let counters = &ring.counters;
            let load = |counter: &::core::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
            json.begin_object()
                .key("pid")
                .unsigned(u64::from(process.pid))
                .key("name")
                .string(&ring.name)
                .key("kind")
                .string(match ring.kind {
                    crate::net::ring::RingKind::Rx => "rx",
                    crate::net::ring::RingKind::Tx => "tx",
                })
                .key("state")
                .string(view.state.name())
                .key("requests")
                .string(&requests)
                .key("worker");
            match view.worker {
                Some(id) => json.unsigned(u64::from(id)),
                None => json.null(),
            };
            json.key("interrupts_via")
                .string(interrupts_via)
                .key("frames")
                .unsigned(load(&counters.frames))
                .key("bytes")
                .unsigned(load(&counters.bytes))
                .key("kicks")
                .unsigned(load(&counters.kicks))
                .key("interrupts")
                .unsigned(load(&counters.interrupts))
                .key("suppressed")
                .unsigned(load(&counters.suppressed))
                .key("drops")
                .unsigned(load(&counters.drops))
                .key("in_flight")
                .unsigned(load(&counters.in_flight))
                .end_object();
        }
    }
    json.end_array().end_object();
    Ok(())
}

/// A user process held still for inspection: stopped here for `Control`
/// (and resumed when this is dropped), or stopped already and left so.
struct HeldStill {
    process: Arc<Process>,
    resume: bool,
}

impl HeldStill {
    fn new(process: &Arc<Process>) -> Result<HeldStill, String> {
        let pid = process.pid;
        if !process.has_flag(process_flags::STOPPED) {
            signal::stop_process(process, StopReason::Control, true, STOP_TIMEOUT_NS)
                .map_err(|error| format!("cannot stop pid {pid}: {error}"))?;
            return Ok(HeldStill {
                process: Arc::clone(process),
                resume: true,
            });
        }
        // Stopped already: wait until its user LWPs have parked.
        let deadline = crate::time::now_ns().saturating_add(STOP_TIMEOUT_NS);
        let settled = |lwp: &Arc<Lwp>| !is_user_lwp(lwp) || signal::stop::is_held_still(lwp);
        while !process.lwps().iter().all(settled) {
            if process.is_exiting() || crate::time::now_ns() >= deadline {
                return Err(format!("pid {pid} is stopped but its LWPs did not park"));
            }
            sched::sleep_ns(1_000_000);
        }
        Ok(HeldStill {
            process: Arc::clone(process),
            resume: false,
        })
    }
}

impl Drop for HeldStill {
    fn drop(&mut self) {
        if self.resume {
            signal::resume_process(&self.process, StopReason::Control);
        }
    }
}

fn address_space_of(process: &Process) -> Result<Arc<AddressSpace>, String> {
    process
        .vm
        .lock()
        .clone()
        .ok_or_else(|| format!("pid {} has no address space", process.pid))
}

fn pstack(json: &mut JsonWriter, pid: Pid) -> Result<(), String> {
    let process = find_user_process(pid, "inspect")?;
    let vm = address_space_of(&process)?;
    let held = HeldStill::new(&process)?;
    let image = crate::uproc::exec::image();
    let lowest_image_page = vm
        .layout
        .lock()
        .regions
        .iter()
        .find(|(_, region)| region.kind == crate::mm::vm::RegionKind::Image)
        .map(|(&start, _)| start);
    let symbols = image.and_then(|image| {
        let bias = stack::load_bias(image, &process.auxv(), lowest_image_page);
        stack::Symbols::of(image, bias)
    });
    json.begin_object()
        .key("pid")
        .unsigned(u64::from(pid))
        .key("threads")
        .begin_array();
    for lwp in process.lwps().iter().filter(|lwp| is_user_lwp(lwp)) {
        let Some(snapshot) = lwp.user_snapshot() else {
            continue;
        };
        let frames = stack::walk(snapshot.frame.rip, snapshot.frame.rbp, |address, record| {
            vm.read_present(address, record)
        });
        json.begin_object()
            .key("id")
            .unsigned(u64::from(lwp.id))
            .key("tid")
            .signed(i64::from(crate::uproc::tid_of(lwp)))
            .key("frames")
            .begin_array();
        for (index, &pc) in frames.iter().enumerate() {
            let symbol = symbols
                .as_ref()
                .and_then(|symbols| symbols.describe(pc, index > 0));
            json.begin_object()
                .key("pc")
                .string_fmt(format_args!("{pc:#x}"))
                .key("symbol")
                .optional_string(symbol.as_deref())
                .end_object();
        }
        json.end_array().end_object();
    }
    json.end_array().end_object();
    drop(held);
    Ok(())
}

/// Writes the reply and the core itself; an error is returned unwritten.
fn gcore(pid: Pid) -> Result<(), String> {
    let process = find_user_process(pid, "dump")?;
    let vm = address_space_of(&process)?;
    let held = HeldStill::new(&process)?;
    let plan = CorePlan::gather(&process, &vm, 0, None).map_err(String::from)?;
    let mut header = JsonWriter::new();
    header
        .begin_object()
        .key("ok")
        .begin_object()
        .key("pid")
        .unsigned(u64::from(pid))
        .key("signal")
        .unsigned(0)
        .key("bytes")
        .unsigned(plan.size())
        .end_object()
        .end_object();
    super::stream_core(&header.finish(), &plan, &vm);
    drop(held);
    Ok(())
}

crate::ktests! {
    fn parses_commands_and_refuses_bad_ones() {
        assert_eq!(parse_command("ps"), Ok(Command::Ps));
        assert_eq!(parse_command("  lwps  "), Ok(Command::Lwps(None)));
        assert_eq!(parse_command("lwps 2"), Ok(Command::Lwps(Some(2))));
        assert_eq!(parse_command("pstop 2\t"), Ok(Command::Pstop(2)));
        assert_eq!(parse_command("kill -9 2"), Ok(Command::Kill { signal: 9, pid: 2 }));
        assert_eq!(parse_command("kill -SIGTERM 3"), Ok(Command::Kill { signal: 15, pid: 3 }));
        assert_eq!(parse_command("kill -usr1 3"), Ok(Command::Kill { signal: 10, pid: 3 }));
        for bad in [
            "", "   ", "bogus", "ps 1", "help me", "lwps 1 2", "pstop", "pstop x", "pstop -1",
            "pstop 99999999999", "prun 1 2", "gcore +1", "kill 9 2", "kill -NOPE 2", "kill -0 2",
            "kill -65 2", "kill -9", "kill -9 2 3", "stats now", "PS",
        ] {
            assert!(parse_command(bad).is_err(), "{bad:?} is refused");
        }
        let reply = answer("nonsense \"quoted\"").expect("a reply");
        assert!(reply.starts_with("{\"error\":\"unknown command"), "{reply}");
        assert_eq!(answer("stats 1").as_deref(), Some("{\"error\":\"usage: stats\"}"));
    }

    fn answers_queries_about_the_kernel_process() {
        let ps = answer("ps").expect("a reply");
        assert!(ps.starts_with("{\"ok\":[{\"pid\":0,\"name\":\"kernel\",\"state\":\"running\""), "{ps}");
        assert!(ps.ends_with("]}"), "{ps}");
        let lwps = answer("lwps 0").expect("a reply");
        assert!(lwps.starts_with("{\"ok\":{\"pid\":0,\"lwps\":[{\"id\":"), "{lwps}");
        assert!(lwps.contains("\"kernel_only\":true"), "{lwps}");
        assert!(lwps.contains("\"hold_mask\":\"0xffffffffffffffff\""), "{lwps}");
        assert!(lwps.contains("\"pending\":\"0x0\""), "{lwps}");
        assert!(lwps.contains("\"switches\":") && lwps.contains("\"parked\":false"), "{lwps}");
        let help = answer("help").expect("a reply");
        assert!(help.starts_with("{\"ok\":[\"ps\",\"lwps [PID]\""), "{help}");
        for refused in ["pstop 0", "prun 0", "pstack 0", "gcore 0", "kill -9 0", "lwps 4000000000"] {
            let reply = answer(refused).expect("a reply");
            assert!(reply.starts_with("{\"error\":"), "{refused}: {reply}");
        }
        assert!(answer("pstop 4000000000").expect("a reply").contains("no process"));
    }

    fn names_source_files_without_the_kernel_prefix() {
        assert_eq!(source_file("kernel/src/sync/condvar.rs"), "sync/condvar.rs");
        assert_eq!(source_file("/x/kernel/src/a.rs"), "a.rs");
        assert_eq!(source_file("other.rs"), "other.rs");
    }
}
