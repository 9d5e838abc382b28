//! The guest process: one static Linux program from the initrd, in user
//! mode, and its life cycle.
//!
//! Owns the image (the initrd module, read in place through the direct
//! map), the supervisor kernel thread that starts the process, waits for
//! its end, tears it down, reports and powers off or starts it again
//! (`respawn=N`), and the exit rules:
//! - `exit_group`, a fatal signal (`crate::signal`), or the exit of the
//!   last user LWP decides the process's termination (first decision
//!   stands), marks it exiting and interrupts every LWP; each LWP notices
//!   on its way back to user mode or when its sleep is interrupted, and
//!   exits. A user fault becomes a signal for the faulting LWP.
//! - Kernel-only LWPs in the process (illumos `TP_KTHREAD`) never keep it
//!   alive: they notice the exit by themselves. `test.kworkers=N` places N
//!   of them in the process, sleeping interruptibly, so the rule is tested.
//! - The address space is torn down by the supervisor only after every LWP
//!   of the process is off its CPU.
//!
//! Console lines the host parses: `spindle: memory before process: ...`,
//! `spindle: process <argv0> (pid N) exited with status S` or `... killed
//! by signal N`, `spindle: memory after exit: ...`, `spindle: cannot run
//! <argv0>: <reason>`.

pub mod exec;

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::Ordering;

use crate::arch::syscall::{SYSCALL_MARKER, USER_CODE_SELECTOR, USER_DATA_SELECTOR, USER_RFLAGS};
use crate::arch::trap::TrapFrame;
use crate::compat::illumos;
use crate::errno::Errno;
use crate::kthread::{self, Builder};
use crate::mm::phys_to_virt;
use crate::mm::vm::{Access, AddressSpace};
use crate::proc::lwp::{Lwp, SignalSet, flags};
use crate::proc::{self, Process};
use crate::sync::{Condvar, Mutex};
use crate::{cmdline, mm, power, println, sched};

/// Kernel stack of each user LWP: 32 KiB.
const USER_LWP_STACK_PAGES: usize = 8;

/// The image and how to run it, from the boot module and command line.
struct Launch {
    image: Range<u64>,
    argv: Vec<String>,
    envp: Vec<String>,
    respawn: u64,
    kernel_workers: usize,
    busy_kernel_workers: usize,
}

fn launch_from_command_line(image: Range<u64>) -> Launch {
    let line = cmdline::get().as_str();
    let argv0 = cmdline::get().value("init").unwrap_or("init");
    let mut argv = alloc::vec![String::from(argv0)];
    if let Some((_, rest)) = line
        .split_once(" -- ")
        .or_else(|| line.strip_prefix("-- ").map(|rest| ("", rest)))
    {
        argv.extend(rest.split_ascii_whitespace().map(String::from));
    }
    let envp = ["PATH=/bin", "HOME=/", "TERM=vt100"]
        .iter()
        .map(|s| String::from(*s))
        .collect();
    let respawn = cmdline::get()
        .value("respawn")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let kernel_workers = cmdline::get()
        .value("test.kworkers")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
        .min(64);
    let busy_kernel_workers = cmdline::get()
        .value("test.kbusy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
        .min(64);
    Launch {
        image,
        argv,
        envp,
        respawn,
        kernel_workers,
        busy_kernel_workers,
    }
}

/// Starts the supervisor if the boot loader gave an image; returns whether
/// it did.
pub fn start(modules: &[Range<u64>]) -> bool {
    let Some(image) = modules.first().cloned() else {
        return false;
    };
    let launch = launch_from_command_line(image);
    let started = Builder::new("supervisor").spawn(move || supervise(launch));
    if let Err(error) = started {
        println!("spindle: cannot start the supervisor: {error}");
        power::exit(power::ExitCode::Failure);
    }
    true
}

fn image_bytes(range: &Range<u64>) -> &'static [u8] {
    let length = (range.end - range.start) as usize;
    // SAFETY: the boot module lies in RAM that `mm::init` kept out of the
    // frame allocator and the heap; it is only ever read, and stays for the
    // life of the kernel.
    unsafe { core::slice::from_raw_parts(phys_to_virt(range.start) as *const u8, length) }
}

fn memory_line(when: &str) {
    // Periodic kernel work (its callouts) held still, so that the figures
    // of different runs compare exactly.
    let _quiet = crate::compat::sysinit::quiesce();
    // Spare capacity the scheduler and process lists keep for reuse goes
    // back first, so the figures show what is really in use.
    sched::trim_caches();
    proc::trim_caches();
    mm::stack::trim_caches();
    println!(
        "spindle: memory {when}: {} free frames, {} heap bytes in use",
        mm::frame::free_count(),
        mm::heap::bytes_in_use()
    );
}

