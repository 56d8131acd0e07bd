//! Call stacks: walked by frame pointers or by the kernel's unwinder into a per-CPU event,
//! named by a hash of their addresses, and sent to userspace the first time only.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_stack, generated::bpf_probe_read_user},
    macros::map,
    maps::{Array, PerCpuArray},
};
use memprof_common::{
    COUNTER_STACKS_LOST, EventKind, MAX_STACK_DEPTH, NO_STACK, STACK_EVENT_HEAD, StackEvent,
};

use crate::{
    arch::USER_SPACE_END,
    config::{self, STACK_SLOT_MASK},
    event::{count, header, send},
    slot::{Slot, with_scratch},
};

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

/// 1 while this CPU walks a stack (see [`walking`]).
#[map]
static MP_WALKING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// How a stack is found.
pub(crate) enum Walk {
    /// From user registers, by frame pointers.
    Frames { ip: u64, bp: u64 },
    /// By the kernel's own unwinder, with these `bpf_get_stack` flags.
    Kernel(u64),
}

/// The id of the stack `walk` finds, sent to userspace the first time; [`NO_STACK`] when
/// it could not be.
#[inline(never)]
pub(crate) fn stack<C: EbpfContext>(ctx: &C, tgid: u32, tid: u32, walk: Walk) -> u64 {
    with_scratch(&MP_STACK_SCRATCH, |stack| {
        set_walking(1);
        let walked = match walk {
            Walk::Frames { ip, bp } => with_scratch(&MP_STACK_WINDOW, |window| {
                walk_frames(stack, window, ip, bp);
                true
            })
            .unwrap_or(false),
            Walk::Kernel(flags) => walk_kernel(ctx, stack, flags),
        };
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

/// Whether this CPU is walking a stack: a page fault now is the walk's own read.
pub(crate) fn walking() -> bool {
    Slot::per_cpu(&MP_WALKING, 0).is_some_and(|slot| slot.get() != 0)
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
        if !fp.is_multiple_of(8) || !(FIRST_PAGE_END..USER_SPACE_END - FRAME).contains(&fp) {
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
    unsafe { bpf_probe_read_user(window.as_mut_ptr().cast(), size, address as *const _) == 0 }
}

fn walk_kernel<C: EbpfContext>(ctx: &C, stack: &mut StackEvent, flags: u64) -> bool {
    let size = core::mem::size_of::<[u64; MAX_STACK_DEPTH]>() as u32;
    // SAFETY: `ips` is writable for `size` bytes.
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), stack.ips.as_mut_ptr().cast(), size, flags) };
    stack.frames = (bytes.max(0) / 8) as u32;
    bytes >= 0
}

/// Names the stack in `stack` by a hash of its addresses and process, and sends it unless it
/// was sent already: each stack crosses to userspace once, not with every event.
fn send_stack(stack: &mut StackEvent, tgid: u32, tid: u32) -> u64 {
    let frames = (stack.frames as usize).min(MAX_STACK_DEPTH);
    // FNV-1a over whole addresses: each step is a bijection, so stacks that differ in one
    // address never share an id.
    let mut id = 0xcbf2_9ce4_8422_2325 ^ (u64::from(tgid) | (frames as u64) << 32);
    for &ip in stack.ips.iter().take(frames) {
        id = (id ^ ip).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let id = id | 1; // never NO_STACK
    // A race between CPUs on a slot only sends a stack twice.
    let sent = Slot::array(&MP_STACKS_SENT, id as u32 & config::get(&STACK_SLOT_MASK));
    if sent.is_some_and(|sent| sent.get() == id) {
        return id;
    }
    stack.header = header(EventKind::Stack, tgid, tid);
    stack.id = id;
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
