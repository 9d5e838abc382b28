//! `spindle_runner`: everything the host does around a Spindle guest.
//!
//! The `runner` binary (`cargo spindle ...`) and the `spindle-tests` crate
//! share this library: installing the tools ([`setup`]), building the kernel
//! ([`kbuild`]), describing a QEMU boot ([`qemu`]), running a guest and
//! capturing its serial log ([`guest`]), reading in-kernel test results
//! ([`ktest`]), the firmware-floor kernel ([`floor`]), the boot benchmark
//! ([`bench`]), the gdb session ([`gdb`]), the guest programs in
//! `images/` with the process they become ([`images`]) and the control
//! channel to a running guest ([`ctl`]).

pub mod accel;
pub mod bench;
pub mod bench_net;
pub mod bench_sched;
pub mod bench_syscalls;
pub mod ctl;
pub mod floor;
pub mod gdb;
pub mod guest;
pub mod images;
pub mod iperf;
pub mod iperf_session;
pub mod kbuild;
pub mod ktest;
pub mod netns;
pub mod process_log;
pub mod qemu;
pub mod setup;
pub mod size;

pub use guest::{GuestOutcome, GuestResult, RunLimits, run_guest, run_guest_with};
pub use qemu::{Accel, Firmware, Machine, Net, QemuConfig};

use std::path::PathBuf;

/// The workspace root, fixed when the runner crate is compiled.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Where the runner keeps files it generates (floor kernel, gdb serial log).
pub fn scratch_dir() -> PathBuf {
    workspace_root().join("target").join("spindle")
}
