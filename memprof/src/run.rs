//! `memprof run`: check, load, attach or launch, trace, report.
use std::{fs, path::Path, time::Duration};

use anyhow::Context as _;

use crate::{
    cli::RunArgs,
    error::Error,
    launch::{self, Launched},
    loader::{self, Probes},
    process::Snapshot,
    report::Report,
    session::{Origin, Session},
};

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

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Everything that can be refused without loading anything is checked first.
    let attach_to = args.pid.map(process_of).transpose()?;
    let program = match attach_to {
        Some(_) => None,
        None => Some(launch::resolve(&args.command[0])?),
    };
    loader::check_privileges()?;
    if loader::ensure_tracefs()? {
        eprintln!("memprof: mounted tracefs at {}", loader::TRACEFS);
    }
    loader::check_tracepoints(Path::new(loader::TRACEFS))?;

    // Fork before anything else starts a thread; the child waits until it is traced.
    let launched = program
        .map(|path| Launched::fork(&path, &args.command))
        .transpose()?;
    let (mut probes, events) = Probes::load(args.ring_buffer_size)?;
    let interval = Duration::from_millis(args.interval);
    let mut session = match (attach_to, launched) {
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
        (None, None) => unreachable!("clap requires --pid or a command"),
    };
    eprintln!(
        "memprof: tracing pid {}; Ctrl-C to stop and report",
        session.root
    );

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(session.run(events, args.duration))?;
    if attach_to.is_none() {
        // Reap the command if it exited, so it does not linger as a zombie.
        // SAFETY: reaping our own child.
        unsafe {
            libc::waitpid(
                session.root as libc::pid_t,
                std::ptr::null_mut(),
                libc::WNOHANG,
            )
        };
    }

    let report = Report::new(&session);
    print!("{}", report.render(args.regions));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("memprof: wrote {}", path.display());
    }
    Ok(())
}
