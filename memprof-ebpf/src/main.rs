//! memprof's kernel side: follow the memory syscalls, page faults and RSS counter changes of
//! traced processes and send them to userspace as records (see memprof-common).
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_MMAPABLE, BPF_F_USER_STACK, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_current_uid_gid, bpf_get_prandom_u32, bpf_get_stack,
        bpf_jiffies64, bpf_ktime_get_ns, bpf_probe_read_kernel, generated,
    },
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use memprof_common::{
    ANY_UID, COUNTER_LOST, COUNTER_STACKS_LOST, COUNTERS, EventHeader, EventKind, ExecEvent,
    FAULT_RUN_PAGES, FaultEvent, Filter, KernelLayout, MAX_STACK_DEPTH, NO_STACK, NewProcessEvent,
    PID_LIMIT, RssEvent, STACK_EVENT_HEAD, SYSCALL_ARGS, StackEvent, SyscallEvent, TracedProcess,
    fields,
    pid_state::{EXECING, TRACED, UNTRACED},
};

/// Set by userspace at load time: record the call stack of mmap and brk (`top` does without).
#[unsafe(no_mangle)]
static USER_STACKS: u32 = 1;
/// Set by userspace at load time (`--kernel-stacks`): also record kernel stacks of syscalls.
#[unsafe(no_mangle)]
static KERNEL_STACKS: u32 = 0;
/// Set by userspace at load time (`--fault-stacks`, `--fault-sample`): record the stack of one
/// fault in this many; 0 records none.
#[unsafe(no_mangle)]
static FAULT_STACK_SAMPLE: u32 = 0;
/// Set by userspace at load time: the slots of `MP_STACKS_SENT` (`--stack-map-entries`, a
/// power of two) less one, so that a mask picks a slot (a division costs as much as the rest
/// of the lookup).
#[unsafe(no_mangle)]
static STACK_SLOT_MASK: u32 = 0;
/// Set by userspace at load time, from the kernel's BTF.
#[unsafe(no_mangle)]
static LAYOUT: KernelLayout = KernelLayout {
    task_mm: 0,
    mm_rss_stat: 0,
    counter_size: 0,
    counter_count: 0,
};
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
const PAGE_SIZE: u64 = 4096;
/// Addresses at or above this are the kernel's (x86_64 with 48-bit user space).
const USER_SPACE_END: u64 = 0x0000_8000_0000_0000;

/// x86_64's syscall numbers of the calls followed.
mod nr {
    pub const MMAP: u64 = 9;
    pub const MPROTECT: u64 = 10;
    pub const MUNMAP: u64 = 11;
    pub const BRK: u64 = 12;
    pub const MREMAP: u64 = 25;
    pub const MADVISE: u64 = 28;
    pub const EXECVE: u64 = 59;
    pub const EXECVEAT: u64 = 322;
}

/// x86_64's `struct pt_regs` (a uapi layout), as indexes of its 8-byte words.
mod regs {
    pub const BP: usize = 4;
    pub const R10: usize = 7;
    pub const R9: usize = 8;
    pub const R8: usize = 9;
    pub const DX: usize = 12;
    pub const SI: usize = 13;
    pub const DI: usize = 14;
    pub const ORIG_AX: usize = 15;
    pub const IP: usize = 16;
    /// Where the syscall ABI passes arguments one to six.
    pub const ARGS: [usize; super::SYSCALL_ARGS] = [DI, SI, DX, R10, R8, R9];
}

/// The in-kernel filter: a byte per pid (thread group id), eight per entry (see `pid_state`).
/// Userspace seeds it; new processes of traced ones are added at fork, before they first run.
/// An array, not a hash map: the programs on every syscall and fault read it without a call
/// (the verifier inlines array lookups), where a hash lookup cost ~45 ns. Userspace maps it
/// (BPF_F_MMAPABLE) and stores single bytes, so it never writes back a neighbour's byte the
/// kernel just changed.
#[map]
static MP_PID_STATE: Array<u64> = Array::with_max_entries(PID_LIMIT / 8, BPF_F_MMAPABLE);

