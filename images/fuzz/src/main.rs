//! `fuzz`: random system calls with hostile arguments; the kernel must
//! answer every one (a result or an errno) and never fall over.
//!
//! `fuzz [--seed N] [--calls N] [--verbose] [--list-skips]`: makes `--calls` (default
//! 100000) system calls with numbers drawn uniformly from 0..=450 and six
//! arguments each drawn from a pool: small integers, -1, huge lengths,
//! kernel-half addresses, unmapped low addresses and one valid scratch
//! buffer. The generator is a SplitMix64 seeded with `--seed` (default
//! 0x5eed), so a seed replays exactly.
//!
//! Calls that would legitimately end or wedge the process, or change the
//! machine outside it, are skipped (`--list-skips` prints the rules with
//! their reasons); the same rules make the program harmless on a Linux host,
//! even as root. The principles:
//!
//! - nothing ends the process or replaces its image: exit, exit_group,
//!   execve, kill and friends, rt_sigreturn, seccomp, prctl;
//! - nothing unmaps or re-protects memory the fuzzer runs on: munmap,
//!   mremap, mprotect, brk, madvise, `mmap(MAP_FIXED)`, shmat;
//! - nothing blocks for long: pause, sigsuspend, futex waits, IPC receives,
//!   reads and socket calls on fds 0-2, select/pselect/ppoll/epoll_pwait2
//!   with no timeout; poll/epoll_wait timeouts are clamped to 0..=10 ms;
//! - nothing reaches outside the process: mount, reboot, time setting,
//!   host names, modules, System V IPC objects, other processes' limits,
//!   priorities, memory or signals, bpf, keys, ptrace;
//! - fds 0-2 keep their state (no close, dup2 onto, fcntl, lseek,
//!   truncate, chmod, positional writes); stdout gets no garbage (no
//!   write of the scratch buffer to fds 0-2; writes with bad pointers are
//!   kept).
//!
//! Hygiene that keeps every run independent of the last call: inherited
//! fds >= 3 are closed at the start; every fd a call creates is closed
//! right after it (returned, or written by pipe/pipe2/socketpair); every
//! successful mmap is unmapped. The scratch buffer (64 KiB) is followed by a
//! PROT_NONE guard page so a huge length cannot make the kernel write past
//! it, and is refilled with `.` bytes after any call that was given it: a
//! path read from it is 64 KiB without a NUL (ENAMETOOLONG), a timespec or
//! timeval read from it is invalid (EINVAL), an iovec points at nothing.
//!
//! Prints the seed, then a summary: calls made, calls skipped by rule,
//! successes, and errors by errno. Exits 0 unless its own setup fails.

use image_support::{Args, SysResult, errno_name, syscall6, usage_error};
use std::collections::BTreeMap;
use std::process::ExitCode;

const DEFAULT_SEED: u64 = 0x5eed;
const DEFAULT_CALLS: u64 = 100_000;
const MAX_NR: u64 = 450;
const PAGE: u64 = 4096;
const SCRATCH_LEN: u64 = 64 * 1024;

const KERNEL_ADDRS: [u64; 3] = [
    0xffff_8000_0000_0000,
    0xffff_ffff_8000_0000,
    0xffff_ffff_ffff_f000,
];
const LOW_ADDRS: [u64; 2] = [0x1000, 0x2000];
const SMALL: [u64; 10] = [0, 1, 2, 3, 4, 7, 8, 16, 64, 4096];
// Note: 1 << 40 also acts as 0 wherever the kernel reads an int.
const HUGE: [u64; 3] = [1 << 40, u64::MAX / 2, 0x7fff_ffff];

