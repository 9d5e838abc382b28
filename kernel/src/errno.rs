//! Error numbers, with Linux's values (the process ABI is Linux's).
//!
//! Kernel interfaces return `Result<T, Errno>`; the compatibility modules
//! for NetBSD, FreeBSD and illumos use the same names their systems do.

use core::fmt;

/// The Unix names are kept as they are, so code reads like the man pages.
#[allow(clippy::upper_case_acronyms)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Errno {
    ESRCH = 3,
    EAGAIN = 11,
    ENOMEM = 12,
    EINVAL = 22,
}

impl Errno {
    /// On Linux (as on FreeBSD) `EWOULDBLOCK` is `EAGAIN`.
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;

    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn name(self) -> &'static str {
        match self {
            Errno::ESRCH => "ESRCH",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EINVAL => "EINVAL",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}
