//! The memory syscalls of traced processes (mmap, munmap, mremap, brk, madvise, mprotect),
//! at their exit, with the stacks of those that create memory.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use memprof_common::{
    EventKind, SyscallEvent,
    pid_state::{EXECING, TRACED},
};

use crate::{
    arch::{nr, regs},
    config::{self, KERNEL_STACKS, USER_STACKS},
    event::{emit, header},
    fault::end_fault_run,
    filter::{is_traced, set_state, state},
    kernel::{current_ids, ok},
    path::send_file_path,
    stack::{UserRegs, kernel_stack, user_stack},
};

/// Attached to raw_syscalls:sys_exit, the exit of every syscall on the host, with the caller's
/// registers. A BTF tracepoint: the kernel hands over its arguments without formatting an
/// event, and the program reads the registers directly, no helper call, which is most of
/// what a syscall memprof does not follow costs. One program per call: the arguments are
/// still in the registers at exit, and the caller's stack is the same, so nothing is kept
/// between entry and exit.
#[btf_tracepoint(function = "sys_exit")]
fn mp_sys_exit(ctx: BtfTracePointContext) -> u32 {
    ok(try_sys_exit(&ctx))
}

fn try_sys_exit(ctx: &BtfTracePointContext) -> Result<u32, i64> {
    let regs: *const u64 = ctx.arg(0);
    // SAFETY: the tracepoint's `struct pt_regs *`; the verifier checks each load against its
    // BTF and the kernel recovers from a bad address.
    let reg = |index: usize| unsafe { *regs.add(index) };
    let nr = reg(regs::ORIG_AX);
    // Only the calls that create memory (mmap, brk) name a site: their stack is recorded.
    let creates = match nr {
        nr::MMAP | nr::BRK => true,
        nr::MUNMAP | nr::MREMAP | nr::MPROTECT | nr::MADVISE => false,
        nr::EXECVE | nr::EXECVEAT => {
            // A failed exec leaves the old image (mp_exec saw the successful ones).
            let tgid = current_ids().0;
            if state(tgid) == EXECING {
                set_state(tgid, TRACED);
            }
            return Ok(0);
        }
        _ => return Ok(0),
    };
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return Ok(0);
    }
    let mut event = SyscallEvent {
        header: header(EventKind::Syscall, tgid, tid),
        nr: nr as u32,
        ret: ctx.arg(1),
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
    if creates && config::get(&USER_STACKS) != 0 {
        let regs = UserRegs {
            ip: reg(regs::IP),
            sp: reg(regs::SP),
            bp: reg(regs::BP),
        };
        // The caller's stack is as it was when the syscall wrapper ran `syscall`.
        event.user_stack = user_stack(tgid, tid, regs, true);
    }
    if creates && config::get(&KERNEL_STACKS) != 0 {
        event.kernel_stack = kernel_stack(ctx, tgid, tid, 0);
    }
    end_fault_run();
    emit(event);
    Ok(0)
}
