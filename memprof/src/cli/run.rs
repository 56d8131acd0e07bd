//! `memprof run`'s options.
use std::{path::PathBuf, time::Duration};

use clap::{Args, CommandFactory as _};
use memprof::run::{JsonTo, RunOptions, Target};

use super::{
    Cli,
    args::{self, FilterArgs},
};

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Trace this running process (all its threads, and processes it forks from now on).
    #[arg(short, long, value_name = "PID", conflicts_with = "command",
          value_parser = args::positive::<u32>)]
    pid: Option<u32>,

    /// Trace every process on the host (but memprof), including those that start during the
    /// run; --comm, --cgroup and --uid narrow it.
    #[arg(short, long, conflicts_with_all = ["pid", "command"])]
    all: bool,

    #[command(flatten)]
    filter: FilterArgs,

    /// Stop tracing after this long (at most 8760h, a year).
    #[arg(short, long, value_name = "DURATION", value_parser = args::duration)]
    duration: Option<Duration>,

    /// How often the timeline samples reserved, committed and resident, from 1ms to 1h
    /// (events are timed to the kernel's clock tick, 1 to 10 ms).
    #[arg(short, long, value_name = "DURATION", default_value = "100ms",
          value_parser = args::interval)]
    interval: Duration,

    /// Also write the report as JSON to this file; `-` (or any path of the file stdout
    /// writes to, as /dev/stdout) writes it to stdout, alone (the text report then goes to
    /// stderr; the command's own output still goes to stdout).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Regions listed per process in the terminal report; the rest are folded into one line.
    #[arg(long, value_name = "N", default_value_t = 15)]
    regions: usize,

    /// Processes that exited while traced kept in the report, those that grew most; the
    /// others are counted (processes_left_out). It bounds memprof's memory and its report's
    /// size when tracing a host's churn (--all); `all` keeps every one.
    #[arg(long, value_name = "N|all", default_value = "1000", value_parser = args::keep_exited)]
    keep_exited: args::KeepExited,

    /// Write flame graphs and profiles in this directory (made if missing): reserved.folded,
    /// resident.folded, reserved.svg, resident.svg (faults.folded and faults.svg with
    /// --fault-stacks), breakdown.folded and breakdown.svg (reserved bytes by category),
    /// timeline.svg, profile.pb.gz (pprof), report.json, and lost.txt when the kernel lost
    /// events. Files of an earlier run that this one does not write are
    /// removed.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,

    /// No report on stdout, and no notes or status line on stderr: only the files and
    /// errors.
    #[arg(short, long)]
    quiet: bool,

    #[command(flatten)]
    probes: args::ProbeArgs,

    /// For `cargo xtask bench`'s floor: attach every program, but have those on syscalls,
    /// faults, counter changes, the mmap lock and context switches return at once. Records
    /// no memory change: only processes starting, exec'ing and exiting.
    #[arg(long, hide = true)]
    empty_programs: bool,

    /// The command to launch and trace, after `--`.
    #[arg(last = true, value_name = "CMD", required_unless_present_any = ["pid", "all"])]
    command: Vec<String>,
}

impl RunArgs {
    pub(crate) fn into_options(self) -> RunOptions {
        let filter = self.filter.spec();
        let target = match (self.pid, self.all) {
            (Some(pid), _) => Target::Pid(pid),
            (None, true) => Target::All(filter),
            (None, false) if !filter.is_empty() => Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--comm, --cgroup and --uid choose processes for --all: add --all",
                )
                .exit(),
            (None, false) => Target::Command(self.command),
        };
        RunOptions {
            target,
            duration: self.duration,
            interval: self.interval,
            json: self.json.map(|path| match path.to_str() {
                Some("-") => JsonTo::Stdout,
                _ => JsonTo::File(path),
            }),
            regions: self.regions,
            keep_exited: self.keep_exited.0,
            output: self.output,
            fault_stacks: self.probes.fault_stacks(),
            stack_cache_slots: self.probes.stack_cache_slots,
            ring_buffer_bytes: self.probes.ring_buffer_size,
            quiet: self.quiet,
            empty_programs: self.empty_programs,
        }
    }
}
