//! Each CPU's GDT and TSS, with guarded IST stacks.
//!
//! Owns the descriptor tables the CPUs point at: one `CpuTables` per CPU
//! index (`TABLES`, set once per index, then read-only except the TSS's
//! rsp0, which only its own CPU writes). Layout (fixed, because
//! `syscall`/`sysret` in a later issue derive selectors from it):
//! 1 kernel code, 2 kernel data, 3 user data, 4 user code, 5-6 TSS.
//! Double fault, NMI and machine check each get an IST stack from
//! `mm::stack` (with a guard page), so a kernel stack overflow is reported
//! instead of triple-faulting.
//!
//! States per index: empty -> prepared (`prepare`, by the boot CPU, which
//! allocates; idempotent, so a CPU that failed to start leaves tables the
//! next CPU with that index reuses) -> loaded (`load`, on the CPU itself).
//! The TSS's rsp0 (the stack the CPU switches to on entry from ring 3) is
//! set per CPU with `set_user_entry_stack`.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicPtr, Ordering};

use spin::Once;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

use crate::cpu::MAX_CPUS;
use crate::mm::stack::KernelStack;

pub const KERNEL_CODE_SELECTOR: u16 = 1 << 3;
pub const KERNEL_DATA_SELECTOR: u16 = 2 << 3;
const TSS_SELECTOR: u16 = 5 << 3;

const IST_DOUBLE_FAULT: u8 = 1;
const IST_NMI: u8 = 2;
const IST_MACHINE_CHECK: u8 = 3;
const IST_STACK_PAGES: usize = 4;

/// The IST index (1-based, as the IDT wants it) for `vector`, or 0.
pub fn ist_index_for_vector(vector: u8) -> u8 {
    match vector {
        8 => IST_DOUBLE_FAULT,
        2 => IST_NMI,
        18 => IST_MACHINE_CHECK,
        _ => 0,
    }
}

/// One CPU's tables. The TSS is reached through a raw pointer because its
/// CPU writes rsp0 while the GDT's descriptor refers to it.
struct CpuTables {
    gdt: &'static GlobalDescriptorTable,
    tss: AtomicPtr<TaskStateSegment>,
}

static TABLES: [Once<CpuTables>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// Why a CPU's tables could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GdtError {
    NoSuchCpu,
    OutOfMemory,
}

/// Builds the GDT, TSS and IST stacks of CPU `index` (if not built yet).
/// Runs on the boot CPU; allocates.
pub fn prepare(index: usize) -> Result<(), GdtError> {
    let slot = TABLES.get(index).ok_or(GdtError::NoSuchCpu)?;
    if slot.get().is_some() {
        return Ok(());
    }
    let mut tss = TaskStateSegment::new();
    let mut stacks = alloc::vec::Vec::new();
    for ist in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK] {
        let stack = KernelStack::new(IST_STACK_PAGES).ok_or(GdtError::OutOfMemory)?;
        tss.interrupt_stack_table[usize::from(ist - 1)] = VirtAddr::new(stack.top());
        stacks.push(stack);
    }
    // IST stacks serve the CPU for as long as it runs.
    stacks.into_iter().for_each(core::mem::forget);
    let tss: *mut TaskStateSegment = Box::into_raw(Box::new(tss));

    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    gdt.append(Descriptor::user_data_segment());
    gdt.append(Descriptor::user_code_segment());
    // SAFETY: `tss` is leaked (never freed), so the descriptor stays valid
    // for as long as the GDT lives; it is used by one CPU only.
    let tss_selector = gdt.append(unsafe { Descriptor::tss_segment_unchecked(tss) });
    debug_assert_eq!(code.0, KERNEL_CODE_SELECTOR);
    debug_assert_eq!(data.0, KERNEL_DATA_SELECTOR);
    debug_assert_eq!(tss_selector.0, TSS_SELECTOR);
    let gdt: &'static GlobalDescriptorTable = Box::leak(Box::new(gdt));
    slot.call_once(|| CpuTables {
        gdt,
        tss: AtomicPtr::new(tss),
    });
    Ok(())
}

