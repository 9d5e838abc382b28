//! Starting the application processors (APs) and running functions on
//! other CPUs.
//!
//! Owns the real-mode trampoline page and its temporary page tables (four
//! pages at physical `TRAMPOLINE_BASE`, below 1 MiB, which `mm` never hands
//! to the frame allocator), the start-up handshake (`STARTUP`) and the
//! per-CPU call mailboxes (`MAILBOXES`).
//!
//! Start-up: the boot CPU starts every other CPU the MADT lists, one at a
//! time and in MADT order. For each it prepares the CPU's per-CPU block
//! (`crate::cpu`), GDT, TSS and IST stacks (`gdt`) and a guarded kernel
//! stack, copies the trampoline to `TRAMPOLINE_BASE` with the parameters
//! filled in, builds a temporary PML4 that identity-maps the first 2 MiB
//! (the trampoline) and shares the kernel's upper-half entries, and sends
//! INIT, then a startup IPI (a second one if the CPU has not entered the
//! trampoline 200 us later). The AP goes real mode -> protected mode ->
//! long mode on the temporary tables, jumps to the upper half, loads the
//! kernel's own CR3 and in Rust enables SSE, sets its GS base, loads its
//! GDT, TSS and the shared IDT, enables its local APIC and reports in.
//! Handshake states (`STARTUP`): idle -> starting (boot CPU) -> arrived
//! (AP, compare-and-swap) or abandoned (boot CPU after the timeout, also a
//! compare-and-swap, so exactly one side wins). An abandoned AP is sent
//! INIT again, which parks it; if it got as far as reporting in it halts.
//! Only an arrived AP gets an index (`cpu::mark_online`) and calls
//! `ap_main`, with interrupts off, on its own stack.
//!
//! Calls (`call_on_cpu`): each CPU has a mailbox. A caller owns the
//! target's mailbox (`owner`, an atomic flag) from posting until it has the
//! result or gives up; the request and response live under the mailbox's
//! `IrqSpinLock` (a leaf lock, held for a few instructions). Requests carry
//! a sequence number, so a response to a request whose caller timed out is
//! never taken for another's. The target runs the function from its
//! call-function IPI handler with interrupts off. Everyone waiting here
//! (callers, and shootdown initiators in `mm::tlb`) keeps serving its own
//! mailbox, so two CPUs calling each other do not deadlock; every wait has
//! a timeout, so a dead CPU yields an error, never a hang.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

use spin::Once;
use x86_64::instructions::interrupts;
use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::{Efer, EferFlags};

use super::{apic, cpu_features, gdt, trap};
use crate::cpu::{self, MAX_CPUS};
use crate::mm::stack::KernelStack;
use crate::mm::{PAGE_SIZE, phys_to_virt};
use crate::sync::IrqSpinLock;
use crate::time;

/// Physical address of the trampoline (page-aligned, below 1 MiB); the
/// three pages above it hold the temporary PML4, PDPT and page directory.
const TRAMPOLINE_BASE: u64 = 0x8000;
const TEMPORARY_PML4: u64 = TRAMPOLINE_BASE + PAGE_SIZE;
const TEMPORARY_PDPT: u64 = TRAMPOLINE_BASE + 2 * PAGE_SIZE;
const TEMPORARY_PAGE_DIRECTORY: u64 = TRAMPOLINE_BASE + 3 * PAGE_SIZE;

/// Each AP's kernel stack: 64 KiB.
const AP_STACK_PAGES: usize = 16;
/// INIT to startup IPI: 10 ms, as the MP specification asks.
const INIT_DELAY_NS: u64 = 10_000_000;
/// Startup IPI to the second one, if the CPU has not entered the trampoline.
const STARTUP_RETRY_DELAY_NS: u64 = 200_000;
/// How long an AP may take from the first startup IPI to reporting in.
const ARRIVAL_TIMEOUT_NS: u64 = 200_000_000;
/// How long `call_on_cpu` waits for a mailbox and for the result.
pub const CALL_TIMEOUT_NS: u64 = 1_000_000_000;

const EFER_LONG_MODE_ENABLE: u64 = 1 << 8;
const EFER_NO_EXECUTE_ENABLE: u64 = 1 << 11;
const PAGE_PRESENT_WRITABLE: u64 = 0x3;
const PAGE_HUGE: u64 = 0x80;

