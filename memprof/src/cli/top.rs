//! `memprof top`'s options.
use std::time::Duration;

use clap::{Args, ValueEnum};
use memprof::top::{SortKey, TopOptions};

use super::args::{self, FilterArgs};

/// What the view is sorted by, fastest first.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Sort {
    /// By reserved (address space) growth
    Reserved,
    /// By resident (RSS) growth
    Resident,
    /// By page fault rate
    Faults,
}

impl From<Sort> for SortKey {
    fn from(sort: Sort) -> Self {
        match sort {
            Sort::Reserved => Self::Reserved,
            Sort::Resident => Self::Resident,
            Sort::Faults => Self::Faults,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    #[command(flatten)]
    filter: FilterArgs,

    /// What the view is sorted by, highest first: reserved or resident growth per second, or
    /// page faults per second.
    #[arg(short, long, value_enum, default_value_t = Sort::Reserved)]
    sort: Sort,

    /// Delay between refreshes, from 100ms to 1h (as top's -d).
    #[arg(short, long, visible_alias = "refresh", value_name = "DURATION", default_value = "1s",
          value_parser = args::refresh)]
    delay: Duration,

    /// Print plain text every refresh instead of the interactive view (the default when
    /// stdout is not a terminal).
    #[arg(short, long)]
    batch: bool,

    /// Print a line of JSON every refresh (implies --batch).
    #[arg(long)]
    json: bool,

    /// Stop after N refreshes (as top's -n).
    #[arg(short = 'n', long, value_name = "N", value_parser = args::positive::<u64>)]
    iterations: Option<u64>,

    /// Processes printed per refresh with --batch or --json.
    #[arg(long, value_name = "N", default_value = "20", value_parser = args::positive::<usize>)]
    limit: usize,

    /// Stop after this long (at most 8760h, a year); the last refresh is printed then.
    #[arg(long, value_name = "DURATION", value_parser = args::duration)]
    duration: Option<Duration>,

    /// Size of the kernel-to-memprof ring buffer (a power of two from 4K to 1G).
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = args::ring_buffer_size)]
    ring_buffer_size: u32,
}

impl TopArgs {
    pub(crate) fn into_options(self) -> TopOptions {
        TopOptions {
            filter: self.filter.spec(),
            sort: self.sort.into(),
            refresh: self.delay,
            batch: self.batch,
            json: self.json,
            limit: self.limit,
            iterations: self.iterations,
            duration: self.duration,
            ring_buffer_bytes: self.ring_buffer_size,
        }
    }
}
