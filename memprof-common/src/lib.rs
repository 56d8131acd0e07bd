//! The events the eBPF programs send to userspace through the ring buffer, and the
//! configuration userspace hands the programs at load time.
//!
//! Every event starts with an [`EventHeader`]; `kind` says which struct follows. All fields
//! are explicit integers so the layout has no hidden padding; each type's size is asserted
//! beside it, with its `aya::Pod` impl (feature `user`).
#![no_std]

/// Asserts that `$t` is `$size` bytes, the sum of its fields (so the compiler added no
/// padding), and marks it `aya::Pod` for userspace.
macro_rules! plain_data {
    ($t:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        // SAFETY: a #[repr(C)] struct of integers without padding (asserted above): every
        // byte is initialised and any bit pattern is a valid value.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $t {}
    };
}

/// What an event is; the value of [`EventHeader::kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A memory syscall returned: [`SyscallEvent`].
    Syscall = 1,
    /// A page fault on a user address: [`FaultEvent`].
    Fault = 2,
    /// One of the mm's RSS counters changed: [`RssEvent`].
    Rss = 3,
    /// A traced process created a new process: [`NewProcessEvent`].
    NewProcess = 4,
    /// A traced process called exec, or a process started matching `--all`'s filter by
    /// calling exec: [`ExecEvent`].
    Exec = 5,
    /// The last thread of a traced process is exiting, address space still intact:
    /// [`ExitEvent`].
    Exit = 6,
    /// A call stack, sent once before the first event that refers to it: [`StackEvent`].
    Stack = 7,
    /// A user stack as memory, for userspace to unwind: [`RawStackEvent`].
    RawStack = 8,
    /// The path of a file just mapped: [`FilePathEvent`].
    FilePath = 9,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Syscall,
            2 => Self::Fault,
            3 => Self::Rss,
            4 => Self::NewProcess,
            5 => Self::Exec,
            6 => Self::Exit,
            7 => Self::Stack,
            8 => Self::RawStack,
            9 => Self::FilePath,
            _ => return None,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub kind: u32,
    /// Process id (thread group id) of the task the event is about.
    pub tgid: u32,
    /// Thread id of the task that caused it.
    pub tid: u32,
    pub _pad: u32,
    /// CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns).
    pub ts_ns: u64,
}
plain_data!(EventHeader, 24);

/// The syscall arguments, as the caller passed them in registers.
pub const SYSCALL_ARGS: usize = 6;

/// A stack id that is not there: not asked for, or its [`StackEvent`] could not be sent.
pub const NO_STACK: u64 = 0;
/// The most frames per stack (the kernel's PERF_MAX_STACK_DEPTH).
pub const MAX_STACK_DEPTH: usize = 127;

/// Where a shmat event carries the length of the mapping it made (the segment's size, which
/// is not among the call's arguments), read from the kernel's mapping at exit.
pub const SHMAT_LENGTH_ARG: usize = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallEvent {
    pub header: EventHeader,
    /// The architecture's syscall number.
    pub nr: u32,
    /// This call's place in the order in which the kernel changed the process's address
    /// space ([`TracedProcess::changes`] when it took the mmap write lock), so that calls of
    /// threads racing on one address space are applied in that order; 0 when it took no
    /// write lock (it changed no layout, or failed before).
    pub order: u32,
    /// The caller's user stack (a [`StackEvent`] id), or [`NO_STACK`].
    pub user_stack: u64,
    /// mmap: addr, len, prot, flags, fd, offset; munmap: addr, len; mremap: addr, old_len,
    /// new_len, flags, new_addr; brk: brk; mprotect: addr, len, prot; madvise: addr, len,
    /// advice; shmat: shmid, shmaddr, shmflg and, at [`SHMAT_LENGTH_ARG`], the length of the
    /// mapping made; shmdt: shmaddr.
    pub args: [u64; SYSCALL_ARGS],
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
}
plain_data!(SyscallEvent, 96);

