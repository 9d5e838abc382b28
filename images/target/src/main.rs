//! `target`: a long-lived process for the control-channel tests
//! (`docs/control-channel.md`): something to list, stop, run, stack-trace,
//! dump and signal. Also runs on the host.
//!
//! Contract (the control-channel tests rely on it exactly):
//!
//! - Three user threads besides main, named with `std::thread::Builder`:
//!   - `spinner`: busy in [`spin_forever`], incrementing an atomic;
//!   - `pauser`: blocked in `pause` inside [`wait_in_pause`] (a loop);
//!   - `sleeper`: blocked in a raw `FUTEX_WAIT` on a word that never
//!     changes inside [`wait_in_futex`] (a loop).
//!
//!   The system calls are made by inline `syscall` instructions in those
//!   functions, so a blocked thread's `rip` lies in the named function.
//! - Once they run, main prints `target: ready pid P`.
//! - SIGUSR2 and SIGTERM are blocked in every thread: main takes them with
//!   `rt_sigtimedwait` in [`image_support::flood::wait_signal`], so they
//!   are effectively process-directed to main only.
//! - SIGUSR2: a flood ([`image_support::flood`]). Main sends the process
//!   10,000 process-directed signals with `kill(getpid(), ...)`, cycling
//!   SIGUSR1, SIGRTMIN+1, SIGRTMIN+2, SIGURG and SIGWINCH (SIGRTMIN is
//!   libc's, 35 with musl). Their `SA_SIGINFO` handlers count deliveries
//!   per kind and whether `gettid()` is one of the four user threads. Main
//!   waits (at most 10 s) until every queued real-time signal has been
//!   handled, then prints `target: flood done sent N handled M
//!   on-user-threads K rt-sent A rt-handled B std-sent C std-handled D`
//!   (one line), and waits again. Real-time signals queue, so B must equal
//!   A; standard signals merge while pending, so D may be below C. K
//!   equals M when every handler ran on a user thread. A send that fails
//!   (after 1 s of retrying EAGAIN) is printed first as `target: flood
//!   send errors E (first ERRNO)` and not counted as sent.
//! - SIGTERM: prints `target: bye` and exits with status 0.

use image_support::{errno_name, flood};
use std::arch::asm;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// Counted by [`spin_forever`].
static SPINS: AtomicU64 = AtomicU64::new(0);
/// The futex word [`wait_in_futex`] waits on; never changes.
static NEVER: AtomicU32 = AtomicU32::new(0);

/// A raw system call with up to four arguments, inlined into its caller
/// so the `syscall` instruction (and a blocked thread's `rip`) lies there.
///
/// # Safety
/// As for any system call: the caller answers for what it does with
/// memory.
#[inline(always)]
unsafe fn syscall4(nr: i64, a: u64, b: u64, c: u64, d: u64) -> i64 {
    let ret: i64;
    // SAFETY: the Linux x86_64 system-call ABI; see the function's contract.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a, in("rsi") b, in("rdx") c, in("r10") d,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The spinner's life: an endless busy loop.
#[inline(never)]
fn spin_forever() -> ! {
    loop {
        SPINS.fetch_add(1, Relaxed);
    }
}

/// The pauser's life: `pause` again and again (it returns after each
/// handled signal).
#[inline(never)]
fn wait_in_pause() -> ! {
    loop {
        // SAFETY: pause touches no memory.
        unsafe { syscall4(libc::SYS_pause, 0, 0, 0, 0) };
    }
}

/// The sleeper's life: `FUTEX_WAIT` on [`NEVER`], which stays 0 (a wait
/// ends only by a signal or spuriously, and is made again).
#[inline(never)]
fn wait_in_futex() -> ! {
    loop {
        // SAFETY: NEVER is a live static word; FUTEX_WAIT only reads it.
        unsafe {
            syscall4(
                libc::SYS_futex,
                NEVER.as_ptr() as u64,
                (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64,
                0,
                0,
            )
        };
    }
}

/// Registers the calling thread as a user thread of the flood; exits
/// the process when it cannot.
fn user_thread(name: &str) -> flood::UserThread {
    flood::UserThread::enter().unwrap_or_else(|| {
        println!("target: cannot register {name} as a user thread");
        std::process::exit(1);
    })
}

fn main() {
    let commands = flood::bit(libc::SIGUSR2) | flood::bit(libc::SIGTERM);
    // Blocked before any thread starts, so every thread inherits it.
    if let Err(e) = flood::mask(libc::SIG_BLOCK, commands) {
        println!("target: rt_sigprocmask failed: {}", errno_name(e));
        std::process::exit(1);
    }
    if let Err(e) = flood::install() {
        println!("target: {e}");
    }
    // Main never returns, so neither guard is ever dropped.
    let _main = user_thread("main");

    let lives: [(&str, fn() -> !); 3] = [
        ("spinner", spin_forever),
        ("pauser", wait_in_pause),
        ("sleeper", wait_in_futex),
    ];
    let started: &'static Barrier = Box::leak(Box::new(Barrier::new(lives.len() + 1)));
    for (name, life) in lives {
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _me = user_thread(name);
                started.wait();
                life()
            });
        if let Err(e) = spawned {
            println!("target: cannot start {name}: {e}");
            std::process::exit(1);
        }
    }
    started.wait();
    println!("target: ready pid {}", std::process::id());

    loop {
        match flood::wait_signal(commands) {
            libc::SIGUSR2 => flood::run("target", false),
            libc::SIGTERM => {
                println!("target: bye");
                std::process::exit(0);
            }
            _ => {}
        }
    }
}
