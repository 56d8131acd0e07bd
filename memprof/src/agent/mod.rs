//! `memprof agent`: traces the host (or the filtered part of it) until stopped and serves what
//! it sees over HTTP: Prometheus metrics at `/metrics`, pprof profiles of the live sites at
//! `/debug/pprof/`. It may run for days: a process that exits is counted in one snapshot
//! (its page faults stay in its label set's counter) and then forgotten, as `top` does.
//!
//! The session's loop calls [`Agent::refresh`] every `refresh`; each call publishes a
//! [`Snapshot`], plain data the HTTP server (its own thread, [`http`]) reads without
//! touching the tracker. Symbolizing is left to the server, on request: it reads binaries
//! from disk, which must not hold up the ring buffer.
mod http;
mod labels;
mod metrics;
mod profiles;
mod push;

/// Pyroscope's push messages, as memprof sends them.
pub use push::{LabelPair, PushRequest, PushTarget, RawProfileSeries, RawSample};

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;

use crate::{
    address_space::{PAGE_SIZE, SiteId},
    events::monotonic_ns,
    export::program_name,
    filter::{FilterSpec, ProcessFilter},
    probes::{self, LoadOptions, Probes},
    process::{Process, ResidentSplit},
    procfs::ProcSource,
    session::{Flow, Session, Watch},
    sites::{Site, SiteFigures},
    tracker::Tracker,
};

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub filter: FilterSpec,
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// How often the figures served are taken from the tracker.
    pub refresh: Duration,
    /// Also export per-process series for this many processes, the most reserved first.
    pub per_pid: Option<usize>,
    /// The sites of a process served apart; the rest are folded into one.
    pub max_sites_per_process: usize,
    /// Push the profiles to Pyroscope at this URL (`http://HOST:PORT`) every `push_interval`.
    pub push_url: Option<String>,
    pub push_interval: Duration,
    /// Record the stack of one fault in this many; None: no fault stacks.
    pub fault_stacks: Option<u32>,
    /// Slots of the kernel's cache of stacks it sent (a power of two).
    pub stack_cache_slots: u32,
    /// Size of the kernel-to-memprof ring buffer (a power of two, at least a page).
    pub ring_buffer_bytes: u32,
}

/// What Prometheus labels a process's series with.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Group {
    /// The program's name: the first word of its command line, without its directory.
    pub comm: Arc<str>,
    /// Its cgroup v2 path ("" when /proc did not say).
    pub cgroup: Arc<str>,
    /// The systemd unit the cgroup is (or is in), "" when none: derived from the cgroup,
    /// as is `container`, so neither adds series.
    pub unit: Arc<str>,
    /// The container id the cgroup names, "" when none.
    pub container: Arc<str>,
}

impl Group {
    pub fn new(comm: &str, cgroup: &str) -> Self {
        Self {
            comm: comm.into(),
            cgroup: cgroup.into(),
            unit: labels::unit(cgroup).into(),
            container: labels::container(cgroup).into(),
        }
    }
}

/// One process's figures when the snapshot was taken.
#[derive(Clone, Debug)]
pub struct ProcessFigures {
    pub pid: u32,
    pub group: Group,
    pub reserved: u64,
    pub committed: u64,
    pub resident: ResidentSplit,
    pub page_faults: u64,
}

/// The figures of the processes that share a [`Group`], summed.
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupFigures {
    /// Live processes (one that exited since the last snapshot is not counted).
    pub processes: u64,
    pub reserved: u64,
    pub committed: u64,
    pub resident: ResidentSplit,
    /// Page faults of the group's processes since memprof traced them, those of processes
    /// that exited while the group had live ones included: a counter.
    pub page_faults: u64,
    /// Live sites of its processes folded into their `[other sites]`
    /// (`--max-sites-per-process`).
    pub sites_folded: u64,
}

/// A live site's figures in one process, with its stack, not yet symbolized.
#[derive(Clone, Debug)]
pub struct SiteRow {
    pub pid: u32,
    pub group: Group,
    pub site: Arc<Site>,
    pub reserved: u64,
    pub resident: u64,
    /// Faults made by code with this stack (scaled by the sampling rate).
    pub faults_by_code: u64,
}

