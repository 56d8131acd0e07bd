//! `cargo xtask bench`: memprof's overhead on the project's own storms, against an untraced
//! run and against the tools people use for the same question.
//!
//! Every storm runs under every configuration `runs` times, interleaved: run i runs each
//! configuration once, in an order rotated by i (and reversed when i is odd), so that drifts of the machine (frequency,
//! host noise, page cache) spread over all configurations alike. The time compared is the
//! one the workload measures around the storm itself (CLOCK_MONOTONIC), so that start-up
//! and a tracer's attach time are not in it. The slowdown is the median over runs of
//! traced_i / untraced_i, each pair from the same run i.

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use std::{
    env,
    ffi::OsString,
    fs,
    io::{BufRead, BufReader, Read},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::{find_in_path, run, setup, show, workspace_root};

pub const USAGE: &str = "\
Usage: cargo xtask bench [--quick] [--runs N] [--scale F] [--storm NAME]... [--json PATH]

Runs setup, builds memprof (release), then each storm (faults, syscalls, mixed) untraced,
under memprof, under memprof --fault-stacks, and under the peers that are installed
(bpftrace, perf record, strace, strace -k), N times interleaved; prints a markdown table
per storm and memprof's budgets with PASS or OVER.

  --quick        Scale the storms by 0.25
  --runs N       Runs of each configuration (default 5)
  --scale F      Scale the storms' sizes and round counts by F (default 1, in (0, 4])
  --storm NAME   Only this storm (repeatable): faults, syscalls or mixed
  --json PATH    Also write every run's raw figures to PATH
";

/// How to read the tables.
const LEGEND: &str = "
time: the storm's own duration as the workload measures it, median over runs. slowdown: \
median over runs of traced_i / untraced_i, paired by run. events: events memprof received \
(page faults, RSS updates, memory syscalls), median per run (perf: samples). lost: worst \
run. memprof CPU: its own user + system time, median per run (share: CPU time / memprof's \
wall time, summed over runs). peak RSS: worst run. to tracing: from spawning memprof until \
it prints `tracing pid`, median (max).
";

/// bpftrace counting the workload's page faults by user stack.
const BPFTRACE_PROGRAM: &str =
    "tracepoint:exceptions:page_fault_user /pid == cpid/ { @[ustack] = count(); }";
/// strace -k is hundreds of times slower: it runs on the syscall storm at this scale or less.
const STRACE_STACKS_MAX_SCALE: f64 = 0.1;

// memprof's budgets.
const FAULTS_DEFAULT_MAX: f64 = 1.10;
const FAULTS_FAULT_STACKS_MAX: f64 = 1.35;
const SYSCALLS_DEFAULT_MAX: f64 = 1.25;
const CPU_MAX_CORES: f64 = 0.5;
const RSS_MAX_BYTES: u64 = 100_000_000;
const TO_TRACING_MAX: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Storm {
    Faults,
    Syscalls,
    Mixed,
}

impl Storm {
    const ALL: [Storm; 3] = [Storm::Faults, Storm::Syscalls, Storm::Mixed];

    fn name(self) -> &'static str {
        match self {
            Storm::Faults => "faults",
            Storm::Syscalls => "syscalls",
            Storm::Mixed => "mixed",
        }
    }

    fn describe(self, scale: f64) -> String {
        let touched = (1024.0 * scale).round();
        let rounds = |full: f64| group(((full * scale) as u64).max(1));
        match self {
            Storm::Faults => format!(
                "reserve 4 GiB, touch {touched} MiB page by page, 4 rounds (MADV_DONTNEED between)"
            ),
            Storm::Syscalls => format!(
                "{} rounds of mmap 64 KiB, touch one page, munmap",
                rounds(200_000.0)
            ),
            Storm::Mixed => format!(
                "one round of the fault storm ({touched} MiB), then {} rounds of the syscall storm",
                rounds(50_000.0)
            ),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    Untraced,
    Memprof,
    MemprofFaultStacks,
    Bpftrace,
    Perf,
    Strace,
    StraceStacks,
}

impl Config {
    const ALL: [Config; 7] = [
        Config::Untraced,
        Config::Memprof,
        Config::MemprofFaultStacks,
        Config::Bpftrace,
        Config::Perf,
        Config::Strace,
        Config::StraceStacks,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Memprof => "memprof",
            Config::MemprofFaultStacks => "memprof --fault-stacks",
            Config::Bpftrace => "bpftrace (faults by ustack)",
            Config::Perf => "perf record -e page-faults -c 1 -g",
            Config::Strace => "strace -f -e trace=mmap,munmap,brk",
            Config::StraceStacks => "strace -f -k -e trace=mmap,munmap,brk",
        }
    }

    /// The peer's program, which must be on PATH.
    fn peer(self) -> Option<&'static str> {
        match self {
            Config::Untraced | Config::Memprof | Config::MemprofFaultStacks => None,
            Config::Bpftrace => Some("bpftrace"),
            Config::Perf => Some("perf"),
            Config::Strace | Config::StraceStacks => Some("strace"),
        }
    }
}

