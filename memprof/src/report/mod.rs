//! The report of a finished trace. The types here are the JSON contract (`--json`,
//! `report.json`); [`build`] makes a report from the tracker, [`text`] renders it for the
//! terminal, and [`stacks`] names call stacks for people.
mod build;
pub mod stacks;
mod text;

pub use build::symbolize_site;

use serde::Serialize;

use crate::{
    process::{EventCounts, Extent, ProcCheck, ResidentSplit, Sample},
    symbolize::Frame,
};

#[derive(Debug, Serialize)]
pub struct Report {
    /// Events the kernel could not deliver to memprof; any figure may be off when not 0.
    pub lost_events: u64,
    /// Stacks the kernel could not store; their bytes are charged to "[stack not captured]".
    pub lost_stacks: u64,
    /// User stacks the kernel did not copy for unwinding, over its budget of copies (a storm
    /// of stacks in code without frame pointers); their bytes are charged to
    /// "[stack not captured]".
    pub stacks_over_budget: u64,
    /// With --fault-stacks, one fault in this many had its stack recorded; the
    /// `faults_by_code` figures are scaled by it (estimates when above 1). 0: off.
    pub fault_sample: u64,
    /// When tracing started, in nanoseconds since the Unix epoch. Not in the JSON until its
    /// contract names its times (and its snapshots would change with the clock).
    #[serde(skip)]
    pub started_unix_ns: u64,
    pub duration_secs: f64,
    pub processes: Vec<ProcessReport>,
}

#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub command: String,
    /// Its cgroup v2 path ("" when /proc did not say).
    pub cgroup: String,
    pub traced_secs: f64,
    /// The process exited while traced: "end" is its state just before its address space
    /// was torn down.
    pub exited: bool,
    pub reserved_bytes: Extent,
    /// Reserved bytes not PROT_NONE, at the end.
    pub committed_bytes: u64,
    pub resident_bytes: Extent,
    pub resident_split: SplitReport,
    pub regions: Vec<RegionReport>,
    pub events: EventCounts,
    /// /proc/PID/status read at the end, when the process was still alive.
    pub proc_check: Option<ProcCheck>,
    /// Set when memprof knows its model of this process is not complete, and why.
    pub incomplete: Option<String>,
    /// Call stacks and what each reserved, made resident and released, most reserved first.
    pub sites: Vec<SiteReport>,
    pub timeline: Vec<Sample>,
}

#[derive(Debug, Serialize)]
pub struct SiteReport {
    /// Leaf first, inlined frames included.
    pub stack: Vec<Frame>,
    /// The outermost frame is not a thread's entry point: the unwinder (frame pointers)
    /// stopped early.
    pub truncated: bool,
    pub reserved_bytes: u64,
    pub committed_bytes: u64,
    pub resident_bytes: u64,
    /// Page faults in the regions this site reserved.
    pub faults_in_regions: u64,
    pub released_bytes: u64,
    /// Page faults made by code with this stack (`--fault-stacks`; scaled, see
    /// `fault_sample`).
    pub faults_by_code: u64,
}

#[derive(Debug, Serialize)]
pub struct SplitReport {
    pub start: ResidentSplit,
    pub end: ResidentSplit,
}

#[derive(Debug, Serialize)]
pub struct RegionReport {
    pub start: u64,
    pub end: u64,
    pub kind: &'static str,
    pub perms: String,
    pub path: Option<String>,
    pub reserved_bytes: u64,
    /// Pages memprof saw made resident (faults, populate) plus what smaps said at attach.
    pub resident_bytes: u64,
    /// Where it was reserved: the first frame of its site outside the C library.
    pub site: String,
}

impl ProcessReport {
    /// How much it grew while traced: reserved, then resident (peaks, as the timeline picks).
    pub fn growth(&self) -> (u64, u64) {
        (
            self.reserved_bytes.peak - self.reserved_bytes.start,
            self.resident_bytes.peak - self.resident_bytes.start,
        )
    }
}

impl Report {
    /// The processes, the one that grew most first.
    pub fn by_growth(&self) -> Vec<&ProcessReport> {
        let mut order: Vec<&ProcessReport> = self.processes.iter().collect();
        order.sort_by_key(|p| (std::cmp::Reverse(p.growth()), p.pid));
        order
    }
}
