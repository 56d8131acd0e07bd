//! The report: built from a finished session, rendered for the terminal (a pure function, so
//! it is snapshot-tested) and serialised as JSON.
use std::fmt::Write as _;

use serde::Serialize;

use std::collections::HashMap;

use crate::{
    address_space::{PAGE_SIZE, Region, SiteId},
    process::{EventCounts, Extent, ProcCheck, Process, ResidentSplit, Sample},
    session::Session,
    sites::{self, Site, SiteFigures},
    symbolize::{Frame, Location, Symbolizer},
};

#[derive(Debug, Serialize)]
pub struct Report {
    /// Records the kernel could not deliver to memprof; any figure may be off when not 0.
    pub lost_events: u64,
    /// Stacks the kernel could not store; their bytes are charged to "[stack not captured]".
    pub lost_stacks: u64,
    /// With --fault-stacks, one fault in this many had its stack recorded; the
    /// `made_resident_faults` figures are scaled by it (estimates when above 1). 0: off.
    pub fault_sample: u64,
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
    pub faults: u64,
    pub released_bytes: u64,
    /// Faults made by code with this stack (`--fault-stacks`; scaled, see `fault_sample`).
    pub made_resident_faults: u64,
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

fn perms(region: &Region) -> String {
    let flag = |bit: u32, c: char| if region.prot & bit != 0 { c } else { '-' };
    let mut s = String::with_capacity(4);
    s.push(flag(libc::PROT_READ as u32, 'r'));
    s.push(flag(libc::PROT_WRITE as u32, 'w'));
    s.push(flag(libc::PROT_EXEC as u32, 'x'));
    s.push(if region.shared { 's' } else { 'p' });
    s
}

/// At most `width` characters, an ellipsis marking a cut.
fn shorten(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Report {
    /// Symbolizes the sites of every process, so this reads binaries from disk.
    pub fn new(session: &Session, fault_sample: u32) -> Self {
        let mut stacks = Stacks {
            symbolizer: Symbolizer::new(),
            memo: HashMap::new(),
            sites: &session.sites,
        };
        let processes = session
            .processes
            .values()
            .map(|p| ProcessReport::new(p, &mut stacks, u64::from(fault_sample.max(1))))
            .collect();
        Self {
            lost_events: session.lost_events,
            lost_stacks: session.lost_stacks,
            fault_sample: u64::from(fault_sample),
            duration_secs: secs(session.ended_ns.saturating_sub(session.started_ns)),
            processes,
        }
    }
}

/// Symbolized sites, each done once.
struct Stacks<'a> {
    symbolizer: Symbolizer,
    memo: HashMap<SiteId, Vec<Frame>>,
    sites: &'a sites::Sites,
}

impl Stacks<'_> {
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

fn placeholder_frame(name: &str) -> Frame {
    Frame {
        function: name.to_string(),
        module: None,
        file: None,
        line: None,
        address: 0,
        module_offset: 0,
    }
}

fn symbolize_site(symbolizer: &mut Symbolizer, site: &Site) -> Vec<Frame> {
    if let Some(name) = site.placeholder {
        return vec![placeholder_frame(name)];
    }
    // The kernel's walk starts in memprof's own probe: its programs and the tracepoint code
    // that runs them.
    let is_probe = |name: &String| {
        ["bpf_prog_", "bpf_trace_run", "__bpf_trace_"]
            .iter()
            .any(|probe| name.starts_with(probe))
    };
    let kernel = site
        .kernel
        .iter()
        .map(|&address| sites::kernel_symbol(address))
        .skip_while(is_probe)
        .map(|name| placeholder_frame(&name));
    let user: Vec<Frame> = site
        .user
        .iter()
        .flat_map(|f| {
            let location = match &f.module {
                Some(path) => Location::Module {
                    path,
                    file_offset: f.file_offset,
                },
                None => Location::Unknown,
            };
            symbolizer.symbolize(f.address, location).to_vec()
        })
        .collect();
    kernel.chain(user).collect()
}

/// Functions a thread's stack starts in: a stack that ends anywhere else was cut short.
const STACK_ROOTS: [&str; 8] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone3",
    "runtime.goexit",
    "runtime.rt0_go",
    "runtime.mstart",
];

fn looks_truncated(frames: &[Frame]) -> bool {
    frames.last().is_some_and(|f| {
        f.module.is_some() && !STACK_ROOTS.iter().any(|root| f.function.starts_with(root))
    })
}