struct Options {
    scale: f64,
    runs: usize,
    storms: Vec<Storm>,
    json: Option<PathBuf>,
    /// Internal: already set up and built, binaries in this target directory (the re-run
    /// through sudo).
    prebuilt: Option<PathBuf>,
}

fn parse(args: &[OsString]) -> Result<Options> {
    let mut options = Options {
        scale: 1.0,
        runs: 5,
        storms: Vec::new(),
        json: None,
        prebuilt: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let arg = arg.to_str().context("arguments must be UTF-8")?;
        let mut value = || {
            args.next()
                .and_then(|v| v.to_str())
                .with_context(|| format!("{arg} needs a value\n\n{USAGE}"))
        };
        match arg {
            "--quick" => options.scale = 0.25,
            "--runs" => {
                let v = value()?;
                options.runs = v.parse().with_context(|| format!("--runs {v}"))?;
                ensure!(options.runs > 0, "--runs must be at least 1");
            }
            "--scale" => {
                let v = value()?;
                options.scale = v.parse().with_context(|| format!("--scale {v}"))?;
                ensure!(
                    options.scale > 0.0 && options.scale <= 4.0,
                    "--scale {v}: not in (0, 4]"
                );
            }
            "--storm" => {
                let v = value()?;
                let storm = Storm::ALL
                    .into_iter()
                    .find(|s| s.name() == v)
                    .with_context(|| format!("--storm {v}: not faults, syscalls or mixed"))?;
                if !options.storms.contains(&storm) {
                    options.storms.push(storm);
                }
            }
            "--json" => options.json = Some(PathBuf::from(value()?)),
            "--prebuilt" => options.prebuilt = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown bench argument `{arg}`\n\n{USAGE}"),
        }
    }
    if options.storms.is_empty() {
        options.storms = Storm::ALL.to_vec();
    }
    Ok(options)
}

pub fn bench(args: &[OsString]) -> Result<()> {
    let options = parse(args)?;
    let target = match &options.prebuilt {
        Some(target) => target.clone(),
        None => {
            let setup = setup()?;
            let build = ["build", "--release", "--package", "memprof", "--bins"];
            run(setup.cargo().args(build))?;
            // The build ran in the workspace root, so a relative CARGO_TARGET_DIR is
            // relative to it.
            let target = env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
            let target = workspace_root().join(target);
            if !setup.root {
                // memprof runs as root, and the bench follows it with ptrace (for its own CPU
                // time and peak RSS): the whole bench runs as root.
                eprintln!("xtask: bench runs as root: re-running through sudo");
                let exe = env::current_exe().context("cannot locate xtask's executable")?;
                let mut sudo = Command::new("sudo");
                sudo.arg(exe)
                    .arg("bench")
                    .args(args)
                    .arg("--prebuilt")
                    .arg(&target);
                sudo.env_remove("CARGO_TARGET_DIR");
                return Err(sudo.exec()).with_context(|| format!("cannot run {}", show(&sudo)));
            }
            target
        }
    };
    Bench::new(options, &target)?.run()
}

/// One run of one configuration.
struct Run {
    storm: Storm,
    config: Config,
    index: usize,
    /// The storm's own duration, as the workload measured it.
    elapsed_ns: u64,
    /// From spawning the command to its exit.
    wall_ns: u64,
    memprof: Option<MemprofRun>,
    /// perf record's sample count, from its closing message.
    perf_samples: Option<u64>,
}

impl Run {
    /// A run with its times and nothing else.
    fn timed(storm: Storm, config: Config, index: usize, elapsed_ns: u64, wall_ns: u64) -> Self {
        Self {
            storm,
            config,
            index,
            elapsed_ns,
            wall_ns,
            memprof: None,
            perf_samples: None,
        }
    }
}