core::arch::global_asm!(
    r#"
    .section .rodata.spindle_ap_trampoline, "a"
    .balign 16
    .global spindle_ap_trampoline_start
spindle_ap_trampoline_start:
    .code16
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    movb $1, {base} + (spindle_ap_started - spindle_ap_trampoline_start)
    lgdtl {base} + (spindle_ap_gdtr - spindle_ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax                    /* PE */
    movl %eax, %cr0
    ljmpl $0x08, ${base} + (spindle_ap_protected - spindle_ap_trampoline_start)

    .code32
spindle_ap_protected:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $0x20, %eax                 /* PAE */
    movl %eax, %cr4
    movl {base} + (spindle_ap_temporary_cr3 - spindle_ap_trampoline_start), %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx          /* EFER */
    rdmsr
    orl {base} + (spindle_ap_efer_bits - spindle_ap_trampoline_start), %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax           /* PG | WP | PE */
    movl %eax, %cr0
    ljmpl $0x18, ${base} + (spindle_ap_long_mode - spindle_ap_trampoline_start)

    .code64
spindle_ap_long_mode:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq {base} + (spindle_ap_stack_top - spindle_ap_trampoline_start), %rsp
    movq {base} + (spindle_ap_kernel_cr3 - spindle_ap_trampoline_start), %rdi
    movq {base} + (spindle_ap_entry - spindle_ap_trampoline_start), %rax
    xorl %ebp, %ebp
    jmpq *%rax

    .balign 8
spindle_ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff        /* 0x08: 32-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
    .quad 0x00af9a000000ffff        /* 0x18: 64-bit code */
spindle_ap_gdtr:
    .word 4 * 8 - 1
    .long {base} + (spindle_ap_gdt - spindle_ap_trampoline_start)

    .balign 8
    .global spindle_ap_parameters
spindle_ap_parameters:
spindle_ap_temporary_cr3:   .quad 0
spindle_ap_efer_bits:       .quad 0
spindle_ap_stack_top:       .quad 0
spindle_ap_kernel_cr3:      .quad 0
spindle_ap_entry:           .quad 0
spindle_ap_started:         .quad 0
    .global spindle_ap_trampoline_end
spindle_ap_trampoline_end:
    .text
"#,
    base = const TRAMPOLINE_BASE,
    options(att_syntax)
);

/// The trampoline's parameter block (`spindle_ap_parameters`), in order.
#[repr(C)]
struct TrampolineParameters {
    temporary_cr3: u64,
    efer_bits: u64,
    stack_top: u64,
    kernel_cr3: u64,
    entry: u64,
    /// Set to 1 by the AP as its first act in the trampoline.
    started: u64,
}

/// The trampoline image in the kernel and where its parameters start.
fn trampoline_image() -> (&'static [u8], usize) {
    unsafe extern "C" {
        static spindle_ap_trampoline_start: u8;
        static spindle_ap_trampoline_end: u8;
        static spindle_ap_parameters: u8;
    }
    let start = &raw const spindle_ap_trampoline_start;
    let end = &raw const spindle_ap_trampoline_end;
    let parameters = &raw const spindle_ap_parameters;
    // SAFETY: the three symbols bracket the trampoline in `.rodata` (start
    // <= parameters <= end, same section), which is mapped and never
    // written; only its bytes are read.
    unsafe {
        let length = end.offset_from(start) as usize;
        (
            core::slice::from_raw_parts(start, length),
            parameters.offset_from(start) as usize,
        )
    }
}

const STARTUP_IDLE: u8 = 0;
const STARTUP_STARTING: u8 = 1;
const STARTUP_ARRIVED: u8 = 2;
const STARTUP_ABANDONED: u8 = 3;

static STARTUP: AtomicU8 = AtomicU8::new(STARTUP_IDLE);
static STARTING_INDEX: AtomicUsize = AtomicUsize::new(0);
static AP_MAIN: Once<fn() -> !> = Once::new();

/// Why an AP did not come online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    OutOfMemory,
    TooManyCpus,
    Ipi(apic::IpiError),
    /// It never entered the trampoline.
    NoResponse,
    /// It entered the trampoline but did not report in.
    StuckInStartup,
}

