//! What the bench prints: the machine line, a markdown table per storm, the legend, memprof's
//! budgets with PASS or OVER, and every run's raw figures as JSON. Pure: it reads only the
//! runs it is given.

use serde_json::{Value, json};
use std::{fs, process::Command, thread, time::Duration};

use super::{
    RUNS_CAP_FACTOR,
    measure::{MemprofRun, Run},
    soak,
    storm::{Config, Storm},
};
use crate::workspace_root;

/// How to read the tables.
const LEGEND: &str = "
time: the storm's own duration as the workload measures it, median over runs. slowdown: \
median over runs of traced_i / untraced_i, paired by run (in brackets: the lowest and \
highest of them, and their interquartile range). events: what memprof was told of (page \
faults, each one of a run sent as one event counted, RSS updates, memory syscalls), median \
per run (perf: samples). lost: worst run. memprof CPU: its own user + system time, median \
per run (share: CPU time / memprof's wall time, summed over runs). peak RSS: worst run. to \
tracing: from spawning memprof until it prints `tracing pid` (the agent: `serving \
http://`), median (max).
";

// memprof's budgets.
const FAULTS_DEFAULT_MAX: f64 = 1.06;
const FAULTS_FAULT_STACKS_MAX: f64 = 1.25;
const SYSCALLS_DEFAULT_MAX: f64 = 1.15;
const FRAMELESS_DEFAULT_MAX: f64 = 1.50;
/// What a process pays for memprof running beside it, not tracing it (run --pid) or tracing
/// it without a memory syscall to see (agent).
const HOST_MAX: f64 = 1.15;
/// Of the frameless storm's bytes, the share on complete stacks through its round.
const FRAMELESS_COMPLETE_MIN_PERCENT: f64 = 95.0;
const CPU_MAX_CORES: f64 = 0.5;
const RSS_MAX_BYTES: u64 = 100_000_000;
const AGENT_RSS_MAX_BYTES: u64 = soak::RSS_BUDGET;
const TO_TRACING_MAX: Duration = Duration::from_millis(500);

/// The runs of one bench and what it ran, to report.
pub(super) struct Report<'a> {
    pub(super) scale: f64,
    pub(super) runs_per_configuration: usize,
    pub(super) storms: &'a [Storm],
    /// The configurations that ran, in the order of the tables' rows.
    pub(super) configs: &'a [Config],
    /// Configurations skipped or dropped, and why.
    pub(super) notes: &'a [String],
    pub(super) runs: &'a [Run],
}

