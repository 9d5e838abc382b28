//! Delivery in a single-threaded process: siginfo, pending and blocked
//! signals, the handler's mask, `SA_NODEFER`, `SA_RESETHAND`, `SIG_IGN`
//! and the default-ignore signals.
//!
//! A signal the calling thread sends itself while it does not block it is
//! handled before the sending call returns (POSIX requires it for `kill`
//! too when no other thread could take it), so the checks read the record
//! right after the call.

use crate::abi::{
    bit, block, current_mask, getpid, gettid, handler_of, install, kill, names, pending,
    raise_here, raw_sigaction, restore, set_disposition, set_mask, unblock,
};
use crate::handlers::{REC, REENTER, on_signal};
use image_support::{Checker, SysResult, show};
use libc::{SIGCHLD, SIGURG, SIGUSR1, SIGUSR2, SIGWINCH};
use std::sync::atomic::Ordering::SeqCst;

pub fn run(c: &mut Checker) {
    siginfo(c);
    pending_while_blocked(c);
    sigaction_reads_back(c);
    handler_mask(c);
    nodefer(c);
    resethand(c);
    ignored(c);
    default_ignore(c);
}

fn siginfo(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, 0, 0);
    siginfo_of(
        c,
        "siginfo_tgkill",
        || raise_here(SIGUSR1),
        libc::SI_TKILL,
        "SI_TKILL",
    );
    siginfo_of(
        c,
        "siginfo_kill",
        || kill(getpid(), SIGUSR1),
        libc::SI_USER,
        "SI_USER",
    );
    restore(SIGUSR1, &old);
}

/// `send` delivers SIGUSR1 to this thread before it returns, with
/// `si_code` `want_code` and our pid.
fn siginfo_of(c: &mut Checker, name: &str, send: fn() -> SysResult, want_code: i32, code: &str) {
    let (pid, tid) = (getpid(), gettid());
    REC.reset();
    let r = send();
    let (n, signo, got_code) = (REC.count(), REC.signo.load(SeqCst), REC.code.load(SeqCst));
    let (si_pid, in_tid) = (REC.pid.load(SeqCst), REC.tid.load(SeqCst));
    c.check(
        name,
        r == Ok(0)
            && n == 1
            && signo == SIGUSR1
            && got_code == want_code
            && si_pid == pid
            && in_tid == tid,
        format!(
            "send {}; handled {n} time(s) before the call returned; si_signo {signo}, \
             si_code {got_code}, si_pid {si_pid}, handler tid {in_tid} \
             (expected 1, {SIGUSR1}, {want_code} ({code}), {pid}, {tid})",
            show(r)
        ),
    );
}

fn pending_while_blocked(c: &mut Checker) {
    let old = install(SIGUSR1, on_signal, 0, 0);
    for (name, to_process) in [
        ("blocked_tgkill_stays_pending", false),
        ("blocked_kill_stays_pending", true),
    ] {
        REC.reset();
        let mask = block(bit(SIGUSR1));
        let r = if to_process {
            kill(getpid(), SIGUSR1)
        } else {
            raise_here(SIGUSR1)
        };
        let (handled_blocked, pending_blocked) = (REC.count(), pending());
        unblock(bit(SIGUSR1));
        let (handled_after, pending_after) = (REC.count(), pending());
        set_mask(mask);
        c.check(
            name,
            r == Ok(0)
                && handled_blocked == 0
                && pending_blocked & bit(SIGUSR1) != 0
                && handled_after == 1
                && pending_after & bit(SIGUSR1) == 0,
            format!(
                "blocked: handled {handled_blocked}, pending {}; after unblocking: handled \
                 {handled_after}, pending {} (expected 0, SIGUSR1 pending; 1, not pending)",
                names(pending_blocked),
                names(pending_after)
            ),
        );
    }
    restore(SIGUSR1, &old);
}

fn sigaction_reads_back(c: &mut Checker) {
    let mask = bit(SIGUSR2) | bit(SIGWINCH);
    let old = install(SIGUSR1, on_signal, libc::SA_RESTART, mask);
    let got = raw_sigaction(SIGUSR1, None);
    restore(SIGUSR1, &old);
    let want_flags = (libc::SA_SIGINFO | libc::SA_RESTART) as u64;
    let ok = got.is_ok_and(|a| {
        a.handler == on_signal as *const () as u64
            && a.flags & want_flags == want_flags
            && a.mask == mask
    });
    c.check(
        "sigaction_reads_back",
        ok,
        format!(
            "{got:x?} (expected handler {:#x}, flags with SA_SIGINFO|SA_RESTART, mask {mask:#x})",
            on_signal as *const () as u64
        ),
    );
}

