//! Readiness of a socket through select, pselect6, poll, ppoll and epoll;
//! timeouts written back; the temporary signal masks of ppoll, pselect6
//! and epoll_pwait.

use crate::Env;
use crate::sys::{self, SIGSET_SIZE, SigPack, UNMAPPED, bit, fdset, runs};
use image_support::{Checker, show};
use libc::*;

pub fn run(c: &mut Checker, env: &Env) {
    let Some((client, server)) = crate::checked_pair(c, env, "ready_pair") else {
        return;
    };
    sys::handle(SIGUSR1, SA_RESTART);
    not_ready(c, server);
    timeouts(c, server);
    argument_errors(c, server);
    masks_interrupt(c, server);
    let _ = sys::send(client, b"!", 0);
    let _ = sys::poll1(server, POLLIN, 5000);
    ready(c, client, server);
    masks_ready(c, server);
    let _ = sys::close(client);
    let _ = sys::close(server);
}

fn ts(ms: i64) -> timespec {
    timespec {
        tv_sec: ms / 1000,
        tv_nsec: (ms % 1000) * 1_000_000,
    }
}

fn ns(t: &timespec) -> i64 {
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

/// Nothing to read yet: every interface reports nothing (zero timeouts).
fn not_ready(c: &mut Checker, server: i64) {
    c.check(
        "poll_not_ready",
        sys::poll1(server, POLLIN, 0) == Ok((0, 0)),
        "0",
    );
    let r = sys::ppoll1(server, POLLIN, Some(&mut ts(0)), None, 0);
    c.check("ppoll_not_ready", r == Ok((0, 0)), format!("{r:?}"));
    let mut set = fdset(server);
    let r = sys::select(
        server + 1,
        Some(&mut set),
        None,
        Some(&mut timeval {
            tv_sec: 0,
            tv_usec: 0,
        }),
    );
    c.check(
        "select_not_ready",
        r == Ok(0) && set == 0,
        format!("{} set {set:#x}", show(r)),
    );
    let mut set = fdset(server);
    let r = sys::pselect6(server + 1, Some(&mut set), None, Some(&mut ts(0)), 0);
    c.check(
        "pselect6_not_ready",
        r == Ok(0) && set == 0,
        format!("{} set {set:#x}", show(r)),
    );
    if let Ok(ep) = sys::epoll_create() {
        let _ = sys::epoll_add(ep, server, EPOLLIN as u32);
        let r = sys::epoll_wait1(ep, 0, None, 0);
        c.check(
            "epoll_not_ready",
            r.is_ok_and(|(n, _, _)| n == 0),
            format!("{r:?}"),
        );
        let _ = sys::close(ep);
    }
}

/// Timeouts: they expire, and the time left is written back.
fn timeouts(c: &mut Checker, server: i64) {
    let mut t = ts(100);
    let r = sys::ppoll1(server, POLLIN, Some(&mut t), None, 0);
    c.check(
        "ppoll_times_out_left_0",
        r == Ok((0, 0)) && ns(&t) == 0,
        format!("{r:?} left {} ns", ns(&t)),
    );
    let mut t = ts(100);
    let mut set = fdset(server);
    let r = sys::pselect6(server + 1, Some(&mut set), None, Some(&mut t), 0);
    c.check(
        "pselect6_times_out_left_0",
        r == Ok(0) && ns(&t) == 0,
        format!("{} left {} ns", show(r), ns(&t)),
    );
    let mut tv = timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    let mut set = fdset(server);
    let r = sys::select(server + 1, Some(&mut set), None, Some(&mut tv));
    c.check(
        "select_times_out_left_0",
        r == Ok(0) && tv.tv_sec == 0 && tv.tv_usec == 0,
        format!("{} left {}.{:06}", show(r), tv.tv_sec, tv.tv_usec),
    );
    // A microsecond count past a second is normalised, not refused.
    let mut tv = timeval {
        tv_sec: 0,
        tv_usec: 1_050_000,
    };
    let r = sys::select(0, None, None, Some(&mut tv));
    c.check("select_normalises_usec", r == Ok(0), show(r));
    let mut t = ts(0);
    let mut pfd = [pollfd {
        fd: server as i32,
        events: POLLIN,
        revents: 0,
    }];
    // SAFETY: live pollfd and timespec.
    let r = unsafe { sys::ppoll_raw(pfd.as_mut_ptr() as u64, 1, &mut t as *mut _ as u64, 0, 0) };
    c.check(
        "ppoll_zero_timeout_unchanged",
        r == Ok(0) && ns(&t) == 0,
        show(r),
    );
}

fn argument_errors(c: &mut Checker, server: i64) {
    let r = sys::ppoll1(server, POLLIN, Some(&mut ts(0)), Some(0), 4);
    c.expect_errno("ppoll_bad_sigsetsize", r.map(|(n, _)| n), EINVAL);
    let r = sys::ppoll1(server, POLLIN, Some(&mut ts(0)), None, 4);
    c.check(
        "ppoll_no_mask_size_unchecked",
        r == Ok((0, 0)),
        format!("{r:?}"),
    );
    let mut bad = timespec {
        tv_sec: -1,
        tv_nsec: 0,
    };
    let r = sys::ppoll1(server, POLLIN, Some(&mut bad), None, 0);
    c.expect_errno("ppoll_negative_timeout", r.map(|(n, _)| n), EINVAL);
    let mut bad = timespec {
        tv_sec: 0,
        tv_nsec: 1_000_000_000,
    };
    let r = sys::ppoll1(server, POLLIN, Some(&mut bad), None, 0);
    c.expect_errno("ppoll_nsec_out_of_range", r.map(|(n, _)| n), EINVAL);
    let mut pfd = pollfd {
        fd: server as i32,
        events: POLLIN,
        revents: 0,
    };
    // SAFETY: each call has one bad pointer the kernel must refuse.
    unsafe {
        c.expect_errno(
            "ppoll_bad_timeout_pointer",
            sys::ppoll_raw(&mut pfd as *mut _ as u64, 1, UNMAPPED, 0, 0),
            EFAULT,
        );
        c.expect_errno(
            "ppoll_bad_fds_pointer",
            sys::ppoll_raw(UNMAPPED, 1, 0, 0, 0),
            EFAULT,
        );
        let t = ts(0);
        c.expect_errno(
            "ppoll_bad_mask_pointer",
            sys::ppoll_raw(
                &mut pfd as *mut _ as u64,
                1,
                &t as *const _ as u64,
                UNMAPPED,
                SIGSET_SIZE,
            ),
            EFAULT,
        );
        c.expect_errno(
            "poll_too_many_fds",
            image_support::sys(SYS_poll, &[UNMAPPED, 1 << 30, 0]),
            EINVAL,
        );
    }
    let mask = 0u64;
    let pack = SigPack {
        mask: &mask as *const u64 as u64,
        size: 4,
    };
    let mut set = fdset(server);
    let r = sys::pselect6(
        server + 1,
        Some(&mut set),
        None,
        Some(&mut ts(0)),
        pack.addr(),
    );
    c.expect_errno("pselect6_bad_sigsetsize", r, EINVAL);
    let mut set = fdset(server);
    let r = sys::pselect6(server + 1, Some(&mut set), None, Some(&mut ts(0)), UNMAPPED);
    c.expect_errno("pselect6_bad_sig_pointer", r, EFAULT);
    let mut bad = timespec {
        tv_sec: 0,
        tv_nsec: -1,
    };
    let mut set = fdset(server);
    let r = sys::pselect6(server + 1, Some(&mut set), None, Some(&mut bad), 0);
    c.expect_errno("pselect6_negative_nsec", r, EINVAL);
    let mut set = fdset(63);
    let r = sys::select(
        64,
        Some(&mut set),
        None,
        Some(&mut timeval {
            tv_sec: 0,
            tv_usec: 0,
        }),
    );
    c.expect_errno("select_closed_fd", r, EBADF);
    if let Ok(ep) = sys::epoll_create() {
        let r = sys::epoll_wait1(ep, 0, Some(0), 4);
        c.expect_errno("epoll_pwait_bad_sigsetsize", r.map(|(n, _, _)| n), EINVAL);
        // SAFETY: a kernel address the kernel must refuse.
        let r = unsafe { image_support::sys(SYS_epoll_wait, &[ep as u64, sys::KERNEL_ADDR, 1, 0]) };
        c.expect_errno("epoll_wait_bad_events_pointer", r, EFAULT);
        let _ = sys::close(ep);
    }
}

/// SIGUSR1 blocked and pending; the call's mask unblocks it. Nothing is
/// ready: the call ends with EINTR, the handler runs under the call's
/// mask with the old mask saved in its frame, and the old mask is back.
fn masks_interrupt(c: &mut Checker, server: i64) {
    let check = |c: &mut Checker, name: &str, call: &dyn Fn() -> i64| {
        let old = sys::sigmask(SIG_BLOCK, Some(bit(SIGUSR1)));
        let _ = sys::tgkill(sys::gettid(), SIGUSR1);
        let before = runs(SIGUSR1);
        sys::FRAME_MASK.store(0, std::sync::atomic::Ordering::SeqCst);
        let r = call();
        let ran = runs(SIGUSR1) - before;
        let frame = sys::FRAME_MASK.load(std::sync::atomic::Ordering::SeqCst);
        let now = sys::current_mask();
        c.check(
            name,
            r == -EINTR as i64 && ran == 1 && frame & bit(SIGUSR1) != 0 && now & bit(SIGUSR1) != 0,
            format!("returned {r}, handler ran {ran}x, frame mask {frame:#x}, mask after {now:#x}"),
        );
        sys::sigmask(SIG_SETMASK, Some(old));
    };
    let flat = |r: Result<i64, i32>| r.unwrap_or_else(|e| -(e as i64));
    check(c, "ppoll_mask_unblocks_pending_eintr", &|| {
        flat(sys::ppoll1(server, POLLIN, Some(&mut ts(5000)), Some(0), SIGSET_SIZE).map(|(n, _)| n))
    });
    check(c, "ppoll_mask_zero_timeout_eintr", &|| {
        flat(sys::ppoll1(server, POLLIN, Some(&mut ts(0)), Some(0), SIGSET_SIZE).map(|(n, _)| n))
    });
    check(c, "pselect6_mask_unblocks_pending_eintr", &|| {
        let mask = 0u64;
        let pack = SigPack {
            mask: &mask as *const u64 as u64,
            size: SIGSET_SIZE,
        };
        let mut set = fdset(server);
        flat(sys::pselect6(
            server + 1,
            Some(&mut set),
            None,
            Some(&mut ts(5000)),
            pack.addr(),
        ))
    });
    check(c, "epoll_pwait_mask_unblocks_pending_eintr", &|| {
        let Ok(ep) = sys::epoll_create() else {
            return -1;
        };
        let _ = sys::epoll_add(ep, server, EPOLLIN as u32);
        let r = flat(sys::epoll_wait1(ep, 5000, Some(0), SIGSET_SIZE).map(|(n, _, _)| n));
        let _ = sys::close(ep);
        r
    });
    // The mask is in force only during the call: a signal arriving while
    // it waits, from another thread, ends it as well.
    let old = sys::sigmask(SIG_BLOCK, Some(bit(SIGUSR1)));
    let me = sys::gettid();
    let before = runs(SIGUSR1);
    let sender = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        sys::tgkill(me, SIGUSR1)
    });
    let mut t = ts(10_000);
    let r = sys::ppoll1(server, POLLIN, Some(&mut t), Some(0), SIGSET_SIZE);
    let _ = sender.join();
    let now = sys::current_mask();
    let ran = runs(SIGUSR1) - before;
    let left = ns(&t);
    c.check(
        "ppoll_mask_signal_while_waiting",
        r == Err(EINTR) && ran == 1 && now & bit(SIGUSR1) != 0,
        format!("{r:?}, handler ran {ran}x, mask after {now:#x}"),
    );
    c.check(
        "ppoll_eintr_writes_time_left",
        left > 0 && left < 10_000_000_000,
        format!("{left} ns left of 10 s"),
    );
    sys::sigmask(SIG_SETMASK, Some(old));
}

