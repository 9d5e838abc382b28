//! `netcalls`: the Linux socket system-call layer, checked from user mode
//! with raw system calls. Each check prints `ok   name: detail` or
//! `FAIL name: detail`; the last line is `netcalls: all N checks passed`
//! (exit 0) or the failures (exit 1). Every expectation is Linux's own
//! behaviour: the image runs natively on Linux as well as in Spindle.
//!
//! Connections go to the image's own listener through `--peer`: natively
//! 127.0.0.1 straight to it; in Spindle (no loopback interface) through
//! the host, e.g. QEMU user networking forwarding a host port back to the
//! listening port, with `--peer 10.0.2.2:HOSTPORT`. `--closed` names an
//! address where nothing listens (natively a port just freed);
//! `--blackhole` one whose connect never completes (natively a listener
//! whose backlog is full; in Spindle an address nobody answers ARP for).
//!
//! The checks:
//! - `errors.rs`: `socket`, `bind`, `listen`, `accept`, `connect`, `recv`,
//!   `send`, `shutdown`, `getsockopt`/`setsockopt`, UDP and descriptor
//!   errno values, UDP `connect(AF_UNSPEC)`, an unroutable send, bad
//!   pointers (EFAULT) and iovec counts;
//! - `stream.rs`: a TCP connection: names, options, readv/writev,
//!   sendmsg/recvmsg with several iovecs, MSG_PEEK, FIONREAD, SHUT_WR and
//!   end of stream, EPIPE with SIGPIPE (none with MSG_NOSIGNAL),
//!   O_NONBLOCK (EAGAIN), non-blocking connect (EINPROGRESS, writable,
//!   SO_ERROR);
//! - `ready.rs`: select, pselect6, poll, ppoll and epoll readiness on a
//!   socket, timeouts written back, the signal masks of ppoll, pselect6
//!   and epoll_pwait (the handler runs under the call's mask, the old mask
//!   is back after it; a call that finds a descriptor ready leaves the
//!   signal pending), sigsetsize and timeout errors;
//! - `intr.rs`: blocking accept, recv and connect interrupted by a
//!   handler: restarted with SA_RESTART, EINTR without it (and with a
//!   socket timeout); poll, select and epoll_wait give EINTR either way.

mod errors;
mod intr;
mod ready;
mod stream;
mod sys;

use image_support::{Args, Checker, usage_error};
use std::process::ExitCode;

const USAGE: &str = "usage: netcalls [--listen PORT] [--peer A.B.C.D:PORT] \
                     [--closed A.B.C.D:PORT] [--blackhole A.B.C.D:PORT]";

/// Where the checks connect.
pub struct Env {
    /// A blocking TCP listener on 0.0.0.0 (backlog 8) and its port.
    pub listener: i64,
    pub port: u16,
    /// The address that reaches `listener`.
    pub peer: [u8; 16],
    /// An address where nothing listens.
    pub closed: [u8; 16],
    /// An address whose connect hangs (None: build one natively).
    pub blackhole: Option<[u8; 16]>,
}

fn parse_addr(text: &str) -> Option<[u8; 16]> {
    let (ip, port) = text.split_once(':')?;
    let octets: Vec<u8> = ip
        .split('.')
        .map(|o| o.parse().ok())
        .collect::<Option<_>>()?;
    let ip: [u8; 4] = octets.try_into().ok()?;
    Some(sys::sin(ip, port.parse().ok()?))
}

fn take_addr(args: &mut Args, name: &str) -> Result<Option<[u8; 16]>, ExitCode> {
    match args.take::<String>(name) {
        Ok(None) => Ok(None),
        Ok(Some(t)) => parse_addr(&t)
            .map(Some)
            .ok_or_else(|| usage_error("netcalls", USAGE)),
        Err(_) => Err(usage_error("netcalls", USAGE)),
    }
}

/// A TCP port on 127.0.0.1 nothing listens on (natively): one bound and
/// freed again.
fn free_port() -> u16 {
    let Ok(fd) = sys::tcp() else { return 1 };
    let _ = sys::bind(fd, &sys::sin([127, 0, 0, 1], 0));
    let port = sys::name(fd, false, 16).map_or(1, |(a, _)| sys::parts(&a).2);
    let _ = sys::close(fd);
    port
}

fn setup(args: &mut Args) -> Result<Env, ExitCode> {
    let listen: u16 = match args.take("--listen") {
        Ok(p) => p.unwrap_or(0),
        Err(_) => return Err(usage_error("netcalls", USAGE)),
    };
    let peer = take_addr(args, "--peer")?;
    let closed = take_addr(args, "--closed")?;
    let blackhole = take_addr(args, "--blackhole")?;
    if !args.rest().is_empty() {
        return Err(usage_error("netcalls", USAGE));
    }
    let fail = |what: &str, e: i32| {
        println!(
            "netcalls: cannot listen: {what}: {}",
            image_support::errno_name(e)
        );
        ExitCode::from(1)
    };
    let listener = sys::tcp().map_err(|e| fail("socket", e))?;
    sys::setint(listener, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
        .map_err(|e| fail("SO_REUSEADDR", e))?;
    sys::bind(listener, &sys::sin([0; 4], listen)).map_err(|e| fail("bind", e))?;
    sys::listen(listener, 8).map_err(|e| fail("listen", e))?;
    let port = sys::name(listener, false, 16)
        .map(|(a, _)| sys::parts(&a).2)
        .map_err(|e| fail("getsockname", e))?;
    println!("netcalls: listening on 0.0.0.0:{port}");
    Ok(Env {
        listener,
        port,
        peer: peer.unwrap_or(sys::sin([127, 0, 0, 1], port)),
        closed: closed.unwrap_or_else(|| sys::sin([127, 0, 0, 1], free_port())),
        blackhole,
    })
}

/// A connected pair through the listener: (client, accepted server side).
pub fn pair(env: &Env) -> Result<(i64, i64), String> {
    let client = sys::tcp().map_err(|e| format!("socket: {}", image_support::errno_name(e)))?;
    if let Err(e) = sys::connect(client, &env.peer) {
        let _ = sys::close(client);
        return Err(format!(
            "connect to {}: {}",
            sys::show_addr(&env.peer),
            image_support::errno_name(e)
        ));
    }
    match sys::accept(env.listener, 0) {
        Ok((server, _)) => Ok((client, server)),
        Err(e) => {
            let _ = sys::close(client);
            Err(format!("accept: {}", image_support::errno_name(e)))
        }
    }
}

/// `pair`, or a failed check `name` saying why (the caller skips what
/// needed the pair).
pub fn checked_pair(c: &mut Checker, env: &Env, name: &str) -> Option<(i64, i64)> {
    pair(env).map_err(|e| c.check(name, false, e)).ok()
}

fn main() -> ExitCode {
    let mut args = Args::from_env();
    let env = match setup(&mut args) {
        Ok(env) => env,
        Err(code) => return code,
    };
    // A thread created later inherits the main thread's mask: nothing is
    // blocked here, and SIGPIPE must reach its handler, not end us.
    sys::sigmask(libc::SIG_SETMASK, Some(0));
    sys::handle(libc::SIGPIPE, 0);
    let mut c = Checker::new("netcalls");
    let start = std::time::Instant::now();
    errors::run(&mut c, &env);
    stream::run(&mut c, &env);
    ready::run(&mut c, &env);
    intr::run(&mut c, &env);
    println!("netcalls: checks took {} ms", start.elapsed().as_millis());
    c.finish()
}
