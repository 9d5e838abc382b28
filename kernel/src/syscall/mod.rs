//! The Linux x86_64 system-call layer of the guest process.
//!
//! Numbers, argument registers (rdi, rsi, rdx, r10, r8, r9), structures
//! and errno values are Linux's. `dispatch` runs with the caller's trap
//! frame, interrupts on; results go back in rax (negative errno on
//! failure). Every user pointer goes through `mm::usercopy`. Calls not
//! implemented return `ENOSYS` and are logged once per number, by name
//! (`LOGGED`, an `IrqSpinLock` bitmap). Owns no other state: processes,
//! LWPs and address spaces hold it.

pub mod futex;
mod io;
mod memory;
pub mod names;
mod net;
pub mod poll;
mod process;
mod signal;
mod time;

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::interrupts;

use crate::arch::trap::TrapFrame;
use crate::errno::Errno;

/// The six arguments.
pub struct Args {
    pub a: [u64; 6],
}

pub type SysResult = Result<u64, Errno>;

/// Numbers already logged as unimplemented (bit per number, 0..512).
static LOGGED: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn log_unimplemented(number: u64) {
    if number < 512 {
        let bit = 1u64 << (number % 64);
        if LOGGED[(number / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            return;
        }
    }
    match names::name(number) {
        Some(name) => log::warn!("system call {number} ({name}) is not implemented: ENOSYS"),
        None => log::warn!("system call {number} does not exist: ENOSYS"),
    }
}

/// The system-call entry's Rust half.
pub extern "C" fn dispatch(frame: &mut TrapFrame) {
    interrupts::enable();
    let number = frame.rax;
    let args = Args {
        a: [
            frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
        ],
    };
    let result = call(number, &args, frame);
    // A restart code never reaches user mode: the signal layer restarts
    // the call or turns it into `EINTR` (the value left here).
    let interrupted = match result {
        Err(
            error @ (Errno::ERESTARTSYS | Errno::ERESTARTNOHAND | Errno::ERESTART_RESTARTBLOCK),
        ) => Some((number, error)),
        _ => None,
    };
    frame.rax = match result {
        Ok(value) => value,
        Err(_) if interrupted.is_some() => (-(Errno::EINTR.code() as i64)) as u64,
        Err(error) => (-(error.code() as i64)) as u64,
    };
    crate::signal::on_return_to_user(frame, interrupted);
    interrupts::disable();
}

fn call(number: u64, args: &Args, frame: &mut TrapFrame) -> SysResult {
    let a = &args.a;
    match number {
        0 => io::read(a[0], a[1], a[2]),
        1 => io::write(a[0], a[1], a[2]),
        3 => io::close(a[0]),
        7 => poll::poll(a[0], a[1], a[2] as i32),
        9 => memory::mmap(a[0], a[1], a[2], a[3], a[4], a[5]),
        10 => memory::mprotect(a[0], a[1], a[2]),
        11 => memory::munmap(a[0], a[1]),
        12 => memory::brk(a[0]),
        13 => signal::rt_sigaction(a[0], a[1], a[2], a[3]),
        14 => signal::rt_sigprocmask(a[0], a[1], a[2], a[3]),
        15 => signal::rt_sigreturn(frame),
        16 => io::ioctl(a[0], a[1], a[2]),
        19 => io::readv(a[0], a[1], a[2]),
        20 => io::writev(a[0], a[1], a[2]),
        23 => poll::select(a[0], a[1], a[2], a[3], a[4]),
        24 => process::sched_yield(),
        28 => memory::madvise(a[0], a[1], a[2]),
        32 => io::dup(a[0]),
        33 => io::dup2(a[0], a[1]),
        34 => signal::pause(),
        35 => time::nanosleep(a[0], a[1]),
        39 => process::getpid(),
        41 => net::socket(a[0], a[1], a[2]),
        42 => net::connect(a[0], a[1], a[2]),
        43 => net::accept(a[0], a[1], a[2]),
        44 => net::sendto(a[0], a[1], a[2], a[3], a[4], a[5]),
        45 => net::recvfrom(a[0], a[1], a[2], a[3], a[4], a[5]),
        46 => net::sendmsg(a[0], a[1], a[2]),
        47 => net::recvmsg(a[0], a[1], a[2]),
        48 => net::shutdown(a[0], a[1]),
        49 => net::bind(a[0], a[1], a[2]),
        50 => net::listen(a[0], a[1]),
        51 => net::getsockname(a[0], a[1], a[2]),
        52 => net::getpeername(a[0], a[1], a[2]),
        53 => net::socketpair(a[0], a[1], a[2], a[3]),
        54 => net::setsockopt(a[0], a[1], a[2], a[3], a[4]),
        55 => net::getsockopt(a[0], a[1], a[2], a[3], a[4]),
        56 => process::clone(a[0], a[1], a[2], a[3], a[4], frame),
        60 => process::exit(a[0]),
        62 => signal::kill(a[0], a[1]),
        63 => process::uname(a[0]),
        72 => io::fcntl(a[0], a[1], a[2]),
        79 => io::getcwd(a[0], a[1]),
        96 => time::gettimeofday(a[0], a[1]),
        97 => process::getrlimit(a[0], a[1]),
        98 => time::getrusage(a[0], a[1]),
        102 | 104 | 107 | 108 => Ok(0), // getuid, getgid, geteuid, getegid
        110 => Ok(0),                   // getppid: no parent process
        127 => signal::rt_sigpending(a[0], a[1]),
        128 => signal::rt_sigtimedwait(a[0], a[1], a[2], a[3]),
        130 => signal::rt_sigsuspend(a[0], a[1]),
        131 => signal::sigaltstack(a[0], a[1], frame),
        157 => process::prctl(a[0], a[1]),
        158 => process::arch_prctl(a[0], a[1]),
        186 => process::gettid(),
        160 => process::setrlimit(a[0], a[1]),
        200 => signal::tkill(a[0], a[1]),
        202 => futex::sys_futex(a[0], a[1], a[2], a[3], a[4], a[5]),
        204 => process::sched_getaffinity(a[0], a[1], a[2]),
        218 => process::set_tid_address(a[0]),
        219 => signal::restart_syscall(),
        228 => time::clock_gettime(a[0], a[1]),
        229 => time::clock_getres(a[0], a[1]),
        230 => time::clock_nanosleep(a[0], a[1], a[2], a[3]),
        213 => poll::epoll_create(a[0]),
        231 => process::exit_group(a[0]),
        232 => poll::epoll_wait(a[0], a[1], a[2], a[3]),
        233 => poll::epoll_ctl(a[0], a[1], a[2], a[3]),
        234 => signal::tgkill(a[0], a[1], a[2]),
        270 => poll::pselect6(a[0], a[1], a[2], a[3], a[4], a[5]),
        271 => poll::ppoll(a[0], a[1], a[2], a[3], a[4]),
        273 => process::set_robust_list(a[0], a[1]),
        281 => poll::epoll_pwait(a[0], a[1], a[2], a[3], a[4], a[5]),
        288 => net::accept4(a[0], a[1], a[2], a[3]),
        291 => poll::epoll_create1(a[0]),
        292 => io::dup3(a[0], a[1], a[2]),
        302 => process::prlimit64(a[0], a[1], a[2], a[3]),
        309 => process::getcpu(a[0], a[1]),
        318 => time::getrandom(a[0], a[1], a[2]),
        441 => poll::epoll_pwait2(a[0], a[1], a[2], a[3], a[4], a[5]),
        _ => {
            log_unimplemented(number);
            Err(Errno::ENOSYS)
        }
    }
}
