//! ELF core files of a user process, laid out as Linux writes them, so
//! `gdb <image> <core>` opens them.
//!
//! A `CorePlan` is gathered from a process whose user LWPs are parked (or,
//! for the LWP taking a fatal signal, have left a snapshot): their
//! registers, FPU images, signal masks; the auxiliary vector; and the runs
//! of present pages of every region. It owns copies of all that and takes
//! no locks after gathering except, while writing, what `read_page` takes.
//! The file is streamed: `size` is known first, then `write` hands out the
//! header, program headers, notes and pages in order, a page at a time, so
//! no core is ever held whole in the heap.
//!
//! Layout: ELF header; one `PT_NOTE` then one `PT_LOAD` per run of present
//! pages; the notes (per thread `NT_PRSTATUS` then, after the first
//! thread's, `NT_PRPSINFO`, `NT_SIGINFO`, `NT_AUXV`, then that thread's
//! `NT_FPREGSET`), padded to a page; the pages. The first thread is the
//! one that took the fatal signal, else the representative LWP.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::mm::PAGE_SIZE;
use crate::mm::vm::{AddressSpace, prot};
use crate::proc::Process;
use crate::proc::lwp::{LwpId, flags};
use crate::signal::{SigInfo, UserSnapshot};

const ELF_HEADER_SIZE: u64 = 64;
const PROGRAM_HEADER_SIZE: u64 = 56;
const NOTE_HEADER_SIZE: u64 = 12;
/// "CORE" and its NUL, padded to 4 bytes.
const NOTE_NAME: &[u8; 8] = b"CORE\0\0\0\0";
const NOTE_NAME_SIZE: u32 = 5;

const NT_PRSTATUS: u32 = 1;
const NT_FPREGSET: u32 = 2;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_SIGINFO: u32 = 0x5349_4749;

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// `sizeof(struct elf_prstatus)` on x86_64.
pub const PRSTATUS_SIZE: usize = 336;
/// Where `pr_reg` (`struct user_regs_struct`, 27 words) starts in it.
pub const PRSTATUS_REGS_OFFSET: usize = 112;
/// `sizeof(struct elf_prpsinfo)` on x86_64.
pub const PRPSINFO_SIZE: usize = 136;
const FXSAVE_SIZE: usize = 512;
const AT_NULL: u64 = 0;
/// The most `PT_LOAD`s: with the `PT_NOTE`, `e_phnum` stays below
/// 0xffff (`PN_XNUM`, which would need an extra section header).
const MAX_LOAD_SEGMENTS: usize = 0xfffd;

/// One thread of the core: an LWP's user state.
pub struct CoreThread {
    /// The Linux thread id (`pr_pid`).
    pub tid: i32,
    pub snapshot: UserSnapshot,
    pub pending: u64,
    pub held: u64,
    pub user_time_ns: u64,
}

/// A run of present pages and the protection of its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub start: u64,
    pub size: u64,
    pub prot: u32,
}

/// Everything a core file holds, but the page contents.
pub struct CorePlan {
    pub pid: u32,
    /// The signal that ended the process (0: `gcore`).
    pub signal: u32,
    pub name: String,
    /// The first one is the thread gdb shows as current.
    pub threads: Vec<CoreThread>,
    pub siginfo: SigInfo,
    /// Ends with `AT_NULL`.
    pub auxv: Vec<(u64, u64)>,
    pub segments: Vec<Segment>,
}

fn align4(size: u64) -> u64 {
    size.div_ceil(4) * 4
}

fn note_size(descriptor_size: usize) -> u64 {
    NOTE_HEADER_SIZE + NOTE_NAME.len() as u64 + align4(descriptor_size as u64)
}

/// Writes little-endian fields into a fixed buffer.
struct Fields<'a>(&'a mut [u8]);

impl Fields<'_> {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        if let Some(place) = self.0.get_mut(at..at + bytes.len()) {
            place.copy_from_slice(bytes);
        }
    }
    fn u16(&mut self, at: usize, value: u16) {
        self.put(at, &value.to_le_bytes());
    }
    fn u32(&mut self, at: usize, value: u32) {
        self.put(at, &value.to_le_bytes());
    }
    fn i32(&mut self, at: usize, value: i32) {
        self.put(at, &value.to_le_bytes());
    }
    fn u64(&mut self, at: usize, value: u64) {
        self.put(at, &value.to_le_bytes());
    }
}

