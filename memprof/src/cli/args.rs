//! What `run` and `top` share: the process filter, and parsers of sizes and durations.
use std::{num::IntErrorKind, time::Duration};

use clap::Args;
use memprof::{filter::FilterSpec, units};

/// Which processes `--all` and `top` trace. Checked in the kernel when a process is created
/// or calls exec, so processes that start later are caught from their first instruction.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct FilterArgs {
    /// Only processes with this command name (as `ps -o comm` shows it: the kernel keeps 15
    /// characters), and the processes they start.
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,

    /// Only processes in this cgroup v2 or below it: a path under /sys/fs/cgroup, e.g.
    /// /system.slice/nginx.service for a systemd service or a container's scope.
    #[arg(long, value_name = "PATH")]
    cgroup: Option<String>,

    /// Only processes whose real user id is this one.
    #[arg(long, value_name = "UID")]
    uid: Option<u32>,
}

impl FilterArgs {
    pub(crate) fn spec(self) -> FilterSpec {
        FilterSpec {
            comm: self.comm,
            cgroup: self.cgroup,
            uid: self.uid,
        }
    }
}

/// What the kernel side records and how it sends it: `run` and `agent` alike.
#[derive(Debug, Args, Clone)]
pub(crate) struct ProbeArgs {
    /// Also record the stack of the code that faulted each page in ("made resident by"; the
    /// agent serves them at /debug/pprof/faults). Costs a stack walk per fault; a thread's
    /// faults on consecutive pages with one stack still cross to memprof as one event.
    #[arg(long)]
    fault_stacks: bool,

    /// With --fault-stacks, record the stack of one fault in N (figures scaled by N and
    /// labelled as estimates).
    #[arg(long, value_name = "N", default_value = "1", requires = "fault_stacks",
          value_parser = positive::<u32>)]
    fault_sample: u32,

    /// Slots of the kernel's cache of the stacks it sent, so that each crosses to memprof
    /// once (a power of two, 8 bytes of kernel memory each); a stack whose slot another one
    /// took is sent again.
    #[arg(long, value_name = "N", default_value = "65536", value_parser = stack_cache_slots)]
    pub(crate) stack_cache_slots: u32,

    /// Size of the kernel-to-memprof ring buffer (a power of two from 4K to 1G).
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = ring_buffer_size)]
    pub(crate) ring_buffer_size: u32,
}

impl ProbeArgs {
    /// One fault in this many has its stack recorded; None: no fault stacks.
    pub(crate) fn fault_stacks(&self) -> Option<u32> {
        self.fault_stacks.then_some(self.fault_sample)
    }
}

const MILLISECOND: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);

/// `--duration`: up to a year, well within what tokio's timers count (about two years).
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    units::parse_duration_within(s, MILLISECOND, 8760 * HOUR)
}

/// `run --interval`: every process keeps a timeline sample per interval, and events are
/// timed to the kernel's clock tick (1 to 10 ms), so a finer one costs memory for nothing.
pub(crate) fn interval(s: &str) -> Result<Duration, String> {
    units::parse_duration_within(s, MILLISECOND, HOUR)
}

/// `top --refresh`: a view redrawn faster than people read.
pub(crate) fn refresh(s: &str) -> Result<Duration, String> {
    units::parse_duration_within(s, Duration::from_millis(100), HOUR)
}

/// A whole number from 1 up, that fits in `T`.
pub(crate) fn positive<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let too_large = || format!("`{s}` is too large");
    match s.parse::<u64>() {
        Ok(0) => Err("give 1 or more".to_string()),
        Ok(n) => T::try_from(n).map_err(|_| too_large()),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(too_large()),
        Err(_) => Err(format!("`{s}` is not a whole number (1 or more)")),
    }
}

/// How many processes that exited a report keeps: a count (0 or more), or every one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeepExited(pub(crate) Option<usize>);

pub(crate) fn keep_exited(s: &str) -> Result<KeepExited, String> {
    match s {
        "all" => Ok(KeepExited(None)),
        "0" => Ok(KeepExited(Some(0))),
        _ => positive::<usize>(s)
            .map(|n| KeepExited(Some(n)))
            .map_err(|e| format!("{e}, or `all`")),
    }
}

/// Slots of the kernel's cache of sent stacks: a power of two, at most 2^24.
pub(crate) fn stack_cache_slots(s: &str) -> Result<u32, String> {
    const MAX: u32 = 1 << 24;
    let slots: u32 = s.parse().map_err(|_| format!("`{s}` is not a count"))?;
    if !slots.is_power_of_two() || slots > MAX {
        return Err(format!("{slots} is not a power of two of at most {MAX}"));
    }
    Ok(slots)
}

/// The ring buffer's size: a power of two from a page (4K) to 1G.
pub(crate) fn ring_buffer_size(s: &str) -> Result<u32, String> {
    let bytes = units::parse_bytes(s)?;
    if !(4096..=1 << 30).contains(&bytes) || !bytes.is_power_of_two() {
        return Err(format!("{bytes} bytes is not a power of two from 4K to 1G"));
    }
    Ok(bytes as u32)
}
