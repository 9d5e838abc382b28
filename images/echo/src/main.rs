//! `echo [PORT]`: a TCP echo server on `std::net` (default port 7777), for
//! the network tests. Also runs on the host (`cargo run -p image-echo`).
//!
//! Contract (the network tests rely on it exactly):
//!
//! - Once listening, prints `echo: listening on 0.0.0.0:PORT`.
//! - One thread per client (named `echo-client`): every byte read is
//!   written back until the client's EOF, then the write half is shut
//!   down and `echo: client ADDR done, N bytes` is printed (N bytes
//!   echoed). A connection that fails prints `echo: client ADDR failed
//!   after N bytes: ERROR` instead.
//! - Signals: main blocks SIGUSR2 and the flood's kinds (SIGUSR1,
//!   SIGRTMIN+1, SIGRTMIN+2, SIGURG, SIGWINCH; see
//!   [`image_support::flood`]) before any thread starts, so every thread
//!   inherits the block. Only client threads register as user threads,
//!   unblocking the kinds (never SIGUSR2) while they serve: a handler
//!   runs only on a client thread, interrupting its echo, and with no
//!   client connected the signals wait, pending.
//! - SIGUSR1 is one of the flood's kinds: its handler (`SA_RESTART`) only
//!   counts. After a client line, when the SIGUSR1 count grew since the
//!   last report, that client's thread prints `echo: SIGUSR1 handled N
//!   times` (the running total: SIGUSR1 from outside and the flood's own
//!   alike). Standard signals merge while pending: N is at most the
//!   number sent.
//! - SIGUSR2: a flood, as `target`'s. The `echo-flood` thread takes it
//!   with `rt_sigtimedwait`, sends the process 10,000 process-directed
//!   signals cycling the kinds (held in the sender, so the kernel must
//!   pick a client thread for each), waits (at most 10 s) until every
//!   real-time one was handled, and prints `echo: flood done sent N
//!   handled M on-user-threads K rt-sent A rt-handled B std-sent C
//!   std-handled D` (K: handler runs on a registered thread), then `echo:
//!   flood handler tids T1,T2,... untracked U` (the distinct tids the
//!   handlers ran on during the flood; U runs found no room in the list).
//!   A failed send is reported first as `echo: flood send errors E (first
//!   ERRNO)`. Flood while a client is connected: with none, B stays
//!   below A.
//! - A bad PORT is a usage error (exit status 2).

use image_support::flood;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::sync::Mutex;

const DEFAULT_PORT: u16 = 7777;
const BUFFER: usize = 64 * 1024;

/// The SIGUSR1 count last printed.
static REPORTED: Mutex<u64> = Mutex::new(0);

/// Blocks SIGUSR2 and the flood's kinds in main (inherited by every
/// thread), installs the flood's handlers and starts the `echo-flood`
/// thread (which keeps both blocked).
fn start_flood_thread() -> Result<(), String> {
    let command = flood::bit(libc::SIGUSR2);
    flood::mask(libc::SIG_BLOCK, command | flood::kind_set())
        .map_err(|e| format!("rt_sigprocmask: {}", image_support::errno_name(e)))?;
    flood::install()?;
    std::thread::Builder::new()
        .name("echo-flood".into())
        .spawn(move || {
            loop {
                if flood::wait_signal(command) == libc::SIGUSR2 {
                    flood::run("echo", true);
                }
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the flood thread: {e}"))
}

fn main() -> ExitCode {
    let port = match image_support::port_argument("echo", DEFAULT_PORT) {
        Ok(port) => port,
        Err(code) => return code,
    };
    if let Err(e) = start_flood_thread() {
        eprintln!("echo: {e}");
        return ExitCode::from(1);
    }
    image_support::serve_forever("echo", port, "echo-client", serve)
}

/// Echoes until EOF; returns the byte count or the error with the count.
fn echo(stream: &mut TcpStream) -> Result<u64, (u64, std::io::Error)> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err((total, e)),
        };
        // write_all retries Interrupted itself.
        if let Err(e) = stream.write_all(&buf[..n]) {
            return Err((total, e));
        }
        total += n as u64;
    }
}

fn serve(mut stream: TcpStream) {
    // A full registry leaves this thread's kinds blocked: it echoes all
    // the same, and runs no handler.
    let _user = flood::UserThread::enter();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    match echo(&mut stream) {
        Ok(n) => {
            let _ = stream.shutdown(Shutdown::Write);
            println!("echo: client {peer} done, {n} bytes");
        }
        Err((n, e)) => println!("echo: client {peer} failed after {n} bytes: {e}"),
    }
    let handled = flood::handled(libc::SIGUSR1);
    let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    if handled > *reported {
        *reported = handled;
        println!("echo: SIGUSR1 handled {handled} times");
    }
}
