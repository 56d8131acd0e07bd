//! What the programs assume of the machine: x86_64 with 4 KiB pages and 48-bit user space.

pub(crate) const PAGE_SIZE: u64 = 4096;

/// Addresses at or above this are the kernel's.
pub(crate) const USER_SPACE_END: u64 = 0x0000_8000_0000_0000;

/// The syscall numbers of the calls followed, as userspace reads them in events.
pub(crate) mod nr {
    pub(crate) const MMAP: u64 = 9;
    pub(crate) const MPROTECT: u64 = 10;
    pub(crate) const MUNMAP: u64 = 11;
    pub(crate) const BRK: u64 = 12;
    pub(crate) const MREMAP: u64 = 25;
    pub(crate) const MADVISE: u64 = 28;
    pub(crate) const SHMAT: u64 = 30;
    pub(crate) const SHMDT: u64 = 67;
    pub(crate) const MLOCK: u64 = 149;
    pub(crate) const MLOCKALL: u64 = 151;
    pub(crate) const MUNLOCKALL: u64 = 152;
    pub(crate) const MLOCK2: u64 = 325;
}

/// `struct pt_regs` (a uapi layout), as indexes of its 8-byte words.
pub(crate) mod regs {
    use memprof_common::SYSCALL_ARGS;

    pub(crate) const BP: usize = 4;
    pub(crate) const R10: usize = 7;
    pub(crate) const R9: usize = 8;
    pub(crate) const R8: usize = 9;
    /// The syscall's result, at its exit.
    pub(crate) const AX: usize = 10;
    pub(crate) const DX: usize = 12;
    pub(crate) const SI: usize = 13;
    pub(crate) const DI: usize = 14;
    /// The number of the syscall the task is in (-1 outside one; an exception's error code
    /// in its handler: a page fault's is never the number of a followed syscall).
    pub(crate) const ORIG_AX: usize = 15;
    pub(crate) const IP: usize = 16;
    /// The user code segment: 0x33 in 64-bit mode.
    pub(crate) const CS: usize = 17;
    pub(crate) const SP: usize = 19;
    /// Where the syscall ABI passes arguments one to six.
    pub(crate) const ARGS: [usize; SYSCALL_ARGS] = [DI, SI, DX, R10, R8, R9];
}