/// What the rss_stat program keeps per traced process, entered and removed with its state.
#[map]
static MP_TRACED: HashMap<u32, TracedProcess> = HashMap::with_max_entries(65536, 0);

/// The resident-page counter values last sent for one mm (see [`MP_RSS_SENT`]).
#[derive(Clone, Copy)]
#[repr(C)]
struct RssSent {
    mm: u64,
    /// The process the mm's changes are charged to.
    tgid: u32,
    _pad: u32,
    /// Per counter, [`NOT_SENT`] before the first.
    bytes: [i64; 4],
}

/// [`RssSent::bytes`] before any value was sent.
const NOT_SENT: i64 = -1;

/// Slots of [`MP_RSS_SENT`]: a power of two, many more than the mms traced at once.
const RSS_SLOTS: u32 = 4096;

/// The counter values last sent, per mm. rss_stat fires on every change but reports the
/// counter's shared part, which moves only when a CPU's local batch (32 pages or more) is
/// folded in: most events repeat the value sent before and are not sent again. A
/// direct-mapped cache (slot from the mm's address), so that the common event, a traced
/// process changing its own counters (once per fault), is checked without a hash lookup
/// (~45 ns); an mm whose slot another took only has a value sent again.
#[map]
static MP_RSS_SENT: Array<RssSent> = Array::with_max_entries(RSS_SLOTS, 0);

/// mm → pid, learnt from rss_stat events of the mm's own tasks, so that counter changes made
/// by other tasks (reclaim) can be charged to the right process.
#[map]
static MP_MM_OWNER: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// Default size; userspace sets the real one at load time (`--ring-buffer-size`).
#[map]
static MP_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 25, 0);

#[map]
static MP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

/// Ids of the stacks already sent to userspace, so each is sent once: a direct-mapped cache
/// (stack id modulo the slots), cheaper than any hash map; a stack whose slot another one took
/// is sent again. Userspace sets the size (`--stack-map-entries`, [`STACK_SLOT_MASK`]).
#[map]
static MP_STACKS_SENT: Array<u64> = Array::with_max_entries(1, 0);

/// Where a stack is gathered, per CPU, before it is named and perhaps sent.
#[map]
static MP_STACK_SCRATCH: PerCpuArray<StackEvent> = PerCpuArray::with_max_entries(1, 0);

/// Words of user stack the frame walk reads at once (see [`walk_frames`]).
const WINDOW_WORDS: usize = 128;

/// Where the frame walk reads the user stack, per CPU.
#[map]
static MP_STACK_WINDOW: PerCpuArray<[u64; WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's last clock reading and the tick (jiffies) it was taken in (see [`now_ns`]).
#[map]
static MP_CLOCK: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's run of faults not sent yet (`pages` 0: none), see [`FaultEvent`]. A run
/// belongs to the thread running on its CPU: it is sent before anything else that thread
/// sends and when the thread is switched out, so the records of a thread keep their order
/// though it moves between CPUs. One record per 2 MiB instead of one per fault: sending a
/// record costs the faulting thread a helper call, and memprof the time to read it.
#[map]
static MP_FAULT_RUN: PerCpuArray<FaultEvent> = PerCpuArray::with_max_entries(1, 0);

/// 1 while this CPU walks a stack (see [`walking`]).
#[map]
static MP_WALKING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

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
    count_by(counter, 1);
}

fn count_by(counter: u32, n: u64) {
    if let Some(slot) = MP_COUNTERS.get_ptr_mut(counter) {
        // SAFETY: per-CPU slot; the one program that nests on a CPU (a fault of a stack
        // walk, see `walking`) returns before counting.
        unsafe { *slot += n };
    }
}

