//! `memory`: the address-space system calls.
//!
//! - anonymous `mmap` of 4 KiB, 64 KiB, 1 MiB and 16 MiB: every page reads
//!   zero, takes a pattern, reads it back; then `munmap`;
//! - `brk`: query, grow by 1 MiB (the new memory is zero and writable),
//!   shrink back (the break returns to where it was);
//! - `mprotect`: a page made read-only can no longer be written by the
//!   kernel (`clock_gettime` into it fails with EFAULT, with no signal
//!   involved), still reads its old contents, and is writable again after
//!   `mprotect(PROT_READ|PROT_WRITE)`;
//! - `madvise(MADV_DONTNEED)` on private anonymous pages: they read zero;
//! - a 64 MiB `Vec` (the allocator's path to big mappings), every page
//!   touched and summed.
//!
//! Raw system calls (`image_support::sys`) are used so that nothing in libc
//! stands between the check and the kernel. Exits 0 when all checks pass.

use image_support::{Checker, SysResult, show, sys};

const PAGE: usize = 4096;

fn mmap_anon(len: usize) -> SysResult {
    // SAFETY: a fresh anonymous mapping at an address the kernel picks
    // touches no existing memory.
    unsafe {
        sys(
            libc::SYS_mmap,
            &[
                0,
                len as u64,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX, // fd -1
                0,
            ],
        )
    }
}

fn munmap(addr: u64, len: usize) -> SysResult {
    // SAFETY: callers only unmap mappings they made and no longer use.
    unsafe { sys(libc::SYS_munmap, &[addr, len as u64]) }
}

fn main() -> std::process::ExitCode {
    let mut c = Checker::new("memory");
    for len in [PAGE, 64 << 10, 1 << 20, 16 << 20] {
        mmap_touch_unmap(&mut c, len);
    }
    brk_grow_shrink(&mut c);
    mprotect_round_trip(&mut c);
    madvise_dontneed(&mut c);
    big_vec(&mut c);
    c.finish()
}

fn mmap_touch_unmap(c: &mut Checker, len: usize) {
    let name = format!("mmap_{}k", len / 1024);
    let addr = match mmap_anon(len) {
        Ok(a) => a as u64,
        Err(e) => {
            c.check(
                &name,
                false,
                format!("mmap({len}) failed: {}", show(Err(e))),
            );
            return;
        }
    };
    let pages = len / PAGE;
    let mut nonzero = 0;
    let mut mismatched = 0;
    for p in 0..pages {
        let q = (addr as usize + p * PAGE) as *mut u64;
        // SAFETY: the page lies inside the fresh read-write mapping.
        unsafe {
            if q.read_volatile() != 0 || q.add(PAGE / 8 - 1).read_volatile() != 0 {
                nonzero += 1;
            }
            q.write_volatile(p as u64 ^ 0xa5a5_a5a5);
            q.add(PAGE / 8 - 1).write_volatile(!(p as u64));
        }
    }
    for p in 0..pages {
        let q = (addr as usize + p * PAGE) as *mut u64;
        // SAFETY: as above.
        unsafe {
            if q.read_volatile() != p as u64 ^ 0xa5a5_a5a5
                || q.add(PAGE / 8 - 1).read_volatile() != !(p as u64)
            {
                mismatched += 1;
            }
        }
    }
    let unmapped = munmap(addr, len);
    c.check(
        &name,
        nonzero == 0 && mismatched == 0 && unmapped == Ok(0),
        format!(
            "{pages} pages at {addr:#x}: {nonzero} not zero-filled, {mismatched} lost their pattern; munmap {}",
            show(unmapped)
        ),
    );
}

fn brk_grow_shrink(c: &mut Checker) {
    const GROW: u64 = 1 << 20;
    // SAFETY: brk(0) only queries. Growing and shrinking back touches only
    // memory this function adds; nothing allocates between the calls (musl's
    // malloc may use brk too, so no printing until the break is restored).
    let (start, grown, zero, shrunk) = unsafe {
        let start = sys(libc::SYS_brk, &[0]).unwrap_or(0) as u64;
        let grown = sys(libc::SYS_brk, &[start + GROW]).unwrap_or(0) as u64;
        let mut zero = true;
        if grown == start + GROW {
            for off in (0..GROW).step_by(PAGE) {
                let q = (start + off) as *mut u8;
                zero &= q.read_volatile() == 0;
                q.write_volatile(0x5a);
                zero &= q.read_volatile() == 0x5a;
            }
        }
        let shrunk = sys(libc::SYS_brk, &[start]).unwrap_or(0) as u64;
        (start, grown, zero, shrunk)
    };
    c.check(
        "brk_grow",
        start != 0 && grown == start + GROW && zero,
        format!(
            "break {start:#x} -> {grown:#x} (asked {:#x}); new pages zero and writable: {zero}",
            start + GROW
        ),
    );
    c.check(
        "brk_shrink",
        shrunk == start,
        format!("break back to {shrunk:#x} (asked {start:#x})"),
    );
}

