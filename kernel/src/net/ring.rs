//! Rings and their workers: each virtqueue of the attachment is serviced
//! by one kernel-only LWP of the owning process (viona's model, see
//! docs/network.md and shared/reference/viona-model.md).
//!
//! Owns per ring: `control` (a sleeping `Mutex`: state, requests, the
//! worker; after the stack lock in the lock order), `changed` (notified
//! under `control` on every state change), the `doorbell` (rung by
//! requests, interrupts and kicks; latched, so nothing rung between a
//! worker's last look and its sleep is lost), and the counters (atomics).
//! The virtqueue itself belongs to the worker's stack frame once the
//! worker exists: nothing else touches it.
//!
//! States `RESET -> SETUP -> INIT -> RUN -> STOP -> RESET`. Only `init`
//! changes the state while no worker exists (`RESET -> SETUP`); from then
//! on only the worker does. Requests: `START`, `STOP`, `PAUSE`. The bail
//! check (stop requested, pause requested unless asking about stop only,
//! or the process exiting) runs every `BAIL_BATCH` frames and before every
//! sleep; a stopped process parks a worker at the same points.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spindle_drivers::virtio_net::{self, Received, RingError, RxRing, TxRing};

use super::Device;
use super::hal::KernelHal;
use super::stack::Stack;
use crate::compat::illumos;
use crate::errno::Errno;
use crate::proc::Process;
use crate::proc::lwp::{Lwp, SignalSet};
use crate::sched;
use crate::sync::{Condvar, Doorbell, Mutex};
use crate::time;

/// A worker's kernel stack: the stack's poll runs on it.
const WORKER_STACK_BYTES: usize = 64 << 10;
/// Frames between two bail checks.
pub const BAIL_BATCH: usize = 32;
/// How long the TX worker waits for the device to finish its last frames.
const FLUSH_NS: u64 = 200_000_000;
/// At process exit, how long connections get to deliver what is queued
/// and have their FIN acknowledged before they are reset.
const CLOSE_GRACE_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingState {
    Reset,
    Setup,
    Init,
    Run,
    Stop,
}

impl RingState {
    pub fn name(self) -> &'static str {
        match self {
            RingState::Reset => "RESET",
            RingState::Setup => "SETUP",
            RingState::Init => "INIT",
            RingState::Run => "RUN",
            RingState::Stop => "STOP",
        }
    }
}

/// Request bits.
pub mod request {
    pub const START: u32 = 1 << 0;
    pub const STOP: u32 = 1 << 1;
    pub const PAUSE: u32 = 1 << 2;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    Rx,
    Tx,
}

/// Per-ring counters, as `ctl rings` shows them.
#[derive(Default)]
pub struct Counters {
    /// Frames received (RX) or sent (TX).
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// Notifications this ring sent to the device.
    pub kicks: AtomicU64,
    /// Interrupts the device raised for this ring.
    pub interrupts: AtomicU64,
    /// RX: frames taken while the device's interrupts were suppressed;
    /// TX: device notifications skipped because the device suppressed them.
    pub suppressed: AtomicU64,
    /// Frames dropped: malformed from the device, or no room in a queue.
    pub drops: AtomicU64,
    /// Buffers the device holds now.
    pub in_flight: AtomicU64,
}

fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

struct Control {
    state: RingState,
    requests: u32,
    worker: Option<Arc<Lwp>>,
}

pub struct Ring {
    pub name: String,
    pub kind: RingKind,
    control: Mutex<Control>,
    changed: Condvar,
    pub doorbell: Arc<Doorbell>,
    pub counters: Counters,
    /// A TX ring only: set while its worker closes the connections of an
    /// exiting process (the RX worker keeps receiving meanwhile).
    closing: core::sync::atomic::AtomicBool,
}

/// A snapshot for `ctl rings`.
pub struct RingView {
    pub state: RingState,
    pub requests: u32,
    pub worker: Option<u32>,
}

