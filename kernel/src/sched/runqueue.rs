//! A per-CPU run queue: one FIFO per priority and a bitmap of the
//! non-empty ones, so the highest runnable priority is found in two words.
//! Owned by its CPU's `CpuSched`, behind that CPU's run-queue lock.

use alloc::collections::VecDeque;
use alloc::sync::Arc;

use crate::proc::lwp::{Lwp, MAX_PRIORITY, Priority};

const LEVELS: usize = MAX_PRIORITY as usize + 1;

pub struct RunQueue {
    levels: [VecDeque<Arc<Lwp>>; LEVELS],
    non_empty: [u64; 2],
}

impl RunQueue {
    pub const fn new() -> RunQueue {
        RunQueue {
            levels: [const { VecDeque::new() }; LEVELS],
            non_empty: [0; 2],
        }
    }

    /// Appends `lwp` at `priority` (round robin among equals).
    pub fn push_back(&mut self, lwp: Arc<Lwp>, priority: Priority) {
        let level = usize::from(priority);
        self.levels[level].push_back(lwp);
        self.non_empty[level / 64] |= 1 << (level % 64);
    }

    /// The highest priority with an LWP waiting.
    pub fn highest_priority(&self) -> Option<Priority> {
        if self.non_empty[1] != 0 {
            Some((127 - self.non_empty[1].leading_zeros()) as Priority)
        } else if self.non_empty[0] != 0 {
            Some((63 - self.non_empty[0].leading_zeros()) as Priority)
        } else {
            None
        }
    }

    fn take_at(&mut self, level: usize, index: usize) -> Option<Arc<Lwp>> {
        let lwp = self.levels[level].remove(index)?;
        if self.levels[level].is_empty() {
            self.non_empty[level / 64] &= !(1 << (level % 64));
        }
        Some(lwp)
    }

    /// Frees the spare capacity of empty levels.
    pub fn trim(&mut self) {
        for level in self.levels.iter_mut().filter(|level| level.is_empty()) {
            level.shrink_to_fit();
        }
    }

    /// Removes the first LWP of the highest priority.
    pub fn pop_highest(&mut self) -> Option<Arc<Lwp>> {
        let level = usize::from(self.highest_priority()?);
        self.take_at(level, 0)
    }

    /// Removes the highest-priority LWP that `may_take` accepts (used to
    /// steal unbound LWPs for another CPU).
    pub fn pop_highest_where(&mut self, may_take: impl Fn(&Lwp) -> bool) -> Option<Arc<Lwp>> {
        for level in (0..LEVELS).rev() {
            if let Some(index) = self.levels[level].iter().position(|lwp| may_take(lwp)) {
                return self.take_at(level, index);
            }
        }
        None
    }
}
