//! The GDT and TSS of the boot CPU, with guarded IST stacks.
//!
//! Owns the descriptor tables the CPU points at. Layout (fixed, because
//! `syscall`/`sysret` in a later issue derive selectors from it):
//! 1 kernel code, 2 kernel data, 3 user data, 4 user code, 5-6 TSS.
//! Double fault, NMI and machine check each get an IST stack from
//! `mm::stack` (with a guard page), so a kernel stack overflow is reported
//! instead of triple-faulting. Built once at boot, then only read; per-CPU
//! copies arrive with SMP.

use alloc::boxed::Box;

use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::{PrivilegeLevel, VirtAddr};

use crate::mm::stack::KernelStack;

pub const KERNEL_CODE_SELECTOR: u16 = 1 << 3;
pub const KERNEL_DATA_SELECTOR: u16 = 2 << 3;

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

/// Builds and loads the GDT and TSS and reloads every segment register.
pub fn init() {
    let mut tss = TaskStateSegment::new();
    for ist in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK] {
        let stack = KernelStack::new(IST_STACK_PAGES).expect("memory for an IST stack at boot");
        tss.interrupt_stack_table[usize::from(ist - 1)] = VirtAddr::new(stack.top());
        // IST stacks serve the CPU for as long as it runs.
        core::mem::forget(stack);
    }
    let tss: &'static TaskStateSegment = Box::leak(Box::new(tss));

    let mut gdt = GlobalDescriptorTable::new();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    gdt.append(Descriptor::user_data_segment());
    gdt.append(Descriptor::user_code_segment());
    let tss_selector = gdt.append(Descriptor::tss_segment(tss));
    assert_eq!(code.0, KERNEL_CODE_SELECTOR);
    assert_eq!(data.0, KERNEL_DATA_SELECTOR);
    let gdt: &'static GlobalDescriptorTable = Box::leak(Box::new(gdt));
    gdt.load();

    let null = SegmentSelector::new(0, PrivilegeLevel::Ring0);
    // SAFETY: the selectors name the descriptors just appended to the GDT
    // now loaded; both tables are leaked, so they live forever.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        FS::set_reg(null);
        GS::set_reg(null);
        load_tss(tss_selector);
    }
}
