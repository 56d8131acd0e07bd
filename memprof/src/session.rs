//! A tracing session: the probes, the processes being traced, and the loop that applies
//! records to them until tracing ends.
use std::{
    collections::BTreeMap,
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use memprof_common::NO_STACK;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::SignalKind,
};

use crate::{
    address_space::{SITE_NO_STACK, SiteId},
    events::{self, Event},
    filter::ProcessFilter,
    probes::Probes,
    process::{Process, Snapshot},
    procfs,
    sites::Sites,
};

/// The site of a stack captured in `process`. A stack seen for the first time is pinned to
/// modules, so the paths of files mapped since the last batch are read first.
fn site_of(sites: &mut Sites, process: &mut Process, user: u64, kernel: u64) -> SiteId {
    if !sites.captured(user, kernel) {
        return SITE_NO_STACK;
    }
    if let Some(&id) = process.site_ids.get(&(user, kernel)) {
        return id;
    }
    process.name_files();
    let id = sites.add(process.pid, user, kernel, &process.space);
    process.site_ids.insert((user, kernel), id);
    id
}

/// A kernel command name (NUL-padded) as text.
fn comm_name(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// How often records sent without a wake-up are read.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// How one session was started.
pub enum Origin {
    /// `--pid N`: ends when that process exits.
    Attached,
    /// `-- CMD`: ends when the command and all its descendants have exited. Holds the
    /// snapshot taken while the command was stopped right after exec.
    Launched(Option<Snapshot>),
    /// `--all` and `top`: the kernel adds processes as they start; ends on Ctrl-C or
    /// `--duration`.
    All,
}

/// Whether tracing goes on after a [`Watch`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Looks at the session while it runs (`memprof top`).
pub trait Watch {
    /// How often [`Watch::refresh`] is called.
    fn refresh_every(&self) -> Duration;
    /// Called with every record so far applied; may drop processes it is done with.
    fn refresh(&mut self, session: &mut Session) -> anyhow::Result<Flow>;
    /// Whether keys are read from the terminal on stdin and passed to [`Watch::key`].
    fn reads_keys(&self) -> bool;
    /// Bytes read from the terminal at once (one key, or an escape sequence).
    fn keys(&mut self, keys: &[u8], session: &Session) -> anyhow::Result<Flow>;
}

/// Standard input, for polling the terminal for keys.
struct Stdin;

impl AsRawFd for Stdin {
    fn as_raw_fd(&self) -> RawFd {
        libc::STDIN_FILENO
    }
}

/// Bytes waiting on stdin, once it polled readable.
fn read_keys() -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 64];
    // SAFETY: reading into a buffer we own, within its length.
    let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(buf[..n as usize].to_vec())
}

pub struct Session {
    probes: Probes,
    pub root: u32,
    origin: Origin,
    pub processes: BTreeMap<u32, Process>,
    pub sites: Sites,
    interval_ns: u64,
    pub started_ns: u64,
    pub ended_ns: u64,
    /// Records the kernel could not deliver plus records this build could not decode.
    pub lost_events: u64,
    /// Stacks the kernel could not store: their events are charged to "[stack not captured]".
    pub lost_stacks: u64,
    undecodable: u64,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of bpf_ktime_get_ns, so records and samples
/// taken in userspace line up.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Session {
    pub fn new(probes: Probes, root: u32, origin: Origin, interval: Duration) -> Self {
        Self {
            probes,
            root,
            origin,
            processes: BTreeMap::new(),
            sites: Sites::default(),
            interval_ns: interval.as_nanos() as u64,
            started_ns: monotonic_ns(),
            ended_ns: 0,
            lost_events: 0,
            lost_stacks: 0,
            undecodable: 0,
        }
    }

    /// Attach mode: start from what /proc says now. Records already queued for the process
    /// replay changes the snapshot may already show; each is a range assignment, so applying
    /// it again leaves the same result.
    pub fn seed(&mut self, pid: u32, snapshot: Snapshot) {
        let process = Process::from_snapshot(pid, snapshot, monotonic_ns(), self.interval_ns);
        self.processes.insert(pid, process);
    }

