//! In-kernel tests of the viona model on the real virtio-net device (every
//! kernel-test boot has one): ring init adds named kernel-only workers with
//! every signal held, early requests are kept, resets bail cleanly from
//! any state, a refused worker leaves the ring in `RESET`, cycles leave
//! nothing behind, and a process whose other LWPs all exit still ends.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use super::ring::{RingState, request};
use super::*;
use crate::proc::lwp::{SignalSet, flags};
use crate::sync::{Condvar, Mutex};

const SECOND_NS: u64 = 1_000_000_000;

/// A process with one ordinary LWP that sleeps until the process exits.
fn process_with_a_sleeper(name: &str) -> Arc<Process> {
    let process = crate::proc::create(name, 0).expect("process");
    let gate = Arc::new((Mutex::new(()), Condvar::new()));
    crate::kthread::Builder::new("sleeper")
        .process(&process)
        .spawn(move || {
            let me = crate::sched::current();
            let mut guard = gate.0.lock();
            while !me.process.is_exiting() {
                guard = gate.1.wait_interruptible(guard).0;
                me.set_interrupt_pending(false);
            }
        })
        .expect("sleeper");
    process
}

fn end(process: &Arc<Process>) {
    crate::uproc::begin_process_exit(process, 0);
    process.wait_exit();
    drop(process.net.lock().take());
}

fn workers(process: &Process) -> Vec<Arc<crate::proc::lwp::Lwp>> {
    process
        .lwps()
        .into_iter()
        .filter(|lwp| lwp.name().starts_with("vnet0-"))
        .collect()
}

fn both_in(attachment: &Attachment, state: RingState) -> bool {
    attachment.rings.iter().all(|ring| ring.state() == state)
}