/// Starts every CPU ACPI lists besides the boot CPU; each runs `ap_main`
/// with interrupts off once it is set up. Returns how many came online.
/// Call once, on the boot CPU, after the local APIC and the clock are up.
pub fn start_application_processors(ap_main: fn() -> !) -> usize {
    if AP_MAIN.get().is_some() {
        log::error!(target: "smp", "application processors were already started");
        return 0;
    }
    AP_MAIN.call_once(|| ap_main);
    let Some(platform) = crate::platform::get() else {
        log::error!(target: "smp", "no ACPI platform description: staying on one CPU");
        return 0;
    };
    let boot_apic_id = cpu::apic_id_of(0).unwrap_or(u32::MAX);
    let candidates: Vec<u32> = platform
        .cpus
        .iter()
        .map(|cpu| cpu.apic_id)
        .filter(|&apic_id| apic_id != boot_apic_id)
        .collect();
    if !candidates.is_empty() {
        install_trampoline();
    }
    for apic_id in candidates {
        let index = cpu::online_count();
        let started = time::now_ns();
        match start_one(index, apic_id) {
            Ok(()) => log::debug!(
                target: "smp",
                "CPU {index} (APIC id {apic_id}) online after {} us",
                (time::now_ns() - started) / 1_000
            ),
            Err(error) => log::error!(
                target: "smp",
                "CPU with APIC id {apic_id} did not come online: {error:?}"
            ),
        }
    }
    let online = cpu::online_count();
    log::info!(target: "smp", "{} of {} CPUs online", online, platform.cpus.len());
    online - 1
}

/// Copies the trampoline code to `TRAMPOLINE_BASE`.
fn install_trampoline() {
    let (image, _) = trampoline_image();
    debug_assert!(image.len() as u64 <= PAGE_SIZE);
    // SAFETY: physical TRAMPOLINE_BASE.. (four pages below 1 MiB) is RAM
    // that `mm` never hands out and nothing else uses after boot; the
    // direct map covers it. The image fits in its page.
    unsafe {
        core::ptr::copy_nonoverlapping(
            image.as_ptr(),
            phys_to_virt(TRAMPOLINE_BASE) as *mut u8,
            image.len(),
        )
    };
}

/// Builds the temporary page tables: the first 2 MiB identity-mapped, the
/// kernel's upper-half PML4 entries shared.
fn build_temporary_page_tables() {
    let (kernel_pml4, _) = Cr3::read();
    let kernel_pml4 = phys_to_virt(kernel_pml4.start_address().as_u64()) as *const u64;
    let pml4 = phys_to_virt(TEMPORARY_PML4) as *mut u64;
    let pdpt = phys_to_virt(TEMPORARY_PDPT) as *mut u64;
    let directory = phys_to_virt(TEMPORARY_PAGE_DIRECTORY) as *mut u64;
    // SAFETY: the three temporary table pages are reserved for this (see `install_trampoline`) and only the
    // boot CPU writes them, while no AP is using them (one AP starts at a time, and a failed one was parked by
    // INIT). The kernel PML4 is read through the direct map; its upper-half entries are plain u64 values.
    unsafe {
        core::ptr::write_bytes(pml4, 0, 512);
        core::ptr::write_bytes(pdpt, 0, 512);
        core::ptr::write_bytes(directory, 0, 512);
        directory.write_volatile(PAGE_PRESENT_WRITABLE | PAGE_HUGE);
        pdpt.write_volatile(TEMPORARY_PAGE_DIRECTORY | PAGE_PRESENT_WRITABLE);
        pml4.write_volatile(TEMPORARY_PDPT | PAGE_PRESENT_WRITABLE);
        for entry in 256..512 {
            pml4.add(entry)
                .write_volatile(kernel_pml4.add(entry).read_volatile());
        }
    }
}

fn write_parameters(parameters: TrampolineParameters) {
    let (_, offset) = trampoline_image();
    let target = phys_to_virt(TRAMPOLINE_BASE + offset as u64) as *mut TrampolineParameters;
    // SAFETY: the parameter block lies inside the installed trampoline page
    // (8-byte aligned by `.balign 8`); no AP runs the trampoline now.
    unsafe { target.write_volatile(parameters) };
}

fn trampoline_entered() -> bool {
    let (_, offset) = trampoline_image();
    let started = phys_to_virt(TRAMPOLINE_BASE + offset as u64) as *const TrampolineParameters;
    // SAFETY: as in `write_parameters`; the AP writes the byte concurrently,
    // hence the volatile read of a whole word.
    unsafe { core::ptr::addr_of!((*started).started).read_volatile() != 0 }
}

fn wait_ns(nanoseconds: u64) {
    let start = time::now_ns();
    while time::now_ns() - start < nanoseconds {
        core::hint::spin_loop();
    }
}

