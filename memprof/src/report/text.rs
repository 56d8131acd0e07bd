//! The terminal report: a pure function of the report, snapshot-tested.
use std::{collections::HashSet, fmt::Write as _};

use super::{
    BreakdownRow, ProcessReport, Report, SiteReport, category::Category, stacks::short_stack,
};
use crate::process::Extent;
use crate::{
    address_space::PAGE_SIZE,
    units::{bytes, signed_bytes},
};

/// At most `width` characters, an ellipsis marking a cut.
fn shorten(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width - 1).collect();
    cut.push('…');
    cut
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

impl Report {
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
            p.render(&mut out, max_regions, self);
        }
        if order.len() > max_processes {
            let _ = writeln!(
                out,
                "({} more processes in the table above; --json has every one in detail)\n",
                order.len() - max_processes
            );
        }
        if self.processes_left_out > 0 {
            let _ = writeln!(
                out,
                "processes left out: {} that exited while traced (the report keeps those that \
                 grew most: --keep-exited)",
                self.processes_left_out
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
        if self.lost_stacks + self.stacks_over_budget > 0 {
            let _ = writeln!(
                out,
                "stacks not captured: {} lost, {} over the kernel's budget of copies (their \
                 bytes are charged to [stack not captured])",
                self.lost_stacks, self.stacks_over_budget
            );
        }
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
    fn render(&self, out: &mut String, max_regions: usize, report: &Report) {
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
        // Which process a lost event was about is lost with it: every process is marked.
        if report.lost_events > 0 {
            let _ = writeln!(
                out,
                "  warning: figures may be off: memprof lost {} events",
                report.lost_events
            );
        }
        extent_line(out, "reserved", &self.reserved_bytes);
        extent_line(out, "committed", &self.committed_bytes);
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
        self.render_breakdown(out);
        self.render_regions(out, max_regions);
        self.render_sites(out);
        if report.fault_sample > 0 {
            self.render_fault_stacks(out, report.fault_sample);
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

    /// What the memory is for: the categories as a table, then the biggest in words.
    fn render_breakdown(&self, out: &mut String) {
        const IN_WORDS: usize = 5;
        if self.breakdown.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "  breakdown  what the memory is for, most reserved first\n    {:<16} {:>10} {:>10} {:>10} {:>9}",
            "CATEGORY", "RESERVED", "COMMITTED", "RESIDENT", "RESIDENT%"
        );
        let share = |part: u64, whole: u64| match whole {
            0 => String::from("-"),
            _ => format!("{:.0}%", 100.0 * part as f64 / whole as f64),
        };
        for row in &self.breakdown {
            let f = &row.figures;
            let _ = writeln!(
                out,
                "    {:<16} {:>10} {:>10} {:>10} {:>9}",
                row.category.id(),
                bytes(f.reserved_bytes),
                bytes(f.committed_bytes),
                bytes(f.resident_bytes),
                share(f.resident_bytes, f.reserved_bytes),
            );
        }
        // The largest by reserved, and any of the largest by resident they leave out.
        let mut by_resident: Vec<&BreakdownRow> = self.breakdown.iter().collect();
        by_resident.sort_by_key(|row| std::cmp::Reverse(row.figures.resident_bytes));
        let mut biggest: HashSet<Category> = self
            .breakdown
            .iter()
            .take(IN_WORDS)
            .map(|row| row.category)
            .collect();
        biggest.extend(
            by_resident
                .iter()
                .take(3)
                .filter(|row| row.figures.resident_bytes > 0)
                .map(|row| row.category),
        );
        let _ = writeln!(out, "  in words");
        for row in self
            .breakdown
            .iter()
            .filter(|r| biggest.contains(&r.category))
        {
            let f = &row.figures;
            let state = if f.committed_bytes == 0 {
                "reserved only (PROT_NONE): none of it usable yet".to_string()
            } else if f.resident_bytes == 0 {
                format!("{} committed, none of it touched", bytes(f.committed_bytes))
            } else {
                format!(
                    "{} committed, {} resident ({} of what it reserved)",
                    bytes(f.committed_bytes),
                    bytes(f.resident_bytes),
                    share(f.resident_bytes, f.reserved_bytes)
                )
            };
            let _ = writeln!(
                out,
                "    {:>10}: {}; {state}",
                bytes(f.reserved_bytes),
                row.description,
            );
        }
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
                shorten(&r.site_name, 30),
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
                "  note       {truncated} of {} stacks are truncated: their unwinding \
                 stopped before an entry point (code without unwind tables, a frame pointer \
                 into data, a stack deeper than the 16 KiB copied)",
                self.sites.len()
            );
        }
    }

    /// The code that faulted most pages in ("made resident by"), with `--fault-stacks`.
    fn render_fault_stacks(&self, out: &mut String, fault_sample: u64) {
        let mut sites: Vec<&SiteReport> =
            self.sites.iter().filter(|s| s.faults_by_code > 0).collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.faults_by_code));
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
                s.faults_by_code,
                short_stack(&s.stack)
            );
        }
    }

    /// memprof's figures against the kernel's own, read at the end.
    fn check_line(&self) -> String {
        let Some(check) = self.proc_check else {
            return if self.exited {
                "nothing to compare with: the process exited while traced, and the kernel side could not read its figures".into()
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
        let whose = if check.at_exit {
            "the kernel's at exit:"
        } else {
            "/proc"
        };
        format!(
            "reserved {} vs {whose} VmSize {} ({}); resident counted {} vs VmRSS {} ({})",
            bytes(self.reserved_bytes.end),
            bytes(check.vm_size_bytes),
            diff(self.reserved_bytes.end, check.vm_size_bytes),
            bytes(check.counted_rss_bytes),
            bytes(check.vm_rss_bytes),
            diff(check.counted_rss_bytes, check.vm_rss_bytes),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        process::{EventCounts, Extent, ProcCheck, ResidentSplit},
        report::{RegionReport, SplitReport, category::CategoryFigures},
        symbolize::Frame,
        testing::assert_snapshot,
    };

    fn region(start: u64, end: u64, kind: &'static str, resident: u64) -> RegionReport {
        RegionReport {
            start,
            end,
            kind,
            perms: "rw-p".into(),
            path: None,
            category: Category::Other,
            reserved_bytes: end - start,
            resident_bytes: resident,
            site_id: 2,
            site_name: "workload::reserve".into(),
        }
    }

    fn row(category: Category, reserved: u64, committed: u64, resident: u64) -> BreakdownRow {
        BreakdownRow {
            category,
            figures: CategoryFigures {
                reserved_bytes: reserved,
                committed_bytes: committed,
                resident_bytes: resident,
            },
            description: category.describe(),
        }
    }

    fn report_of(fault_sample: u64, lost_events: u64, processes: Vec<ProcessReport>) -> Report {
        Report {
            version: Report::VERSION,
            started_unix_ns: 0,
            ended_unix_ns: 2_000_000_000,
            started_monotonic_ns: 0,
            duration_secs: 2.0,
            lost_events,
            lost_stacks: 0,
            stacks_over_budget: 0,
            fault_sample,
            processes_left_out: 0,
            processes,
        }
    }

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            module: Some(module.into()),
            ..crate::report::build::placeholder_frame(function)
        }
    }

    #[test]
    fn renders_a_fixed_report() {
        let report = report_of(
            4,
            0,
            vec![ProcessReport {
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
                committed_bytes: Extent {
                    start: 8 << 20,
                    end: 256 << 20,
                    peak: 260 << 20,
                },
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
                breakdown: vec![
                    row(Category::GoRuntime, 768 << 20, 0, 0),
                    row(Category::GoHeap, 256 << 20, 256 << 20, 60 << 20),
                    row(Category::MallocHeap, 1 << 20, 1 << 20, 4096),
                ],
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
                    counted_rss_bytes: 64 << 20,
                    at_exit: false,
                }),
                incomplete: None,
                sites: vec![
                    SiteReport {
                        id: 2,
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
                        faults_in_regions: 15360,
                        released_bytes: 0,
                        faults_by_code: 0,
                    },
                    SiteReport {
                        id: 3,
                        stack: vec![frame("runtime.sysMmap", "/bin/go-program")],
                        truncated: true,
                        reserved_bytes: 1 << 20,
                        committed_bytes: 1 << 20,
                        resident_bytes: 512 << 10,
                        faults_in_regions: 128,
                        released_bytes: 4096,
                        faults_by_code: 2048,
                    },
                ],
                timeline: vec![],
            }],
        );
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
            committed_bytes: reserved,
            resident_bytes: Extent {
                start: 1 << 20,
                end: 2 << 20,
                peak: 3 << 20,
            },
            resident_split: SplitReport {
                start: ResidentSplit::default(),
                end: ResidentSplit::default(),
            },
            breakdown: vec![],
            regions: vec![],
            events: EventCounts::default(),
            proc_check: None,
            incomplete: exited.then(|| "it exited before memprof could read its maps".into()),
            sites: vec![],
            timeline: vec![],
        };
        let extent = |start: u64, end: u64, peak: u64| Extent { start, end, peak };
        let report = report_of(
            0,
            3,
            vec![
                process(
                    7,
                    "/usr/bin/sleep 0.05",
                    extent(8 << 20, 8 << 20, 8 << 20),
                    true,
                ),
                process(9, "./server", extent(16 << 20, 1 << 30, 1 << 30), false),
                process(11, "[short]", extent(0, 0, 0), true),
            ],
        );
        let report = Report {
            processes_left_out: 1200,
            ..report
        };
        assert_snapshot("report-processes.txt", &report.render(2, 1));
    }
}
