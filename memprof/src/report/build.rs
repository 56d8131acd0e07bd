//! Builds the report from the tracker once tracing has ended: figures per process, region
//! and site, with every site's stack symbolized (which reads the binaries from disk).
use std::collections::HashMap;

use super::{
    BreakdownRow, ProcessReport, RegionReport, Report, SiteReport, SplitReport,
    category::{self, SiteFrames},
    stacks,
};
use crate::{
    address_space::{Region, SiteId},
    events,
    process::Process,
    procfs::ProcSource,
    sites::{Site, SiteFigures, Sites},
    symbolize::{Frame, Location, Symbolizer},
    tracker::Tracker,
};

fn perms(region: &Region) -> String {
    let flag = |bit: u32, c: char| if region.prot & bit != 0 { c } else { '-' };
    let mut s = String::with_capacity(4);
    s.push(flag(libc::PROT_READ as u32, 'r'));
    s.push(flag(libc::PROT_WRITE as u32, 'w'));
    s.push(flag(libc::PROT_EXEC as u32, 'x'));
    s.push(if region.shared { 's' } else { 'p' });
    s
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// One instant on both clocks, to place the tracker's CLOCK_MONOTONIC instants on the wall
/// clock.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    pub unix_ns: u64,
    pub monotonic_ns: u64,
}

impl WallClock {
    pub fn now() -> Self {
        let unix_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
            });
        Self {
            unix_ns,
            monotonic_ns: events::monotonic_ns(),
        }
    }

    /// The wall-clock time of a CLOCK_MONOTONIC instant, in nanoseconds since the epoch.
    fn unix_ns(self, monotonic_ns: u64) -> u64 {
        let unix =
            i128::from(self.unix_ns) + i128::from(monotonic_ns) - i128::from(self.monotonic_ns);
        u64::try_from(unix.max(0)).unwrap_or(u64::MAX)
    }
}

impl Report {
    /// Symbolizes the sites of every process, so this reads binaries from disk.
    pub fn new(tracker: &Tracker<impl ProcSource>, fault_sample: u32) -> Self {
        Self::at(tracker, fault_sample, WallClock::now())
    }

    /// [`Report::new`] with the wall clock read at `clock`, which tests fix.
    pub fn at(tracker: &Tracker<impl ProcSource>, fault_sample: u32, clock: WallClock) -> Self {
        let mut stacks = Stacks {
            symbolizer: Symbolizer::new(),
            memo: HashMap::new(),
            sites: &tracker.sites,
        };
        let processes = tracker
            .processes
            .values()
            .map(|p| ProcessReport::new(p, &mut stacks, u64::from(fault_sample.max(1))))
            .collect();
        Self {
            version: Self::VERSION,
            started_unix_ns: clock.unix_ns(tracker.started_ns),
            // A report of a trace not finished yet ends when it started.
            ended_unix_ns: clock.unix_ns(tracker.ended_ns.max(tracker.started_ns)),
            started_monotonic_ns: tracker.started_ns,
            duration_secs: secs(tracker.ended_ns.saturating_sub(tracker.started_ns)),
            lost_events: tracker.lost_events,
            lost_stacks: tracker.lost_stacks,
            stacks_over_budget: tracker.stacks_over_budget,
            fault_sample: u64::from(fault_sample),
            processes_left_out: tracker.left_out,
            processes,
        }
    }
}

/// Symbolized sites, each done once.
struct Stacks<'a> {
    symbolizer: Symbolizer,
    memo: HashMap<SiteId, Vec<Frame>>,
    sites: &'a Sites,
}

impl SiteFrames for Stacks<'_> {
    fn frames(&mut self, id: SiteId) -> &[Frame] {
        let Self {
            symbolizer,
            memo,
            sites,
        } = self;
        memo.entry(id)
            .or_insert_with(|| symbolize_site(symbolizer, sites.get(id)))
    }
}

pub(super) fn placeholder_frame(name: &str) -> Frame {
    Frame {
        function: name.to_string(),
        ..Frame::default()
    }
}

/// A site's stack symbolized, leaf first (the agent symbolizes the live sites as asked).
pub fn symbolize_site(symbolizer: &mut Symbolizer, site: &Site) -> Vec<Frame> {
    if let Some(name) = site.placeholder {
        return vec![placeholder_frame(name)];
    }
    site.user
        .iter()
        .flat_map(|f| {
            let location = match &f.module {
                Some(path) => Location::Module {
                    path,
                    file_offset: f.file_offset,
                },
                // Capture keeps only frames in executable memory: outside any file, that is
                // code a runtime generated.
                None => Location::Jit { pid: site.pid },
            };
            let mut frames = symbolizer.symbolize(f.address, location).to_vec();
            for frame in &mut frames {
                frame.region = f.region;
            }
            frames
        })
        .collect()
}

