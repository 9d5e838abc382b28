//! Error numbers, with Linux's values (the process ABI is Linux's).
//!
//! Kernel interfaces return `Result<T, Errno>`; the compatibility modules
//! for NetBSD, FreeBSD and illumos use the same names their systems do.

use core::fmt;

/// The Unix names are kept as they are, so code reads like the man pages.
#[allow(clippy::upper_case_acronyms, non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Errno {
    EPERM = 1,
    ESRCH = 3,
    EINTR = 4,
    EBADF = 9,
    EAGAIN = 11,
    ENOMEM = 12,
    EFAULT = 14,
    EEXIST = 17,
    EINVAL = 22,
    ENOTTY = 25,
    ERANGE = 34,
    ENOSYS = 38,
    ETIMEDOUT = 110,
    /// Kernel-internal (never seen by user mode): restart the interrupted
    /// call unless a handler without `SA_RESTART` ran (then `EINTR`).
    ERESTARTSYS = 512,
    /// Kernel-internal: restart unless a handler ran (then `EINTR`).
    ERESTARTNOHAND = 514,
    /// Kernel-internal: restart through `restart_syscall` unless a handler
    /// ran (then `EINTR`).
    ERESTART_RESTARTBLOCK = 516,
}

impl Errno {
    /// On Linux (as on FreeBSD) `EWOULDBLOCK` is `EAGAIN`.
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;

    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ESRCH => "ESRCH",
            Errno::EINTR => "EINTR",
            Errno::EBADF => "EBADF",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EFAULT => "EFAULT",
            Errno::EEXIST => "EEXIST",
            Errno::EINVAL => "EINVAL",
            Errno::ENOTTY => "ENOTTY",
            Errno::ERANGE => "ERANGE",
            Errno::ENOSYS => "ENOSYS",
            Errno::ETIMEDOUT => "ETIMEDOUT",
            Errno::ERESTARTSYS => "ERESTARTSYS",
            Errno::ERESTARTNOHAND => "ERESTARTNOHAND",
            Errno::ERESTART_RESTARTBLOCK => "ERESTART_RESTARTBLOCK",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}
