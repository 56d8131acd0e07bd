//! memprof's kernel side: follow the memory syscalls, page faults and RSS counter changes of
//! traced processes and send them to userspace as records (see memprof-common).
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_USER_STACK, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext as _},
};
use memprof_common::{
    ANY_UID, COUNTER_INLINE_STACKS, COUNTER_LOST, COUNTER_STACKS_LOST, COUNTERS, ExecRecord,
    FaultRecord, Filter, INLINE_STACK, MAX_STACK_DEPTH, NO_STACK, NewProcessRecord, RecordHeader,
    RecordKind, RssRecord, SYSCALL_ARGS, StackRecord, SyscallRecord, fields,
};

/// Set by userspace at load time (`--kernel-stacks`): also record kernel stacks of syscalls.
#[unsafe(no_mangle)]
static KERNEL_STACKS: u32 = 0;
/// Set by userspace at load time (`--fault-stacks`, `--fault-sample`): record the stack of one
/// fault in this many; 0 records none.
#[unsafe(no_mangle)]
static FAULT_STACK_SAMPLE: u32 = 0;
/// Set by userspace at load time (`--all` and its filters).
#[unsafe(no_mangle)]
static FILTER: Filter = Filter {
    all: 0,
    self_tgid: 0,
    uid: ANY_UID,
    cgroup_level: 0,
    cgroup_id: 0,
    comm: [0; 16],
};

const CLONE_THREAD: u64 = 0x0001_0000;
/// Addresses at or above this are the kernel's (x86_64 and arm64 with 48-bit user space).
const USER_SPACE_END: u64 = 0x0000_8000_0000_0000;

/// The in-kernel filter: pids (thread group ids) being traced. Userspace seeds it; new
/// processes of traced ones are added at fork, before they first run.
#[map]
static MP_TRACED: HashMap<u32, u8> = HashMap::with_max_entries(65536, 0);

/// Syscall arguments saved at sys_enter, by thread id, until sys_exit gives the result.
#[map]
static MP_PENDING: HashMap<u32, SyscallRecord> = HashMap::with_max_entries(16384, 0);

/// mm_id → pid, learnt from rss_stat events of the mm's own tasks, so that counter changes made
/// by other tasks (reclaim) can be charged to the right process.
#[map]
static MP_MM_OWNER: LruHashMap<u32, u32> = LruHashMap::with_max_entries(65536, 0);

/// pid → its mm_id, to forget MP_MM_OWNER's entry when the mm goes away (exec, exit): a
/// freed mm is reused by other processes, whose counter changes must not be charged here.
#[map]
static MP_MM_OF: HashMap<u32, u32> = HashMap::with_max_entries(65536, 0);

/// Threads inside execve. Their faults are skipped: the kernel builds the new image (and
/// faults on it) before sched_process_exec tells userspace the address space was replaced.
#[map]
static MP_EXECING: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// Default size; userspace sets the real one at load time (`--ring-buffer-size`).
#[map]
static MP_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 25, 0);

#[map]
static MP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

/// Call stacks, de-duplicated by the kernel; records carry their ids. Userspace sets the size.
#[map]
static MP_STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

fn config<T: Copy>(value: &'static T) -> T {
    // SAFETY: a valid static; volatile so the compiler keeps the value userspace patched in.
    unsafe { core::ptr::read_volatile(value) }
}

fn comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or_default()
}

/// `--all`: whether the current task's process is one to trace from now on.
fn wanted(tgid: u32) -> bool {
    let filter = config(&FILTER);
    if filter.all == 0 || tgid == filter.self_tgid {
        return false;
    }
    if filter.uid != ANY_UID && bpf_get_current_uid_gid() as u32 != filter.uid {
        return false;
    }
    if filter.cgroup_id != 0 {
        // SAFETY: the helper has no preconditions.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(filter.cgroup_level as i32) };
        if ancestor != filter.cgroup_id {
            return false;
        }
    }
    filter.comm[0] == 0 || comm() == filter.comm
}

fn count(counter: u32) {
    if let Some(slot) = MP_COUNTERS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot, and tracepoint programs do not nest on a CPU.
        unsafe { *slot += 1 };
    }
}