impl Ring {
    pub fn new(name: String, kind: RingKind, doorbell: Arc<Doorbell>) -> Ring {
        Ring {
            name,
            kind,
            control: Mutex::new(Control {
                state: RingState::Reset,
                requests: 0,
                worker: None,
            }),
            changed: Condvar::new(),
            doorbell,
            counters: Counters::default(),
            closing: core::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A TX ring whose worker has left `RUN` and is no longer closing
    /// connections (so the device may stop any moment).
    fn is_past_closing(&self) -> bool {
        let state = self.state();
        state == RingState::Reset
            || (state == RingState::Stop && !self.closing.load(Ordering::Acquire))
    }

    pub fn view(&self) -> RingView {
        let control = self.control.lock();
        RingView {
            state: control.state,
            requests: control.requests,
            worker: control.worker.as_ref().map(|lwp| lwp.id),
        }
    }

    pub fn state(&self) -> RingState {
        self.control.lock().state
    }

    /// Sets request bits and rings the worker's doorbell (after the bits
    /// are in place, so the worker cannot miss them).
    pub fn request(&self, bits: u32) {
        self.control.lock().requests |= bits;
        self.doorbell.ring();
    }

    /// Asks the worker to stop unless the ring is in `RESET` already: a
    /// ring in `RESET` keeps no request (checked under the ring lock, so
    /// the bit never lands just after the worker's last word).
    fn request_stop_unless_reset(&self) {
        let mut control = self.control.lock();
        if control.state == RingState::Reset {
            return;
        }
        control.requests |= request::STOP;
        drop(control);
        self.doorbell.ring();
    }

    /// Counts a device interrupt and wakes the worker. Interrupt context.
    pub fn on_interrupt(&self) {
        add(&self.counters.interrupts, 1);
        self.doorbell.ring();
    }

    /// Waits until the ring is in `state` or `timeout_ns` passed; returns
    /// whether it got there.
    pub fn wait_for_state(&self, state: RingState, timeout_ns: u64) -> bool {
        let deadline = time::now_ns().saturating_add(timeout_ns);
        let mut control = self.control.lock();
        while control.state != state {
            let now = time::now_ns();
            if now >= deadline {
                return false;
            }
            control = self.changed.wait_timeout(control, deadline - now).0;
        }
        true
    }

    /// Resets the ring from outside: asks the worker to stop and waits for
    /// `RESET` (bounded by `timeout_ns`).
    pub fn reset(&self, timeout_ns: u64) -> bool {
        if self.state() == RingState::Reset {
            return true;
        }
        self.request(request::STOP);
        self.wait_for_state(RingState::Reset, timeout_ns)
    }

    /// The worker's state change (only the worker calls this once it
    /// exists). Broadcasts under the ring lock.
    fn set_state(&self, state: RingState) {
        let mut control = self.control.lock();
        control.state = state;
        if state == RingState::Reset {
            control.requests = 0;
            control.worker = None;
        }
        self.changed.notify_all();
    }

    /// "Should I bail?"
    fn should_bail(&self, process: &Process, stop_only: bool) -> bool {
        let requests = self.control.lock().requests;
        requests & request::STOP != 0
            || (!stop_only && requests & request::PAUSE != 0)
            || process.is_exiting()
    }
}

/// What a worker takes with it.
pub struct WorkerContext {
    pub ring: Arc<Ring>,
    pub device: Arc<Device>,
    pub stack: Arc<Stack>,
    /// The other ring (the TX ring for the RX worker, and back).
    pub peer: Arc<Ring>,
}

pub enum RingQueue {
    Rx(Box<RxRing<KernelHal>>),
    Tx(Box<TxRing<KernelHal>>),
}

/// A ring's queue on its way to its worker. If the worker never takes it
/// (its creation was refused), the device is stopped before the queue's
/// memory goes back: a live device may still read and write it.
struct Handover {
    context: Option<WorkerContext>,
    queue: Option<RingQueue>,
}

impl Handover {
    fn take(mut self) -> Option<(WorkerContext, RingQueue)> {
        Some((self.context.take()?, self.queue.take()?))
    }
}

impl Drop for Handover {
    fn drop(&mut self) {
        if let (Some(context), Some(queue)) = (&self.context, self.queue.take()) {
            context.device.stop();
            drop(queue);
        }
    }
}

/// Ring init: requires `RESET` (else `EBUSY`), creates the worker inside
/// `process` through the illumos interface (stopped, every signal held,
/// kernel-only, named after the ring), sets `SETUP` and starts it. A
/// refused creation leaves the ring in `RESET` and fails with `EAGAIN`
/// (the LWP limit, or no memory for the LWP), or `ESRCH` when the process
/// is exiting; the device is then stopped (`Handover`), since the queue
/// it was given is freed.
pub fn init(process: &Arc<Process>, context: WorkerContext, queue: RingQueue) -> Result<(), Errno> {
    let ring = Arc::clone(&context.ring);
    let mut control = ring.control.lock();
    if control.state != RingState::Reset {
        return Err(Errno::EBUSY);
    }
    let handover = Handover {
        context: Some(context),
        queue: Some(queue),
    };
    let worker = illumos::lwp_create(
        worker_main,
        handover,
        WORKER_STACK_BYTES,
        process,
        illumos::TS_STOPPED,
        illumos::MINCLSYSPRI,
        &SignalSet::ALL,
        illumos::ClassId::Sys,
        0,
    )
    .ok_or(if process.is_exiting() {
        Errno::ESRCH
    } else {
        Errno::EAGAIN
    })
    .inspect_err(|error| {
        log::warn!(
            "net: {}: the worker could not be created ({}); the ring stays in RESET",
            ring.name,
            error.name()
        )
    })?;
    illumos::lwp_set_kthread(&worker);
    illumos::lwp_set_name(&worker, &ring.name);
    control.state = RingState::Setup;
    control.worker = Some(Arc::clone(&worker));
    ring.changed.notify_all();
    drop(control);
    if let Err(error) = illumos::lwp_create_done(&worker) {
        // Not startable: it never runs, so init takes the ring back.
        let _ = crate::kthread::destroy_unstarted(&worker);
        ring.set_state(RingState::Reset);
        return Err(error);
    }
    Ok(())
}

fn worker_main(handover: Handover) {
    let Some((context, mut queue)) = handover.take() else {
        return;
    };
    let me = sched::current();
    let ring = Arc::clone(&context.ring);
    ring.set_state(RingState::Init);
    loop {
        if !wait_for_start(&ring, &me.process) {
            break;
        }
        ring.set_state(RingState::Run);
        let bailed = match &mut queue {
            RingQueue::Rx(queue) => run_rx(&context.ring, queue, &context, &me.process),
            RingQueue::Tx(queue) => run_tx(&context.ring, queue, &context, &me.process),
        };
        // A pause goes back to INIT and waits for the next start.
        let paused = {
            let mut control = ring.control.lock();
            let paused = bailed.is_ok()
                && control.requests & request::STOP == 0
                && control.requests & request::PAUSE != 0
                && !me.process.is_exiting();
            if paused {
                control.requests &= !request::PAUSE;
                control.state = RingState::Init;
                ring.changed.notify_all();
            }
            paused
        };
        if !paused {
            if let Err(RingError::BadToken) = bailed {
                log::warn!(
                    "{}: the device returned an unknown buffer; resetting",
                    ring.name
                );
            }
            break;
        }
    }
    let exiting = me.process.is_exiting();
    if exiting && matches!(queue, RingQueue::Tx(_)) {
        // Before `STOP` shows: the RX worker must not take the gap for
        // the end of the closing phase.
        ring.closing.store(true, Ordering::Release);
    }
    ring.set_state(RingState::Stop);
    finish(context, queue, exiting);
}

/// The TX side of `finish` at process exit: close every connection and
/// send until they are done closing or `CLOSE_GRACE_NS` passes.
fn close_for_exit(context: &WorkerContext, queue: &mut TxRing<KernelHal>) {
    context.stack.lock().close_all_tcp_for_exit();
    let deadline = time::now_ns() + CLOSE_GRACE_NS;
    loop {
        context.stack.poll();
        let _ = queue.reclaim();
        post_everything(context, queue);
        if !context.stack.lock().tcp_still_closing() || time::now_ns() >= deadline {
            return;
        }
        sched::sleep_ns(1_000_000);
    }
}

/// `post_outgoing` with no batch limit, for the TX side of `finish`.
fn post_everything(context: &WorkerContext, queue: &mut TxRing<KernelHal>) {
    let WorkerContext {
        ring,
        device,
        stack,
        ..
    } = context;
    post_outgoing(ring, queue, stack, device, usize::MAX);
}

/// Ends a TX ring's closing phase (see `Ring::is_past_closing`).
struct ClosingDone<'a>(&'a Ring);

impl Drop for ClosingDone<'_> {
    fn drop(&mut self) {
        self.0.closing.store(false, Ordering::Release);
        self.0.doorbell.ring();
    }
}