struct MemprofRun {
    /// Events memprof received for the workload: page faults, RSS updates, memory syscalls,
    /// forks and execs.
    events: u64,
    lost_events: u64,
    /// memprof's own user + system CPU time (not its child's), and its peak RSS, read when
    /// it exits; None when it could not be followed with ptrace.
    cpu_ns: Option<u64>,
    peak_rss_kib: Option<u64>,
    /// From spawning memprof until it printed `tracing pid`.
    to_tracing_ns: u64,
}

struct Bench {
    options: Options,
    memprof: PathBuf,
    workload: PathBuf,
    dir: PathBuf,
    configs: Vec<Config>,
    notes: Vec<String>,
    runs: Vec<Run>,
}

impl Bench {
    fn new(options: Options, target: &Path) -> Result<Self> {
        let memprof = target.join("release/memprof");
        let workload = target.join("release/memprof-workload");
        for binary in [&memprof, &workload] {
            ensure!(binary.is_file(), "{} is missing", binary.display());
        }
        let mut configs = Vec::new();
        let mut notes = Vec::new();
        for config in Config::ALL {
            match config.peer() {
                Some(program) if find_in_path(program).is_none() => {
                    let note = format!("skipped: {program} not installed");
                    if !notes.contains(&note) {
                        eprintln!("xtask: {note}");
                        notes.push(note);
                    }
                }
                _ => configs.push(config),
            }
        }
        if configs.contains(&Config::StraceStacks)
            && !(options.storms.contains(&Storm::Syscalls)
                && options.scale <= STRACE_STACKS_MAX_SCALE)
        {
            notes.push(format!(
                "skipped: strace -k (hundreds of times slower) runs only on the syscall storm \
                 at --scale {STRACE_STACKS_MAX_SCALE} or less"
            ));
        }
        let dir = env::temp_dir().join(format!("memprof-bench-{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            options,
            memprof,
            workload,
            dir,
            configs,
            notes,
            runs: Vec::new(),
        })
    }

    fn run(mut self) -> Result<()> {
        let result = self.run_all();
        fs::remove_dir_all(&self.dir).ok();
        result?;
        let mut out = String::new();
        out.push_str(&format!(
            "memprof overhead: {}, {} run(s) of each configuration, interleaved\n",
            machine_line(),
            self.options.runs
        ));
        for &storm in &self.options.storms {
            out.push('\n');
            out.push_str(&self.table(storm));
        }
        out.push_str(LEGEND);
        out.push('\n');
        out.push_str(&self.budgets());
        for note in &self.notes {
            out.push_str(&format!("- {note}\n"));
        }
        print!("{out}");
        if let Some(path) = &self.options.json {
            let json = serde_json::to_string_pretty(&self.raw_json())?;
            fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
            eprintln!("xtask: wrote {}", path.display());
        }
        Ok(())
    }

    fn run_all(&mut self) -> Result<()> {
        let started = Instant::now();
        for storm in self.options.storms.clone() {
            let mut configs: Vec<Config> = self
                .configs
                .iter()
                .copied()
                .filter(|&c| c != Config::StraceStacks || self.strace_stacks_runs(storm))
                .collect();
            // One untraced run first, not counted: it warms the page cache and the allocator.
            self.run_once(storm, Config::Untraced, 0)
                .with_context(|| format!("{} storm, warm-up run", storm.name()))?;
            for index in 0..self.options.runs {
                let n = configs.len();
                let mut order: Vec<Config> = (0..n).map(|j| configs[(j + index) % n]).collect();
                // Reversed every other run, so that a configuration does not always follow
                // the same one.
                if index % 2 == 1 {
                    order.reverse();
                }
                for config in order {
                    match self.run_once(storm, config, index) {
                        Ok(run) => {
                            eprintln!(
                                "xtask: bench {} {}/{}: {:<40} {:>9.3} s",
                                storm.name(),
                                index + 1,
                                self.options.runs,
                                config.name(),
                                run.elapsed_ns as f64 / 1e9
                            );
                            self.runs.push(run);
                        }
                        // A peer that fails is left out; memprof or the workload failing is
                        // what the bench is there to find.
                        Err(e) if config.peer().is_some() => {
                            let note = format!(
                                "dropped: {} on the {} storm failed: {e:#}",
                                config.name(),
                                storm.name()
                            );
                            eprintln!("xtask: {note}");
                            self.notes.push(note);
                            configs.retain(|&c| c != config);
                            self.runs
                                .retain(|r| !(r.storm == storm && r.config == config));
                        }
                        Err(e) => {
                            return Err(e.context(format!(
                                "{} storm, run {}, {}",
                                storm.name(),
                                index + 1,
                                config.name()
                            )));
                        }
                    }
                }
            }
        }
        eprintln!("xtask: bench took {:.0} s", started.elapsed().as_secs_f64());
        Ok(())
    }

