//! Sending events to userspace: the header each starts with and its clock, the ring buffer,
//! and the per-CPU counters of what could not be sent.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use aya_log_ebpf::warn;
use memprof_common::{COUNTER_LOST, COUNTERS, EventHeader, EventKind};

use crate::{
    kernel::{cpu, jiffies, ktime_ns},
    slot::Slot,
};

/// Default size; userspace sets the real one at load time (`--ring-buffer-size`).
#[map]
static MP_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 25, 0);

/// Per CPU, the events and stacks that could not be sent (`COUNTER_*`).
#[map]
static MP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

/// This CPU's last clock reading and the tick (jiffies) it was taken in (see [`now_ns`]).
#[map]
static MP_CLOCK: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

pub(crate) fn header(kind: EventKind, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid,
        tid,
        _pad: 0,
        ts_ns: now_ns(),
    }
}

/// CLOCK_MONOTONIC, read once per CPU and tick: events of one tick (4 ms at HZ=250) share a
/// time. Reading the clock costs ~50 ns on these VMs, a third of an event; the tick count is
/// a plain load, and the timeline needs no finer time.
fn now_ns() -> u64 {
    let tick = jiffies();
    let Some(clock) = Slot::per_cpu(&MP_CLOCK, 0) else {
        return ktime_ns();
    };
    let (Some(last_tick), Some(ns)) = (clock.at(0), clock.at(1)) else {
        return ktime_ns();
    };
    if last_tick.get() != tick {
        last_tick.set(tick);
        ns.set(ktime_ns());
    }
    ns.get()
}

/// Sends one event, or counts it as lost when the ring buffer is full. Without waking
/// userspace: a wake-up per event costs the traced thread an interrupt to another CPU, more
/// than the rest of the probe; userspace drains on a short timer instead.
pub(crate) fn emit<T: 'static>(event: T) {
    submit(event, BPF_RB_NO_WAKEUP);
}

/// Sends an event userspace must see at once (a process starting, exec'ing or exiting: it
/// reads /proc for those while it still can).
pub(crate) fn emit_now<T: 'static>(event: T) {
    submit(event, BPF_RB_FORCE_WAKEUP);
}

fn submit<T: 'static>(event: T, flags: u32) {
    // One helper call (a copy) rather than reserve and submit: calls cost more than copies.
    if MP_EVENTS.output::<T>(&event, u64::from(flags)).is_err() {
        lost(1);
    }
}

/// Sends an event that lives in map memory (a run of faults, a stack) from where it is,
/// without waking userspace; false when the ring buffer had no room. The caller counts it.
pub(crate) fn send<T: ?Sized>(event: &T) -> bool {
    send_waking(event, false)
}

/// [`send`], waking userspace when `wake`: it has something to answer at once.
pub(crate) fn send_waking<T: ?Sized>(event: &T, wake: bool) -> bool {
    let flags = if wake {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    MP_EVENTS.output::<T>(event, u64::from(flags)).is_ok()
}

/// Counts `n` events the ring buffer had no room for. The first a CPU loses is also logged:
/// a full ring buffer is rare, and the rest are only counted.
pub(crate) fn lost(n: u64) {
    if let Some(lost) = Slot::per_cpu(&MP_COUNTERS, COUNTER_LOST) {
        let before = lost.get();
        lost.set(before + n);
        if before == 0 {
            first_loss();
        }
    }
}

/// Out of line, so that the log statement leaves the programs' code before it as it was.
#[cold]
#[inline(never)]
fn first_loss() {
    warn!(
        &(),
        "CPU {}: ring buffer full, events lost (see --ring-buffer-size)",
        cpu()
    );
}

pub(crate) fn count(counter: u32) {
    if let Some(slot) = Slot::per_cpu(&MP_COUNTERS, counter) {
        slot.set(slot.get() + 1);
    }
}