/// How a stack is found.
enum Walk {
    /// From user registers, by frame pointers.
    Frames { ip: u64, bp: u64 },
    /// By the kernel's own unwinder, with these `bpf_get_stack` flags.
    Kernel(u64),
}

/// The id of the stack `walk` finds, sent to userspace the first time; [`NO_STACK`] when
/// it could not be.
fn stack<C: EbpfContext>(ctx: &C, tgid: u32, tid: u32, walk: Walk) -> u64 {
    let Some(stack) = MP_STACK_SCRATCH.get_ptr_mut(0) else {
        return NO_STACK;
    };
    // SAFETY: this CPU's scratch record; the only program that could run nested on this CPU
    // (a page fault of the walk itself) returns before touching it.
    let stack = unsafe { &mut *stack };
    set_walking(1);
    let walked = match walk {
        Walk::Frames { ip, bp } => match MP_STACK_WINDOW.get_ptr_mut(0) {
            Some(window) => {
                // SAFETY: this CPU's window, used by nothing else (as the scratch record).
                walk_frames(stack, unsafe { &mut *window }, ip, bp);
                true
            }
            None => false,
        },
        Walk::Kernel(flags) => walk_kernel(ctx, stack, flags),
    };
    set_walking(0);
    if !walked {
        count(COUNTER_STACKS_LOST);
        return NO_STACK;
    }
    send_stack(stack, tgid, tid)
}

fn set_walking(value: u32) {
    if let Some(slot) = MP_WALKING.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { *slot = value };
    }
}

/// Whether this CPU is walking a stack: a page fault now is the walk's own read.
fn walking() -> bool {
    // SAFETY: this CPU's slot, a plain u32.
    MP_WALKING
        .get_ptr(0)
        .is_some_and(|slot| unsafe { *slot } != 0)
}

/// Walks a user stack by frame pointers, as the kernel's unwinder does, but stops at a frame
/// pointer no frame can have (unaligned, or in the first page) instead of reading it: a chain
/// through code built without frame pointers ends that way (glibc's start-up code leaves 0x5
/// there), and the kernel's failed read of it is a page-fault exception that cost most of
/// each walk. Frames lie close together, so it reads the stack a window at a time rather
/// than a frame at a time: a read costs far more than the bytes it copies.
fn walk_frames(stack: &mut StackEvent, window: &mut [u64; WINDOW_WORDS], ip: u64, bp: u64) {
    const FIRST_PAGE_END: u64 = 4096;
    const FRAME: u64 = 16;
    stack.ips[0] = ip;
    let mut frames = 1;
    let mut fp = bp;
    // The window holds `len` bytes of the stack from `base` on.
    let (mut base, mut len) = (0u64, 0u64);
    for slot in stack.ips.iter_mut().skip(1) {
        if fp % 8 != 0 || fp < FIRST_PAGE_END || fp >= USER_SPACE_END - FRAME {
            break;
        }
        if fp < base || fp - base + FRAME > len {
            // Near the top of a stack a whole window may not be mapped: then the frame alone.
            base = fp;
            len = if read_user(window, fp, WINDOW_WORDS) {
                8 * WINDOW_WORDS as u64
            } else if read_user(window, fp, 2) {
                FRAME
            } else {
                break;
            };
        }
        // Opaque to the compiler, which would otherwise turn the word index into a byte offset
        // the verifier cannot see is 8-aligned.
        let at = core::hint::black_box((fp - base) / 8) as usize;
        let (Some(&next), Some(&ret)) = (window.get(at), window.get(at + 1)) else {
            break;
        };
        if ret == 0 {
            break;
        }
        *slot = ret;
        frames += 1;
        fp = next;
    }
    stack.frames = frames;
}

/// Reads `words` words of user memory at `address` into the start of `window`.
fn read_user(window: &mut [u64; WINDOW_WORDS], address: u64, words: usize) -> bool {
    let size = (8 * words.min(WINDOW_WORDS)) as u32;
    // SAFETY: `window` is writable for `size` bytes; the helper reads user memory and fails
    // cleanly on a bad address.
    unsafe {
        generated::bpf_probe_read_user(window.as_mut_ptr().cast(), size, address as *const _) == 0
    }
}