/// A site's frames from the first one outside the C library and dynamic loader (whose
/// syscall wrappers every stack starts with); all of them if none is.
fn own_frames(frames: &[Frame]) -> &[Frame] {
    let in_libc = |f: &Frame| {
        f.module.as_deref().is_some_and(|m| {
            let base = m.rsplit('/').next().unwrap_or(m);
            base.starts_with("libc.so") || base.starts_with("ld-linux")
        })
    };
    match frames.iter().position(|f| !in_libc(f)) {
        Some(first) => &frames[first..],
        None => frames,
    }
}

/// A stack on one line: its first own frames, callee < caller.
fn short_stack(frames: &[Frame]) -> String {
    let names: Vec<&str> = own_frames(frames)
        .iter()
        .take(4)
        .map(|f| f.function.as_str())
        .collect();
    names.join(" < ")
}

/// The frame that names a site in the region table.
fn site_name(frames: &[Frame]) -> String {
    own_frames(frames)
        .first()
        .map_or_else(String::new, |f| f.function.clone())
}

impl ProcessReport {
    fn new(p: &Process, stacks: &mut Stacks, fault_sample: u64) -> Self {
        let figures = sites::charge(p, fault_sample);
        let mut sites: Vec<(SiteId, SiteFigures)> = figures.into_iter().collect();
        sites.sort_by_key(|&(id, f)| (std::cmp::Reverse((f.reserved, f.resident)), id));
        let mut regions: Vec<RegionReport> = p
            .space
            .regions()
            .map(|r| RegionReport {
                start: r.start,
                end: r.end,
                kind: p.space.region_label(r),
                perms: perms(r),
                path: r.path.as_deref().map(str::to_string),
                reserved_bytes: r.size(),
                resident_bytes: p.space.region_resident(r),
                site: site_name(stacks.frames(r.site)),
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
            committed_bytes: p.space.committed(),
            resident_bytes: p.resident,
            resident_split: SplitReport {
                start: p.resident_split_start,
                end: p.resident_split,
            },
            regions,
            events: p.events,
            proc_check: p.proc_check,
            incomplete: p.incomplete.clone(),
            sites: sites
                .into_iter()
                .map(|(id, f)| {
                    let stack = stacks.frames(id).to_vec();
                    SiteReport {
                        truncated: looks_truncated(&stack),
                        stack,
                        reserved_bytes: f.reserved,
                        committed_bytes: f.committed,
                        resident_bytes: f.resident,
                        faults: f.faults,
                        released_bytes: f.released,
                        made_resident_faults: f.made_resident_faults,
                    }
                })
                .collect(),
            timeline: p.timeline.clone(),
        }
    }
}

/// Bytes in binary units, like `free -h`: "0 B", "4.0 KiB", "1.5 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn signed_bytes(delta: i128) -> String {
    let sign = if delta < 0 { "-" } else { "+" };
    format!("{sign}{}", bytes(delta.unsigned_abs() as u64))
}

fn extent_line(out: &mut String, name: &str, e: &Extent) {
    let _ = writeln!(
        out,
        "  {name:<11}{} → {}  ({}, peak {})",
        bytes(e.start),
        bytes(e.end),
        signed_bytes(i128::from(e.end) - i128::from(e.start)),
        bytes(e.peak),
    );
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

    /// The terminal report: with several processes a table of all of them, then the
    /// `max_processes` that grew most in detail, each with `max_regions` regions (the rest
    /// folded into one line).
    pub fn render(&self, max_regions: usize, max_processes: usize) -> String {
        let mut out = String::new();
        let order = self.by_growth();
        if order.len() > 1 {
            render_process_table(&mut out, &order);
        }
        for p in order.iter().take(max_processes) {
            p.render(&mut out, max_regions, self.fault_sample);
        }
        if order.len() > max_processes {
            let _ = writeln!(
                out,
                "({} more processes in the table above; --json has every one in detail)\n",
                order.len() - max_processes
            );
        }
        let _ = writeln!(
            out,
            "lost events: {}{}",
            self.lost_events,
            if self.lost_events == 0 {
                ""
            } else {
                " (the kernel could not deliver them: figures may be off; raise --ring-buffer-size)"
            }
        );
        out
    }
}

