//! The control channel: a line protocol on COM2 (docs/control-channel.md)
//! served by the kernel thread `ctl` in proc0.
//!
//! Owns the COM2 UART (`UART`, one sleeping mutex: every reply and every
//! event is written whole under it, so they never interleave; binary data
//! goes out raw) and whether it exists (`PRESENT`, decided once at
//! `start`, which then installs `emit_core_event` as the signal code's
//! core writer). Without a UART at 0x2f8 no thread starts, no core writer
//! is installed and every write is a no-op.
//!
//! The thread polls: it reads what is waiting, then sleeps 5 ms; idle, it
//! allocates nothing and takes no lock. It reads through a handle of its
//! own on the same port: receiving (LSR and RBR reads) and sending (THR
//! writes, LSR reads) share no state once `init` has run, so polling never
//! makes a writer (a dying process's core event) wait. `hold_polling`
//! (for exact memory figures, `compat::sysinit::quiesce`) holds it still:
//! it finishes its command, then waits on `HOLDS_CHANGED` with no timeout
//! until the last hold is dropped (`HOLDS`, a sleeping mutex, counts the
//! holds; `HOLDERS` mirrors the count for the loop's lock-free check).
//! States of the thread: polling, serving a line, held. A line holds at
//! most 256 bytes (longer ones are discarded with an error reply); each
//! line gets exactly one reply, `{"ok":...}` or `{"error":"..."}`, never a
//! panic or a hang.
//!
//! Lock order: a command (`commands`) takes process, LWP and
//! address-space locks only while gathering what it reports; `UART` is
//! taken last, for writing (`gcore` and core events hold it while the
//! file streams, after the process is stopped). `HOLDS` is taken alone.
//! The pieces: `commands` (parsing, replies), `json` (the writer),
//! `stack` (pstack's unwinder and symbols), `core` (ELF core files).

pub(crate) mod commands;
pub(crate) mod core;
pub(crate) mod json;
pub(crate) mod stack;

use ::core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use alloc::format;
use alloc::sync::Arc;

use spindle_drivers::serial::{COM2, Uart16550};

use self::core::CorePlan;
use self::json::{JsonWriter, error_line};
use crate::mm::vm::AddressSpace;
use crate::proc::Process;
use crate::proc::lwp::{Lwp, LwpId, LwpState};
use crate::sched;
use crate::signal;
use crate::sync::{Condvar, Mutex};

/// The longest command line, in bytes (without its `\n`).
const MAX_LINE: usize = 256;
/// How long the thread sleeps when nothing is waiting.
const POLL_INTERVAL_NS: u64 = 5_000_000;
const PROTOCOL_VERSION: u64 = 1;

/// How long `hold_polling` waits for the thread to finish a command.
const HOLD_TIMEOUT_NS: u64 = 15_000_000_000;

static UART: Mutex<Option<Uart16550>> = Mutex::new(None);
static PRESENT: AtomicBool = AtomicBool::new(false);
/// The `ctl` thread, once started.
static THREAD: spin::Once<Arc<Lwp>> = spin::Once::new();

/// Holds on the thread's polling, and whether it is waiting them out.
struct PollingHolds {
    holders: usize,
    thread_waiting: bool,
}

static HOLDS: Mutex<PollingHolds> = Mutex::new(PollingHolds {
    holders: 0,
    thread_waiting: false,
});
static HOLDS_CHANGED: Condvar = Condvar::new();
static HOLDERS: AtomicUsize = AtomicUsize::new(0);

/// Finds COM2 and, if a UART answers there, starts the `ctl` thread.
pub fn start() {
    let mut uart = Uart16550::new(COM2);
    if !uart.is_present() {
        log::debug!(target: "ctl", "no UART at COM2: no control channel");
        return;
    }
    uart.init();
    *UART.lock() = Some(uart);
    PRESENT.store(true, Ordering::Release);
    signal::set_core_writer(emit_core_event);
    let started = crate::kthread::Builder::new("ctl")
        .stack_pages(8)
        .spawn(serve);
    match started {
        Ok(thread) => {
            THREAD.call_once(|| thread);
            log::debug!(target: "ctl", "control channel on COM2");
        }
        Err(error) => log::warn!(target: "ctl", "cannot start the ctl thread: {error}"),
    }
}

