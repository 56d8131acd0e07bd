//! `memprof agent`'s options.
use std::{net::SocketAddr, time::Duration};

use clap::Args;
use memprof::agent::AgentOptions;

use super::args::{self, FilterArgs};

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    filter: FilterArgs,

    /// Address and port the HTTP server listens on. Profiles name the code and files of the
    /// traced processes: listen beyond loopback only where that may be read.
    #[arg(
        short,
        long,
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:6060"
    )]
    listen: SocketAddr,

    /// How often the figures served are taken, from 100ms to 1h.
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = args::refresh)]
    refresh: Duration,

    /// Also export per-process series (memprof_process_*_bytes, labelled by pid) for the N
    /// processes that reserved most; memprof_processes_not_listed counts the rest.
    #[arg(long, value_name = "N", value_parser = args::positive::<usize>)]
    per_pid: Option<usize>,

    /// Also record the stack of the code that faulted each page in, served at
    /// /debug/pprof/faults. Costs a stack walk and an event per fault.
    #[arg(long)]
    fault_stacks: bool,

    /// With --fault-stacks, record the stack of one fault in N (figures scaled by N).
    #[arg(long, value_name = "N", default_value = "1", requires = "fault_stacks",
          value_parser = args::positive::<u32>)]
    fault_sample: u32,

    /// Slots of the kernel's cache of the stacks it sent (a power of two).
    #[arg(long, value_name = "N", default_value = "65536", value_parser = args::stack_cache_slots)]
    stack_cache_slots: u32,

    /// Size of the kernel-to-memprof ring buffer (a power of two from 4K to 1G).
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = args::ring_buffer_size)]
    ring_buffer_size: u32,
}

impl AgentArgs {
    pub(crate) fn into_options(self) -> AgentOptions {
        AgentOptions {
            filter: self.filter.spec(),
            listen: self.listen,
            refresh: self.refresh,
            per_pid: self.per_pid,
            fault_stacks: self.fault_stacks.then_some(self.fault_sample),
            stack_cache_slots: self.stack_cache_slots,
            ring_buffer_bytes: self.ring_buffer_size,
        }
    }
}