/// The current user (or kernel) stack's id, or a negative value when there is none.
fn stack_id(ctx: &TracePointContext, flags: u64) -> i32 {
    const EEXIST: i32 = 17;
    match ctx.get_stackid(&MP_STACKS, flags) {
        Ok(id) => id as i32,
        // Another stack holds this one's hash bucket: send it whole rather than lose it.
        Err(err) if err == -EEXIST => inline_stack(ctx, flags).unwrap_or_else(|| {
            count(COUNTER_STACKS_LOST);
            NO_STACK
        }),
        Err(err) => {
            count(COUNTER_STACKS_LOST);
            err
        }
    }
}

/// Sends the current stack in a [`StackRecord`]; returns the id records refer to it by.
fn inline_stack(ctx: &TracePointContext, flags: u64) -> Option<i32> {
    let seq = MP_COUNTERS.get_ptr_mut(COUNTER_INLINE_STACKS)?;
    // SAFETY: per-CPU slot, and tracepoint programs do not nest on a CPU.
    let seq = unsafe {
        *seq += 1;
        *seq
    };
    // SAFETY: the helper has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // Unique per CPU and sequence: ids are used once, by the record that follows.
    let id = INLINE_STACK | ((cpu & 0x3fff) << 16) as i32 | (seq & 0xffff) as i32;
    let (tgid, tid) = current_ids();
    let mut entry = MP_EVENTS.reserve::<StackRecord>(0)?;
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to a reserved, writable StackRecord; every field is written
    // before submit (`ips` by the helper, up to the length it returns).
    let bytes = unsafe {
        (&raw mut (*record).header).write(header(RecordKind::Stack, tgid, tid));
        (&raw mut (*record).id).write(id as u32);
        let ips = &raw mut (*record).ips;
        let size = core::mem::size_of::<[u64; MAX_STACK_DEPTH]>() as u32;
        bpf_get_stack(ctx.as_ptr(), ips.cast(), size, flags)
    };
    if bytes < 0 {
        entry.discard(0);
        return None;
    }
    // SAFETY: as above.
    unsafe { (&raw mut (*record).frames).write((bytes as u32) / 8) };
    entry.submit(u64::from(BPF_RB_NO_WAKEUP));
    Some(id)
}

fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

fn is_traced(tgid: u32) -> bool {
    MP_TRACED.get_ptr(tgid).is_some()
}

/// Stops charging counter changes of `tgid`'s current mm to it.
fn forget_mm(tgid: u32) {
    // SAFETY: a plain u32 copied out at once.
    if let Some(&mm_id) = unsafe { MP_MM_OF.get(tgid) } {
        let _ = MP_MM_OWNER.remove(mm_id);
        let _ = MP_MM_OF.remove(tgid);
    }
}

fn header(kind: RecordKind, tgid: u32, tid: u32) -> RecordHeader {
    RecordHeader {
        kind: kind as u32,
        tgid,
        tid,
        _reserved: 0,
        // SAFETY: the helper has no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}

/// Sends one record, or counts it as lost when the ring buffer is full. Without waking
/// userspace: a wake-up per record costs the traced thread an interrupt to another CPU, more
/// than the rest of the probe; userspace drains on a short timer instead.
fn emit<T: 'static>(record: T) {
    submit(record, BPF_RB_NO_WAKEUP);
}

/// Sends a record userspace must see at once (a process starting, exec'ing or exiting: it
/// reads /proc for those while it still can).
fn emit_now<T: 'static>(record: T) {
    submit(record, BPF_RB_FORCE_WAKEUP);
}

fn submit<T: 'static>(record: T, flags: u32) {
    match MP_EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            entry.write(record);
            entry.submit(u64::from(flags));
        }
        None => count(COUNTER_LOST),
    }
}

fn read<T>(ctx: &TracePointContext, field: fields::Field) -> Result<T, i64> {
    // SAFETY: the offset was checked against this kernel's tracepoint format by the loader.
    unsafe { ctx.read_at::<T>(field.2) }.map_err(i64::from)
}

