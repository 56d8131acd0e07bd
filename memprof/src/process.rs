//! One traced process: its address space and the figures memprof reports for it, updated
//! event by event. Pure: what it needs from /proc is handed to it.
use std::collections::HashMap;

use memprof_common::{FaultEvent, SHMAT_LENGTH_ARG, SyscallEvent};
use serde::Serialize;

use crate::{
    address_space::{AddressSpace, SiteId},
    order::InOrder,
    procfs::{MapsEntry, Snapshot, Status},
    sites::SiteFigures,
    unwind::Unwound,
};

/// A figure's value when tracing began, when it ended, and the highest in between.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub end: u64,
    pub peak: u64,
}

impl Extent {
    fn new(value: u64) -> Self {
        Self {
            start: value,
            end: value,
            peak: value,
        }
    }

    fn set(&mut self, value: u64) {
        self.end = value;
        self.peak = self.peak.max(value);
    }

    /// How much it grew while traced, to its peak.
    pub fn growth(&self) -> u64 {
        self.peak - self.start
    }
}

/// Resident bytes by kind, as the kernel's RSS counters split them.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ResidentSplit {
    // The JSON contract names every byte figure `…_bytes` (docs/report-json.md).
    #[serde(rename = "anon_bytes")]
    pub anon: u64,
    #[serde(rename = "file_bytes")]
    pub file: u64,
    #[serde(rename = "shmem_bytes")]
    pub shmem: u64,
    #[serde(rename = "swap_bytes")]
    pub swap: u64,
}

impl ResidentSplit {
    pub fn total(&self) -> u64 {
        self.anon + self.file + self.shmem
    }

    pub fn from_status(status: &Status) -> Self {
        Self {
            anon: status.rss_anon,
            file: status.rss_file,
            shmem: status.rss_shmem,
            swap: 0,
        }
    }

    /// Applies a kmem:rss_stat update (`member` as the kernel numbers them).
    fn set(&mut self, member: u32, bytes: u64) {
        match member {
            0 => self.file = bytes,
            1 => self.anon = bytes,
            2 => self.swap = bytes,
            3 => self.shmem = bytes,
            _ => {}
        }
    }
}

/// Events seen for the process, by kind.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct EventCounts {
    pub mmap: u64,
    pub munmap: u64,
    pub mremap: u64,
    pub brk: u64,
    pub mprotect: u64,
    pub madvise: u64,
    pub shmat: u64,
    pub shmdt: u64,
    /// mlock, mlock2, mlockall and munlockall.
    pub mlock: u64,
    /// Memory syscalls that returned an error (they change nothing).
    pub failed_syscalls: u64,
    pub page_faults: u64,
    /// Stack growth found from faults below a growsdown region.
    pub stack_growths: u64,
    /// New values of the resident counters (the kernel sends a value only when it changed).
    pub rss_updates: u64,
    pub forks: u64,
    pub execs: u64,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// CLOCK_MONOTONIC nanoseconds.
    pub monotonic_ns: u64,
    #[serde(rename = "reserved_bytes")]
    pub reserved: u64,
    #[serde(rename = "committed_bytes")]
    pub committed: u64,
    #[serde(rename = "resident_bytes")]
    pub resident: u64,
}

/// The kernel's own figures at the end, to reconcile against: what /proc/PID/status said,
/// or for a process that exited while traced, what the kernel counted as it exited.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProcCheck {
    pub vm_size_bytes: u64,
    pub vm_rss_bytes: u64,
    /// Resident bytes by memprof's own count at the end: the RSS counter changes it followed,
    /// which leave out the per-CPU parts the kernel had not folded in yet. The headline
    /// figure then takes the kernel's exact one, `vm_rss_bytes` (set by [`Process::finish`]).
    pub counted_rss_bytes: u64,
    /// Read by the kernel side as the process exited (its /proc was gone by the end).
    pub at_exit: bool,
}

impl ProcCheck {
    pub fn of_status(status: &Status) -> Self {
        Self {
            vm_size_bytes: status.vm_size,
            vm_rss_bytes: status.vm_rss,
            counted_rss_bytes: 0,
            at_exit: false,
        }
    }
}

/// A memory syscall as the tracker hands it on: the event, the site of the stack that made
/// it, and the path of the file it mapped (the kernel sends it before the mmap's event).
#[derive(Debug)]
pub struct Change {
    pub event: SyscallEvent,
    pub site: SiteId,
    pub path: Option<(u64, String)>,
}

