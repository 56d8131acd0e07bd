//! `memprof run`: check, load, attach or launch, trace, report.
use std::{fs, path::Path, time::Duration};

use anyhow::Context as _;

use clap::CommandFactory as _;
use memprof_common::{Filter, KernelLayout};

use crate::{
    cli::{Cli, RunArgs},
    error::Error,
    export::{self, Metric, ProfileInfo, Series, SiteSample},
    filter::ProcessFilter,
    launch::{self, Launched},
    probes::{self, LoadOptions, Probes},
    process::Snapshot,
    report::{ProcessReport, Report},
    session::{Origin, Session},
};

/// Processes shown in detail in the terminal report of `--all` (the JSON has every one).
const DETAILED_PROCESSES: usize = 10;

/// The process a pid belongs to: a thread id is taken as its whole process.
fn process_of(pid: u32) -> Result<u32, Error> {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| Error::NoSuchProcess(pid))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(Error::NoSuchProcess(pid))
}

/// Refuses early, with the fix named, when this machine cannot run the probes.
/// Refuses early, with the fix named, what would stop tracing; returns where this kernel
/// keeps what the programs read.
pub fn check_machine() -> anyhow::Result<KernelLayout> {
    probes::check_privileges()?;
    if probes::ensure_tracefs()? {
        eprintln!("memprof: mounted tracefs at {}", probes::TRACEFS);
    }
    probes::check_tracepoints(Path::new(probes::TRACEFS))?;
    Ok(probes::kernel_layout()?)
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.all && !args.filter.is_empty() {
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--comm, --cgroup and --uid choose processes for --all: add --all",
            )
            .exit();
    }
    // Everything that can be refused without loading anything is checked first.
    let filter = args
        .all
        .then(|| ProcessFilter::new(&args.filter))
        .transpose()?;
    let attach_to = args.pid.map(process_of).transpose()?;
    let program = match (attach_to, &filter) {
        (None, None) => Some(launch::resolve(&args.command[0])?),
        _ => None,
    };
    let layout = check_machine()?;

    // Fork before anything else starts a thread; the child waits until it is traced.
    let launched = program
        .map(|path| Launched::fork(&path, &args.command))
        .transpose()?;
    // One fault stack in this many is recorded; 0: none.
    let fault_sample = if args.fault_stacks {
        args.fault_sample
    } else {
        0
    };
    let (mut probes, events) = Probes::load(&LoadOptions {
        ring_buffer_bytes: args.ring_buffer_size,
        stack_map_entries: args.stack_map_entries,
        kernel_stacks: args.kernel_stacks,
        fault_stack_sample: fault_sample,
        filter: filter
            .as_ref()
            .map_or_else(Filter::default, |f| f.kernel(std::process::id())),
        user_stacks: true,
        layout,
    })?;
    let interval = Duration::from_millis(args.interval);
    let mut session = match (attach_to, launched) {
        _ if let Some(filter) = &filter => {
            let mut session = Session::new(probes, 0, Origin::All, interval);
            let running = session.trace_running(filter)?;
            eprintln!(
                "memprof: tracing {} ({running} running now); Ctrl-C to stop and report",
                filter.describe()
            );
            session
        }
        (Some(pid), _) => {
            probes.trace(pid)?;
            let snapshot = Snapshot::read(pid).map_err(|_| Error::NoSuchProcess(pid))?;
            let mut session = Session::new(probes, pid, Origin::Attached, interval);
            session.seed(pid, snapshot);
            session
        }
        (None, Some(child)) => {
            let pid = child.pid;
            probes.trace(pid)?;
            let snapshot = child.start()?;
            Session::new(probes, pid, Origin::Launched(Some(snapshot)), interval)
        }
        (None, None) => unreachable!("clap requires --pid, --all or a command"),
    };
    if filter.is_none() {
        eprintln!(
            "memprof: tracing pid {}; Ctrl-C to stop and report",
            session.root
        );
    }

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(session.run(events, args.duration, None))?;
    if attach_to.is_none() && filter.is_none() {
        // Reap the command if it exited, so it does not linger as a zombie, and say how it
        // ended when that was not a success (its own output may have scrolled away).
        let mut status = 0;
        // Its exit record comes just before it becomes a zombie: wait for that when it exited.
        let exited = session
            .processes
            .get(&session.root)
            .is_some_and(|p| p.exited);
        let flags = if exited { 0 } else { libc::WNOHANG };
        // SAFETY: reaping our own child.
        let reaped = unsafe { libc::waitpid(session.root as libc::pid_t, &mut status, flags) };
        if reaped == session.root as libc::pid_t {
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
                eprintln!(
                    "memprof: the command exited with status {}",
                    libc::WEXITSTATUS(status)
                );
            } else if libc::WIFSIGNALED(status) {
                eprintln!(
                    "memprof: the command was killed by signal {}",
                    libc::WTERMSIG(status)
                );
            }
        }
    }

    let report = Report::new(&session, fault_sample);
    let detailed = if args.all {
        DETAILED_PROCESSES
    } else {
        usize::MAX
    };
    print!("{}", report.render(args.regions, detailed));
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json {
        write(path, json.as_bytes())?;
    }
    if let Some(dir) = &args.output {
        write_output_dir(dir, &report, &json)?;
    }
    Ok(())
}

fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("memprof: wrote {}", path.display());
    Ok(())
}

/// Flame graphs, folded stacks, a pprof profile and the JSON report, in `dir`.
fn write_output_dir(dir: &Path, report: &Report, json: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // "name (pid)": with several processes, each stack starts at its process.
    let label = |p: &ProcessReport| {
        let name = p.command.split_whitespace().next().unwrap_or("?");
        let name = name.rsplit('/').next().unwrap_or(name);
        format!("{name} ({})", p.pid)
    };
    let roots: Vec<Option<String>> = report
        .processes
        .iter()
        .map(|p| (report.processes.len() > 1).then(|| label(p)))
        .collect();
    let samples: Vec<SiteSample> = report
        .processes
        .iter()
        .zip(&roots)
        .flat_map(|(p, root)| {
            p.sites.iter().map(move |s| SiteSample {
                frames: &s.stack,
                root: root.as_deref(),
                reserved: s.reserved_bytes,
                resident: s.resident_bytes,
                faults: s.made_resident_faults,
            })
        })
        .collect();
    let who = match report.processes.as_slice() {
        [p] => format!("{} (pid {})", p.command, p.pid),
        all => format!("{} processes", all.len()),
    };
    let mut metrics = vec![
        (Metric::Reserved, "reserved"),
        (Metric::Resident, "resident"),
    ];
    if report.fault_sample > 0 {
        metrics.push((Metric::Faults, "faults"));
    }
    for (metric, name) in metrics {
        let folded = export::folded(&samples, metric);
        write(&dir.join(format!("{name}.folded")), folded.as_bytes())?;
        if metric != Metric::Faults {
            let title = format!("{name} bytes: {who}");
            let svg = export::flamegraph_svg(&folded, &title, "bytes")?;
            write(&dir.join(format!("{name}.svg")), svg.as_bytes())?;
        }
    }
    let info = ProfileInfo {
        duration_nanos: (report.duration_secs * 1e9) as i64,
        comments: vec![format!("memprof: {who}")],
        ..Default::default()
    };
    write(&dir.join("profile.pb.gz"), &export::pprof(&samples, &info))?;
    // The processes whose address space grew most.
    let growing: Vec<(&ProcessReport, String)> = report
        .by_growth()
        .into_iter()
        .map(|p| match report.processes.len() {
            1 => (p, format!("pid {}", p.pid)),
            _ => (p, label(p)),
        })
        .collect();
    let series: Vec<Series> = growing
        .iter()
        .map(|(p, name)| Series {
            name,
            samples: &p.timeline,
        })
        .collect();
    let svg = export::timeline_svg(&format!("memory over time: {who}"), &series);
    write(&dir.join("timeline.svg"), svg.as_bytes())?;
    write(&dir.join("report.json"), json.as_bytes())
}
