//! The tracker: turns the kernel's events into processes, their address spaces and their
//! sites. A plain type, with no kernel and no runtime in it: the session feeds it the ring
//! buffer's events, tests feed it hand-made ones, and it reaches /proc only through
//! [`ProcSource`].
use std::{collections::BTreeMap, time::Duration};

use memprof_common::NO_STACK;

use crate::{
    address_space::{SITE_NO_STACK, SiteId},
    events::{self, Event},
    process::Process,
    procfs::{Proc, ProcSource, Snapshot},
    sites::Sites,
};

/// How tracing was started, which decides when it ends on its own.
#[derive(Debug)]
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

pub struct Tracker<P = Proc> {
    proc: P,
    /// The process traced (attach and launch modes); 0 with `--all`.
    pub root: u32,
    origin: Origin,
    pub processes: BTreeMap<u32, Process>,
    pub sites: Sites,
    interval_ns: u64,
    pub started_ns: u64,
    pub ended_ns: u64,
    /// Events the kernel could not deliver plus events this build could not decode; any
    /// figure may be off when not 0. Final once tracing ended.
    pub lost_events: u64,
    /// Stacks the kernel could not send: their bytes are charged to "[stack not captured]".
    pub lost_stacks: u64,
    undecodable: u64,
}

/// A kernel command name (NUL-padded) as text.
fn comm_name(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

/// Names the file mappings `process` made since it was last asked, while it lives.
fn name_files(proc: &impl ProcSource, process: &mut Process) {
    if process.has_unnamed_files()
        && let Ok(maps) = proc.maps(process.pid)
    {
        process.name_files(&maps);
    }
}

/// The site of a stack captured in `process`. A stack seen for the first time is pinned to
/// modules, so the paths of files mapped since the last batch are read first.
fn site_of(
    sites: &mut Sites,
    proc: &impl ProcSource,
    process: &mut Process,
    user: u64,
    kernel: u64,
) -> SiteId {
    if !sites.captured(user, kernel) {
        return SITE_NO_STACK;
    }
    if let Some(&id) = process.site_ids.get(&(user, kernel)) {
        return id;
    }
    name_files(proc, process);
    let id = sites.add(process.pid, user, kernel, &process.space);
    process.site_ids.insert((user, kernel), id);
    id
}

impl<P: ProcSource> Tracker<P> {
    /// A tracker that starts at `now_ns`, sampling the timeline every `interval`.
    pub fn new(proc: P, root: u32, origin: Origin, interval: Duration, now_ns: u64) -> Self {
        Self {
            proc,
            root,
            origin,
            processes: BTreeMap::new(),
            sites: Sites::default(),
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            started_ns: now_ns,
            ended_ns: 0,
            lost_events: 0,
            lost_stacks: 0,
            undecodable: 0,
        }
    }

    /// Starts a process from what /proc says now. Events already queued for it replay
    /// changes the snapshot may already show; each is a range assignment, so applying it
    /// again leaves the same result.
    pub fn seed(&mut self, pid: u32, snapshot: Snapshot, now_ns: u64) {
        let process = Process::from_snapshot(pid, snapshot, now_ns, self.interval_ns);
        self.processes.insert(pid, process);
    }

    /// [`Tracker::seed`] from /proc; false when the process is gone or has no address
    /// space (a kernel thread).
    pub fn seed_from_proc(&mut self, pid: u32, now_ns: u64) -> bool {
        match self.proc.snapshot(pid) {
            Ok(snapshot) => {
                self.seed(pid, snapshot, now_ns);
                true
            }
            Err(_) => false,
        }
    }

    /// Decodes and applies one event from the ring buffer; one this build does not know is
    /// counted as lost.
    pub fn apply_bytes(&mut self, bytes: &[u8]) {
        match events::parse(bytes) {
            Some(event) => self.apply(event),
            None => self.undecodable += 1,
        }
    }

    /// Events this build could not decode so far.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    pub fn apply(&mut self, event: Event) {
        let header = *event.header();
        match event {
            Event::Exec(e) => return self.exec(header.tgid, header.ts_ns, &e.comm),
            Event::Stack(e) => return self.sites.add_stack(&e),
            Event::NewProcess(e) if !self.processes.contains_key(&header.tgid) => {
                // `--all`: a process that matched the filter when it was created.
                return self.add_new(e.child_pid, header.ts_ns, &e.comm);
            }
            _ => {}
        }
        // `--all` read it from /proc already when it started.
        let child_known =
            matches!(&event, Event::NewProcess(e) if self.processes.contains_key(&e.child_pid));
        let Some(process) = self.processes.get_mut(&header.tgid) else {
            // Launch mode: the command before its exec is memprof's own fork.
            return;
        };
        if process.exited {
            return;
        }
        process.advance_to(header.ts_ns);
        match event {
            Event::Syscall(e) => {
                // Only calls that create memory name a site: the others charge the site that
                // created what they change.
                let site = if matches!(i64::from(e.nr), libc::SYS_mmap | libc::SYS_brk) {
                    site_of(
                        &mut self.sites,
                        &self.proc,
                        process,
                        e.user_stack,
                        e.kernel_stack,
                    )
                } else {
                    SITE_NO_STACK
                };
                process.apply_syscall(&e, site);
            }
            Event::Fault(e) => {
                let stack = (e.stack != NO_STACK)
                    .then(|| site_of(&mut self.sites, &self.proc, process, e.stack, NO_STACK));
                process.apply_fault(&e, stack);
            }
            Event::Rss(e) => process.apply_rss(e.member, e.bytes),
            Event::NewProcess(e) => {
                process.events.forks += 1;
                if child_known {
                    return;
                }
                // The child copies the parent's regions: name them while the parent lives.
                name_files(&self.proc, process);
                let status = self.proc.status(e.child_pid);
                let child = Process::forked(process, e.child_pid, header.ts_ns, status.as_ref());
                self.processes.insert(e.child_pid, child);
            }
            Event::Exit(_) => {
                name_files(&self.proc, process);
                process.finish(header.ts_ns, true, None);
            }
            Event::Exec(_) | Event::Stack(_) => unreachable!("handled above"),
        }
    }

    /// A process memprof has not seen before: read it from /proc now (later events replay
    /// onto it), or, when it is already gone, keep what its events will say.
    fn add_new(&mut self, pid: u32, ts_ns: u64, comm: &[u8; 16]) {
        let process = match self.proc.snapshot(pid) {
            Ok(snapshot) => Process::from_snapshot(pid, snapshot, ts_ns, self.interval_ns),
            Err(_) => Process::unseen(pid, comm_name(comm), ts_ns, self.interval_ns),
        };
        self.processes.insert(pid, process);
    }

    fn exec(&mut self, pid: u32, ts_ns: u64, comm: &[u8; 16]) {
        let snapshot = match &mut self.origin {
            Origin::Launched(first) if pid == self.root && first.is_some() => first.take(),
            // Read now: the process runs on, but the events that follow replay onto it.
            _ => self.proc.snapshot(pid).ok(),
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

    /// Names the file mappings made by every process since the last call, while they are
    /// there to ask.
    pub fn name_files(&mut self) {
        for process in self.processes.values_mut() {
            name_files(&self.proc, process);
        }
    }

    /// Whether tracing ends on its own: the traced process, or the launched command and all
    /// its descendants, have exited.
    pub fn finished(&self) -> bool {
        match self.origin {
            Origin::Attached => self.processes.get(&self.root).is_some_and(|p| p.exited),
            Origin::Launched(_) => {
                !self.processes.is_empty() && self.processes.values().all(|p| p.exited)
            }
            Origin::All => false,
        }
    }

    /// The processes still running by memprof's account that /proc says are gone.
    pub fn vanished(&self) -> Vec<u32> {
        self.processes
            .values()
            .filter(|p| !p.exited && self.proc.is_gone(p.pid))
            .map(|p| p.pid)
            .collect()
    }

    /// Ends the processes in `gone` (from [`Tracker::vanished`]) whose exit event never came:
    /// it was lost. Call after applying every event committed before `gone` was taken, so
    /// that an exit event on its way is not judged lost.
    pub fn end_vanished(&mut self, gone: &[u32], now_ns: u64) {
        for pid in gone {
            if let Some(process) = self.processes.get_mut(pid).filter(|p| !p.exited) {
                process.incomplete = Some("memprof did not see it exit (a lost event)".into());
                process.finish(now_ns, true, None);
            }
        }
    }

    /// Ends tracing at `now_ns`: the processes still running are compared with what /proc
    /// says of them; `lost_events` and `lost_stacks` are the kernel's counts.
    pub fn finish(&mut self, now_ns: u64, lost_events: u64, lost_stacks: u64) {
        self.ended_ns = now_ns;
        for process in self.processes.values_mut() {
            if process.ended_ns.is_some() {
                continue;
            }
            name_files(&self.proc, process);
            let status = self.proc.status(process.pid);
            process.finish(now_ns, false, status.as_ref());
        }
        self.lost_events = lost_events + self.undecodable;
        self.lost_stacks = lost_stacks;
    }

    #[cfg(test)]
    fn proc_mut(&mut self) -> &mut P {
        &mut self.proc
    }
}