/// A hold on the `ctl` thread's polling (`hold_polling`); dropping it lets
/// the thread poll again.
pub struct PollingHold {
    held: bool,
}

/// Holds the `ctl` thread still until the returned hold is dropped: it
/// finishes the command it is serving (at most 15 s are waited for), then
/// waits with no timeout and off its CPU, so it neither wakes nor touches
/// run queues or callouts while exact memory figures are taken. A no-op
/// without a control channel, and for the `ctl` thread itself (its
/// `stats`).
pub fn hold_polling() -> PollingHold {
    let Some(thread) = THREAD.get() else {
        return PollingHold { held: false };
    };
    if sched::try_current().is_some_and(|me| me.serial == thread.serial) {
        return PollingHold { held: false };
    }
    let deadline = crate::time::now_ns().saturating_add(HOLD_TIMEOUT_NS);
    let mut holds = HOLDS.lock();
    holds.holders += 1;
    HOLDERS.store(holds.holders, Ordering::Release);
    while !holds.thread_waiting {
        let now = crate::time::now_ns();
        if now >= deadline {
            break;
        }
        holds = HOLDS_CHANGED.wait_timeout(holds, deadline - now).0;
    }
    drop(holds);
    // It said it waits; make sure it has also left its CPU.
    while (thread.state() != LwpState::Sleeping || thread.on_cpu.load(Ordering::Acquire))
        && crate::time::now_ns() < deadline
    {
        sched::sleep_ns(1_000_000);
    }
    PollingHold { held: true }
}

impl Drop for PollingHold {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        {
            let mut holds = HOLDS.lock();
            holds.holders -= 1;
            HOLDERS.store(holds.holders, Ordering::Release);
        }
        // Notified after the unlock, so the woken thread finds the mutex
        // free (a contended sleeping mutex grows its waiter queue).
        HOLDS_CHANGED.notify_all();
    }
}

/// The thread's side of `hold_polling`: waits while any hold is in force.
fn wait_while_held() {
    let mut holds = HOLDS.lock();
    holds.thread_waiting = true;
    HOLDS_CHANGED.notify_all();
    while holds.holders > 0 {
        holds = HOLDS_CHANGED.wait(holds);
    }
    holds.thread_waiting = false;
}

/// Whether a control channel is there to take core files.
pub fn available() -> bool {
    PRESENT.load(Ordering::Acquire)
}

/// Writes the event `{"event":"core",...}` and the core file of `process`,
/// which ended with `signal`; `first` is the LWP that took it. Every user
/// LWP must be parked or have left a snapshot. Returns whether the core
/// was written (false without a control channel).
pub fn emit_core_event(process: &Arc<Process>, signal: u32, first: Option<LwpId>) -> bool {
    if !available() {
        return false;
    }
    let Some(vm) = process.vm.lock().clone() else {
        return false;
    };
    let plan = match CorePlan::gather(process, &vm, signal, first) {
        Ok(plan) => plan,
        Err(reason) => {
            log::warn!(target: "ctl", "no core for pid {}: {reason}", process.pid);
            return false;
        }
    };
    let mut event = JsonWriter::new();
    event
        .begin_object()
        .key("event")
        .string("core")
        .key("pid")
        .unsigned(u64::from(process.pid))
        .key("signal")
        .unsigned(u64::from(signal))
        .key("bytes")
        .unsigned(plan.size())
        .end_object();
    stream_core(&event.finish(), &plan, &vm);
    true
}

/// Writes `line` and `\n`, then the core and `\n`, all under one lock.
fn stream_core(line: &str, plan: &CorePlan, vm: &AddressSpace) {
    let mut guard = UART.lock();
    let Some(uart) = guard.as_mut() else {
        return;
    };
    uart.write_raw(line.as_bytes());
    uart.write_raw(b"\n");
    plan.write(
        |address, page| vm.read_present(address, page),
        |bytes| uart.write_raw(bytes),
    );
    uart.write_raw(b"\n");
}

/// Writes one line (`\n` added) whole.
fn send_line(line: &str) {
    if let Some(uart) = UART.lock().as_mut() {
        uart.write_raw(line.as_bytes());
        uart.write_raw(b"\n");
    }
}

