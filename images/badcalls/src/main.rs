//! `badcalls`: system calls with bad arguments must fail with exactly the
//! errno Linux gives, and the process must live on.
//!
//! | call | expected |
//! |---|---|
//! | `write(1, 0xffff800000000000, 16)` (kernel half) | EFAULT |
//! | `write(1, 0x1000, 16)` (unmapped low page) | EFAULT |
//! | `read(0, 0xffff800000000000, 16)` | EFAULT (Linux checks the buffer before it could block) |
//! | `clock_gettime(CLOCK_MONOTONIC, 0xffff800000000000)` | EFAULT |
//! | `nanosleep(NULL, NULL)` | EFAULT |
//! | system call 999 | ENOSYS |
//! | `mmap(NULL, 0, ...)` | EINVAL |
//! | `munmap(page + 1, 4096)` | EINVAL |
//! | `futex(0x1000, FUTEX_WAIT, 0, NULL)` | EFAULT |
//! | `write(99, buf, 1)` | EBADF |
//! | `write(1, buf, 16)` whose last 8 bytes are on an unmapped page | 8 or EFAULT |
//!
//! The straddling write: Linux (6.x) copies what it can into a regular
//! file and returns 8 (a short count); a pipe or a terminal copies the
//! chunk at once and fails with EFAULT when any of it faults (both seen on
//! the host). Either is correct for a console;
//! 16 (or anything else) is not. The 8 bytes are `STRADDLE`.

use image_support::{Checker, show, sys};

const KERNEL_ADDR: u64 = 0xffff_8000_0000_0000;
const LOW_UNMAPPED: u64 = 0x1000;
const PAGE: u64 = 4096;

fn main() -> std::process::ExitCode {
    let mut c = Checker::new("badcalls");
    let buf = [b'x'; 16];
    // SAFETY (all calls below): every pointer is either one the kernel must
    // reject without touching user memory, or a live buffer of the stated
    // length; no call unmaps memory in use or ends the process.
    unsafe {
        let r = sys(libc::SYS_write, &[1, KERNEL_ADDR, 16]);
        c.expect_errno("write_kernel_address", r, libc::EFAULT);
        let r = sys(libc::SYS_write, &[1, LOW_UNMAPPED, 16]);
        c.expect_errno("write_unmapped_low_address", r, libc::EFAULT);
        let r = sys(libc::SYS_read, &[0, KERNEL_ADDR, 16]);
        c.expect_errno("read_into_kernel_address", r, libc::EFAULT);
        let r = sys(
            libc::SYS_clock_gettime,
            &[libc::CLOCK_MONOTONIC as u64, KERNEL_ADDR],
        );
        c.expect_errno("clock_gettime_kernel_pointer", r, libc::EFAULT);
        let r = sys(libc::SYS_nanosleep, &[0, 0]);
        c.expect_errno("nanosleep_null", r, libc::EFAULT);
        let r = sys(999, &[]);
        c.expect_errno("syscall_999", r, libc::ENOSYS);
        let r = sys(
            libc::SYS_mmap,
            &[
                0,
                0,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        );
        c.expect_errno("mmap_length_zero", r, libc::EINVAL);

        // Two fresh pages: the first stays, the second is unmapped so the
        // straddling write has a hole right after its buffer.
        let two = sys(
            libc::SYS_mmap,
            &[
                0,
                2 * PAGE,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        );
        let Ok(base) = two else {
            c.check(
                "setup_mmap",
                false,
                format!("mmap of 2 pages: {}", show(two)),
            );
            return c.finish();
        };
        let base = base as u64;
        let r = sys(libc::SYS_munmap, &[base + 1, PAGE]);
        c.expect_errno("munmap_unaligned", r, libc::EINVAL);
        let hole = sys(libc::SYS_munmap, &[base + PAGE, PAGE]);
        c.check("setup_unmap_second_page", hole == Ok(0), show(hole));

        let r = sys(
            libc::SYS_futex,
            &[LOW_UNMAPPED, libc::FUTEX_WAIT as u64, 0, 0],
        );
        c.expect_errno("futex_wait_unmapped", r, libc::EFAULT);
        let r = sys(libc::SYS_write, &[99, buf.as_ptr() as u64, 1]);
        c.expect_errno("write_bad_fd", r, libc::EBADF);

        let start = base + PAGE - 8;
        std::ptr::copy_nonoverlapping(b"STRADDLE".as_ptr(), start as *mut u8, 8);
        let r = sys(libc::SYS_write, &[1, start, 16]);
        println!();
        c.check(
            "write_straddling_unmapped",
            r == Ok(8) || r == Err(libc::EFAULT),
            format!(
                "{} (expected 8, a short write, or EFAULT; never 16)",
                show(r)
            ),
        );
        let _ = sys(libc::SYS_munmap, &[base, PAGE]);
    }
    c.check("still_alive", true, "the process survived every bad call");
    c.finish()
}
