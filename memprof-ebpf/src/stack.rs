//! Call stacks. A user stack is walked by frame pointers and named by a hash of its frames;
//! when userspace has vouched for that walk (it unwound a copy of the same stack, with the
//! binaries' unwind tables, to the same frames), the name alone goes out. Otherwise a copy of
//! the stack goes out (a raw stack), for userspace to unwind: code built without frame
//! pointers (most of a distribution's C libraries and programs) leaves a walk by frame
//! pointers short or wrong. The user stack of a fault taken in kernel mode is walked by the
//! kernel's unwinder and sent once, by name.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_USER_STACK,
    helpers::{
        bpf_get_stack,
        generated::{bpf_find_vma, bpf_get_current_task_btf, bpf_loop, bpf_probe_read_user},
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use memprof_common::{
    COUNTER_STACKS_LOST, COUNTER_STACKS_OVER_BUDGET, EventKind, MAX_STACK_DEPTH, NO_STACK,
    RAW_STACK, RAW_STACK_AWAITS_VERDICT, RAW_STACK_BYTES, RAW_STACK_COPY_BURST,
    RAW_STACK_EVENT_HEAD, RAW_STACK_LEAF_RETURNS, RAW_STACKS_PER_TICK, RawStackEvent,
    STACK_EVENT_HEAD, STACK_WALK_DENIED, StackEvent,
};

use crate::{
    arch::{PAGE_SIZE, USER_SPACE_END, regs},
    config::{self, LAYOUT, STACK_SLOT_MASK},
    event::{count, header, send, send_waking},
    kernel::{PtRegs, current_task, jiffies, read_kernel},
    slot::{Slot, with_scratch},
};

/// Ids of the stacks the kernel's unwinder walked ([`user_stack_walked_by_kernel`]) already
/// sent to userspace, so each is sent once: a direct-mapped cache (stack id modulo the
/// slots), cheaper than any hash map; a stack whose slot another one took is sent again.
/// Userspace sets the size (`--stack-cache-slots`, [`STACK_SLOT_MASK`]).
#[map]
static MP_STACKS_SENT: Array<u64> = Array::with_max_entries(1, 0);

/// Ids of the user stacks whose frame-pointer walk userspace has vouched for, so that they go
/// out by name, without a copy. Written by userspace; direct-mapped as [`MP_STACKS_SENT`].
#[map]
static MP_STACKS_KNOWN: Array<u64> = Array::with_max_entries(1, 0);

/// Where a stack's frames are gathered, per CPU, before it is named and perhaps sent.
#[map]
static MP_STACK_SCRATCH: PerCpuArray<StackEvent> = PerCpuArray::with_max_entries(1, 0);

/// Words of user stack the frame walk reads at once (see [`start_frame_walk`]).
const WINDOW_WORDS: usize = 128;

/// Where the frame walk reads the user stack, per CPU.
#[map]
static MP_STACK_WINDOW: PerCpuArray<[u64; WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// The id of the user stack last copied, per slot (direct-mapped as [`MP_STACKS_SENT`]),
/// with [`STACK_WALK_DENIED`] set once userspace found its walk wrong. The first copy of a stack wakes
/// userspace, so that it answers before copies pile up; until it does, a page fault with that
/// stack goes by id alone, and userspace takes the copy's frames for it (a storm of faults in
/// one loop would otherwise copy one stack a thousand times a millisecond). A memory
/// syscall's stack is copied every time until vouched for: reservations are charged exactly.
#[map]
static MP_STACKS_COPIED: Array<u64> = Array::with_max_entries(1, 0);

/// This CPU's budget of raw stack copies, per kind (0: the stacks of memory syscalls, 1: of
/// page faults, so that a storm of faults leaves the reservations theirs): the tick it was
/// last filled in, and the copies left (see [`RAW_STACKS_PER_TICK`]).
#[map]
static MP_COPY_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(2, 0);

/// Where a user stack is copied, per CPU, before it is sent.
#[map]
static MP_RAW_STACK: PerCpuArray<RawStackEvent> = PerCpuArray::with_max_entries(1, 0);

/// The top of the stack each thread last ran on, by thread id, so that a copy stops there:
/// reading past a stack's mapping fails the whole read (and costs a fault), and what lies
/// above the top is no frame. Removed at exec (the main thread's stack is a new one).
#[map]
static MP_STACK_TOP: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// 1 while this CPU reads user stacks (see [`walking`]).
#[map]
static MP_WALKING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// A thread's user registers, where a user stack starts.
#[derive(Clone, Copy)]
pub(crate) struct UserRegs {
    pub(crate) ip: u64,
    pub(crate) sp: u64,
    pub(crate) bp: u64,
}

impl UserRegs {
    pub(crate) fn of(registers: PtRegs) -> Self {
        Self {
            ip: registers.get(regs::IP),
            sp: registers.get(regs::SP),
            bp: registers.get(regs::BP),
        }
    }
}

/// The current thread's user stack: its id when userspace vouched for its frame walk, else
/// [`RAW_STACK`] once a copy of it is sent; [`NO_STACK`] when neither could be done.
/// `leaf_returns`: the leaf is a syscall wrapper, which keeps no frame (see
/// [`RAW_STACK_LEAF_RETURNS`]).
#[inline(never)]
pub(crate) fn user_stack(tgid: u32, tid: u32, regs: UserRegs, leaf_returns: bool) -> u64 {
    set_walking(1);
    let walks = start_frame_walk(regs, leaf_returns);
    if walks == Some(true) {
        // A loop the verifier checks once, step by step in a callback: unrolled, its 127
        // steps cost the verifier ~0.25 s, most of memprof's time to start tracing.
        // SAFETY: the helper runs `frame_step`, which takes no context, at most the given
        // number of times.
        unsafe {
            bpf_loop(
                MAX_STACK_DEPTH as u32,
                frame_step as *mut _,
                core::ptr::null_mut(),
                0,
            )
        };
    }
    set_walking(0);
    let id = walks.and_then(|_| with_scratch(&MP_STACK_SCRATCH, |stack| stack_id(stack, tgid)));
    let Some(id) = id else {
        count(COUNTER_STACKS_LOST);
        return NO_STACK;
    };
    let slot = id as u32 & config::get(&STACK_SLOT_MASK);
    if Slot::array(&MP_STACKS_KNOWN, slot).is_some_and(|known| known.get() == id) {
        return id;
    }
    let copied = Slot::array(&MP_STACKS_COPIED, slot);
    let last = copied.map_or(0, Slot::get);
    if last == id && !leaf_returns {
        // A fault whose stack was copied and not answered yet: the copy stands for it.
        return id;
    }
    if !copy_allowed(u32::from(!leaf_returns)) {
        count(COUNTER_STACKS_OVER_BUDGET);
        return NO_STACK;
    }
    let first = last != id && last != id | STACK_WALK_DENIED;
    let stack = send_raw_stack(tgid, tid, id, regs, leaf_returns, first);
    // Once the copy is in the ring buffer, before any event that it stands for: a copy lost
    // would leave the stack's later faults with none until another took the slot.
    if first
        && stack == RAW_STACK
        && let Some(copied) = copied
    {
        copied.set(id);
    }
    stack
}

/// Whether this CPU may copy one more stack of `kind` in this tick (see
/// [`MP_COPY_BUDGET`]).
fn copy_allowed(kind: u32) -> bool {
    let Some(budget) = Slot::per_cpu(&MP_COPY_BUDGET, kind) else {
        return false;
    };
    let (Some(tick), Some(left)) = (budget.at(0), budget.at(1)) else {
        return false;
    };
    let now = jiffies();
    let ticks = now.wrapping_sub(tick.get());
    let mut copies = left.get();
    if ticks != 0 {
        tick.set(now);
        let refill = ticks
            .min(RAW_STACK_COPY_BURST)
            .saturating_mul(RAW_STACKS_PER_TICK);
        copies = copies.saturating_add(refill).min(RAW_STACK_COPY_BURST);
    }
    if copies == 0 {
        return false;
    }
    left.set(copies - 1);
    true
}

/// The id of the current task's user stack as the kernel's unwinder walks it (`bpf_get_stack`
/// with `BPF_F_USER_STACK`, which finds the user registers itself: for a fault taken in kernel
/// mode), sent to userspace the first time; [`NO_STACK`] when it could not be.
#[inline(never)]
pub(crate) fn user_stack_walked_by_kernel<C: EbpfContext>(ctx: &C, tgid: u32, tid: u32) -> u64 {
    with_scratch(&MP_STACK_SCRATCH, |stack| {
        set_walking(1);
        let walked = walk_user_by_kernel(ctx, stack);
        set_walking(0);
        if !walked {
            count(COUNTER_STACKS_LOST);
            return NO_STACK;
        }
        send_stack(stack, tgid, tid)
    })
    .unwrap_or(NO_STACK)
}

fn set_walking(value: u32) {
    if let Some(slot) = Slot::per_cpu(&MP_WALKING, 0) {
        slot.set(value);
    }
}

/// Whether this CPU is reading a user stack: a page fault now is the read's own.
pub(crate) fn walking() -> bool {
    Slot::per_cpu(&MP_WALKING, 0).is_some_and(|slot| slot.get() != 0)
}

/// Where the frame walk is, between two steps, per CPU: in a map rather than on the
/// program's stack, so that every step looks alike to the verifier, which then checks one.
/// The window holds `len` bytes of the stack from `base` on; `fp` is the next frame's.
#[map]
static MP_FRAME_WALK: PerCpuArray<FrameWalk> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct FrameWalk {
    fp: u64,
    base: u64,
    len: u64,
}

/// Walks a user stack by frame pointers, as the kernel's unwinder does, but stops at a frame
/// pointer no frame can have (unaligned, or in the first page) instead of reading it: a chain
/// through code built without frame pointers ends that way (glibc's start-up code leaves 0x5
/// there), and the kernel's failed read of it is a page-fault exception that cost most of
/// each walk. Frames lie close together, so it reads the stack a window at a time rather
/// than a frame at a time: a read costs far more than the bytes it copies. With
/// `leaf_returns`, the first window starts at the stack pointer, whose word (the frameless
/// leaf's return address) is the second frame. Userspace repeats this walk on a raw stack
/// (`unwind::frame_walk`): the two must stay alike.
///
/// This starts the walk in this CPU's stack scratch: `Some(true)` when [`frame_step`] is to
/// go on, `None` when the scratch maps could not be had.
fn start_frame_walk(regs: UserRegs, leaf_returns: bool) -> Option<bool> {
    with_walk(|stack, window, walk| {
        stack.ips[0] = regs.ip;
        stack.frames = 1;
        *walk = FrameWalk {
            fp: regs.bp,
            base: 0,
            len: 0,
        };
        if leaf_returns {
            if !read_user(window, regs.sp, WINDOW_WORDS) {
                return false;
            }
            (walk.base, walk.len) = (regs.sp, 8 * WINDOW_WORDS as u64);
            stack.ips[1] = window[0];
            stack.frames = 2;
        }
        true
    })
}

/// One frame of the walk (see [`start_frame_walk`]); 1 (stop) when the walk ends.
extern "C" fn frame_step(_index: u64, _context: *mut u8) -> i64 {
    with_walk(step_frame).unwrap_or(1)
}

/// Lends this CPU's stack scratch, stack window and walk state to `f`.
#[inline(always)]
fn with_walk<R>(
    f: impl FnOnce(&mut StackEvent, &mut [u64; WINDOW_WORDS], &mut FrameWalk) -> R,
) -> Option<R> {
    with_scratch(&MP_STACK_SCRATCH, |stack| {
        with_scratch(&MP_STACK_WINDOW, |window| {
            with_scratch(&MP_FRAME_WALK, |walk| f(stack, window, walk))
        })
    })
    .flatten()
    .flatten()
}

fn step_frame(
    stack: &mut StackEvent,
    window: &mut [u64; WINDOW_WORDS],
    walk: &mut FrameWalk,
) -> i64 {
    const FIRST_PAGE_END: u64 = 4096;
    const FRAME: u64 = 16;
    let (fp, index) = (walk.fp, stack.frames as usize);
    if index >= MAX_STACK_DEPTH
        || !fp.is_multiple_of(8)
        || !(FIRST_PAGE_END..USER_SPACE_END - FRAME).contains(&fp)
    {
        return 1;
    }
    if fp < walk.base || fp - walk.base + FRAME > walk.len {
        // Near the top of a stack a whole window may not be mapped: then the frame alone.
        walk.base = fp;
        walk.len = if read_user(window, fp, WINDOW_WORDS) {
            8 * WINDOW_WORDS as u64
        } else if read_user(window, fp, 2) {
            FRAME
        } else {
            return 1;
        };
    }
    // Opaque to the compiler, which would otherwise turn the word index into a byte offset
    // the verifier cannot see is 8-aligned.
    let at = core::hint::black_box((fp - walk.base) / 8) as usize;
    let (Some(&next), Some(&ret)) = (window.get(at), window.get(at + 1)) else {
        return 1;
    };
    let Some(slot) = stack.ips.get_mut(index) else {
        return 1;
    };
    if ret == 0 {
        return 1;
    }
    *slot = ret;
    stack.frames += 1;
    walk.fp = next;
    0
}

/// Reads `words` words of user memory at `address` into the start of `window`.
fn read_user(window: &mut [u64; WINDOW_WORDS], address: u64, words: usize) -> bool {
    let size = (8 * words.min(WINDOW_WORDS)) as u32;
    // SAFETY: `window` is writable for `size` bytes; the helper reads user memory and fails
    // cleanly on a bad address.
    unsafe { bpf_probe_read_user(window.as_mut_ptr().cast(), size, address as *const _) == 0 }
}

fn walk_user_by_kernel<C: EbpfContext>(ctx: &C, stack: &mut StackEvent) -> bool {
    let size = core::mem::size_of::<[u64; MAX_STACK_DEPTH]>() as u32;
    let flags = u64::from(BPF_F_USER_STACK);
    // SAFETY: `ips` is writable for `size` bytes.
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), stack.ips.as_mut_ptr().cast(), size, flags) };
    stack.frames = (bytes.max(0) / 8) as u32;
    bytes >= 0
}