/// The TX side of `finish`: reset every connection and send the last
/// frames, waiting (bounded) until the device has them all.
fn flush_with_resets(context: &WorkerContext, queue: &mut TxRing<KernelHal>) {
    context.stack.lock().abort_all_tcp();
    context.stack.poll();
    queue.set_interrupts(true);
    let deadline = time::now_ns() + FLUSH_NS;
    loop {
        let _ = queue.reclaim();
        post_everything(context, queue);
        let backlog = context.stack.with_frames(|frames| frames.outgoing());
        if (queue.in_flight() == 0 && backlog == 0) || time::now_ns() >= deadline {
            return;
        }
        sched::sleep_ns(1_000_000);
    }
}

/// The RX side of `finish`: what has arrived goes to the stack (a batch
/// at most), the buffers go back to the device.
fn drain_received(context: &WorkerContext, queue: &mut RxRing<KernelHal>) -> Result<(), RingError> {
    let mut batch: Vec<Vec<u8>> = Vec::new();
    for _ in 0..BAIL_BATCH {
        let harvested = queue.harvest_one(|received| {
            if let Received::Frame(frame) = received
                && super::check::check_frame(frame).is_ok()
            {
                batch.push(frame.to_vec());
            }
        })?;
        if harvested.is_none() {
            break;
        }
    }
    if !batch.is_empty() {
        deliver(context, &mut batch);
    }
    refill(&context.ring, queue, &context.device);
    Ok(())
}

