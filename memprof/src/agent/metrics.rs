//! `/metrics`: a snapshot in the Prometheus text exposition format, with the official
//! `prometheus-client` crate. Series are labelled by program and cgroup, summed over the
//! processes that share them: their number stays that of the programs running, whatever
//! the churn. Per-process series only when asked for, and capped.
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{Group, Snapshot, http::PushCounts};
use crate::process::ResidentSplit;

pub(super) use prometheus_text::CONTENT_TYPE;

/// A program in a cgroup; `unit` and `container` are read from the cgroup's path ("" when
/// it names none), so they add no series of their own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GroupLabels {
    comm: String,
    cgroup: String,
    unit: String,
    container: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    #[prometheus(flatten)]
    group: GroupLabels,
    kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PidLabels {
    pid: u32,
    #[prometheus(flatten)]
    group: GroupLabels,
}

fn labels(group: &Group) -> GroupLabels {
    GroupLabels {
        comm: group.comm.to_string(),
        cgroup: group.cgroup.to_string(),
        unit: group.unit.to_string(),
        container: group.container.to_string(),
    }
}

fn gauge(bytes: u64) -> Gauge {
    let gauge = Gauge::default();
    gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    gauge
}

fn counter(count: u64) -> Counter {
    let counter = Counter::default();
    counter.inc_by(count);
    counter
}

/// A gauge family, registered under `name`.
fn gauges<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Gauge>
where
    L: EncodeLabelSet + Clone + Eq + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static,
{
    let family = Family::<L, Gauge>::default();
    registry.register(name, help, family.clone());
    family
}

fn set<L: Clone + Eq + std::hash::Hash>(family: &Family<L, Gauge>, labels: L, value: u64) {
    family
        .get_or_create(&labels)
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}