fn supervise(launch: Launch) {
    let name = launch.argv[0].clone();
    let mut last_status = 0;
    for _ in 0..=launch.respawn {
        kthread::reaper::drain();
        memory_line("before process");
        let process = match spawn(&launch) {
            Ok(process) => process,
            Err(reason) => {
                println!("spindle: cannot run {name}: {reason}");
                power::exit(power::ExitCode::Failure);
            }
        };
        let status = process.wait_exit();
        let pid = process.pid;
        teardown(&process);
        let freed_ns = crate::time::now_ns();
        let times = process.exit_times();
        drop(process);
        kthread::reaper::drain();
        report(&name, pid, status);
        report_teardown(pid, times, freed_ns);
        last_status = status;
        memory_line("after exit");
    }
    power::exit(if last_status == 0 {
        power::ExitCode::Success
    } else {
        power::ExitCode::Failure
    });
}

fn report(name: &str, pid: u32, wait_status: i32) {
    if wait_status & 0x7f == 0 {
        println!(
            "spindle: process {name} (pid {pid}) exited with status {}",
            (wait_status >> 8) & 0xff
        );
    } else {
        let core = if wait_status & 0x80 != 0 {
            " (core dumped)"
        } else {
            ""
        };
        println!(
            "spindle: process {name} (pid {pid}) killed by signal {}{core}",
            wait_status & 0x7f
        );
    }
}

/// `spindle: teardown of pid N: W kernel-only workers inside at exit, last
/// LWP gone X us after exit began, resources freed after Y us`.
fn report_teardown(pid: u32, times: proc::ExitTimes, freed_ns: u64) {
    let Some(began) = times.began_ns else {
        return;
    };
    let since = |at: u64| at.saturating_sub(began) / 1000;
    let gone = times.last_lwp_gone_ns.map_or(0, since);
    println!(
        "spindle: teardown of pid {pid}: {} kernel-only workers inside at exit, last LWP gone {gone} us after exit began, resources freed after {} us",
        times.workers,
        since(freed_ns)
    );
}

/// The wait-status encoding of a process that exited with `code`.
fn exit_status(code: i32) -> i32 {
    (code & 0xff) << 8
}

fn random_u64() -> u64 {
    let mut value = crate::arch::read_tsc();
    value ^= value << 13;
    value ^= value >> 7;
    value ^ (value << 17)
}

fn spawn(launch: &Launch) -> Result<Arc<Process>, String> {
    let image = image_bytes(&launch.image);
    let process =
        proc::create(&launch.argv[0], 0).map_err(|error| format!("no process: {error}"))?;
    let vm = AddressSpace::new().map_err(|error| format!("no address space: {error}"))?;
    let fail = |process: &Arc<Process>, vm: &Arc<AddressSpace>, reason: String| {
        vm.teardown();
        process.finish_exit(0);
        Err(reason)
    };
    let loaded = match exec::load(image, &vm, random_u64()) {
        Ok(loaded) => loaded,
        Err(error) => return fail(&process, &vm, format!("{error}")),
    };
    let mut random = [0u8; 16];
    random[..8].copy_from_slice(&random_u64().to_le_bytes());
    random[8..].copy_from_slice(&random_u64().rotate_left(29).to_le_bytes());
    let stack_pointer = match exec::build_stack(&vm, &loaded, &launch.argv, &launch.envp, random) {
        Ok(pointer) => pointer,
        Err(error) => return fail(&process, &vm, format!("{error}")),
    };
    {
        let mut layout = vm.layout.lock();
        layout.brk_start = loaded.brk_start;
        layout.brk = loaded.brk_start;
    }
    process.set_auxv(exec::initial_auxv(&loaded, &launch.argv, &launch.envp));
    process.set_cr3(vm.root());
    *process.vm.lock() = Some(Arc::clone(&vm));
    let frame = user_frame(loaded.entry, stack_pointer);
    if let Err(error) = spawn_user_lwp(
        &process,
        &launch.argv[0],
        frame,
        0,
        SignalSet::EMPTY,
        |_| {},
    ) {
        *process.vm.lock() = None;
        process.set_cr3(0);
        return fail(&process, &vm, format!("no first thread: {error}"));
    }
    for index in 0..launch.kernel_workers {
        place_kernel_worker(&process, WorkerKind::Sleeping, index);
    }
    for index in 0..launch.busy_kernel_workers {
        place_kernel_worker(&process, WorkerKind::Working, index);
    }
    Ok(process)
}