impl CorePlan {
    /// Gathers the plan for `process` (its address space `vm`): every user
    /// LWP that left a snapshot, `first` (else the representative) first.
    /// Errors when no user LWP left one.
    pub fn gather(
        process: &Arc<Process>,
        vm: &AddressSpace,
        signal: u32,
        first: Option<LwpId>,
    ) -> Result<CorePlan, &'static str> {
        let leader = first.or_else(|| crate::signal::representative(process).map(|lwp| lwp.id));
        let mut lwps: Vec<_> = process
            .lwps()
            .into_iter()
            .filter(|lwp| lwp.has_flag(flags::USER) && !lwp.has_flag(flags::KTHREAD))
            .collect();
        // Stable: the leader first, the others in creation order.
        lwps.sort_by_key(|lwp| Some(lwp.id) != leader);
        let tick_ns = 1_000_000_000 / crate::time::tick_hz().max(1);
        let mut threads = Vec::new();
        for lwp in &lwps {
            let Some(snapshot) = lwp.user_snapshot() else {
                continue;
            };
            let pending = {
                let _signals = process.signals.lock();
                lwp.signals.lock().pending.set.0
            };
            threads.push(CoreThread {
                tid: crate::uproc::tid_of(lwp),
                snapshot,
                pending,
                held: lwp.hold_mask().0,
                user_time_ns: lwp
                    .cpu_ticks
                    .load(core::sync::atomic::Ordering::Relaxed)
                    .saturating_mul(tick_ns),
            });
        }
        let Some(leading) = threads.first() else {
            return Err("no user LWP of the process is parked");
        };
        let siginfo = leading.snapshot.siginfo.unwrap_or(SigInfo {
            signo: signal,
            ..SigInfo::default()
        });
        let mut auxv: Vec<(u64, u64)> = process.auxv();
        if let Some(end) = auxv.iter().position(|&(key, _)| key == AT_NULL) {
            auxv.truncate(end);
        }
        auxv.push((AT_NULL, 0));
        let segments = present_segments(vm)?;
        Ok(CorePlan {
            pid: process.pid,
            signal,
            name: process.name(),
            threads,
            siginfo,
            auxv,
            segments,
        })
    }

    fn notes_size(&self) -> u64 {
        let per_thread = note_size(PRSTATUS_SIZE) + note_size(FXSAVE_SIZE);
        self.threads.len() as u64 * per_thread
            + note_size(PRPSINFO_SIZE)
            + note_size(crate::signal::SIGINFO_SIZE)
            + note_size(self.auxv.len() * 16)
    }

    fn notes_offset(&self) -> u64 {
        ELF_HEADER_SIZE + (1 + self.segments.len() as u64) * PROGRAM_HEADER_SIZE
    }

    /// Where the first page's bytes start: the notes' end, page-aligned.
    fn data_offset(&self) -> u64 {
        (self.notes_offset() + self.notes_size()).div_ceil(PAGE_SIZE) * PAGE_SIZE
    }

    /// The size of the whole file in bytes.
    pub fn size(&self) -> u64 {
        self.data_offset()
            + self
                .segments
                .iter()
                .map(|segment| segment.size)
                .sum::<u64>()
    }

    /// Streams the file to `out`, `size()` bytes exactly. `read_page`
    /// fills a page's bytes (false: it is gone; zeros are written).
    pub fn write(
        &self,
        mut read_page: impl FnMut(u64, &mut [u8]) -> bool,
        mut out: impl FnMut(&[u8]),
    ) {
        out(&self.elf_header());
        let mut offset = self.data_offset();
        let mut header = [0u8; PROGRAM_HEADER_SIZE as usize];
        program_header(
            &mut header,
            PT_NOTE,
            0,
            self.notes_offset(),
            0,
            self.notes_size(),
            0,
            4,
        );
        out(&header);
        for segment in &self.segments {
            let mut segment_flags = 0;
            if segment.prot & prot::READ != 0 {
                segment_flags |= PF_R;
            }
            if segment.prot & prot::WRITE != 0 {
                segment_flags |= PF_W;
            }
            if segment.prot & prot::EXEC != 0 {
                segment_flags |= PF_X;
            }
            let (start, size) = (segment.start, segment.size);
            program_header(
                &mut header,
                PT_LOAD,
                segment_flags,
                offset,
                start,
                size,
                size,
                PAGE_SIZE,
            );
            out(&header);
            offset += size;
        }
        self.write_notes(&mut out);
        let padding = self.data_offset() - self.notes_offset() - self.notes_size();
        out(&alloc::vec![0u8; padding as usize]);
        let mut page = alloc::vec![0u8; PAGE_SIZE as usize];
        for segment in &self.segments {
            let mut address = segment.start;
            while address < segment.start + segment.size {
                if !read_page(address, &mut page) {
                    page.fill(0);
                }
                out(&page);
                address += PAGE_SIZE;
            }
        }
    }

    fn elf_header(&self) -> [u8; ELF_HEADER_SIZE as usize] {
        let mut header = [0u8; ELF_HEADER_SIZE as usize];
        let mut fields = Fields(&mut header);
        // Magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE.
        fields.put(0, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        fields.u16(16, elf::abi::ET_CORE);
        fields.u16(18, elf::abi::EM_X86_64);
        fields.u32(20, 1);
        fields.u64(32, ELF_HEADER_SIZE);
        fields.u16(52, ELF_HEADER_SIZE as u16);
        fields.u16(54, PROGRAM_HEADER_SIZE as u16);
        fields.u16(56, (1 + self.segments.len()) as u16);
        header
    }

    fn write_notes(&self, out: &mut impl FnMut(&[u8])) {
        for (index, thread) in self.threads.iter().enumerate() {
            write_note(out, NT_PRSTATUS, &self.prstatus(thread));
            if index == 0 {
                write_note(out, NT_PRPSINFO, &self.prpsinfo());
                write_note(out, NT_SIGINFO, &self.siginfo.to_bytes());
                let auxv: Vec<u8> = self
                    .auxv
                    .iter()
                    .flat_map(|&(key, value)| {
                        key.to_le_bytes().into_iter().chain(value.to_le_bytes())
                    })
                    .collect();
                write_note(out, NT_AUXV, &auxv);
            }
            write_note(out, NT_FPREGSET, &thread.snapshot.fpu);
        }
    }

    /// `struct elf_prstatus` for `thread`.
    pub fn prstatus(&self, thread: &CoreThread) -> [u8; PRSTATUS_SIZE] {
        let mut status = [0u8; PRSTATUS_SIZE];
        let mut fields = Fields(&mut status);
        // pr_info (si_signo, si_code, si_errno), pr_cursig.
        fields.u32(0, self.signal);
        fields.u16(12, self.signal as u16);
        fields.u64(16, thread.pending);
        fields.u64(24, thread.held);
        // pr_pid, pr_ppid (the kernel), pr_pgrp, pr_sid.
        fields.i32(32, thread.tid);
        fields.u32(40, self.pid);
        fields.u32(44, self.pid);
        // pr_utime.
        fields.u64(48, thread.user_time_ns / 1_000_000_000);
        fields.u64(56, thread.user_time_ns % 1_000_000_000 / 1_000);
        let frame = &thread.snapshot.frame;
        let registers = [
            frame.r15,
            frame.r14,
            frame.r13,
            frame.r12,
            frame.rbp,
            frame.rbx,
            frame.r11,
            frame.r10,
            frame.r9,
            frame.r8,
            frame.rax,
            frame.rcx,
            frame.rdx,
            frame.rsi,
            frame.rdi,
            u64::MAX, // orig_rax: not in a system call
            frame.rip,
            frame.cs,
            frame.rflags,
            frame.rsp,
            frame.ss,
            thread.snapshot.fs_base,
            0, // gs_base
            0, // ds
            0, // es
            0, // fs
            0, // gs
        ];
        for (index, value) in registers.iter().enumerate() {
            fields.u64(PRSTATUS_REGS_OFFSET + index * 8, *value);
        }
        // pr_fpvalid: the NT_FPREGSET note follows.
        fields.u32(PRSTATUS_REGS_OFFSET + registers.len() * 8, 1);
        status
    }

    /// `struct elf_prpsinfo`.
    pub fn prpsinfo(&self) -> [u8; PRPSINFO_SIZE] {
        let mut info = [0u8; PRPSINFO_SIZE];
        let mut fields = Fields(&mut info);
        // pr_state and pr_sname: running (taking a signal) or stopped.
        let (state, letter) = if self.signal == 0 {
            (3, b'T')
        } else {
            (0, b'R')
        };
        fields.put(0, &[state, letter]);
        fields.u32(24, self.pid);
        fields.u32(32, self.pid);
        fields.u32(36, self.pid);
        let name = self.name.as_bytes();
        fields.put(40, &name[..name.len().min(15)]);
        fields.put(56, &name[..name.len().min(79)]);
        info
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the fields of one ELF program header"
)]
fn program_header(
    header: &mut [u8; PROGRAM_HEADER_SIZE as usize],
    kind: u32,
    segment_flags: u32,
    offset: u64,
    address: u64,
    file_size: u64,
    memory_size: u64,
    alignment: u64,
) {
    let mut fields = Fields(header);
    fields.u32(0, kind);
    fields.u32(4, segment_flags);
    fields.u64(8, offset);
    fields.u64(16, address);
    fields.u64(24, 0);
    fields.u64(32, file_size);
    fields.u64(40, memory_size);
    fields.u64(48, alignment);
}

