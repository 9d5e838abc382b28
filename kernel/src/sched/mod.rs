//! The scheduler: per-CPU run queues, context switches, sleep and wake-up,
//! preemption, the tick, idle LWPs and load balancing.
//!
//! Owns, per CPU (`CPUS[index]`): the run queue (`run_queue` lock), the
//! running LWP (`current`), the idle LWP, the LWP being switched away from
//! (`previous`, consumed by `finish_switch` on the next LWP's stack), and
//! lock-free hints other CPUs read when placing wake-ups (`queued`,
//! `running_priority`, `need_resched`).
//!
//! Lock order: an LWP's `sched` lock -> a run-queue lock. `current`,
//! `idle` and `previous` are leaves. All are `IrqSpinLock`s: nothing here
//! sleeps, and an interrupt can never find its own CPU inside them, which is
//! also why an interrupt may preempt whatever it interrupted.
//!
//! Sleeping without lost wake-ups: `prepare_sleep` turns interrupts off and
//! marks the LWP `Sleeping` with a new sleep generation *before* the caller
//! registers a `Waker` and releases its own lock; a waker that comes at any
//! time after that finds `Sleeping` and makes the LWP runnable, and
//! `schedule` then simply does not switch away. A waker carries the
//! generation, so a late wake-up (a timeout after a notify) cannot wake a
//! later sleep.
//!
//! Switching: an LWP is on a run queue only while no CPU runs it. Its
//! `on_cpu` flag is set (under its `sched` lock) by the CPU that switches it
//! in and cleared by the CPU that switched it out, after the switch, in
//! `finish_switch`, which then queues it if it is runnable (preempted,
//! yielded, or woken while it was switching out: a waker that finds
//! `on_cpu` set only marks it runnable). So one LWP never runs on two
//! stacks, and no CPU ever waits for another to finish a switch.
//!
//! Classes: fixed-priority round robin, and timeshare (priority falls by one
//! every `TIMESHARE_DECAY_TICKS` of CPU use, rises by one plus one per
//! `TIMESHARE_DECAY_TICKS` slept, never above the base). A higher-priority
//! LWP preempts at once (an IPI for another CPU); equal priorities share
//! the CPU in timeslices of `TIMESLICE_MS`.

pub mod callout;
mod runqueue;
pub(crate) mod tests;

use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use x86_64::instructions::interrupts;

use self::runqueue::RunQueue;
use crate::arch::{self, context::Context};
use crate::cpu::{self, MAX_CPUS};
use crate::mm::stack::KernelStack;
use crate::proc::lwp::{
    LwpParts, LwpState, PRI_KTHREAD, Priority, SchedClass, SchedInfo, SignalSet, WakeReason, flags,
};
use crate::proc::{self, lwp::Lwp};
use crate::sync::{IrqSpinLock, biglock};
use crate::time;

pub const TIMESLICE_MS: u64 = 20;
pub const TIMESHARE_DECAY_TICKS: u32 = 8;
/// `running_priority` of a CPU running its idle LWP.
const IDLE_PRIORITY_MARK: u32 = u32::MAX;

struct CpuSched {
    run_queue: IrqSpinLock<RunQueue>,
    current: IrqSpinLock<Option<Arc<Lwp>>>,
    idle: IrqSpinLock<Option<Arc<Lwp>>>,
    previous: IrqSpinLock<Option<Arc<Lwp>>>,
    need_resched: AtomicBool,
    online: AtomicBool,
    running_priority: AtomicU32,
    queued: AtomicUsize,
    queued_unbound: AtomicUsize,
    switches: AtomicU64,
}

impl CpuSched {
    const fn new() -> CpuSched {
        CpuSched {
            run_queue: IrqSpinLock::new(RunQueue::new()),
            current: IrqSpinLock::new(None),
            idle: IrqSpinLock::new(None),
            previous: IrqSpinLock::new(None),
            need_resched: AtomicBool::new(false),
            online: AtomicBool::new(false),
            running_priority: AtomicU32::new(IDLE_PRIORITY_MARK),
            queued: AtomicUsize::new(0),
            queued_unbound: AtomicUsize::new(0),
            switches: AtomicU64::new(0),
        }
    }

