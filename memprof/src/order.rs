//! Changes to one address space put back in the order the kernel made them. Threads racing
//! on one address space reach their syscalls' exits, where the events are sent, in any
//! order: one thread unmaps a range and another maps it again at once, and the unmap's event
//! can arrive second, erasing the new mapping from the model. The kernel numbers each change
//! while it holds the address space's write lock (`SyscallEvent::order`); here a change that
//! comes before the one it follows is held until that one arrives.
use std::collections::BTreeMap;

/// How long a change waits for the one before it. Every number is carried by the event of
/// the call that took it, so a number never comes only when that event was lost (counted)
/// or its syscall began before tracing did; a thread between its change and its syscall's
/// exit is runnable, and gets a CPU well within this on a loaded machine.
pub const HOLD_NS: u64 = 250_000_000;

/// Changes of one address space, in the kernel's order.
#[derive(Debug)]
pub struct InOrder<T> {
    /// The number of the change expected next; None before the first.
    next: Option<u32>,
    /// Changes that came before the ones they follow: (when they were sent, the change), by
    /// number.
    held: BTreeMap<u32, (u64, T)>,
}

impl<T> Default for InOrder<T> {
    fn default() -> Self {
        Self {
            next: None,
            held: BTreeMap::new(),
        }
    }
}

impl<T> InOrder<T> {
    /// Takes change number `number` (0: not numbered), sent at `sent_ns`: returns it when it
    /// is due now (then [`InOrder::next_due`] gives the held ones it freed), else holds it.
    pub fn take(&mut self, number: u32, sent_ns: u64, change: T) -> Option<T> {
        if number == 0 {
            return Some(change);
        }
        // A number below the one expected: its wait was given up.
        if self.next.is_some_and(|next| number > next) {
            self.held.insert(number, (sent_ns, change));
            return None;
        }
        self.next = Some(self.next.unwrap_or(0).max(number.saturating_add(1)));
        Some(change)
    }

    /// The held change that is due: the one expected next.
    pub fn next_due(&mut self) -> Option<T> {
        let next = self.next?;
        let (_, change) = self.held.remove(&next)?;
        self.next = Some(next.saturating_add(1));
        Some(change)
    }

    /// The first held change, when its predecessor did not come within [`HOLD_NS`] of its
    /// sending (the event was lost): the wait is given up.
    pub fn next_overdue(&mut self, now_ns: u64) -> Option<T> {
        let entry = self.held.first_entry()?;
        if entry.get().0.saturating_add(HOLD_NS) > now_ns {
            return None;
        }
        let (number, (_, change)) = entry.remove_entry();
        self.next = Some(number.saturating_add(1));
        Some(change)
    }

    /// Every held change, in order: the address space's last changes, when tracing or the
    /// process ends, or before it forks or execs.
    pub fn drain(&mut self) -> Vec<T> {
        if let Some((&last, _)) = self.held.last_key_value() {
            self.next = Some(last.saturating_add(1));
        }
        std::mem::take(&mut self.held)
            .into_values()
            .map(|(_, change)| change)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What taking one change makes due: it, and the held ones it frees.
    fn take<T>(order: &mut InOrder<T>, number: u32, sent_ns: u64, change: T) -> Vec<T> {
        let mut due: Vec<T> = order.take(number, sent_ns, change).into_iter().collect();
        if !due.is_empty() {
            due.extend(std::iter::from_fn(|| order.next_due()));
        }
        due
    }

    fn overdue<T>(order: &mut InOrder<T>, now_ns: u64) -> Vec<T> {
        std::iter::from_fn(|| order.next_due().or_else(|| order.next_overdue(now_ns))).collect()
    }

    #[test]
    fn a_change_that_overtook_the_one_before_waits_for_it() {
        let mut order = InOrder::default();
        assert_eq!(take(&mut order, 1, 0, "map A"), ["map A"]);
        // The unmap (2) is slower to its exit than the map that reused its range (3).
        assert!(take(&mut order, 3, 10, "map B over A").is_empty());
        assert_eq!(
            take(&mut order, 2, 20, "unmap A"),
            ["unmap A", "map B over A"]
        );
        assert_eq!(take(&mut order, 0, 30, "madvise"), ["madvise"]);
        assert_eq!(take(&mut order, 4, 40, "unmap B"), ["unmap B"]);
        assert!(order.drain().is_empty());
    }

    #[test]
    fn the_first_change_seen_sets_the_count_and_a_late_one_is_applied_at_once() {
        let mut order = InOrder::default();
        assert_eq!(take(&mut order, 41, 0, "a"), ["a"]);
        assert_eq!(take(&mut order, 40, 1, "late"), ["late"]);
        assert_eq!(take(&mut order, 42, 2, "b"), ["b"]);
    }

    #[test]
    fn a_change_whose_predecessor_never_comes_is_applied_when_overdue() {
        let mut order = InOrder::default();
        assert_eq!(take(&mut order, 1, 0, "a"), ["a"]);
        // 2's event was lost.
        assert!(take(&mut order, 3, 100, "c").is_empty());
        assert!(take(&mut order, 4, 200, "d").is_empty());
        assert!(overdue(&mut order, 100 + HOLD_NS - 1).is_empty());
        assert_eq!(overdue(&mut order, 100 + HOLD_NS), ["c", "d"]);
        assert_eq!(take(&mut order, 5, 300, "e"), ["e"]);
    }

    #[test]
    fn draining_gives_every_held_change_in_order() {
        let mut order = InOrder::default();
        take(&mut order, 1, 0, 1);
        take(&mut order, 4, 0, 4);
        take(&mut order, 3, 0, 3);
        assert_eq!(order.drain(), [3, 4]);
        assert_eq!(take(&mut order, 5, 0, 5), [5]);
    }
}