/// Waits in `INIT` for `START`; `false` when it must bail instead.
fn wait_for_start(ring: &Ring, process: &Process) -> bool {
    loop {
        {
            let mut control = ring.control.lock();
            if control.requests & request::STOP != 0 || process.is_exiting() {
                return false;
            }
            if control.requests & request::START != 0 {
                control.requests &= !request::START;
                return true;
            }
        }
        idle(ring, None);
    }
}

/// Sleeps on the doorbell (interruptibly: a stop parks the worker here).
/// An interruption that came while the sleep was ending for another
/// reason (a ring) is still honoured: it is never just cleared.
fn idle(ring: &Ring, deadline_ns: Option<u64>) {
    ring.doorbell.wait(deadline_ns);
    stop_point_between_frames();
}

/// Parks the worker if its process is being stopped, between frames, and
/// only then forgets the interruption.
fn stop_point_between_frames() {
    let me = sched::current();
    if me.interrupt_pending() {
        // Cleared first: a stop requested from here on sets it again,
        // and `stop_point` sees the process flag a stop sets before it
        // interrupts.
        me.set_interrupt_pending(false);
        crate::signal::stop_point();
    }
}

fn run_rx(
    ring: &Ring,
    queue: &mut RxRing<KernelHal>,
    context: &WorkerContext,
    process: &Process,
) -> Result<(), RingError> {
    let counters = &ring.counters;
    refill(ring, queue, &context.device);
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BAIL_BATCH);
    loop {
        // Drain with the device's interrupts suppressed.
        queue.set_interrupts(false);
        let mut taken = 0usize;
        loop {
            let harvested = queue.harvest_one(|received| match received {
                Received::Frame(frame) => {
                    add(&counters.frames, 1);
                    add(&counters.bytes, frame.len() as u64);
                    // Copied out of the shared buffer once; checked on
                    // the copy.
                    let frame = frame.to_vec();
                    match super::check::check_frame(&frame) {
                        Ok(()) => batch.push(frame),
                        Err(_) => add(&counters.drops, 1),
                    }
                }
                Received::Malformed(_) => add(&counters.drops, 1),
            })?;
            if harvested.is_none() {
                break;
            }
            taken += 1;
            if taken.is_multiple_of(BAIL_BATCH) {
                deliver(context, &mut batch);
                refill(ring, queue, &context.device);
                if ring.should_bail(process, false) {
                    return Ok(());
                }
                stop_point_between_frames();
            }
        }
        add(&counters.suppressed, taken.saturating_sub(1) as u64);
        if !batch.is_empty() {
            deliver(context, &mut batch);
        }
        refill(ring, queue, &context.device);
        counters
            .in_flight
            .store(queue.in_flight() as u64, Ordering::Relaxed);
        // Re-enable, then look again: a frame that came in between
        // raised no interrupt.
        queue.set_interrupts(true);
        if queue.has_used() {
            continue;
        }
        if ring.should_bail(process, false) {
            return Ok(());
        }
        idle(ring, None);
    }
}

