//! The signal flood of the `target` and `echo` images: on command the
//! process sends itself [`SIGNALS`] process-directed signals with
//! `kill(getpid(), ...)`, cycling SIGUSR1, SIGRTMIN+1, SIGRTMIN+2, SIGURG
//! and SIGWINCH (SIGRTMIN is libc's, 35 with musl), and reports what its
//! handlers saw.
//!
//! Theory: a handler may only run on a thread that registered itself as a
//! user thread ([`UserThread::enter`], which unblocks the kinds only once
//! the thread's tid is recorded, and blocks them again before the record
//! goes). Each handler run counts per kind, notes whether `gettid()` is a
//! registered user thread, and records its tid in a small set; everything
//! is an atomic, so the handler is async-signal-safe. A kernel that runs a
//! handler on a thread the image never created (one of its own LWPs)
//! shows it as `on-user-threads` below `handled` and as a foreign tid.
//!
//! The report, one line: `<image>: flood done sent N handled M
//! on-user-threads K rt-sent A rt-handled B std-sent C std-handled D`.
//! Real-time signals queue, so B must equal A; standard signals merge
//! while pending, so D may be below C. A send that fails (after 1 s of
//! retrying EAGAIN) is reported first as `<image>: flood send errors E
//! (first ERRNO)` and not counted as sent. With the handler tids asked
//! for, a second line follows: `<image>: flood handler tids T1,T2,...
//! untracked U` (the distinct tids handlers ran on during the flood, in
//! order of first use; U counts runs whose tid found no free slot).

use crate::{SysResult, errno_name, sys};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

/// Signals sent by a flood.
pub const SIGNALS: u64 = 10_000;
/// How long a flood waits for its real-time signals to be handled.
const WAIT_LIMIT: Duration = Duration::from_secs(10);
/// The kinds a flood cycles through.
const KINDS: usize = 5;
/// Which kinds are real-time (queued), in the order of [`kinds`].
const REAL_TIME: [bool; KINDS] = [false, true, true, false, false];
/// Room for this many registered user threads at once.
const MAX_USER_THREADS: usize = 64;
/// Room for this many distinct handler tids per flood.
const MAX_HANDLER_TIDS: usize = 32;

/// The kinds' signal numbers (set by [`install`]: SIGRTMIN is a libc
/// function, so no constant).
static KIND_SIGNALS: [AtomicI32; KINDS] = [const { AtomicI32::new(0) }; KINDS];
/// Handler runs per kind, since the start.
static HANDLED: [AtomicU64; KINDS] = [const { AtomicU64::new(0) }; KINDS];
/// Handler runs on a registered user thread, since the start.
static ON_USER: AtomicU64 = AtomicU64::new(0);
/// The registered user threads' tids; 0 is a free slot.
static USER_TIDS: [AtomicI32; MAX_USER_THREADS] = [const { AtomicI32::new(0) }; MAX_USER_THREADS];
/// The distinct tids handlers ran on since the last flood began; 0 is a
/// free slot.
static HANDLER_TIDS: [AtomicI32; MAX_HANDLER_TIDS] =
    [const { AtomicI32::new(0) }; MAX_HANDLER_TIDS];
/// Handler runs whose tid found no free slot in [`HANDLER_TIDS`].
static UNTRACKED: AtomicU64 = AtomicU64::new(0);

/// The flood's kinds, in the order it cycles through them.
pub fn kinds() -> [i32; KINDS] {
    [
        libc::SIGUSR1,
        libc::SIGRTMIN() + 1,
        libc::SIGRTMIN() + 2,
        libc::SIGURG,
        libc::SIGWINCH,
    ]
}

/// `sig`'s bit in a kernel signal set.
pub fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// The kernel signal set of every kind.
pub fn kind_set() -> u64 {
    kinds().iter().fold(0, |set, &sig| set | bit(sig))
}

pub fn gettid() -> i32 {
    // SAFETY: gettid touches no memory.
    unsafe { sys(libc::SYS_gettid, &[]) }.unwrap_or(0) as i32
}

/// `rt_sigprocmask(how, set)` for the calling thread.
pub fn mask(how: i32, set: u64) -> SysResult {
    // SAFETY: a live u64 of 8 bytes; no old mask.
    unsafe {
        sys(
            libc::SYS_rt_sigprocmask,
            &[how as u64, &set as *const u64 as u64, 0, 8],
        )
    }
}

/// `rt_sigtimedwait(set, NULL, NULL)` until it returns a signal of `set`
/// (a handled flood signal interrupts it with EINTR); the signals of
/// `set` should be blocked in every thread.
pub fn wait_signal(set: u64) -> i32 {
    loop {
        // SAFETY: `set` is a live u64 of 8 bytes; no siginfo, no timeout.
        if let Ok(sig) = unsafe {
            sys(
                libc::SYS_rt_sigtimedwait,
                &[&set as *const u64 as u64, 0, 0, 8],
            )
        } {
            return sig as i32;
        }
    }
}

/// Records `tid` in [`HANDLER_TIDS`] unless it is there already.
fn note_handler_tid(tid: i32) {
    for slot in &HANDLER_TIDS {
        match slot.compare_exchange(0, tid, SeqCst, SeqCst) {
            Ok(_) => return,
            Err(seen) if seen == tid => return,
            Err(_) => {}
        }
    }
    UNTRACKED.fetch_add(1, SeqCst);
}