/// What the server serves, as of one refresh.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// CLOCK_MONOTONIC nanoseconds when it was taken.
    pub taken_ns: u64,
    /// The same instant, in nanoseconds since the Unix epoch (pprof's time).
    pub taken_unix_ns: u64,
    /// When tracing started, CLOCK_MONOTONIC nanoseconds.
    pub started_ns: u64,
    pub groups: BTreeMap<Group, GroupFigures>,
    /// The live processes.
    pub processes: Vec<ProcessFigures>,
    pub sites: Vec<SiteRow>,
    pub lost_events: u64,
    /// With fault stacks, one fault in this many is recorded; 0: off.
    pub fault_sample: u32,
}

/// The latest snapshot, replaced whole at every refresh.
pub type Shared = Arc<Mutex<Arc<Snapshot>>>;

fn group_of(p: &Process, names: &mut HashMap<(String, String), Group>) -> Group {
    let key = (program_name(&p.command).to_string(), p.cgroup.clone());
    names
        .entry(key)
        .or_insert_with_key(|(comm, cgroup)| Group::new(comm, cgroup))
        .clone()
}

/// The [`Watch`] that turns the tracker into snapshots.
struct Agent {
    refresh: Duration,
    fault_sample: u32,
    shared: Shared,
    /// Page faults of processes already forgotten, by the group they were in; kept while
    /// the group has live processes, so that its counter never goes down.
    forgotten_faults: HashMap<Group, u64>,
    /// The stacks of the live sites, shared with the snapshots rather than copied each time.
    stacks: HashMap<SiteId, Arc<Site>>,
    /// `--max-sites-per-process`.
    max_sites: usize,
    /// Each process's `[other sites]`, the same from one snapshot to the next so that a
    /// delta profile tells its growth.
    other_sites: HashMap<u32, Arc<Site>>,
}

/// The frame that stands for the sites of a process over `--max-sites-per-process`.
pub const OTHER_SITES: &str = "[other sites]";

/// What [`fold_smallest`] folded: how many sites, and their figures summed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Folded {
    sites: u64,
    figures: SiteFigures,
}

/// Keeps the `max` largest of `sites` (by the bytes they stand for: reserved, resident and
/// a page for each fault their code made) and folds the others into one, so that a process
/// with a site per request serves a bounded profile and no byte goes missing; None when
/// they were no more than `max`.
fn fold_smallest(sites: &mut Vec<(SiteId, SiteFigures)>, max: usize) -> Option<Folded> {
    if sites.len() <= max {
        return None;
    }
    let weight = |f: &SiteFigures| {
        f.reserved
            .saturating_add(f.resident)
            .saturating_add(f.faults_by_code.saturating_mul(PAGE_SIZE))
    };
    // Ties broken by id so that the same sites are kept from one snapshot to the next.
    sites.select_nth_unstable_by_key(max, |(id, f)| (std::cmp::Reverse(weight(f)), *id));
    let mut folded = Folded::default();
    for (_, f) in sites.drain(max..) {
        folded.sites += 1;
        folded.figures.reserved += f.reserved;
        folded.figures.committed += f.committed;
        folded.figures.resident += f.resident;
        folded.figures.faults_in_regions += f.faults_in_regions;
        folded.figures.released += f.released;
        folded.figures.faults_by_code += f.faults_by_code;
    }
    Some(folded)
}