/// A trap frame that starts user code at `rip` with stack `rsp`.
pub fn user_frame(rip: u64, rsp: u64) -> TrapFrame {
    TrapFrame {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rbp: 0,
        rdi: 0,
        rsi: 0,
        rdx: 0,
        rcx: 0,
        rbx: 0,
        rax: 0,
        vector: SYSCALL_MARKER,
        error_code: 0,
        rip,
        cs: USER_CODE_SELECTOR,
        rflags: USER_RFLAGS,
        rsp,
        ss: USER_DATA_SELECTOR,
    }
}

/// Creates a user LWP in `process` that enters user mode with `frame`,
/// holding `hold_mask` (its creator's, as Linux `clone` copies it: a
/// signal the creator holds never reaches the new LWP before it sets its
/// own mask). `prepare` runs before the LWP can run: whatever the new
/// thread must find done when it starts (its tid stored where `clone`
/// was asked to, its `clear_child_tid`) is done there.
pub fn spawn_user_lwp(
    process: &Arc<Process>,
    name: &str,
    frame: TrapFrame,
    fs_base: u64,
    hold_mask: SignalSet,
    prepare: impl FnOnce(&Arc<Lwp>),
) -> Result<Arc<Lwp>, Errno> {
    let lwp = Builder::new(name)
        .process(process)
        .user_mode()
        .hold_mask(hold_mask)
        .stack_pages(USER_LWP_STACK_PAGES)
        .start_stopped()
        .spawn(|| {})?;
    crate::arch::syscall::place_user_frame(lwp.stack_top, &frame);
    lwp.fs_base.store(fs_base, Ordering::Relaxed);
    prepare(&lwp);
    process.user_lwps.fetch_add(1, Ordering::AcqRel);
    kthread::start(&lwp)?;
    Ok(lwp)
}

/// The thread id Linux programs see for `lwp`: the process id for its
/// first LWP, then consecutive numbers.
pub fn tid_of(lwp: &Lwp) -> i32 {
    (lwp.process.pid + lwp.id - 1) as i32
}

static WORKER_GATE: Mutex<()> = Mutex::new(());
static WORKER_WAKE: Condvar = Condvar::new();

/// What a test-placed kernel-only LWP does.
#[derive(Clone, Copy)]
enum WorkerKind {
    /// Sleeps interruptibly until the process exits (`test.kworkers`).
    Sleeping,
    /// Works ~2 ms, naps 5 ms, again and again (`test.kbusy`).
    Working,
}

/// Ticks of spinning per round of a working LWP.
const WORK_ROUND_NS: u64 = 2_000_000;
const NAP_NS: u64 = 5_000_000;

/// A kernel-only LWP placed in the process by a test argument: it never
/// enters user mode, sleeps only interruptibly (so it parks when the
/// process is stopped) and exits by itself when the process exits.
fn kernel_worker(kind: WorkerKind) {
    let me = sched::current();
    let mut gate = WORKER_GATE.lock();
    while !me.process.is_exiting() {
        match kind {
            WorkerKind::Sleeping => {
                gate = WORKER_WAKE.wait_interruptible(gate).0;
            }
            WorkerKind::Working => {
                drop(gate);
                let until = crate::time::now_ns() + WORK_ROUND_NS;
                while crate::time::now_ns() < until && !me.process.is_exiting() {
                    core::hint::spin_loop();
                }
                gate = WORKER_GATE.lock();
                gate = WORKER_WAKE.wait_timeout_interruptible(gate, NAP_NS).0;
            }
        }
        me.set_interrupt_pending(false);
    }
}

fn place_kernel_worker(process: &Arc<Process>, kind: WorkerKind, index: usize) {
    let created = illumos::lwp_create(
        kernel_worker,
        kind,
        0,
        process,
        illumos::TS_STOPPED,
        illumos::MINCLSYSPRI - 1,
        &SignalSet::ALL,
        illumos::ClassId::Sys,
        0,
    );
    let name = match kind {
        WorkerKind::Sleeping => format!("kworker-{index}"),
        WorkerKind::Working => format!("kbusy-{index}"),
    };
    match created {
        Some(worker) => {
            illumos::lwp_set_kthread(&worker);
            illumos::lwp_set_name(&worker, &name);
            if let Err(error) = illumos::lwp_create_done(&worker) {
                log::warn!("kernel worker {name} did not start: {error}");
            }
        }
        None => log::warn!("kernel worker {name} refused by {:?}", process),
    }
}