/// Lends every free RX buffer back to the device, telling it if it asks.
fn refill(ring: &Ring, queue: &mut RxRing<KernelHal>, device: &Device) {
    if queue.refill() > 0 && queue.should_notify() {
        device.notify(virtio_net::RX_QUEUE);
        add(&ring.counters.kicks, 1);
    }
}

/// Hands received frames to the stack, polls it, and wakes the TX worker
/// when the stack has frames to send.
fn deliver(context: &WorkerContext, batch: &mut Vec<Vec<u8>>) {
    let outgoing = context.stack.with_frames(|frames| {
        for frame in batch.drain(..) {
            if !frames.push_received(frame) {
                add(&context.ring.counters.drops, 1);
            }
        }
        frames.received()
    });
    if outgoing > 0 {
        context.stack.poll();
    }
    if context.stack.with_frames(|frames| frames.outgoing()) > 0 {
        context.peer.doorbell.ring();
    }
}

/// Posts what the stack has queued, at most `limit` frames and as far as
/// the ring has room; returns how many frames went out. The frames the
/// stack dropped for want of queue room count as this ring's drops.
fn post_outgoing(
    ring: &Ring,
    queue: &mut TxRing<KernelHal>,
    stack: &Stack,
    device: &Device,
    limit: usize,
) -> usize {
    let counters = &ring.counters;
    let mut posted = 0;
    // One trip to the stack for the whole batch.
    let (frames, dropped) = stack.with_frames(|frames| {
        let taken = frames.take_outgoing(queue.room().min(limit));
        (taken, frames.take_tx_dropped())
    });
    add(&counters.drops, dropped);
    let mut frames = frames.into_iter();
    for frame in frames.by_ref() {
        if frame.len() > virtio_net::MAX_FRAME {
            add(&counters.drops, 1);
        } else if queue.post(&frame) {
            add(&counters.frames, 1);
            add(&counters.bytes, frame.len() as u64);
            posted += 1;
        } else {
            // The ring refused it after all: it goes out first next time.
            let left: Vec<Vec<u8>> = core::iter::once(frame).chain(frames).collect();
            stack.with_frames(|queues| queues.return_outgoing(left));
            break;
        }
    }
    if posted > 0 {
        if queue.should_notify() {
            device.notify(virtio_net::TX_QUEUE);
            add(&counters.kicks, 1);
        } else {
            add(&counters.suppressed, 1);
        }
    }
    posted
}