/// Page faults of one thread: one, or a run of faults on consecutive pages, each on the page
/// after the one before, with one error code and one stack (the header's time is the
/// first's). The kernel sends a run when the next fault does not extend it, before the
/// thread's next syscall, fault, fork, exec or exit event, when the thread is switched out,
/// and at [`FAULT_RUN_PAGES`]; userspace reads the runs not sent yet when tracing ends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultEvent {
    pub header: EventHeader,
    /// The first fault's address.
    pub address: u64,
    /// x86 page-fault error code: bit 1 set for a write.
    pub error_code: u64,
    /// The faulting code's user stack when these faults were sampled (`--fault-stacks`), or
    /// [`NO_STACK`]. A sampled fault whose stack went out as a copy ([`RAW_STACK`]) is sent
    /// alone, right after its copy.
    pub stack: u64,
    /// How many faults: one on each page from `address`'s on.
    pub pages: u64,
}
plain_data!(FaultEvent, 56);

/// The most faults one [`FaultEvent`] carries (2 MiB of pages), so that what userspace knows
/// lags the kernel by little.
pub const FAULT_RUN_PAGES: u64 = 512;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RssEvent {
    pub header: EventHeader,
    /// 0 file, 1 anon, 2 swap entries, 3 shmem (kmem:rss_stat `member`).
    pub member: u32,
    pub _pad: u32,
    /// The counter's new value in bytes.
    pub bytes: i64,
}
plain_data!(RssEvent, 40);

/// Components of a [`FilePathEvent`]'s path, at most (a deeper path keeps its last ones).
pub const PATH_COMPONENTS: usize = 24;
/// Bytes of a component name a [`FilePathEvent`] keeps, its terminating NUL included.
pub const PATH_COMPONENT_BYTES: usize = 64;

/// The path of a file a traced process just mapped (a library it loads), read from the
/// kernel's own records when the mmap returns: the mapping is named without /proc, which a
/// short-lived process leaves no time to read. Sent just before the mmap's [`SyscallEvent`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FilePathEvent {
    pub header: EventHeader,
    /// Where the file was mapped (the mmap's return value).
    pub address: u64,
    /// How many of `names` hold a component, leaf first: `libc.so.6`, `x86_64-linux-gnu`,
    /// `lib`, `usr`. Only those are sent: the event is [`FILE_PATH_EVENT_HEAD`] +
    /// [`PATH_COMPONENT_BYTES`] × `components` bytes long.
    pub components: u32,
    /// 1 when the path has more components than [`PATH_COMPONENTS`] (its first are missing).
    pub cut: u32,
    /// NUL-terminated (cut to [`PATH_COMPONENT_BYTES`]).
    pub names: [[u8; PATH_COMPONENT_BYTES]; PATH_COMPONENTS],
}
plain_data!(FilePathEvent, 40 + PATH_COMPONENT_BYTES * PATH_COMPONENTS);

/// The bytes of a [`FilePathEvent`] before its names.
pub const FILE_PATH_EVENT_HEAD: usize = core::mem::offset_of!(FilePathEvent, names);

/// A call stack. The kernel sends each one once per process, before the first event that
/// refers to it (again only after it forgot having sent it), and only its `frames` first
/// `ips`: the event is [`STACK_EVENT_HEAD`] + 8 × `frames` bytes long.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackEvent {
    pub header: EventHeader,
    /// The id events use for it: a hash of the process id and the addresses, never 0.
    pub id: u64,
    /// How many of `ips` are filled, leaf first.
    pub frames: u32,
    pub _pad: u32,
    pub ips: [u64; MAX_STACK_DEPTH],
}
plain_data!(StackEvent, 1056);

/// A user stack id meaning "the [`RawStackEvent`] this thread sent just before": the stack
/// is to be unwound from its copy.
pub const RAW_STACK: u64 = u64::MAX;