fn walk_kernel<C: EbpfContext>(ctx: &C, stack: &mut StackEvent, flags: u64) -> bool {
    let size = core::mem::size_of::<[u64; MAX_STACK_DEPTH]>() as u32;
    // SAFETY: `ips` is writable for `size` bytes.
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), stack.ips.as_mut_ptr().cast(), size, flags) };
    stack.frames = (bytes.max(0) / 8) as u32;
    bytes >= 0
}

/// Names the stack in `stack` by a hash of its addresses and process, and sends it unless it
/// was sent already: each stack crosses to userspace once, not with every record.
fn send_stack(stack: &mut StackEvent, tgid: u32, tid: u32) -> u64 {
    let frames = (stack.frames as usize).min(MAX_STACK_DEPTH);
    // FNV-1a over whole addresses: each step is a bijection, so stacks that differ in one
    // address never share an id.
    let mut id = 0xcbf2_9ce4_8422_2325 ^ (u64::from(tgid) | (frames as u64) << 32);
    for &ip in stack.ips.iter().take(frames) {
        id = (id ^ ip).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let id = id | 1; // never NO_STACK
    let slot = MP_STACKS_SENT.get_ptr_mut(id as u32 & config(&STACK_SLOT_MASK));
    // SAFETY: a u64 slot, written whole; a race between CPUs only sends a stack twice.
    if slot.is_some_and(|slot| unsafe { *slot } == id) {
        return id;
    }
    stack.header = header(EventKind::Stack, tgid, tid);
    stack.id = id;
    let len = STACK_EVENT_HEAD + 8 * frames;
    // SAFETY: `stack` is a StackEvent, at least `len` bytes, all written.
    let bytes = unsafe { core::slice::from_raw_parts((&raw const *stack).cast::<u8>(), len) };
    if MP_EVENTS
        .output::<[u8]>(bytes, u64::from(BPF_RB_NO_WAKEUP))
        .is_err()
    {
        count(COUNTER_STACKS_LOST);
        return NO_STACK;
    }
    if let Some(slot) = slot {
        // SAFETY: as above.
        unsafe { *slot = id };
    }
    id
}

fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

/// The process's byte in MP_PID_STATE.
fn state_byte(tgid: u32) -> Option<*mut u8> {
    let entry = MP_PID_STATE.get_ptr_mut(tgid / 8)?;
    // SAFETY: one of the entry's 8 bytes.
    Some(unsafe { entry.cast::<u8>().add((tgid % 8) as usize) })
}

fn state(tgid: u32) -> u8 {
    // SAFETY: a byte of a map value, read whole.
    state_byte(tgid).map_or(UNTRACED, |byte| unsafe { core::ptr::read_volatile(byte) })
}

fn set_state(tgid: u32, state: u8) {
    if let Some(byte) = state_byte(tgid) {
        // SAFETY: as above, written whole.
        unsafe { core::ptr::write_volatile(byte, state) };
    }
}

fn is_traced(tgid: u32) -> bool {
    state(tgid) != UNTRACED
}

fn start_tracing(tgid: u32) -> Result<(), i64> {
    MP_TRACED.insert(tgid, TracedProcess::NEW, 0)?;
    set_state(tgid, TRACED);
    Ok(())
}

/// The traced process's entry, changed in place.
fn traced(tgid: u32) -> Option<&'static mut TracedProcess> {
    // SAFETY: map values live until removed (its exit, or userspace for a process gone
    // before it was read); fields are plain integers written whole.
    MP_TRACED.get_ptr_mut(tgid).map(|p| unsafe { &mut *p })
}