/// One line per process, most growth first.
fn render_process_table(out: &mut String, order: &[&ProcessReport]) {
    let _ = writeln!(
        out,
        "{} processes (most reserved growth first)\n  {:>7}  {:>10} {:>10} {:>10}  {:>10} {:>10}  {:<7} {:<24} COMMAND",
        order.len(),
        "PID",
        "RESERVED",
        "GROWTH",
        "PEAK",
        "RESIDENT",
        "GROWTH",
        "STATE",
        "CGROUP",
    );
    for p in order {
        let (reserved, resident) = (&p.reserved_bytes, &p.resident_bytes);
        let row = format!(
            "  {:>7}  {:>10} {:>10} {:>10}  {:>10} {:>10}  {:<7} {:<24} {}",
            p.pid,
            bytes(reserved.end),
            signed_bytes(i128::from(reserved.end) - i128::from(reserved.start)),
            bytes(reserved.peak),
            bytes(resident.end),
            signed_bytes(i128::from(resident.end) - i128::from(resident.start)),
            if p.exited { "exited" } else { "running" },
            shorten(&p.cgroup, 24),
            shorten(&p.command, 60),
        );
        let _ = writeln!(out, "{}", row.trim_end());
    }
    out.push('\n');
}

impl ProcessReport {
    fn render(&self, out: &mut String, max_regions: usize, fault_sample: u64) {
        let state = if self.exited {
            "exited while traced"
        } else {
            "running"
        };
        let cgroup = if self.cgroup.is_empty() {
            String::new()
        } else {
            format!(", cgroup {}", self.cgroup)
        };
        let _ = writeln!(
            out,
            "pid {}  {}\n  traced {:.2} s, {state}{cgroup}",
            self.pid, self.command, self.traced_secs
        );
        if let Some(why) = &self.incomplete {
            let _ = writeln!(out, "  warning: figures incomplete: {why}");
        }
        extent_line(out, "reserved", &self.reserved_bytes);
        let _ = writeln!(
            out,
            "  {:<11}{} at end",
            "committed",
            bytes(self.committed_bytes)
        );
        extent_line(out, "resident", &self.resident_bytes);
        let (s, e) = (&self.resident_split.start, &self.resident_split.end);
        let _ = writeln!(
            out,
            "  {:<11}anon {} → {}, file {} → {}, shmem {} → {}{}",
            "",
            bytes(s.anon),
            bytes(e.anon),
            bytes(s.file),
            bytes(e.file),
            bytes(s.shmem),
            bytes(e.shmem),
            if e.swap > 0 {
                format!(", swapped out {}", bytes(e.swap))
            } else {
                String::new()
            }
        );
        self.render_regions(out, max_regions);
        self.render_sites(out);
        if fault_sample > 0 {
            self.render_fault_stacks(out, fault_sample);
        }
        let ev = &self.events;
        let _ = writeln!(
            out,
            "  events     mmap {}, munmap {}, mremap {}, brk {}, mprotect {}, madvise {} \
             ({} failed); page faults {} ({} grew the stack); rss updates {}; forks {}; execs {}",
            ev.mmap,
            ev.munmap,
            ev.mremap,
            ev.brk,
            ev.mprotect,
            ev.madvise,
            ev.failed_syscalls,
            ev.page_faults,
            ev.stack_growths,
            ev.rss_updates,
            ev.forks,
            ev.execs,
        );
        let _ = writeln!(out, "  check      {}", self.check_line());
        out.push('\n');
    }

    fn render_regions(&self, out: &mut String, max_regions: usize) {
        let _ = writeln!(
            out,
            "  regions    {} (largest reserved first)\n    {:<25} {:<22} {:<4} {:>10} {:>10}  {:<30} PATH",
            self.regions.len(),
            "ADDRESS",
            "KIND",
            "PERM",
            "RESERVED",
            "RESIDENT",
            "RESERVED AT"
        );
        for r in self.regions.iter().take(max_regions) {
            let row = format!(
                "    {:012x}-{:012x} {:<22} {:<4} {:>10} {:>10}  {:<30} {}",
                r.start,
                r.end,
                r.kind,
                r.perms,
                bytes(r.reserved_bytes),
                bytes(r.resident_bytes),
                shorten(&r.site, 30),
                r.path.as_deref().unwrap_or("")
            );
            let _ = writeln!(out, "{}", row.trim_end());
        }
        let rest = &self.regions[self.regions.len().min(max_regions)..];
        if !rest.is_empty() {
            let _ = writeln!(
                out,
                "    {:<25} {:<22} {:<4} {:>10} {:>10}",
                format!("({} more)", rest.len()),
                "",
                "",
                bytes(rest.iter().map(|r| r.reserved_bytes).sum()),
                bytes(rest.iter().map(|r| r.resident_bytes).sum()),
            );
        }
    }