/// Why a call is skipped or adjusted.
#[derive(Clone, Copy)]
enum Rule {
    /// Never made.
    Always,
    /// Skipped when argument `.0` is fd 0, 1 or 2.
    StdFd(usize),
    /// Skipped when argument 0 is fd 0-2 and argument 1 is the scratch
    /// buffer (it would print garbage).
    ScratchToStd,
    /// Skipped when argument `.0` is 0 (a null timeout: wait forever).
    NullTimeout(usize),
    /// Argument `.0` (milliseconds) clamped to 0..=10.
    ClampMs(usize),
    /// mmap: skipped with MAP_FIXED or MAP_FIXED_NOREPLACE.
    MmapFixed,
    /// futex: skipped for the waiting and PI-locking operations.
    FutexWait,
    /// prlimit64: skipped when it sets a new limit.
    NewLimit,
    /// utimensat/futimesat: skipped with a null path (acts on the fd).
    NullPath,
}

/// Every rule: number, name, rule, reason.
const RULES: &[(u64, &str, Rule, &str)] = &[
    (0, "read", Rule::StdFd(0), "would block reading the console"),
    (1, "write", Rule::ScratchToStd, "would print garbage"),
    (3, "close", Rule::StdFd(0), "would close stdio"),
    (7, "poll", Rule::ClampMs(2), "timeout clamped"),
    (
        8,
        "lseek",
        Rule::StdFd(0),
        "would move a shared stdio offset",
    ),
    (
        9,
        "mmap",
        Rule::MmapFixed,
        "MAP_FIXED could replace the fuzzer's memory",
    ),
    (
        10,
        "mprotect",
        Rule::Always,
        "could remove access to the fuzzer's memory",
    ),
    (11, "munmap", Rule::Always, "could unmap the fuzzer"),
    (
        12,
        "brk",
        Rule::Always,
        "could shrink the heap under the allocator",
    ),
    (
        13,
        "rt_sigaction",
        Rule::Always,
        "could install garbage handlers",
    ),
    (
        15,
        "rt_sigreturn",
        Rule::Always,
        "would return to a garbage frame",
    ),
    (
        17,
        "pread64",
        Rule::StdFd(0),
        "would block reading the console",
    ),
    (
        18,
        "pwrite64",
        Rule::StdFd(0),
        "a faulting pwrite at 1 TiB still grows a redirected stdout (seen on Linux 6.18, tmpfs)",
    ),
    (
        19,
        "readv",
        Rule::StdFd(0),
        "would block reading the console",
    ),
    (
        23,
        "select",
        Rule::Always,
        "a timeval is normalised, not rejected: could wait for ages",
    ),
    (25, "mremap", Rule::Always, "could move the fuzzer's memory"),
    (
        28,
        "madvise",
        Rule::Always,
        "could drop the fuzzer's memory",
    ),
    (
        29,
        "shmget",
        Rule::Always,
        "creates system-wide IPC objects",
    ),
    (30, "shmat", Rule::Always, "SHM_REMAP could replace memory"),
    (
        31,
        "shmctl",
        Rule::Always,
        "could remove system-wide IPC objects",
    ),
    (33, "dup2", Rule::StdFd(1), "would replace stdio"),
    (34, "pause", Rule::Always, "waits forever"),
    (37, "alarm", Rule::Always, "SIGALRM would end the process"),
    (
        38,
        "setitimer",
        Rule::Always,
        "SIGALRM would end the process",
    ),
    (40, "sendfile", Rule::StdFd(0), "moves data on stdio"),
    (42, "connect", Rule::StdFd(0), "socket call on stdio"),
    (43, "accept", Rule::StdFd(0), "socket call on stdio"),
    (44, "sendto", Rule::StdFd(0), "socket call on stdio"),
    (45, "recvfrom", Rule::StdFd(0), "socket call on stdio"),
    (46, "sendmsg", Rule::StdFd(0), "socket call on stdio"),
    (47, "recvmsg", Rule::StdFd(0), "socket call on stdio"),
    (48, "shutdown", Rule::StdFd(0), "socket call on stdio"),
    (49, "bind", Rule::StdFd(0), "socket call on stdio"),
    (50, "listen", Rule::StdFd(0), "socket call on stdio"),
    (54, "setsockopt", Rule::StdFd(0), "socket call on stdio"),
    (56, "clone", Rule::Always, "creates processes or threads"),
    (57, "fork", Rule::Always, "creates processes"),
    (58, "vfork", Rule::Always, "creates processes"),
    (59, "execve", Rule::Always, "replaces the process"),
    (60, "exit", Rule::Always, "ends the thread"),
    (62, "kill", Rule::Always, "signals processes"),
    (
        64,
        "semget",
        Rule::Always,
        "creates system-wide IPC objects",
    ),
    (65, "semop", Rule::Always, "can block"),
    (
        66,
        "semctl",
        Rule::Always,
        "could remove system-wide IPC objects",
    ),
    (67, "shmdt", Rule::Always, "could detach memory"),
    (
        68,
        "msgget",
        Rule::Always,
        "creates system-wide IPC objects",
    ),
    (69, "msgsnd", Rule::Always, "can block"),
    (70, "msgrcv", Rule::Always, "can block"),
    (
        71,
        "msgctl",
        Rule::Always,
        "could remove system-wide IPC objects",
    ),
    (
        72,
        "fcntl",
        Rule::StdFd(0),
        "could change stdio flags or locks",
    ),
    (73, "flock", Rule::StdFd(0), "could lock stdio"),
    (
        77,
        "ftruncate",
        Rule::StdFd(0),
        "could truncate a redirected stdout",
    ),
    (
        91,
        "fchmod",
        Rule::StdFd(0),
        "would change stdio permissions",
    ),
    (93, "fchown", Rule::StdFd(0), "would change stdio ownership"),
    (101, "ptrace", Rule::Always, "attaches to processes"),
    (103, "syslog", Rule::Always, "could clear the kernel log"),
    (128, "rt_sigtimedwait", Rule::Always, "can wait forever"),
    (129, "rt_sigqueueinfo", Rule::Always, "signals processes"),
    (130, "rt_sigsuspend", Rule::Always, "waits for a signal"),
    (
        131,
        "sigaltstack",
        Rule::Always,
        "could install a garbage signal stack",
    ),
    (
        135,
        "personality",
        Rule::Always,
        "changes the execution domain",
    ),
    (141, "setpriority", Rule::Always, "changes other processes"),
    (
        142,
        "sched_setparam",
        Rule::Always,
        "changes other processes",
    ),
    (
        144,
        "sched_setscheduler",
        Rule::Always,
        "changes other processes",
    ),
    (153, "vhangup", Rule::Always, "hangs up the terminal"),
    (
        154,
        "modify_ldt",
        Rule::Always,
        "changes segment descriptors",
    ),
    (
        155,
        "pivot_root",
        Rule::Always,
        "changes the root file system",
    ),
    (157, "prctl", Rule::Always, "seccomp, death signals, ..."),
    (
        158,
        "arch_prctl",
        Rule::Always,
        "would replace the TLS base",
    ),
    (159, "adjtimex", Rule::Always, "sets the clock"),
    (160, "setrlimit", Rule::Always, "sets limits"),
    (161, "chroot", Rule::Always, "changes the root"),
    (
        162,
        "sync",
        Rule::Always,
        "slow on a host; nothing to sync in a guest",
    ),
    (163, "acct", Rule::Always, "process accounting"),
    (164, "settimeofday", Rule::Always, "sets the clock"),
    (165, "mount", Rule::Always, "mounts"),
    (166, "umount2", Rule::Always, "unmounts"),
    (167, "swapon", Rule::Always, "swap"),
    (168, "swapoff", Rule::Always, "swap"),
    (169, "reboot", Rule::Always, "reboots"),
    (170, "sethostname", Rule::Always, "sets the host name"),
    (171, "setdomainname", Rule::Always, "sets the domain name"),
    (172, "iopl", Rule::Always, "port I/O"),
    (173, "ioperm", Rule::Always, "port I/O"),
    (175, "init_module", Rule::Always, "loads kernel modules"),
    (176, "delete_module", Rule::Always, "unloads kernel modules"),
    (179, "quotactl", Rule::Always, "disk quotas"),
    (190, "fsetxattr", Rule::StdFd(0), "changes stdio attributes"),
    (
        199,
        "fremovexattr",
        Rule::StdFd(0),
        "changes stdio attributes",
    ),
    (200, "tkill", Rule::Always, "signals threads"),
    (202, "futex", Rule::FutexWait, "waits can last forever"),
    (
        203,
        "sched_setaffinity",
        Rule::Always,
        "could pin the fuzzer nowhere useful",
    ),
    (216, "remap_file_pages", Rule::Always, "changes mappings"),
    (
        218,
        "set_tid_address",
        Rule::Always,
        "replaces the thread's clear-tid word",
    ),
    (221, "fadvise64", Rule::StdFd(0), "advice on stdio"),
    (
        222,
        "timer_create",
        Rule::Always,
        "a timer signal would end the process",
    ),
    (
        223,
        "timer_settime",
        Rule::Always,
        "a timer signal would end the process",
    ),
    (227, "clock_settime", Rule::Always, "sets the clock"),
    (231, "exit_group", Rule::Always, "ends the process"),
    (232, "epoll_wait", Rule::ClampMs(3), "timeout clamped"),
    (234, "tgkill", Rule::Always, "signals threads"),
    (237, "mbind", Rule::Always, "NUMA policy of memory in use"),
    (238, "set_mempolicy", Rule::Always, "NUMA policy"),
    (242, "mq_timedsend", Rule::Always, "can block"),
    (243, "mq_timedreceive", Rule::Always, "can block"),
    (246, "kexec_load", Rule::Always, "replaces the kernel"),
    (248, "add_key", Rule::Always, "kernel key rings"),
    (249, "request_key", Rule::Always, "kernel key rings"),
    (250, "keyctl", Rule::Always, "kernel key rings"),
    (251, "ioprio_set", Rule::Always, "changes other processes"),
    (
        256,
        "migrate_pages",
        Rule::Always,
        "moves other processes' memory",
    ),
    (261, "futimesat", Rule::NullPath, "would touch a stdio file"),
    (
        270,
        "pselect6",
        Rule::NullTimeout(4),
        "no timeout: could wait forever",
    ),
    (
        271,
        "ppoll",
        Rule::NullTimeout(2),
        "no timeout: could wait forever",
    ),
    (272, "unshare", Rule::Always, "namespaces"),
    (
        273,
        "set_robust_list",
        Rule::Always,
        "replaces libc's robust list",
    ),
    (275, "splice", Rule::StdFd(0), "moves data on stdio"),
    (276, "tee", Rule::StdFd(0), "moves data on stdio"),
    (278, "vmsplice", Rule::StdFd(0), "moves data on stdio"),
    (
        279,
        "move_pages",
        Rule::Always,
        "moves other processes' memory",
    ),
    (280, "utimensat", Rule::NullPath, "would touch a stdio file"),
    (281, "epoll_pwait", Rule::ClampMs(3), "timeout clamped"),
    (
        285,
        "fallocate",
        Rule::StdFd(0),
        "could grow a redirected stdout",
    ),
    (288, "accept4", Rule::StdFd(0), "socket call on stdio"),
    (292, "dup3", Rule::StdFd(1), "would replace stdio"),
    (
        295,
        "preadv",
        Rule::StdFd(0),
        "would block reading the console",
    ),
    (
        296,
        "pwritev",
        Rule::StdFd(0),
        "positional write to stdio (see pwrite64)",
    ),
    (297, "rt_tgsigqueueinfo", Rule::Always, "signals threads"),
    (299, "recvmmsg", Rule::StdFd(0), "socket call on stdio"),
    (
        302,
        "prlimit64",
        Rule::NewLimit,
        "sets limits (possibly of other processes)",
    ),
    (305, "clock_adjtime", Rule::Always, "sets the clock"),
    (307, "sendmmsg", Rule::StdFd(0), "socket call on stdio"),
    (308, "setns", Rule::Always, "namespaces"),
    (
        310,
        "process_vm_readv",
        Rule::Always,
        "other processes' memory",
    ),
    (
        311,
        "process_vm_writev",
        Rule::Always,
        "other processes' memory",
    ),
    (313, "finit_module", Rule::Always, "loads kernel modules"),
    (
        314,
        "sched_setattr",
        Rule::Always,
        "changes other processes",
    ),
    (
        317,
        "seccomp",
        Rule::Always,
        "a filter could kill the process",
    ),
    (320, "kexec_file_load", Rule::Always, "replaces the kernel"),
    (321, "bpf", Rule::Always, "loads programs into the kernel"),
    (322, "execveat", Rule::Always, "replaces the process"),
    (
        326,
        "copy_file_range",
        Rule::StdFd(0),
        "moves data on stdio",
    ),
    (
        327,
        "preadv2",
        Rule::StdFd(0),
        "would block reading the console",
    ),
    (
        329,
        "pkey_mprotect",
        Rule::Always,
        "could remove access to the fuzzer's memory",
    ),
    (
        334,
        "rseq",
        Rule::Always,
        "the kernel would write to a garbage area",
    ),
    (
        335,
        "uretprobe",
        Rule::Always,
        "Linux 6.11+: SIGILL unless called by a uprobe trampoline",
    ),
    (424, "pidfd_send_signal", Rule::Always, "signals processes"),
    (426, "io_uring_enter", Rule::Always, "can block"),
    (428, "open_tree", Rule::Always, "mount API"),
    (429, "move_mount", Rule::Always, "mount API"),
    (430, "fsopen", Rule::Always, "mount API"),
    (431, "fsconfig", Rule::Always, "mount API"),
    (432, "fsmount", Rule::Always, "mount API"),
    (433, "fspick", Rule::Always, "mount API"),
    (435, "clone3", Rule::Always, "creates processes or threads"),
    (436, "close_range", Rule::StdFd(0), "would close stdio"),
    (
        440,
        "process_madvise",
        Rule::Always,
        "other processes' memory",
    ),
    (
        441,
        "epoll_pwait2",
        Rule::NullTimeout(3),
        "no timeout: could wait forever",
    ),
    (442, "mount_setattr", Rule::Always, "mount API"),
    (443, "quotactl_fd", Rule::Always, "disk quotas"),
    (
        446,
        "landlock_restrict_self",
        Rule::Always,
        "restricts the process",
    ),
    (
        448,
        "process_mrelease",
        Rule::Always,
        "other processes' memory",
    ),
    (449, "futex_waitv", Rule::Always, "can wait forever"),
    (450, "set_mempolicy_home_node", Rule::Always, "NUMA policy"),
];

