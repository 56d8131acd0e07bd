//! The tracker: turns the kernel's events into processes, their address spaces and their
//! sites. A plain type, with no kernel and no runtime in it: the session feeds it the ring
//! buffer's events, tests feed it hand-made ones, and it reaches /proc only through
//! [`ProcSource`].
use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap, HashSet},
    io,
    time::Duration,
};

use memprof_common::{ExecEvent, NO_STACK, RAW_STACK};

use crate::{
    address_space::{SITE_NO_STACK, SiteId},
    events::{self, Event, RawStack},
    probes::Verdict,
    process::{Change, ProcCheck, Process},
    procfs::{Proc, ProcSource, Snapshot},
    sites::Sites,
    unwind::{self, Unwinding, Unwound},
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
    /// What /proc showed at an exec of a process that had exec'd again by then: the next
    /// image, for that exec's event.
    later_images: HashMap<u32, Snapshot>,
    pub sites: Sites,
    interval_ns: u64,
    pub started_ns: u64,
    pub ended_ns: u64,
    /// Events the kernel could not deliver plus events this build could not decode; any
    /// figure may be off when not 0. Final once tracing ended.
    pub lost_events: u64,
    /// Stacks the kernel could not send: their bytes are charged to "[stack not captured]".
    pub lost_stacks: u64,
    /// User stacks the kernel did not copy, over its budget of copies: their bytes are
    /// charged to "[stack not captured]" too.
    pub stacks_over_budget: u64,
    undecodable: u64,
    unwinding: Unwinding,
    /// Per thread, its process and its last raw stack, unwound, for the thread's next event
    /// that carries [`RAW_STACK`].
    unwound: HashMap<u32, (u32, Unwound)>,
    /// Per thread, the path of the file its next mmap maps, and where.
    file_paths: HashMap<u32, (u64, String)>,
    /// What the unwinding found of the kernel's frame walks, for the kernel (see
    /// [`Tracker::take_verdicts`]).
    verdicts: Vec<Verdict>,
    /// Stacks given a verdict, with their process: a later copy needs none, unless the
    /// kernel asks again (its slot was taken by another stack meanwhile). A stack whose first
    /// copy was lost is judged at its next copy.
    judged: HashMap<u64, u32>,
    /// At most this many processes that exited are kept, those that grew most
    /// ([`Tracker::trim_exited`]); None: every one.
    pub keep_exited: Option<usize>,
    /// Processes that exited and were left out, beyond `keep_exited`.
    pub left_out: u64,
}

/// What the kernel could not send, counted at the end.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelCounts {
    pub lost_events: u64,
    pub lost_stacks: u64,
    pub stacks_over_budget: u64,
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

/// Reads `process`'s command line again: a process may set its own title after it was read
/// (nginx's workers, forked with their master's, call themselves "nginx: worker process").
fn refresh_command(proc: &impl ProcSource, process: &mut Process) {
    if let Some(command) = proc.command(process.pid) {
        process.command = command;
    }
}

