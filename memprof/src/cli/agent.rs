//! `memprof agent`'s options.
use std::{net::SocketAddr, time::Duration};

use clap::Args;
use memprof::agent::{AgentOptions, PushTarget};

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

    /// The sites (call stacks) of a process its profiles show apart, the largest; the rest
    /// are folded into one `[other sites]` frame, and memprof_sites_folded counts them.
    #[arg(long, value_name = "N", default_value = "2000", value_parser = args::positive::<usize>)]
    max_sites_per_process: usize,

    /// Also push the profiles to Grafana Pyroscope's push API at this URL
    /// (http://HOST:PORT, its /push.v1.PusherService/Push), every --push-interval.
    #[arg(long, value_name = "URL", value_parser = push_url)]
    push_url: Option<String>,

    /// How often the profiles are pushed to --push-url, from 1s to 1h.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = push_interval)]
    push_interval: Duration,

    #[command(flatten)]
    probes: args::ProbeArgs,
}

/// Checked here so that a bad URL is a usage error, before anything loads.
fn push_url(s: &str) -> Result<String, String> {
    PushTarget::parse(s).map(|_| s.to_string())
}

fn push_interval(s: &str) -> Result<Duration, String> {
    memprof::units::parse_duration_within(s, Duration::from_secs(1), Duration::from_secs(3600))
}

impl AgentArgs {
    pub(crate) fn into_options(self) -> AgentOptions {
        AgentOptions {
            filter: self.filter.spec(),
            listen: self.listen,
            refresh: self.refresh,
            per_pid: self.per_pid,
            max_sites_per_process: self.max_sites_per_process,
            push_url: self.push_url,
            push_interval: self.push_interval,
            fault_stacks: self.probes.fault_stacks(),
            stack_cache_slots: self.probes.stack_cache_slots,
            ring_buffer_bytes: self.probes.ring_buffer_size,
        }
    }
}
