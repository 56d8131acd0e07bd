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

    /// Also write the report as JSON to this file; `-` writes it to stdout, alone (the
    /// text report then goes to stderr; the command's own output still goes to stdout).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Regions listed per process in the terminal report; the rest are folded into one line.
    #[arg(long, value_name = "N", default_value_t = 15)]
    regions: usize,

    /// Write flame graphs and profiles in this directory (made if missing): reserved.folded,
    /// resident.folded, reserved.svg, resident.svg (faults.folded and faults.svg with
    /// --fault-stacks), timeline.svg, profile.pb.gz (pprof), report.json, and lost.txt when
    /// the kernel lost events. Files of an earlier run that this one does not write are
    /// removed.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,

    /// No report on stdout and no notes on stderr: only the files and errors.
    #[arg(short, long)]
    quiet: bool,

    /// Also record the kernel stack of each reservation.
    #[arg(long)]
    kernel_stacks: bool,

    /// Also record the stack of the code that faulted each page in ("made resident by"). Costs
    /// a stack walk and an event per fault; without it a thread's faults on consecutive pages
    /// cross to memprof as one event.
    #[arg(long)]
    fault_stacks: bool,

    /// With --fault-stacks, record the stack of one fault in N (figures scaled by N and
    /// labelled as estimates).
    #[arg(long, value_name = "N", default_value = "1", requires = "fault_stacks",
          value_parser = args::positive::<u32>)]
    fault_sample: u32,

    /// Slots of the kernel's cache of the stacks it sent, so that each crosses to memprof
    /// once (a power of two, 8 bytes of kernel memory each); a stack whose slot another one
    /// took is sent again.
    #[arg(long, value_name = "N", default_value = "65536", value_parser = args::stack_cache_slots)]
    stack_cache_slots: u32,

    /// Size of the kernel-to-memprof ring buffer (a power of two from 4K to 1G).
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = args::ring_buffer_size)]
    ring_buffer_size: u32,

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
            output: self.output,
            kernel_stacks: self.kernel_stacks,
            fault_stacks: self.fault_stacks.then_some(self.fault_sample),
            stack_cache_slots: self.stack_cache_slots,
            ring_buffer_bytes: self.ring_buffer_size,
            quiet: self.quiet,
        }
    }
}
