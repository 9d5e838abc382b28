//! Blocking socket calls and a handled signal: with `SA_RESTART`, accept,
//! recv and connect start again and finish when their event comes;
//! without it (or with a socket timeout for recv) they fail with EINTR.
//! poll, select and epoll_wait fail with EINTR even with `SA_RESTART`.
//!
//! The main thread makes the blocking call; a helper thread sends it
//! SIGUSR1 every [`INTERVAL`] until the call returned, and after
//! `complete_after` signals makes the event that ends a restarted call.

use crate::Env;
use crate::sys::{self, bit, fdset, runs};
use image_support::{Checker, show};
use libc::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread::JoinHandle;
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(150);
/// Signals before a helper gives up waiting for an EINTR (and completes
/// the call, so a kernel that restarts wrongly fails instead of hanging).
const GIVE_UP: usize = 40;
/// Signals before the completing event of a restarted call.
const RESTARTS: usize = 3;

/// Runs `call` on this thread while a helper pesters it with SIGUSR1 and,
/// after `complete_after` signals, runs `complete`. Returns the call's
/// result and the handler runs it saw.
fn interrupted<T>(
    complete_after: usize,
    complete: impl FnOnce() + Send + 'static,
    call: impl FnOnce() -> T,
) -> (T, u32) {
    let me = sys::gettid();
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let before = runs(SIGUSR1);
    let helper: JoinHandle<()> = std::thread::spawn(move || {
        sys::sigmask(SIG_BLOCK, Some(bit(SIGUSR1)));
        let mut complete = Some(complete);
        for sent in 1.. {
            std::thread::sleep(INTERVAL);
            if flag.load(SeqCst) {
                break;
            }
            let _ = sys::tgkill(me, SIGUSR1);
            if sent >= complete_after.min(GIVE_UP)
                && let Some(f) = complete.take()
            {
                f();
            }
            if sent > GIVE_UP * 2 {
                break;
            }
        }
    });
    let r = call();
    done.store(true, SeqCst);
    let _ = helper.join();
    (r, runs(SIGUSR1) - before)
}

pub fn run(c: &mut Checker, env: &Env) {
    sys::sigmask(SIG_UNBLOCK, Some(bit(SIGUSR1)));
    recv_calls(c, env);
    accept_calls(c, env);
    connect_calls(c, env);
    waits(c, env);
}

fn recv_calls(c: &mut Checker, env: &Env) {
    let Some((client, server)) = crate::checked_pair(c, env, "intr_pair") else {
        return;
    };
    // (check, SA_RESTART?, SO_RCVTIMEO in ms (0: none), signals before
    // the byte comes, what recv must give).
    let cases = [
        ("recv_sa_restart_restarts", true, 0, RESTARTS, Ok(1)),
        ("recv_no_sa_restart_eintr", false, 0, GIVE_UP, Err(EINTR)),
        (
            "recv_with_timeout_eintr_despite_sa_restart",
            true,
            20_000,
            GIVE_UP,
            Err(EINTR),
        ),
    ];
    for (name, restart, timeout_ms, complete_after, want) in cases {
        sys::handle(SIGUSR1, if restart { SA_RESTART } else { 0 });
        if timeout_ms > 0 {
            let _ = sys::set_timeout(server, SO_RCVTIMEO, timeout_ms);
        }
        let mut buf = [0u8; 8];
        let (r, ran) = interrupted(
            complete_after,
            move || {
                let _ = sys::send(client, b"z", 0);
            },
            || sys::recv(server, &mut buf, 0),
        );
        let right_byte = want.is_err() || buf[0] == b'z';
        c.check(
            name,
            r == want && right_byte && ran >= 1,
            format!("{} after {ran} handler runs", show(r)),
        );
        // What a give-up sent, so the next case starts empty.
        drain(server);
    }
    let _ = sys::close(client);
    let _ = sys::close(server);
}

/// Reads whatever a give-up left behind.
fn drain(fd: i64) {
    let mut buf = [0u8; 64];
    while sys::recv(fd, &mut buf, MSG_DONTWAIT).is_ok_and(|n| n > 0) {}
}

/// Connects to `to` from a helper thread (the event that ends an accept),
/// keeping the socket open until `keep` is dropped.
fn connector(
    to: [u8; 16],
    keep: Arc<std::sync::Mutex<Vec<i64>>>,
) -> impl FnOnce() + Send + 'static {
    move || {
        if let Ok(fd) = sys::tcp() {
            let _ = sys::connect(fd, &to);
            keep.lock().unwrap_or_else(|p| p.into_inner()).push(fd);
        }
    }
}