fn write_note(out: &mut impl FnMut(&[u8]), kind: u32, descriptor: &[u8]) {
    let mut header = [0u8; NOTE_HEADER_SIZE as usize];
    let mut fields = Fields(&mut header);
    fields.u32(0, NOTE_NAME_SIZE);
    fields.u32(4, descriptor.len() as u32);
    fields.u32(8, kind);
    out(&header);
    out(NOTE_NAME);
    out(descriptor);
    let padding = align4(descriptor.len() as u64) as usize - descriptor.len();
    out(&[0u8; 3][..padding]);
}

/// The runs of present pages of every region of `vm`, in address order.
fn present_segments(vm: &AddressSpace) -> Result<Vec<Segment>, &'static str> {
    let regions: Vec<(u64, u64, u32)> = vm
        .layout
        .lock()
        .regions
        .iter()
        .map(|(&start, region)| (start, region.end, region.prot))
        .collect();
    let mut segments = Vec::new();
    for (start, end, region_prot) in regions {
        let mut from = start;
        while let Some(page) = vm.next_present_page(from, end) {
            let mut run_end = page + PAGE_SIZE;
            while run_end < end && vm.translate(run_end).is_some() {
                run_end += PAGE_SIZE;
            }
            segments.push(Segment {
                start: page,
                size: run_end - page,
                prot: region_prot,
            });
            if segments.len() > MAX_LOAD_SEGMENTS {
                return Err("too many runs of pages for one core file");
            }
            from = run_end;
        }
    }
    Ok(segments)
}

