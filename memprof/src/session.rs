//! A tracing session: the probes, and the loop that hands the ring buffer's events to the
//! tracker until tracing ends.
use std::{
    os::fd::{AsRawFd, RawFd},
    time::Duration,
};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    runtime::Runtime,
    signal::unix::{Signal, SignalKind, signal},
};

use crate::{
    events::{Event, monotonic_ns},
    filter::ProcessFilter,
    probes::Probes,
    procfs,
    tracker::{KernelCounts, Origin, Tracker},
};

/// `top` and the agent keep no timeline: one sample per process per year.
pub(crate) const NO_TIMELINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// How often events sent without a wake-up are read.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// Whether tracing goes on after a [`Watch`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Looks at the tracker while tracing runs (`memprof top`).
pub trait Watch {
    /// How often [`Watch::refresh`] is called.
    fn refresh_every(&self) -> Duration;
    /// Called with every event so far applied, and the events lost so far; may drop
    /// processes it is done with.
    fn refresh(&mut self, tracker: &mut Tracker, lost_events: u64) -> anyhow::Result<Flow>;
    /// Whether it reads the terminal on stdin: then [`Watch::terminal_input`] is called.
    fn reads_terminal(&self) -> bool;
    /// Called when the terminal has input or was resized, to read what waits (with
    /// crossterm's event reader, which decodes keys and sees resizes).
    fn terminal_input(&mut self) -> anyhow::Result<Flow>;
}

/// Standard input, for polling the terminal for keys.
struct Stdin;

impl AsRawFd for Stdin {
    fn as_raw_fd(&self) -> RawFd {
        libc::STDIN_FILENO
    }
}

/// The signals that end tracing with a report: Ctrl-C, SIGTERM, SIGHUP (its terminal closed).
pub struct StopSignals([Signal; 3]);

impl StopSignals {
    async fn recv(&mut self) {
        let [interrupt, terminate, hangup] = &mut self.0;
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
    }
}

/// The runtime that runs [`Session::run`], and the signals that end it, listened for from
/// now on: call it before saying that tracing started, so that a signal sent as soon as
/// memprof said so ends tracing with a report rather than killing memprof.
pub fn runtime() -> anyhow::Result<(Runtime, StopSignals)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let _context = runtime.enter();
    let stop = StopSignals([
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    ]);
    Ok((runtime, stop))
}

pub struct Session {
    probes: Probes,
    pub tracker: Tracker,
}

impl Session {
    pub fn new(probes: Probes, tracker: Tracker) -> Self {
        Self { probes, tracker }
    }

    /// `top` and the agent: a session of the host's processes that pass `filter`, those
    /// running now added, with the runtime that runs it and the signals that end it, and how
    /// many were running.
    pub fn of_host(
        probes: Probes,
        filter: &ProcessFilter,
    ) -> anyhow::Result<(Self, Runtime, StopSignals, usize)> {
        let tracker = Tracker::new(procfs::Proc, 0, Origin::All, NO_TIMELINE, monotonic_ns());
        let mut session = Self::new(probes, tracker);
        let (runtime, stop) = runtime()?;
        let running = session.trace_running(filter)?;
        Ok((session, runtime, stop, running))
    }

    /// `--all` and `top`: adds the running processes that pass `filter` (new ones the kernel
    /// adds itself); returns how many.
    pub fn trace_running(&mut self, filter: &ProcessFilter) -> anyhow::Result<usize> {
        let me = std::process::id();
        let mut traced = 0;
        for pid in procfs::pids().context("listing /proc")? {
            // Already added by the kernel: its event will say so.
            if pid == me || !filter.matches(pid) || self.probes.is_traced(pid) {
                continue;
            }
            self.probes.trace(pid)?;
            if self.tracker.seed_from_proc(pid, monotonic_ns()).is_ok() {
                traced += 1;
            } else {
                // Gone, or a kernel thread (no address space).
                self.probes.untrace(pid);
            }
        }
        Ok(traced)
    }

