//! memprof's kernel side: follow the memory syscalls, page faults and resident-counter
//! changes of traced processes, and send them to userspace as events (see memprof-common).
//!
//! Modules in pipeline order: what userspace sets at load, who is traced, the programs,
//! what they send through (stacks, then events); then what they all stand on. Each map is
//! declared in the one module that reads and writes it, private to it (userspace finds maps
//! by name, `MP_*`), rather than all in a `maps.rs`: that module's functions are the only
//! way in, and what makes the map's use sound and cheap (a per-CPU buffer lent once at a
//! time, a cache that tolerates races) is said once, beside the map.
//!
//! Diagnostics go through aya-log, on rare paths only: a process starting to be traced,
//! exec and exit (debug, `lifecycle`), and a CPU's first lost event (warn, `event::lost`);
//! never per syscall, fault or counter change. Userspace sets their level at load time from
//! RUST_LOG's, and the verifier drops the statements above it.
#![no_std]
#![feature(core_intrinsics)]
#![allow(internal_features)]
#![no_main]
#![expect(
    unused_crate_dependencies,
    reason = "the library target (lib.rs) only lets memprof's build.rs depend on this package"
)]

/// What userspace sets at load time: what to record, `--all`'s filter, the kernel's layout.
mod config;

/// Which processes are traced: per-pid state bytes, the per-process entry, `--all`'s filter.
mod filter;

/// Programs on fork, exec and exit: who starts and stops being traced.
mod lifecycle;

/// The program on the exits of mmap, munmap, mremap, brk, madvise, mprotect, shmat, shmdt
/// and exec.
mod syscall;

/// Programs on page faults, sent in runs, and on sched_switch, which sends a thread's run.
mod fault;

/// The program on resident-counter changes, charged to the mm's process.
mod rss;

/// The paths of the files traced processes map, from the kernel's dentries.
mod path;

/// Call stacks: walked by frame pointers or copied, named by a hash.
mod stack;

/// Sending events: header and clock, the ring buffer, counters of what was lost.
mod event;

/// Map memory: plain values by value, per-CPU buffers lent to a closure (the unsafe part).
mod slot;

/// The kernel's helpers, tracepoint fields and kernel memory, as safe functions.
mod kernel;

/// x86_64: syscall numbers, `pt_regs` words, page size, the end of user space.
mod arch;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
