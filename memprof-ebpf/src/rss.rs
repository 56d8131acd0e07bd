//! Resident-memory counters: each change of a traced process's counters that moves their
//! shared value, charged to the process whose mm it is (also when another task, reclaim,
//! made it).

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_map_lookup_percpu_elem},
    macros::{map, raw_tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use memprof_common::{EventKind, RssEvent};

use crate::{
    arch::PAGE_SIZE,
    config::{self, LAYOUT},
    event::{emit, header},
    filter::{is_traced, traced_mm},
    kernel::{current_ids, current_task, read_kernel},
    slot::{Slot, field, with_scratch},
};

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
/// folded in: most changes repeat the value sent before and are not sent again. A
/// direct-mapped cache (slot from the mm's address), so that the common change, a traced
/// process changing its own counters (once per fault), is checked without a hash lookup
/// (~45 ns); an mm whose slot another took only has a value sent again. CPUs racing on a
/// slot at worst send a value twice.
#[map]
static MP_RSS_SENT: Array<RssSent> = Array::with_max_entries(RSS_SLOTS, 0);

/// mm → pid, learnt from rss_stat events of the mm's own tasks, so that counter changes made
/// by other tasks (reclaim) can be charged to the right process.
#[map]
static MP_MM_OWNER: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// Per slot of mms ([`mm_slot`]), how many entries [`MP_MM_OWNER`] may hold there: a counter
/// change of an mm whose slot counts none is no traced process's, decided without the hash
/// lookup (60–90 ns, on every fault of every process memprof does not trace). Counted up
/// before an entry is made and down after one is removed, so never 0 while one exists; an
/// entry the map evicts, or one made twice, leaves a count: a lookup for nothing, as before.
#[map]
static MP_OWNED_MMS: Array<u64> = Array::with_max_entries(RSS_SLOTS, 0);

/// Attached to kmem:rss_stat (raw: the mm and which of its counters changed), which fires on
/// every change of a resident-page counter: once per fault.
#[raw_tracepoint(tracepoint = "rss_stat")]
fn mp_rss_stat(ctx: RawTracePointContext) -> u32 {
    config::unless_empty(|| try_rss_stat(&ctx))
}

fn try_rss_stat(ctx: &RawTracePointContext) -> Result<u32, i64> {
    let mm: u64 = ctx.arg(0);
    let member: u32 = ctx.arg(1);
    let layout = config::get(&LAYOUT);
    let (current_tgid, tid) = current_ids();
    let traced_current = is_traced(current_tgid);
    let Some(sent) = rss_sent(mm) else {
        return Ok(0);
    };
    let (sent_mm, sent_tgid) = (field!(sent, mm), field!(sent, tgid));
    // A change to the process's own mm, known already: the common case, decided here without
    // a hash lookup.
    let tgid = if traced_current && sent_mm.get() == mm && sent_tgid.get() == current_tgid {
        current_tgid
    } else {
        let current = if traced_current {
            traced_mm(current_tgid)
        } else {
            None
        };
        let tgid = match current {
            Some(own) if own.get() == mm => current_tgid,
            // Its own mm, not known yet (its first change, or its first after exec).
            Some(own) if current_mm(layout.task_mm)? == mm => {
                set_mm(own, mm);
                if let Some(owned) = owned_mms(mm) {
                    owned.add_atomic(1);
                }
                MP_MM_OWNER.insert(mm, current_tgid, 0)?;
                current_tgid
            }
            // Another process's mm (reclaim), or an untraced process's.
            _ => {
                if owned_mms(mm).is_none_or(|owned| owned.get() == 0) {
                    return Ok(0);
                }
                let Some(owner) = Slot::lru(&MP_MM_OWNER, mm) else {
                    return Ok(0);
                };
                let owner = owner.get();
                match traced_mm(owner) {
                    // Still the owner's current mm: freed mms are reused.
                    Some(its) if its.get() == mm => owner,
                    _ => return Ok(0),
                }
            }
        };
        if sent_mm.get() != mm || sent_tgid.get() != tgid {
            sent.set(RssSent {
                mm,
                tgid,
                _pad: 0,
                bytes: [NOT_SENT; 4],
            });
        }
        tgid
    };
    let member = member.min(3);
    let counter = layout.mm_rss_stat + member * layout.counter_size + layout.counter_count;
    let pages: i64 = read_kernel((mm + u64::from(counter)) as *const i64)?;
    // As the tracepoint's `size`: the counter's shared (approximate) value, never negative.
    let bytes = pages.max(0) * PAGE_SIZE as i64;
    let Some(sent) = field!(sent, bytes).at(member as usize) else {
        return Ok(0);
    };
    if sent.get() == bytes {
        return Ok(0);
    }
    sent.set(bytes);
    emit(RssEvent {
        header: header(EventKind::Rss, tgid, tid),
        member,
        _pad: 0,
        bytes,
    });
    Ok(0)
}

/// The current task's mm (`task_struct.mm`, at `task_mm`).
fn current_mm(task_mm: u32) -> Result<u64, i64> {
    let task = current_task() as *const u8;
    read_kernel(task.wrapping_add(task_mm as usize).cast())
}

/// The slot of [`MP_RSS_SENT`] and [`MP_OWNED_MMS`] for `mm`, whichever mm holds it.
fn mm_slot(mm: u64) -> u32 {
    // Multiplicative hashing: mm_structs are a slab's objects, a fixed stride apart.
    ((mm >> 6).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32 & (RSS_SLOTS - 1)
}

fn rss_sent(mm: u64) -> Option<Slot<RssSent>> {
    Slot::array(&MP_RSS_SENT, mm_slot(mm))
}

fn owned_mms(mm: u64) -> Option<Slot<u64>> {
    Slot::array(&MP_OWNED_MMS, mm_slot(mm))
}

/// Makes `mm` the process's own (`own`: its entry's mm), forgetting what was sent for the one
/// before: a freed mm's address is reused, by the next exec's mm as soon as any.
fn set_mm(own: Slot<u64>, mm: u64) {
    let old = own.get();
    if let Some(sent) = rss_sent(old) {
        let sent_mm = field!(sent, mm);
        if sent_mm.get() == old {
            sent_mm.set(0);
        }
    }
    own.set(mm);
}

/// Stops charging counter changes of `tgid`'s current mm to it (at exec and exit).
pub(crate) fn forget_mm(tgid: u32) {
    if let Some(own) = traced_mm(tgid) {
        let mm = own.get();
        if MP_MM_OWNER.remove(mm).is_ok()
            && let Some(owned) = owned_mms(mm)
        {
            owned.add_atomic(u64::MAX);
        }
        set_mm(own, 0);
    }
}

/// The resident-page counters VmRSS adds up: file, anonymous and shmem (not swap entries).
const RSS_COUNTERS: [u32; 3] = [0, 1, 3];

/// The most CPUs a kernel may have; the sum stops at the first CPU the kernel has not.
const MAX_CPUS: u32 = 8192;

/// A per-CPU array kept for its addresses: its value's copy on a CPU lies where that CPU's
/// copy of any per-CPU data does, at the same distance from the data's per-CPU pointer.
#[map]
static MP_CPU_COPIES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// A sum over CPUs in progress, per CPU (see [`mm_figures`]).
#[map]
static MP_RSS_SUM: PerCpuArray<RssSum> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct RssSum {
    /// MP_CPU_COPIES's per-CPU pointer.
    base: u64,
    /// Each counter's per-CPU pointer.
    parts: [u64; RSS_COUNTERS.len()],
    pages: i64,
}

/// The current task's VmSize and VmRSS in bytes, its resident counters summed over CPUs as
/// /proc/PID/status does; `None` when it has no mm. The counters' per-CPU parts are
/// `s32 __percpu *`, which bpf_per_cpu_ptr would take if this kernel's BTF marked them; it
/// does not, so they are found from where this kernel puts a per-CPU map's copies.
pub(crate) fn mm_figures() -> Option<(u64, u64)> {
    let layout = config::get(&LAYOUT);
    let mm = current_mm(layout.task_mm).ok().filter(|&mm| mm != 0)?;
    let total_vm: u64 = read_kernel((mm + u64::from(layout.mm_total_vm)) as *const u64).ok()?;
    let map = (&raw const MP_CPU_COPIES).cast::<u8>();
    // The map's address as a number, read back from where the verifier keeps it.
    let map: u64 = read_kernel((&raw const map).cast()).ok()?;
    let base: u64 = read_kernel((map + u64::from(layout.array_pptrs)) as *const u64).ok()?;
    with_scratch(&MP_RSS_SUM, |sum| {
        *sum = RssSum {
            base,
            parts: [0; RSS_COUNTERS.len()],
            pages: 0,
        };
        for (&member, part) in RSS_COUNTERS.iter().zip(sum.parts.iter_mut()) {
            let counter = mm + u64::from(layout.mm_rss_stat + member * layout.counter_size);
            let shared = counter_field::<i64>(counter, layout.counter_count);
            sum.pages += shared.unwrap_or(0);
            *part = counter_field(counter, layout.counter_counters).unwrap_or(0);
        }
    })?;
    // SAFETY: the helper runs `add_cpu`, which takes no context, at most MAX_CPUS times.
    unsafe { bpf_loop(MAX_CPUS, add_cpu as *mut _, core::ptr::null_mut(), 0) };
    let pages = with_scratch(&MP_RSS_SUM, |sum| sum.pages)?;
    Some((total_vm * PAGE_SIZE, pages.max(0) as u64 * PAGE_SIZE))
}

fn counter_field<T>(counter: u64, offset: u32) -> Option<T> {
    read_kernel((counter + u64::from(offset)) as *const T).ok()
}

/// Adds CPU `cpu`'s parts of the counters to the sum; 1 (stop) past the kernel's last CPU.
extern "C" fn add_cpu(cpu: u64, _context: *mut u8) -> i64 {
    let key = 0u32;
    // SAFETY: the map is a per-CPU array and `key` a valid key; the helper returns CPU
    // `cpu`'s copy of the value, or null when there is no such CPU.
    let copy = unsafe {
        bpf_map_lookup_percpu_elem(
            (&raw const MP_CPU_COPIES).cast_mut().cast(),
            (&raw const key).cast(),
            cpu as u32,
        )
    };
    if copy.is_null() {
        return 1;
    }
    // The copy's address as a number, read back from where it is kept.
    let Ok(copy) = read_kernel((&raw const copy).cast::<u64>()) else {
        return 1;
    };
    with_scratch(&MP_RSS_SUM, |sum| {
        let distance = copy.wrapping_sub(sum.base);
        for &part in &sum.parts {
            if part != 0 {
                let value = read_kernel(part.wrapping_add(distance) as *const i32).unwrap_or(0);
                sum.pages += i64::from(value);
            }
        }
        0
    })
    .unwrap_or(1)
}