fn start_one(index: usize, apic_id: u32) -> Result<(), StartError> {
    if index >= MAX_CPUS {
        return Err(StartError::TooManyCpus);
    }
    gdt::prepare(index).map_err(|_| StartError::OutOfMemory)?;
    let stack = KernelStack::new(AP_STACK_PAGES).ok_or(StartError::OutOfMemory)?;
    cpu::prepare(index, apic_id);
    build_temporary_page_tables();
    let efer_bits = if Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE) {
        EFER_LONG_MODE_ENABLE | EFER_NO_EXECUTE_ENABLE
    } else {
        EFER_LONG_MODE_ENABLE
    };
    write_parameters(TrampolineParameters {
        temporary_cr3: TEMPORARY_PML4,
        efer_bits,
        stack_top: stack.top(),
        kernel_cr3: Cr3::read().0.start_address().as_u64(),
        entry: ap_long_mode_entry as *const () as u64,
        started: 0,
    });
    STARTING_INDEX.store(index, Ordering::Relaxed);
    STARTUP.store(STARTUP_STARTING, Ordering::Release);

    let page_number = (TRAMPOLINE_BASE >> 12) as u8;
    let sent = apic::send_init(apic_id).and_then(|()| {
        wait_ns(INIT_DELAY_NS);
        apic::send_startup(apic_id, page_number)?;
        wait_ns(STARTUP_RETRY_DELAY_NS);
        if !trampoline_entered() {
            apic::send_startup(apic_id, page_number)?;
        }
        Ok(())
    });
    let deadline = time::now_ns() + ARRIVAL_TIMEOUT_NS;
    let outcome = match sent {
        Err(error) => Err(StartError::Ipi(error)),
        Ok(()) => loop {
            if STARTUP.load(Ordering::Acquire) == STARTUP_ARRIVED {
                break Ok(());
            }
            if time::now_ns() > deadline {
                break Err(if trampoline_entered() {
                    StartError::StuckInStartup
                } else {
                    StartError::NoResponse
                });
            }
            core::hint::spin_loop();
        },
    };
    let outcome = match outcome {
        Ok(()) => Ok(()),
        // The AP may report in at the last moment: only one side wins.
        Err(error) => match STARTUP.compare_exchange(
            STARTUP_STARTING,
            STARTUP_ABANDONED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                // Park it so it can never run on the next AP's parameters.
                let _ = apic::send_init(apic_id);
                Err(error)
            }
            Err(_) => Ok(()),
        },
    };
    // The stack belongs to the AP for good; after a failure it may still
    // be referenced by a parked CPU's state, so it is never reused.
    core::mem::forget(stack);
    if outcome.is_ok() {
        cpu::mark_online(index);
    }
    STARTUP.store(STARTUP_IDLE, Ordering::Release);
    outcome
}

/// Where the trampoline jumps, on the AP's own stack, still on the
/// temporary page tables (`rdi` = the kernel's CR3).
#[unsafe(naked)]
extern "C" fn ap_long_mode_entry() -> ! {
    core::arch::naked_asm!(
        "mov cr3, rdi",
        "call {entry}",
        "ud2",
        entry = sym ap_entry,
    );
}

/// The AP's set-up in Rust, on the kernel's page tables.
extern "C" fn ap_entry() -> ! {
    let index = STARTING_INDEX.load(Ordering::Relaxed);
    cpu_features::enable_sse();
    super::syscall::init_this_cpu();
    cpu::enter(index);
    if gdt::load(index).is_err() {
        super::halt_forever();
    }
    trap::load_idt_on_this_cpu();
    apic::enable_local();
    if STARTUP
        .compare_exchange(
            STARTUP_STARTING,
            STARTUP_ARRIVED,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // The boot CPU gave up on this CPU.
        super::halt_forever();
    }
    match AP_MAIN.get() {
        Some(ap_main) => ap_main(),
        None => super::halt_forever(),
    }
}

/// Why `call_on_cpu` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No online CPU has that index.
    NoSuchCpu,
    /// The IPI could not be sent.
    Ipi(apic::IpiError),
    /// Another caller kept the CPU's mailbox past the timeout.
    Busy,
    /// The CPU did not run the function (or did not finish) in time.
    Timeout,
}

struct CallSlot {
    last_sequence: u64,
    request: Option<(u64, fn() -> u64)>,
    response: Option<(u64, u64)>,
}