fn clock_into(addr: u64) -> SysResult {
    // SAFETY: the kernel writes a timespec at `addr` or fails with EFAULT;
    // callers pass a page of their own mapping.
    unsafe {
        sys(
            libc::SYS_clock_gettime,
            &[libc::CLOCK_MONOTONIC as u64, addr],
        )
    }
}

fn mprotect(addr: u64, prot: i32) -> SysResult {
    // SAFETY: changes the protection of the caller's own test page only.
    unsafe { sys(libc::SYS_mprotect, &[addr, PAGE as u64, prot as u64]) }
}

fn mprotect_round_trip(c: &mut Checker) {
    let Ok(addr) = mmap_anon(PAGE) else {
        c.check("mprotect", false, "mmap of the test page failed");
        return;
    };
    let addr = addr as u64;
    let p = addr as *mut u64;
    // SAFETY: the page is mapped read-write.
    unsafe { p.add(8).write_volatile(0x1234_5678) };
    let ro = mprotect(addr, libc::PROT_READ);
    let write_while_ro = clock_into(addr);
    // SAFETY: the page is still readable.
    let kept = unsafe { p.add(8).read_volatile() };
    let rw = mprotect(addr, libc::PROT_READ | libc::PROT_WRITE);
    let write_after = clock_into(addr);
    // SAFETY: the page is read-write again.
    unsafe { p.add(9).write_volatile(1) };
    c.check(
        "mprotect_read_only",
        ro == Ok(0) && write_while_ro == Err(libc::EFAULT) && kept == 0x1234_5678,
        format!(
            "mprotect(PROT_READ) {}; the kernel writing into it: {} (expected EFAULT); contents kept: {}",
            show(ro),
            show(write_while_ro),
            kept == 0x1234_5678
        ),
    );
    c.check(
        "mprotect_read_write_again",
        rw == Ok(0) && write_after == Ok(0),
        format!(
            "mprotect(PROT_READ|PROT_WRITE) {}; the kernel writing into it: {}",
            show(rw),
            show(write_after)
        ),
    );
    let _ = munmap(addr, PAGE);
}

fn madvise_dontneed(c: &mut Checker) {
    const PAGES: usize = 16;
    let Ok(addr) = mmap_anon(PAGES * PAGE) else {
        c.check("madvise_dontneed", false, "mmap failed");
        return;
    };
    let base = addr as usize as *mut u8;
    // SAFETY: all inside the mapping.
    unsafe { std::ptr::write_bytes(base, 0xee, PAGES * PAGE) };
    // SAFETY: the caller's own private anonymous mapping, no references in
    // use: MADV_DONTNEED only drops its contents.
    let r = unsafe {
        sys(
            libc::SYS_madvise,
            &[
                addr as u64,
                (PAGES * PAGE) as u64,
                libc::MADV_DONTNEED as u64,
            ],
        )
    };
    // SAFETY: still mapped.
    let nonzero = unsafe {
        std::slice::from_raw_parts(base, PAGES * PAGE)
            .iter()
            .filter(|&&b| b != 0)
            .count()
    };
    c.check(
        "madvise_dontneed",
        r == Ok(0) && nonzero == 0,
        format!(
            "madvise {}; {nonzero} of {} bytes not zero afterwards",
            show(r),
            PAGES * PAGE
        ),
    );
    let _ = munmap(addr as u64, PAGES * PAGE);
}

fn big_vec(c: &mut Checker) {
    const LEN: usize = 64 << 20;
    let mut v: Vec<u8> = Vec::new();
    if v.try_reserve_exact(LEN).is_err() {
        c.check("vec_64m", false, "cannot allocate 64 MiB");
        return;
    }
    v.resize(LEN, 0);
    for (i, page) in v.chunks_mut(PAGE).enumerate() {
        page[0] = (i % 251) as u8;
        page[PAGE - 1] = 1;
    }
    let sum: u64 = v
        .chunks(PAGE)
        .map(|p| p[0] as u64 + p[PAGE - 1] as u64)
        .sum();
    let pages = LEN / PAGE;
    let want: u64 = (0..pages).map(|i| (i % 251) as u64 + 1).sum();
    c.check(
        "vec_64m",
        sum == want,
        format!("64 MiB Vec, {pages} pages touched, checksum {sum} (expected {want})"),
    );
}
