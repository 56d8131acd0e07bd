//! Command-line interface.
use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

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
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Trace this running process (all its threads, and processes it forks from now on).
    #[arg(short, long, value_name = "PID", conflicts_with = "command")]
    pub pid: Option<u32>,

    /// Stop tracing after this many seconds.
    #[arg(short, long, value_name = "SECS", value_parser = parse_seconds)]
    pub duration: Option<Duration>,

    /// Timeline sampling interval of reserved, committed and resident, in milliseconds.
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

    /// Also record the stack of the code that faulted each page in ("made resident by").
    #[arg(long)]
    pub fault_stacks: bool,

    /// With --fault-stacks, record the stack of one fault in N (figures scaled by N and
    /// labelled as estimates).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "fault_stacks",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub fault_sample: u32,

    /// Distinct stacks the kernel keeps de-duplicated (about 1 KiB of kernel memory each);
    /// a stack whose slot is taken is sent whole with its record instead.
    #[arg(long, value_name = "N", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub stack_map_entries: u32,

    /// Size of the kernel-to-memprof ring buffer in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,

    /// The command to launch and trace, after `--`.
    #[arg(last = true, value_name = "CMD", required_unless_present = "pid")]
    pub command: Vec<String>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
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
