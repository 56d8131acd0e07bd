//! Processes coming and going: a traced process's children are traced from their first
//! instruction, exec replaces a process's address space, exit ends its tracing. With
//! `--all`, a process starts being traced at fork or exec once it matches the filter.
//!
//! Each program logs what it did (aya-log, debug level, see memprof's `Probes::drain_logs`):
//! they run once per process and exec, not per syscall, fault or counter change.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::debug;
use memprof_common::{
    EventKind, ExecEvent, ExitEvent, NewProcessEvent, fields,
    pid_state::{EXECING, TRACED},
};

use crate::{
    event::{emit_now, header},
    fault::end_fault_run,
    filter::{is_traced, set_state, start_tracing, state, stop_tracing, wanted},
    kernel::{comm, current_ids, field, ok},
    rss::{forget_mm, mm_figures},
    stack::{forget_stack_top, main_stack_top},
    syscall::take_change_number,
};

const CLONE_THREAD: u64 = 0x0001_0000;

/// Attached to task:task_newtask, which runs in the parent before the child can run, so a
/// traced process's children (and, with `--all`, new processes matching the filter) are
/// traced from their first instruction.
#[tracepoint]
fn mp_newtask(ctx: TracePointContext) -> u32 {
    ok(try_newtask(&ctx))
}

fn try_newtask(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    let clone_flags = field::<u64>(ctx, fields::NEWTASK_CLONE_FLAGS)?;
    if clone_flags & CLONE_THREAD != 0 {
        return Ok(0);
    }
    let why = if is_traced(tgid) {
        "traced"
    } else if wanted(tgid) {
        "--all-matching"
    } else {
        return Ok(0);
    };
    let child_pid = field::<i32>(ctx, fields::NEWTASK_PID)? as u32;
    start_tracing(child_pid)?;
    // The child copies the pages faulted in so far.
    end_fault_run();
    emit_now(NewProcessEvent {
        header: header(EventKind::NewProcess, tgid, tid),
        child_pid,
        _pad: 0,
        clone_flags,
        comm: comm(),
    });
    debug!(
        ctx,
        "pid {} traced: forked by {} pid {}", child_pid, why, tgid
    );
    Ok(0)
}

/// Attached to sched:sched_prepare_exec, which fires in execve before the address space is
/// replaced (a syscall entry tracepoint would make every syscall on the host pay a check).
#[tracepoint]
fn mp_prepare_exec(_ctx: TracePointContext) -> u32 {
    let tgid = current_ids().0;
    if state(tgid) == TRACED {
        end_fault_run();
        set_state(tgid, EXECING);
    }
    0
}

/// Attached to sched:sched_process_exec, which fires once the new image is in place: with
/// `--all`, a process that now matches the filter (its new name, say) is traced from here.
#[tracepoint]
fn mp_exec(ctx: TracePointContext) -> u32 {
    ok(try_exec(&ctx))
}

fn try_exec(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    let traced_before = if is_traced(tgid) {
        set_state(tgid, TRACED);
        true
    } else if wanted(tgid) {
        start_tracing(tgid)?;
        false
    } else {
        return Ok(0);
    };
    forget_mm(tgid);
    // The thread that called exec is now the main thread (its tid is the pid), on a new stack.
    forget_stack_top(tgid);
    let comm = comm();
    emit_now(ExecEvent {
        header: header(EventKind::Exec, tgid, tid),
        comm,
        start_stack: main_stack_top(),
    });
    if traced_before {
        debug!(ctx, "pid {} exec'd {}", tgid, name(&comm));
    } else {
        debug!(
            ctx,
            "pid {} traced: exec'd {}, which matches --all's filter",
            tgid,
            name(&comm)
        );
    }
    Ok(0)
}

/// Attached to sched:sched_process_exit, which fires before the exiting task drops its mm:
/// the kernel's own figures for the process go with the exit.
#[tracepoint]
fn mp_exit(ctx: TracePointContext) -> u32 {
    ok(try_exit(&ctx))
}

fn try_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return Ok(0);
    }
    end_fault_run();
    take_change_number(tid);
    if field::<u8>(ctx, fields::EXIT_GROUP_DEAD)? == 0 {
        return Ok(0);
    }
    let mut event = ExitEvent {
        header: header(EventKind::Exit, tgid, tid),
        ..Default::default()
    };
    if let Some((vm_size, vm_rss)) = mm_figures() {
        (event.vm_size_bytes, event.vm_rss_bytes, event.read) = (vm_size, vm_rss, 1);
    }
    emit_now(event);
    forget_mm(tgid);
    stop_tracing(tgid)?;
    debug!(ctx, "pid {} exited", tgid);
    Ok(0)
}

/// A command name as text: up to its first NUL, or its first byte outside ASCII.
fn name(comm: &[u8; 16]) -> &str {
    let len = comm
        .iter()
        .position(|&b| b == 0 || !b.is_ascii())
        .unwrap_or(comm.len());
    // SAFETY: ASCII bytes are UTF-8. (`str::from_utf8` aligns a pointer to read words, which
    // the verifier refuses.)
    unsafe { core::str::from_utf8_unchecked(&comm[..len]) }
}
