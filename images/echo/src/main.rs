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
//! - SIGUSR1 has a handler (`SA_RESTART`) that only counts; after a client
//!   line, when the count grew since the last report, that client's thread
//!   prints `echo: SIGUSR1 handled N times` (the running total).
//!   Standard signals merge while pending: N is at most the number sent.
//! - A bad PORT is a usage error (exit status 2).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const DEFAULT_PORT: u16 = 7777;
const BUFFER: usize = 64 * 1024;

static SIGUSR1_HANDLED: AtomicU64 = AtomicU64::new(0);
/// The SIGUSR1 count last printed.
static REPORTED: Mutex<u64> = Mutex::new(0);

extern "C" fn on_sigusr1(_signal: libc::c_int) {
    SIGUSR1_HANDLED.fetch_add(1, Ordering::Relaxed);
}

fn install_sigusr1_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler only touches an
    // atomic (async-signal-safe).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let port = match image_support::port_argument("echo", DEFAULT_PORT) {
        Ok(port) => port,
        Err(code) => return code,
    };
    if let Err(e) = install_sigusr1_handler() {
        eprintln!("echo: cannot install the SIGUSR1 handler: {e}");
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
    let handled = SIGUSR1_HANDLED.load(Ordering::Relaxed);
    let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    if handled > *reported {
        *reported = handled;
        println!("echo: SIGUSR1 handled {handled} times");
    }
}