/// Waits until every LWP that ever left `process` is off its CPU, then
/// closes its descriptors (every socket) and frees its address space.
fn teardown(process: &Arc<Process>) {
    for lwp in process.take_departed() {
        kthread::wait_until_off_cpu(&lwp);
    }
    // Sockets first (they hold the attachment), then the attachment: the
    // workers are gone, so the device is reset and the stack freed.
    let files = process.files.lock().take_all();
    drop(files);
    let attachment = process.net.lock().take();
    drop(attachment);
    let vm = process.vm.lock().take();
    process.set_cr3(0);
    if let Some(vm) = vm {
        vm.teardown();
    }
}

/// Marks the process exiting with `wait_status` (unless decided already)
/// and gets every LWP to notice.
pub fn begin_process_exit(process: &Arc<Process>, wait_status: i32) {
    process.decide_termination(wait_status);
    process.begin_exit();
    crate::signal::stop::release_for_exit(process);
    for lwp in process.lwps() {
        sched::interrupt(&lwp);
        sched::poke(&lwp);
    }
}

/// Ends the calling user LWP (Linux `exit`). The last user LWP ends the
/// process with `code`.
pub fn exit_lwp(code: i32) -> ! {
    let me = sched::current();
    let child_tid = me.clear_child_tid.swap(0, Ordering::AcqRel);
    if child_tid != 0 && mm::usercopy::write_u32(child_tid, 0).is_ok() {
        crate::syscall::futex::wake(&me.process, child_tid, 1);
    }
    if me.has_flag(flags::USER) && me.process.user_lwps.fetch_sub(1, Ordering::AcqRel) == 1 {
        begin_process_exit(&me.process, exit_status(code));
    }
    drop(me);
    kthread::exit(code)
}

/// Ends the whole process (Linux `exit_group`).
pub fn exit_group(code: i32) -> ! {
    let me = sched::current();
    begin_process_exit(&me.process, exit_status(code));
    drop(me);
    exit_lwp(code)
}

/// A page fault on user memory: resolved if the current process's layout
/// allows the access. Runs in the fault handler; the faulting context had
/// interrupts on, so they may be turned on while the layout is consulted.
pub fn resolve_user_fault(address: u64, access: Access) -> bool {
    if address >= mm::vm::USER_END {
        return false;
    }
    let Some(me) = sched::try_current() else {
        return false;
    };
    let Some(vm) = me.process.vm.lock().clone() else {
        return false;
    };
    drop(me);
    x86_64::instructions::interrupts::enable();
    let resolved = vm.resolve_fault(address, access);
    x86_64::instructions::interrupts::disable();
    resolved
}

/// Whether a region of `process`'s address space covers `address`.
fn is_mapped(process: &Process, address: u64) -> bool {
    let Some(vm) = process.vm.lock().clone() else {
        return false;
    };
    let enabled = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::enable();
    let mapped = {
        let layout = vm.layout.lock();
        layout
            .regions
            .range(..=address)
            .next_back()
            .is_some_and(|(_, region)| address < region.end)
    };
    if !enabled {
        x86_64::instructions::interrupts::disable();
    }
    mapped
}

/// A fault in user mode that no mapping resolves: the faulting LWP gets
/// the matching signal (Linux's `si_code` and address), taken on its way
/// back to user mode; unhandled, it ends the process.
pub fn user_fault(frame: &TrapFrame, name: &str, address: u64) {
    use crate::signal::{SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP, SigInfo, code};
    let Some(me) = sched::try_current() else {
        return;
    };
    let (signal, si_code, si_addr) = match frame.vector {
        0 => (SIGFPE, code::FPE_INTDIV, frame.rip),
        16 | 19 => (SIGFPE, code::FPE_FLTINV, frame.rip),
        1 | 3 => (SIGTRAP, code::SI_KERNEL, 0),
        6 => (SIGILL, code::ILL_ILLOPN, frame.rip),
        17 => (SIGBUS, code::BUS_ADRALN, address),
        // A mapped region that does not allow the access: a protection
        // violation; no region there: nothing mapped.
        14 if is_mapped(&me.process, address) => (SIGSEGV, code::SEGV_ACCERR, address),
        14 => (SIGSEGV, code::SEGV_MAPERR, address),
        _ => (SIGSEGV, code::SI_KERNEL, 0),
    };
    log::debug!(
        "process {} (pid {}) thread {}: {name} at rip {:#x}, address {address:#x}: signal {signal}",
        me.process.name(),
        me.process.pid,
        tid_of(&me),
        frame.rip
    );
    drop(me);
    crate::signal::force_fault(SigInfo {
        trapno: frame.vector,
        error_code: frame.error_code,
        fault_rip: frame.rip,
        ..SigInfo::fault(signal, si_code, si_addr)
    });
}