/// A plan with `threads` made-up threads and two segments, for tests.
pub fn test_plan(threads: usize) -> CorePlan {
    let mut frame = crate::uproc::user_frame(0x40_1234, 0x7fff_0000);
    frame.rbp = 0x7fff_0100;
    frame.rax = 0xaa;
    let snapshot = UserSnapshot {
        frame,
        fs_base: 0x7000_0000,
        fpu: [0x5a; FXSAVE_SIZE],
        siginfo: None,
    };
    CorePlan {
        pid: 7,
        signal: 11,
        name: String::from("a-rather-long-program-name"),
        threads: (0..threads)
            .map(|index| CoreThread {
                tid: 7 + index as i32,
                snapshot: snapshot.clone(),
                pending: 0,
                held: 0x4000,
                user_time_ns: 1_500_000_000,
            })
            .collect(),
        siginfo: SigInfo::fault(11, 1, 0xdead),
        auxv: alloc::vec![(9, 0x40_1000), (AT_NULL, 0)],
        segments: alloc::vec![
            Segment {
                start: 0x40_0000,
                size: 2 * PAGE_SIZE,
                prot: prot::READ | prot::EXEC
            },
            Segment {
                start: 0x7fff_0000,
                size: PAGE_SIZE,
                prot: prot::READ | prot::WRITE
            },
        ],
    }
}

