//! What userspace sets when it loads the programs (`EbpfLoader::override_global`, by these
//! names): what to record, `--all`'s filter, and where this kernel keeps what rss_stat reads.
//! They live in `.rodata`, which the loader freezes: the verifier knows their values and
//! drops the branches they turn off. Read them with [`get`].
//!
//! Plain statics rather than aya-ebpf's `Global`: bpf-linker before 0.10.2 left the name of
//! its `MaybeUninit<T>` union as it is in BTF, and the kernel refused the whole object for it.

use memprof_common::{ANY_UID, Filter, KernelLayout};

use crate::kernel::ok;

/// Record the call stack of mmap and brk (`top` does without).
#[unsafe(no_mangle)]
pub(crate) static USER_STACKS: u32 = 1;

/// `--fault-stacks`, `--fault-sample`: record the stack of one fault in this many; 0 records
/// none.
#[unsafe(no_mangle)]
pub(crate) static FAULT_STACK_SAMPLE: u32 = 0;

/// The slots of the caches of stacks sent and vouched for (`--stack-cache-slots`, a power of
/// two) less one, so that a mask picks a slot (a division costs as much as the rest of the
/// lookup).
#[unsafe(no_mangle)]
pub(crate) static STACK_SLOT_MASK: u32 = 0;

/// `run --empty-programs` (hidden, for the bench): the programs on syscalls, faults, counter
/// changes, the mmap lock and context switches return at once, so that a run measures what
/// the kernel's calling them costs. 0 otherwise, and the verifier drops the checks.
#[unsafe(no_mangle)]
pub(crate) static EMPTY_PROGRAMS: u32 = 0;

/// From the kernel's BTF.
#[unsafe(no_mangle)]
pub(crate) static LAYOUT: KernelLayout = KernelLayout::UNSET;

/// `--all` and its filters.
#[unsafe(no_mangle)]
pub(crate) static FILTER: Filter = Filter {
    all: 0,
    self_tgid: 0,
    uid: ANY_UID,
    cgroup_level: 0,
    cgroup_id: 0,
    comm: [0; 16],
};

/// A hot program's body, unless [`EMPTY_PROGRAMS`] has it return at once.
#[inline(always)]
pub(crate) fn unless_empty(body: impl FnOnce() -> Result<u32, i64>) -> u32 {
    if get(&EMPTY_PROGRAMS) != 0 {
        return 0;
    }
    ok(body())
}

/// The value the loader set: the compiler would otherwise fold in the one written here.
pub(crate) fn get<T: Copy>(value: &'static T) -> T {
    // SAFETY: a valid static, read whole.
    unsafe { core::ptr::read_volatile(value) }
}