/// One byte waiting: every interface reports it.
fn ready(c: &mut Checker, client: i64, server: i64) {
    let r = sys::poll1(server, POLLIN, 1000);
    c.check(
        "poll_pollin",
        r.is_ok_and(|(n, e)| n == 1 && e & POLLIN != 0),
        format!("{r:?}"),
    );
    let r = sys::poll1(client, POLLOUT, 0);
    c.check(
        "poll_pollout",
        r.is_ok_and(|(n, e)| n == 1 && e & POLLOUT != 0),
        format!("{r:?}"),
    );
    let mut t = ts(5000);
    let r = sys::ppoll1(server, POLLIN, Some(&mut t), None, 0);
    c.check(
        "ppoll_pollin_writes_time_left",
        r.is_ok_and(|(n, e)| n == 1 && e & POLLIN != 0)
            && ns(&t) > 4_000_000_000
            && ns(&t) <= 5_000_000_000,
        format!("{r:?} left {} ns", ns(&t)),
    );
    let (mut rs, mut ws) = (fdset(server), fdset(client));
    let mut tv = timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    let r = sys::select(
        server.max(client) + 1,
        Some(&mut rs),
        Some(&mut ws),
        Some(&mut tv),
    );
    c.check(
        "select_read_and_write",
        r == Ok(2)
            && rs == fdset(server)
            && ws == fdset(client)
            && tv.tv_sec >= 4
            && tv.tv_sec <= 5,
        format!(
            "{} read {rs:#x} write {ws:#x} left {}.{:06}",
            show(r),
            tv.tv_sec,
            tv.tv_usec
        ),
    );
    let mut rs = fdset(server);
    let mut t = ts(5000);
    let r = sys::pselect6(server + 1, Some(&mut rs), None, Some(&mut t), 0);
    c.check(
        "pselect6_read",
        r == Ok(1) && rs == fdset(server) && ns(&t) > 4_000_000_000,
        format!("{} read {rs:#x} left {} ns", show(r), ns(&t)),
    );
    if let Ok(ep) = sys::epoll_create() {
        let _ = sys::epoll_add(ep, server, EPOLLIN as u32);
        let _ = sys::epoll_add(ep, client, EPOLLOUT as u32);
        let mut events = [epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: four live events.
        let r = unsafe {
            image_support::sys(
                SYS_epoll_wait,
                &[ep as u64, events.as_mut_ptr() as u64, 4, 1000],
            )
        };
        let mut seen: Vec<(u64, u32)> = events
            .iter()
            .take(r.unwrap_or(0) as usize)
            .map(|e| (e.u64, e.events))
            .collect();
        seen.sort();
        let mut want = vec![
            (server as u64, EPOLLIN as u32),
            (client as u64, EPOLLOUT as u32),
        ];
        want.sort();
        c.check(
            "epoll_wait_in_and_out",
            r == Ok(2) && seen == want,
            format!("{} {seen:?}", show(r)),
        );
        let r = sys::epoll_wait1(ep, 1000, Some(0), SIGSET_SIZE);
        c.check(
            "epoll_pwait_ready",
            r.is_ok_and(|(n, _, _)| n == 1),
            format!("{r:?}"),
        );
        let _ = sys::close(ep);
    }
}

/// SIGUSR1 blocked and pending, the call's mask unblocks it, but a
/// descriptor is ready (or epoll's timeout is zero): the call returns its
/// count, the old mask is put back at once and the signal stays pending
/// (no handler), to be handled when unblocked.
fn masks_ready(c: &mut Checker, server: i64) {
    let check = |c: &mut Checker, name: &str, want: i64, call: &dyn Fn() -> Result<i64, i32>| {
        let old = sys::sigmask(SIG_BLOCK, Some(bit(SIGUSR1)));
        let _ = sys::tgkill(sys::gettid(), SIGUSR1);
        let before = runs(SIGUSR1);
        let r = call();
        let ran = runs(SIGUSR1) - before;
        let pending = sys::pending();
        let now = sys::current_mask();
        sys::sigmask(SIG_SETMASK, Some(old));
        let later = runs(SIGUSR1) - before;
        c.check(
            name,
            r == Ok(want) && ran == 0 && pending & bit(SIGUSR1) != 0 && now & bit(SIGUSR1) != 0 && later == 1,
            format!("{r:?}, handler ran {ran}x during, pending {pending:#x}, mask after {now:#x}, ran {later}x once unblocked"),
        );
    };
    check(c, "ppoll_ready_keeps_signal_pending", 1, &|| {
        sys::ppoll1(server, POLLIN, Some(&mut ts(5000)), Some(0), SIGSET_SIZE).map(|(n, _)| n)
    });
    check(c, "pselect6_ready_keeps_signal_pending", 1, &|| {
        let mask = 0u64;
        let pack = SigPack {
            mask: &mask as *const u64 as u64,
            size: SIGSET_SIZE,
        };
        let mut set = fdset(server);
        sys::pselect6(
            server + 1,
            Some(&mut set),
            None,
            Some(&mut ts(5000)),
            pack.addr(),
        )
    });
    check(c, "epoll_pwait_ready_keeps_signal_pending", 1, &|| {
        let ep = sys::epoll_create()?;
        let _ = sys::epoll_add(ep, server, EPOLLIN as u32);
        let r = sys::epoll_wait1(ep, 5000, Some(0), SIGSET_SIZE).map(|(n, _, _)| n);
        let _ = sys::close(ep);
        r
    });
    check(
        c,
        "epoll_pwait_zero_timeout_keeps_signal_pending",
        0,
        &|| {
            let ep = sys::epoll_create()?;
            let r = sys::epoll_wait1(ep, 0, Some(0), SIGSET_SIZE).map(|(n, _, _)| n);
            let _ = sys::close(ep);
            r
        },
    );
}