    fn strace_stacks_runs(&self, storm: Storm) -> bool {
        storm == Storm::Syscalls && self.options.scale <= STRACE_STACKS_MAX_SCALE
    }

    fn workload_args(&self, storm: Storm) -> Vec<OsString> {
        vec![
            self.workload.clone().into(),
            "--storm".into(),
            storm.name().into(),
            "--scale".into(),
            self.options.scale.to_string().into(),
        ]
    }

    fn run_once(&self, storm: Storm, config: Config, index: usize) -> Result<Run> {
        let workload = self.workload_args(storm);
        let mut cmd;
        match config {
            Config::Untraced => {
                cmd = Command::new(&workload[0]);
                cmd.args(&workload[1..]);
            }
            Config::Memprof | Config::MemprofFaultStacks => {
                return self.run_memprof(storm, config, index, &workload);
            }
            Config::Bpftrace => {
                let words: Vec<_> = workload.iter().map(|w| w.to_string_lossy()).collect();
                cmd = Command::new("bpftrace");
                cmd.args(["-e", BPFTRACE_PROGRAM, "-c"])
                    .arg(words.join(" "));
            }
            Config::Perf => {
                let data = self.dir.join("perf.data");
                cmd = Command::new("perf");
                cmd.args(["record", "-e", "page-faults", "-c", "1", "-g", "-o"])
                    .arg(data)
                    .arg("--")
                    .args(&workload);
            }
            Config::Strace | Config::StraceStacks => {
                cmd = Command::new("strace");
                cmd.arg("-f");
                if config == Config::StraceStacks {
                    cmd.arg("-k");
                }
                cmd.args(["-e", "trace=mmap,munmap,brk", "-o", "/dev/null"])
                    .args(&workload);
            }
        }
        cmd.stdin(Stdio::null());
        let start = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", show(&cmd)))?;
        let wall_ns = start.elapsed().as_nanos() as u64;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let elapsed_ns = check_output(&cmd, out.status, &stdout, &stderr, storm)?;
        let perf_samples = (config == Config::Perf)
            .then(|| perf_samples(&stderr))
            .flatten();
        fs::remove_file(self.dir.join("perf.data")).ok();
        Ok(Run {
            perf_samples,
            ..Run::timed(storm, config, index, elapsed_ns, wall_ns)
        })
    }