    /// `--all` and `top`: adds the running processes that pass `filter` (new ones the kernel
    /// adds itself); returns how many.
    pub fn trace_running(&mut self, filter: &ProcessFilter) -> anyhow::Result<usize> {
        let me = std::process::id();
        let mut traced = 0;
        for pid in procfs::pids().context("listing /proc")? {
            // Already added by the kernel: its record will say so.
            if pid == me || !filter.matches(pid) || self.probes.is_traced(pid) {
                continue;
            }
            self.probes.trace(pid)?;
            match Snapshot::read(pid) {
                Ok(snapshot) => {
                    self.seed(pid, snapshot);
                    traced += 1;
                }
                // Gone, or a kernel thread (no address space).
                Err(_) => self.probes.untrace(pid),
            }
        }
        Ok(traced)
    }

    /// Applies records until tracing ends: Ctrl-C, SIGTERM, `duration`, the traced
    /// processes are gone, or `watch` says so.
    pub async fn run(
        &mut self,
        events: RingBuf<MapData>,
        duration: Option<Duration>,
        mut watch: Option<&mut dyn Watch>,
    ) -> anyhow::Result<()> {
        // SAFETY: the ring buffer owns its fd and keeps it open while the AsyncFd holds it.
        let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .context("polling the ring buffer")?;
        let keys = match &watch {
            // SAFETY: stdin stays open for as long as memprof runs.
            Some(w) if w.reads_keys() => Some(
                unsafe { AsyncFd::register_with_interest(Stdin, Interest::READABLE) }
                    .context("polling stdin")?,
            ),
            _ => None,
        };
        let every = watch
            .as_ref()
            .map_or(Duration::MAX / 4, |w| w.refresh_every());
        // The first refresh after one period: rates need two readings.
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut interrupt = tokio::signal::unix::signal(SignalKind::interrupt())?;
        let mut terminate = tokio::signal::unix::signal(SignalKind::terminate())?;
        let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        // Most records arrive without a wake-up (see the eBPF side's `emit`).
        let mut drain = tokio::time::interval(DRAIN_INTERVAL);
        loop {
            tokio::select! {
                guard = events.readable_mut() => {
                    let mut guard = guard?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
                _ = &mut deadline, if duration.is_some() => break,
                _ = drain.tick() => self.drain(events.get_mut()),
                _ = tick.tick() => self.end_vanished(events.get_mut()),
                _ = refresh.tick(), if watch.is_some() => {
                    self.drain(events.get_mut());
                    if let Some(w) = watch.as_deref_mut()
                        && w.refresh(self)? == Flow::Stop
                    {
                        break;
                    }
                }
                guard = async { keys.as_ref()?.readable().await.ok() }, if keys.is_some() => {
                    let Some(mut guard) = guard else { break };
                    let bytes = read_keys()?;
                    guard.clear_ready();
                    if bytes.is_empty() {
                        // The terminal went away.
                        break;
                    }
                    if let Some(w) = watch.as_deref_mut()
                        && w.keys(&bytes, self)? == Flow::Stop
                    {
                        break;
                    }
                }
            }
            if self.finished() {
                break;
            }
        }
        // Whatever the kernel committed before the end still counts, and so do the faults it
        // had not sent yet: read once nothing can change them.
        self.probes.detach();
        self.drain(events.get_mut());
        match self.probes.unsent_fault_runs() {
            Ok(runs) => runs
                .into_iter()
                .for_each(|run| self.apply(Event::Fault(run))),
            Err(e) => eprintln!(
                "memprof: warning: the last faults (up to {} pages per CPU) are missing: \
                 reading them from the kernel failed: {e}",
                memprof_common::FAULT_RUN_PAGES
            ),
        }
        self.finish();
        Ok(())
    }

    fn finished(&self) -> bool {
        match self.origin {
            Origin::Attached => self.processes.get(&self.root).is_some_and(|p| p.exited),
            Origin::Launched(_) => {
                !self.processes.is_empty() && self.processes.values().all(|p| p.exited)
            }
            Origin::All => false,
        }
    }

    /// A process gone from /proc whose exit record never came (it was lost): end it here
    /// rather than wait for it forever. Checked before draining, so an exit record committed
    /// before the process vanished has been applied by the time it is judged lost.
    fn end_vanished(&mut self, ring: &mut RingBuf<MapData>) {
        let gone: Vec<u32> = self
            .processes
            .values()
            .filter(|p| !p.exited)
            .map(|p| p.pid)
            .filter(|pid| {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(") ")?.1.chars().next());
                matches!(state, None | Some('Z' | 'X'))
            })
            .collect();
        self.drain(ring);
        let now = monotonic_ns();
        for pid in gone {
            if let Some(process) = self.processes.get_mut(&pid).filter(|p| !p.exited) {
                process.incomplete = Some("memprof did not see it exit (a lost record)".into());
                process.finish(now, true);
            }
        }
    }