/// Stops charging counter changes of `tgid`'s current mm to it.
fn forget_mm(tgid: u32) {
    if let Some(process) = traced(tgid) {
        let _ = MP_MM_OWNER.remove(process.mm);
        set_mm(process, 0);
    }
}

/// Makes `mm` the process's own, forgetting what was sent for the one before: a freed mm's
/// address is reused, by the next exec's mm as soon as any.
fn set_mm(process: &mut TracedProcess, mm: u64) {
    if let Some(sent) = rss_sent(process.mm)
        && sent.mm == process.mm
    {
        sent.mm = 0;
    }
    process.mm = mm;
}

/// The slot of [`MP_RSS_SENT`] for `mm`, whichever mm holds it.
fn rss_sent(mm: u64) -> Option<&'static mut RssSent> {
    // Multiplicative hashing: mm_structs are a slab's objects, a fixed stride apart.
    let slot = ((mm >> 6).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32;
    // SAFETY: a map value of plain integers, written whole; CPUs racing on one slot at worst
    // send a value twice.
    MP_RSS_SENT
        .get_ptr_mut(slot & (RSS_SLOTS - 1))
        .map(|sent| unsafe { &mut *sent })
}

fn header(kind: EventKind, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid,
        tid,
        _pad: 0,
        ts_ns: now_ns(),
    }
}

/// CLOCK_MONOTONIC, read once per CPU and tick: records of one tick (4 ms at HZ=250) share a
/// time. Reading the clock costs ~50 ns on these VMs, a third of a record; the tick count is
/// a plain load, and the timeline needs no finer time.
fn now_ns() -> u64 {
    // SAFETY: the helpers have no preconditions (the verifier inlines bpf_jiffies64).
    let (tick, read_clock) = (unsafe { bpf_jiffies64() }, || unsafe { bpf_ktime_get_ns() });
    let Some(clock) = MP_CLOCK.get_ptr_mut(0) else {
        return read_clock();
    };
    // SAFETY: this CPU's slot; no program that stamps a record nests on a CPU.
    let [last_tick, ns] = unsafe { &mut *clock };
    if *last_tick != tick {
        *last_tick = tick;
        *ns = read_clock();
    }
    *ns
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
    // One helper call (a copy) rather than reserve and submit: calls cost more than copies.
    if MP_EVENTS.output::<T>(&record, u64::from(flags)).is_err() {
        count(COUNTER_LOST);
    }
}

fn fault_run() -> Option<&'static mut FaultEvent> {
    // SAFETY: this CPU's run. The programs that use it run with preemption off and do not
    // nest (a fault of a stack walk returns before it, see `walking`).
    MP_FAULT_RUN.get_ptr_mut(0).map(|run| unsafe { &mut *run })
}

/// Sends this CPU's run of faults, if it has one. Called before every other record of a
/// traced thread and when a thread is switched out.
fn end_fault_run() {
    if let Some(run) = fault_run() {
        send_fault_run(run);
    }
}

fn send_fault_run(run: &mut FaultEvent) {
    if run.pages == 0 {
        return;
    }
    if MP_EVENTS
        .output::<FaultEvent>(&*run, u64::from(BPF_RB_NO_WAKEUP))
        .is_err()
    {
        // Counted as the faults it carried.
        count_by(COUNTER_LOST, run.pages);
    }
    run.pages = 0;
}

/// Adds a fault to this CPU's run when it is on the page after the run's last, by the same
/// thread with the same error code; otherwise sends the run and starts another.
fn add_to_fault_run(tgid: u32, tid: u32, address: u64, error_code: u64) {
    let Some(run) = fault_run() else {
        return;
    };
    if run.pages != 0
        && run.pages < FAULT_RUN_PAGES
        && run.header.tid == tid
        && run.error_code == error_code
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
        stack: NO_STACK,
        pages: 1,
    };
}

fn read<T>(ctx: &TracePointContext, field: fields::Field) -> Result<T, i64> {
    // SAFETY: the offset was checked against this kernel's tracepoint format by the loader.
    unsafe { ctx.read_at::<T>(field.2) }.map_err(i64::from)
}