struct CallMailbox {
    owner: AtomicBool,
    slot: IrqSpinLock<CallSlot>,
}

static MAILBOXES: [CallMailbox; MAX_CPUS] = [const {
    CallMailbox {
        owner: AtomicBool::new(false),
        slot: IrqSpinLock::new(CallSlot {
            last_sequence: 0,
            request: None,
            response: None,
        }),
    }
}; MAX_CPUS];

/// Runs `f` on CPU `index` (in its call-function IPI handler, interrupts
/// off) and returns its result. On the running CPU, just calls `f`.
pub fn call_on_cpu(index: usize, f: fn() -> u64) -> Result<u64, CallError> {
    if index == cpu::current_index() {
        return Ok(f());
    }
    post_call(index, f, CALL_TIMEOUT_NS)?.wait()
}

/// A call posted to another CPU; `wait` collects the result. Dropping it
/// waits too, so the target's mailbox is always released.
#[must_use]
pub struct PendingCall {
    index: usize,
    sequence: u64,
    deadline: u64,
    finished: bool,
}

/// Posts `f` to CPU `index` (not the running one) and returns at once;
/// the result must arrive within `timeout_ns`.
pub fn post_call(index: usize, f: fn() -> u64, timeout_ns: u64) -> Result<PendingCall, CallError> {
    if index >= cpu::online_count() || index == cpu::current_index() {
        return Err(CallError::NoSuchCpu);
    }
    let mailbox = &MAILBOXES[index];
    let deadline = time::now_ns() + timeout_ns;
    while mailbox
        .owner
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        serve_calls();
        if time::now_ns() > deadline {
            return Err(CallError::Busy);
        }
        core::hint::spin_loop();
    }
    let sequence = {
        let mut slot = mailbox.slot.lock();
        slot.last_sequence += 1;
        let sequence = slot.last_sequence;
        slot.request = Some((sequence, f));
        slot.response = None;
        sequence
    };
    let pending = PendingCall {
        index,
        sequence,
        deadline,
        finished: false,
    };
    if let Err(error) = apic::send_ipi(index, trap::VECTOR_CALL_FUNCTION) {
        let _ = pending.finish(true);
        return Err(CallError::Ipi(error));
    }
    Ok(pending)
}

impl PendingCall {
    /// Waits for the result (serving calls posted to this CPU meanwhile).
    pub fn wait(self) -> Result<u64, CallError> {
        self.finish(false)
    }

    fn finish(mut self, cancel_now: bool) -> Result<u64, CallError> {
        self.finished = true;
        self.collect(cancel_now)
    }

    fn collect(&self, cancel_now: bool) -> Result<u64, CallError> {
        let mailbox = &MAILBOXES[self.index];
        let result = loop {
            serve_calls();
            {
                let mut slot = mailbox.slot.lock();
                if let Some((sequence, value)) = slot.response
                    && sequence == self.sequence
                {
                    slot.response = None;
                    break Ok(value);
                }
                if cancel_now || time::now_ns() > self.deadline {
                    if matches!(slot.request, Some((sequence, _)) if sequence == self.sequence) {
                        slot.request = None;
                    }
                    break Err(CallError::Timeout);
                }
            }
            core::hint::spin_loop();
        };
        mailbox.owner.store(false, Ordering::Release);
        result
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.collect(false);
        }
    }
}

/// Runs the function posted to the running CPU, if any, with interrupts
/// off, and posts its result.
fn serve_calls() {
    interrupts::without_interrupts(|| {
        let Some(mailbox) = MAILBOXES.get(cpu::current_index()) else {
            return;
        };
        let request = mailbox.slot.lock().request.take();
        if let Some((sequence, function)) = request {
            let value = function();
            mailbox.slot.lock().response = Some((sequence, value));
        }
    });
}

/// The call-function IPI's work (interrupts are off).
pub(super) fn handle_call_ipi() {
    serve_calls();
}

