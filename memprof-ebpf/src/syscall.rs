//! The memory syscalls of traced processes (mmap, munmap, mremap, brk, madvise, mprotect,
//! shmat, shmdt, and the mlocks, which fault memory in), at their exit, with the stacks of
//! those that create memory.

use aya_ebpf::{
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use memprof_common::{
    EventKind, SHMAT_LENGTH_ARG, SyscallEvent,
    pid_state::{EXECING, TRACED},
};

use crate::{
    arch::{nr, regs},
    config::{self, LAYOUT, USER_STACKS},
    event::{emit, header},
    fault::end_fault_run,
    filter::{count_change, is_traced, set_state, state},
    kernel::{PtRegs, current_ids, read_kernel},
    path::send_file_path,
    slot::{Slot, with_scratch},
    stack::{UserRegs, mapping_end, user_stack},
};

/// Attached to the exit tracepoints of only the syscalls followed (syscalls:sys_exit_mmap,
/// …), not to raw_syscalls:sys_exit: a program there runs for every syscall of every process
/// on the host (an untraced syscall-bound process ran 1.42x slower beside it), while here
/// the others pay only the kernel's syscall-tracepoint slow path. fexit programs on the
/// syscall functions would spare them that too, but these machines refuse to load them
/// (EPERM), and kprobes are not built in. One program on every such tracepoint: the kernel
/// verifies it once.
#[tracepoint]
fn mp_syscall_exit(_ctx: TracePointContext) -> u32 {
    config::unless_empty(try_syscall_exit)
}

/// For the memory syscalls followed: whether the call creates memory (mmap, brk, shmat),
/// whose stack is recorded to name a site; the others charge the site that created what they
/// change. None for the others (exec).
fn creates_memory(nr: u64) -> Option<bool> {
    match nr {
        nr::MMAP | nr::BRK | nr::SHMAT => Some(true),
        nr::MUNMAP | nr::MREMAP | nr::MPROTECT | nr::MADVISE | nr::SHMDT => Some(false),
        nr::MLOCK | nr::MLOCK2 | nr::MLOCKALL | nr::MUNLOCKALL => Some(false),
        _ => None,
    }
}

/// The number of the change the thread on this CPU made in its current syscall
/// ([`count_change`]), until the syscall's exit sends it; `number` 0: none. A thread keeps its
/// CPU from its change to its syscall's exit unless it is switched out, and then
/// [`park_change`] moves the number to [`MP_PARKED_CHANGE`]: a per-CPU value is a load, where
/// a map keyed by thread cost a hash lookup in both programs of every syscall.
#[derive(Clone, Copy)]
#[repr(C)]
struct PendingChange {
    tid: u32,
    number: u32,
}

#[map]
static MP_PENDING_CHANGE: PerCpuArray<PendingChange> = PerCpuArray::with_max_entries(1, 0);

/// The numbers of threads switched out between their change and their syscall's exit, by
/// thread id.
#[map]
static MP_PARKED_CHANGE: LruHashMap<u32, u32> = LruHashMap::with_max_entries(16384, 0);

/// How many numbers [`MP_PARKED_CHANGE`] holds (more when one was evicted or replaced):
/// while none, a syscall's exit does not look there.
#[map]
static MP_PARKED_CHANGES: Array<u64> = Array::with_max_entries(1, 0);

/// On mmap_lock:mmap_lock_acquire_returned (raw: the mm, write, success; the loader checks
/// the event's layout, which older kernels had a memory cgroup's path in): a thread of a
/// traced process took its address space's write lock in a followed syscall. Threads racing
/// on one address space reach their syscalls' exits in any order; the number counted here,
/// under the lock, is the kernel's order of their changes, which userspace applies them in.
/// An address space no other task uses (`mm_users` 1: a single-threaded process) has no
/// race, and its changes go unnumbered, applied as they come. A syscall is numbered once,
/// at its first write lock (MADV_COLLAPSE takes one per 2 MiB): its event carries one
/// number. Outside a followed syscall (fork copying the address space, a user-mode fault
/// growing the stack) nothing is counted: no event would carry the number, and userspace
/// would wait for it. A raw tracepoint: every process's lock taken for reading (a page
/// fault's fallback, /proc readers) runs it, and the formatted event would have the kernel
/// look up the mm's memory cgroup first.
#[raw_tracepoint(tracepoint = "mmap_lock_acquire_returned")]
fn mp_mmap_write_locked(ctx: RawTracePointContext) -> u32 {
    config::unless_empty(|| try_mmap_write_locked(&ctx))
}

fn try_mmap_write_locked(ctx: &RawTracePointContext) -> Result<u32, i64> {
    let (write, success): (u64, u64) = (ctx.arg(1), ctx.arg(2));
    // bools, in the low byte of their argument.
    if write & 0xff == 0 || success & 0xff == 0 {
        return Ok(0);
    }
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return Ok(0);
    }
    let mm: u64 = ctx.arg(0);
    let users: i32 = read_kernel((mm + u64::from(config::get(&LAYOUT).mm_users)) as *const i32)?;
    if users <= 1 {
        return Ok(0);
    }
    let registers = PtRegs::current();
    // A 32-bit syscall's numbers are others, and its exit fires no syscalls:sys_exit_*.
    const USER_CS_64: u64 = 0x33;
    if registers.get(regs::CS) != USER_CS_64
        || creates_memory(registers.get(regs::ORIG_AX)).is_none()
        || has_change_number(tid)
    {
        return Ok(0);
    }
    let Some(number) = count_change(tgid) else {
        return Ok(0);
    };
    with_scratch(&MP_PENDING_CHANGE, |pending| {
        *pending = PendingChange { tid, number };
    });
    Ok(0)
}