    /// Runs memprof as a child followed with ptrace (PTRACE_SEIZE, which stops it only when
    /// it exits), to read its own CPU time and peak RSS then: the rusage that wait4 returns
    /// would include the workload, which memprof reaps.
    fn run_memprof(
        &self,
        storm: Storm,
        config: Config,
        index: usize,
        workload: &[OsString],
    ) -> Result<Run> {
        let json_path = self.dir.join("report.json");
        fs::remove_file(&json_path).ok();
        let mut cmd = Command::new(&self.memprof);
        cmd.arg("run").arg("--json").arg(&json_path);
        if config == Config::MemprofFaultStacks {
            cmd.arg("--fault-stacks");
        }
        cmd.arg("--").args(workload);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", show(&cmd)))?;
        let pid = child.id() as libc::pid_t;
        let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
        // SAFETY: PTRACE_SEIZE of our own child; the data argument carries the options.
        let seized = unsafe {
            libc::ptrace(
                libc::PTRACE_SEIZE,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                options as usize as *mut libc::c_void,
            )
        } == 0;
        let mut stdout = child.stdout.take().context("memprof's stdout")?;
        let stderr = child.stderr.take().context("memprof's stderr")?;
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).map(|_| text)
        });
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            let mut tracing = None;
            for line in BufReader::new(stderr).lines() {
                let line = line?;
                if tracing.is_none() && line.contains("tracing pid") {
                    tracing = Some(start.elapsed());
                }
                text.push_str(&line);
                text.push('\n');
            }
            Ok::<_, std::io::Error>((text, tracing))
        });
        let (status, own) = reap(pid, seized)?;
        let wall_ns = start.elapsed().as_nanos() as u64;
        let stdout = stdout.join().expect("stdout reader panicked")?;
        let (stderr, to_tracing) = stderr.join().expect("stderr reader panicked")?;
        let elapsed_ns = check_output(&cmd, status, &stdout, &stderr, storm)?;
        let to_tracing = to_tracing.context("memprof never printed `tracing pid`")?;
        let report = fs::read_to_string(&json_path)
            .with_context(|| format!("memprof wrote no {}", json_path.display()))?;
        let report: Value = serde_json::from_str(&report)
            .with_context(|| format!("{} is not JSON", json_path.display()))?;
        let lost_events = report["lost_events"]
            .as_u64()
            .context("memprof's report has no lost_events")?;
        let events = report["processes"]
            .as_array()
            .context("memprof's report has no processes")?
            .iter()
            .map(|p| events(&p["events"]))
            .sum();
        Ok(Run {
            memprof: Some(MemprofRun {
                events,
                lost_events,
                cpu_ns: own.map(|o| o.cpu_ns),
                peak_rss_kib: own.map(|o| o.peak_rss_kib),
                to_tracing_ns: to_tracing.as_nanos() as u64,
            }),
            ..Run::timed(storm, config, index, elapsed_ns, wall_ns)
        })
    }

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
        let untraced = self.of(storm, Config::Untraced);
        let ratios: Vec<f64> = self
            .of(storm, config)
            .iter()
            .filter_map(|r| {
                let base = untraced.iter().find(|u| u.index == r.index)?;
                Some(r.elapsed_ns as f64 / base.elapsed_ns as f64)
            })
            .collect();
        median(&ratios)
    }

    fn table(&self, storm: Storm) -> String {
        let mut out = format!(
            "### {} storm: {}\n\n\
             | configuration | median time | slowdown | events | lost | memprof CPU (share) | memprof peak RSS | to tracing |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            storm.name(),
            storm.describe(self.options.scale)
        );
        for &config in &self.configs {
            let runs = self.of(storm, config);
            if runs.is_empty() {
                continue;
            }
            let times: Vec<f64> = runs.iter().map(|r| r.elapsed_ns as f64 / 1e9).collect();
            let time = median(&times).map_or("–".into(), |t| format!("{t:.3} s"));
            let slowdown = self
                .slowdown(storm, config)
                .map_or("–".into(), |s| format!("{s:.2}x"));
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
                let counts: Vec<f64> = memprof.iter().map(|m| m.events as f64).collect();
                let cpu_secs: Vec<f64> = memprof
                    .iter()
                    .filter_map(|m| Some(m.cpu_ns? as f64 / 1e9))
                    .collect();
                let to: Vec<f64> = memprof
                    .iter()
                    .map(|m| m.to_tracing_ns as f64 / 1e9)
                    .collect();
                (
                    group(median(&counts).unwrap_or(0.0) as u64),
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
            "Budgets (slowdown: median over runs of traced/untraced, paired by run; lost: all \
             runs; CPU: memprof's CPU time / its wall time, summed over runs, worst \
             configuration; RSS and time to tracing: worst run){}:\n\n",
            if self.options.scale == 1.0 {
                String::new()
            } else {
                format!(" at --scale {}", self.options.scale)
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
        ];
        for (storm, config, max) in ratios {
            if !self.options.storms.contains(&storm) {
                continue;
            }
            let slowdown = self.slowdown(storm, config);
            line(
                format!("{} storm, {}", storm.name(), config.name()),
                slowdown.map_or("–".into(), |s| format!("{s:.2}x")),
                format!("≤ {max:.2}x"),
                slowdown.map(|s| s <= max),
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
            .options
            .storms
            .iter()
            .flat_map(|&s| {
                [Config::Memprof, Config::MemprofFaultStacks].map(|c| self.cpu_share(s, c))
            })
            .collect::<Option<Vec<f64>>>()
            .map(|shares| shares.into_iter().fold(0.0, f64::max));
        line(
            "memprof CPU".into(),
            cpu.map_or("unknown (ptrace refused)".into(), |c| {
                format!("{c:.2} cores")
            }),
            format!("≤ {CPU_MAX_CORES} core"),
            cpu.map(|c| c <= CPU_MAX_CORES),
        );
        let rss = memprof
            .iter()
            .map(|m| m.peak_rss_kib)
            .collect::<Option<Vec<u64>>>()
            .and_then(|k| k.into_iter().max());
        line(
            "memprof peak RSS".into(),
            rss.map_or("unknown (ptrace refused)".into(), |k| {
                format!("{:.1} MB", (k * 1024) as f64 / 1e6)
            }),
            format!("≤ {} MB", RSS_MAX_BYTES / 1_000_000),
            rss.map(|k| k * 1024 <= RSS_MAX_BYTES),
        );
        let tracing = memprof.iter().map(|m| m.to_tracing_ns).max();
        line(
            "time to tracing".into(),
            tracing.map_or("–".into(), |ns| format!("{:.3} s", ns as f64 / 1e9)),
            format!("≤ {:.1} s", TO_TRACING_MAX.as_secs_f64()),
            tracing.map(|ns| ns <= TO_TRACING_MAX.as_nanos() as u64),
        );
        out
    }

    fn raw_json(&self) -> Value {
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
                    "events": m.map(|m| m.events),
                    "lost_events": m.map(|m| m.lost_events),
                    "memprof_cpu_ns": m.and_then(|m| m.cpu_ns),
                    "memprof_peak_rss_kib": m.and_then(|m| m.peak_rss_kib),
                    "to_tracing_ns": m.map(|m| m.to_tracing_ns),
                    "perf_samples": r.perf_samples,
                })
            })
            .collect();
        let slowdowns: Vec<Value> = self
            .options
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
            "unix_time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            "machine": machine_line(),
            "scale": self.options.scale,
            "runs_per_configuration": self.options.runs,
            "slowdowns": slowdowns,
            "notes": self.notes,
            "runs": runs,
        })
    }
}

