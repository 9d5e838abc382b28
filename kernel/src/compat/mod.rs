//! The kernel-thread interfaces of other kernels, over `kthread`.
//!
//! Each module keeps its system's names, arguments and documented
//! behaviour (`../shared/reference/kthread-semantics.md`), so each
//! behaviour is tested under its own name. Errors are `Errno` values;
//! nothing here panics on a bad argument.

pub mod freebsd;
pub mod freebsd4;
pub mod illumos;
pub mod netbsd;
pub mod sysinit;