impl Agent {
    fn snapshot<P: ProcSource>(&mut self, tracker: &Tracker<P>, lost_events: u64) -> Snapshot {
        let mut names = HashMap::new();
        let mut groups: BTreeMap<Group, GroupFigures> = BTreeMap::new();
        let mut processes = Vec::new();
        let mut sites = Vec::new();
        let mut stacks = HashMap::new();
        let mut other_sites = HashMap::new();
        for p in tracker.processes.values() {
            let group = group_of(p, &mut names);
            let figures = groups.entry(group.clone()).or_default();
            figures.page_faults += p.events.page_faults;
            if p.exited {
                continue;
            }
            let committed = p.space.committed();
            figures.processes += 1;
            figures.reserved += p.reserved.end;
            figures.committed += committed;
            add_split(&mut figures.resident, &p.resident_split);
            processes.push(ProcessFigures {
                pid: p.pid,
                group: group.clone(),
                reserved: p.reserved.end,
                committed,
                resident: p.resident_split,
                page_faults: p.events.page_faults,
            });
            let mut live: Vec<(SiteId, SiteFigures)> = p
                .site_figures(u64::from(self.fault_sample.max(1)))
                .into_iter()
                .filter(|(_, f)| f.reserved != 0 || f.resident != 0 || f.faults_by_code != 0)
                .collect();
            if let Some(rest) = fold_smallest(&mut live, self.max_sites) {
                figures.sites_folded += rest.sites;
                let site = self.other_sites.remove(&p.pid).unwrap_or_else(|| {
                    Arc::new(Site {
                        pid: p.pid,
                        user: Vec::new(),
                        placeholder: Some(OTHER_SITES),
                        complete: None,
                        cut: false,
                    })
                });
                other_sites.insert(p.pid, site.clone());
                sites.push(SiteRow {
                    pid: p.pid,
                    group: group.clone(),
                    site,
                    reserved: rest.figures.reserved,
                    resident: rest.figures.resident,
                    faults_by_code: rest.figures.faults_by_code,
                });
            }
            for (id, f) in live {
                let site = self
                    .stacks
                    .remove(&id)
                    .unwrap_or_else(|| Arc::new(tracker.sites.get(id).clone()));
                stacks.insert(id, site.clone());
                sites.push(SiteRow {
                    pid: p.pid,
                    group: group.clone(),
                    site,
                    reserved: f.reserved,
                    resident: f.resident,
                    faults_by_code: f.faults_by_code,
                });
            }
        }
        self.stacks = stacks;
        self.other_sites = other_sites;
        for (group, figures) in &mut groups {
            figures.page_faults += self.forgotten_faults.get(group).copied().unwrap_or(0);
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Snapshot {
            taken_ns: monotonic_ns(),
            taken_unix_ns: u64::try_from(unix.as_nanos()).unwrap_or(u64::MAX),
            started_ns: tracker.started_ns,
            groups,
            processes,
            sites,
            lost_events,
            fault_sample: self.fault_sample,
        }
    }
}

fn add_split(sum: &mut ResidentSplit, split: &ResidentSplit) {
    sum.anon += split.anon;
    sum.file += split.file;
    sum.shmem += split.shmem;
    sum.swap += split.swap;
}

impl Watch for Agent {
    fn refresh_every(&self) -> Duration {
        self.refresh
    }

    fn refresh(&mut self, tracker: &mut Tracker, lost_events: u64) -> anyhow::Result<Flow> {
        self.update(tracker, lost_events);
        Ok(Flow::Continue)
    }

    fn reads_terminal(&self) -> bool {
        false
    }

    fn terminal_input(&mut self) -> anyhow::Result<Flow> {
        Ok(Flow::Continue)
    }
}

impl Agent {
    /// Publishes a snapshot, then forgets the processes that exited.
    fn update<P: ProcSource>(&mut self, tracker: &mut Tracker<P>, lost_events: u64) {
        let snapshot = self.snapshot(tracker, lost_events);
        // Served once as exited, then forgotten: the agent may run for days.
        let mut names = HashMap::new();
        for p in tracker.processes.values().filter(|p| p.exited) {
            *self
                .forgotten_faults
                .entry(group_of(p, &mut names))
                .or_default() += p.events.page_faults;
        }
        tracker.forget_exited();
        let live = &snapshot.groups;
        self.forgotten_faults
            .retain(|group, _| live.get(group).is_some_and(|g| g.processes > 0));
        self.publish(snapshot);
    }