    /// The top sites by reserved and by resident bytes, with the share of what each reserved
    /// that is resident: the "reserved but never touched" picture.
    fn render_sites(&self, out: &mut String) {
        const TOP: usize = 5;
        let mut by_resident: Vec<&SiteReport> = self.sites.iter().collect();
        by_resident.sort_by_key(|s| std::cmp::Reverse(s.resident_bytes));
        for (title, sites) in [
            ("reserved", self.sites.iter().collect::<Vec<_>>()),
            ("resident", by_resident),
        ] {
            let _ = writeln!(out, "  top sites by {title}:");
            for s in sites
                .iter()
                .take(TOP)
                .filter(|s| s.reserved_bytes + s.resident_bytes > 0)
            {
                let share = match s.reserved_bytes {
                    0 => String::from("-"),
                    r => format!("{:.0}%", 100.0 * s.resident_bytes as f64 / r as f64),
                };
                let _ = writeln!(
                    out,
                    "    {:>10} reserved {:>10} resident ({share:>4} of it)  {}{}",
                    bytes(s.reserved_bytes),
                    bytes(s.resident_bytes),
                    short_stack(&s.stack),
                    if s.truncated {
                        " (stack truncated)"
                    } else {
                        ""
                    }
                );
            }
        }
        let truncated = self.sites.iter().filter(|s| s.truncated).count();
        if truncated > 0 {
            let _ = writeln!(
                out,
                "  note       {truncated} of {} stacks look truncated: code without frame \
                 pointers stops the kernel's unwinder",
                self.sites.len()
            );
        }
    }