/// A stack's id: FNV-1a over the process and the whole addresses. Each step is a bijection,
/// so stacks that differ in one address never share an id. Never [`NO_STACK`] nor
/// [`RAW_STACK`]. Userspace computes it alike (`unwind::stack_id`).
fn stack_id(stack: &StackEvent, tgid: u32) -> u64 {
    let frames = (stack.frames as usize).min(MAX_STACK_DEPTH);
    let mut id = 0xcbf2_9ce4_8422_2325 ^ (u64::from(tgid) | (frames as u64) << 32);
    for &ip in stack.ips.iter().take(frames) {
        id = (id ^ ip).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (id | 1) & !(1 << 63)
}

/// Sends the stack in `stack`, named by [`stack_id`], unless it was sent already: each
/// stack crosses to userspace once, not with every event.
fn send_stack(stack: &mut StackEvent, tgid: u32, tid: u32) -> u64 {
    let id = stack_id(stack, tgid);
    // A race between CPUs on a slot only sends a stack twice.
    let sent = Slot::array(&MP_STACKS_SENT, id as u32 & config::get(&STACK_SLOT_MASK));
    if sent.is_some_and(|sent| sent.get() == id) {
        return id;
    }
    stack.header = header(EventKind::Stack, tgid, tid);
    stack.id = id;
    let frames = (stack.frames as usize).min(MAX_STACK_DEPTH);
    let len = STACK_EVENT_HEAD + 8 * frames;
    // SAFETY: `stack` is a StackEvent, at least `len` bytes, all written.
    let bytes = unsafe { core::slice::from_raw_parts((&raw const *stack).cast::<u8>(), len) };
    if !send(bytes) {
        count(COUNTER_STACKS_LOST);
        return NO_STACK;
    }
    if let Some(sent) = sent {
        sent.set(id);
    }
    id
}

/// Sends a copy of the current thread's stack, from its stack pointer to the top of the
/// stack, at most [`RAW_STACK_BYTES`], waking userspace when `first`; [`RAW_STACK`], or
/// [`NO_STACK`] when the ring buffer had no room.
// Inlined: six arguments, one more than a BPF call passes.
#[inline(always)]
fn send_raw_stack(
    tgid: u32,
    tid: u32,
    id: u64,
    regs: UserRegs,
    leaf_returns: bool,
    first: bool,
) -> u64 {
    let top = stack_top(tid, tgid, regs.sp);
    with_scratch(&MP_RAW_STACK, |raw| {
        raw.header = header(EventKind::RawStack, tgid, tid);
        raw.id = id;
        (raw.ip, raw.sp, raw.bp) = (regs.ip, regs.sp, regs.bp);
        raw.flags = if leaf_returns {
            RAW_STACK_LEAF_RETURNS
        } else {
            0
        } | if first { RAW_STACK_AWAITS_VERDICT } else { 0 };
        // The page the stack pointer is in may not be there yet: the event is the page
        // fault that brings it in, and the read fails whole. Then the pages above it.
        let page_above = (regs.sp | (PAGE_SIZE - 1)) + 1;
        set_walking(1);
        let (mut skip, mut len) = (0, 0);
        for from in [regs.sp, page_above] {
            let size = (top.saturating_sub(from) as usize).min(RAW_STACK_BYTES) & !7;
            if read_stack(&mut raw.stack, from, size) {
                (skip, len) = ((from - regs.sp) as u32, size);
                break;
            }
        }
        set_walking(0);
        if len == 0 {
            // Not to be trusted again.
            forget_stack_top(tid);
        }
        raw.skip = skip;
        raw.len = len as u32;
        // SAFETY: `raw` is a RawStackEvent, whose head and first `len` bytes of stack are
        // written.
        let bytes = unsafe {
            core::slice::from_raw_parts((&raw const *raw).cast::<u8>(), RAW_STACK_EVENT_HEAD + len)
        };
        if send_waking(bytes, first) {
            RAW_STACK
        } else {
            count(COUNTER_STACKS_LOST);
            NO_STACK
        }
    })
    .unwrap_or(NO_STACK)
}

/// Reads `size` bytes of user memory at `address` into the start of `stack`; false when a
/// byte of them could not be read (then all of them read as zeroes).
fn read_stack(stack: &mut [u8; RAW_STACK_BYTES], address: u64, size: usize) -> bool {
    let size = size.min(RAW_STACK_BYTES) as u32;
    // SAFETY: `stack` is writable for RAW_STACK_BYTES >= `size` bytes; the helper reads user
    // memory and fails cleanly on a bad address.
    unsafe { bpf_probe_read_user(stack.as_mut_ptr().cast(), size, address as *const _) == 0 }
}

/// The top of the stack `sp` is on, for thread `tid`: the thread's cached top while `sp` lies
/// within [`RAW_STACK_BYTES`] below it; else the main thread's `mm->start_stack` (where
/// `argc` lies, above every frame) when `sp` is that close below it, or the end of the
/// mapping `sp` is in (a thread's stack, one a program switched to); 0 when none is known.
/// Not the end of the main thread's mapping: reading up to it fails.
fn stack_top(tid: u32, tgid: u32, sp: u64) -> u64 {
    const ARGC: u64 = 8;
    let near = |top: u64| sp < top && top - sp <= RAW_STACK_BYTES as u64;
    if let Some(top) = Slot::lru(&MP_STACK_TOP, tid).map(Slot::get)
        && near(top)
    {
        return top;
    }
    let start_stack = if tid == tgid { main_stack_top() } else { 0 };
    let top = if near(start_stack + ARGC) {
        start_stack + ARGC
    } else {
        mapping_end(sp)
    };
    if top > sp {
        let _ = MP_STACK_TOP.insert(tid, top, 0);
    }
    top
}

/// Forgets where thread `tid`'s stack ends: it calls exec, and gets a new one.
pub(crate) fn forget_stack_top(tid: u32) {
    let _ = MP_STACK_TOP.remove(tid);
}

/// The current process's `mm->start_stack`: above every frame of its main thread.
pub(crate) fn main_stack_top() -> u64 {
    let layout = config::get(&LAYOUT);
    let task = current_task() as *const u8;
    let Ok(mm) = read_kernel(task.wrapping_add(layout.task_mm as usize).cast::<u64>()) else {
        return 0;
    };
    let start_stack = (mm as *const u8).wrapping_add(layout.mm_start_stack as usize);
    read_kernel(start_stack.cast::<u64>()).unwrap_or(0)
}

/// The end of the current process's mapping that holds `address`; 0 when there is none or
/// the kernel could not look (its mmap lock was taken).
pub(crate) fn mapping_end(address: u64) -> u64 {
    let mut end = 0u64;
    // SAFETY: the helper takes the current task (a trusted pointer from the kernel), an
    // address, a callback the verifier checks, and `end` as the callback's context, which
    // lives across the call.
    let found = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            address,
            vma_end as *mut _,
            (&raw mut end).cast(),
            0,
        )
    };
    if found == 0 { end } else { 0 }
}

/// `bpf_find_vma`'s callback: stores the mapping's end in `end`.
extern "C" fn vma_end(_task: *mut u8, vma: *mut u8, end: *mut u64) -> i64 {
    let field = vma.wrapping_add(config::get(&LAYOUT).vma_end as usize);
    if let Ok(value) = read_kernel(field.cast::<u64>()) {
        // SAFETY: `end` is the `u64` mapping_end passed as the callback's context.
        unsafe { end.write(value) };
    }
    0
}