extern "C" fn on_flood_signal(sig: i32, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    if let Some(k) = KIND_SIGNALS.iter().position(|s| s.load(SeqCst) == sig) {
        HANDLED[k].fetch_add(1, SeqCst);
    }
    let tid = gettid();
    if USER_TIDS.iter().any(|t| t.load(SeqCst) == tid) {
        ON_USER.fetch_add(1, SeqCst);
    }
    note_handler_tid(tid);
}

/// Installs the counting handler (`SA_SIGINFO | SA_RESTART`) for every
/// kind; the error names the kind that failed.
pub fn install() -> Result<(), String> {
    for (slot, sig) in KIND_SIGNALS.iter().zip(kinds()) {
        slot.store(sig, SeqCst);
        // SAFETY: a zeroed sigaction is valid; sigaction reads the live
        // one; the handler only touches atomics (async-signal-safe).
        let r = unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_flood_signal as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(format!(
                "sigaction({sig}) failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// How many times the handler ran for `sig` (a kind), since the start.
pub fn handled(sig: i32) -> u64 {
    KIND_SIGNALS
        .iter()
        .position(|s| s.load(SeqCst) == sig)
        .map_or(0, |k| HANDLED[k].load(SeqCst))
}

/// The calling thread registered as a user thread, with the kinds
/// unblocked; dropping it blocks them again, then forgets the tid.
pub struct UserThread {
    slot: usize,
}

impl UserThread {
    /// Registers the calling thread and unblocks the kinds in it; `None`
    /// (the kinds left as they were) when the registry is full or the
    /// mask cannot change.
    pub fn enter() -> Option<UserThread> {
        let tid = gettid();
        let slot = USER_TIDS
            .iter()
            .position(|t| t.compare_exchange(0, tid, SeqCst, SeqCst).is_ok())?;
        let me = UserThread { slot };
        mask(libc::SIG_UNBLOCK, kind_set()).ok()?;
        Some(me)
    }
}

impl Drop for UserThread {
    fn drop(&mut self) {
        let _ = mask(libc::SIG_BLOCK, kind_set());
        USER_TIDS[self.slot].store(0, SeqCst);
    }
}

fn kill_self(sig: i32) -> SysResult {
    // SAFETY: kill touches no memory; the pid is our own.
    unsafe { sys(libc::SYS_kill, &[u64::from(std::process::id()), sig as u64]) }
}

/// Sends `sig`, retrying EAGAIN (a full real-time queue) for up to 1 s.
fn send(sig: i32) -> SysResult {
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

fn handled_now() -> [u64; KINDS] {
    std::array::from_fn(|k| HANDLED[k].load(SeqCst))
}

/// The sum of the real-time (`rt`) or the standard kinds' counts.
fn sum(counts: &[u64; KINDS], rt: bool) -> u64 {
    (0..KINDS)
        .filter(|k| REAL_TIME[*k] == rt)
        .map(|k| counts[k])
        .sum()
}

/// One flood, reported as `<image>: ...` (see the module's top); with
/// `list_tids`, the handler tids line too. Needs [`install`] first.
pub fn run(image: &str, list_tids: bool) {
    for slot in &HANDLER_TIDS {
        slot.store(0, SeqCst);
    }
    let untracked_before = UNTRACKED.load(SeqCst);
    let (before, on_user_before) = (handled_now(), ON_USER.load(SeqCst));
    let kinds = kinds();
    let mut sent = [0u64; KINDS];
    let (mut errors, mut first_error) = (0u64, None);
    for i in 0..SIGNALS as usize {
        let k = i % KINDS;
        match send(kinds[k]) {
            Ok(_) => sent[k] += 1,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let delta = || -> [u64; KINDS] {
        let now = handled_now();
        std::array::from_fn(|k| now[k] - before[k])
    };
    let start = Instant::now();
    while sum(&delta(), true) < sum(&sent, true) && start.elapsed() < WAIT_LIMIT {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let handlers already running on other threads finish counting.
    std::thread::sleep(Duration::from_millis(20));
    let handled = delta();
    if let Some(e) = first_error {
        println!(
            "{image}: flood send errors {errors} (first {})",
            errno_name(e)
        );
    }
    println!(
        "{image}: flood done sent {} handled {} on-user-threads {} rt-sent {} rt-handled {} \
         std-sent {} std-handled {}",
        sent.iter().sum::<u64>(),
        handled.iter().sum::<u64>(),
        ON_USER.load(SeqCst) - on_user_before,
        sum(&sent, true),
        sum(&handled, true),
        sum(&sent, false),
        sum(&handled, false),
    );
    if list_tids {
        let tids: Vec<String> = HANDLER_TIDS
            .iter()
            .map(|t| t.load(SeqCst))
            .take_while(|&t| t != 0)
            .map(|t| t.to_string())
            .collect();
        println!(
            "{image}: flood handler tids {} untracked {}",
            tids.join(","),
            UNTRACKED.load(SeqCst) - untracked_before
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_distinct_and_two_are_real_time() {
        let k = kinds();
        assert_eq!(kind_set().count_ones() as usize, KINDS);
        for (sig, rt) in k.iter().zip(REAL_TIME) {
            assert_eq!(*sig >= libc::SIGRTMIN(), rt, "signal {sig}");
        }
    }

    #[test]
    fn handler_tids_are_recorded_once() {
        note_handler_tid(-7);
        note_handler_tid(-7);
        let seen = HANDLER_TIDS.iter().filter(|t| t.load(SeqCst) == -7).count();
        assert_eq!(seen, 1);
    }
}