/// System calls that return a new fd (closed right after the call).
const FD_RETURNING: &[u64] = &[
    2, 32, 33, 41, 43, 85, 213, 240, 253, 257, 282, 283, 284, 288, 289, 290, 291, 292, 294, 298,
    300, 304, 319, 323, 425, 434, 437, 438, 444, 447,
];
/// System calls that write two fds into their pointer argument.
const FD_PAIR: &[(u64, usize)] = &[(22, 0), (293, 0), (53, 3)];

const FUTEX_WAITING_OPS: [u64; 5] = [0, 6, 9, 11, 13];
const MAP_FIXED: u64 = 0x10;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn rule_for(nr: u64) -> Option<(Rule, &'static str, &'static str)> {
    RULES
        .iter()
        .find(|r| r.0 == nr)
        .map(|&(_, name, rule, why)| (rule, name, why))
}

/// Applies `nr`'s rule to `args`: `None` to make the call (perhaps with a
/// clamped argument), `Some(name)` to skip it.
fn screen(nr: u64, args: &mut [u64; 6], scratch: u64) -> Option<&'static str> {
    let (rule, name, _) = rule_for(nr)?;
    // An fd argument is a C int: the kernel uses the low 32 bits only, so
    // 1 << 40 is fd 0.
    let std_fd = |v: u64| (v as u32) <= 2;
    let skip = match rule {
        Rule::Always => true,
        Rule::StdFd(i) => std_fd(args[i]),
        Rule::ScratchToStd => std_fd(args[0]) && args[1] == scratch,
        Rule::NullTimeout(i) => args[i] == 0,
        Rule::ClampMs(i) => {
            args[i] = (args[i] as i32).clamp(0, 10) as u64;
            false
        }
        Rule::MmapFixed => args[3] & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0,
        Rule::FutexWait => FUTEX_WAITING_OPS.contains(&(args[1] & 0x7f)),
        Rule::NewLimit => args[2] != 0,
        Rule::NullPath => args[1] == 0,
    };
    // Some calls take fds in more than one position.
    let second_fd = match nr {
        40 | 276 => std_fd(args[1]),
        275 | 326 => std_fd(args[2]),
        _ => false,
    };
    (skip || second_fd).then_some(name)
}