fn accept_calls(c: &mut Checker, env: &Env) {
    let keep = Arc::new(std::sync::Mutex::new(Vec::new()));
    sys::handle(SIGUSR1, SA_RESTART);
    let listener = env.listener;
    let (r, ran) = interrupted(RESTARTS, connector(env.peer, Arc::clone(&keep)), || {
        sys::accept(listener, 0)
    });
    c.check(
        "accept_sa_restart_restarts",
        r.is_ok() && ran >= 1,
        format!("{} after {ran} handler runs", show(r.map(|(fd, _)| fd))),
    );
    if let Ok((fd, _)) = r {
        let _ = sys::close(fd);
    }
    sys::handle(SIGUSR1, 0);
    let (r, ran) = interrupted(GIVE_UP, connector(env.peer, Arc::clone(&keep)), || {
        sys::accept(listener, 0)
    });
    c.check(
        "accept_no_sa_restart_eintr",
        r.is_err_and(|e| e == EINTR) && ran >= 1,
        format!("{} after {ran} handler runs", show(r.map(|(fd, _)| fd))),
    );
    if let Ok((fd, _)) = r {
        let _ = sys::close(fd);
    }
    for fd in keep.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = sys::close(fd);
    }
}

/// A native address whose connect hangs: a listener with backlog 0 whose
/// queue one connection fills. Returns the address, the listener and the
/// filler.
fn native_blackhole() -> Option<([u8; 16], i64, i64)> {
    let l = sys::tcp().ok()?;
    sys::bind(l, &sys::sin([127, 0, 0, 1], 0)).ok()?;
    sys::listen(l, 0).ok()?;
    let (a, _) = sys::name(l, false, 16).ok()?;
    let filler = sys::tcp().ok()?;
    sys::connect(filler, &a).ok()?;
    Some((a, l, filler))
}

fn connect_calls(c: &mut Checker, env: &Env) {
    let native = if env.blackhole.is_none() {
        native_blackhole()
    } else {
        None
    };
    let Some(hole) = env.blackhole.or(native.map(|(a, _, _)| a)) else {
        c.check("connect_blackhole", false, "no address whose connect hangs");
        return;
    };
    sys::handle(SIGUSR1, 0);
    let Ok(fd) = sys::tcp() else { return };
    let (r, ran) = interrupted(GIVE_UP, || {}, || sys::connect(fd, &hole));
    c.check(
        "connect_no_sa_restart_eintr",
        r == Err(EINTR) && ran >= 1,
        format!("{} after {ran} handler runs", show(r)),
    );
    let _ = sys::close(fd);
    // With SA_RESTART the connect waits on; natively the listener's queue
    // is emptied after a few signals and the retried SYN gets through.
    if let Some((_, l, filler)) = native {
        sys::handle(SIGUSR1, SA_RESTART);
        if let Ok(fd) = sys::tcp() {
            let (r, ran) = interrupted(
                RESTARTS,
                move || {
                    if let Ok((fd, _)) = sys::accept(l, 0) {
                        let _ = sys::close(fd);
                    }
                },
                || sys::connect(fd, &hole),
            );
            c.check(
                "connect_sa_restart_restarts",
                r == Ok(0) && ran >= 1,
                format!("{} after {ran} handler runs", show(r)),
            );
            let _ = sys::close(fd);
        }
        let _ = sys::close(filler);
        let _ = sys::close(l);
    }
}

/// poll, select and epoll_wait are never restarted after a handler.
fn waits(c: &mut Checker, env: &Env) {
    let Some((client, server)) = crate::checked_pair(c, env, "waits_pair") else {
        return;
    };
    sys::handle(SIGUSR1, SA_RESTART);
    let wake = move || {
        let _ = sys::send(client, b"w", 0);
    };
    let (r, ran) = interrupted(GIVE_UP, wake, || sys::poll1(server, POLLIN, -1));
    c.check(
        "poll_sa_restart_still_eintr",
        r == Err(EINTR) && ran >= 1,
        format!("{r:?} after {ran} handler runs"),
    );
    drain(server);
    let (r, ran) = interrupted(GIVE_UP, wake, || {
        let mut set = fdset(server);
        sys::select(server + 1, Some(&mut set), None, None)
    });
    c.check(
        "select_sa_restart_still_eintr",
        r == Err(EINTR) && ran >= 1,
        format!("{} after {ran} handler runs", show(r)),
    );
    drain(server);
    if let Ok(ep) = sys::epoll_create() {
        let _ = sys::epoll_add(ep, server, EPOLLIN as u32);
        let (r, ran) = interrupted(GIVE_UP, wake, || sys::epoll_wait1(ep, -1, None, 0));
        c.check(
            "epoll_wait_sa_restart_still_eintr",
            r == Err(EINTR) && ran >= 1,
            format!("{r:?} after {ran} handler runs"),
        );
        let _ = sys::close(ep);
    }
    let _ = sys::close(client);
    let _ = sys::close(server);
}