crate::ktests! {
    fn ring_init_adds_named_kernel_only_workers_with_every_signal_held() {
        let process = process_with_a_sleeper("viona-init");
        let before = process.lwp_count();
        let attachment = attach(&process).expect("attach");
        assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Run)), "rings reach RUN");
        assert_eq!(process.lwp_count(), before + 2, "one worker per ring");
        let mut names: Vec<_> = workers(&process).iter().map(|lwp| lwp.name()).collect();
        names.sort();
        assert_eq!(names, ["vnet0-rx0", "vnet0-tx0"]);
        for worker in workers(&process) {
            assert!(worker.has_flag(flags::KTHREAD), "{} is kernel-only", worker.name());
            assert_eq!(worker.hold_mask(), SignalSet::ALL, "{} holds every signal", worker.name());
        }
        let same = attach(&process).expect("second attach");
        assert!(Arc::ptr_eq(&same, &attachment), "one attachment per process");
        assert_eq!(process.lwp_count(), before + 2, "no second set of workers");
        drop((same, attachment));
        detach(&process).expect("detach");
        // RESET is each worker's last word; its LWP leaves right after.
        assert!(crate::ktest::wait_until(5_000, || workers(&process).is_empty()), "workers exited");
        assert_eq!(process.lwp_count(), before);
        end(&process);
    }

    fn ring_init_needs_reset_and_a_reset_during_init_bails_cleanly() {
        let process = process_with_a_sleeper("viona-early-reset");
        let attachment = attach(&process).expect("attach");
        // Ask a ring to stop at once (it may still be in SETUP or INIT):
        // it bails to RESET, whatever state it was in.
        let ring = &attachment.rings[1];
        ring.request(request::STOP);
        assert!(ring.wait_for_state(RingState::Reset, 5 * SECOND_NS), "tx ring reset");
        assert_eq!(ring.view().requests, 0, "requests cleared on reset");
        assert!(ring.view().worker.is_none());
        // The device stopped under both rings: the attachment is down as
        // a whole, and socket waits and new network calls say so.
        let rx = &attachment.rings[0];
        assert!(rx.wait_for_state(RingState::Reset, 5 * SECOND_NS), "rx ring reset with it");
        assert!(!attachment.device.is_live(), "device stopped");
        let deadline = Some(crate::time::now_ns() + SECOND_NS);
        let mut watch = crate::net::wake::Watch::new();
        let waited = attachment.stack.wait(attachment.stack.lock(), &mut watch, deadline);
        assert_eq!(waited.err(), Some(crate::errno::Errno::ENETDOWN), "a socket wait ends");
        assert_eq!(attach(&process).err(), Some(crate::errno::Errno::ENETDOWN));
        drop(attachment);
        detach(&process).expect("detach");
        end(&process);
    }

    fn a_start_requested_before_the_worker_runs_is_kept() {
        // `attach` asks START right after init, while the workers are in
        // SETUP (not yet running): the request must not be lost.
        for _ in 0..20 {
            let process = process_with_a_sleeper("viona-early-start");
            let attachment = attach(&process).expect("attach");
            assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Run)), "early START kept");
            drop(attachment);
            detach(&process).expect("detach");
            end(&process);
        }
    }

    fn pause_and_start_cycles_keep_the_workers() {
        let process = process_with_a_sleeper("viona-pause");
        let attachment = attach(&process).expect("attach");
        assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Run)));
        let ids: Vec<_> = workers(&process).iter().map(|lwp| lwp.id).collect();
        for _ in 0..500 {
            for ring in &attachment.rings {
                ring.request(request::PAUSE);
            }
            assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Init)), "paused to INIT");
            for ring in &attachment.rings {
                ring.request(request::START);
            }
            assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Run)), "running again");
        }
        let after: Vec<_> = workers(&process).iter().map(|lwp| lwp.id).collect();
        assert_eq!(ids, after, "the same workers");
        drop(attachment);
        detach(&process).expect("detach");
        end(&process);
    }

    fn attach_and_reset_cycles_leave_no_lwp_frame_or_heap_behind() {
        let measure = || {
            let _quiet = crate::compat::sysinit::quiesce();
            crate::sched::trim_caches();
            crate::proc::trim_caches();
            crate::mm::stack::trim_caches();
            (crate::proc::lwp_count(), crate::mm::frame::free_count(), crate::mm::heap::bytes_in_use())
        };
        let cycle = || {
            let process = process_with_a_sleeper("viona-cycle");
            let attachment = attach(&process).expect("attach");
            assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Run)));
            drop(attachment);
            detach(&process).expect("detach");
            end(&process);
            crate::kthread::reaper::drain();
        };
        cycle();
        let before = measure();
        for _ in 0..300 {
            cycle();
        }
        let after = measure();
        assert_eq!(after.0, before.0, "LWPs");
        assert_eq!(after.1, before.1, "free frames");
        assert!(after.2 <= before.2 + 4096, "heap grew from {} to {}", before.2, after.2);
    }

    fn a_refused_worker_fails_the_attach_and_leaves_nothing_open() {
        let process = process_with_a_sleeper("viona-limit");
        let limits = &crate::proc::LIMITS;
        let saved = limits.max_lwps.load(Ordering::SeqCst);
        // `attach` opens the device on an LWP of its own ("vnet0-open"),
        // then inits TX, then RX. One more LWP: the TX worker is refused;
        // two more: the TX worker is made and the RX worker refused.
        for extra in [1, 2] {
            limits.max_lwps.store(crate::proc::lwp_count() + extra, Ordering::SeqCst);
            let refused = attach(&process);
            limits.max_lwps.store(saved, Ordering::SeqCst);
            assert_eq!(refused.err(), Some(crate::errno::Errno::EAGAIN), "{extra} more LWPs");
            assert!(process.net.lock().is_none(), "no attachment kept");
            assert!(crate::ktest::wait_until(5_000, || workers(&process).is_empty()), "no worker left");
        }
        // Nothing is left half-open: the next attach works.
        let attachment = attach(&process).expect("attach after the limit");
        assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Run)));
        drop(attachment);
        detach(&process).expect("detach");
        end(&process);
    }

    fn a_refused_ring_init_stays_in_reset_and_stops_the_device() {
        let process = process_with_a_sleeper("viona-refused-init");
        // The device's open builds its queues by value: a large stack.
        let outcome = Arc::new(Mutex::new(None));
        let (slot, target) = (Arc::clone(&outcome), Arc::clone(&process));
        let opener = crate::kthread::Builder::new("refused-init")
            .stack_pages(64)
            .joinable()
            .spawn(move || {
                let rx = Arc::new(ring::Ring::new("vnet0-rx0".into(), ring::RingKind::Rx, Arc::new(Doorbell::new())));
                let tx = Arc::new(ring::Ring::new("vnet0-tx0".into(), ring::RingKind::Tx, Arc::new(Doorbell::new())));
                let (device, queues) = device::open([Arc::clone(&rx), Arc::clone(&tx)]).expect("open");
                let device = Arc::new(device);
                let live_before = device.is_live();
                let stack = Arc::new(Stack::ethernet(device.mac, Default::default(), Arc::clone(&tx.doorbell)));
                let context = ring::WorkerContext {
                    ring: Arc::clone(&tx),
                    device: Arc::clone(&device),
                    stack,
                    peer: Arc::clone(&rx),
                };
                let limits = &crate::proc::LIMITS;
                let saved = limits.max_lwps.load(Ordering::SeqCst);
                limits.max_lwps.store(crate::proc::lwp_count(), Ordering::SeqCst);
                let refused = ring::init(&target, context, ring::RingQueue::Tx(queues.tx));
                limits.max_lwps.store(saved, Ordering::SeqCst);
                let view = tx.view();
                *slot.lock() = Some((refused.err(), view.state, view.worker, live_before, device.is_live()));
                // The RX queue goes after the device: it was never handed out.
                drop(device);
                drop(queues.rx);
            })
            .expect("opener");
        crate::kthread::join(&opener).expect("join");
        let (error, state, worker, live_before, live_after) = outcome.lock().take().expect("outcome");
        assert_eq!(error, Some(crate::errno::Errno::EAGAIN));
        assert_eq!(state, RingState::Reset, "the ring stays in RESET");
        assert!(worker.is_none(), "no worker recorded");
        assert!(live_before && !live_after, "the device was stopped before the refused queue was freed");
        assert!(workers(&process).is_empty());
        // The device opens again.
        let attachment = attach(&process).expect("attach after the refusal");
        assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Run)));
        drop(attachment);
        detach(&process).expect("detach");
        end(&process);
    }

    fn the_process_ends_when_its_other_lwps_exit_while_workers_run() {
        static RELEASE: AtomicBool = AtomicBool::new(false);
        let process = crate::proc::create("viona-last", 0).expect("process");
        crate::kthread::Builder::new("only-user")
            .process(&process)
            .spawn(|| {
                while !RELEASE.load(Ordering::SeqCst) {
                    crate::sched::sleep_ns(1_000_000);
                }
                // The last ordinary LWP ends the process, as a user
                // process's last thread does.
                crate::uproc::begin_process_exit(&crate::sched::current().process, 0);
            })
            .expect("LWP");
        let attachment = attach(&process).expect("attach");
        assert!(crate::ktest::wait_until(5_000, || both_in(&attachment, RingState::Run)));
        let rings = attachment.rings.clone();
        drop(attachment);
        RELEASE.store(true, Ordering::SeqCst);
        assert_eq!(process.wait_exit(), 0, "the process ended");
        assert!(rings.iter().all(|ring| ring.state() == RingState::Reset), "rings reset by their workers");
        drop(process.net.lock().take());
    }
}
