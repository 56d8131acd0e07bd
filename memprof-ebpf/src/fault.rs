//! Page faults of traced processes. A thread's faults on consecutive pages with one stack
//! (none, or a sampled fault's with `--fault-stacks`) go out as one event, a run (up to
//! 2 MiB); a fault whose stack went out as a copy goes out alone after it. sched_switch sends
//! a thread's run when the thread leaves its CPU.

use aya_ebpf::{
    macros::{map, raw_tracepoint},
    maps::PerCpuArray,
    programs::RawTracePointContext,
};
use memprof_common::{
    EventKind, FAULT_RUN_PAGES, FaultEvent, NO_STACK, RAW_STACK, pid_state::TRACED,
};

use crate::{
    arch::{PAGE_SIZE, USER_SPACE_END},
    config::{self, FAULT_STACK_SAMPLE},
    event::{emit, header, lost, send},
    filter::state,
    kernel::{PtRegs, current_ids, prandom},
    slot::with_scratch,
    stack::{UserRegs, user_stack, user_stack_walked_by_kernel, walking},
    syscall::park_change,
};

/// This CPU's run of faults not sent yet (`pages` 0: none), see [`FaultEvent`]. A run
/// belongs to the thread running on its CPU: it is sent before the thread's next syscall,
/// fault, fork, exec or exit event and when the thread is switched out, so those events of
/// a thread keep their order though it moves between CPUs. What is sent before an event it
/// belongs to (a stack, its copy, a mapped file's path) may go out before the run, and
/// counter changes (rss_stat) do not end it: userspace takes a stack's copy only for an
/// event that carries [`RAW_STACK`], never for a run. One event per 2 MiB instead of one per
/// fault: sending an event costs the faulting thread a helper call, and memprof the time to
/// read it.
#[map]
static MP_FAULT_RUN: PerCpuArray<FaultEvent> = PerCpuArray::with_max_entries(1, 0);

/// Attached to exceptions:page_fault_user (raw: address, user registers, error code).
#[raw_tracepoint(tracepoint = "page_fault_user")]
fn mp_page_fault_user(ctx: RawTracePointContext) -> u32 {
    config::unless_empty(|| try_page_fault(&ctx, true))
}

/// Attached to exceptions:page_fault_kernel: a syscall touching user memory faults it in (and
/// can grow the stack) too. Its registers are the kernel's.
#[raw_tracepoint(tracepoint = "page_fault_kernel")]
fn mp_page_fault_kernel(ctx: RawTracePointContext) -> u32 {
    config::unless_empty(|| try_page_fault(&ctx, false))
}

fn try_page_fault(ctx: &RawTracePointContext, user_mode: bool) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if state(tgid) != TRACED || walking() {
        return Ok(0);
    }
    let address: u64 = ctx.arg(0);
    if address >= USER_SPACE_END {
        return Ok(0);
    }
    let error_code: u64 = ctx.arg(2);
    let sample = config::get(&FAULT_STACK_SAMPLE);
    let sampled = sample == 1 || (sample > 1 && prandom().is_multiple_of(sample));
    if !sampled {
        add_to_fault_run(tgid, tid, address, error_code, NO_STACK);
        return Ok(0);
    }
    let stack = if user_mode {
        // The task's user registers: the fault's own (its argument) in user mode.
        user_stack(tgid, tid, UserRegs::of(PtRegs::current()), false)
    } else {
        // The kernel finds the user registers itself.
        user_stack_walked_by_kernel(ctx, tgid, tid)
    };
    if stack != RAW_STACK {
        // Named by id: a loop faulting page after page goes out as one event, not one each.
        add_to_fault_run(tgid, tid, address, error_code, stack);
        return Ok(0);
    }
    // Its copy went out just now, for userspace to take for the next event of the thread
    // that carries a copied stack: this one, alone.
    end_fault_run();
    emit(FaultEvent {
        header: header(EventKind::Fault, tgid, tid),
        address,
        error_code,
        stack,
        pages: 1,
    });
    Ok(0)
}

/// Attached to sched:sched_switch (raw), which runs in the task being switched out: its run
/// of faults goes out before it can run, and fault, on another CPU; the number of a change it
/// made in a syscall not finished yet is parked until that syscall's exit, wherever it runs.
#[raw_tracepoint(tracepoint = "sched_switch")]
fn mp_sched_switch(_ctx: RawTracePointContext) -> u32 {
    config::unless_empty(|| {
        end_fault_run();
        park_change();
        Ok(0)
    })
}

/// Sends this CPU's run of faults, if it has one (see [`MP_FAULT_RUN`]).
pub(crate) fn end_fault_run() {
    with_scratch(&MP_FAULT_RUN, send_fault_run);
}

fn send_fault_run(run: &mut FaultEvent) {
    if run.pages == 0 {
        return;
    }
    if !send(&*run) {
        // Counted as the faults it carried.
        lost(run.pages);
    }
    run.pages = 0;
}

/// Adds a fault to this CPU's run when it is on the page after the run's last, by the same
/// thread with the same error code and stack; otherwise sends the run and starts another.
fn add_to_fault_run(tgid: u32, tid: u32, address: u64, error_code: u64, stack: u64) {
    with_scratch(&MP_FAULT_RUN, |run| {
        if run.pages != 0
            && run.pages < FAULT_RUN_PAGES
            && run.header.tid == tid
            && run.error_code == error_code
            && run.stack == stack
            && address / PAGE_SIZE == run.address / PAGE_SIZE + run.pages
        {
            run.pages += 1;
            return;
        }
        send_fault_run(run);
        *run = FaultEvent {
            header: header(EventKind::Fault, tgid, tid),
            address,
            error_code,
            stack,
            pages: 1,
        };
    });
}
