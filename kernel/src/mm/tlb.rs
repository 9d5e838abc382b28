//! TLB shootdown: making every CPU drop stale kernel translations.
//!
//! After a kernel mapping is removed or changed (`paging::unmap_page`,
//! `paging::remap_kernel_data_page`), other CPUs may still hold the old
//! translation in their TLBs. Before the caller reuses the frame or the
//! virtual address, `shootdown(range)` flushes the range on the running CPU
//! and on every other online CPU and waits until each has acknowledged.
//!
//! Owns one mailbox per CPU (`MAILBOXES`): the flush work posted to that CPU
//! (the union of the ranges posted since it last looked, or "everything"),
//! the number of the last request posted (`requested`, under the mailbox's
//! `IrqSpinLock`, a leaf lock held for a few instructions) and the number of
//! the last request it has completed (`completed`, an atomic the initiator
//! polls). A CPU serves its mailbox from the VECTOR_TLB_SHOOTDOWN IPI
//! handler, and also whenever it waits here as an initiator: it takes the
//! work and the request number together under the lock, flushes, then
//! publishes the number as completed (all with interrupts off, so the two
//! paths never interleave on one CPU). A completed number covers every
//! request posted up to it, because posting merges the range and bumps the
//! number under the same lock.
//!
//! Deadlock freedom. Rule for initiators: hold no spin lock (in particular
//! not the page-table lock: `unmap_page` drops it before shooting down)
//! and have interrupts enabled. Then an initiator's targets either have
//! interrupts enabled (the IPI is served at once), or are initiators
//! themselves (they serve their mailbox while waiting), or are briefly
//! inside an `IrqSpinLock` section that the initiator does not block (it
//! holds none). Interrupts-on is debug-asserted whenever another CPU is
//! online; with one CPU online a shootdown is a local flush. The initiator
//! may be preempted and migrate while waiting: it re-reads its CPU index on
//! every round, and it flushed its own TLB with interrupts off together
//! with posting the requests, so the CPU it ends on is covered either way.
//! The initiator waits until every CPU has acknowledged, however long it
//! takes: the caller frees or reuses memory right after, so giving up would
//! trade a hang for silent corruption. A CPU slower than
//! `ACKNOWLEDGE_TIMEOUT_NS` (a host that is not running its vCPU) is
//! reported in the log while the initiator keeps waiting.
//!
//! Kernel mappings are not global (CR4.PGE is off), so a CR3 reload flushes
//! them all; ranges longer than `FULL_FLUSH_PAGES` use it.

use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::VirtAddr;
use x86_64::instructions::interrupts;

use super::PAGE_SIZE;
use crate::cpu::{self, MAX_CPUS};
use crate::sync::IrqSpinLock;

/// Above this many pages, a full flush is cheaper than `invlpg` per page.
const FULL_FLUSH_PAGES: u64 = 32;
/// How long an initiator waits for each CPU's acknowledgement.
const ACKNOWLEDGE_TIMEOUT_NS: u64 = 2_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    Nothing,
    Pages { start: u64, end: u64 },
    Everything,
}

impl Flush {
    fn of(range: &Range<u64>) -> Flush {
        let start = range.start / PAGE_SIZE * PAGE_SIZE;
        let end = range.end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        Flush::Pages { start, end }.coarsened()
    }

    fn coarsened(self) -> Flush {
        match self {
            Flush::Pages { start, end } if (end - start) / PAGE_SIZE > FULL_FLUSH_PAGES => {
                Flush::Everything
            }
            other => other,
        }
    }

    fn merged(self, other: Flush) -> Flush {
        match (self, other) {
            (Flush::Nothing, flush) | (flush, Flush::Nothing) => flush,
            (Flush::Everything, _) | (_, Flush::Everything) => Flush::Everything,
            (Flush::Pages { start: a, end: b }, Flush::Pages { start: c, end: d }) => {
                Flush::Pages {
                    start: a.min(c),
                    end: b.max(d),
                }
                .coarsened()
            }
        }
    }

    fn apply_locally(self) {
        match self {
            Flush::Nothing => {}
            Flush::Pages { start, end } => {
                for page in (start..end).step_by(PAGE_SIZE as usize) {
                    x86_64::instructions::tlb::flush(VirtAddr::new_truncate(page));
                }
            }
            Flush::Everything => x86_64::instructions::tlb::flush_all(),
        }
    }
}

