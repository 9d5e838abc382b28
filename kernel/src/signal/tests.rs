//! In-kernel tests of the signal rules that need no user process: the
//! pending lists, the Linux layouts, and what stops and signals do to a
//! process whose only LWPs are kernel-only.

use alloc::sync::Arc;
use alloc::vec::Vec;

use super::*;
use crate::compat::illumos::{self, ClassId, MINCLSYSPRI, TS_STOPPED};
use crate::proc::lwp::SignalSet;

type Shared = (Arc<crate::sync::Mutex<()>>, Arc<crate::sync::Condvar>);

/// A process with `count` kernel-only LWPs sleeping interruptibly (as
/// viona's workers do) until it exits.
fn process_with_kernel_workers(name: &str, count: usize) -> (Arc<Process>, Vec<Arc<Lwp>>) {
    let process = crate::proc::create(name, 0).expect("process");
    let gate = Arc::new(crate::sync::Mutex::new(()));
    let changed = Arc::new(crate::sync::Condvar::new());
    let mut workers = Vec::new();
    for _ in 0..count {
        let shared: Shared = (Arc::clone(&gate), Arc::clone(&changed));
        let worker = illumos::lwp_create(
            |(gate, changed): Shared| {
                let me = crate::sched::current();
                let mut guard = gate.lock();
                while !me.process.is_exiting() {
                    guard = changed.wait_interruptible(guard).0;
                    me.set_interrupt_pending(false);
                }
            },
            shared,
            0,
            &process,
            TS_STOPPED,
            MINCLSYSPRI - 1,
            &SignalSet::ALL,
            ClassId::Sys,
            0,
        )
        .expect("lwp_create");
        illumos::lwp_set_kthread(&worker);
        illumos::lwp_create_done(&worker).expect("start");
        workers.push(worker);
    }
    // Each worker asleep in its wait before the caller looks (a loaded
    // host can take longer than any fixed pause).
    let asleep = crate::ktest::wait_until(5_000, || {
        workers
            .iter()
            .all(|w| w.state() == crate::proc::lwp::LwpState::Sleeping)
    });
    assert!(asleep, "the workers did not reach their wait within 5 s");
    crate::sched::sleep_ns(10_000_000);
    (process, workers)
}

fn end(process: &Arc<Process>) {
    crate::uproc::begin_process_exit(process, 0);
    process.wait_exit();
}