crate::ktests! {
    fn prstatus_fields_sit_where_linux_puts_them() {
        let plan = test_plan(1);
        let status = plan.prstatus(&plan.threads[0]);
        let word = |at: usize| u64::from_le_bytes(status[at..at + 8].try_into().unwrap());
        let int = |at: usize| u32::from_le_bytes(status[at..at + 4].try_into().unwrap());
        assert_eq!(int(0), 11, "si_signo");
        assert_eq!(u16::from_le_bytes([status[12], status[13]]), 11, "pr_cursig");
        assert_eq!(word(24), 0x4000, "pr_sighold");
        assert_eq!(int(32), 7, "pr_pid is the tid");
        assert_eq!((word(48), word(56)), (1, 500_000), "pr_utime");
        assert_eq!(word(PRSTATUS_REGS_OFFSET + 4 * 8), 0x7fff_0100, "rbp");
        assert_eq!(word(PRSTATUS_REGS_OFFSET + 10 * 8), 0xaa, "rax");
        assert_eq!(word(PRSTATUS_REGS_OFFSET + 15 * 8), u64::MAX, "orig_rax");
        assert_eq!(word(PRSTATUS_REGS_OFFSET + 16 * 8), 0x40_1234, "rip");
        assert_eq!(word(PRSTATUS_REGS_OFFSET + 19 * 8), 0x7fff_0000, "rsp");
        assert_eq!(word(PRSTATUS_REGS_OFFSET + 21 * 8), 0x7000_0000, "fs_base");
        assert_eq!(int(328), 1, "pr_fpvalid");
        let info = plan.prpsinfo();
        assert_eq!(&info[40..56], b"a-rather-long-p\0", "pr_fname is cut to 15 bytes");
    }

    fn core_file_layout_matches_its_size_and_offsets() {
        let plan = test_plan(2);
        let mut file = Vec::new();
        plan.write(
            |address, page| {
                page.fill((address >> 12) as u8);
                true
            },
            |bytes| file.extend_from_slice(bytes),
        );
        assert_eq!(file.len() as u64, plan.size());
        let half = |at: usize| u16::from_le_bytes([file[at], file[at + 1]]);
        let int = |at: usize| u32::from_le_bytes(file[at..at + 4].try_into().unwrap());
        let word = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
        assert_eq!(&file[..4], b"\x7fELF");
        assert_eq!((half(16), half(18), half(56)), (4, 62, 3), "ET_CORE, EM_X86_64, 3 headers");
        // PT_NOTE right after the three program headers.
        let notes = 64 + 3 * 56;
        assert_eq!((int(64), word(64 + 8)), (PT_NOTE, notes as u64));
        let notes_size = word(64 + 32) as usize;
        // Notes: PRSTATUS, PRPSINFO, SIGINFO, AUXV, FPREGSET, PRSTATUS, FPREGSET.
        let mut at = notes;
        let mut kinds = Vec::new();
        while at < notes + notes_size {
            let (name_size, size, kind) = (int(at), int(at + 4) as usize, int(at + 8));
            assert_eq!(name_size, 5);
            assert_eq!(&file[at + 12..at + 17], b"CORE\0");
            if kind == NT_PRSTATUS {
                assert_eq!(size, PRSTATUS_SIZE);
            }
            kinds.push(kind);
            at += 20 + size.div_ceil(4) * 4;
        }
        assert_eq!(at, notes + notes_size);
        assert_eq!(kinds, [1, 3, NT_SIGINFO, 6, 2, 1, 2]);
        // The second PRSTATUS names the second thread.
        let second = notes + (20 + 336) + (20 + 136) + (20 + 128) + (20 + 32) + (20 + 512);
        assert_eq!(int(second + 20 + 32), 8);
        // PT_LOADs: page-aligned offsets, flags from the protection, bytes.
        let (first_load, second_load) = (64 + 56, 64 + 2 * 56);
        assert_eq!((int(first_load), int(first_load + 4)), (PT_LOAD, PF_R | PF_X));
        assert_eq!(int(second_load + 4), PF_R | PF_W);
        let data = word(first_load + 8) as usize;
        assert_eq!(data % 4096, 0);
        assert_eq!(word(first_load + 16), 0x40_0000);
        assert_eq!(word(second_load + 8) as usize, data + 2 * 4096);
        assert_eq!(file[data + 4096], 0x01, "the second page of 0x400000");
        assert_eq!(file[data + 2 * 4096], 0xf0, "the page at 0x7fff0000");
        let empty_gap = &file[notes + notes_size..data];
        assert!(empty_gap.iter().all(|&byte| byte == 0));
    }
}
