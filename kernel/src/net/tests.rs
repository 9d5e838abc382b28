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

    fn a_refused_worker_fails_the_init_and_leaves_reset() {
        let process = process_with_a_sleeper("viona-limit");
        let limits = &crate::proc::LIMITS;
        let saved = limits.max_lwps.load(Ordering::SeqCst);
        // One more LWP fits: the TX worker; the RX worker is refused.
        limits.max_lwps.store(crate::proc::lwp_count() + 1, Ordering::SeqCst);
        let refused = attach(&process);
        limits.max_lwps.store(saved, Ordering::SeqCst);
        assert_eq!(refused.err(), Some(crate::errno::Errno::EAGAIN));
        assert!(process.net.lock().is_none(), "no attachment kept");
        assert!(crate::ktest::wait_until(5_000, || workers(&process).is_empty()), "the TX worker bailed");
        // Nothing is left half-open: the next attach works.
        let attachment = attach(&process).expect("attach after the limit");
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
