//! What the programs ask of the kernel, as safe functions: the helpers that take plain
//! values and have no preconditions, reads of kernel memory (the helper fails cleanly on a
//! bad address), a tracepoint's fields, and the current task and its user registers.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str_bytes, generated,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    programs::TracePointContext,
};
use memprof_common::fields;

/// Safe wrappers of helpers that take plain values and have no preconditions.
macro_rules! no_preconditions {
    ($($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $helper:ident;)*) => {
        $(
            $(#[$doc])*
            #[inline(always)]
            pub(crate) fn $name($($arg: $ty),*) -> $ret {
                // SAFETY: the helper takes plain values and has no preconditions.
                unsafe { generated::$helper($($arg),*) }
            }
        )*
    };
}

no_preconditions! {
    /// The kernel's tick count (the verifier inlines it: a plain load).
    fn jiffies() -> u64 = bpf_jiffies64;
    /// CLOCK_MONOTONIC in nanoseconds.
    fn ktime_ns() -> u64 = bpf_ktime_get_ns;
    fn prandom() -> u32 = bpf_get_prandom_u32;
    /// The id of the current task's cgroup v2 ancestor `level` below the root.
    fn ancestor_cgroup_id(level: i32) -> u64 = bpf_get_current_ancestor_cgroup_id;
    /// The current task's `task_struct`.
    fn current_task() -> u64 = bpf_get_current_task;
    /// The CPU the program runs on.
    fn cpu() -> u32 = bpf_get_smp_processor_id;
}

/// Reads a `T` of kernel memory at `address`.
pub(crate) fn read_kernel<T>(address: *const T) -> Result<T, i64> {
    // SAFETY: the helper reads any kernel address, failing cleanly on a bad one.
    unsafe { bpf_probe_read_kernel(address) }.map_err(i64::from)
}

/// Reads the NUL-terminated string of kernel memory at `address` into `dest` (cut to fit,
/// NUL-terminated); false when it could not be read.
pub(crate) fn read_kernel_str<const N: usize>(dest: &mut [u8; N], address: u64) -> bool {
    // SAFETY: the helper reads any kernel address, failing cleanly on a bad one, and writes
    // at most `dest.len()` bytes.
    unsafe { bpf_probe_read_kernel_str_bytes(address as *const u8, dest) }.is_ok()
}

/// A field of the tracepoint's formatted event.
pub(crate) fn field<T>(ctx: &TracePointContext, field: fields::Field) -> Result<T, i64> {
    // SAFETY: the loader checked the offset against this kernel's tracepoint format, and the
    // helper behind `read_at` fails cleanly past its end.
    unsafe { ctx.read_at::<T>(field.2) }.map_err(i64::from)
}

/// The current task's process id (tgid) and thread id.
pub(crate) fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// The current task's command name, NUL-padded.
pub(crate) fn comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or_default()
}

/// A program's return value: tracepoint programs' is ignored, errors end them early.
pub(crate) fn ok(result: Result<u32, i64>) -> u32 {
    result.unwrap_or(0)
}

/// The current task's user registers (`struct pt_regs`, by word): a syscall's number and
/// arguments, the user stack of a syscall or of a fault taken in user mode. Plain loads,
/// where reading them through the fault's argument cost a helper call each.
#[derive(Clone, Copy)]
pub(crate) struct PtRegs(*const u64);

impl PtRegs {
    pub(crate) fn current() -> Self {
        // SAFETY: the helpers take the current task, which the verifier knows to be valid, and
        // return its user registers.
        Self(unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u64)
    }

    pub(crate) fn get(self, index: usize) -> u64 {
        // SAFETY: a `struct pt_regs *`; the verifier checks each load against its BTF and the
        // kernel recovers from a bad address.
        unsafe { *self.0.add(index) }
    }
}
