//! The report: built from a finished session, rendered for the terminal (a pure function, so
//! it is snapshot-tested) and serialised as JSON.
use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    model::{PAGE_SIZE, Region},
    process::{EventCounts, Extent, ProcCheck, Process, ResidentSplit, Sample},
    session::Session,
};

#[derive(Debug, Serialize)]
pub struct Report {
    /// Records the kernel could not deliver to memprof; any figure may be off when not 0.
    pub lost_events: u64,
    pub duration_secs: f64,
    pub processes: Vec<ProcessReport>,
}

#[derive(Debug, Serialize)]
pub struct ProcessReport {
    pub pid: u32,
    pub command: String,
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
    pub timeline: Vec<Sample>,
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

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl Report {
    pub fn new(session: &Session) -> Self {
        Self {
            lost_events: session.lost_events,
            duration_secs: secs(session.ended_ns.saturating_sub(session.started_ns)),
            processes: session.processes.values().map(ProcessReport::new).collect(),
        }
    }
}

impl ProcessReport {
    fn new(p: &Process) -> Self {
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

impl Report {
    /// The terminal report; `max_regions` rows per process, the rest folded into one line.
    pub fn render(&self, max_regions: usize) -> String {
        let mut out = String::new();
        for p in &self.processes {
            p.render(&mut out, max_regions);
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

impl ProcessReport {
    fn render(&self, out: &mut String, max_regions: usize) {
        let state = if self.exited {
            "exited while traced"
        } else {
            "running"
        };
        let _ = writeln!(
            out,
            "pid {}  {}\n  traced {:.2} s, {state}",
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
            "  regions    {} (largest reserved first)\n    {:<25} {:<22} {:<4} {:>10} {:>10}  PATH",
            self.regions.len(),
            "ADDRESS",
            "KIND",
            "PERM",
            "RESERVED",
            "RESIDENT"
        );
        for r in self.regions.iter().take(max_regions) {
            let row = format!(
                "    {:012x}-{:012x} {:<22} {:<4} {:>10} {:>10}  {}",
                r.start,
                r.end,
                r.kind,
                r.perms,
                bytes(r.reserved_bytes),
                bytes(r.resident_bytes),
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

    fn region(start: u64, end: u64, kind: &'static str, resident: u64) -> RegionReport {
        RegionReport {
            start,
            end,
            kind,
            perms: "rw-p".into(),
            path: None,
            reserved_bytes: end - start,
            resident_bytes: resident,
        }
    }

    #[test]
    fn renders_a_fixed_report() {
        let report = Report {
            lost_events: 0,
            duration_secs: 2.0,
            processes: vec![ProcessReport {
                pid: 42,
                command: "./workload --pause-ms 10".into(),
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
                timeline: vec![],
            }],
        };
        assert_snapshot("report.txt", &report.render(2));
    }

    /// Compares with `src/snapshots/NAME`; MEMPROF_UPDATE_SNAPSHOTS=1 rewrites it (review the
    /// diff before committing).
    fn assert_snapshot(name: &str, text: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/snapshots")
            .join(name);
        if std::env::var_os("MEMPROF_UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; MEMPROF_UPDATE_SNAPSHOTS=1 writes it",
                path.display()
            )
        });
        assert_eq!(text, expected);
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