impl Report<'_> {
    /// Everything the bench prints on stdout: a heading naming `machine`, the tables, the
    /// legend, the budgets and the notes.
    pub(super) fn text(&self, machine: &str) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "memprof overhead: {machine}; {} run(s) of each configuration, up to {} where \
             memprof's ratios spread, interleaved\n",
            self.runs_per_configuration,
            self.runs_per_configuration * RUNS_CAP_FACTOR
        ));
        for &storm in self.storms {
            out.push('\n');
            out.push_str(&self.table(storm));
        }
        out.push_str(LEGEND);
        out.push('\n');
        out.push_str(&self.budgets());
        out.push_str(&self.stacks_missed());
        for note in self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        out
    }

    /// The runs of `storm` under `config`, in run order.
    fn of(&self, storm: Storm, config: Config) -> Vec<&Run> {
        let mut runs: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.storm == storm && r.config == config)
            .collect();
        runs.sort_by_key(|r| r.index);
        runs
    }

    /// Median over runs of traced_i / untraced_i.
    fn slowdown(&self, storm: Storm, config: Config) -> Option<f64> {
        median(&ratios(self.runs, storm, config))
    }

    fn table(&self, storm: Storm) -> String {
        let mut out = format!(
            "### {} storm ({}): {}\n\n\
             | configuration | median time | slowdown | events | lost | memprof CPU (share) | memprof peak RSS | to tracing |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            storm.name(),
            runs(self.of(storm, Config::Untraced).len()),
            storm.describe(self.scale)
        );
        for &config in self.configs {
            let runs = self.of(storm, config);
            if runs.is_empty() {
                continue;
            }
            let times: Vec<f64> = runs.iter().map(|r| r.elapsed_ns as f64 / 1e9).collect();
            let time = median(&times).map_or("–".into(), |t| format!("{t:.3} s"));
            let ratios = ratios(self.runs, storm, config);
            let slowdown = match median(&ratios) {
                None => "–".into(),
                Some(s) if config == Config::Untraced || ratios.len() < 2 => format!("{s:.2}x"),
                // The spread beside the median: single runs on a noisy machine move it.
                Some(s) => {
                    let (min, max) = ratios
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
                    let iqr = iqr(&ratios).unwrap_or(0.0);
                    format!("{s:.2}x ({min:.2}–{max:.2}, IQR {iqr:.2})")
                }
            };
            let memprof: Vec<&MemprofRun> =
                runs.iter().filter_map(|r| r.memprof.as_ref()).collect();
            let dash = || "–".to_string();
            let (events, lost, cpu, rss, tracing) = if memprof.is_empty() {
                let samples: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.perf_samples.map(|s| s as f64))
                    .collect();
                let events = median(&samples).map_or_else(dash, |s| group(s as u64) + " samples");
                (events, dash(), dash(), dash(), dash())
            } else {
                let counts: Vec<f64> = memprof
                    .iter()
                    .filter_map(|m| Some(m.events? as f64))
                    .collect();
                let cpu_secs: Vec<f64> = memprof
                    .iter()
                    .filter_map(|m| Some(m.cpu_ns? as f64 / 1e9))
                    .collect();
                let to: Vec<f64> = memprof
                    .iter()
                    .map(|m| m.to_tracing_ns as f64 / 1e9)
                    .collect();
                (
                    median(&counts).map_or_else(dash, |c| group(c as u64)),
                    group(memprof.iter().map(|m| m.lost_events).max().unwrap_or(0)),
                    match (median(&cpu_secs), self.cpu_share(storm, config)) {
                        (Some(secs), Some(share)) => format!("{secs:.2} s ({share:.2} cores)"),
                        _ => "?".into(),
                    },
                    memprof
                        .iter()
                        .filter_map(|m| m.peak_rss_kib)
                        .max()
                        .map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                    format!(
                        "{:.3} s (max {:.3})",
                        median(&to).unwrap_or(0.0),
                        to.iter().copied().fold(0.0, f64::max)
                    ),
                )
            };
            out.push_str(&format!(
                "| {} | {time} | {slowdown} | {events} | {lost} | {cpu} | {rss} | {tracing} |\n",
                config.name()
            ));
        }
        out
    }

    /// memprof's CPU time over its wall time, summed over runs: the cores it used on average.
    fn cpu_share(&self, storm: Storm, config: Config) -> Option<f64> {
        let (mut cpu, mut wall) = (0u64, 0u64);
        for run in self.of(storm, config) {
            cpu += run.memprof.as_ref()?.cpu_ns?;
            wall += run.wall_ns;
        }
        (wall > 0).then(|| cpu as f64 / wall as f64)
    }

    fn budgets(&self) -> String {
        let mut out = format!(
            "Budgets (slowdown: median over runs of traced/untraced, paired by run, with the \
             floor in brackets: the storm under memprof with its programs empty; lost: all \
             runs; CPU: memprof's CPU time / its wall time, summed over runs, worst \
             configuration; RSS, time to tracing and complete stacks: worst run){}:\n\n",
            if self.scale == 1.0 {
                String::new()
            } else {
                format!(" at --scale {}", self.scale)
            }
        );
        let verdict = |pass: bool| if pass { "PASS" } else { "OVER" };
        let mut line = |what: String, value: String, budget: String, pass: Option<bool>| {
            let verdict = pass.map_or("n/a ", verdict);
            out.push_str(&format!("- {verdict} {what}: {value} (budget {budget})\n"));
        };
        let ratios = [
            (Storm::Faults, Config::Memprof, FAULTS_DEFAULT_MAX),
            (
                Storm::Faults,
                Config::MemprofFaultStacks,
                FAULTS_FAULT_STACKS_MAX,
            ),
            (Storm::Syscalls, Config::Memprof, SYSCALLS_DEFAULT_MAX),
            (Storm::Frameless, Config::Memprof, FRAMELESS_DEFAULT_MAX),
            (Storm::Host, Config::Memprof, HOST_MAX),
            (Storm::Host, Config::Agent, HOST_MAX),
        ];
        for (storm, config, max) in ratios {
            if !self.storms.contains(&storm) {
                continue;
            }
            let slowdown = self.slowdown(storm, config);
            // The floor under the budget on this machine: no program on these hooks does less.
            let floor = self
                .slowdown(storm, Config::Empty)
                .map_or(String::new(), |f| format!(" (its programs empty: {f:.2}x)"));
            line(
                format!("{} storm, {}", storm.name(), config.name()),
                slowdown.map_or("–".into(), |s| format!("{s:.2}x{floor}")),
                format!("≤ {max:.2}x"),
                slowdown.map(|s| s <= max),
            );
        }
        if self.storms.contains(&Storm::Frameless) {
            // The worst run of any memprof configuration.
            let complete = self
                .runs
                .iter()
                .filter(|r| r.storm == Storm::Frameless)
                .filter_map(|r| r.memprof.as_ref()?.stack_share?.percent())
                .reduce(f64::min);
            line(
                "frameless storm, complete stacks".into(),
                complete.map_or("–".into(), |p| format!("{p:.1}%")),
                format!("≥ {FRAMELESS_COMPLETE_MIN_PERCENT:.0}%"),
                complete.map(|p| p >= FRAMELESS_COMPLETE_MIN_PERCENT),
            );
        }
        let memprof: Vec<&MemprofRun> = self
            .runs
            .iter()
            .filter_map(|r| r.memprof.as_ref())
            .collect();
        let lost: u64 = memprof.iter().map(|m| m.lost_events).sum();
        line(
            "lost events".into(),
            group(lost),
            "0".into(),
            Some(lost == 0),
        );
        let cpu = self
            .storms
            .iter()
            .flat_map(|&s| {
                [Config::Memprof, Config::MemprofFaultStacks, Config::Agent]
                    .into_iter()
                    .filter(move |c| c.runs_on(s, self.scale))
                    .map(move |c| Some((self.cpu_share(s, c)?, s, c)))
            })
            .collect::<Option<Vec<_>>>()
            .and_then(|shares| shares.into_iter().max_by(|a, b| a.0.total_cmp(&b.0)));
        line(
            "memprof CPU".into(),
            cpu.map_or("unknown (ptrace refused)".into(), |(c, storm, config)| {
                format!("{c:.2} cores ({}, {} storm)", config.name(), storm.name())
            }),
            format!("≤ {CPU_MAX_CORES} core"),
            cpu.map(|(c, _, _)| c <= CPU_MAX_CORES),
        );
        // The agent, tracing the whole host, holds more than `memprof run`: it has its own
        // budget, the soak's.
        for (what, agent, max) in [
            ("memprof peak RSS", false, RSS_MAX_BYTES),
            ("memprof agent peak RSS", true, AGENT_RSS_MAX_BYTES),
        ] {
            let runs: Vec<&Run> = self
                .runs
                .iter()
                .filter(|r| r.memprof.is_some() && (r.config == Config::Agent) == agent)
                .collect();
            if agent && runs.is_empty() {
                continue;
            }
            let rss = runs
                .iter()
                .map(|r| r.memprof.as_ref()?.peak_rss_kib)
                .collect::<Option<Vec<u64>>>()
                .and_then(|k| k.into_iter().max());
            line(
                what.into(),
                rss.map_or("unknown (ptrace refused)".into(), |k| {
                    format!("{:.1} MB", (k * 1024) as f64 / 1e6)
                }),
                format!("≤ {} MB", max / 1_000_000),
                rss.map(|k| k * 1024 <= max),
            );
        }
        // Named: the agent's is its time to serve, which reads the whole host first.
        let tracing = self
            .runs
            .iter()
            .filter_map(|r| Some((r.memprof.as_ref()?.to_tracing_ns, r)))
            .max_by_key(|&(ns, _)| ns);
        line(
            "time to tracing".into(),
            tracing.map_or("–".into(), |(ns, r)| {
                format!(
                    "{:.3} s ({}, {} storm)",
                    ns as f64 / 1e9,
                    r.config.name(),
                    r.storm.name()
                )
            }),
            format!("≤ {:.1} s", TO_TRACING_MAX.as_secs_f64()),
            tracing.map(|(ns, _)| ns <= TO_TRACING_MAX.as_nanos() as u64),
        );
        out
    }

    /// A line for every memprof run that did not capture every stack, in the order of the
    /// tables.
    fn stacks_missed(&self) -> String {
        let mut out = String::new();
        for &storm in self.storms {
            for &config in self.configs {
                for run in self.of(storm, config) {
                    if let Some(missed) = run.memprof.as_ref().and_then(|m| m.stacks_missed()) {
                        out.push_str(&format!(
                            "- {} storm, {}, run {}: {missed}\n",
                            storm.name(),
                            config.name(),
                            run.index + 1
                        ));
                    }
                }
            }
        }
        out
    }

    /// Every run's figures and the median slowdowns, for `--json`.
    pub(super) fn json(&self, machine: &str, unix_time: u64) -> Value {
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                let m = r.memprof.as_ref();
                json!({
                    "storm": r.storm.name(),
                    "configuration": r.config.name(),
                    "run": r.index,
                    "elapsed_ns": r.elapsed_ns,
                    "wall_ns": r.wall_ns,
                    "events": m.and_then(|m| m.events),
                    "lost_events": m.map(|m| m.lost_events),
                    "lost_stacks": m.map(|m| m.lost_stacks),
                    "stacks_over_budget": m.map(|m| m.stacks_over_budget),
                    "complete_stack_bytes": m.and_then(|m| m.stack_share).map(|s| s.complete_bytes),
                    "stack_bytes": m.and_then(|m| m.stack_share).map(|s| s.bytes),
                    "memprof_cpu_ns": m.and_then(|m| m.cpu_ns),
                    "memprof_peak_rss_kib": m.and_then(|m| m.peak_rss_kib),
                    "to_tracing_ns": m.map(|m| m.to_tracing_ns),
                    "perf_samples": r.perf_samples,
                })
            })
            .collect();
        let slowdowns: Vec<Value> = self
            .storms
            .iter()
            .flat_map(|&storm| {
                self.configs.iter().filter_map(move |&config| {
                    let s = self.slowdown(storm, config)?;
                    Some(json!({"storm": storm.name(), "configuration": config.name(), "median_slowdown": s}))
                })
            })
            .collect();
        json!({
            "unix_time": unix_time,
            "machine": machine,
            "scale": self.scale,
            "runs_per_configuration": self.runs_per_configuration,
            "slowdowns": slowdowns,
            "notes": self.notes,
            "runs": runs,
        })
    }
}