fn ok(result: Result<u32, i64>) -> u32 {
    result.unwrap_or(0)
}

/// Attached to raw_syscalls:sys_exit, the exit of every syscall on the host, with the caller's
/// registers. A BTF tracepoint: the kernel hands over its arguments without formatting a
/// record, and the program reads the registers directly, no helper call, which is most of
/// what a syscall memprof does not follow costs. One program per call: the arguments are
/// still in the registers at exit, and the caller's stack is the same, so nothing is kept
/// between entry and exit.
#[btf_tracepoint(function = "sys_exit")]
pub fn mp_sys_exit(ctx: BtfTracePointContext) -> u32 {
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
    let mut record = SyscallEvent {
        header: header(EventKind::Syscall, tgid, tid),
        nr: nr as u32,
        ret: ctx.arg(1),
        ..Default::default()
    };
    for (arg, &register) in record.args.iter_mut().zip(regs::ARGS.iter()) {
        *arg = reg(register);
    }
    if creates && config(&USER_STACKS) != 0 {
        let (ip, bp) = (reg(regs::IP), reg(regs::BP));
        record.user_stack = stack(ctx, tgid, tid, Walk::Frames { ip, bp });
    }
    if creates && config(&KERNEL_STACKS) != 0 {
        record.kernel_stack = stack(ctx, tgid, tid, Walk::Kernel(0));
    }
    end_fault_run();
    emit(record);
    Ok(0)
}

/// Attached to exceptions:page_fault_user (raw: address, user registers, error code).
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn mp_page_fault_user(ctx: RawTracePointContext) -> u32 {
    ok(try_page_fault(&ctx, true))
}

/// Attached to exceptions:page_fault_kernel: a syscall touching user memory faults it in (and
/// can grow the stack) too. Its registers are the kernel's.
#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn mp_page_fault_kernel(ctx: RawTracePointContext) -> u32 {
    ok(try_page_fault(&ctx, false))
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
    let sample = config(&FAULT_STACK_SAMPLE);
    // SAFETY: the helper has no preconditions.
    let sampled = sample == 1 || (sample > 1 && unsafe { bpf_get_prandom_u32() } % sample == 0);
    if !sampled {
        add_to_fault_run(tgid, tid, address, error_code);
        return Ok(0);
    }
    let stack = if user_mode {
        let regs: *const u64 = ctx.arg(1);
        // SAFETY: the tracepoint's pt_regs, read through the helper.
        let (ip, bp) = unsafe {
            (
                bpf_probe_read_kernel(regs.add(regs::IP))?,
                bpf_probe_read_kernel(regs.add(regs::BP))?,
            )
        };
        stack(ctx, tgid, tid, Walk::Frames { ip, bp })
    } else {
        // The kernel finds the user registers itself.
        stack(ctx, tgid, tid, Walk::Kernel(u64::from(BPF_F_USER_STACK)))
    };
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

/// Attached to kmem:rss_stat (raw: the mm and which of its counters changed), which fires on
/// every change of a resident-page counter: once per fault.
#[raw_tracepoint(tracepoint = "rss_stat")]
pub fn mp_rss_stat(ctx: RawTracePointContext) -> u32 {
    ok(try_rss_stat(&ctx))
}