crate::ktests! {
    fn names_and_numbers_parse_both_ways() {
        assert_eq!(parse("9"), Some(SIGKILL));
        assert_eq!(parse("KILL"), Some(SIGKILL));
        assert_eq!(parse("SIGsegv"), Some(SIGSEGV));
        assert_eq!(parse("64"), Some(64));
        assert_eq!(parse("65"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse("FOO"), None);
        assert_eq!(parse(""), None);
        assert_eq!(name(SIGTERM), Some("TERM"));
        assert_eq!(name(40), None);
    }

    fn standard_signals_merge_and_real_time_signals_queue() {
        let mut pending = Pending::default();
        for value in 0..3 {
            pending.add(SigInfo { value, ..SigInfo::from_sender(SIGUSR1, code::SI_USER, 1) }).unwrap();
            pending.add(SigInfo { value, ..SigInfo::from_sender(SIGRTMIN + 1, code::SI_USER, 1) }).unwrap();
        }
        let all = SignalSet::ALL;
        // Lowest number first; the standard one once, the real-time ones
        // three times and in order.
        assert_eq!(pending.take(all).map(|info| (info.signo, info.value)), Some((SIGUSR1, 0)));
        for value in 0..3 {
            assert_eq!(pending.take(all).map(|info| (info.signo, info.value)), Some((SIGRTMIN + 1, value)));
        }
        assert_eq!(pending.take(all), None);
        assert_eq!(pending.set, SignalSet::EMPTY);
        pending.add(SigInfo::from_sender(SIGTERM, code::SI_USER, 1)).unwrap();
        assert_eq!(pending.take(SignalSet(!bit(SIGTERM))), None, "a held signal is not taken");
        pending.discard(SignalSet(bit(SIGTERM)));
        assert_eq!(pending.set, SignalSet::EMPTY);
    }

    fn siginfo_and_sigaction_have_linux_layouts() {
        let fault = SigInfo::fault(SIGSEGV, code::SEGV_MAPERR, 0xdead_b000).to_bytes();
        assert_eq!(&fault[0..4], &11u32.to_le_bytes());
        assert_eq!(&fault[8..12], &1i32.to_le_bytes());
        assert_eq!(&fault[16..24], &0xdead_b000u64.to_le_bytes());
        let sent = SigInfo::from_sender(SIGUSR2, code::SI_TKILL, 7).to_bytes();
        assert_eq!(&sent[8..12], &(-6i32).to_le_bytes());
        assert_eq!(&sent[16..20], &7u32.to_le_bytes());
        let action = SigAction { handler: 0x1000, flags: sa::SA_SIGINFO | sa::SA_RESTORER, restorer: 0x2000, mask: SignalSet(0b1010) };
        assert_eq!(SigAction::from_bytes(&action.to_bytes()), action);
        assert_eq!(default_action(SIGSEGV), DefaultAction::Core);
        assert_eq!(default_action(SIGTERM), DefaultAction::Terminate);
        assert_eq!(default_action(SIGTSTP), DefaultAction::Stop);
        assert_eq!(default_action(SIGWINCH), DefaultAction::Ignore);
    }

    fn kernel_only_lwps_are_never_representative_nor_signal_targets() {
        let (process, workers) = process_with_kernel_workers("rep-test", 2);
        assert!(representative(&process).is_none(), "only kernel-only LWPs: no representative");
        let switches: Vec<u64> = workers.iter().map(|w| w.switches.load(core::sync::atomic::Ordering::SeqCst)).collect();
        for round in 0..1000u32 {
            let signal = [SIGUSR1, SIGTERM, SIGRTMIN + 3, SIGHUP][round as usize % 4];
            send_to_process(&process, SigInfo::from_sender(signal, code::SI_KERNEL, 0)).unwrap();
            send_to_lwp(&workers[round as usize % 2], SigInfo::from_sender(signal, code::SI_TKILL, 0)).unwrap();
        }
        crate::sched::sleep_ns(20_000_000);
        for (worker, before) in workers.iter().zip(&switches) {
            assert_eq!(worker.switches.load(core::sync::atomic::Ordering::SeqCst), *before, "{worker:?} was woken by a signal");
            assert_eq!(worker.state(), crate::proc::lwp::LwpState::Sleeping);
            assert_eq!(worker.hold_mask(), SignalSet::ALL);
        }
        end(&process);
    }

    fn stop_parks_sleeping_kernel_only_lwps_and_run_releases_the_same_ones() {
        let (process, workers) = process_with_kernel_workers("stop-test", 3);
        let ids = stop_process(&process, StopReason::Control, false, 5_000_000_000).expect("stopped");
        assert_eq!(ids.len(), 3);
        assert!(process.has_flag(crate::proc::flags::STOPPED));
        for worker in &workers {
            assert!(worker.is_parked(), "{worker:?} not parked");
        }
        let again = resume_process(&process, StopReason::Control);
        assert_eq!(again, ids);
        assert!(crate::ktest::wait_until(2_000, || workers.iter().all(|w| !w.is_parked())), "workers still parked");
        assert!(!process.has_flag(crate::proc::flags::STOPPED));
        // Stopped again, the exit still takes them all.
        stop_process(&process, StopReason::Control, false, 5_000_000_000).expect("stopped again");
        end(&process);
        assert_eq!(process.lwp_count(), 0);
    }

    fn stopping_a_kernel_process_or_an_exiting_one_is_refused() {
        let proc0 = crate::proc::proc0();
        assert_eq!(stop_process(&proc0, StopReason::Control, false, 1_000_000), Err(Errno::EINVAL));
        assert_eq!(send_to_process(&proc0, SigInfo::from_sender(SIGTERM, code::SI_KERNEL, 0)), Err(Errno::EPERM));
        let (process, _workers) = process_with_kernel_workers("exiting-test", 1);
        process.begin_exit();
        assert_eq!(stop_process(&process, StopReason::Control, false, 1_000_000), Err(Errno::ESRCH));
        end(&process);
    }
}