/// Loads CPU `index`'s GDT and TSS on the running CPU and reloads every
/// segment register. GS base (the per-CPU pointer) survives the reload.
pub fn load(index: usize) -> Result<(), GdtError> {
    let tables = TABLES
        .get(index)
        .and_then(|slot| slot.get())
        .ok_or(GdtError::NoSuchCpu)?;
    tables.gdt.load();
    let gs_base = super::percpu::gs_base();
    let code = SegmentSelector(KERNEL_CODE_SELECTOR);
    let data = SegmentSelector(KERNEL_DATA_SELECTOR);
    let null = SegmentSelector::new(0, PrivilegeLevel::Ring0);
    // SAFETY: the selectors name descriptors of the GDT just loaded, which is leaked, so it lives
    // forever; the TSS descriptor is used by this CPU only (each CPU has its own TSS, so the busy bit
    // is never set twice). Loading a null GS clears GS base on some CPUs; it is restored right after.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        FS::set_reg(null);
        GS::set_reg(null);
        load_tss(SegmentSelector(TSS_SELECTOR));
    }
    x86_64::registers::model_specific::GsBase::write(VirtAddr::new(gs_base));
    Ok(())
}

/// Builds and loads the boot CPU's tables (CPU 0).
pub fn init() {
    prepare(0).expect("memory for the boot CPU's IST stacks");
    load(0).expect("the boot CPU's tables were just prepared");
}

/// Sets the running CPU's TSS rsp0: the stack the CPU switches to when an
/// interrupt or exception arrives in ring 3.
pub fn set_user_entry_stack(stack_top: u64) {
    let index = crate::cpu::current_index();
    let Some(tables) = TABLES.get(index).and_then(|slot| slot.get()) else {
        return;
    };
    let tss = tables.tss.load(Ordering::Relaxed);
    // SAFETY: `tss` is this CPU's leaked TSS; only this CPU writes its rsp0 (the CPU itself reads
    // it only on a ring 3 -> 0 transition, which cannot happen in the middle of this store). The
    // field is unaligned in the packed TSS, hence the unaligned write.
    unsafe {
        core::ptr::write_unaligned(
            core::ptr::addr_of_mut!((*tss).privilege_stack_table[0]),
            VirtAddr::new(stack_top),
        )
    };
}

/// The running CPU's TSS rsp0.
pub fn user_entry_stack() -> u64 {
    let index = crate::cpu::current_index();
    let Some(tables) = TABLES.get(index).and_then(|slot| slot.get()) else {
        return 0;
    };
    let tss = tables.tss.load(Ordering::Relaxed);
    // SAFETY: as in `set_user_entry_stack`; a plain read.
    unsafe { core::ptr::read_unaligned(core::ptr::addr_of!((*tss).privilege_stack_table[0])) }
        .as_u64()
}

/// The IST stack tops of CPU `index` (for tests).
pub fn ist_stack_tops(index: usize) -> Option<[u64; 3]> {
    let tables = TABLES.get(index)?.get()?;
    let tss = tables.tss.load(Ordering::Relaxed);
    // SAFETY: `tss` is leaked and its IST entries are never written after
    // `prepare`; a plain read.
    let ist =
        unsafe { core::ptr::read_unaligned(core::ptr::addr_of!((*tss).interrupt_stack_table)) };
    Some([ist[0].as_u64(), ist[1].as_u64(), ist[2].as_u64()])
}

crate::ktests! {
    fn each_cpu_has_its_own_tss_and_ist_stacks() {
        use crate::arch::smp::call_on_cpu;
        /// Sets this CPU's rsp0 to a value derived from its index and reads
        /// it back; returns the old value's restoration status.
        fn set_and_read_back_user_entry_stack() -> u64 {
            let marker = 0xffff_ff7f_0000_0000 + ((crate::cpu::current_index() as u64) << 12);
            let old = user_entry_stack();
            set_user_entry_stack(marker);
            let read = user_entry_stack();
            set_user_entry_stack(old);
            read
        }
        let online = crate::cpu::online_count();
        for index in 0..online {
            let expected = 0xffff_ff7f_0000_0000 + ((index as u64) << 12);
            assert_eq!(call_on_cpu(index, set_and_read_back_user_entry_stack), Ok(expected), "CPU {index}");
        }
        let mut tops: alloc::vec::Vec<u64> = (0..online)
            .flat_map(|index| ist_stack_tops(index).expect("prepared"))
            .collect();
        tops.sort_unstable();
        tops.dedup();
        assert_eq!(tops.len(), 3 * online, "IST stacks are shared between CPUs");
        assert!(ist_stack_tops(MAX_CPUS).is_none());
    }
}
