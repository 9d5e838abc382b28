//! `futex`: wait and wake on a 32-bit word of user memory.
//!
//! Owns the wait queues (`QUEUES`, an `IrqSpinLock`: address space and
//! address -> the sleeps waiting there). There is one process, so private
//! and shared futexes are both keyed by address space and virtual address.
//! A waiter registers its sleep before it re-reads the word, with
//! interrupts off throughout (the word's page was touched just before, so
//! the read cannot need a page fault), so a waker that changes the word
//! and then wakes can never be missed. Waits are interruptible (process
//! exit ends them with `EINTR`) and may time out (`ETIMEDOUT`).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;

use super::SysResult;
use crate::errno::Errno;
use crate::mm::usercopy::read_u32;
use crate::proc::Process;
use crate::proc::lwp::WakeReason;
use crate::sched::{self, Waker};
use crate::sync::IrqSpinLock;

const FUTEX_WAIT: u64 = 0;
const FUTEX_WAKE: u64 = 1;
const FUTEX_REQUEUE: u64 = 3;
const FUTEX_CMP_REQUEUE: u64 = 4;
const FUTEX_WAKE_OP: u64 = 5;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_WAKE_BITSET: u64 = 10;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;

type Key = (u64, u64);

static QUEUES: IrqSpinLock<BTreeMap<Key, VecDeque<Waker>>> = IrqSpinLock::new(BTreeMap::new());

fn key_for(process: &Process, address: u64) -> Result<Key, Errno> {
    let vm = process
        .vm
        .lock()
        .as_ref()
        .map(|vm| vm.id)
        .ok_or(Errno::EFAULT)?;
    Ok((vm, address))
}

fn remove_waiter(key: Key, waker: &Waker) {
    let mut queues = QUEUES.lock();
    if let Some(queue) = queues.get_mut(&key) {
        queue.retain(|other| !other.same_sleep(waker));
        if queue.is_empty() {
            queues.remove(&key);
        }
    }
}

/// Waits while `*address == expected`, until woken or `deadline_ns`.
fn wait(address: u64, expected: u32, deadline_ns: Option<u64>) -> SysResult {
    if !address.is_multiple_of(4) {
        return Err(Errno::EINVAL);
    }
    // Touch the word first (faulting its page in, outside any lock).
    if read_u32(address)? != expected {
        return Err(Errno::EAGAIN);
    }
    let me = sched::current();
    let key = key_for(&me.process, address)?;
    drop(me);
    // Interrupted, a wait without a timeout starts again after a handler
    // with `SA_RESTART` (or none); one with a timeout only without one.
    let interrupted = if deadline_ns.is_none() {
        Errno::ERESTARTSYS
    } else {
        Errno::ERESTARTNOHAND
    };
    let ticket = sched::prepare_sleep(true).map_err(|_| interrupted)?;
    let waker = ticket.waker();
    QUEUES
        .lock()
        .entry(key)
        .or_default()
        .push_back(waker.clone());
    match read_u32(address) {
        Ok(value) if value == expected => {}
        other => {
            remove_waiter(key, &waker);
            ticket.cancel();
            return Err(match other {
                Ok(_) => Errno::EAGAIN,
                Err(error) => error,
            });
        }
    }
    let reason = ticket.block(deadline_ns);
    if reason != WakeReason::Notified {
        remove_waiter(key, &waker);
    }
    match reason {
        WakeReason::Notified => Ok(0),
        WakeReason::TimedOut => Err(Errno::ETIMEDOUT),
        WakeReason::Interrupted => Err(interrupted),
    }
}

/// Wakes up to `count` waiters on `address` of `process`. Returns how many.
pub fn wake(process: &Arc<Process>, address: u64, count: u32) -> u64 {
    let Ok(key) = key_for(process, address) else {
        return 0;
    };
    let mut woken = 0;
    while woken < u64::from(count) {
        let waiter = {
            let mut queues = QUEUES.lock();
            let Some(queue) = queues.get_mut(&key) else {
                break;
            };
            let waiter = queue.pop_front();
            if queue.is_empty() {
                queues.remove(&key);
            }
            waiter
        };
        match waiter {
            Some(waiter) => {
                if waiter.wake(WakeReason::Notified) {
                    woken += 1;
                }
            }
            None => break,
        }
    }
    woken
}

/// The `futex` system call.
pub fn sys_futex(
    address: u64,
    operation: u64,
    value: u64,
    timeout: u64,
    address2: u64,
    value3: u64,
) -> SysResult {
    let command = operation & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let process = Arc::clone(&sched::current().process);
    let value = value as u32;
    match command {
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            if command == FUTEX_WAIT_BITSET && value3 as u32 == 0 {
                return Err(Errno::EINVAL);
            }
            let deadline = if timeout == 0 {
                None
            } else {
                let nanoseconds = super::time::read_timespec(timeout)?;
                Some(if command == FUTEX_WAIT {
                    crate::time::now_ns().saturating_add(nanoseconds)
                } else if operation & FUTEX_CLOCK_REALTIME != 0 {
                    // Absolute, on the wall clock.
                    crate::time::now_ns()
                        .saturating_add(nanoseconds.saturating_sub(crate::time::realtime_ns()))
                } else {
                    nanoseconds
                })
            };
            wait(address, value, deadline)
        }
        FUTEX_WAKE | FUTEX_WAKE_BITSET => Ok(wake(&process, address, value)),
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if command == FUTEX_CMP_REQUEUE && read_u32(address)? != value3 as u32 {
                return Err(Errno::EAGAIN);
            }
            // Waking the ones to requeue as well is allowed (spurious
            // wake-ups are part of the futex contract) and simpler.
            let woken = wake(&process, address, u32::MAX);
            let _ = address2;
            Ok(woken.min(u64::from(value)))
        }
        FUTEX_WAKE_OP => Err(Errno::ENOSYS),
        _ => Err(Errno::ENOSYS),
    }
}