pub struct Process {
    pub pid: u32,
    pub command: String,
    /// Its cgroup v2 path when memprof first saw it (or after its exec).
    pub cgroup: String,
    pub space: AddressSpace,
    pub resident_split: ResidentSplit,
    pub resident_split_start: ResidentSplit,
    pub reserved: Extent,
    pub committed: Extent,
    pub resident: Extent,
    pub events: EventCounts,
    pub timeline: Vec<Sample>,
    pub started_ns: u64,
    pub ended_ns: Option<u64>,
    /// Set when the process exited while traced; its figures are frozen from then on.
    pub exited: bool,
    /// Why the model may not match the kernel, when memprof knows it does not.
    pub incomplete: Option<String>,
    pub proc_check: Option<ProcCheck>,
    /// Page faults that landed in the regions each site reserved.
    pub faults_in_regions: HashMap<SiteId, u64>,
    /// Sampled faults by the stack of the code that made them ("made resident by").
    pub faults_by_code: HashMap<SiteId, u64>,
    /// The sites of this image's stacks by stack id. Ids hash addresses, which mean other
    /// code after exec: cleared then.
    pub site_ids: HashMap<u64, SiteId>,
    /// The sites of this image's unwound stacks, by their frames.
    pub unwound_sites: HashMap<Vec<u64>, SiteId>,
    /// The unwound copies of fault stacks whose frame walk was denied, by stack id: faults
    /// the kernel sent by id before it learnt the verdict stand for them.
    pub copied_stacks: HashMap<u64, Unwound>,
    /// Its memory syscalls, put back in the kernel's order before they are applied.
    changes: InOrder<Change>,
    interval_ns: u64,
    next_sample_ns: u64,
}

impl Process {
    /// A process whose address space memprof learnt from /proc at `now_ns`.
    pub fn from_snapshot(pid: u32, snapshot: Snapshot, now_ns: u64, interval_ns: u64) -> Self {
        let space = AddressSpace::from_maps(&snapshot.maps, snapshot.start_brk);
        let split = snapshot
            .status
            .as_ref()
            .map(ResidentSplit::from_status)
            .unwrap_or_default();
        let mut process = Self::new(pid, snapshot.command, space, split, now_ns, interval_ns);
        process.cgroup = snapshot.cgroup;
        process
    }

    /// A process that was gone before memprof could read it from /proc: only its events
    /// are known (`comm` is the kernel's name for it).
    pub fn unseen(pid: u32, comm: String, now_ns: u64, interval_ns: u64) -> Self {
        let mut process = Self::new(
            pid,
            format!("[{comm}]"),
            AddressSpace::new(),
            ResidentSplit::default(),
            now_ns,
            interval_ns,
        );
        process.incomplete = Some("it exited before memprof could read its maps".into());
        process
    }

    /// A child made by fork: a copy of its parent's address space. `status` is the child's
    /// own, when it could be read: its RSS counters are its own from the start.
    pub fn forked(parent: &Process, pid: u32, now_ns: u64, status: Option<&Status>) -> Self {
        let split = status.map_or(parent.resident_split, ResidentSplit::from_status);
        let mut child = Self::new(
            pid,
            parent.command.clone(),
            parent.space.forked(),
            split,
            now_ns,
            parent.interval_ns,
        );
        child.cgroup = parent.cgroup.clone();
        child
    }

    fn new(
        pid: u32,
        command: String,
        space: AddressSpace,
        resident_split: ResidentSplit,
        now_ns: u64,
        interval_ns: u64,
    ) -> Self {
        let mut process = Self {
            pid,
            command,
            cgroup: String::new(),
            reserved: Extent::new(space.reserved()),
            committed: Extent::new(space.committed()),
            resident: Extent::new(resident_split.total()),
            space,
            resident_split,
            resident_split_start: resident_split,
            events: EventCounts::default(),
            timeline: Vec::new(),
            started_ns: now_ns,
            ended_ns: None,
            exited: false,
            incomplete: None,
            proc_check: None,
            faults_in_regions: HashMap::new(),
            faults_by_code: HashMap::new(),
            site_ids: HashMap::new(),
            unwound_sites: HashMap::new(),
            copied_stacks: HashMap::new(),
            changes: InOrder::default(),
            interval_ns: interval_ns.max(1),
            next_sample_ns: now_ns,
        };
        process.advance_to(now_ns);
        process
    }