    fn is_idle(&self) -> bool {
        self.running_priority.load(Ordering::Acquire) == IDLE_PRIORITY_MARK
    }

    fn push(&self, lwp: Arc<Lwp>, priority: Priority) {
        let unbound = lwp.bound_cpu().is_none();
        self.run_queue.lock().push_back(lwp, priority);
        self.queued.fetch_add(1, Ordering::AcqRel);
        if unbound {
            self.queued_unbound.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn note_removed(&self, lwp: &Lwp) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        if lwp.bound_cpu().is_none() {
            self.queued_unbound.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

static CPUS: [CpuSched; MAX_CPUS] = [const { CpuSched::new() }; MAX_CPUS];
static STARTED: AtomicBool = AtomicBool::new(false);

fn this_cpu() -> &'static CpuSched {
    &CPUS[cpu::current_index()]
}

fn quantum_ticks() -> u32 {
    (time::tick_hz() * TIMESLICE_MS / 1000).max(1) as u32
}

fn running_priority_of(lwp: &Lwp, info: &SchedInfo) -> u32 {
    if lwp.has_flag(flags::IDLE_LOOP) {
        IDLE_PRIORITY_MARK
    } else {
        u32::from(info.priority)
    }
}

/// The LWP running on this CPU, once the scheduler has started here.
pub fn try_current() -> Option<Arc<Lwp>> {
    if !STARTED.load(Ordering::Acquire) {
        return None;
    }
    let enabled = interrupts::are_enabled();
    interrupts::disable();
    let current = this_cpu().current.lock().clone();
    if enabled {
        interrupts::enable();
    }
    current
}

/// The running LWP. Only for thread context after `init_boot_cpu`.
pub fn current() -> Arc<Lwp> {
    try_current().expect("no current LWP: the scheduler has not started on this CPU")
}

/// The index of the CPU this LWP runs on (it may move right after).
pub fn current_cpu() -> usize {
    cpu::current_index()
}

/// CPUs the scheduler runs on.
pub fn online_cpus() -> impl Iterator<Item = usize> {
    (0..MAX_CPUS).filter(|&index| CPUS[index].online.load(Ordering::Acquire))
}

/// Creates the LWP record for code that is already running (the boot
/// CPU's main flow, or an AP's idle loop).
fn adopt_running(
    name: &str,
    lwp_flags: u32,
    class: SchedClass,
    priority: Priority,
    bound: Option<usize>,
    stack: Option<KernelStack>,
) -> Arc<Lwp> {
    let proc0 = proc::proc0();
    let process = Arc::clone(&proc0);
    proc0
        .add_lwp(|id| {
            Arc::new(Lwp::new(LwpParts {
                id,
                process,
                name: name.into(),
                flags: lwp_flags,
                class,
                priority,
                bound_cpu: bound,
                hold_mask: SignalSet::ALL,
                stack,
                context: Context::running(),
                entry: None,
                state: LwpState::OnCpu,
            }))
        })
        .expect("proc0 accepts its boot LWPs")
}

fn make_idle_lwp(cpu_index: usize) -> Arc<Lwp> {
    crate::kthread::Builder::new(&format!("idle/{cpu_index}"))
        .class(SchedClass::Idle, 0)
        .cpu(cpu_index)
        .flags(flags::IDLE_LOOP | flags::MPSAFE)
        .start_stopped()
        .spawn(|| idle_loop())
        .expect("memory for an idle LWP at boot")
}

/// Starts the scheduler on the boot CPU: proc0 appears, the running code
/// becomes its LWP `main` (on `main_stack`), and CPU 0 gets its idle LWP.
pub fn init_boot_cpu(main_stack: KernelStack) {
    proc::init();
    let main = adopt_running(
        "main",
        flags::KERNEL_THREAD | flags::MPSAFE,
        SchedClass::FixedRoundRobin,
        PRI_KTHREAD,
        None,
        Some(main_stack),
    );
    let this = this_cpu();
    this.running_priority
        .store(u32::from(PRI_KTHREAD), Ordering::Release);
    *this.current.lock() = Some(main);
    this.online.store(true, Ordering::Release);
    STARTED.store(true, Ordering::Release);
    let idle = make_idle_lwp(cpu::current_index());
    *this.idle.lock() = Some(idle);
}

/// An application processor's entry into the scheduler, interrupts off:
/// its running code becomes its idle LWP.
pub fn enter_application_processor() -> ! {
    let index = cpu::current_index();
    let idle = adopt_running(
        &format!("idle/{index}"),
        flags::KERNEL_THREAD | flags::MPSAFE | flags::IDLE_LOOP,
        SchedClass::Idle,
        0,
        Some(index),
        None,
    );
    let this = this_cpu();
    *this.current.lock() = Some(Arc::clone(&idle));
    *this.idle.lock() = Some(idle);
    this.online.store(true, Ordering::Release);
    time::start_tick(time::tick_hz());
    idle_loop()
}

fn idle_loop() -> ! {
    loop {
        interrupts::disable();
        let index = cpu::current_index();
        let this = &CPUS[index];
        let work_elsewhere = online_cpus()
            .any(|other| other != index && CPUS[other].queued_unbound.load(Ordering::Acquire) > 0);
        if this.need_resched.load(Ordering::Acquire)
            || this.queued.load(Ordering::Acquire) > 0
            || work_elsewhere
        {
            schedule();
            interrupts::enable();
        } else {
            interrupts::enable_and_hlt();
        }
    }
}

/// The first code a new LWP runs (see `Context::new_thread`).
extern "C" fn thread_start() -> ! {
    finish_switch();
    interrupts::enable();
    let me = current();
    if !me.has_flag(flags::MPSAFE) {
        biglock::acquire();
    }
    let entry = me.take_entry();
    let user_mode = me.has_flag(flags::USER);
    let stack_top = me.stack_top;
    drop(me);
    if let Some(entry) = entry {
        entry();
    }
    // A user LWP goes to user mode for good, with the frame its creator
    // placed at the top of its stack; nothing it owns stays on this stack
    // frame (it is never unwound).
    if user_mode {
        arch::syscall::enter_user(stack_top);
    }
    crate::kthread::exit(0)
}

/// A fresh context that starts in `thread_start` on `stack`.
/// A fresh context that starts in `thread_start` on `stack`. A user LWP's
/// stack keeps its top `TrapFrame` free: the frame it enters user mode
/// with is placed there, and later entries from user mode reuse it.
pub fn new_thread_context(stack: &KernelStack, user_mode: bool) -> Context {
    let reserved = if user_mode {
        arch::syscall::TRAP_FRAME_SIZE
    } else {
        0
    };
    Context::new_thread(stack.top() - reserved, thread_start)
}

/// Picks where a runnable LWP should go: its bound CPU; else the CPU it
/// last ran on if that is idle; else any idle CPU; else the shortest queue.
fn choose_cpu(lwp: &Lwp, info: &SchedInfo) -> usize {
    if let Some(bound) = lwp.bound_cpu() {
        return bound;
    }
    let last = info.last_cpu;
    if CPUS[last].online.load(Ordering::Acquire)
        && CPUS[last].is_idle()
        && CPUS[last].queued.load(Ordering::Acquire) == 0
    {
        return last;
    }
    let mut best = (usize::MAX, last);
    for index in online_cpus() {
        let load = CPUS[index].queued.load(Ordering::Acquire) + usize::from(!CPUS[index].is_idle());
        if load < best.0 || (load == best.0 && index == last) {
            best = (load, index);
        }
    }
    if best.0 == usize::MAX { 0 } else { best.1 }
}

/// Makes a locked, not-running LWP runnable on a chosen CPU. Returns the
/// CPU and the priority, for `kick`.
fn enqueue_locked(lwp: &Arc<Lwp>, info: &mut SchedInfo) -> (usize, Priority) {
    info.state = LwpState::Runnable;
    let target = choose_cpu(lwp, info);
    CPUS[target].push(Arc::clone(lwp), info.priority);
    (target, info.priority)
}

/// Tells `target` that an LWP of `priority` is queued there.
fn kick(target: usize, priority: Priority) {
    let cpu = &CPUS[target];
    let running = cpu.running_priority.load(Ordering::Acquire);
    if running != IDLE_PRIORITY_MARK && u32::from(priority) <= running {
        return;
    }
    cpu.need_resched.store(true, Ordering::Release);
    if target != cpu::current_index() {
        // A CPU that cannot be reached keeps its queue until its next tick.
        let _ = arch::apic::send_ipi(target, arch::trap::VECTOR_RESCHEDULE);
    }
}

/// Starts an LWP created stopped (`Idle`) or resumes a `Stopped` one.
/// Returns false if it was in neither state.
pub fn make_runnable(lwp: &Arc<Lwp>) -> bool {
    let placed = {
        let mut info = lwp.sched.lock();
        match info.state {
            LwpState::Idle | LwpState::Stopped => Some(ready_locked(lwp, &mut info)),
            _ => None,
        }
    };
    match placed {
        Some(queued) => {
            if let Some((target, priority)) = queued {
                kick(target, priority);
            }
            preempt_point();
            true
        }
        None => false,
    }
}

/// Marks a locked LWP runnable. It goes on a run queue now, unless a CPU is
/// still switching away from it; then `finish_switch` queues it once the
/// switch is done. So no queued LWP is ever still on a CPU, and a CPU that
/// picks one never waits for another CPU.
fn ready_locked(lwp: &Arc<Lwp>, info: &mut SchedInfo) -> Option<(usize, Priority)> {
    info.state = LwpState::Runnable;
    if lwp.on_cpu.load(Ordering::Acquire) {
        None
    } else {
        Some(enqueue_locked(lwp, info))
    }
}

/// Makes `lwp` a zombie that never ran (NetBSD `kthread_destroy`). Only
/// for an LWP in state `Idle`; returns false otherwise.
pub fn retire_unstarted(lwp: &Lwp) -> bool {
    let mut info = lwp.sched.lock();
    if info.state != LwpState::Idle {
        return false;
    }
    info.state = LwpState::Zombie;
    true
}

/// A sleep being set up. Interrupts stay off from `prepare_sleep` until
/// `block` or `cancel` (or drop, which cancels).
pub struct SleepTicket {
    lwp: Arc<Lwp>,
    generation: u64,
    interrupts_were_enabled: bool,
    done: bool,
}

/// Wakes one particular sleep of one LWP.
#[derive(Clone)]
pub struct Waker {
    lwp: Arc<Lwp>,
    generation: u64,
}

/// Marks the current LWP as going to sleep. Fails with `Interrupted` when
/// an interruptible sleep finds an interruption already pending. The
/// caller's location is recorded as the wait channel.
#[track_caller]
pub fn prepare_sleep(interruptible: bool) -> Result<SleepTicket, WakeReason> {
    let interrupts_were_enabled = interrupts::are_enabled();
    interrupts::disable();
    let lwp = current();
    if interruptible && lwp.interrupt_pending() {
        if interrupts_were_enabled {
            interrupts::enable();
        }
        return Err(WakeReason::Interrupted);
    }
    let generation = {
        let mut info = lwp.sched.lock();
        info.sleep_generation += 1;
        info.state = LwpState::Sleeping;
        info.sleep_interruptible = interruptible;
        info.slept_at_tick = time::ticks();
        info.wake_reason = None;
        info.wait_channel = Some(core::panic::Location::caller());
        info.sleep_generation
    };
    Ok(SleepTicket {
        lwp,
        generation,
        interrupts_were_enabled,
        done: false,
    })
}

impl SleepTicket {
    pub fn waker(&self) -> Waker {
        Waker {
            lwp: Arc::clone(&self.lwp),
            generation: self.generation,
        }
    }

    /// Gives up the sleep before blocking (the condition became true).
    pub fn cancel(mut self) {
        self.finish_cancel();
    }

    fn finish_cancel(&mut self) {
        self.done = true;
        {
            let mut info = self.lwp.sched.lock();
            if info.state == LwpState::Sleeping && info.sleep_generation == self.generation {
                info.state = LwpState::OnCpu;
            }
        }
        if self.interrupts_were_enabled {
            interrupts::enable();
        }
    }

    /// Sleeps until woken, or until `deadline_ns` (monotonic) if given.
    pub fn block(mut self, deadline_ns: Option<u64>) -> WakeReason {
        self.done = true;
        let timeout = deadline_ns.map(|deadline| callout::wake_at(deadline, self.waker()));
        let held_big_lock = biglock::release_all();
        schedule();
        let reason = self
            .lwp
            .sched
            .lock()
            .wake_reason
            .take()
            .unwrap_or(WakeReason::Notified);
        if let Some(timeout) = timeout {
            callout::cancel(timeout);
        }
        if self.interrupts_were_enabled {
            interrupts::enable();
        }
        biglock::reacquire(held_big_lock);
        reason
    }
}

impl Drop for SleepTicket {
    fn drop(&mut self) {
        if !self.done {
            self.finish_cancel();
        }
    }
}

impl Waker {
    /// Wakes the sleep this waker belongs to, if it is still going on.
    /// Returns whether it did.
    pub fn wake(&self, reason: WakeReason) -> bool {
        wake_sleep(&self.lwp, Some(self.generation), reason)
    }

    /// Whether this waker belongs to the same sleep as `other`.
    pub fn same_sleep(&self, other: &Waker) -> bool {
        self.lwp.serial == other.lwp.serial && self.generation == other.generation
    }
}

fn wake_sleep(lwp: &Arc<Lwp>, generation: Option<u64>, reason: WakeReason) -> bool {
    let placed = {
        let mut info = lwp.sched.lock();
        let same_sleep = generation.is_none_or(|generation| generation == info.sleep_generation);
        if info.state != LwpState::Sleeping || !same_sleep {
            return false;
        }
        if reason == WakeReason::Interrupted && !info.sleep_interruptible {
            return false;
        }
        info.wake_reason = Some(reason);
        if info.class == SchedClass::Timeshare {
            let slept = time::ticks().saturating_sub(info.slept_at_tick);
            let boost = 1 + slept / u64::from(TIMESHARE_DECAY_TICKS);
            let raised = u64::from(info.priority) + boost;
            info.priority = raised.min(u64::from(info.base_priority)) as Priority;
        }
        ready_locked(lwp, &mut info)
    };
    if let Some((target, priority)) = placed {
        kick(target, priority);
    }
    preempt_point();
    true
}

/// Sleeps for at least `nanoseconds` (to the next tick after it).
pub fn sleep_ns(nanoseconds: u64) {
    let deadline = time::now_ns().saturating_add(nanoseconds);
    while time::now_ns() < deadline {
        match prepare_sleep(false) {
            Ok(ticket) => {
                ticket.block(Some(deadline));
            }
            Err(_) => unreachable!("uninterruptible sleeps are never refused"),
        }
    }
}

/// Interrupts `lwp`: marks an interruption pending and wakes it if it is
/// in an interruptible sleep (which then returns `Interrupted`).
pub fn interrupt(lwp: &Arc<Lwp>) {
    lwp.set_interrupt_pending(true);
    wake_sleep(lwp, None, WakeReason::Interrupted);
}

/// Makes the CPU running `lwp` (if another) pass through the scheduler
/// soon: an LWP in user mode then notices what changed (its process
/// exiting) on its way back.
pub fn poke(lwp: &Lwp) {
    let cpu = {
        let info = lwp.sched.lock();
        if info.state != LwpState::OnCpu {
            return;
        }
        info.last_cpu
    };
    if cpu != cpu::current_index() {
        CPUS[cpu].need_resched.store(true, Ordering::Release);
        let _ = arch::apic::send_ipi(cpu, arch::trap::VECTOR_RESCHEDULE);
    }
}

/// Gives the CPU to another runnable LWP of the same or higher priority, if
/// any. Releases the big kernel lock meanwhile, as NetBSD's `yield` does.
pub fn yield_now() {
    let held_big_lock = biglock::release_all();
    schedule();
    biglock::reacquire(held_big_lock);
}

/// Switches now if a wake-up asked for it and this is thread context.
pub fn preempt_point() {
    if interrupts::are_enabled()
        && STARTED.load(Ordering::Acquire)
        && this_cpu().need_resched.load(Ordering::Acquire)
    {
        schedule();
    }
}

/// Called at the end of the timer and reschedule interrupts.
pub fn preempt_on_interrupt_exit() {
    if STARTED.load(Ordering::Acquire)
        && this_cpu().online.load(Ordering::Acquire)
        && this_cpu().need_resched.load(Ordering::Acquire)
    {
        schedule();
    }
}

/// The tick's scheduling work on this CPU: accounting (`in_user`: the
/// tick interrupted user mode), timeshare decay, timeslices. The boot CPU
/// also runs due callouts.
pub fn on_tick(in_user: bool) {
    let index = cpu::current_index();
    if index == 0 {
        callout::run_due(time::now_ns());
    }
    let this = &CPUS[index];
    if !this.online.load(Ordering::Acquire) {
        return;
    }
    let Some(current) = this.current.lock().clone() else {
        return;
    };
    current.cpu_ticks.fetch_add(1, Ordering::Relaxed);
    if in_user {
        current.user_ticks.fetch_add(1, Ordering::Relaxed);
    }
    if current.has_flag(flags::IDLE_LOOP) {
        return;
    }
    let waiting = this.run_queue.lock().highest_priority();
    let mut info = current.sched.lock();
    if info.class == SchedClass::Timeshare {
        info.usage_ticks += 1;
        if info.usage_ticks >= TIMESHARE_DECAY_TICKS {
            info.usage_ticks = 0;
            info.priority = info.priority.saturating_sub(1);
            this.running_priority
                .store(u32::from(info.priority), Ordering::Release);
        }
    }
    info.timeslice = info.timeslice.saturating_sub(1);
    let preempt = match waiting {
        Some(waiting) => {
            waiting > info.priority || (info.timeslice == 0 && waiting == info.priority)
        }
        None => false,
    };
    if preempt {
        this.need_resched.store(true, Ordering::Release);
    }
}

/// Gives this CPU to the best runnable LWP. The current LWP keeps the CPU
/// if it is still runnable (preemption, yield, or woken before it could
/// switch away) and nothing queued here has at least its priority; if it
/// switches away runnable, `finish_switch` queues it. If it is `Sleeping`,
/// `Stopped` or `Zombie`, it leaves the CPU. Returns when the current LWP
/// runs again.
pub fn schedule() {
    let interrupts_were_enabled = interrupts::are_enabled();
    interrupts::disable();
    let index = cpu::current_index();
    let this = &CPUS[index];
    this.need_resched.store(false, Ordering::Release);
    let current = this
        .current
        .lock()
        .clone()
        .expect("schedule() before the scheduler started");
    let (current_runnable, current_priority) = {
        let info = current.sched.lock();
        let runnable = matches!(info.state, LwpState::OnCpu | LwpState::Runnable)
            && !current.has_flag(flags::IDLE_LOOP);
        (runnable, info.priority)
    };
    let queued = {
        let mut queue = this.run_queue.lock();
        match queue.highest_priority() {
            Some(best) if !current_runnable || best >= current_priority => queue.pop_highest(),
            _ => None,
        }
    };
    let next = match queued {
        Some(lwp) => {
            this.note_removed(&lwp);
            Some(lwp)
        }
        None if !current_runnable => steal(index),
        None => None,
    };
    let next = match next {
        Some(next) => next,
        None if current_runnable => current.clone(),
        None => this
            .idle
            .lock()
            .clone()
            .expect("every online CPU has an idle LWP"),
    };
    if Arc::ptr_eq(&next, &current) {
        let mut info = current.sched.lock();
        info.state = LwpState::OnCpu;
        info.timeslice = quantum_ticks();
        this.running_priority
            .store(running_priority_of(&current, &info), Ordering::Release);
        drop(info);
        if interrupts_were_enabled {
            interrupts::enable();
        }
        return;
    }
    if current_runnable {
        // Queued by `finish_switch` once it is off this CPU.
        current.sched.lock().state = LwpState::Runnable;
    }
    {
        let mut info = next.sched.lock();
        debug_assert!(
            !next.on_cpu.load(Ordering::Acquire),
            "a queued LWP was still on a CPU"
        );
        info.state = LwpState::OnCpu;
        info.last_cpu = index;
        info.timeslice = quantum_ticks();
        next.on_cpu.store(true, Ordering::Release);
        this.running_priority
            .store(running_priority_of(&next, &info), Ordering::Release);
    }
    next.switches.fetch_add(1, Ordering::Relaxed);
    this.switches.fetch_add(1, Ordering::Relaxed);
    if current.has_flag(flags::USES_FPU)
        && let Some(state) = current.fpu.lock().as_mut()
    {
        arch::fpu::save(state);
    }
    if next.has_flag(flags::USES_FPU)
        && let Some(state) = next.fpu.lock().as_ref()
    {
        arch::fpu::restore(state);
    }
    load_address_space_of(&next);
    let from: *const Context = &current.context;
    let to: *const Context = &next.context;
    *this.previous.lock() = Some(current);
    *this.current.lock() = Some(next);
    // SAFETY: interrupts are off; `from` is the context of the LWP running here and `to` that of an
    // LWP no CPU runs (its `on_cpu` was clear, and this CPU set it). This CPU's `previous` and
    // `current` slots keep both LWPs alive until `finish_switch` runs on the other side.
    unsafe { arch::context::switch(from, to) };
    finish_switch();
    if interrupts_were_enabled {
        interrupts::enable();
    }
}

/// Points this CPU at what `next` needs to run and to enter the kernel from
/// user mode: its process's page tables, its kernel stack for system calls
/// and interrupts, its FS base.
fn load_address_space_of(next: &Lwp) {
    let root = match next.process.cr3() {
        0 => crate::mm::paging::kernel_pml4(),
        root => root,
    };
    crate::mm::paging::switch_address_space(root);
    if next.stack_top != 0 {
        crate::cpu::current()
            .kernel_stack_top
            .store(next.stack_top, Ordering::Relaxed);
        arch::gdt::set_user_entry_stack(next.stack_top);
    }
    if next.has_flag(flags::USER) {
        arch::set_fs_base(next.fs_base.load(Ordering::Relaxed));
    }
}

/// Takes an unbound LWP queued on another CPU, for an otherwise idle one.
fn steal(index: usize) -> Option<Arc<Lwp>> {
    for other in online_cpus().filter(|&other| other != index) {
        let victim = &CPUS[other];
        if victim.queued_unbound.load(Ordering::Acquire) == 0 {
            continue;
        }
        let Some(mut queue) = victim.run_queue.try_lock() else {
            continue;
        };
        if let Some(lwp) = queue.pop_highest_where(|lwp| lwp.bound_cpu().is_none()) {
            drop(queue);
            victim.note_removed(&lwp);
            return Some(lwp);
        }
    }
    None
}

/// Completes a switch on the new LWP's stack: the LWP switched away from
/// is off this CPU now; if it is runnable (preempted, yielded, or woken
/// during the switch) it is queued; a zombie's stack goes to the reaper.
fn finish_switch() {
    let this = this_cpu();
    let Some(previous) = this.previous.lock().take() else {
        return;
    };
    let (queued, stack) = {
        let mut info = previous.sched.lock();
        previous.on_cpu.store(false, Ordering::Release);
        match info.state {
            LwpState::Runnable => (Some(enqueue_locked(&previous, &mut info)), None),
            LwpState::Zombie => (None, previous.take_stack()),
            _ => (None, None),
        }
    };
    if let Some((target, priority)) = queued {
        kick(target, priority);
    }
    if let Some(stack) = stack {
        crate::kthread::reaper::defer_free(stack);
    }
}

/// Gives back memory the run queues keep for reuse (before leak checks).
pub fn trim_caches() {
    for index in online_cpus() {
        CPUS[index].run_queue.lock().trim();
    }
}

/// Ends the current LWP: it becomes a zombie and leaves the CPU for good.
pub fn exit_current() -> ! {
    interrupts::disable();
    let me = current();
    me.sched.lock().state = LwpState::Zombie;
    drop(me);
    schedule();
    unreachable!("a zombie LWP was scheduled again");
}