fn ok(result: Result<u32, i64>) -> u32 {
    result.unwrap_or(0)
}

/// Attached to sys_enter of the calls that create memory (mmap, brk): their call stack is
/// the site the memory is charged to.
#[tracepoint]
pub fn mp_sys_enter_site(ctx: TracePointContext) -> u32 {
    ok(try_sys_enter(&ctx, true))
}

/// Attached to sys_enter of munmap, mremap, mprotect and madvise, which change memory some
/// site created: walking the stack would cost them for nothing.
#[tracepoint]
pub fn mp_sys_enter(ctx: TracePointContext) -> u32 {
    ok(try_sys_enter(&ctx, false))
}

fn try_sys_enter(ctx: &TracePointContext, site: bool) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return Ok(0);
    }
    let mut record = SyscallRecord {
        header: header(RecordKind::Syscall, tgid, tid),
        nr: read::<i32>(ctx, fields::SYSCALL_NR)? as u32,
        user_stack_id: NO_STACK,
        kernel_stack_id: NO_STACK,
        ..Default::default()
    };
    if site {
        record.user_stack_id = stack_id(ctx, u64::from(BPF_F_USER_STACK));
        if config(&KERNEL_STACKS) != 0 {
            record.kernel_stack_id = stack_id(ctx, 0);
        }
    }
    // Syscalls with fewer arguments have shorter records: what lies past them is ignored.
    for (i, arg) in record.args.iter_mut().enumerate().take(SYSCALL_ARGS) {
        let (tp, name, offset) = fields::SYSCALL_ARG0;
        *arg = read::<u64>(ctx, (tp, name, offset + 8 * i)).unwrap_or(0);
    }
    MP_PENDING.insert(tid, record, 0)?;
    Ok(0)
}

/// Attached to the matching sys_exit tracepoints.
#[tracepoint]
pub fn mp_sys_exit(ctx: TracePointContext) -> u32 {
    ok(try_sys_exit(&ctx))
}

fn try_sys_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let (_, tid) = current_ids();
    let Some(pending) = MP_PENDING.get_ptr(tid) else {
        return Ok(0);
    };
    // SAFETY: the entry belongs to this thread, which is the only one that writes or removes it.
    let mut record = unsafe { *pending };
    MP_PENDING.remove(tid)?;
    record.ret = read::<i64>(ctx, fields::SYSCALL_RET)?;
    // The time the change became visible, not when it was asked for.
    record.header.ts_ns = header(RecordKind::Syscall, 0, 0).ts_ns;
    emit(record);
    Ok(0)
}

/// Attached to exceptions:page_fault_user and page_fault_kernel (a syscall touching user
/// memory can grow the stack too).
#[tracepoint]
pub fn mp_page_fault(ctx: TracePointContext) -> u32 {
    ok(try_page_fault(&ctx))
}

fn try_page_fault(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) || MP_EXECING.get_ptr(tid).is_some() {
        return Ok(0);
    }
    let address = read::<u64>(ctx, fields::FAULT_ADDRESS)?;
    if address >= USER_SPACE_END {
        return Ok(0);
    }
    let sample = config(&FAULT_STACK_SAMPLE);
    // SAFETY: the helper has no preconditions.
    let sampled = sample == 1 || (sample > 1 && unsafe { bpf_get_prandom_u32() } % sample == 0);
    emit(FaultRecord {
        header: header(RecordKind::Fault, tgid, tid),
        address,
        error_code: read::<u64>(ctx, fields::FAULT_ERROR_CODE)?,
        stack_id: if sampled {
            stack_id(ctx, u64::from(BPF_F_USER_STACK))
        } else {
            NO_STACK
        },
        _reserved: 0,
    });
    Ok(0)
}

/// Attached to kmem:rss_stat.
#[tracepoint]
pub fn mp_rss_stat(ctx: TracePointContext) -> u32 {
    ok(try_rss_stat(&ctx))
}