/// The resident bytes by kind, as the kernel's counters split them (swap is not resident).
fn kinds(split: &ResidentSplit) -> [(&'static str, u64); 3] {
    [
        ("anon", split.anon),
        ("file", split.file),
        ("shmem", split.shmem),
    ]
}

/// The exposition of `snapshot`; with `per_pid`, per-process series for the most reserved
/// processes, and how many were left out.
pub(super) fn encode(
    snapshot: &Snapshot,
    per_pid: Option<usize>,
    pushes: Option<PushCounts>,
) -> String {
    let mut registry = Registry::default();
    let reserved = gauges(
        &mut registry,
        "memprof_reserved_bytes",
        "Address space mapped (VSZ, the sum of VmSize) by the live processes of a program and cgroup",
    );
    let committed = gauges(
        &mut registry,
        "memprof_committed_bytes",
        "Reserved bytes whose protection allows access (not PROT_NONE)",
    );
    // By kind alone, so that a sum over the labels means something: the kinds add up to RSS.
    let resident = gauges(
        &mut registry,
        "memprof_resident_bytes",
        "Bytes backed by physical pages (RSS: the kinds anon, file and shmem add up to VmRSS)",
    );
    let processes = gauges(
        &mut registry,
        "memprof_processes",
        "Live traced processes of a program and cgroup",
    );
    let folded = gauges(
        &mut registry,
        "memprof_sites_folded",
        "Live sites of a program and cgroup's processes that the profiles fold into one \
         [other sites] frame per process (over --max-sites-per-process)",
    );
    let faults = Family::<GroupLabels, Counter>::default();
    registry.register(
        "memprof_page_faults",
        "Page faults of a program and cgroup's processes since memprof traced them",
        faults.clone(),
    );
    for (group, figures) in &snapshot.groups {
        let l = labels(group);
        faults.get_or_create(&l).inc_by(figures.page_faults);
        if figures.processes == 0 {
            // Its processes all exited: only their faults are left to count, this once.
            continue;
        }
        set(&reserved, l.clone(), figures.reserved);
        set(&committed, l.clone(), figures.committed);
        set(&processes, l.clone(), figures.processes);
        set(&folded, l.clone(), figures.sites_folded);
        for (kind, bytes) in kinds(&figures.resident) {
            let l = KindLabels {
                group: l.clone(),
                kind,
            };
            set(&resident, l, bytes);
        }
    }
    registry.register(
        "memprof_lost_events",
        "Events the kernel could not deliver to memprof (a full ring buffer): figures may be off when not 0",
        counter(snapshot.lost_events),
    );
    registry.register(
        "memprof_traced_seconds",
        "How long memprof has traced",
        gauge(snapshot.taken_ns.saturating_sub(snapshot.started_ns) / 1_000_000_000),
    );
    if let Some(limit) = per_pid {
        per_process(&mut registry, snapshot, limit);
    }
    if let Some(pushes) = pushes {
        registry.register(
            "memprof_pushes",
            "Pushes of the profiles to --push-url that it accepted",
            counter(pushes.pushed),
        );
        registry.register(
            "memprof_push_failures",
            "Pushes of the profiles to --push-url that failed (memprof said why on stderr)",
            counter(pushes.failed),
        );
    }
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

/// `--per-pid N`: the N most reserved processes each get series of their own.
fn per_process(registry: &mut Registry, snapshot: &Snapshot, limit: usize) {
    let reserved = gauges(
        registry,
        "memprof_process_reserved_bytes",
        "Address space mapped by one process (VmSize), for the processes most reserved",
    );
    let committed = gauges(
        registry,
        "memprof_process_committed_bytes",
        "Committed bytes of one process",
    );
    let resident = gauges(
        registry,
        "memprof_process_resident_bytes",
        "Resident bytes of one process (VmRSS)",
    );
    let mut order: Vec<_> = snapshot.processes.iter().collect();
    order.sort_by_key(|p| (std::cmp::Reverse(p.reserved), p.pid));
    for p in order.iter().take(limit) {
        let l = PidLabels {
            pid: p.pid,
            group: labels(&p.group),
        };
        set(&reserved, l.clone(), p.reserved);
        set(&committed, l.clone(), p.committed);
        set(&resident, l, p.resident.total());
    }
    registry.register(
        "memprof_processes_not_listed",
        "Live processes left out of the per-process series (over --per-pid)",
        gauge(order.len().saturating_sub(limit) as u64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{GroupFigures, ProcessFigures};

    fn group(comm: &str) -> Group {
        Group::new(comm, "/system.slice/x.service")
    }

    fn snapshot() -> Snapshot {
        let split = ResidentSplit {
            anon: 3 << 20,
            file: 1 << 20,
            shmem: 0,
            swap: 0,
        };
        let process = |pid, comm, reserved| ProcessFigures {
            pid,
            group: group(comm),
            reserved,
            committed: reserved / 2,
            resident: split,
            page_faults: 10,
        };
        let mut snapshot = Snapshot {
            taken_ns: 5_000_000_000,
            lost_events: 2,
            processes: vec![process(1, "app", 100 << 20), process(2, "db", 300 << 20)],
            ..Snapshot::default()
        };
        snapshot.groups.insert(
            group("app"),
            GroupFigures {
                processes: 1,
                reserved: 100 << 20,
                committed: 50 << 20,
                resident: split,
                page_faults: 10,
                sites_folded: 3,
            },
        );
        // Exited since the last snapshot: its faults only.
        snapshot.groups.insert(
            group("gone"),
            GroupFigures {
                page_faults: 7,
                ..GroupFigures::default()
            },
        );
        snapshot
    }

    /// The lines that start with `start`, sorted: a family's series come in no set order.
    fn line<'a>(text: &'a str, start: &str) -> Vec<&'a str> {
        let mut lines: Vec<&str> = text.lines().filter(|l| l.starts_with(start)).collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn groups_are_exposed_with_prometheus_names() {
        let text = encode(&snapshot(), None, None);
        let labels = r#"comm="app",cgroup="/system.slice/x.service",unit="x.service",container="""#;
        assert!(
            text.contains("# TYPE memprof_reserved_bytes gauge\n"),
            "{text}"
        );
        assert_eq!(
            line(&text, "memprof_reserved_bytes{"),
            [format!("memprof_reserved_bytes{{{labels}}} {}", 100 << 20)]
        );
        assert_eq!(
            line(&text, "memprof_resident_bytes{"),
            [
                format!(
                    r#"memprof_resident_bytes{{{labels},kind="anon"}} {}"#,
                    3 << 20
                ),
                format!(
                    r#"memprof_resident_bytes{{{labels},kind="file"}} {}"#,
                    1 << 20
                ),
                format!(r#"memprof_resident_bytes{{{labels},kind="shmem"}} 0"#),
            ]
        );
        assert!(text.contains("# TYPE memprof_page_faults_total counter\n"));
        assert_eq!(line(&text, "memprof_page_faults_total{").len(), 2);
        assert!(text.contains("memprof_lost_events_total 2\n"), "{text}");
        assert!(text.contains(&format!("memprof_processes{{{labels}}} 1\n")));
        assert_eq!(
            line(&text, "memprof_sites_folded{"),
            [format!("memprof_sites_folded{{{labels}}} 3")]
        );
        assert!(!text.contains("memprof_process_reserved_bytes"));
    }

    #[test]
    fn per_pid_series_are_capped_and_the_rest_counted() {
        let text = encode(&snapshot(), Some(1), None);
        assert_eq!(
            line(&text, "memprof_process_reserved_bytes{"),
            [format!(
                r#"memprof_process_reserved_bytes{{pid="2",comm="db",cgroup="/system.slice/x.service",unit="x.service",container=""}} {}"#,
                300 << 20
            )]
        );
        assert!(text.contains("memprof_processes_not_listed 1\n"), "{text}");
    }
}