/// The most bytes of user stack a [`RawStackEvent`] carries (from the stack pointer up).
pub const RAW_STACK_BYTES: usize = 16 << 10;

/// A thread's user stack as memory: its registers when the event happened and a copy of its
/// stack from the stack pointer up to the top of the stack (at most [`RAW_STACK_BYTES`]), for
/// userspace to unwind with the binaries' own unwind tables (`.eh_frame`): code built without
/// frame pointers defeats a frame-pointer walk. Sent just before the event it belongs to,
/// which names it with [`RAW_STACK`], whenever the stack's frame-pointer walk is not one
/// userspace has vouched for (see `MP_STACKS_KNOWN`); only its `len` first bytes of `stack`
/// are sent: the event is [`RAW_STACK_EVENT_HEAD`] + `len` bytes long.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawStackEvent {
    pub header: EventHeader,
    /// The id of the stack's frame-pointer walk (as a [`StackEvent`] would name it): the one
    /// userspace vouches for when the unwound stack has the same frames.
    pub id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// How many bytes of `stack` were copied, from `sp` + `skip` up; 0 when the copy failed.
    pub len: u32,
    /// Bytes above `sp` not copied: the page `sp` is in was not there yet (the event is the
    /// fault that brings it in), so the copy starts at the next page.
    pub skip: u32,
    /// [`RAW_STACK_LEAF_RETURNS`], [`RAW_STACK_AWAITS_VERDICT`].
    pub flags: u32,
    pub _pad: u32,
    pub stack: [u8; RAW_STACK_BYTES],
}
plain_data!(RawStackEvent, 72 + RAW_STACK_BYTES);

/// [`RawStackEvent::flags`]: the leaf is a syscall wrapper, which keeps no frame: the word at
/// `sp` is its return address, and the frame-pointer walk takes it as the second frame (the
/// wrapper's caller, which the frame pointers skip).
pub const RAW_STACK_LEAF_RETURNS: u32 = 1;

/// [`RawStackEvent::flags`]: the kernel waits for userspace's verdict on this stack's frame
/// walk (the first copy of it since its slot in the cache was taken); later copies need
/// none.
pub const RAW_STACK_AWAITS_VERDICT: u32 = 2;

/// Marks a stack id userspace found the frame walk of wrong (code without frame pointers),
/// in the kernel's cache of copied stacks: each event with that stack is copied. Stack ids
/// never have this bit.
pub const STACK_WALK_DENIED: u64 = 1 << 63;

/// The bytes of a [`RawStackEvent`] before its copy of the stack.
pub const RAW_STACK_EVENT_HEAD: usize = core::mem::offset_of!(RawStackEvent, stack);

/// The bytes of a [`StackEvent`] before its addresses.
pub const STACK_EVENT_HEAD: usize = core::mem::offset_of!(StackEvent, ips);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NewProcessEvent {
    pub header: EventHeader,
    /// The new process's pid; it is already in the in-kernel filter.
    pub child_pid: u32,
    pub _pad: u32,
    pub clone_flags: u64,
    /// The parent's command name (the child's until it execs).
    pub comm: [u8; 16],
}
plain_data!(NewProcessEvent, 56);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// The new command name: names a process that exits before /proc can be read.
    pub comm: [u8; 16],
    /// The new image's `mm->start_stack` (/proc/PID/stat's startstack, randomized at each
    /// exec): tells whether what /proc shows later is this image or one it exec'd since.
    pub start_stack: u64,
}
plain_data!(ExecEvent, 48);

/// The kernel's own figures for a process, read as its last thread exits, just before its
/// address space goes: what memprof's are checked against when /proc is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `mm->total_vm`, in bytes: VmSize.
    pub vm_size_bytes: u64,
    /// The file, anonymous and shmem resident-page counters, each summed over CPUs as
    /// /proc/PID/status does, in bytes: VmRSS.
    pub vm_rss_bytes: u64,
    /// 1 when the figures were read (the process had an address space).
    pub read: u32,
    pub _pad: u32,
}
plain_data!(ExitEvent, 48);