/// The site of a stack captured in thread `tid` of `process`: by its id, or (`user`
/// [`RAW_STACK`]) the stack unwound from the raw stack the thread sent before, taken from
/// `unwound`. Only such an event takes it: a run of the thread's faults named by id may come
/// between the copy and its event. A stack seen for the first time is pinned to modules, so
/// the paths of files mapped since the last batch are read first.
fn site_of(
    sites: &mut Sites,
    proc: &impl ProcSource,
    process: &mut Process,
    user: u64,
    (unwound, tid): (&mut HashMap<u32, (u32, Unwound)>, u32),
) -> SiteId {
    let by_id = user != RAW_STACK;
    if by_id && let Some(&id) = process.site_ids.get(&user) {
        return id;
    }
    // A stack vouched for by id is the stack unwound then: one site either way. A fault's
    // stack awaiting the verdict goes by id too, standing for its copy.
    let unwound = if by_id {
        sites
            .vouched(user)
            .or_else(|| process.copied_stacks.get(&user).cloned())
    } else {
        unwound.remove(&tid).map(|(_, unwound)| unwound)
    };
    let id = match unwound {
        Some(unwound) => match process.unwound_sites.get(&unwound.frames) {
            Some(&id) => id,
            None => {
                name_files(proc, process);
                let id = sites.add_unwound(process.pid, &unwound, &process.space);
                process.unwound_sites.insert(unwound.frames, id);
                id
            }
        },
        None if by_id && sites.captured(user) => {
            name_files(proc, process);
            sites.add(process.pid, user, &process.space)
        }
        None => return SITE_NO_STACK,
    };
    if by_id {
        process.site_ids.insert(user, id);
    }
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
            later_images: HashMap::new(),
            sites: Sites::default(),
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            started_ns: now_ns,
            ended_ns: 0,
            lost_events: 0,
            lost_stacks: 0,
            stacks_over_budget: 0,
            undecodable: 0,
            unwinding: Unwinding::default(),
            unwound: HashMap::new(),
            file_paths: HashMap::new(),
            verdicts: Vec::new(),
            judged: HashMap::new(),
            keep_exited: None,
            left_out: 0,
        }
    }

    /// Starts a process from what /proc says now. Events already queued for it replay
    /// changes the snapshot may already show; each is a range assignment, so applying it
    /// again leaves the same result.
    pub fn seed(&mut self, pid: u32, snapshot: Snapshot, now_ns: u64) {
        let process = Process::from_snapshot(pid, snapshot, now_ns, self.interval_ns);
        self.processes.insert(pid, process);
    }

    /// [`Tracker::seed`] from /proc; fails when the process is gone, has no address space
    /// (a kernel thread) or /proc refuses to show it.
    pub fn seed_from_proc(&mut self, pid: u32, now_ns: u64) -> io::Result<()> {
        let snapshot = self.proc.snapshot(pid)?;
        self.seed(pid, snapshot, now_ns);
        Ok(())
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
            Event::Exec(e) => return self.exec(header.tgid, header.ts_ns, &e),
            Event::Stack(e) => return self.sites.add_stack(&e),
            Event::RawStack(raw) => return self.raw_stack(&raw),
            Event::FilePath { address, path, .. } => {
                self.file_paths.insert(header.tid, (address, path));
                return;
            }
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
        // Almost always empty: no lookup per event.
        if !self.later_images.is_empty()
            && self.later_images.contains_key(&header.tgid)
            && matches!(event, Event::Syscall(_) | Event::Fault(_) | Event::Rss(_))
        {
            // Changes to an image memprof never saw: its model is the next one's already.
            return;
        }
        match event {
            Event::Syscall(e) => {
                // Only calls that create memory name a site: the others charge the site that
                // created what they change.
                let creates = [libc::SYS_mmap, libc::SYS_brk, libc::SYS_shmat];
                let site = if creates.contains(&i64::from(e.nr)) {
                    let unwound = (&mut self.unwound, header.tid);
                    site_of(&mut self.sites, &self.proc, process, e.user_stack, unwound)
                } else {
                    SITE_NO_STACK
                };
                // A file mapped: named at once, from the path the kernel sent before.
                let path = self.file_paths.remove(&header.tid).filter(|&(address, _)| {
                    i64::from(e.nr) == libc::SYS_mmap && e.ret == address as i64
                });
                process.take_change(Change {
                    event: e,
                    site,
                    path,
                });
            }
            Event::Fault(e) => {
                let stack = (e.stack != NO_STACK).then(|| {
                    let unwound = (&mut self.unwound, header.tid);
                    site_of(&mut self.sites, &self.proc, process, e.stack, unwound)
                });
                process.apply_fault(&e, stack);
            }
            Event::Rss(e) => process.apply_rss(e.member, e.bytes),
            Event::NewProcess(e) => {
                process.events.forks += 1;
                if child_known {
                    return;
                }
                // The child copies the parent's regions, as the kernel last changed them:
                // name them while the parent lives.
                process.apply_held();
                name_files(&self.proc, process);
                let status = self.proc.status(e.child_pid);
                let child = Process::forked(process, e.child_pid, header.ts_ns, status.as_ref());
                self.processes.insert(e.child_pid, child);
            }
            Event::Exit(e) => {
                name_files(&self.proc, process);
                if self.later_images.remove(&header.tgid).is_some() {
                    process.incomplete =
                        Some("it exec'd again and memprof did not see that exec".into());
                }
                let check = (e.read != 0).then_some(ProcCheck {
                    vm_size_bytes: e.vm_size_bytes,
                    vm_rss_bytes: e.vm_rss_bytes,
                    counted_rss_bytes: 0,
                    at_exit: true,
                });
                process.finish(header.ts_ns, true, check);
                self.unwinding.forget(header.tgid);
            }
            Event::Exec(_) | Event::Stack(_) | Event::RawStack(_) | Event::FilePath { .. } => {
                unreachable!("handled above")
            }
        }
    }

    /// Unwinds a raw stack for its thread's next event that carries [`RAW_STACK`], and vouches
    /// for the kernel's frame walk of it when the unwinding confirms the walk's frames.
    fn raw_stack(&mut self, raw: &RawStack) {
        let (pid, tid) = (raw.header.tgid, raw.header.tid);
        let Some(process) = self.processes.get_mut(&pid).filter(|p| !p.exited) else {
            return;
        };
        name_files(&self.proc, process);
        let unwound = self.unwinding.unwind(pid, &process.space, raw);
        let walk = unwind::frame_walk(raw);
        log::trace!(
            "pid {pid} tid {tid}: {} bytes of stack from {:#x}: frame walk {walk:x?}, unwound \
             {:x?} (complete: {})",
            raw.stack.len(),
            raw.sp,
            unwound.frames,
            unwound.complete
        );
        let judged_before = self.judged.insert(raw.id, pid).is_some();
        if !raw.awaits_verdict && judged_before {
            // Denied already: the kernel copies each of the stack's events.
        } else if unwind::stack_id(pid, &walk) == raw.id
            && unwind::walk_is_whole(&walk, &unwound, &process.space)
        {
            self.sites.add_vouched(raw.id, pid, &unwound);
            self.verdicts.push(Verdict::Vouched(raw.id));
        } else {
            self.verdicts.push(Verdict::Denied(raw.id));
            if !raw.leaf_returns {
                // Faults with this stack may follow by id until the kernel learns the verdict.
                process.copied_stacks.insert(raw.id, unwound.clone());
            }
        }
        self.unwound.insert(tid, (pid, unwound));
    }

    /// What the unwinding found of the kernel's frame walks since the last call: a stack
    /// vouched for goes by id alone from then on, one denied is copied each time.
    pub fn take_verdicts(&mut self) -> Vec<Verdict> {
        std::mem::take(&mut self.verdicts)
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

    fn exec(&mut self, pid: u32, ts_ns: u64, event: &ExecEvent) {
        let mut snapshot = match &mut self.origin {
            Origin::Launched(first) if pid == self.root && first.is_some() => first.take(),
            // Read now: the process runs on, but the events that follow replay onto it.
            _ => self.proc.snapshot(pid).ok(),
        };
        let this_image = |s: &Snapshot| s.start_stack == Some(event.start_stack);
        // This image, read at its previous exec, when /proc no longer shows it.
        if let Some(image) = self.later_images.remove(&pid)
            && this_image(&image)
            && !snapshot.as_ref().is_some_and(this_image)
        {
            snapshot = Some(image);
        }
        // By now it may have exec'd again (a `#!/usr/bin/env bash` script): then /proc shows
        // that image, and this one's events replayed onto it would mix two address spaces.
        // Until that exec's event, the events of this image are not applied (see `apply`).
        if event.start_stack != 0
            && let Some(image) = snapshot.as_ref().filter(|s| !this_image(s))
        {
            self.later_images.insert(pid, image.clone());
        }
        self.unwinding.forget(pid);
        match self.processes.get_mut(&pid) {
            Some(process) => {
                process.advance_to(ts_ns);
                process.exec(snapshot, &comm_name(&event.comm));
            }
            None => {
                let process = match snapshot {
                    Some(s) => Process::from_snapshot(pid, s, ts_ns, self.interval_ns),
                    None => Process::unseen(pid, comm_name(&event.comm), ts_ns, self.interval_ns),
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

    /// Forgets the processes that exited, and the sites and stacks only they used: `top` and
    /// the agent trace the host for as long as they run.
    pub fn forget_exited(&mut self) {
        let before = self.processes.len();
        self.processes.retain(|_, p| !p.exited);
        if self.processes.len() < before {
            self.forget_unused();
        }
    }

    /// Forgets the processes that exited beyond the `keep_exited` that grew most, counting
    /// them in `left_out`: a trace of a host's churn (`run --all`) would otherwise hold every
    /// process it ever saw. Some slack over the bound, so that not every exit sorts them.
    pub fn trim_exited(&mut self) {
        let Some(keep) = self.keep_exited else {
            return;
        };
        // The traced process stays whatever it grew: tracing ends by it.
        let mut exited: Vec<(u64, u64, u32)> = self
            .processes
            .values()
            .filter(|p| p.exited && p.pid != self.root)
            .map(|p| (p.reserved.growth(), p.resident.growth(), p.pid))
            .collect();
        if exited.len() <= keep + keep / 4 + 16 {
            return;
        }
        exited.sort_by_key(|&(reserved, resident, pid)| (Reverse((reserved, resident)), pid));
        let gone: HashSet<u32> = exited[keep..].iter().map(|&(.., pid)| pid).collect();
        self.left_out += gone.len() as u64;
        self.processes.retain(|pid, _| !gone.contains(pid));
        self.forget_unused();
    }

    /// Forgets the sites and stacks of processes no longer kept, and what was judged of them.
    fn forget_unused(&mut self) {
        let live: HashSet<u32> = self.processes.keys().copied().collect();
        let used: HashSet<SiteId> = self
            .processes
            .values()
            .flat_map(Process::sites_used)
            .collect();
        self.sites.forget(&live, &used);
        self.judged.retain(|_, pid| live.contains(pid));
        // A copy whose event was lost.
        self.unwound.retain(|_, (pid, _)| live.contains(pid));
    }

    /// Whether tracing ends on its own: the traced process, or the launched command and all
    /// its descendants, have exited.
    pub fn finished(&self) -> bool {
        match self.origin {
            Origin::Attached => self.processes.get(&self.root).is_some_and(|p| p.exited),
            Origin::Launched(_) => {
                (!self.processes.is_empty() || self.left_out > 0)
                    && self.processes.values().all(|p| p.exited)
            }
            Origin::All => false,
        }
    }

    /// Applies the memory syscalls that waited in vain for an earlier one (its event was
    /// lost): call now and then while tracing.
    pub fn apply_overdue(&mut self, now_ns: u64) {
        for process in self.processes.values_mut() {
            process.apply_overdue(now_ns);
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
    /// says of them; `kernel` holds the kernel's counts of what it could not send.
    pub fn finish(&mut self, now_ns: u64, kernel: KernelCounts) {
        self.ended_ns = now_ns;
        for process in self.processes.values_mut() {
            if process.ended_ns.is_some() {
                continue;
            }
            // At rest the kernel's per-mapping figures are exact: the regions end on them.
            let smaps = self.proc.smaps(process.pid).ok();
            match &smaps {
                Some(smaps) => process.name_files(smaps),
                None => name_files(&self.proc, process),
            }
            refresh_command(&self.proc, process);
            let status = self.proc.status(process.pid);
            process.finish(now_ns, false, status.as_ref().map(ProcCheck::of_status));
            if let Some(smaps) = smaps {
                process.settle_resident(&smaps);
            }
        }
        self.lost_events = kernel.lost_events + self.undecodable;
        self.lost_stacks = kernel.lost_stacks;
        self.stacks_over_budget = kernel.stacks_over_budget;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        address_space::{PAGE_SIZE, RegionKind, SITE_BEFORE_TRACING},
        testing::*,
    };

    const MREMAP_MAYMOVE: u64 = 1;

    fn attached(proc: FakeProc, pid: u32) -> Tracker<FakeProc> {
        let mut tracker = Tracker::new(proc, pid, Origin::Attached, Duration::from_millis(5), 0);
        tracker.seed_from_proc(pid, 0).unwrap();
        tracker
    }

    /// A process that exited is forgotten with the sites and stacks only it used, while a
    /// child it forked keeps the sites its copied regions name; new sites take the ids.
    #[test]
    fn exited_processes_are_forgotten_with_what_only_they_used() {
        let maps = "5000000-5002000 r-xp 00001000 fe:00 7 /opt/memprof-test/app\n";
        let proc = FakeProc::default()
            .with(7, "app", maps, MIB)
            .with(8, "other", maps, MIB);
        let mut tracker = Tracker::new(proc, 0, Origin::All, Duration::from_secs(1), 0);
        tracker.seed_from_proc(7, 0).unwrap();
        tracker.seed_from_proc(8, 0).unwrap();
        let (kept, gone) = (0x7f00_0000_0000, 0x7f00_1000_0000);
        tracker.apply(stack(7, 11, &[0x500_0100]));
        tracker.apply(mmap(7, kept, MIB, 11));
        tracker.apply(new_process(7, 9, "app"));
        tracker.apply(stack(7, 12, &[0x500_0200]));
        tracker.apply(mmap(7, gone, MIB, 12));
        let site = |tracker: &Tracker<FakeProc>, pid, at| {
            tracker.processes[&pid].space.region_at(at).unwrap().site
        };
        let (kept_site, gone_site) = (site(&tracker, 7, kept), site(&tracker, 7, gone));
        tracker.apply(exit(7));
        tracker.forget_exited();
        assert_eq!(
            tracker.processes.keys().copied().collect::<Vec<_>>(),
            [8, 9]
        );
        assert_eq!(site(&tracker, 9, kept), kept_site);
        assert_eq!(tracker.sites.get(kept_site).user.len(), 1);
        assert_eq!(
            tracker.sites.get(gone_site).placeholder,
            Some("[forgotten]")
        );
        assert!(!tracker.sites.captured(11));
        tracker.apply(stack(8, 13, &[0x500_0300]));
        tracker.apply(mmap(8, gone, MIB, 13));
        assert_eq!(site(&tracker, 8, gone), gone_site);
        assert_eq!(tracker.sites.get(gone_site).pid, 8);
    }

    /// Beyond `keep_exited`, the processes that exited and grew least are left out and
    /// counted; live ones stay, whatever they grew.
    #[test]
    fn exited_processes_beyond_the_bound_are_left_out_least_growth_first() {
        let maps = "5000000-5002000 r-xp 00001000 fe:00 7 /opt/memprof-test/app\n";
        let mut proc = FakeProc::default().with(1, "init", maps, MIB);
        let children: Vec<u32> = (100..160).collect();
        for &pid in &children {
            proc = proc.with(pid, "child", maps, MIB);
        }
        let mut tracker = Tracker::new(proc, 0, Origin::All, Duration::from_secs(1), 0);
        tracker.keep_exited = Some(10);
        tracker.seed_from_proc(1, 0).unwrap();
        for &pid in &children {
            tracker.apply(new_process(1, pid, "child"));
            // Each grows by as many pages as its pid is above 100.
            let pages = u64::from(pid - 100) + 1;
            tracker.apply(mmap(pid, 0x7f00_0000_0000, pages * 4096, NO_STACK));
        }
        // 20 exited: within the slack over 10 (28), nothing yet; then 60, and 10 are kept.
        for &pid in &children[..20] {
            tracker.apply(exit(pid));
        }
        tracker.trim_exited();
        assert_eq!((tracker.processes.len(), tracker.left_out), (61, 0));
        for &pid in &children[20..] {
            tracker.apply(exit(pid));
        }
        tracker.trim_exited();
        let kept: Vec<u32> = tracker.processes.keys().copied().collect();
        assert_eq!(kept, [1, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159]);
        assert_eq!(tracker.left_out, 50);
    }

    /// The traced process is never left out: tracing ends when it has exited.
    #[test]
    fn the_traced_process_is_kept_whatever_it_grew() {
        let mut proc = FakeProc::default().with(1, "sh", BASH_MAPS, MIB);
        for pid in 2..40 {
            proc = proc.with(pid, "true", BASH_MAPS, MIB);
        }
        let mut tracker = attached(proc, 1);
        tracker.keep_exited = Some(0);
        for pid in 2..40 {
            tracker.apply(new_process(1, pid, "true"));
            tracker.apply(mmap(pid, 0x7f00_0000_0000, MIB, NO_STACK));
            tracker.apply(exit(pid));
        }
        tracker.apply(exit(1));
        tracker.trim_exited();
        assert_eq!(tracker.processes.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(tracker.left_out, 38);
        assert!(tracker.finished());
    }

    #[test]
    fn a_forked_child_copies_its_parent_and_keeps_its_own_counters() {
        let proc = FakeProc::default()
            .with(10, "bash", BASH_MAPS, 3 * MIB)
            .with(11, "bash", BASH_MAPS, MIB);
        let mut tracker = attached(proc, 10);
        tracker.apply(stack(10, 7, &[0x5555_0000_0010]));
        tracker.apply(mmap(10, 0x7f00_1000_0000, 4 * MIB, 7));
        tracker.apply(new_process(10, 11, "bash"));
        let (parent, child) = (&tracker.processes[&10], &tracker.processes[&11]);
        assert_eq!(parent.events.forks, 1);
        assert_eq!(parent.reserved.end, BASH_RESERVED + 4 * MIB);
        assert_eq!(child.reserved.end, parent.reserved.end);
        let sites = |p: &Process| p.space.regions().map(|r| r.site).collect::<Vec<_>>();
        assert_eq!(sites(child), sites(parent), "same regions, same sites");
        assert_eq!((child.resident.end, parent.resident.end), (MIB, 3 * MIB));
        // The child's own calls change the child alone.
        tracker.apply(syscall(
            11,
            libc::SYS_munmap,
            [0x7f00_1000_0000, 4 * MIB, 0, 0, 0, 0],
            0,
            0,
        ));
        assert_eq!(tracker.processes[&11].reserved.end, BASH_RESERVED);
        assert_eq!(tracker.processes[&10].reserved.end, BASH_RESERVED + 4 * MIB);
    }

    #[test]
    fn exec_replaces_the_address_space_and_forgets_the_old_stacks() {
        let proc = FakeProc::default().with(10, "sh -c x", BASH_MAPS, MIB);
        let mut tracker = attached(proc, 10);
        tracker.apply(stack(10, 7, &[0x5555_0000_0010]));
        tracker.apply(mmap(10, 0x7f00_1000_0000, MIB, 7));
        assert_eq!(tracker.processes[&10].site_ids.len(), 1);
        let new_maps = "5600000000-5600002000 r-xp 00000000 fe:00 2 /usr/bin/x\n";
        tracker.proc = tracker.proc.with(10, "x", new_maps, 2 * MIB);
        tracker.apply(exec(10, "x"));
        let p = &tracker.processes[&10];
        assert_eq!((p.command.as_str(), p.events.execs), ("x", 1));
        assert_eq!(p.reserved.end, 0x2000);
        assert_eq!(p.reserved.peak, BASH_RESERVED + MIB, "the peak is history");
        assert!(p.site_ids.is_empty() && p.incomplete.is_none());
        // One that is gone before its new image could be read is said to be incomplete, and
        // named by the command it exec'd.
        tracker.proc.gone.insert(10);
        tracker.apply(exec(10, "y"));
        let p = &tracker.processes[&10];
        assert_eq!((p.reserved.end, p.command.as_str()), (0, "[y]"));
        assert!(
            p.incomplete
                .as_deref()
                .unwrap()
                .contains("exec'd and exited")
        );
    }

    #[test]
    fn a_process_gone_before_proc_is_read_is_kept_from_its_events() {
        let proc = FakeProc::default().with(10, "sh", BASH_MAPS, MIB);
        let mut tracker = Tracker::new(proc, 0, Origin::All, Duration::from_millis(5), 0);
        // `--all`: pid 20's parent is not traced, and 20 was gone before memprof looked.
        tracker.apply(new_process(19, 20, "true"));
        tracker.apply(mmap(20, 0x7f00_0000_0000, MIB, NO_STACK));
        let Event::Exit(mut exited) = exit(20) else {
            unreachable!()
        };
        (exited.vm_size_bytes, exited.vm_rss_bytes, exited.read) = (MIB, 8192, 1);
        tracker.apply(Event::Exit(exited));
        let p = &tracker.processes[&20];
        // Checked against what the kernel counted as it exited.
        let check = p.proc_check.unwrap();
        assert!(check.at_exit && check.vm_size_bytes == MIB && check.vm_rss_bytes == 8192);
        assert_eq!(p.command, "[true]");
        assert!(p.exited && p.incomplete.as_deref().unwrap().contains("exited before"));
        assert_eq!(p.reserved.end, MIB, "its events still count");
        tracker.finish(100, KernelCounts::default());
        assert!(tracker.processes[&20].proc_check.unwrap().at_exit);
        assert!(
            !tracker.finished(),
            "--all ends on Ctrl-C or --duration only"
        );
    }

    #[test]
    fn lost_events_are_counted_and_a_lost_exit_ends_the_process() {
        let proc = FakeProc::default().with(10, "sh", BASH_MAPS, MIB);
        let mut tracker = attached(proc, 10);
        tracker.apply_bytes(&[0xff; 40]);
        tracker.apply_bytes(&[1, 2, 3]);
        assert_eq!(tracker.undecodable(), 2);
        assert!(tracker.vanished().is_empty());
        // Its exit event never came, but /proc says it is gone.
        tracker.proc.gone.insert(10);
        let gone = tracker.vanished();
        assert_eq!(gone, [10]);
        tracker.end_vanished(&gone, 70);
        let p = &tracker.processes[&10];
        assert!(p.exited && p.incomplete.as_deref().unwrap().contains("lost event"));
        assert!(tracker.finished());
        let kernel = KernelCounts {
            lost_events: 5,
            lost_stacks: 1,
            stacks_over_budget: 3,
        };
        tracker.finish(100, kernel);
        assert_eq!(
            (
                tracker.lost_events,
                tracker.lost_stacks,
                tracker.stacks_over_budget
            ),
            (7, 1, 3)
        );
        assert_eq!(tracker.processes[&10].ended_ns, Some(70));
    }

    #[test]
    fn mremap_moves_a_region_with_its_site_and_resident_pages() {
        let proc = FakeProc::default().with(10, "sh", BASH_MAPS, MIB);
        let mut tracker = attached(proc, 10);
        tracker.apply(stack(10, 7, &[0x5555_0000_0010]));
        tracker.apply(mmap(10, 0x7f00_1000_0000, 2 * MIB, 7));
        tracker.apply(faults(10, 0x7f00_1000_0000, 16));
        let (old, new) = (0x7f00_1000_0000_u64, 0x7f00_4000_0000_u64);
        let args = [old, 2 * MIB, 4 * MIB, MREMAP_MAYMOVE, 0, 0];
        tracker.apply(syscall(10, libc::SYS_mremap, args, new as i64, 0));
        let p = &tracker.processes[&10];
        assert!(p.space.region_at(old).is_none());
        let moved = p.space.region_at(new).unwrap();
        assert_eq!((moved.start, moved.end), (new, new + 4 * MIB));
        assert_eq!(p.space.region_resident(moved), 16 * PAGE_SIZE);
        assert_ne!(moved.site, SITE_BEFORE_TRACING);
        assert_eq!(p.reserved.end, BASH_RESERVED + 4 * MIB);
        assert_eq!(p.events.mremap, 1);
    }

    /// A file's path comes from the kernel with its mmap: named though /proc has none (the
    /// process is gone), and only the mapping made where the path said.
    #[test]
    fn a_mapped_file_is_named_from_the_path_the_kernel_sent() {
        let proc = FakeProc::default().with(10, "sh", BASH_MAPS, MIB);
        let mut tracker = attached(proc, 10);
        tracker.proc.gone.insert(10);
        let (lib, other) = (0x7f00_5000_0000, 0x7f00_6000_0000);
        tracker.apply(file_path(10, lib, "/usr/lib/libz.so.1"));
        tracker.apply(file_mmap(10, lib, 0x3000, 3));
        tracker.apply(file_path(10, 0x1000, "/elsewhere"));
        tracker.apply(file_mmap(10, other, 0x1000, 4));
        let space = &tracker.processes[&10].space;
        let path = |at: u64| {
            space
                .region_at(at)
                .unwrap()
                .path
                .as_deref()
                .map(str::to_string)
        };
        assert_eq!(path(lib).as_deref(), Some("/usr/lib/libz.so.1"));
        assert_eq!(path(other), None, "a path for another address");
        assert_eq!(space.region_at(lib).unwrap().kind, RegionKind::File);
    }

    /// The kernel asks for a verdict with a stack's first copy; one whose first copy was
    /// lost is judged at its next, and a stack judged once is not judged again until the
    /// kernel asks.
    #[test]
    fn each_stack_is_judged_once_unless_the_kernel_asks_again() {
        let proc = FakeProc::default().with(10, "sh", BASH_MAPS, MIB);
        let mut tracker = attached(proc, 10);
        tracker.apply(raw_stack(10, 7, true));
        tracker.apply(raw_stack(10, 7, false));
        tracker.apply(raw_stack(10, 8, false));
        tracker.apply(raw_stack(10, 8, false));
        tracker.apply(raw_stack(10, 7, true));
        let verdicts = tracker.take_verdicts();
        let denied = [Verdict::Denied(7), Verdict::Denied(8), Verdict::Denied(7)];
        assert_eq!(verdicts, denied);
    }

    #[test]
    fn a_fault_run_across_regions_is_charged_to_each_regions_site() {
        let proc = FakeProc::default().with(10, "sh", BASH_MAPS, MIB);
        let mut tracker = attached(proc, 10);
        let base = 0x7f00_2000_0000;
        tracker.apply(stack(10, 7, &[0x5555_0000_0010]));
        tracker.apply(stack(10, 9, &[0x5555_0000_0020]));
        tracker.apply(mmap(10, base, 64 * PAGE_SIZE, 7));
        tracker.apply(mmap(10, base + 64 * PAGE_SIZE, 64 * PAGE_SIZE, 9));
        // 40 faults from page 40 on: 24 in the first region, 16 in the second.
        tracker.apply(faults(10, base + 40 * PAGE_SIZE, 40));
        let p = &tracker.processes[&10];
        let site = |at: u64| p.space.region_at(at).unwrap().site;
        let (first, second) = (site(base), site(base + 64 * PAGE_SIZE));
        assert_ne!(first, second);
        let figures = p.site_figures(1);
        assert_eq!(figures[&first].faults_in_regions, 24);
        assert_eq!(figures[&second].faults_in_regions, 16);
        assert_eq!(figures[&first].resident, 24 * PAGE_SIZE);
        assert_eq!(figures[&second].reserved, 64 * PAGE_SIZE);
        assert_eq!(p.events.page_faults, 40);
        let frames = |id| {
            tracker
                .sites
                .get(id)
                .user
                .iter()
                .map(|f| f.address)
                .collect::<Vec<_>>()
        };
        assert_eq!(frames(first), [0x5555_0000_0010]);
        assert_eq!(frames(second), [0x5555_0000_0020]);
        assert_eq!(p.space.region_at(base).unwrap().kind, RegionKind::Anonymous);
    }

    /// The kernel sends a thread's run of faults named by stack id before the thread's next
    /// event, which may come after that event's stack copy: the copy is still the event's.
    #[test]
    fn a_fault_run_between_a_stack_copy_and_its_syscall_leaves_the_copy_to_the_syscall() {
        let proc = FakeProc::default().with(10, "sh", BASH_MAPS, MIB);
        let mut tracker = attached(proc, 10);
        let base = 0x7f00_2000_0000;
        tracker.apply(stack(10, 7, &[0x5555_0000_0010]));
        tracker.apply(mmap(10, base, 64 * PAGE_SIZE, 7));
        tracker.apply(raw_stack(10, 9, false));
        let Event::Fault(mut run) = faults(10, base, 4) else {
            unreachable!()
        };
        run.stack = 7;
        tracker.apply(Event::Fault(run));
        tracker.apply(mmap(10, base + 64 * PAGE_SIZE, 64 * PAGE_SIZE, RAW_STACK));
        let p = &tracker.processes[&10];
        let site = |at: u64| p.space.region_at(at).unwrap().site;
        let first_frame = |at| tracker.sites.get(site(at)).user.first().map(|f| f.address);
        assert_eq!(
            first_frame(base + 64 * PAGE_SIZE),
            Some(0x1000),
            "the copy's"
        );
        assert_eq!(p.site_figures(1)[&site(base)].faults_by_code, 4);
    }

    #[test]
    fn a_launched_command_ends_with_its_last_descendant_and_is_checked_against_proc() {
        let proc = FakeProc::default().with(10, "make", BASH_MAPS, MIB);
        let first = proc.snapshot(10).unwrap();
        let origin = Origin::Launched(Some(first));
        let mut tracker = Tracker::new(proc, 10, origin, Duration::from_millis(5), 0);
        // Before its exec the command is memprof's own fork: nothing is kept.
        tracker.apply(mmap(10, 0x7f00_0000_0000, MIB, NO_STACK));
        assert!(tracker.processes.is_empty());
        tracker.apply(exec(10, "make"));
        assert_eq!(tracker.processes[&10].reserved.end, BASH_RESERVED);
        tracker.proc = tracker.proc.with(11, "cc", BASH_MAPS, MIB);
        tracker.apply(new_process(10, 11, "make"));
        assert_eq!(
            tracker.processes[&11].command, "make",
            "its parent's, when forked"
        );
        tracker.apply(exit(10));
        assert!(!tracker.finished(), "its child still runs");
        tracker.apply(exit(11));
        assert!(tracker.finished());
        // One still running at the end is compared with what /proc says of it, and named as
        // it calls itself then.
        let mut attached = attached(FakeProc::default().with(12, "x", BASH_MAPS, MIB), 12);
        attached.proc = attached.proc.with(12, "x: worker process", BASH_MAPS, MIB);
        attached.finish(100, KernelCounts::default());
        assert_eq!(attached.processes[&12].command, "x: worker process");
        let check = attached.processes[&12].proc_check.unwrap();
        assert_eq!(check.vm_size_bytes, BASH_RESERVED);
        assert!(attached.proc.maps_reads.get() <= 1);
    }

    #[test]
    fn an_image_exec_d_over_before_proc_was_read_is_not_mixed_with_the_next() {
        const ENV_STACK: u64 = 0x7ffc_0000_1000;
        const BASH_STACK: u64 = 0x7ffd_0000_2000;
        let exec_at = |pid, comm, start_stack| {
            let Event::Exec(mut e) = exec(pid, comm) else {
                unreachable!()
            };
            e.start_stack = start_stack;
            Event::Exec(e)
        };
        // /proc already shows bash, with its heap, when env's exec is handled.
        let maps = format!("{BASH_MAPS}555500000000-555500021000 rw-p 00000000 00:00 0 [heap]\n");
        let mut proc = FakeProc::default().with(10, "bash s.sh", &maps, MIB);
        proc.snapshots.get_mut(&10).unwrap().start_stack = Some(BASH_STACK);
        let mut tracker = Tracker::new(proc, 10, Origin::All, Duration::from_millis(5), 0);
        tracker.apply(exec_at(10, "env", ENV_STACK));
        let bash = BASH_RESERVED + 0x21000;
        assert_eq!(tracker.processes[&10].reserved.end, bash);
        // env's heap grows, a terabyte away from bash's: not applied to bash's model.
        tracker.apply(syscall(
            10,
            libc::SYS_brk,
            [0; 6],
            0x5600_0000_0000,
            NO_STACK,
        ));
        assert_eq!(tracker.processes[&10].reserved.peak, bash);
        // bash's exec, when bash is gone already: the image read before stands for it.
        tracker.proc.gone.insert(10);
        tracker.apply(exec_at(10, "bash", BASH_STACK));
        let p = &tracker.processes[&10];
        assert_eq!((p.reserved.end, p.reserved.peak), (bash, bash));
        assert!(p.incomplete.is_none());
        assert!(tracker.later_images.is_empty());
    }
}