fn handler_mask(c: &mut Checker) {
    let extra = bit(SIGUSR2) | bit(SIGWINCH);
    let old = install(SIGUSR1, on_signal, 0, extra);
    REC.reset();
    let before = current_mask();
    let r = raise_here(SIGUSR1);
    let (inside, after) = (REC.mask.load(SeqCst), current_mask());
    restore(SIGUSR1, &old);
    let want_inside = before | extra | bit(SIGUSR1);
    c.check(
        "handler_mask_in_force",
        r == Ok(0) && REC.count() == 1 && inside == want_inside && after == before,
        format!(
            "mask before {}, in the handler {}, after {} (expected {} inside, the old mask after)",
            names(before),
            names(inside),
            names(after),
            names(want_inside)
        ),
    );
}

fn nodefer(c: &mut Checker) {
    for (name, flags, want_depth) in [
        ("sa_nodefer_nests", libc::SA_NODEFER, 2),
        ("without_nodefer_delivery_waits", 0, 1),
    ] {
        let old = install(SIGUSR1, on_signal, flags, 0);
        REC.reset();
        REENTER.store(true, SeqCst);
        let r = raise_here(SIGUSR1);
        let (n, depth, mask) = (
            REC.count(),
            REC.max_depth.load(SeqCst),
            REC.mask.load(SeqCst),
        );
        restore(SIGUSR1, &old);
        // The last handler to record its mask: the nested one with
        // SA_NODEFER (SIGUSR1 open), the second delivery without it.
        let blocked_inside = mask & bit(SIGUSR1) != 0;
        c.check(
            name,
            r == Ok(0) && n == 2 && depth == want_depth && blocked_inside == (want_depth == 1),
            format!(
                "a handler that raises its own signal once: {n} deliveries, at most {depth} \
                 nested, SIGUSR1 {} inside (expected 2, {want_depth}, {})",
                if blocked_inside { "blocked" } else { "open" },
                if want_depth == 1 { "blocked" } else { "open" }
            ),
        );
    }
}

fn resethand(c: &mut Checker) {
    let old = install(SIGURG, on_signal, libc::SA_RESETHAND, 0);
    REC.reset();
    let first = raise_here(SIGURG);
    let n1 = REC.count();
    let after = handler_of(SIGURG);
    let second = raise_here(SIGURG);
    let n2 = REC.count();
    restore(SIGURG, &old);
    c.check(
        "sa_resethand_restores_default",
        first == Ok(0) && second == Ok(0) && n1 == 1 && n2 == 1 && after == Some(0),
        format!(
            "first SIGURG handled {n1} time(s); handler then {after:?} (expected Some(0), SIG_DFL); \
             second SIGURG: {} more (expected 0, the default ignores it)",
            n2 - n1
        ),
    );
}

fn ignored(c: &mut Checker) {
    let sig = SIGUSR2;
    let old = set_disposition(sig, libc::SIG_IGN);
    let r = raise_here(sig);
    let p = pending();
    c.check(
        "sig_ign_discards_unblocked",
        r == Ok(0) && p & bit(sig) == 0,
        format!(
            "sent {}; pending {} (expected SIGUSR2 not pending)",
            show(r),
            names(p)
        ),
    );

    let mask = block(bit(sig));
    let r = raise_here(sig);
    unblock(bit(sig));
    let p = pending();
    set_mask(mask);
    c.check(
        "sig_ign_discards_at_unblock",
        r == Ok(0) && p & bit(sig) == 0,
        format!(
            "sent while blocked {}; after unblocking pending {} (expected not pending)",
            show(r),
            names(p)
        ),
    );

    // A pending signal is discarded when its action becomes SIG_IGN.
    install(sig, on_signal, 0, 0);
    REC.reset();
    let mask = block(bit(sig));
    let r = raise_here(sig);
    let p_handler = pending();
    set_disposition(sig, libc::SIG_IGN);
    let p_ignored = pending();
    unblock(bit(sig));
    set_mask(mask);
    c.check(
        "sig_ign_flushes_pending",
        r == Ok(0) && p_handler & bit(sig) != 0 && p_ignored & bit(sig) == 0 && REC.count() == 0,
        format!(
            "pending with a handler {}, after SIG_IGN {}, handled {} (expected pending, then \
             not, never handled)",
            names(p_handler),
            names(p_ignored),
            REC.count()
        ),
    );
    restore(sig, &old);
}

fn default_ignore(c: &mut Checker) {
    for (name, sig) in [
        ("default_ignore_sigchld", SIGCHLD),
        ("default_ignore_sigurg", SIGURG),
        ("default_ignore_sigwinch", SIGWINCH),
    ] {
        let old = set_disposition(sig, libc::SIG_DFL);
        let mask = unblock(bit(sig));
        let r = raise_here(sig);
        let p = pending();
        set_mask(mask);
        restore(sig, &old);
        c.check(
            name,
            r == Ok(0) && p & bit(sig) == 0,
            format!(
                "signal {sig} with SIG_DFL: sent {}, the process lives on, pending {} \
                 (expected not pending)",
                show(r),
                names(p)
            ),
        );
    }
}