/// Parks the pending change number of the thread being switched out (see
/// [`PendingChange`]). Called by the sched_switch program, which runs in that thread.
pub(crate) fn park_change() {
    with_scratch(&MP_PENDING_CHANGE, |pending| {
        if pending.number == 0 || pending.tid != current_ids().1 {
            return;
        }
        if MP_PARKED_CHANGE
            .insert(pending.tid, pending.number, 0)
            .is_ok()
            && let Some(parked) = Slot::array(&MP_PARKED_CHANGES, 0)
        {
            parked.add_atomic(1);
        }
        pending.number = 0;
    });
}

/// Thread `tid`'s parked number, and the count of parked numbers it is in.
fn parked_number(tid: u32) -> Option<(Slot<u64>, u32)> {
    // A plain load (this target has no atomic one): of a whole aligned word, which the atomic
    // adds never tear.
    let parked = Slot::array(&MP_PARKED_CHANGES, 0).filter(|parked| parked.get() != 0)?;
    Some((parked, Slot::lru(&MP_PARKED_CHANGE, tid)?.get()))
}

/// Whether thread `tid`'s current syscall has its number already.
fn has_change_number(tid: u32) -> bool {
    with_scratch(&MP_PENDING_CHANGE, |pending| {
        pending.tid == tid && pending.number != 0
    })
    .unwrap_or(false)
        || parked_number(tid).is_some()
}

/// Takes the number of the change thread `tid`'s current syscall made: 0 when it made none
/// (or its process is single-threaded). Also at a thread's exit, so that no number outlives
/// the syscall that took it.
pub(crate) fn take_change_number(tid: u32) -> u32 {
    let here = with_scratch(&MP_PENDING_CHANGE, |pending| {
        if pending.tid != tid {
            return 0;
        }
        let number = pending.number;
        pending.number = 0;
        number
    });
    if let Some(number) = here.filter(|&number| number != 0) {
        return number;
    }
    let Some((parked, number)) = parked_number(tid) else {
        return 0;
    };
    if MP_PARKED_CHANGE.remove(tid).is_ok() {
        parked.add_atomic(u64::MAX);
    }
    number
}

fn try_syscall_exit() -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    // Taken before anything else: a number never outlives its syscall (its process may have
    // stopped being traced since).
    let order = take_change_number(tid);
    if !is_traced(tgid) {
        return Ok(0);
    }
    // The number and the result from the registers, plain loads, rather than the formatted
    // event's fields, a helper call each.
    let registers = PtRegs::current();
    let reg = |index| registers.get(index);
    let nr = reg(regs::ORIG_AX);
    let Some(creates) = creates_memory(nr) else {
        // execve or execveat: a failed exec leaves the old image (mp_exec saw the
        // successful ones).
        if state(tgid) == EXECING {
            set_state(tgid, TRACED);
        }
        return Ok(0);
    };
    let mut event = SyscallEvent {
        header: header(EventKind::Syscall, tgid, tid),
        nr: nr as u32,
        order,
        ret: reg(regs::AX) as i64,
        ..Default::default()
    };
    for (arg, &register) in event.args.iter_mut().zip(regs::ARGS.iter()) {
        *arg = reg(register);
    }
    const MAP_ANONYMOUS: u64 = 0x20;
    let [_, _, _, flags, fd, _] = event.args;
    if nr == nr::MMAP && event.ret >= 0 && flags & MAP_ANONYMOUS == 0 && (fd as i64) >= 0 {
        send_file_path(tgid, tid, fd, event.ret as u64);
    }
    if nr == nr::SHMAT && event.ret >= 0 {
        let address = event.ret as u64;
        event.args[SHMAT_LENGTH_ARG] = mapping_end(address).saturating_sub(address);
    }
    if creates && config::get(&USER_STACKS) != 0 {
        // The caller's stack is as it was when the syscall wrapper ran `syscall`.
        event.user_stack = user_stack(tgid, tid, UserRegs::of(registers), true);
    }
    end_fault_run();
    emit(event);
    Ok(0)
}