    fn publish(&self, snapshot: Snapshot) {
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }
}

/// Traces until SIGINT, SIGTERM or SIGHUP, serving metrics and profiles meanwhile.
pub fn run(options: AgentOptions) -> anyhow::Result<()> {
    let filter = ProcessFilter::new(&options.filter)?;
    // Before anything is loaded: a port in use is the user's to fix, at once.
    let listener = TcpListener::bind(options.listen)
        .with_context(|| format!("listening on {}", options.listen))?;
    let listen = listener.local_addr()?;
    let push = match &options.push_url {
        Some(url) => Some((
            PushTarget::parse(url).map_err(|e| anyhow::anyhow!("--push-url {url}: {e}"))?,
            options.push_interval,
        )),
        None => None,
    };
    let layout = probes::check_machine()?;
    let fault_sample = options.fault_stacks.unwrap_or(0);
    let (probes, events) = Probes::load(&LoadOptions {
        ring_buffer_bytes: options.ring_buffer_bytes,
        stack_cache_slots: options.stack_cache_slots,
        fault_stack_sample: fault_sample,
        filter: filter.kernel(std::process::id()),
        user_stacks: true,
        layout,
        empty_programs: false,
    })?;
    let (mut session, runtime, stop, running) = Session::of_host(probes, &filter)?;
    let mut agent = Agent {
        refresh: options.refresh,
        fault_sample,
        shared: Shared::default(),
        forgotten_faults: HashMap::new(),
        stacks: HashMap::new(),
        max_sites: options.max_sites_per_process,
        other_sites: HashMap::new(),
    };
    // Served from the first request on, not only after the first refresh.
    let first = agent.snapshot(&session.tracker, 0);
    agent.publish(first);
    http::serve(
        listener,
        http::Config {
            shared: agent.shared.clone(),
            per_pid: options.per_pid,
            push,
        },
    )?;
    crate::note!(
        "memprof: tracing {} ({running} running now); serving http://{listen}/metrics and \
         http://{listen}/debug/pprof/; Ctrl-C to stop",
        filter.describe()
    );
    runtime.block_on(session.run(events, stop, None, Some(&mut agent)))?;
    crate::note!("memprof: lost events: {}", session.tracker.lost_events);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        session::NO_TIMELINE,
        testing::{FakeProc, MIB, exit, faults, mmap, stack},
        tracker::Origin,
    };

    const MAPS: &str = "5000000-5002000 r-xp 00001000 fe:00 7 /opt/memprof-test/app\n";

    fn agent() -> Agent {
        Agent {
            refresh: Duration::from_secs(1),
            fault_sample: 0,
            shared: Shared::default(),
            forgotten_faults: HashMap::new(),
            stacks: HashMap::new(),
            max_sites: 2000,
            other_sites: HashMap::new(),
        }
    }

    fn served(agent: &Agent) -> Arc<Snapshot> {
        agent.shared.lock().unwrap().clone()
    }

    /// Processes that share a program and cgroup are summed; one that exits is served once
    /// more, then forgotten, its faults kept in its group's counter.
    #[test]
    fn groups_sum_and_exited_processes_are_forgotten() {
        let proc = FakeProc::default()
            .with(7, "/usr/bin/app --serve", MAPS, 3 * MIB)
            .with(8, "app", MAPS, 3 * MIB)
            .with(9, "other", MAPS, MIB);
        let mut tracker = Tracker::new(proc, 0, Origin::All, NO_TIMELINE, 0);
        for pid in [7, 8, 9] {
            tracker.seed_from_proc(pid, 0).unwrap();
        }
        tracker.apply(mmap(8, 0x7f00_0000_0000, 8 * MIB, 0));
        let mut agent = agent();
        agent.update(&mut tracker, 0);
        let snapshot = served(&agent);
        let app = snapshot
            .groups
            .iter()
            .find(|(g, _)| &*g.comm == "app")
            .map(|(_, f)| *f)
            .unwrap();
        assert_eq!(app.processes, 2);
        assert_eq!(app.reserved, 2 * 0x2000 + 8 * MIB);
        assert_eq!(snapshot.processes.len(), 3);

        tracker.apply(faults(8, 0x7f00_0000_0000, 3));
        agent.update(&mut tracker, 0);
        let app_faults = |agent: &Agent| {
            let snapshot = served(agent);
            let (_, app) = snapshot
                .groups
                .iter()
                .find(|(g, _)| &*g.comm == "app")
                .unwrap();
            app.page_faults
        };
        assert_eq!(app_faults(&agent), 3);
        tracker.apply(exit(8));
        agent.update(&mut tracker, 0);
        let snapshot = served(&agent);
        assert_eq!(snapshot.processes.len(), 2);
        assert!(!tracker.processes.contains_key(&8));
        assert_eq!(app_faults(&agent), 3);
        agent.update(&mut tracker, 0);
        // Still counted, with pid 7 alone left in the group.
        assert_eq!(app_faults(&agent), 3);
        assert_eq!(served(&agent).processes.len(), 2);
    }