fn try_rss_stat(ctx: &RawTracePointContext) -> Result<u32, i64> {
    let mm: u64 = ctx.arg(0);
    let member: u32 = ctx.arg(1);
    let layout = config(&LAYOUT);
    let (current_tgid, tid) = current_ids();
    let traced_current = is_traced(current_tgid);
    let Some(sent) = rss_sent(mm) else {
        return Ok(0);
    };
    // A change to the process's own mm, known already: the common case, decided here without
    // a hash lookup.
    let tgid = if traced_current && sent.mm == mm && sent.tgid == current_tgid {
        current_tgid
    } else {
        let current = if traced_current {
            traced(current_tgid)
        } else {
            None
        };
        let tgid = match current {
            Some(process) if process.mm == mm => current_tgid,
            // Its own mm, not known yet (its first change, or its first after exec).
            Some(process) if current_mm(&layout)? == mm => {
                set_mm(process, mm);
                MP_MM_OWNER.insert(mm, current_tgid, 0)?;
                current_tgid
            }
            // Another process's mm (reclaim), or an untraced process's.
            _ => {
                // SAFETY: a plain u32 copied out at once.
                let Some(&owner) = (unsafe { MP_MM_OWNER.get(mm) }) else {
                    return Ok(0);
                };
                match traced(owner) {
                    // Still the owner's current mm: freed mms are reused.
                    Some(process) if process.mm == mm => owner,
                    _ => return Ok(0),
                }
            }
        };
        if sent.mm != mm || sent.tgid != tgid {
            *sent = RssSent {
                mm,
                tgid,
                _pad: 0,
                bytes: [NOT_SENT; 4],
            };
        }
        tgid
    };
    let member = member.min(3);
    let counter = layout.mm_rss_stat + member * layout.counter_size + layout.counter_count;
    // SAFETY: the mm's counter, read through the helper.
    let pages: i64 = unsafe { bpf_probe_read_kernel((mm + u64::from(counter)) as *const i64) }?;
    // As the tracepoint's `size`: the counter's shared (approximate) value, never negative.
    let bytes = pages.max(0) * PAGE_SIZE as i64;
    let Some(sent) = sent.bytes.get_mut(member as usize) else {
        return Ok(0);
    };
    if *sent == bytes {
        return Ok(0);
    }
    *sent = bytes;
    emit(RssEvent {
        header: header(EventKind::Rss, tgid, tid),
        member,
        _pad: 0,
        bytes,
    });
    Ok(0)
}

fn current_mm(layout: &KernelLayout) -> Result<u64, i64> {
    // SAFETY: the helper has no preconditions; the task's field is read through a helper.
    unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(layout.task_mm as usize).cast()).map_err(i64::from)
    }
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
    Ok(0)
}

/// Attached to sched:sched_prepare_exec, which fires in execve before the address space is
/// replaced (a syscall entry tracepoint would make every syscall on the host pay a check).
#[tracepoint]
pub fn mp_prepare_exec(_ctx: TracePointContext) -> u32 {
    let tgid = current_ids().0;
    if state(tgid) == TRACED {
        end_fault_run();
        set_state(tgid, EXECING);
    }
    0
}

/// Attached to sched:sched_switch (raw), which runs in the task being switched out: its run
/// of faults goes out before it can run, and fault, on another CPU.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn mp_sched_switch(_ctx: RawTracePointContext) -> u32 {
    end_fault_run();
    0
}

/// Attached to sched:sched_process_exec, which fires once the new image is in place: with
/// `--all`, a process that now matches the filter (its new name, say) is traced from here.
#[tracepoint]
pub fn mp_exec(_ctx: TracePointContext) -> u32 {
    ok(try_exec())
}

fn try_exec() -> Result<u32, i64> {
    let (tgid, tid) = current_ids();
    if is_traced(tgid) {
        set_state(tgid, TRACED);
    } else if wanted(tgid) {
        start_tracing(tgid)?;
    } else {
        return Ok(0);
    }
    forget_mm(tgid);
    emit_now(ExecEvent {
        header: header(EventKind::Exec, tgid, tid),
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
    if !is_traced(tgid) {
        return Ok(0);
    }
    end_fault_run();
    if read::<u8>(ctx, fields::EXIT_GROUP_DEAD)? == 0 {
        return Ok(0);
    }
    emit_now(header(EventKind::Exit, tgid, tid));
    forget_mm(tgid);
    set_state(tgid, UNTRACED);
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
