//! `memprof run`: check, load, attach or launch, trace, report. The command line hands it a
//! [`RunOptions`] in plain types.
use std::{
    fs::{self, File},
    io::{self, IsTerminal as _, Write as _},
    os::{
        fd::AsFd as _,
        unix::{fs::MetadataExt as _, process::ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::atomic::Ordering,
    time::Duration,
};

use anyhow::Context as _;
use memprof_common::Filter;

use crate::{
    error::Error,
    events::monotonic_ns,
    export,
    filter::{FilterSpec, ProcessFilter},
    launch::{self, Launched},
    probes::{self, LoadOptions, Probes},
    procfs::{self, Proc},
    report::Report,
    session::{self, Flow, Session, Watch},
    tracker::{Origin, Tracker},
    units,
};

/// Processes shown in detail in the terminal report of `--all` (the JSON has every one).
const DETAILED_PROCESSES: usize = 10;

/// What to trace.
#[derive(Clone, Debug)]
pub enum Target {
    /// A running process (any of its thread ids names it), its threads, and the processes it
    /// forks from now on.
    Pid(u32),
    /// A command to launch, program first, traced from its first instruction.
    Command(Vec<String>),
    /// Every process on the host but memprof that passes the filter, including those that
    /// start during the run.
    All(FilterSpec),
}

/// Where the JSON report goes.
#[derive(Clone, Debug)]
pub enum JsonTo {
    /// Stdout, alone: the text report goes to stderr instead. A file that is stdout's
    /// (`/dev/stdout`) is taken as this.
    Stdout,
    File(PathBuf),
}

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub target: Target,
    /// Stop tracing after this long.
    pub duration: Option<Duration>,
    /// How often the timeline samples reserved, committed and resident.
    pub interval: Duration,
    /// Also write the report as JSON here.
    pub json: Option<JsonTo>,
    /// Regions listed per process in the terminal report.
    pub regions: usize,
    /// At most this many processes that exited while traced are kept, those that grew
    /// most; None: every one.
    pub keep_exited: Option<usize>,
    /// Write flame graphs, folded stacks, pprof, the timeline and the JSON here.
    pub output: Option<PathBuf>,
    /// Record the stack of one fault in this many; None: no fault stacks.
    pub fault_stacks: Option<u32>,
    /// Slots of the kernel's cache of stacks it sent (a power of two).
    pub stack_cache_slots: u32,
    /// Size of the kernel-to-memprof ring buffer (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
    /// No report on stdout and no notes on stderr: only the files, and errors.
    pub quiet: bool,
    /// The bench's floor: the programs attached but returning at once; nothing recorded.
    pub empty_programs: bool,
}

/// Why /proc did not show process `pid`: it is gone, or /proc refused.
fn unreadable(pid: u32, why: std::io::Error) -> Error {
    match why.kind() {
        std::io::ErrorKind::PermissionDenied => Error::ProcessUnreadable { pid, why },
        _ => Error::NoSuchProcess(pid),
    }
}

/// The process a pid belongs to: a thread id is taken as its whole process.
fn process_of(pid: u32) -> Result<u32, Error> {
    let tgid = procfs::read_tgid(pid)
        .ok()
        .flatten()
        .ok_or(Error::NoSuchProcess(pid))?;
    // Before anything is loaded: a process whose maps /proc will not show cannot be traced.
    procfs::read_maps(tgid).map_err(|why| unreadable(tgid, why))?;
    let what = if tgid == std::process::id() {
        Some("memprof itself")
    } else {
        procfs::untraceable(tgid)
    };
    match what {
        Some(what) => Err(Error::CannotTrace { pid, what }),
        None => Ok(tgid),
    }
}

/// Whether `path` is the file stdout writes to already (`/dev/stdout`, `/dev/fd/1`, the file
/// stdout was redirected to): writing the JSON there as a file would mix it with the text
/// report, so it is taken as `--json -`.
fn is_stdout(path: &Path) -> bool {
    let Ok(named) = fs::metadata(path) else {
        return false;
    };
    // fstat of fd 1, through a duplicate: std has no metadata for a borrowed descriptor.
    let Ok(stdout) = io::stdout().as_fd().try_clone_to_owned() else {
        return false;
    };
    File::from(stdout)
        .metadata()
        .is_ok_and(|out| (out.dev(), out.ino()) == (named.dev(), named.ino()))
}

/// Traces and reports; returns how the launched command ended when it did while traced,
/// for memprof to exit with its status as strace and time do.
pub fn run(mut options: RunOptions) -> anyhow::Result<Option<ExitStatus>> {
    if let Some(JsonTo::File(path)) = &options.json
        && is_stdout(path)
    {
        options.json = Some(JsonTo::Stdout);
    }
    // Everything that can be refused without loading anything is checked first.
    let (attach_to, filter, program) = match &options.target {
        Target::Pid(pid) => (Some(process_of(*pid)?), None, None),
        Target::All(spec) => (None, Some(ProcessFilter::new(spec)?), None),
        Target::Command(command) => (None, None, Some(launch::resolve(&command[0])?)),
    };
    let layout = probes::check_machine()?;
    // Outputs that could not be written at the end are refused now, before the command runs.
    if let Some(JsonTo::File(path)) = &options.json {
        export::check_json_path(path)?;
    }
    if let Some(dir) = &options.output {
        export::prepare_output_dir(dir)?;
    }
    let quiet = options.quiet;
    let note = |message: &str| {
        if !quiet {
            crate::note!("{message}");
        }
    };

    // Fork before anything else starts a thread; the child waits until it is traced.
    let launched = match (&options.target, program) {
        (Target::Command(command), Some(path)) => Some(Launched::fork(&path, command)?),
        _ => None,
    };
    // One fault stack in this many is recorded; 0: none.
    let fault_sample = options.fault_stacks.unwrap_or(0);
    let (mut probes, events) = Probes::load(&LoadOptions {
        ring_buffer_bytes: options.ring_buffer_bytes,
        stack_cache_slots: options.stack_cache_slots,
        fault_stack_sample: fault_sample,
        filter: filter
            .as_ref()
            .map_or_else(Filter::default, |f| f.kernel(std::process::id())),
        user_stacks: true,
        layout,
        empty_programs: options.empty_programs,
    })?;
    if options.empty_programs {
        note(
            "memprof: --empty-programs: the programs return at once; no memory change is recorded",
        );
    }
    let (runtime, stop) = session::runtime()?;
    let interval = options.interval;
    let tracker = |root, origin| {
        let mut tracker = Tracker::new(Proc, root, origin, interval, monotonic_ns());
        tracker.keep_exited = options.keep_exited;
        tracker
    };
    let mut session = match (attach_to, launched) {
        _ if let Some(filter) = &filter => {
            let mut session = Session::new(probes, tracker(0, Origin::All));
            let running = session.trace_running(filter)?;
            note(&format!(
                "memprof: tracing {} ({running} running now); Ctrl-C to stop and report",
                filter.describe()
            ));
            session
        }
        (Some(pid), _) => {
            probes.trace(pid)?;
            let mut tracker = tracker(pid, Origin::Attached);
            tracker
                .seed_from_proc(pid, monotonic_ns())
                .map_err(|why| unreadable(pid, why))?;
            Session::new(probes, tracker)
        }
        (None, Some(child)) => {
            let pid = child.pid;
            probes.trace(pid)?;
            let snapshot = child.start()?;
            Session::new(probes, tracker(pid, Origin::Launched(Some(snapshot))))
        }
        (None, None) => unreachable!("a target is a pid, a command or --all"),
    };
    if filter.is_none() {
        note(&format!(
            "memprof: tracing pid {}; Ctrl-C to stop and report",
            session.tracker.root
        ));
    }

    // A sign of life on the terminal where nothing else writes: the command launched
    // writes there itself, and a line redrawn in place would garble its output.
    let mut status = (!quiet && !launched_command(&options.target) && io::stderr().is_terminal())
        .then_some(StatusLine);
    let watch = status.as_mut().map(|s| s as &mut dyn Watch);
    runtime.block_on(session.run(events, stop, options.duration, watch))?;
    // Cleared before anything else is said.
    drop(status);
    let ended = launched_command(&options.target)
        .then(|| reap(&session.tracker, note))
        .flatten();

    let report = Report::new(&session.tracker, fault_sample);
    let detailed = if filter.is_some() {
        DETAILED_PROCESSES
    } else {
        usize::MAX
    };
    let text = report.render(options.regions, detailed);
    let json = serde_json::to_string_pretty(&report)?;
    // `--json -`: stdout is the JSON's alone, and the text report goes to stderr.
    let json_on_stdout = matches!(options.json, Some(JsonTo::Stdout));
    let printed = if quiet {
        Ok(())
    } else if json_on_stdout {
        export::print(io::stderr().lock(), &text)
    } else {
        export::print(io::stdout().lock(), &text)
    };
    let printed = printed.and_then(|()| match json_on_stdout {
        true => export::print(io::stdout().lock(), &format!("{json}\n")),
        false => Ok(()),
    });
    if let Some(JsonTo::File(path)) = &options.json {
        export::write_file(path, json.as_bytes())?;
        note(&format!("memprof: wrote {}", path.display()));
    }
    if let Some(dir) = &options.output {
        let written = export::write_output_dir(dir, &report, &json)?;
        let dir = dir.display();
        note(&format!(
            "memprof: wrote {} in {dir}\nmemprof: to explore them: go tool pprof -http=: \
             {dir}/profile.pb.gz, or open {dir}/reserved.svg in a browser",
            written.join(", ")
        ));
    }
    printed.context("writing the report to stdout")?;
    Ok(ended)
}

fn launched_command(target: &Target) -> bool {
    matches!(target, Target::Command(_))
}

/// Reaps the launched command if it exited, so it does not linger as a zombie, and says how
/// it ended when that was not a success (its own output may have scrolled away). None: it
/// still runs.
fn reap(tracker: &Tracker, note: impl Fn(&str)) -> Option<ExitStatus> {
    let mut status = 0;
    // Its exit event comes just before it becomes a zombie: wait for that when it exited.
    let exited = tracker
        .processes
        .get(&tracker.root)
        .is_some_and(|p| p.exited);
    let flags = if exited { 0 } else { libc::WNOHANG };
    // SAFETY: reaping our own child.
    let reaped = unsafe { libc::waitpid(tracker.root as libc::pid_t, &mut status, flags) };
    if reaped != tracker.root as libc::pid_t {
        // As strace leaves a command it stops tracing: running, as if never traced (a
        // server traced for a while goes on serving).
        note(&format!(
            "memprof: the command (pid {}) keeps running untraced; stop it with `kill {}`",
            tracker.root, tracker.root
        ));
        return None;
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
        note(&format!(
            "memprof: the command exited with status {}",
            libc::WEXITSTATUS(status)
        ));
    } else if libc::WIFSIGNALED(status) {
        note(&format!(
            "memprof: the command was killed by signal {}",
            libc::WTERMSIG(status)
        ));
    }
    Some(ExitStatus::from_raw(status))
}

/// How often the status line is redrawn.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// A line on stderr (a terminal), redrawn in place every [`STATUS_EVERY`] while tracing runs
/// and cleared when it ends: a long trace otherwise looks hung.
/// Whether it is on the terminal is `crate::STATUS_LINE_SHOWN`, which notes read too.
struct StatusLine;

impl Watch for StatusLine {
    fn refresh_every(&self) -> Duration {
        STATUS_EVERY
    }

    fn refresh(&mut self, tracker: &mut Tracker, lost_events: u64) -> anyhow::Result<Flow> {
        let elapsed = Duration::from_nanos(monotonic_ns().saturating_sub(tracker.started_ns));
        let line = status_text(tracker, elapsed, lost_events);
        // Kept to one row: `\r` goes back to the start of the last row only.
        let width = crossterm::terminal::size().map_or(80, |(columns, _)| usize::from(columns));
        let line: String = line.chars().take(width.saturating_sub(1)).collect();
        // Not a failure of the trace when nobody can read it.
        let _ = write!(io::stderr(), "\r{line}\x1b[K");
        crate::STATUS_LINE_SHOWN.store(true, Ordering::Relaxed);
        Ok(Flow::Continue)
    }

    fn reads_terminal(&self) -> bool {
        false
    }

    fn terminal_input(&mut self) -> anyhow::Result<Flow> {
        Ok(Flow::Continue)
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        if crate::STATUS_LINE_SHOWN.swap(false, Ordering::Relaxed) {
            let _ = write!(io::stderr(), "\r\x1b[K");
        }
    }
}

/// What the status line says: how long tracing has run, the processes traced now and their
/// memory, the events followed and those lost.
fn status_text<P>(tracker: &Tracker<P>, elapsed: Duration, lost_events: u64) -> String {
    let live: Vec<_> = tracker.processes.values().filter(|p| !p.exited).collect();
    let reserved: u64 = live.iter().map(|p| p.reserved.end).sum();
    let resident: u64 = live.iter().map(|p| p.resident.end).sum();
    let events: u64 = tracker
        .processes
        .values()
        .map(|p| {
            let e = &p.events;
            e.mmap
                + e.munmap
                + e.mremap
                + e.brk
                + e.mprotect
                + e.madvise
                + e.shmat
                + e.shmdt
                + e.mlock
                + e.page_faults
                + e.rss_updates
                + e.forks
                + e.execs
        })
        .sum();
    let processes = match live.len() {
        1 => "1 process".to_string(),
        n => format!("{n} processes"),
    };
    // Memory last: a narrow terminal cuts the line's end.
    format!(
        "memprof: traced {}: {processes}, {events} events, {lost_events} lost; {} reserved, \
         {} resident",
        elapsed_text(elapsed),
        units::bytes(reserved),
        units::bytes(resident),
    )
}

/// Whole seconds as a clock would say them: "7s", "2m05s", "1h02m05s".
fn elapsed_text(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memprof_common::NO_STACK;

    use crate::testing::*;

    #[test]
    fn the_status_counts_live_processes_their_memory_and_every_event() {
        let proc = FakeProc::default().with(7, "bash", BASH_MAPS, 3 * MIB);
        let mut tracker = Tracker::new(proc, 7, Origin::Attached, Duration::from_secs(1), 0);
        tracker.seed_from_proc(7, 0).unwrap();
        tracker.apply(mmap(7, 0x7f10_0000_0000, MIB, NO_STACK));
        tracker.apply(faults(7, 0x7f10_0000_0000, 4));
        tracker.apply_overdue(u64::MAX);
        let text = status_text(&tracker, Duration::from_secs(65), 2);
        let reserved = units::bytes(BASH_RESERVED + MIB);
        assert_eq!(
            text,
            format!(
                "memprof: traced 1m05s: 1 process, 5 events, 2 lost; {reserved} reserved, \
                 3.0 MiB resident"
            )
        );
        tracker.apply(exit(7));
        let text = status_text(&tracker, Duration::from_secs(66), 2);
        assert!(
            text.contains(": 0 processes, 5 events, 2 lost; 0 B reserved, 0 B resident"),
            "{text}"
        );
    }

    #[test]
    fn elapsed_time_reads_as_a_clock() {
        let text = |secs| elapsed_text(Duration::from_secs(secs));
        assert_eq!(text(0), "0s");
        assert_eq!(text(59), "59s");
        assert_eq!(text(125), "2m05s");
        assert_eq!(text(3725), "1h02m05s");
    }
}
