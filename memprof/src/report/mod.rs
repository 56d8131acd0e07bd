//! The report of a finished trace. The types here are the JSON contract (`--json`,
//! `report.json`), each field listed in docs/report-json.md (a test keeps the two equal);
//! [`build`] makes a report from the tracker, [`text`] renders it for the terminal, and
//! [`stacks`] names call stacks for people.
mod build;
pub mod category;
pub mod stacks;
mod text;

pub use build::symbolize_site;

use serde::{Serialize, Serializer};

use self::category::{Category, CategoryFigures};
use crate::{
    address_space::SiteId,
    process::{EventCounts, Extent, ProcCheck, ResidentSplit, Sample},
    symbolize::Frame,
};
pub use build::WallClock;

#[derive(Debug, Serialize)]
pub struct Report {
    /// The contract's version, [`Report::VERSION`].
    pub version: u32,
    /// When tracing started and ended, in nanoseconds since the Unix epoch; RFC 3339 in the
    /// JSON.
    #[serde(rename = "started_at", serialize_with = "rfc3339")]
    pub started_unix_ns: u64,
    #[serde(rename = "ended_at", serialize_with = "rfc3339")]
    pub ended_unix_ns: u64,
    /// When tracing started on CLOCK_MONOTONIC, the clock of the timelines' samples.
    pub started_monotonic_ns: u64,
    pub duration_secs: f64,
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
    /// Processes that exited while traced and were left out, beyond `--keep-exited` (those
    /// kept grew most).
    pub processes_left_out: u64,
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
    /// Reserved bytes not PROT_NONE.
    pub committed_bytes: Extent,
    pub resident_bytes: Extent,
    pub resident_split: SplitReport,
    /// What the memory is for: reserved, committed and resident bytes by category, most
    /// reserved first, adding up to the process's figures at the end.
    pub breakdown: Vec<BreakdownRow>,
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
    /// Unique in the report; regions name their site by it.
    pub id: SiteId,
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
pub struct BreakdownRow {
    pub category: Category,
    #[serde(flatten)]
    pub figures: CategoryFigures,
    /// What the category is, in plain words.
    pub description: &'static str,
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
    /// What it is for (see `breakdown`).
    pub category: Category,
    pub reserved_bytes: u64,
    /// Pages memprof saw made resident (faults, populate) plus what smaps said at attach.
    pub resident_bytes: u64,
    /// The site that reserved it: an `id` of the process's `sites`.
    pub site_id: SiteId,
    /// Where it was reserved, as the terminal says: the first frame of its site past
    /// allocator and runtime plumbing.
    pub site_name: String,
}

impl ProcessReport {
    /// How much it grew while traced: reserved, then resident (peaks, as the timeline picks).
    pub fn growth(&self) -> (u64, u64) {
        (self.reserved_bytes.growth(), self.resident_bytes.growth())
    }
}

/// `2026-11-28T11:18:46.123456789Z`: a time in nanoseconds since the Unix epoch, in UTC.
pub fn rfc3339_string(unix_ns: u64) -> String {
    const NS: u64 = 1_000_000_000;
    let secs = unix_ns / NS;
    let (days, time) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01: in eras of 400 years
    // counted from 0000-03-01, so that a leap day ends its year.
    let z = days + 719_468;
    let (era, day_of_era) = (z / 146_097, z % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        time / 3600,
        time / 60 % 60,
        time % 60,
        unix_ns % NS
    )
}

fn rfc3339<S: Serializer>(unix_ns: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&rfc3339_string(*unix_ns))
}

impl Report {
    /// The JSON contract's version: raised when a field changes meaning or shape or goes
    /// away, not when one is added.
    pub const VERSION: u32 = 1;

    /// The processes, the one that grew most first.
    pub fn by_growth(&self) -> Vec<&ProcessReport> {
        let mut order: Vec<&ProcessReport> = self.processes.iter().collect();
        order.sort_by_key(|p| (std::cmp::Reverse(p.growth()), p.pid));
        order
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339_string;

    #[test]
    fn formats_rfc3339_in_utc() {
        assert_eq!(rfc3339_string(0), "1970-01-01T00:00:00.000000000Z");
        // A leap day, and the last second of a year.
        assert_eq!(
            rfc3339_string(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            rfc3339_string(1_798_761_599_999_999_999),
            "2026-12-31T23:59:59.999999999Z"
        );
    }
}