    /// Replaces the address space after exec, from `snapshot` of the new image (the figures'
    /// history goes on); `comm`, the new command name the kernel sent, names it when there is
    /// none.
    pub fn exec(&mut self, snapshot: Option<Snapshot>, comm: &str) {
        self.apply_held();
        self.events.execs += 1;
        self.site_ids.clear();
        self.unwound_sites.clear();
        self.copied_stacks.clear();
        match snapshot {
            Some(s) => {
                self.command = s.command;
                self.cgroup = s.cgroup;
                self.space
                    .replace(AddressSpace::from_maps(&s.maps, s.start_brk));
                if let Some(status) = &s.status {
                    self.resident_split = ResidentSplit::from_status(status);
                }
            }
            None => {
                self.command = format!("[{comm}]");
                self.space.replace(AddressSpace::new());
                self.incomplete =
                    Some("it exec'd and exited before memprof could read its new maps".into());
            }
        }
        self.update_figures();
    }

    /// Takes timeline samples for every interval boundary up to `ts_ns`, with the state as
    /// it was before the event stamped `ts_ns` is applied.
    pub fn advance_to(&mut self, ts_ns: u64) {
        while self.next_sample_ns <= ts_ns {
            self.timeline.push(Sample {
                monotonic_ns: self.next_sample_ns,
                reserved: self.space.reserved(),
                committed: self.space.committed(),
                resident: self.resident_split.total(),
            });
            self.next_sample_ns += self.interval_ns;
        }
    }

    /// Takes a memory syscall: applies it, and the ones it held back, once every change the
    /// kernel made to the address space before it is applied.
    pub fn take_change(&mut self, change: Change) {
        let (number, sent_ns) = (change.event.order, change.event.header.ts_ns);
        if let Some(change) = self.changes.take(number, sent_ns, change) {
            self.apply_change(change);
            while let Some(freed) = self.changes.next_due() {
                self.apply_change(freed);
            }
        }
    }

    /// Applies the changes that waited in vain for the one before them (see [`InOrder`]).
    pub fn apply_overdue(&mut self, now_ns: u64) {
        while let Some(change) = self
            .changes
            .next_due()
            .or_else(|| self.changes.next_overdue(now_ns))
        {
            self.apply_change(change);
        }
    }

    /// Applies every change held back: before the address space is copied (fork), replaced
    /// (exec) or gone (exit, end of tracing).
    pub fn apply_held(&mut self) {
        for change in self.changes.drain() {
            self.apply_change(change);
        }
    }

    fn apply_change(&mut self, change: Change) {
        self.apply_syscall(&change.event, change.site);
        if let Some((address, path)) = change.path {
            self.space.name_file(address, &path);
        }
    }

    /// Applies a memory syscall made from call stack `site`.
    fn apply_syscall(&mut self, event: &SyscallEvent, site: SiteId) {
        let [a0, a1, a2, a3, a4, a5] = event.args;
        let ret = event.ret;
        let counter = match i64::from(event.nr) {
            libc::SYS_mmap => &mut self.events.mmap,
            libc::SYS_munmap => &mut self.events.munmap,
            libc::SYS_mremap => &mut self.events.mremap,
            libc::SYS_brk => &mut self.events.brk,
            libc::SYS_mprotect => &mut self.events.mprotect,
            libc::SYS_madvise => &mut self.events.madvise,
            libc::SYS_shmat => &mut self.events.shmat,
            libc::SYS_shmdt => &mut self.events.shmdt,
            libc::SYS_mlock | libc::SYS_mlock2 | libc::SYS_mlockall | libc::SYS_munlockall => {
                &mut self.events.mlock
            }
            _ => return,
        };
        *counter += 1;
        // brk reports failure by returning the unchanged break, never a negative value.
        if ret < 0 {
            self.events.failed_syscalls += 1;
            return;
        }
        let shmat_length = event.args[SHMAT_LENGTH_ARG];
        if i64::from(event.nr) == libc::SYS_shmat && shmat_length == 0 {
            // The kernel could not look up the mapping (its lock was taken): not modelled.
            self.incomplete = Some("the size of a SysV segment it attached was not read".into());
            return;
        }
        let space = &mut self.space;
        match i64::from(event.nr) {
            libc::SYS_mmap => space.mmap(ret as u64, a1, a2, a3, a4 as i64, a5, site),
            libc::SYS_munmap => space.munmap(a0, a1),
            libc::SYS_mremap => space.mremap(a0, a1, a2, a3, ret as u64),
            libc::SYS_brk => space.brk(ret as u64, site),
            libc::SYS_mprotect => space.mprotect(a0, a1, a2),
            libc::SYS_madvise => space.madvise(a0, a1, a2),
            libc::SYS_shmat => space.shmat(ret as u64, shmat_length, a2, site),
            libc::SYS_shmdt => space.shmdt(a0),
            libc::SYS_mlock => space.mlock(a0, a1, 0),
            libc::SYS_mlock2 => space.mlock(a0, a1, a2),
            libc::SYS_mlockall => space.mlockall(a0),
            libc::SYS_munlockall => space.munlockall(),
            _ => unreachable!("filtered above"),
        }
        self.update_figures();
    }