    /// Applies every record the kernel has committed, then names the file mappings they
    /// made while the processes are still there to ask.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match events::parse(&item) {
                Some(record) => self.apply(record),
                None => self.undecodable += 1,
            }
        }
        for process in self.processes.values_mut() {
            process.name_files();
        }
    }

    fn apply(&mut self, record: Event) {
        let header = *record.header();
        match record {
            Event::Exec(r) => return self.exec(header.tgid, header.ts_ns, &r.comm),
            Event::Stack(r) => return self.sites.add_stack(&r),
            Event::NewProcess(r) if !self.processes.contains_key(&header.tgid) => {
                // `--all`: a process that matched the filter when it was created.
                return self.add_new(r.child_pid, header.ts_ns, &r.comm);
            }
            _ => {}
        }
        // `--all` read it from /proc already when it started.
        let child_known =
            matches!(&record, Event::NewProcess(r) if self.processes.contains_key(&r.child_pid));
        let Some(process) = self.processes.get_mut(&header.tgid) else {
            // Launch mode: the command before its exec is memprof's own fork.
            return;
        };
        if process.exited {
            return;
        }
        process.advance_to(header.ts_ns);
        match record {
            Event::Syscall(r) => {
                // Only calls that create memory name a site: the others charge the site that
                // created what they change.
                let site = if matches!(i64::from(r.nr), libc::SYS_mmap | libc::SYS_brk) {
                    site_of(&mut self.sites, process, r.user_stack, r.kernel_stack)
                } else {
                    SITE_NO_STACK
                };
                process.apply_syscall(&r, site);
            }
            Event::Fault(r) => {
                let stack = (r.stack != NO_STACK)
                    .then(|| site_of(&mut self.sites, process, r.stack, NO_STACK));
                process.apply_fault(&r, stack);
            }
            Event::Rss(r) => process.apply_rss(r.member, r.bytes),
            Event::NewProcess(r) => {
                process.events.forks += 1;
                if child_known {
                    return;
                }
                // The child copies the parent's regions: name them while the parent lives.
                process.name_files();
                let child = Process::forked(process, r.child_pid, header.ts_ns);
                self.processes.insert(r.child_pid, child);
            }
            Event::Exit(_) => process.finish(header.ts_ns, true),
            Event::Exec(_) | Event::Stack(_) => unreachable!("handled above"),
        }
    }

    /// A process memprof has not seen before: read it from /proc now (later records replay
    /// onto it), or, when it is already gone, keep what its records will say.
    fn add_new(&mut self, pid: u32, ts_ns: u64, comm: &[u8; 16]) {
        let process = match Snapshot::read(pid) {
            Ok(snapshot) => Process::from_snapshot(pid, snapshot, ts_ns, self.interval_ns),
            Err(_) => Process::unseen(pid, comm_name(comm), ts_ns, self.interval_ns),
        };
        self.processes.insert(pid, process);
    }

    fn exec(&mut self, pid: u32, ts_ns: u64, comm: &[u8; 16]) {
        let snapshot = match &mut self.origin {
            Origin::Launched(first) if pid == self.root && first.is_some() => first.take(),
            // Read now: the process runs on, but the records that follow replay onto it.
            _ => Snapshot::read(pid).ok(),
        };
        match self.processes.get_mut(&pid) {
            Some(process) => {
                process.advance_to(ts_ns);
                process.exec(snapshot);
            }
            None => {
                let process = match snapshot {
                    Some(s) => Process::from_snapshot(pid, s, ts_ns, self.interval_ns),
                    None => Process::unseen(pid, comm_name(comm), ts_ns, self.interval_ns),
                };
                self.processes.insert(pid, process);
            }
        }
    }

    /// Records lost so far (the kernel's count read now).
    pub fn lost_events_so_far(&self) -> u64 {
        self.probes.lost_records() + self.undecodable
    }

    fn finish(&mut self) {
        self.ended_ns = monotonic_ns();
        for process in self.processes.values_mut() {
            process.finish(self.ended_ns, false);
        }
        self.lost_events = self.probes.lost_records() + self.undecodable;
        self.lost_stacks = self.probes.lost_stacks();
    }
}