crate::ktests! {
    fn every_cpu_acpi_lists_is_online() {
        let platform = crate::platform::get().expect("ACPI was read at boot");
        let expected = platform.cpus.len().min(MAX_CPUS);
        assert_eq!(cpu::online_count(), expected, "MADT CPUs: {:?}", platform.cpus);
        for index in 0..cpu::online_count() {
            let apic_id = cpu::apic_id_of(index).expect("online CPU has an APIC id");
            assert_eq!(
                platform.cpus.iter().filter(|cpu| cpu.apic_id == apic_id).count(),
                1,
                "CPU {index} has APIC id {apic_id}, listed once by ACPI"
            );
        }
    }

    fn call_on_cpu_runs_on_the_target_cpu() {
        fn own_index() -> u64 {
            cpu::current_index() as u64
        }
        fn own_apic_id() -> u64 {
            u64::from(apic::local_id())
        }
        fn own_setup_is_complete() -> u64 {
            let index = cpu::current_index();
            let block_ok = super::super::percpu::gs_base() == super::super::percpu::read_self_address();
            let sse_ok = cpu_features::sse_enabled();
            let interrupts_off = !interrupts::are_enabled() || index == 0;
            let ist_ok = gdt::ist_stack_tops(index).is_some_and(|tops| tops.iter().all(|&top| top != 0));
            u64::from(block_ok) | u64::from(sse_ok) << 1 | u64::from(interrupts_off) << 2 | u64::from(ist_ok) << 3
        }
        // Called from CPU 0, where a call to itself runs directly.
        crate::ktest::on_cpu(0, || {
            for index in 0..cpu::online_count() {
                assert_eq!(call_on_cpu(index, own_index), Ok(index as u64));
                let apic_id = cpu::apic_id_of(index).expect("online");
                assert_eq!(call_on_cpu(index, own_apic_id), Ok(u64::from(apic_id)));
                assert_eq!(call_on_cpu(index, own_setup_is_complete), Ok(0b1111), "CPU {index}");
            }
            assert_eq!(call_on_cpu(cpu::online_count(), own_index), Err(CallError::NoSuchCpu));
            assert_eq!(call_on_cpu(usize::MAX, own_index), Err(CallError::NoSuchCpu));
        });
    }

    fn ipis_reach_every_cpu() {
        // Sent from CPU 0 ("self" below), with a vector only tests use.
        crate::ktest::on_cpu(0, || {
            use trap::InterruptKind::Test;
            let online = cpu::online_count();
            let wait_for = |index: usize, target: u64| {
                let deadline = time::now_ns() + CALL_TIMEOUT_NS;
                while trap::interrupt_count(index, Test) < target {
                    assert!(time::now_ns() < deadline, "CPU {index}: test IPI count stuck below {target}");
                    core::hint::spin_loop();
                }
            };
            // Each CPU, this one included, one IPI at a time (a second IPI of
            // a vector still pending would merge with the first).
            for index in 0..online {
                let before = trap::interrupt_count(index, Test);
                for round in 1..=5 {
                    apic::send_ipi(index, trap::VECTOR_TEST_IPI).expect("IPI sent");
                    wait_for(index, before + round);
                }
            }
            let before: Vec<u64> = (0..online).map(|index| trap::interrupt_count(index, Test)).collect();
            apic::send_ipi_all_but_self(trap::VECTOR_TEST_IPI).expect("broadcast sent");
            for (index, &count) in before.iter().enumerate().skip(1) {
                wait_for(index, count + 1);
            }
            // Give a stray self-delivery a moment to show up: there must be none.
            wait_ns(1_000_000);
            assert_eq!(trap::interrupt_count(0, Test), before[0], "all-but-self reached self");
            assert_eq!(apic::send_ipi(online, trap::VECTOR_TEST_IPI), Err(apic::IpiError::NoSuchCpu));
        });
    }

    fn application_processors_tick() {
        let online = cpu::online_count();
        let before: Vec<u64> = (0..online)
            .map(|index| trap::interrupt_count(index, trap::InterruptKind::Timer))
            .collect();
        time::wait_ticks(3);
        for (index, &count) in before.iter().enumerate() {
            assert!(
                trap::interrupt_count(index, trap::InterruptKind::Timer) > count,
                "CPU {index} got no timer interrupt in 3 ticks"
            );
        }
    }

    fn calls_from_two_cpus_at_once_do_not_deadlock() {
        // CPU 1 calls back into CPU 0 while CPU 0 waits for CPU 1: the
        // waiting caller serves its own mailbox.
        fn call_back_to_boot_cpu() -> u64 {
            call_on_cpu(0, || 7).map_or(0, |value| value + 1)
        }
        if cpu::online_count() < 2 {
            assert_eq!(call_on_cpu(0, call_back_to_boot_cpu), Ok(8));
            return;
        }
        assert_eq!(call_on_cpu(1, call_back_to_boot_cpu), Ok(8));
    }
}
