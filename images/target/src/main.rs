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
//!   `rt_sigtimedwait` in [`wait_for_command`], so they are effectively
//!   process-directed to main only.
//! - SIGUSR2: a flood. Main sends the process 10,000 process-directed
//!   signals with `kill(getpid(), ...)`, cycling SIGUSR1, SIGRTMIN+1,
//!   SIGRTMIN+2, SIGURG and SIGWINCH (SIGRTMIN is libc's, 35 with musl).
//!   Their `SA_SIGINFO` handlers count deliveries per kind and whether
//!   `gettid()` is one of the four user threads. Main waits (at most 10 s)
//!   until every queued real-time signal has been handled, then prints
//!   `target: flood done sent N handled M on-user-threads K rt-sent A
//!   rt-handled B std-sent C std-handled D` (one line), and waits again.
//!   Real-time signals queue, so B must equal A; standard signals merge
//!   while pending, so D may be below C. K equals M when every handler
//!   ran on a user thread. A send that fails (after 1 s of retrying
//!   EAGAIN) is printed first as `target: flood send errors E (first
//!   ERRNO)` and not counted as sent.
//! - SIGTERM: prints `target: bye` and exits with status 0.

use image_support::errno_name;
use std::arch::asm;
use std::sync::Barrier;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// Signals sent by a flood.
const FLOOD: u64 = 10_000;
/// How long main waits for the flood's real-time signals to be handled.
const FLOOD_LIMIT: Duration = Duration::from_secs(10);

/// Counted by [`spin_forever`].
static SPINS: AtomicU64 = AtomicU64::new(0);
/// The futex word [`wait_in_futex`] waits on; never changes.
static NEVER: AtomicU32 = AtomicU32::new(0);
/// The tids of main, spinner, pauser and sleeper.
static USER_TIDS: [AtomicI32; 4] = [const { AtomicI32::new(0) }; 4];
/// The flood's signal kinds (set at start: SIGRTMIN is a libc function).
static KINDS: [AtomicI32; 5] = [const { AtomicI32::new(0) }; 5];
/// Which kinds are real-time (queued).
const REAL_TIME: [bool; 5] = [false, true, true, false, false];
/// Handler runs per kind, and how many of all ran on a user thread.
static HANDLED: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
static ON_USER: AtomicU64 = AtomicU64::new(0);

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

fn gettid() -> i32 {
    // SAFETY: gettid touches no memory.
    unsafe { syscall4(libc::SYS_gettid, 0, 0, 0, 0) as i32 }
}

fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
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

/// Main's wait: `rt_sigtimedwait(set, NULL, NULL)` until it returns a
/// signal of `set` (a handled flood signal interrupts it with EINTR).
#[inline(never)]
fn wait_for_command(set: u64) -> i32 {
    loop {
        // SAFETY: `set` is a live u64 of 8 bytes; no siginfo, no timeout.
        let r = unsafe {
            syscall4(
                libc::SYS_rt_sigtimedwait,
                &set as *const u64 as u64,
                0,
                0,
                8,
            )
        };
        if r > 0 {
            return r as i32;
        }
    }
}

extern "C" fn on_flood_signal(sig: i32, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if let Some(k) = KINDS.iter().position(|s| s.load(Relaxed) == sig) {
        HANDLED[k].fetch_add(1, SeqCst);
    }
    let tid = gettid();
    if USER_TIDS.iter().any(|t| t.load(Relaxed) == tid) {
        ON_USER.fetch_add(1, SeqCst);
    }
}

fn install_flood_handlers() {
    let kinds = [
        libc::SIGUSR1,
        libc::SIGRTMIN() + 1,
        libc::SIGRTMIN() + 2,
        libc::SIGURG,
        libc::SIGWINCH,
    ];
    for (slot, sig) in KINDS.iter().zip(kinds) {
        slot.store(sig, SeqCst);
        // SAFETY: a zeroed sigaction is valid; sigaction reads the live one.
        let r = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_flood_signal as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if r != 0 {
            println!(
                "target: sigaction({sig}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn kill_self(sig: i32) -> Result<(), i32> {
    // SAFETY: kill touches no memory; the pid is our own.
    let r = unsafe { syscall4(libc::SYS_kill, std::process::id() as u64, sig as u64, 0, 0) };
    if r < 0 { Err(-r as i32) } else { Ok(()) }
}

/// Sends `sig`, retrying EAGAIN (a full real-time queue) for up to 1 s.
fn send(sig: i32) -> Result<(), i32> {
    let start = Instant::now();
    loop {
        match kill_self(sig) {
            Err(libc::EAGAIN) if start.elapsed() < Duration::from_secs(1) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}

fn handled_now() -> [u64; 5] {
    std::array::from_fn(|k| HANDLED[k].load(SeqCst))
}

fn flood() {
    let (before, on_user_before) = (handled_now(), ON_USER.load(SeqCst));
    let mut sent = [0u64; 5];
    let (mut errors, mut first_error) = (0u64, None);
    for i in 0..FLOOD as usize {
        let k = i % KINDS.len();
        match send(KINDS[k].load(Relaxed)) {
            Ok(()) => sent[k] += 1,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let sum = |counts: &[u64; 5], rt: bool| -> u64 {
        (0..5)
            .filter(|k| REAL_TIME[*k] == rt)
            .map(|k| counts[k])
            .sum()
    };
    let delta = || -> [u64; 5] {
        let now = handled_now();
        std::array::from_fn(|k| now[k] - before[k])
    };
    let start = Instant::now();
    while sum(&delta(), true) < sum(&sent, true) && start.elapsed() < FLOOD_LIMIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let handlers already running on other threads finish counting.
    std::thread::sleep(Duration::from_millis(20));
    let handled = delta();
    if let Some(e) = first_error {
        println!(
            "target: flood send errors {errors} (first {})",
            errno_name(e)
        );
    }
    println!(
        "target: flood done sent {} handled {} on-user-threads {} rt-sent {} rt-handled {} \
         std-sent {} std-handled {}",
        sent.iter().sum::<u64>(),
        handled.iter().sum::<u64>(),
        ON_USER.load(SeqCst) - on_user_before,
        sum(&sent, true),
        sum(&handled, true),
        sum(&sent, false),
        sum(&handled, false),
    );
}

fn main() {
    let commands = bit(libc::SIGUSR2) | bit(libc::SIGTERM);
    // Blocked before any thread starts, so every thread inherits it.
    // SAFETY: a live u64 of 8 bytes; no old mask.
    let r = unsafe {
        syscall4(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK as u64,
            &commands as *const u64 as u64,
            0,
            8,
        )
    };
    if r != 0 {
        println!("target: rt_sigprocmask failed: {}", errno_name(-r as i32));
        std::process::exit(1);
    }
    install_flood_handlers();
    USER_TIDS[0].store(gettid(), SeqCst);

    let lives: [(&str, fn() -> !); 3] = [
        ("spinner", spin_forever),
        ("pauser", wait_in_pause),
        ("sleeper", wait_in_futex),
    ];
    let started: &'static Barrier = Box::leak(Box::new(Barrier::new(lives.len() + 1)));
    for (i, (name, life)) in lives.into_iter().enumerate() {
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                USER_TIDS[i + 1].store(gettid(), SeqCst);
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
        match wait_for_command(commands) {
            libc::SIGUSR2 => flood(),
            libc::SIGTERM => {
                println!("target: bye");
                std::process::exit(0);
            }
            _ => {}
        }
    }
}