struct Posted {
    work: Flush,
    requested: u64,
}

struct Mailbox {
    posted: IrqSpinLock<Posted>,
    completed: AtomicU64,
}

static MAILBOXES: [Mailbox; MAX_CPUS] = [const {
    Mailbox {
        posted: IrqSpinLock::new(Posted {
            work: Flush::Nothing,
            requested: 0,
        }),
        completed: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Why a shootdown did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShootdownError {
    /// The IPI could not be sent.
    Ipi(crate::arch::apic::IpiError),
}

/// Flushes the virtual `range` from every online CPU's TLB and waits until
/// all have done so. See the module comment for the caller's rule.
pub fn shootdown(range: Range<u64>) -> Result<(), ShootdownError> {
    if range.is_empty() {
        return Ok(());
    }
    let work = Flush::of(&range);
    if cpu::online_count() <= 1 {
        interrupts::without_interrupts(|| work.apply_locally());
        return Ok(());
    }
    debug_assert!(
        interrupts::are_enabled(),
        "TLB shootdown with interrupts off could deadlock (see mm::tlb)"
    );
    let mut tickets = [0u64; MAX_CPUS];
    let online = interrupts::without_interrupts(|| {
        let me = cpu::current_index();
        let online = cpu::online_count();
        work.apply_locally();
        for (target, ticket) in tickets.iter_mut().enumerate().take(online) {
            if target != me {
                *ticket = post(target, work);
            }
        }
        online
    });
    crate::arch::apic::send_ipi_all_but_self(crate::arch::trap::VECTOR_TLB_SHOOTDOWN)
        .map_err(ShootdownError::Ipi)?;
    wait_for_acknowledgements(&tickets[..online])
}

/// Posts `work` to CPU `target`; returns the request number to wait for.
fn post(target: usize, work: Flush) -> u64 {
    let mut posted = MAILBOXES[target].posted.lock();
    posted.work = posted.work.merged(work);
    posted.requested += 1;
    posted.requested
}

/// Waits for every posted request to be acknowledged. It never gives up:
/// the caller frees or reuses memory right after, which a CPU that still
/// caches the old translation could corrupt. A CPU that is slow (a busy
/// host not running its vCPU) is reported every `ACKNOWLEDGE_TIMEOUT_NS`.
fn wait_for_acknowledgements(tickets: &[u64]) -> Result<(), ShootdownError> {
    let mut deadline = crate::time::now_ns() + ACKNOWLEDGE_TIMEOUT_NS;
    loop {
        serve_own_mailbox();
        let late = tickets.iter().enumerate().find(|&(target, &ticket)| {
            MAILBOXES[target].completed.load(Ordering::Acquire) < ticket
        });
        let Some((target, _)) = late else {
            return Ok(());
        };
        if crate::time::now_ns() > deadline {
            log::warn!(target: "tlb", "CPU {target} has not acknowledged a TLB shootdown yet; still waiting");
            deadline = crate::time::now_ns() + ACKNOWLEDGE_TIMEOUT_NS;
        }
        core::hint::spin_loop();
    }
}

/// Flushes whatever was posted to the running CPU and acknowledges it.
fn serve_own_mailbox() {
    interrupts::without_interrupts(|| {
        let Some(mailbox) = MAILBOXES.get(cpu::current_index()) else {
            return;
        };
        let (work, requested) = {
            let mut posted = mailbox.posted.lock();
            (
                core::mem::replace(&mut posted.work, Flush::Nothing),
                posted.requested,
            )
        };
        work.apply_locally();
        mailbox.completed.fetch_max(requested, Ordering::Release);
    });
}

/// The shootdown IPI's work (interrupts are off).
pub fn handle_shootdown_ipi() {
    serve_own_mailbox();
}

/// The test page's virtual address, for functions run on other CPUs.
static TEST_PAGE: AtomicU64 = AtomicU64::new(0);

fn read_test_page() -> u64 {
    crate::arch::trap::probe_read_u64(TEST_PAGE.load(Ordering::Acquire)).data
}

fn test_page_faults() -> u64 {
    let probe = crate::arch::trap::probe_read_u64(TEST_PAGE.load(Ordering::Acquire));
    u64::from(probe.vector() == Some(14))
}

/// Each online CPU's answer to `f`, in index order.
fn ask_every_cpu(f: fn() -> u64) -> alloc::vec::Vec<u64> {
    (0..cpu::online_count())
        .map(|index| {
            crate::arch::smp::call_on_cpu(index, f)
                .unwrap_or_else(|error| panic!("CPU {index}: {error:?}"))
        })
        .collect()
}

fn frame_holding(value: u64) -> super::frame::FrameRun {
    let run = super::frame::alloc(1).expect("a frame");
    // SAFETY: the frame was just allocated, so it is ours, and the direct
    // map covers it.
    unsafe { (super::phys_to_virt(run.start) as *mut u64).write_volatile(value) };
    run
}

/// Maps a test page to a frame holding one value, has every CPU read it
/// (so each TLB caches it), remaps it to a frame holding another value and
/// has every CPU read again, then unmaps it and has every CPU probe it;
/// frees everything.
fn remap_and_unmap_round() {
    use super::{paging, stack::KernelStack};
    const FIRST: u64 = 0x1111_aaaa_1111_aaaa;
    const SECOND: u64 = 0x2222_bbbb_2222_bbbb;
    let stack = KernelStack::new(1).expect("a stack");
    let address = stack.bottom();
    let first = frame_holding(FIRST);
    let second = frame_holding(SECOND);
    let own = paging::remap_kernel_data_page(address, first.start).expect("mapped");
    TEST_PAGE.store(address, Ordering::Release);

    let seen = ask_every_cpu(read_test_page);
    assert!(
        seen.iter().all(|&value| value == FIRST),
        "before the remap: {seen:#x?}"
    );

    let old = paging::remap_kernel_data_page(address, second.start).expect("mapped");
    assert_eq!(old, first.start);
    let seen = ask_every_cpu(read_test_page);
    assert!(
        seen.iter().all(|&value| value == SECOND),
        "after the remap: {seen:#x?}"
    );

    assert_eq!(paging::unmap_page(address), Some(second.start));
    let faulted = ask_every_cpu(test_page_faults);
    assert!(
        faulted.iter().all(|&fault| fault == 1),
        "after the unmap (1 = faulted): {faulted:?}"
    );

    paging::map_kernel_data_page(address, own).expect("the page is free again");
    TEST_PAGE.store(0, Ordering::Release);
    super::frame::free(first);
    super::frame::free(second);
}

crate::ktests! {
    fn remapped_and_unmapped_pages_are_seen_by_every_cpu() {
        use crate::mm::{frame, heap};
        let _quiet = crate::compat::sysinit::quiesce();
        // A first round creates the stack slot, its page tables, the slot
        // list's heap block and settles the frame allocator's free lists
        // (on the heap), so the counters across the second round are exact.
        remap_and_unmap_round();
        let frames_before = frame::free_count();
        let heap_before = heap::bytes_in_use();
        remap_and_unmap_round();
        assert_eq!(frame::free_count(), frames_before, "frames leaked");
        assert_eq!(heap::bytes_in_use(), heap_before, "heap leaked");
    }

    fn concurrent_shootdowns_do_not_deadlock() {
        use crate::arch::trap::{InterruptKind, interrupt_count};
        use core::sync::atomic::AtomicU64;
        const ROUNDS: u64 = 25;
        static COMPLETED: AtomicU64 = AtomicU64::new(0);
        // One kernel thread per CPU, all shooting down a harmless page at
        // once: thread context, interrupts on, no locks, as the rule asks.
        let online = cpu::online_count();
        let before: alloc::vec::Vec<u64> =
            (0..online).map(|index| interrupt_count(index, InterruptKind::TlbShootdown)).collect();
        let threads: alloc::vec::Vec<_> = crate::sched::online_cpus()
            .map(|index| {
                crate::kthread::Builder::new("shootdown")
                    .cpu(index)
                    .joinable()
                    .spawn(|| {
                        let page = crate::mm::stack::STACK_REGION_BASE;
                        for _ in 0..ROUNDS {
                            if shootdown(page..page + PAGE_SIZE).is_ok() {
                                COMPLETED.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    })
                    .expect("a shootdown thread")
            })
            .collect();
        for thread in &threads {
            crate::kthread::join(thread).expect("join");
        }
        assert_eq!(COMPLETED.load(Ordering::SeqCst), ROUNDS * online as u64, "shootdowns failed");
        for (index, &count) in before.iter().enumerate() {
            let received = interrupt_count(index, InterruptKind::TlbShootdown) - count;
            if online > 1 {
                assert!(received > 0, "CPU {index} got no shootdown IPI");
            }
        }
    }
}