    /// Applies a run of page faults; `stack` is the faulting code's site when they were
    /// sampled (every fault of a run has its stack).
    pub fn apply_fault(&mut self, event: &FaultEvent, stack: Option<SiteId>) {
        self.events.page_faults += event.pages;
        let before = self.space.reserved();
        let in_regions = &mut self.faults_in_regions;
        self.space
            .fault_run(event.address, event.pages, event.error_code, |site, n| {
                *in_regions.entry(site).or_default() += n;
            });
        if let Some(stack) = stack {
            *self.faults_by_code.entry(stack).or_default() += event.pages;
        }
        if self.space.reserved() != before {
            self.events.stack_growths += 1;
            self.update_figures();
        }
    }

    pub fn apply_rss(&mut self, member: u32, bytes: i64) {
        self.events.rss_updates += 1;
        self.resident_split.set(member, bytes.max(0) as u64);
        self.resident.set(self.resident_split.total());
    }

    fn update_figures(&mut self) {
        self.reserved.set(self.space.reserved());
        self.committed.set(self.space.committed());
        self.resident.set(self.resident_split.total());
    }

    /// Whether file mappings made since the last [`Process::name_files`] wait for their
    /// paths, which only /proc/PID/maps can give while the process lives.
    pub fn has_unnamed_files(&self) -> bool {
        !self.exited && self.space.has_unnamed_files()
    }

    /// Fills in the paths of file mappings from a fresh /proc/PID/maps.
    pub fn name_files(&mut self, maps: &[MapsEntry]) {
        self.space.name_files(maps);
    }

    /// Ends tracing of this process at `ts_ns`: its exit, or the end of the run, when
    /// `check` is what the kernel said then, to reconcile against.
    pub fn finish(&mut self, ts_ns: u64, exited: bool, check: Option<ProcCheck>) {
        if self.ended_ns.is_some() {
            return;
        }
        self.apply_held();
        self.advance_to(ts_ns);
        self.ended_ns = Some(ts_ns);
        self.exited = exited;
        // At rest, the kernel's figure is exact (its per-CPU parts summed): the headline
        // ends on it, and the check keeps what memprof had counted.
        self.proc_check = check.map(|check| {
            let counted_rss_bytes = self.resident.end;
            self.resident.set(check.vm_rss_bytes);
            ProcCheck {
                counted_rss_bytes,
                ..check
            }
        });
    }

    /// Ends on the kernel's own resident bytes of each mapping (see
    /// [`AddressSpace::settle_resident`]): the headline is their sum, so that it, the sites
    /// and the categories add up to one figure.
    pub fn settle_resident(&mut self, smaps: &[MapsEntry]) {
        let resident = self.space.settle_resident(smaps);
        self.resident.set(resident);
    }

    /// Every region, fault and release charged to the site that reserved the memory, and
    /// the sampled faults to the stack of the code that made them (scaled by
    /// `fault_sample`).
    pub fn site_figures(&self, fault_sample: u64) -> HashMap<SiteId, SiteFigures> {
        let mut figures: HashMap<SiteId, SiteFigures> = HashMap::new();
        for r in self.space.regions() {
            let f = figures.entry(r.site).or_default();
            f.reserved += r.size();
            f.committed += r.committed();
            f.resident += self.space.region_resident(r);
        }
        for (&site, &n) in &self.faults_in_regions {
            figures.entry(site).or_default().faults_in_regions += n;
        }
        for (site, bytes) in self.space.released_by_site() {
            figures.entry(site).or_default().released += bytes;
        }
        for (&site, &n) in &self.faults_by_code {
            figures.entry(site).or_default().faults_by_code += n * fault_sample;
        }
        figures
    }

    /// Every site this process's figures and caches name, for [`crate::sites::Sites::forget`].
    pub fn sites_used(&self) -> impl Iterator<Item = SiteId> + '_ {
        self.space
            .regions()
            .flat_map(|r| [r.site, r.reservation])
            .chain(self.space.released_by_site().map(|(site, _)| site))
            .chain(self.faults_in_regions.keys().copied())
            .chain(self.faults_by_code.keys().copied())
            .chain(self.site_ids.values().copied())
            .chain(self.unwound_sites.values().copied())
    }

    pub fn traced_ns(&self) -> u64 {
        // Events are stamped to the kernel's tick, its start when memprof saw it: an exit
        // can carry a stamp a tick before that start.
        self.ended_ns
            .unwrap_or(self.started_ns)
            .saturating_sub(self.started_ns)
    }
}