/// Bytes of the line being received.
struct LineBuffer {
    bytes: [u8; MAX_LINE],
    length: usize,
    /// More than `MAX_LINE` bytes came: the line is discarded at its end.
    overflowed: bool,
}

/// What a received byte completed.
#[derive(Debug, PartialEq, Eq)]
enum Received<'a> {
    Nothing,
    Line(&'a [u8]),
    TooLong,
}

impl LineBuffer {
    const fn new() -> LineBuffer {
        LineBuffer {
            bytes: [0; MAX_LINE],
            length: 0,
            overflowed: false,
        }
    }

    fn push(&mut self, byte: u8) -> Received<'_> {
        match byte {
            b'\n' => {
                let (length, overflowed) = (self.length, self.overflowed);
                self.length = 0;
                self.overflowed = false;
                if overflowed {
                    Received::TooLong
                } else {
                    Received::Line(&self.bytes[..length])
                }
            }
            b'\r' => Received::Nothing,
            _ if self.length == MAX_LINE => {
                self.overflowed = true;
                Received::Nothing
            }
            _ => {
                self.bytes[self.length] = byte;
                self.length += 1;
                Received::Nothing
            }
        }
    }
}

fn serve() {
    let mut hello = JsonWriter::new();
    hello
        .begin_object()
        .key("event")
        .string("hello")
        .key("version")
        .unsigned(PROTOCOL_VERSION)
        .end_object();
    send_line(&hello.finish());
    let mut receiver = Uart16550::new(COM2);
    let mut line = LineBuffer::new();
    loop {
        if HOLDERS.load(Ordering::Acquire) > 0 {
            wait_while_held();
        }
        let Some(byte) = receiver.try_read_byte() else {
            sched::sleep_ns(POLL_INTERVAL_NS);
            continue;
        };
        match line.push(byte) {
            Received::Nothing => {}
            Received::TooLong => {
                send_line(&error_line(&format!("line longer than {MAX_LINE} bytes")));
            }
            Received::Line(bytes) => {
                let reply = match ::core::str::from_utf8(bytes) {
                    Ok(text) => commands::answer(text),
                    Err(_) => Some(error_line("the line is not UTF-8")),
                };
                if let Some(reply) = reply {
                    send_line(&reply);
                }
            }
        }
    }
}

crate::ktests! {
    fn a_polling_hold_keeps_the_thread_off_its_cpu() {
        let hold = hold_polling();
        match THREAD.get() {
            None => assert!(!hold.held, "no control channel: nothing to hold"),
            Some(thread) => {
                assert!(hold.held);
                let switches = thread.switches.load(Ordering::Relaxed);
                sched::sleep_ns(30_000_000);
                assert_eq!(thread.state(), LwpState::Sleeping);
                assert!(!thread.on_cpu.load(Ordering::Acquire));
                assert_eq!(
                    thread.switches.load(Ordering::Relaxed),
                    switches,
                    "a held thread does not run (it polls every 5 ms otherwise)"
                );
            }
        }
        drop(hold);
        if let Some(thread) = THREAD.get() {
            let switches = thread.switches.load(Ordering::Relaxed);
            assert!(
                crate::ktest::wait_until(1_000, || thread.switches.load(Ordering::Relaxed) > switches),
                "polling goes on after the hold"
            );
        }
    }

    fn discards_overlong_lines() {
        let mut line = LineBuffer::new();
        for byte in b"ps\r" {
            assert_eq!(line.push(*byte), Received::Nothing);
        }
        assert_eq!(line.push(b'\n'), Received::Line(b"ps"));
        for _ in 0..MAX_LINE {
            assert_eq!(line.push(b'x'), Received::Nothing);
        }
        assert_eq!(line.push(b'\n'), Received::Line(&[b'x'; MAX_LINE]), "256 bytes fit");
        for _ in 0..=MAX_LINE {
            line.push(b'y');
        }
        assert_eq!(line.push(b'\n'), Received::TooLong);
        line.push(b'h');
        assert_eq!(line.push(b'\n'), Received::Line(b"h"), "the next line is whole again");
    }
}