fn try_rss_stat(ctx: &TracePointContext) -> Result<u32, i64> {
    let (current_tgid, tid) = current_ids();
    let mm_id = read::<u32>(ctx, fields::RSS_MM_ID)?;
    let tgid = if read::<u32>(ctx, fields::RSS_CURR)? != 0 {
        if !is_traced(current_tgid) {
            return Ok(0);
        }
        // SAFETY: a plain u32 copied out at once.
        if unsafe { MP_MM_OF.get(current_tgid) } != Some(&mm_id) {
            MP_MM_OF.insert(current_tgid, mm_id, 0)?;
            MP_MM_OWNER.insert(mm_id, current_tgid, 0)?;
        }
        current_tgid
    } else {
        // SAFETY: plain u32s copied out at once.
        match unsafe { MP_MM_OWNER.get(mm_id) } {
            // Still the owner's current mm: mm_ids of freed mms are reused.
            Some(&owner) if unsafe { MP_MM_OF.get(owner) } == Some(&mm_id) => owner,
            _ => return Ok(0),
        }
    };
    emit(RssRecord {
        header: header(RecordKind::Rss, tgid, tid),
        member: read::<i32>(ctx, fields::RSS_MEMBER)? as u32,
        _reserved: 0,
        bytes: read::<i64>(ctx, fields::RSS_SIZE)?,
    });
    Ok(0)
}

/// Attached to task:task_newtask, which runs in the parent before the child can run, so a
/// traced process's children (and, with `--all`, new processes matching the filter) are
/// traced from their first instruction.
#[tracepoint]
pub fn mp_newtask(ctx: TracePointContext) -> u32 {
    ok(try_newtask(&ctx))
}

fn try_newtask(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    let clone_flags = read::<u64>(ctx, fields::NEWTASK_CLONE_FLAGS)?;
    if clone_flags & CLONE_THREAD != 0 || !(is_traced(tgid) || wanted(tgid)) {
        return Ok(0);
    }
    let child_pid = read::<i32>(ctx, fields::NEWTASK_PID)? as u32;
    MP_TRACED.insert(child_pid, 1, 0)?;
    emit_now(NewProcessRecord {
        header: header(RecordKind::NewProcess, tgid, tid),
        child_pid,
        _reserved: 0,
        clone_flags,
        comm: comm(),
    });
    Ok(0)
}

/// Attached to sys_enter_execve and sys_enter_execveat.
#[tracepoint]
pub fn mp_exec_enter(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    if is_traced(tgid) {
        let _ = MP_EXECING.insert(tid, 1, 0);
    }
    0
}

/// Attached to sys_exit_execve and sys_exit_execveat: a failed exec leaves the old image.
#[tracepoint]
pub fn mp_exec_exit(_ctx: TracePointContext) -> u32 {
    let (_, tid) = current_ids();
    let _ = MP_EXECING.remove(tid);
    0
}

/// Attached to sched:sched_process_exec, which fires once the new image is in place: with
/// `--all`, a process that now matches the filter (its new name, say) is traced from here.
#[tracepoint]
pub fn mp_exec(ctx: TracePointContext) -> u32 {
    ok(try_exec(&ctx))
}

fn try_exec(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        if !wanted(tgid) {
            return Ok(0);
        }
        MP_TRACED.insert(tgid, 1, 0)?;
    }
    // A non-leader thread that execs takes the leader's pid: forget it under its old one.
    let _ = MP_EXECING.remove(read::<i32>(ctx, fields::EXEC_OLD_PID)? as u32);
    let _ = MP_EXECING.remove(tid);
    forget_mm(tgid);
    emit_now(ExecRecord {
        header: header(RecordKind::Exec, tgid, tid),
        comm: comm(),
    });
    Ok(0)
}

/// Attached to sched:sched_process_exit, which fires before the exiting task drops its mm.
#[tracepoint]
pub fn mp_exit(ctx: TracePointContext) -> u32 {
    ok(try_exit(&ctx))
}

fn try_exit(ctx: &TracePointContext) -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) || read::<u8>(ctx, fields::EXIT_GROUP_DEAD)? == 0 {
        return Ok(0);
    }
    emit_now(header(RecordKind::Exit, tgid, tid));
    forget_mm(tgid);
    MP_TRACED.remove(tgid)?;
    Ok(0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