    #[test]
    fn the_smallest_sites_are_folded_and_counted() {
        let figures = |reserved, resident, faults_by_code| SiteFigures {
            reserved,
            resident,
            faults_by_code,
            ..SiteFigures::default()
        };
        let mut sites = vec![
            (1, figures(10, 0, 0)),
            (2, figures(0, 0, 1)),
            (3, figures(100, 50, 0)),
            (4, figures(10, 0, 0)),
            (5, figures(0, 4096, 0)),
        ];
        assert_eq!(fold_smallest(&mut sites.clone(), 5), None);
        let folded = fold_smallest(&mut sites, 2).unwrap();
        // A fault made by a site's code weighs a page: 2 and 5 outweigh the rest but 3.
        let mut kept: Vec<SiteId> = sites.iter().map(|(id, _)| *id).collect();
        kept.sort_unstable();
        assert_eq!(kept, [2, 5]);
        assert_eq!(
            folded,
            Folded {
                sites: 3,
                figures: figures(120, 50, 0)
            }
        );
    }

    /// Over `--max-sites-per-process`, a process's smallest sites are served as one
    /// `[other sites]`, the same from one snapshot to the next, and their bytes are all
    /// there.
    #[test]
    fn profiles_keep_every_byte_of_the_sites_over_the_cap() {
        let proc = FakeProc::default().with(7, "app", MAPS, MIB);
        let mut tracker = Tracker::new(proc, 0, Origin::All, NO_TIMELINE, 0);
        tracker.seed_from_proc(7, 0).unwrap();
        for i in 1..=5u64 {
            tracker.apply(stack(7, 10 + i, &[0x500_0000 + 0x100 * i]));
            tracker.apply(mmap(7, 0x7f00_0000_0000 + i * 0x1000_0000, i * MIB, 10 + i));
        }
        let mut agent = Agent {
            max_sites: 2,
            ..agent()
        };
        agent.update(&mut tracker, 0);
        let snapshot = served(&agent);
        let rows: Vec<(Option<&str>, u64)> = snapshot
            .sites
            .iter()
            .filter(|r| r.reserved >= MIB)
            .map(|r| (r.site.placeholder, r.reserved))
            .collect();
        let mut sizes: Vec<u64> = rows.iter().map(|&(_, bytes)| bytes / MIB).collect();
        sizes.sort_unstable();
        // 4 and 5 MiB apart, 1 + 2 + 3 folded (the seeded region's site is smaller still).
        assert_eq!(sizes, [4, 5, 6], "{rows:?}");
        assert!(rows.contains(&(Some(OTHER_SITES), 6 * MIB + 0x2000)));
        let (_, app) = snapshot.groups.iter().next().unwrap();
        assert_eq!(app.sites_folded, 4);
        let served_bytes: u64 = snapshot.sites.iter().map(|r| r.reserved).sum();
        assert_eq!(served_bytes, app.reserved);
        let other = |s: &Snapshot| {
            s.sites
                .iter()
                .find(|r| r.site.placeholder == Some(OTHER_SITES))
                .map(|r| Arc::as_ptr(&r.site))
        };
        agent.update(&mut tracker, 0);
        assert_eq!(other(&served(&agent)), other(&snapshot));
    }
}