    /// The code that faulted most pages in ("made resident by"), with `--fault-stacks`.
    fn render_fault_stacks(&self, out: &mut String, fault_sample: u64) {
        let mut sites: Vec<&SiteReport> = self
            .sites
            .iter()
            .filter(|s| s.made_resident_faults > 0)
            .collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.made_resident_faults));
        let estimate = if fault_sample > 1 {
            format!(" (estimates: 1 fault in {fault_sample} sampled)")
        } else {
            String::new()
        };
        let _ = writeln!(out, "  top code faulting pages in{estimate}:");
        for s in sites.iter().take(5) {
            let _ = writeln!(
                out,
                "    {:>10} faults  {}",
                s.made_resident_faults,
                short_stack(&s.stack)
            );
        }
    }

    /// memprof's figures against the kernel's own, read at the end.
    fn check_line(&self) -> String {
        let Some(check) = self.proc_check else {
            return if self.exited {
                "no /proc to compare with: the process exited while traced".into()
            } else {
                "no /proc to compare with: /proc/PID/status was not readable at the end".into()
            };
        };
        let diff = |ours: u64, theirs: u64| {
            let d = i128::from(ours) - i128::from(theirs);
            if d == 0 {
                "exact".to_string()
            } else {
                format!(
                    "off by {}, {} pages",
                    signed_bytes(d),
                    d / i128::from(PAGE_SIZE)
                )
            }
        };
        format!(
            "reserved {} vs /proc VmSize {} ({}); resident {} vs VmRSS {} ({})",
            bytes(self.reserved_bytes.end),
            bytes(check.vm_size_bytes),
            diff(self.reserved_bytes.end, check.vm_size_bytes),
            bytes(self.resident_bytes.end),
            bytes(check.vm_rss_bytes),
            diff(self.resident_bytes.end, check.vm_rss_bytes),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::assert_snapshot;

    fn region(start: u64, end: u64, kind: &'static str, resident: u64) -> RegionReport {
        RegionReport {
            start,
            end,
            kind,
            perms: "rw-p".into(),
            path: None,
            reserved_bytes: end - start,
            resident_bytes: resident,
            site: "workload::reserve".into(),
        }
    }

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            module: Some(module.into()),
            ..placeholder_frame(function)
        }
    }

    #[test]
    fn renders_a_fixed_report() {
        let report = Report {
            lost_events: 0,
            lost_stacks: 0,
            fault_sample: 4,
            duration_secs: 2.0,
            processes: vec![ProcessReport {
                pid: 42,
                command: "./workload --pause-ms 10".into(),
                cgroup: "/system.slice/workload.service".into(),
                traced_secs: 1.5,
                exited: false,
                reserved_bytes: Extent {
                    start: 8 << 20,
                    end: 1 << 30,
                    peak: (1 << 30) + (4 << 20),
                },
                committed_bytes: 256 << 20,
                resident_bytes: Extent {
                    start: 1 << 20,
                    end: 64 << 20,
                    peak: 70 << 20,
                },
                resident_split: SplitReport {
                    start: ResidentSplit {
                        anon: 1 << 19,
                        file: 1 << 19,
                        ..Default::default()
                    },
                    end: ResidentSplit {
                        anon: 60 << 20,
                        file: 4 << 20,
                        ..Default::default()
                    },
                },
                regions: vec![
                    region(
                        0x7f00_0000_0000,
                        0x7f00_3000_0000,
                        "PROT_NONE reservation",
                        0,
                    ),
                    region(0x5555_0000_0000, 0x5555_0010_0000, "heap", 4096),
                    region(0x7ffd_0000_0000, 0x7ffd_0002_1000, "main stack", 8192),
                ],
                events: EventCounts {
                    mmap: 3,
                    page_faults: 100,
                    ..Default::default()
                },
                proc_check: Some(ProcCheck {
                    vm_size_bytes: 1 << 30,
                    vm_rss_bytes: (64 << 20) + 8192,
                }),
                incomplete: None,
                sites: vec![
                    SiteReport {
                        stack: vec![
                            frame("__mmap64", "/usr/lib/libc.so.6"),
                            frame("workload::reserve", "/bin/workload"),
                            frame("workload::main", "/bin/workload"),
                            frame("__libc_start_main", "/usr/lib/libc.so.6"),
                        ],
                        truncated: false,
                        reserved_bytes: 768 << 20,
                        committed_bytes: 256 << 20,
                        resident_bytes: 60 << 20,
                        faults: 15360,
                        released_bytes: 0,
                        made_resident_faults: 0,
                    },
                    SiteReport {
                        stack: vec![frame("runtime.sysMmap", "/bin/go-program")],
                        truncated: true,
                        reserved_bytes: 1 << 20,
                        committed_bytes: 1 << 20,
                        resident_bytes: 512 << 10,
                        faults: 128,
                        released_bytes: 4096,
                        made_resident_faults: 2048,
                    },
                ],
                timeline: vec![],
            }],
        };
        assert_snapshot("report.txt", &report.render(2, usize::MAX));
    }

    /// With several processes: a table of all of them, most growth first, then details of
    /// as many as asked.
    #[test]
    fn renders_a_table_of_processes() {
        let process = |pid: u32, command: &str, reserved: Extent, exited: bool| ProcessReport {
            pid,
            command: command.into(),
            cgroup: "/memprof-test/a".into(),
            traced_secs: 0.05,
            exited,
            reserved_bytes: reserved,
            committed_bytes: reserved.end,
            resident_bytes: Extent {
                start: 1 << 20,
                end: 2 << 20,
                peak: 3 << 20,
            },
            resident_split: SplitReport {
                start: ResidentSplit::default(),
                end: ResidentSplit::default(),
            },
            regions: vec![],
            events: EventCounts::default(),
            proc_check: None,
            incomplete: exited.then(|| "it exited before memprof could read its maps".into()),
            sites: vec![],
            timeline: vec![],
        };
        let extent = |start: u64, end: u64, peak: u64| Extent { start, end, peak };
        let report = Report {
            lost_events: 3,
            lost_stacks: 0,
            fault_sample: 0,
            duration_secs: 2.0,
            processes: vec![
                process(
                    7,
                    "/usr/bin/sleep 0.05",
                    extent(8 << 20, 8 << 20, 8 << 20),
                    true,
                ),
                process(9, "./server", extent(16 << 20, 1 << 30, 1 << 30), false),
                process(11, "[short]", extent(0, 0, 0), true),
            ],
        };
        assert_snapshot("report-processes.txt", &report.render(2, 1));
    }

    #[test]
    fn byte_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
        assert_eq!(signed_bytes(-4096), "-4.0 KiB");
    }
}