fn raw(nr: u64, args: [u64; 6]) -> SysResult {
    // SAFETY: `screen` has removed every call that could end the process, unmap or re-protect its
    // memory, or block; the remaining calls can only write through the argument pool's pointers, of
    // which the only valid one is the guarded scratch buffer.
    unsafe { syscall6(nr, args) }
}

fn close(fd: u64) {
    let _ = raw(3, [fd, 0, 0, 0, 0, 0]);
}

fn fill_scratch(scratch: u64) {
    // SAFETY: the scratch buffer is mapped read-write for SCRATCH_LEN bytes.
    unsafe { std::ptr::write_bytes(scratch as *mut u8, b'.', SCRATCH_LEN as usize) };
}

fn main() -> ExitCode {
    let mut args = Args::from_env();
    if args.flag("--list-skips") {
        for &(nr, name, rule, why) in RULES {
            let how = match rule {
                Rule::Always => "always".to_string(),
                Rule::StdFd(i) => format!("when argument {i} is fd 0-2"),
                Rule::ScratchToStd => "when writing the scratch buffer to fd 0-2".into(),
                Rule::NullTimeout(i) => format!("when argument {i} (timeout) is NULL"),
                Rule::ClampMs(i) => format!("never (argument {i} clamped to 0..=10 ms)"),
                Rule::MmapFixed => "with MAP_FIXED or MAP_FIXED_NOREPLACE".into(),
                Rule::FutexWait => "for FUTEX_WAIT, _BITSET, _REQUEUE_PI, LOCK_PI(2)".into(),
                Rule::NewLimit => "when setting a new limit".into(),
                Rule::NullPath => "with a NULL path".into(),
            };
            println!("{nr:3} {name:24} skipped {how}: {why}");
        }
        return ExitCode::SUCCESS;
    }
    let seed: u64 = match args.take("--seed") {
        Ok(s) => s.unwrap_or(DEFAULT_SEED),
        Err(e) => return usage_error("fuzz", &e),
    };
    let calls: u64 = match args.take("--calls") {
        Ok(n) => n.unwrap_or(DEFAULT_CALLS),
        Err(e) => return usage_error("fuzz", &e),
    };
    let verbose = args.flag("--verbose");
    if let Some(extra) = args.rest().first() {
        return usage_error(
            "fuzz",
            &format!(
                "unexpected argument {extra:?} (usage: fuzz [--seed N] [--calls N] [--verbose] [--list-skips])"
            ),
        );
    }
    println!("fuzz: seed {seed}, {calls} calls, numbers 0..={MAX_NR}");

    // Inherited fds >= 3 (a build system's jobserver pipe, say) must not be
    // read from or written to by random calls.
    let mut inherited = 0;
    for fd in 3..1024 {
        if raw(3, [fd, 0, 0, 0, 0, 0]).is_ok() {
            inherited += 1;
        }
    }
    if inherited > 0 {
        println!("fuzz: closed {inherited} inherited file descriptors");
    }

    // Scratch buffer plus guard page.
    let map = raw(
        9,
        [
            0,
            SCRATCH_LEN + PAGE,
            (libc::PROT_READ | libc::PROT_WRITE) as u64,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
            u64::MAX,
            0,
        ],
    );
    let scratch = match map {
        Ok(a) => a as u64,
        Err(e) => {
            println!(
                "fuzz: FAIL cannot map the scratch buffer: {}",
                errno_name(e)
            );
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: the guard page is the last page of the mapping just made.
    let guard = unsafe {
        syscall6(
            10,
            [scratch + SCRATCH_LEN, PAGE, libc::PROT_NONE as u64, 0, 0, 0],
        )
    };
    if let Err(e) = guard {
        println!("fuzz: FAIL cannot make the guard page: {}", errno_name(e));
        return ExitCode::FAILURE;
    }
    fill_scratch(scratch);

    let mut pool: Vec<u64> = Vec::new();
    pool.extend(SMALL);
    pool.push(u64::MAX);
    pool.extend(HUGE);
    pool.extend(KERNEL_ADDRS);
    pool.extend(LOW_ADDRS);
    pool.push(scratch);

    let mut rng = SplitMix(seed);
    let mut made = 0u64;
    let mut ok = 0u64;
    let mut errors: BTreeMap<i32, u64> = BTreeMap::new();
    let mut skipped: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut closed = 0u64;
    let mut unmapped = 0u64;
    while made < calls {
        let nr = rng.below(MAX_NR + 1);
        let mut a = [0u64; 6];
        for v in a.iter_mut() {
            *v = pool[rng.below(pool.len() as u64) as usize];
        }
        if let Some(name) = screen(nr, &mut a, scratch) {
            *skipped.entry(name).or_default() += 1;
            continue;
        }
        if verbose {
            println!("fuzz: call {made}: {nr} {a:#x?}");
        }
        let r = raw(nr, a);
        if verbose {
            println!("fuzz: -> {r:?}");
        }
        made += 1;
        match r {
            Ok(v) => {
                ok += 1;
                if FD_RETURNING.contains(&nr) && v >= 3 {
                    close(v as u64);
                    closed += 1;
                }
                if nr == 9 {
                    let _ = raw(11, [v as u64, a[1], 0, 0, 0, 0]);
                    unmapped += 1;
                }
                if let Some(&(_, i)) = FD_PAIR.iter().find(|p| p.0 == nr)
                    && a[i] == scratch
                {
                    // SAFETY: the call wrote two ints at the scratch
                    // buffer's start.
                    let fds = unsafe { *(scratch as *const [i32; 2]) };
                    for fd in fds {
                        if fd >= 3 {
                            close(fd as u64);
                            closed += 1;
                        }
                    }
                }
            }
            Err(e) => *errors.entry(e).or_default() += 1,
        }
        if a.contains(&scratch) {
            fill_scratch(scratch);
        }
    }

    let skipped_total: u64 = skipped.values().sum();
    println!(
        "fuzz: {made} calls made, {ok} succeeded, {} failed; {skipped_total} drawn calls skipped; {closed} new fds closed, {unmapped} new mappings unmapped",
        made - ok
    );
    let mut by_count: Vec<(i32, u64)> = errors.into_iter().collect();
    by_count.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
    let list: Vec<String> = by_count
        .iter()
        .map(|(e, n)| match errno_name(*e) {
            "errno (unnamed)" => format!("errno{e}={n}"),
            name => format!("{name}={n}"),
        })
        .collect();
    println!("fuzz: errors by errno: {}", list.join(" "));
    let mut skips: Vec<(&str, u64)> = skipped.into_iter().collect();
    skips.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    let list: Vec<String> = skips.iter().map(|(n, c)| format!("{n}={c}")).collect();
    println!("fuzz: skipped: {}", list.join(" "));
    println!("fuzz: done, the process survived");
    ExitCode::SUCCESS
}
