//! Map memory, reached only through this module's unsafe code, in one of two ways:
//!
//! - a [`Slot`]: a map value of plain integers (or a part of one), read and written by value
//!   through its pointer. No reference into map memory is made, so two slots of one value
//!   (the same mm's entry reached twice in a program, another CPU writing it meanwhile) are
//!   two pointers and nothing worse: a race loses or repeats a write of whole integers.
//! - [`with_scratch`]: this CPU's value of a per-CPU buffer too large to copy (the 1 KiB
//!   stack event, the stack window, the run of faults), lent as `&mut` for one closure.

use aya_ebpf::maps::{Array, HashMap, LruHashMap, PerCpuArray};

/// A map value of plain integers (any bit pattern valid), by value: [`get`](Self::get)
/// copies it out, [`set`](Self::set) writes it whole, [`at`](Self::at) and [`field!`] reach a
/// part of it. Made only from a successful map lookup or from a part of another slot, so its
/// pointer is aligned and valid until the program returns: the kernel frees no map value
/// under a running program (a hash map's removed value is reused in place, never unmapped).
#[derive(Clone, Copy)]
pub(crate) struct Slot<T>(*mut T);

impl<T: Copy> Slot<T> {
    /// # Safety
    /// `pointer` is aligned and valid for `T` until the program returns (see [`Slot`]).
    pub(crate) const unsafe fn new(pointer: *mut T) -> Self {
        Self(pointer)
    }

    pub(crate) fn array(map: &Array<T>, index: u32) -> Option<Self> {
        map.get_ptr_mut(index).map(Self)
    }

    /// This CPU's value.
    pub(crate) fn per_cpu(map: &PerCpuArray<T>, index: u32) -> Option<Self> {
        map.get_ptr_mut(index).map(Self)
    }

    pub(crate) fn hash<K>(map: &HashMap<K, T>, key: K) -> Option<Self> {
        map.get_ptr_mut(key).map(Self)
    }

    pub(crate) fn lru<K>(map: &LruHashMap<K, T>, key: K) -> Option<Self> {
        map.get_ptr_mut(key).map(Self)
    }

    pub(crate) const fn as_ptr(self) -> *mut T {
        self.0
    }

    pub(crate) fn get(self) -> T {
        // SAFETY: a slot's pointer is valid (see `Slot`) and any bit pattern is a `T`.
        unsafe { self.0.read() }
    }

    pub(crate) fn set(self, value: T) {
        // SAFETY: a slot's pointer is valid (see `Slot`).
        unsafe { self.0.write(value) }
    }
}

impl Slot<u64> {
    /// Adds `delta` (wrapping) in one atomic instruction: for a value CPUs change at once.
    pub(crate) fn add_atomic(self, delta: u64) {
        // SAFETY: a slot's pointer is valid and aligned (see `Slot`), and map memory is only
        // ever accessed by whole integers.
        // The intrinsic: this target's core has no `AtomicU64::fetch_add`, but the instruction
        // set has the atomic add it lowers to.
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                self.0, delta,
            )
        };
    }
}

impl<T: Copy, const N: usize> Slot<[T; N]> {
    /// The slot of one element, `None` past the end.
    pub(crate) fn at(self, index: usize) -> Option<Slot<T>> {
        (index < N).then(|| Slot(self.0.cast::<T>().wrapping_add(index)))
    }
}

/// The [`Slot`] of field `$field` of the value in slot `$slot`.
macro_rules! field {
    ($slot:expr, $field:ident) => {{
        let slot: $crate::slot::Slot<_> = $slot;
        // SAFETY: a field of a slot's value is as valid as the value (see `Slot`); `&raw`
        // takes its address without making a reference.
        unsafe { $crate::slot::Slot::new(&raw mut (*slot.as_ptr()).$field) }
    }};
}
pub(crate) use field;

/// Lends this CPU's value of a per-CPU buffer (entry 0) to `f`; `None` when the lookup
/// fails. The buffer is the caller's alone while `f` runs, as long as `f` does not lend the
/// same map again (each map is private to the module that lends it).
#[inline(always)]
pub(crate) fn with_scratch<T, R>(map: &PerCpuArray<T>, f: impl FnOnce(&mut T) -> R) -> Option<R> {
    let value = map.get_ptr_mut(0)?;
    // SAFETY: this CPU's value, valid until the program returns, and reachable by nothing
    // else while `f` runs: the programs run with preemption off, on one CPU, and do not nest
    // on it, but for a page fault of a stack walk's own read, whose program returns before it
    // lends anything (see `stack::walking`).
    Some(f(unsafe { &mut *value }))
}
