//! Which processes are traced: a state byte per pid, which every program reads first; the
//! entry rss_stat keeps per traced process; and `--all`'s filter, which new processes are
//! checked against at fork and exec.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::bpf_get_current_uid_gid,
    macros::map,
    maps::{Array, HashMap},
};
use memprof_common::{
    ANY_UID, PID_LIMIT, TracedProcess,
    pid_state::{TRACED, UNTRACED},
};

use crate::{
    config::{self, FILTER},
    kernel::{ancestor_cgroup_id, comm},
    slot::{Slot, field},
};

/// The in-kernel filter: a byte per pid (thread group id), eight per entry (see `pid_state`).
/// Userspace seeds it; new processes of traced ones are added at fork, before they first run.
/// An array, not a hash map: the programs on every syscall and fault read it without a call
/// (the verifier inlines array lookups), where a hash lookup cost ~45 ns. Userspace maps it
/// (BPF_F_MMAPABLE) and stores single bytes, so it never writes back a neighbour's byte the
/// kernel just changed.
#[map]
static MP_PID_STATE: Array<[u8; 8]> = Array::with_max_entries(PID_LIMIT / 8, BPF_F_MMAPABLE);

/// What the rss_stat program keeps per traced process, entered and removed with its state.
#[map]
static MP_TRACED: HashMap<u32, TracedProcess> = HashMap::with_max_entries(65536, 0);

/// The process's byte in [`MP_PID_STATE`].
fn state_byte(tgid: u32) -> Option<Slot<u8>> {
    Slot::array(&MP_PID_STATE, tgid / 8)?.at((tgid % 8) as usize)
}

pub(crate) fn state(tgid: u32) -> u8 {
    state_byte(tgid).map_or(UNTRACED, Slot::get)
}

pub(crate) fn set_state(tgid: u32, state: u8) {
    if let Some(byte) = state_byte(tgid) {
        byte.set(state);
    }
}

pub(crate) fn is_traced(tgid: u32) -> bool {
    state(tgid) != UNTRACED
}

pub(crate) fn start_tracing(tgid: u32) -> Result<(), i64> {
    MP_TRACED.insert(tgid, TracedProcess::NEW, 0)?;
    set_state(tgid, TRACED);
    Ok(())
}

pub(crate) fn stop_tracing(tgid: u32) -> Result<(), i64> {
    set_state(tgid, UNTRACED);
    MP_TRACED.remove(tgid)?;
    Ok(())
}

/// The mm of a traced process's entry ([`TracedProcess::mm`]).
pub(crate) fn traced_mm(tgid: u32) -> Option<Slot<u64>> {
    Some(field!(Slot::hash(&MP_TRACED, tgid)?, mm))
}

/// Counts a change to traced process `tgid`'s address space ([`TracedProcess::changes`]);
/// returns its number. The caller holds the process's mmap write lock: no other thread of
/// it counts meanwhile.
pub(crate) fn count_change(tgid: u32) -> Option<u32> {
    let changes = field!(Slot::hash(&MP_TRACED, tgid)?, changes);
    // 0 stands for "no change" in events.
    let number = changes.get().wrapping_add(1).max(1);
    changes.set(number);
    Some(number)
}

/// `--all`: whether the current task's process is one to trace from now on.
pub(crate) fn wanted(tgid: u32) -> bool {
    let filter = config::get(&FILTER);
    if filter.all == 0 || tgid == filter.self_tgid {
        return false;
    }
    if filter.uid != ANY_UID && bpf_get_current_uid_gid() as u32 != filter.uid {
        return false;
    }
    if filter.cgroup_id != 0 && ancestor_cgroup_id(filter.cgroup_level as i32) != filter.cgroup_id {
        return false;
    }
    filter.comm[0] == 0 || comm() == filter.comm
}