/// `--all`: which processes are traced besides those userspace adds to the filter. Checked
/// in the kernel when a process is created and when it calls exec; a process traced stays
/// traced until it exits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Filter {
    /// 1: trace every process matching the fields below; 0: only those in the filter map.
    pub all: u32,
    /// memprof itself, never traced.
    pub self_tgid: u32,
    /// Only processes whose real uid is this one; [`ANY_UID`] for any.
    pub uid: u32,
    /// Depth of `cgroup_id` below the cgroup v2 root (its path's components).
    pub cgroup_level: u32,
    /// Only processes in this cgroup v2 (its directory's inode number) or below; 0 for any.
    pub cgroup_id: u64,
    /// Only processes with this command name (NUL-padded, as the kernel's 16-byte comm);
    /// all zeroes for any.
    pub comm: [u8; 16],
}
plain_data!(Filter, 40);

/// Where the programs find what they read of the kernel's structures (the rss_stat raw
/// tracepoint gets only the mm and which counter changed; exit reads the mm's figures; stack
/// copies and file paths follow the task's pointers). Read from the kernel's BTF at load
/// time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelLayout {
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.rss_stat`, an array of `struct percpu_counter` indexed by the counter.
    pub mm_rss_stat: u32,
    /// `sizeof(struct percpu_counter)`.
    pub counter_size: u32,
    /// `percpu_counter.count`, the counter's value in pages.
    pub counter_count: u32,
    /// `mm_struct.start_stack`: above every frame of the main thread's stack.
    pub mm_start_stack: u32,
    /// `vm_area_struct.vm_end`, the end of a mapping (a thread's stack).
    pub vma_end: u32,
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.fd`: a task's open files.
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    /// `file.f_path`, then `path.mnt` and `path.dentry`: where an open file is.
    pub file_path: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    /// `dentry.d_parent`, `dentry.d_name`, and in it `qstr.name`: a path's components.
    pub dentry_parent: u32,
    pub dentry_name: u32,
    pub qstr_name: u32,
    /// `mount.mnt` (the `vfsmount` inside a `mount`), `mount.mnt_parent`,
    /// `mount.mnt_mountpoint`: how a path crosses mount points.
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    /// `mm_struct.total_vm`, the pages mapped (VmSize).
    pub mm_total_vm: u32,
    /// `percpu_counter.counters`, the per-CPU parts of a counter not yet in `count`.
    pub counter_counters: u32,
    /// `bpf_array.pptrs`, a per-CPU array map's per-CPU pointers: where each CPU's copies of
    /// per-CPU data lie.
    pub array_pptrs: u32,
    /// `mm_struct.mm_users`: the tasks sharing an address space (an `atomic_t`).
    pub mm_users: u32,
}
plain_data!(KernelLayout, 88);

impl KernelLayout {
    /// Before userspace sets it at load time.
    pub const UNSET: Self = Self {
        task_mm: 0,
        mm_rss_stat: 0,
        counter_size: 0,
        counter_count: 0,
        mm_start_stack: 0,
        vma_end: 0,
        task_files: 0,
        files_fdt: 0,
        fdtable_fd: 0,
        file_path: 0,
        path_mnt: 0,
        path_dentry: 0,
        dentry_parent: 0,
        dentry_name: 0,
        qstr_name: 0,
        mount_mnt: 0,
        mount_parent: 0,
        mount_mountpoint: 0,
        mm_total_vm: 0,
        counter_counters: 0,
        array_pptrs: 0,
        mm_users: 0,
    };
}

/// Pids the per-pid state map covers (one byte each): the kernel's PID_MAX_LIMIT on 64-bit
/// machines, so that every pid fits whatever `kernel.pid_max` says.
pub const PID_LIMIT: u32 = 1 << 22;