impl ProcessReport {
    fn new(p: &Process, stacks: &mut Stacks, fault_sample: u64) -> Self {
        let figures = p.site_figures(fault_sample);
        let mut sites: Vec<(SiteId, SiteFigures)> = figures.into_iter().collect();
        sites.sort_by_key(|&(id, f)| (std::cmp::Reverse((f.reserved, f.resident)), id));
        let facts = category::ProcessFacts::of(&p.space);
        let categorized: Vec<_> = p
            .space
            .regions()
            .map(|r| (r, category::categorize(&p.space, r, &facts, stacks)))
            .collect();
        let mut breakdown: Vec<BreakdownRow> =
            category::breakdown(&p.space, categorized.iter().copied())
                .into_iter()
                .map(|(category, figures)| BreakdownRow {
                    category,
                    figures,
                    description: category.describe(),
                })
                .collect();
        breakdown.sort_by_key(|row| {
            std::cmp::Reverse((row.figures.reserved_bytes, row.figures.resident_bytes))
        });
        let mut regions: Vec<RegionReport> = categorized
            .into_iter()
            .map(|(r, category)| RegionReport {
                start: r.start,
                end: r.end,
                kind: p.space.region_label(r),
                perms: perms(r),
                path: r.path.as_deref().map(str::to_string),
                category,
                reserved_bytes: r.size(),
                resident_bytes: p.space.region_resident(r),
                site_id: r.site,
                site_name: stacks::site_name(stacks.frames(r.site)),
            })
            .collect();
        regions.sort_by(|a, b| {
            (b.reserved_bytes, b.resident_bytes, a.start).cmp(&(
                a.reserved_bytes,
                a.resident_bytes,
                b.start,
            ))
        });
        Self {
            pid: p.pid,
            command: p.command.clone(),
            cgroup: p.cgroup.clone(),
            traced_secs: secs(p.traced_ns()),
            exited: p.exited,
            reserved_bytes: p.reserved,
            committed_bytes: p.committed,
            resident_bytes: p.resident,
            resident_split: SplitReport {
                start: p.resident_split_start,
                end: p.resident_split,
            },
            breakdown,
            regions,
            events: p.events,
            proc_check: p.proc_check,
            incomplete: p.incomplete.clone(),
            sites: sites
                .into_iter()
                .map(|(id, f)| {
                    let stack = stacks.frames(id).to_vec();
                    let site = stacks.sites.get(id);
                    // A stack the unwinder did not see end, or cut at a frame that was no
                    // code, may still end at an entry point (the dynamic loader's `_start`,
                    // Go's `rt0_go`, below which lies no frame to follow).
                    let unwound_whole = site.complete == Some(true) && !site.cut;
                    let truncated = site.placeholder.is_none()
                        && !unwound_whole
                        && stacks::looks_truncated(&stack);
                    SiteReport {
                        id,
                        truncated,
                        stack,
                        reserved_bytes: f.reserved,
                        committed_bytes: f.committed,
                        resident_bytes: f.resident,
                        faults_in_regions: f.faults_in_regions,
                        released_bytes: f.released,
                        faults_by_code: f.faults_by_code,
                    }
                })
                .collect(),
            timeline: p.timeline.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, time::Duration};

    use serde_json::Value;

    use crate::{
        report::{Report, WallClock},
        testing::{FakeProc, MIB, assert_snapshot, faults, mmap, stack},
        tracker::{KernelCounts, Origin, Tracker},
    };

    /// A program of a module that does not exist on disk, so its frames are named by file
    /// offset whatever the machine has installed.
    const APP_MAPS: &str = "\
5000000-5002000 r-xp 00001000 fe:00 7 /opt/memprof-test/app
7ff000000000-7ff000021000 rw-p 00000000 00:00 0 [stack]
";

    /// The end of the made-up trace below is 2026-11-28 12:00 UTC.
    const CLOCK: WallClock = WallClock {
        unix_ns: 1_795_867_200_000_000_000,
        monotonic_ns: 25_000_000,
    };

    /// The report of a made-up trace: figures per process, region and site, and every
    /// site's stack pinned to its module and offset.
    fn made_up_report() -> Report {
        let proc = FakeProc::default().with(7, "app --serve", APP_MAPS, 3 * MIB);
        let interval = Duration::from_millis(10);
        let mut tracker = Tracker::new(proc, 7, Origin::Attached, interval, 0);
        tracker.seed_from_proc(7, 0).unwrap();
        tracker.apply(stack(7, 1, &[0x500_0100, 0x500_0200]));
        tracker.apply(stack(7, 3, &[0x500_0300, 0x9999_0000]));
        tracker.apply(mmap(7, 0x7f00_0000_0000, 8 * MIB, 1));
        tracker.apply(mmap(7, 0x7f00_1000_0000, MIB, 3));
        tracker.apply(faults(7, 0x7f00_0000_0000, 512));
        tracker.finish(25_000_000, KernelCounts::default());
        Report::at(&tracker, 0, CLOCK)
    }

    #[test]
    fn builds_the_report_of_a_made_up_trace() {
        let json = serde_json::to_string_pretty(&made_up_report()).unwrap();
        assert_snapshot("report-build.json", &format!("{json}\n"));
    }

    /// Every field the JSON has is in docs/report-json.md's table, and every field there is
    /// in the JSON: the contract and its documentation cannot drift apart.
    #[test]
    fn the_json_has_exactly_the_documented_fields() {
        let doc = include_str!("../../../docs/report-json.md");
        let documented: BTreeSet<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
            .map(str::to_string)
            .collect();
        let mut fields = BTreeSet::new();
        field_paths(
            &serde_json::to_value(made_up_report()).unwrap(),
            "",
            &mut fields,
        );
        let undocumented: Vec<_> = fields.difference(&documented).collect();
        let gone: Vec<_> = documented.difference(&fields).collect();
        assert!(
            undocumented.is_empty() && gone.is_empty(),
            "fields not in docs/report-json.md: {undocumented:?}; documented but not in the \
             JSON: {gone:?}"
        );
    }

    /// Every field's path, `processes[].sites[].id` for a field of an array's objects.
    fn field_paths(value: &Value, path: &str, out: &mut BTreeSet<String>) {
        match value {
            Value::Object(fields) => {
                for (name, value) in fields {
                    let path = match path {
                        "" => name.clone(),
                        _ => format!("{path}.{name}"),
                    };
                    field_paths(value, &path, out);
                    out.insert(path);
                }
            }
            Value::Array(items) => {
                for item in items {
                    field_paths(item, &format!("{path}[]"), out);
                }
            }
            _ => {}
        }
    }
}