    /// Applies events until tracing ends: one of the `stop` signals, `duration`, the traced
    /// processes are gone, or `watch` says so.
    pub async fn run(
        &mut self,
        events: RingBuf<MapData>,
        mut stop: StopSignals,
        duration: Option<Duration>,
        mut watch: Option<&mut dyn Watch>,
    ) -> anyhow::Result<()> {
        // SAFETY: the ring buffer owns its fd and keeps it open while the AsyncFd holds it.
        let mut events = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .context("polling the ring buffer")?;
        let mut terminal = match &watch {
            // SAFETY: stdin stays open for as long as memprof runs.
            Some(w) if w.reads_terminal() => Some((
                unsafe { AsyncFd::register_with_interest(Stdin, Interest::READABLE) }
                    .context("polling stdin")?,
                signal(SignalKind::window_change())?,
            )),
            _ => None,
        };
        let every = watch
            .as_ref()
            .map_or(Duration::MAX / 4, |w| w.refresh_every());
        // The first refresh after one period: rates need two readings.
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let deadline = tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        // Most events arrive without a wake-up (see the eBPF side's `emit`).
        let mut drain = tokio::time::interval(DRAIN_INTERVAL);
        loop {
            tokio::select! {
                guard = events.readable_mut() => {
                    let mut guard = guard?;
                    self.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                () = stop.recv() => break,
                _ = &mut deadline, if duration.is_some() => break,
                _ = drain.tick() => {
                    self.drain(events.get_mut());
                    self.probes.drain_logs();
                }
                _ = tick.tick() => {
                    self.end_vanished(events.get_mut());
                    self.tracker.trim_exited();
                }
                _ = refresh.tick(), if watch.is_some() => {
                    self.drain(events.get_mut());
                    let lost = self.lost_events_so_far();
                    if let Some(w) = watch.as_deref_mut()
                        && w.refresh(&mut self.tracker, lost)? == Flow::Stop
                    {
                        break;
                    }
                }
                input = async {
                    let (stdin, resized) = terminal.as_mut()?;
                    tokio::select! {
                        guard = stdin.readable() => guard.ok(),
                        _ = resized.recv() => None,
                    }
                }, if terminal.is_some() => {
                    let flow = match watch.as_deref_mut() {
                        Some(w) => w.terminal_input()?,
                        None => Flow::Continue,
                    };
                    // After the watch read what was there.
                    if let Some(mut guard) = input {
                        guard.clear_ready();
                    }
                    if flow == Flow::Stop {
                        break;
                    }
                }
            }
            if self.tracker.finished() {
                break;
            }
        }
        // Whatever the kernel committed before the end still counts, and so do the faults it
        // had not sent yet: read once nothing can change them.
        self.probes.detach();
        self.drain(events.get_mut());
        self.probes.drain_logs();
        match self.probes.unsent_fault_runs() {
            Ok(runs) => runs
                .into_iter()
                .for_each(|run| self.tracker.apply(Event::Fault(run))),
            Err(e) => crate::note!(
                "memprof: warning: the last faults (up to {} pages per CPU) are missing: \
                 reading them from the kernel failed: {e}",
                memprof_common::FAULT_RUN_PAGES
            ),
        }
        let kernel = KernelCounts {
            lost_events: self.probes.lost_events(),
            lost_stacks: self.probes.lost_stacks(),
            stacks_over_budget: self.probes.stacks_over_budget(),
        };
        self.tracker.finish(monotonic_ns(), kernel);
        Ok(())
    }

    /// A process gone from /proc whose exit event never came (it was lost): end it here
    /// rather than wait for it forever. Checked before draining, so an exit event committed
    /// before the process vanished has been applied by the time it is judged lost.
    fn end_vanished(&mut self, ring: &mut RingBuf<MapData>) {
        let gone = self.tracker.vanished();
        self.drain(ring);
        self.tracker.end_vanished(&gone, monotonic_ns());
    }

    /// Applies every event the kernel has committed, then names the file mappings they
    /// made while the processes are still there to ask.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            self.tracker.apply_bytes(&item);
            // At once: until the kernel knows, it copies each of the stack's events (a fault
            // storm in one loop copies one stack a thousand times a millisecond).
            let verdicts = self.tracker.take_verdicts();
            if !verdicts.is_empty() {
                self.probes.record_verdicts(&verdicts);
            }
        }
        self.tracker.apply_overdue(monotonic_ns());
        self.tracker.name_files();
    }

    /// Events lost so far (the kernel's count read now).
    pub fn lost_events_so_far(&self) -> u64 {
        self.probes.lost_events() + self.tracker.undecodable()
    }
}
