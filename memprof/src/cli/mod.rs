//! The command line: clap's types, one file per subcommand, each turned into the library's
//! plain options (the library never sees clap).
mod agent;
mod args;
mod generate;
mod run;
mod top;

use std::{os::unix::process::ExitStatusExt as _, process::ExitStatus};

use clap::{Parser, Subcommand};
pub(crate) use generate::parse;

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
pub(crate) struct Cli {
    /// Say more on stderr: -v what memprof does, -vv the kernel side's diagnostics too
    /// (processes traced, exec, exit), -vvv the libraries' too. RUST_LOG, when set, takes
    /// precedence.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trace a running process (--pid) or launch a command and trace it from its first
    /// instruction; print a report when tracing ends.
    #[command(
        after_help = "Tracing ends on Ctrl-C, SIGTERM, SIGHUP, --duration, or when the traced process \
        (in launch mode: the command and all its descendants) has exited. While --pid or --all \
        traces, a status line on stderr, when it is a terminal, says every 2 seconds how it \
        goes (not with -q).\n\nExit status: \
        in launch mode the command's, after the report (128 + N when signal N killed it; 0 \
        when it still runs); memprof's own errors have their own codes (1 to 8, listed in the \
        README).\n\nDurations take \
        a unit (10, 2.5s, 500ms, 5m; a bare number is seconds), sizes a binary suffix (32M, \
        64KiB).\n\nExamples:\n  \
        sudo memprof run --pid 1234 --duration 10\n  \
        sudo memprof run --json out.json -- ./server --port 8080"
    )]
    Run(run::RunArgs),
    /// A live view of the host's processes, sorted by what grows fastest: reserved, resident
    /// or page faults per second.
    #[command(
        after_help = "Keys: r sort by reserved growth, m by resident growth, f by faults per \
        second; / filter by command, cgroup or pid (Enter keeps it, Esc clears it); arrows, \
        PgUp, PgDn scroll; space or p pauses; ? or h shows the help; q or Ctrl-C quits.\n\nWith \
        --batch, or when stdout is not a terminal, prints the table every refresh as plain text \
        instead; with --json, a line of JSON.\n\nExamples:\n  sudo memprof top\n  \
        sudo memprof top --cgroup /system.slice/nginx.service --sort resident\n  \
        sudo memprof top --batch --duration 10 > memory.log\n  \
        sudo memprof top --json -n 5 | jq '.rows[0].name'"
    )]
    Top(top::TopArgs),
    /// Trace the host (or the processes --comm, --cgroup and --uid choose) until stopped, and
    /// serve Prometheus metrics and pprof profiles of the live sites over HTTP.
    #[command(after_help = "Endpoints:\n  \
        /metrics                 Prometheus text exposition: memprof_reserved_bytes, \
        memprof_committed_bytes, memprof_resident_bytes{kind}, memprof_page_faults_total, \
        memprof_processes, memprof_lost_events_total, by comm and cgroup\n  \
        /debug/pprof/reserved    gzipped pprof of the live sites' reserved bytes\n  \
        /debug/pprof/resident    the same, resident bytes\n  \
        /debug/pprof/faults      page faults by the code that made them (--fault-stacks)\n\n\
        Profiles take pid=N, comm=NAME, cgroup=PATH, seconds=N (the growth over the next N \
        seconds) and debug=1 (folded stacks as text).\n\n\
        A process that exits is served once more, then forgotten, so memory stays bounded \
        however long the agent runs. Stops on Ctrl-C, SIGTERM or SIGHUP.\n\n\
        Examples:\n  sudo memprof agent\n  \
        sudo memprof agent --cgroup /system.slice --listen 127.0.0.1:9464\n  \
        go tool pprof http://127.0.0.1:6060/debug/pprof/resident")]
    Agent(agent::AgentArgs),
}

impl Cli {
    /// Warnings and errors by default; RUST_LOG overrides the level -v chose.
    pub(crate) fn init_logging(&self) {
        // memprof's own targets, the kernel side's among them (memprof::lifecycle, ...); the
        // libraries' debug output only at -vvv.
        let level = match self.verbose {
            0 => "warn",
            1 => "warn,memprof=info",
            2 => "warn,memprof=debug",
            _ => "debug,memprof=trace",
        };
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    }

    /// Runs the subcommand; returns memprof's exit code.
    pub(crate) fn run(self) -> anyhow::Result<u8> {
        match self.command {
            Command::Run(args) => {
                memprof::run::run(args.into_options()).map(|ended| ended.map_or(0, exit_code))
            }
            Command::Top(args) => memprof::top::run(args.into_options()).map(|()| 0),
            Command::Agent(args) => memprof::agent::run(args.into_options()).map(|()| 0),
        }
    }
}

/// The shell's convention for how a command ended: its exit status, or 128 + the signal
/// that killed it.
fn exit_code(status: ExitStatus) -> u8 {
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    // Both fit: an exit status is a byte, and signals stop at 64.
    code as u8
}