fn run_tx(
    ring: &Ring,
    queue: &mut TxRing<KernelHal>,
    context: &WorkerContext,
    process: &Process,
) -> Result<(), RingError> {
    let counters = &ring.counters;
    queue.set_interrupts(false);
    loop {
        // The bail check and the stop point come every round, busy or
        // not, and after every batch of at most `BAIL_BATCH` frames.
        if ring.should_bail(process, false) {
            return Ok(());
        }
        stop_point_between_frames();
        queue.reclaim()?;
        let delay = context.stack.poll();
        loop {
            let posted = post_outgoing(ring, queue, &context.stack, &context.device, BAIL_BATCH);
            if posted == 0 || !queue.has_room() {
                break;
            }
            if ring.should_bail(process, false) {
                return Ok(());
            }
            stop_point_between_frames();
            queue.reclaim()?;
        }
        counters
            .in_flight
            .store(queue.in_flight() as u64, Ordering::Relaxed);
        let backlog = context.stack.with_frames(|frames| frames.outgoing());
        // Only a full ring needs completion interrupts: otherwise finished
        // buffers are taken back on the next round.
        queue.set_interrupts(backlog > 0);
        if backlog > 0 {
            queue.reclaim()?;
            if queue.has_room() {
                continue;
            }
        }
        if ring.should_bail(process, false) {
            return Ok(());
        }
        let deadline = delay.map(|delay| time::now_ns().saturating_add(delay.max(1_000_000)));
        idle(ring, deadline);
    }
}

/// Leaving `RUN`: the TX worker sends what the stack has left and waits,
/// bounded, for the device to finish; the device is then stopped (it must
/// not touch the buffers that are about to be freed: RX buffers are only
/// ever given back by a reset), the ring's buffers are freed, the state is
/// `RESET`, and the worker exits. When the process exits, connections
/// first close as Linux closes an exiting process's sockets (reset with
/// unread data, else FIN after the queued data), for at most
/// `CLOSE_GRACE_NS`, while the RX worker still hands the stack what
/// arrives (the peers' ACKs and FINs); whatever is left is then reset.
fn finish(context: WorkerContext, queue: RingQueue, exiting: bool) {
    if !exiting {
        // Outside an exit, a ring reset takes the attachment down: the
        // device stops under both rings, so the other ring stops too, and
        // socket calls waiting on the stack end with `ENETDOWN`.
        context.peer.request_stop_unless_reset();
        context.stack.go_down();
    }
    match queue {
        RingQueue::Tx(mut queue) => {
            {
                // `closing` was set before `STOP` was announced; the
                // closing phase ends with this block.
                let _done = ClosingDone(&context.ring);
                if exiting && context.device.is_live() {
                    close_for_exit(&context, &mut queue);
                }
            }
            if context.device.is_live() {
                flush_with_resets(&context, &mut queue);
            }
            context.device.stop();
            drop(queue);
        }
        RingQueue::Rx(mut queue) => {
            // While the TX worker closes an exiting process's connections
            // what arrives still reaches the stack; its last frames go out
            // before the device stops: it stops the device itself, then
            // reaches RESET. Only then does this side stop receiving.
            let deadline = time::now_ns() + CLOSE_GRACE_NS;
            while exiting && time::now_ns() < deadline && !context.peer.is_past_closing() {
                if drain_received(&context, &mut queue).is_err() {
                    break;
                }
                // The process is exiting: interruptible sleeps end at
                // once, so this one is not.
                sched::sleep_ns(1_000_000);
            }
            context
                .peer
                .wait_for_state(RingState::Reset, CLOSE_GRACE_NS + FLUSH_NS * 2);
            context.device.stop();
            drop(queue);
        }
    }
    let WorkerContext {
        ring,
        device,
        stack,
        peer,
    } = context;
    // Everything shared goes before `RESET` is announced: whoever waits for
    // it may then drop the attachment and reopen the device at once.
    drop((device, stack, peer));
    ring.counters.in_flight.store(0, Ordering::Relaxed);
    ring.set_state(RingState::Reset);
}