/// A pid's byte in the per-pid state map, read by the programs on every syscall and fault.
pub mod pid_state {
    pub const UNTRACED: u8 = 0;
    pub const TRACED: u8 = 1;
    /// Traced, and one of its threads is inside execve: the kernel builds the new image (and
    /// faults on it) before sched_process_exec says the address space was replaced, so faults
    /// are not recorded meanwhile.
    pub const EXECING: u8 = 2;
}

/// What the kernel keeps about a traced process for its counter changes, by pid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TracedProcess {
    /// Its mm, once an rss_stat event of its own showed it (0 before and after exec): counter
    /// changes other tasks make on it (reclaim) are charged to the process.
    pub mm: u64,
    /// How many times its threads took its mmap write lock in a followed syscall: each such
    /// call's [`SyscallEvent::order`]. Counted while the lock is held, so in the kernel's
    /// order of changes.
    pub changes: u32,
    pub _pad: u32,
}
plain_data!(TracedProcess, 16);

impl TracedProcess {
    pub const NEW: Self = Self {
        mm: 0,
        changes: 0,
        _pad: 0,
    };
}

/// [`Filter::uid`] matching every user.
pub const ANY_UID: u32 = u32::MAX;

/// Index of the per-CPU counter of events the ring buffer had no room for.
pub const COUNTER_LOST: u32 = 0;
/// Index of the per-CPU counter of stacks that could not be sent (ring buffer full).
pub const COUNTER_STACKS_LOST: u32 = 1;
/// Index of the per-CPU counter of user stacks not copied because copies were over budget
/// ([`RAW_STACKS_PER_TICK`]): their events go without a stack.
pub const COUNTER_STACKS_OVER_BUDGET: u32 = 2;
/// The raw stacks a CPU may copy per kernel tick (4 ms at HZ=250), of each kind (memory
/// syscalls, page faults), saved up to [`RAW_STACK_COPY_BURST`]: 128,000 a second, far more
/// than programs make memory syscalls, but a bound on what a storm of page faults in code
/// without frame pointers (`--fault-stacks`) costs the program and memprof.
pub const RAW_STACKS_PER_TICK: u64 = 512;

/// The most copies a CPU saves up: a program's start (thousands of page faults in the dynamic
/// loader, each its own stack) copies them all.
pub const RAW_STACK_COPY_BURST: u64 = 8192;
/// Number of per-CPU counters.
pub const COUNTERS: u32 = 3;

/// Where the eBPF programs read each tracepoint field: (tracepoint, field, offset).
/// The loader checks every entry against the kernel's `format` file before attaching, so a
/// kernel with another layout is refused by name instead of producing wrong figures.
pub mod fields {
    pub type Field = (&'static str, &'static str, usize);

    pub const NEWTASK_PID: Field = ("task/task_newtask", "pid", 8);
    pub const NEWTASK_CLONE_FLAGS: Field = ("task/task_newtask", "clone_flags", 32);
    pub const EXIT_GROUP_DEAD: Field = ("sched/sched_process_exit", "group_dead", 32);
    /// Not read: the program is on the raw tracepoint, whose arguments are the mm, write and
    /// success. Checked as the mark of that layout: older kernels passed a memory cgroup's
    /// path before `write`.
    pub const MMAP_LOCK_WRITE: Field = ("mmap_lock/mmap_lock_acquire_returned", "write", 24);
    pub const MMAP_LOCK_SUCCESS: Field = ("mmap_lock/mmap_lock_acquire_returned", "success", 25);

    pub const ALL: [Field; 5] = [
        NEWTASK_PID,
        NEWTASK_CLONE_FLAGS,
        EXIT_GROUP_DEAD,
        MMAP_LOCK_WRITE,
        MMAP_LOCK_SUCCESS,
    ];
}
