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
    /// Takes change number `number` (0: not numbered, applied at once), sent at `sent_ns`;
    /// returns the changes now due, in order.
    pub fn take(&mut self, number: u32, sent_ns: u64, change: T) -> Vec<T> {
        if number == 0 {
            return vec![change];
        }
        // A number below the one expected: its wait was given up.
        if self.next.is_some_and(|next| number > next) {
            self.held.insert(number, (sent_ns, change));
            return Vec::new();
        }
        let mut ready = vec![change];
        self.next = Some(self.next.unwrap_or(0).max(number.saturating_add(1)));
        self.release_following(&mut ready);
        ready
    }

    /// The held changes whose predecessor did not come within [`HOLD_NS`] of their
    /// sending, and those that follow them.
    pub fn overdue(&mut self, now_ns: u64) -> Vec<T> {
        let mut ready = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if entry.get().0.saturating_add(HOLD_NS) > now_ns {
                break;
            }
            let (number, (_, change)) = entry.remove_entry();
            ready.push(change);
            self.next = Some(number.saturating_add(1));
            self.release_following(&mut ready);
        }
        ready
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

    pub fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    fn release_following(&mut self, ready: &mut Vec<T>) {
        while let Some(next) = self.next {
            let Some((_, change)) = self.held.remove(&next) else {
                break;
            };
            ready.push(change);
            self.next = Some(next.saturating_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_that_overtook_the_one_before_waits_for_it() {
        let mut order = InOrder::default();
        assert_eq!(order.take(1, 0, "map A"), ["map A"]);
        // The unmap (2) is slower to its exit than the map that reused its range (3).
        assert!(order.take(3, 10, "map B over A").is_empty());
        assert!(order.holds_any());
        assert_eq!(order.take(2, 20, "unmap A"), ["unmap A", "map B over A"]);
        assert!(!order.holds_any());
        assert_eq!(order.take(0, 30, "madvise"), ["madvise"]);
        assert_eq!(order.take(4, 40, "unmap B"), ["unmap B"]);
    }

    #[test]
    fn the_first_change_seen_sets_the_count_and_a_late_one_is_applied_at_once() {
        let mut order = InOrder::default();
        assert_eq!(order.take(41, 0, "a"), ["a"]);
        assert_eq!(order.take(40, 1, "late"), ["late"]);
        assert_eq!(order.take(42, 2, "b"), ["b"]);
    }

    #[test]
    fn a_change_whose_predecessor_never_comes_is_applied_when_overdue() {
        let mut order = InOrder::default();
        assert_eq!(order.take(1, 0, "a"), ["a"]);
        // 2's event was lost.
        assert!(order.take(3, 100, "c").is_empty());
        assert!(order.take(4, 200, "d").is_empty());
        assert!(order.overdue(100 + HOLD_NS - 1).is_empty());
        assert_eq!(order.overdue(100 + HOLD_NS), ["c", "d"]);
        assert_eq!(order.take(5, 300, "e"), ["e"]);
    }

    #[test]
    fn draining_gives_every_held_change_in_order() {
        let mut order = InOrder::default();
        order.take(1, 0, 1);
        order.take(4, 0, 4);
        order.take(3, 0, 3);
        assert_eq!(order.drain(), [3, 4]);
        assert_eq!(order.take(5, 0, 5), [5]);
    }
}
