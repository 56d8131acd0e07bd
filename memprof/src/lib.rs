//! memprof: where a process's reserved and resident memory came from, traced with eBPF.
//!
//! The pipeline, in the order of the modules below, each using only those above it: the
//! probes (memprof-ebpf, loaded by [`probes`]) send events through a ring buffer; the
//! [`session`] reads them and hands them to the [`tracker`], which keeps every traced
//! [`process`] (its [`address_space`] and [`sites`]); once tracing ends the [`report`] and
//! the [`export`]s are built from the tracker. [`run`], [`top`] and [`agent`] are what the
//! commands run; the command line itself is the binary's (main.rs and cli/), and the library
//! never sees it.

/// A line on stderr for the person running memprof, as `eprintln!`, but quiet when nobody
/// reads stderr any more (`memprof … 2>&1 | head -1`): a closed pipe ends no run.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stderr = std::io::stderr().lock();
        // Over the status line, which is redrawn below it at its next refresh.
        if $crate::STATUS_LINE_SHOWN.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = write!(stderr, "\r\x1b[K");
        }
        let _ = writeln!(stderr, $($arg)*);
    }};
}
pub(crate) use note;

/// `run`'s status line is on the terminal's last row: a note first clears it.
pub(crate) static STATUS_LINE_SHOWN: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

// The machine.
/// Sizes and durations, parsed from options and printed in reports.
pub mod units;
/// Every read of /proc, and the interface the tracker reaches it through.
pub mod procfs;
/// The kernel's BTF: where fields lie in the structures the programs read.
pub mod btf;
/// Failures a user can act on, each with its exit code.
pub mod error;

// The kernel side, seen from userspace.
/// `--all`'s choice of processes, for the kernel and for /proc.
pub mod filter;
/// Checks the machine, loads and attaches the eBPF programs, owns the in-kernel filter.
pub mod probes;
/// Ring-buffer bytes turned into typed events, and the clock they carry.
pub mod events;

// The model.
/// One process's regions, kept in step with its syscalls and faults.
pub mod address_space;
/// Raw stacks unwound with the binaries' unwind tables (framehop).
pub mod unwind;
/// The call stacks that reserve memory and fault it in.
pub mod sites;
/// Changes to an address space put back in the kernel's order.
pub mod order;
/// One traced process: its address space and figures.
pub mod process;
/// Events in, processes out: the testable core, without kernel or runtime.
pub mod tracker;
/// The loop that drains the ring buffer into the tracker until tracing ends.
pub mod session;

// What comes out.
/// Addresses to function names, files and lines.
pub mod symbolize;
/// The report: its JSON contract, built from the tracker, rendered for the terminal.
pub mod report;
/// Folded stacks, flame graphs, pprof and the timeline, and the `--output` directory.
pub mod export;

// What the commands run.
/// Launch mode: a command traced from its first instruction.
pub mod launch;
/// `memprof run`.
pub mod run;
/// `memprof top`.
pub mod top;
/// `memprof agent`: the host traced for days, served to Prometheus and pprof over HTTP.
pub mod agent;

#[cfg(test)]
mod testing;

// The binary's own dependencies (main.rs and cli/): a package's dependencies are shared by
// its targets, and the library itself never uses these.
use {clap as _, clap_complete as _, clap_mangen as _, env_logger as _};