/// traced_i / untraced_i, for every run i of `config` on `storm` paired with an untraced one.
pub(super) fn ratios(runs: &[Run], storm: Storm, config: Config) -> Vec<f64> {
    let of = |config| {
        runs.iter()
            .filter(move |r| r.storm == storm && r.config == config)
    };
    of(config)
        .filter_map(|r| {
            let base = of(Config::Untraced).find(|u| u.index == r.index)?;
            Some(r.elapsed_ns as f64 / base.elapsed_ns as f64)
        })
        .collect()
}

/// The `p` quantile of `values` (0 to 1), interpolated between the sorted values (R's
/// default, type 7); None when there are none.
fn quantile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let h = (v.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

pub(super) fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// The interquartile range: the spread of the middle half of the values, which one wild run
/// does not widen as it widens lowest–highest.
pub(super) fn iqr(values: &[f64]) -> Option<f64> {
    Some(quantile(values, 0.75)? - quantile(values, 0.25)?)
}

/// "1 run", "5 runs".
pub(super) fn runs(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

/// 1234567 → "1,234,567".
pub(super) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// CPUs, CPU model and kernel, for the table's heading.
pub(super) fn machine_line() -> String {
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |k| k.trim().to_string());
    format!(
        "{cpus} cores ({model}), Linux {kernel}, commit {}",
        commit()
    )
}

/// The workspace's commit, and whether its tracked files differ from it.
fn commit() -> String {
    let git = |args: &[&str]| {
        // Run through sudo in a user's checkout: git would refuse it as not root's.
        let out = Command::new("git")
            .args(["-c", "safe.directory=*", "-C"])
            .arg(workspace_root())
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        None => "unknown".into(),
        Some(head) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if changes.is_empty() => head,
            _ => format!("{head} with uncommitted changes"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::frameless::StackShare;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[2.0]), Some(2.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn interquartile_ranges() {
        assert_eq!(iqr(&[]), None);
        assert_eq!(iqr(&[1.2]), Some(0.0));
        // Type 7: the quartiles of 1..=5 are 2 and 4; of 1, 2 they are 1.25 and 1.75.
        assert_eq!(iqr(&[5.0, 1.0, 4.0, 2.0, 3.0]), Some(2.0));
        assert_eq!(iqr(&[2.0, 1.0]), Some(0.5));
        // One wild run does not widen it.
        assert_eq!(iqr(&[1.0, 1.0, 1.0, 1.0, 9.0]), Some(0.0));
    }

    #[test]
    fn grouped_digits() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(200_000), "200,000");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
    }

    fn memprof(
        storm: Storm,
        index: usize,
        elapsed_ms: u64,
        events: u64,
        lost_events: u64,
        cpu_ms: Option<u64>,
        to_tracing_ms: u64,
    ) -> Run {
        Run {
            memprof: Some(MemprofRun {
                events: Some(events),
                lost_events,
                lost_stacks: 0,
                stacks_over_budget: 0,
                stack_share: None,
                cpu_ns: cpu_ms.map(|ms| ms * 1_000_000),
                peak_rss_kib: Some(75_000 + index as u64 * 100),
                to_tracing_ns: to_tracing_ms * 1_000_000,
            }),
            ..Run::timed(
                storm,
                Config::Memprof,
                index,
                elapsed_ms * 1_000_000,
                (elapsed_ms + 100) * 1_000_000,
            )
        }
    }

    fn untraced(storm: Storm, index: usize, elapsed_ms: u64) -> Run {
        let (elapsed, wall) = (elapsed_ms * 1_000_000, (elapsed_ms + 50) * 1_000_000);
        Run::timed(storm, Config::Untraced, index, elapsed, wall)
    }

    fn perf(storm: Storm, index: usize, elapsed_ms: u64, samples: u64) -> Run {
        let (elapsed, wall) = (elapsed_ms * 1_000_000, (elapsed_ms + 300) * 1_000_000);
        Run {
            perf_samples: Some(samples),
            ..Run::timed(storm, Config::Perf, index, elapsed, wall)
        }
    }

    /// Two storms at --scale 0.25: on the syscall storm one memprof run lost events and one
    /// could not be followed (no CPU time), and the last untraced run is missing.
    fn runs() -> Vec<Run> {
        use Storm::{Faults, Syscalls};
        vec![
            untraced(Faults, 0, 1000),
            untraced(Faults, 1, 1200),
            untraced(Faults, 2, 1100),
            memprof(Faults, 2, 1100, 1_083_608, 0, Some(110), 78),
            memprof(Faults, 0, 1060, 1_083_606, 0, Some(100), 76),
            memprof(Faults, 1, 1260, 1_083_610, 0, Some(120), 80),
            perf(Faults, 0, 1700, 1_048_653),
            perf(Faults, 1, 2000, 1_048_655),
            perf(Faults, 2, 1900, 1_048_654),
            untraced(Syscalls, 0, 700),
            untraced(Syscalls, 1, 720),
            memprof(Syscalls, 0, 860, 600_112, 2, Some(170), 77),
            memprof(Syscalls, 1, 880, 600_114, 0, None, 79),
            memprof(Syscalls, 2, 870, 600_113, 0, Some(180), 81),
        ]
    }

    const NOTES: [&str; 1] = ["skipped: bpftrace not installed"];

    /// The report of `runs()` at --scale 0.25, of three configurations (bpftrace skipped).
    fn report<'a>(notes: &'a [String], runs: &'a [Run]) -> Report<'a> {
        Report {
            scale: 0.25,
            runs_per_configuration: 3,
            storms: &[Storm::Faults, Storm::Syscalls],
            configs: &[Config::Untraced, Config::Memprof, Config::Perf],
            notes,
            runs,
        }
    }

    #[test]
    fn printed_report() {
        let notes = NOTES.map(String::from);
        let runs = runs();
        let report = report(&notes, &runs);
        let expected = "\
memprof overhead: 2 cores (CPU), Linux 6.18; 3 run(s) of each configuration, up to 9 where memprof's ratios spread, interleaved

### faults storm (3 runs): reserve 4 GiB, touch 256 MiB page by page, 4 rounds (MADV_DONTNEED between)

| configuration | median time | slowdown | events | lost | memprof CPU (share) | memprof peak RSS | to tracing |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| untraced | 1.100 s | 1.00x | – | – | – | – | – |
| memprof | 1.100 s | 1.05x (1.00–1.06, IQR 0.03) | 1,083,608 | 0 | 0.11 s (0.09 cores) | 73.4 MiB | 0.078 s (max 0.080) |
| perf record -e page-faults -c 1 -g | 1.900 s | 1.70x (1.67–1.73, IQR 0.03) | 1,048,654 samples | – | – | – | – |

### syscalls storm (2 runs): 50,000 rounds of mmap 64 KiB, touch one page, munmap

| configuration | median time | slowdown | events | lost | memprof CPU (share) | memprof peak RSS | to tracing |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
| untraced | 0.710 s | 1.00x | – | – | – | – | – |
| memprof | 0.870 s | 1.23x (1.22–1.23, IQR 0.00) | 600,113 | 2 | ? | 73.4 MiB | 0.079 s (max 0.081) |

time: the storm's own duration as the workload measures it, median over runs. slowdown: median over runs of traced_i / untraced_i, paired by run (in brackets: the lowest and highest of them, and their interquartile range). events: what memprof was told of (page faults, each one of a run sent as one event counted, RSS updates, memory syscalls), median per run (perf: samples). lost: worst run. memprof CPU: its own user + system time, median per run (share: CPU time / memprof's wall time, summed over runs). peak RSS: worst run. to tracing: from spawning memprof until it prints `tracing pid` (the agent: `serving http://`), median (max).

Budgets (slowdown: median over runs of traced/untraced, paired by run, with the floor in brackets: the storm under memprof with its programs empty; lost: all runs; CPU: memprof's CPU time / its wall time, summed over runs, worst configuration; RSS, time to tracing and complete stacks: worst run) at --scale 0.25:

- PASS faults storm, memprof: 1.05x (budget ≤ 1.06x)
- n/a  faults storm, memprof --fault-stacks: – (budget ≤ 1.25x)
- OVER syscalls storm, memprof: 1.23x (budget ≤ 1.15x)
- OVER lost events: 2 (budget 0)
- n/a  memprof CPU: unknown (ptrace refused) (budget ≤ 0.5 core)
- PASS memprof peak RSS: 77.0 MB (budget ≤ 100 MB)
- PASS time to tracing: 0.081 s (memprof, syscalls storm) (budget ≤ 0.5 s)
- skipped: bpftrace not installed
";
        assert_eq!(report.text("2 cores (CPU), Linux 6.18"), expected);
    }

    /// The frameless storm at --scale 1: its slowdown and its complete stacks, worst run of
    /// either memprof configuration, and the runs that missed stacks.
    #[test]
    fn frameless_budgets() {
        let storm = Storm::Frameless;
        let share = |complete_bytes, bytes| {
            Some(StackShare {
                complete_bytes,
                bytes,
            })
        };
        let mut runs = vec![untraced(storm, 0, 20_000), untraced(storm, 1, 21_000)];
        for (index, elapsed_ms, config, stack_share, over) in [
            (0, 28_000, Config::Memprof, share(995, 1000), 0),
            (1, 29_000, Config::Memprof, share(999, 1000), 0),
            (
                0,
                31_000,
                Config::MemprofFaultStacks,
                share(980, 1000),
                12_345,
            ),
            (1, 30_000, Config::MemprofFaultStacks, None, 0),
        ] {
            let mut run = memprof(storm, index, elapsed_ms, 7_000_000, 0, Some(900), 80);
            run.config = config;
            let m = run.memprof.as_mut().unwrap();
            m.stack_share = stack_share;
            m.stacks_over_budget = over;
            runs.push(run);
        }
        let report = Report {
            scale: 1.0,
            runs_per_configuration: 2,
            storms: &[storm],
            configs: &[
                Config::Untraced,
                Config::Memprof,
                Config::MemprofFaultStacks,
            ],
            notes: &[],
            runs: &runs,
        };
        let text = report.text("m");
        let budgets = text.split_once(":\n\n").unwrap().1;
        assert!(
            text.contains(
                "### frameless storm (2 runs): 100,000 rounds of malloc 256 KiB (a mmap), touch one page, \
                 free (a munmap), in C without frame pointers\n"
            ),
            "{text}"
        );
        assert!(
            budgets.starts_with(
                "- PASS frameless storm, memprof: 1.39x (budget ≤ 1.50x)\n\
                 - PASS frameless storm, complete stacks: 98.0% (budget ≥ 95%)\n\
                 - PASS lost events: 0 (budget 0)\n"
            ),
            "{budgets}"
        );
        assert!(
            budgets.ends_with(
                "- frameless storm, memprof --fault-stacks, run 1: 12,345 stacks over budget\n"
            ),
            "{budgets}"
        );
        let json = report.json("m", 7);
        assert_eq!(json["runs"][4]["complete_stack_bytes"], 980);
        assert_eq!(json["runs"][4]["stack_bytes"], 1000);
        assert_eq!(json["runs"][4]["stacks_over_budget"], 12_345);
    }

    /// The host storm beside memprof and the agent: both against the host budget, and the
    /// agent's RSS against its own, and the floor its programs empty set.
    #[test]
    fn host_budgets() {
        let storm = Storm::Host;
        let mut agent = memprof(storm, 0, 1_300, 0, 0, Some(100), 230);
        agent.config = Config::Agent;
        let m = agent.memprof.as_mut().unwrap();
        m.events = None;
        m.peak_rss_kib = Some(126_000);
        let mut empty = memprof(storm, 0, 1_040, 0, 0, Some(10), 200);
        empty.config = Config::Empty;
        let runs = [
            untraced(storm, 0, 1_000),
            memprof(storm, 0, 1_100, 0, 0, Some(100), 200),
            agent,
            empty,
        ];
        let report = Report {
            scale: 1.0,
            runs_per_configuration: 1,
            storms: &[storm],
            configs: &[
                Config::Untraced,
                Config::Memprof,
                Config::Agent,
                Config::Empty,
            ],
            notes: &[],
            runs: &runs,
        };
        let text = report.text("m");
        assert!(
            text.contains("| memprof agent | 1.300 s | 1.30x | – | 0 |"),
            "{text}"
        );
        let budgets = text.split_once(":\n\n").unwrap().1;
        assert!(
            budgets.starts_with(
                "- PASS host storm, memprof: 1.10x (its programs empty: 1.04x) (budget ≤ 1.15x)\n\
                 - OVER host storm, memprof agent: 1.30x (its programs empty: 1.04x) \
                 (budget ≤ 1.15x)\n"
            ),
            "{budgets}"
        );
        assert!(
            budgets.contains(
                "- PASS memprof peak RSS: 76.8 MB (budget ≤ 100 MB)\n\
                 - PASS memprof agent peak RSS: 129.0 MB (budget ≤ 150 MB)\n"
            ),
            "{budgets}"
        );
    }

    #[test]
    fn raw_json() {
        let notes = NOTES.map(String::from);
        let runs = runs();
        let report = report(&notes, &runs);
        let json = report.json("m", 7);
        assert_eq!(json["unix_time"], 7);
        assert_eq!(json["machine"], "m");
        assert_eq!(json["notes"], json!(NOTES));
        assert_eq!(json["runs"].as_array().unwrap().len(), runs.len());
        assert_eq!(
            json["runs"][11],
            json!({
                "storm": "syscalls", "configuration": "memprof", "run": 0,
                "elapsed_ns": 860_000_000, "wall_ns": 960_000_000,
                "events": 600_112, "lost_events": 2, "lost_stacks": 0, "stacks_over_budget": 0,
                "complete_stack_bytes": null, "stack_bytes": null, "memprof_cpu_ns": 170_000_000,
                "memprof_peak_rss_kib": 75_000, "to_tracing_ns": 77_000_000, "perf_samples": null,
            })
        );
        // A slowdown for every configuration with runs paired with untraced ones.
        let slowdowns: Vec<(&str, &str)> = json["slowdowns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["storm"].as_str().unwrap(),
                    s["configuration"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            slowdowns,
            [
                ("faults", "untraced"),
                ("faults", "memprof"),
                ("faults", "perf record -e page-faults -c 1 -g"),
                ("syscalls", "untraced"),
                ("syscalls", "memprof"),
            ]
        );
    }
}