/// The storm's duration from the workload's last line; an error with the command's output
/// when it failed.
fn check_output(
    cmd: &Command,
    status: ExitStatus,
    stdout: &str,
    stderr: &str,
    storm: Storm,
) -> Result<u64> {
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    };
    ensure!(
        status.success(),
        "{} failed ({status}):\n{}",
        show(cmd),
        tail(stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with(r#"{"storm":"#))
        .with_context(|| format!("{} printed no storm line:\n{}", show(cmd), tail(stdout)))?;
    let line: Value = serde_json::from_str(line).with_context(|| format!("storm line {line}"))?;
    ensure!(
        line["storm"] == storm.name(),
        "the workload ran the wrong storm: {line}"
    );
    line["elapsed_ns"]
        .as_u64()
        .with_context(|| format!("no elapsed_ns in {line}"))
}

/// Events memprof received for one process.
fn events(counts: &Value) -> u64 {
    [
        "page_faults",
        "rss_updates",
        "mmap",
        "munmap",
        "mremap",
        "brk",
        "mprotect",
        "madvise",
        "forks",
        "execs",
    ]
    .iter()
    .filter_map(|k| counts[k].as_u64())
    .sum()
}

/// `(N samples)` in perf record's closing message.
fn perf_samples(stderr: &str) -> Option<u64> {
    let (before, _) = stderr.rsplit_once(" samples)")?;
    let (_, n) = before.rsplit_once('(')?;
    n.trim().parse().ok()
}

/// memprof's own figures, read when it stops at its exit.
#[derive(Clone, Copy)]
struct Own {
    cpu_ns: u64,
    peak_rss_kib: u64,
}

/// Waits for memprof to exit. When it is followed (seized), continues it past every stop and
/// reads its own figures at its exit stop, while its address space is still there.
fn reap(pid: libc::pid_t, seized: bool) -> Result<(ExitStatus, Option<Own>)> {
    let mut own = None;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child, with a valid status pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if ret < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waitpid");
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok((ExitStatus::from_raw(status), own));
        }
        if !(seized && libc::WIFSTOPPED(status)) {
            continue;
        }
        let event = (status >> 16) & 0xff;
        let signal = if event == libc::PTRACE_EVENT_EXIT {
            own = read_own(pid);
            0
        } else if event == libc::PTRACE_EVENT_STOP {
            0
        } else {
            // A signal on its way to memprof: deliver it.
            libc::WSTOPSIG(status)
        };
        // SAFETY: restarting our stopped tracee, with the signal it was to receive.
        unsafe {
            libc::ptrace(
                libc::PTRACE_CONT,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                signal as usize as *mut libc::c_void,
            )
        };
    }
}

/// utime + stime (memprof's own, all threads, not its reaped children) and VmHWM.
fn read_own(pid: libc::pid_t) -> Option<Own> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis start at field 3 (state).
    let (_, fields) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(Own {
        cpu_ns: ticks * 1_000_000_000 / hz,
        peak_rss_kib: hwm,
    })
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
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
fn machine_line() -> String {
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
    format!("{cpus} cores ({model}), Linux {kernel}")
}
