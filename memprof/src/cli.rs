//! Command-line interface.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::top::view::SortKey;

#[derive(Debug, Parser)]
#[command(
    name = "memprof",
    version,
    about = "Where a process's reserved (VSZ) and resident (RSS) memory came from, traced \
             from the kernel with eBPF",
    long_about = "memprof follows a process's mmap, munmap, mremap, brk, mprotect and madvise \
        calls, its page faults and the kernel's RSS counters, keeps a live model of its \
        regions, and reports how much address space it reserved, how much of that is \
        committed (not PROT_NONE), and how much became resident, checked against \
        /proc/PID/status at the end.\n\nNeeds root (or CAP_BPF and CAP_PERFMON): run it with sudo."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace a running process (--pid) or launch a command and trace it from its first
    /// instruction; print a report when tracing ends.
    #[command(
        after_help = "Tracing ends on Ctrl-C, SIGTERM, --duration, or when the traced process \
        (in launch mode: the command and all its descendants) has exited.\n\nExamples:\n  \
        sudo memprof run --pid 1234 --duration 10\n  \
        sudo memprof run --json out.json -- ./server --port 8080"
    )]
    Run(RunArgs),
    /// A live view of the host's processes, sorted by what grows fastest: reserved, resident
    /// or page faults per second.
    #[command(
        after_help = "Keys: r sort by reserved growth, m by resident growth, f by faults per \
        second; / filter by command, cgroup or pid (Enter keeps it, Esc clears it); q or Ctrl-C \
        quits.\n\nWith --batch, or when stdout is not a terminal, prints the table every refresh \
        as plain text instead.\n\nExamples:\n  sudo memprof top\n  \
        sudo memprof top --cgroup /system.slice/nginx.service --sort resident\n  \
        sudo memprof top --batch --duration 10 > memory.log"
    )]
    Top(TopArgs),
}

/// Which processes `--all` and `top` trace. Checked in the kernel when a process is created
/// or calls exec, so processes that start later are caught from their first instruction.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only processes with this command name (as `ps -o comm` shows it: the kernel keeps 15
    /// characters), and the processes they start.
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Only processes in this cgroup v2 or below it: a path under /sys/fs/cgroup, e.g.
    /// /system.slice/nginx.service for a systemd service or a container's scope.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,

    /// Only processes whose real user id is this one.
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
}

impl FilterArgs {
    pub fn is_empty(&self) -> bool {
        self.comm.is_none() && self.cgroup.is_none() && self.uid.is_none()
    }
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    /// What the view is sorted by, highest first: reserved or resident growth per second, or
    /// page faults per second.
    #[arg(short, long, value_enum, default_value_t = SortKey::Reserved)]
    pub sort: SortKey,

    /// Seconds between refreshes.
    #[arg(short, long, value_name = "SECS", default_value = "1", value_parser = parse_seconds)]
    pub refresh: Duration,

    /// Print plain text every refresh instead of the interactive view (the default when
    /// stdout is not a terminal).
    #[arg(short, long)]
    pub batch: bool,

    /// Processes printed per refresh with --batch.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 20)]
    pub limit: usize,

    /// Stop after this many seconds.
    #[arg(short, long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Size of the kernel-to-memprof ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Trace this running process (all its threads, and processes it forks from now on).
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Trace every process on the host (but memprof), including those that start during the
    /// run; --comm, --cgroup and --uid narrow it.
    #[arg(short, long, conflicts_with_all = ["pid", "command"])]
    pub all: bool,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Stop tracing after this many seconds.
    #[arg(short, long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Timeline sampling interval of reserved, committed and resident, in milliseconds (events
    /// are timed to the kernel's clock tick, 1 to 10 ms).
    #[arg(short, long, value_name = "MS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,

    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Regions listed per process in the terminal report; the rest are folded into one line.
    #[arg(long, value_name = "N", default_value_t = 15)]
    pub regions: usize,

    /// Write flame graphs and profiles here: reserved.folded, resident.folded (faults.folded
    /// with --fault-stacks), reserved.svg, resident.svg, timeline.svg, profile.pb.gz (pprof)
    /// and report.json.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,

    /// Also record the kernel stack of each reservation.
    #[arg(long)]
    pub kernel_stacks: bool,

    /// Also record the stack of the code that faulted each page in ("made resident by"). Costs
    /// a stack walk and a record per fault; without it a thread's faults on consecutive pages
    /// cross to memprof as one record.
    #[arg(long)]
    pub fault_stacks: bool,

    /// With --fault-stacks, record the stack of one fault in N (figures scaled by N and
    /// labelled as estimates).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "fault_stacks",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fault_sample: u32,

    /// Slots of the kernel's cache of stacks it sent, so that each crosses to memprof once
    /// (a power of two, 8 bytes of kernel memory each); a stack whose slot another one took is
    /// sent again.
    #[arg(long, value_name = "N", default_value_t = 65536, value_parser = parse_stack_slots)]
    pub stack_map_entries: u32,

    /// Size of the kernel-to-memprof ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,

    /// The command to launch and trace, after `--`.
    #[arg(last = true, value_name = "CMD", required_unless_present_any = ["pid", "all"])]
    pub command: Vec<String>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

fn parse_stack_slots(s: &str) -> Result<u32, String> {
    const MAX: u32 = 1 << 24;
    let slots: u32 = s.parse().map_err(|_| format!("`{s}` is not a count"))?;
    if !slots.is_power_of_two() || slots > MAX {
        return Err(format!("{slots} is not a power of two of at most {MAX}"));
    }
    Ok(slots)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let bytes: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a byte count"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!("{bytes} is not a power of two of at least 4096"));
    }
    Ok(bytes)
}
