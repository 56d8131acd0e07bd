//! `/debug/pprof/<name>`: the live sites of a snapshot as a pprof profile (or folded stacks
//! with `?debug=1`), narrowed by process, program or cgroup; with `?seconds=N`, the growth
//! between two snapshots N seconds apart.
use std::{
    collections::{HashMap, HashSet},
    io::Write as _,
    sync::Arc,
};

use prost::Message as _;

use super::{Group, SiteRow, Snapshot};
use crate::{
    export::{self, Metric, ProfileInfo, SiteSample, proto},
    report::{self, stacks},
    sites::Site,
    symbolize::{Frame, Symbolizer},
};

/// What a profile request asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Query {
    pub(super) pid: Option<u32>,
    /// A program's name, as the `comm` label shows it.
    pub(super) comm: Option<String>,
    /// A cgroup v2 path: that cgroup and those below it.
    pub(super) cgroup: Option<String>,
    /// The growth over the next this many seconds rather than the live sites.
    pub(super) seconds: Option<u64>,
    /// Folded stacks as text rather than gzipped pprof.
    pub(super) debug: bool,
}

impl Query {
    fn wants(&self, row: &SiteRow) -> bool {
        let in_cgroup = |c: &str| {
            let c = c.trim_end_matches('/');
            row.group
                .cgroup
                .strip_prefix(c)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        self.pid.is_none_or(|pid| pid == row.pid)
            && self
                .comm
                .as_deref()
                .is_none_or(|comm| comm == &*row.group.comm)
            && self.cgroup.as_deref().is_none_or(in_cgroup)
    }
}

/// A site as the snapshots share it: the tracker gives a forgotten site's id to a new one,
/// but a site's `Arc` stays the same while it lives, and its address is not reused while a
/// snapshot or [`Symbols`] holds it.
fn key(row: &SiteRow) -> *const Site {
    Arc::as_ptr(&row.site)
}

/// Symbolized stacks, each site done once while it is live. Not `Send` (the symbolizer is
/// not): it stays on the server's thread.
#[derive(Default)]
pub(super) struct Symbols {
    symbolizer: Symbolizer,
    frames: HashMap<*const Site, (Arc<Site>, Arc<[Frame]>)>,
}

impl Symbols {
    fn frames(&mut self, row: &SiteRow) -> Arc<[Frame]> {
        let Self { symbolizer, frames } = self;
        let (_, frames) = frames.entry(key(row)).or_insert_with(|| {
            let frames = report::symbolize_site(symbolizer, &row.site).into();
            (row.site.clone(), frames)
        });
        frames.clone()
    }

    /// Forgets the stacks of sites no longer live: the agent runs for days.
    fn keep_only(&mut self, live: &Snapshot) {
        let live: HashSet<*const Site> = live.sites.iter().map(key).collect();
        self.frames.retain(|site, _| live.contains(site));
    }
}

fn value(row: &SiteRow, metric: Metric) -> u64 {
    match metric {
        Metric::Reserved => row.reserved,
        Metric::Resident => row.resident,
        Metric::Faults => row.faults_by_code,
    }
}

/// The rows of `now` that `query` wants with their figures; with `before`, what each grew
/// by since then (sites that did not grow are left out).
fn figures<'a>(
    now: &'a Snapshot,
    before: Option<&Snapshot>,
    query: &Query,
    metric: Metric,
) -> Vec<(&'a SiteRow, u64)> {
    let earlier: HashMap<(u32, *const Site), u64> = before
        .map(|b| {
            b.sites
                .iter()
                .map(|s| ((s.pid, key(s)), value(s, metric)))
                .collect()
        })
        .unwrap_or_default();
    now.sites
        .iter()
        .filter(|row| query.wants(row))
        .map(|row| {
            let was = earlier.get(&(row.pid, key(row))).copied().unwrap_or(0);
            (row, value(row, metric).saturating_sub(was))
        })
        .filter(|&(_, v)| v > 0)
        .collect()
}

/// The profile of `metric` for `query`: gzipped pprof, or folded stacks with `?debug=1`.
/// `before` is the snapshot a delta profile (`?seconds=N`) starts from.
pub(super) fn profile(
    symbols: &mut Symbols,
    now: &Snapshot,
    before: Option<&Snapshot>,
    query: &Query,
    metric: Metric,
) -> Vec<u8> {
    let rows = figures(now, before, query, metric);
    let frames: Vec<Arc<[Frame]>> = rows.iter().map(|(row, _)| symbols.frames(row)).collect();
    symbols.keep_only(now);
    let pids: HashSet<u32> = rows.iter().map(|(row, _)| row.pid).collect();
    // With several processes, each stack starts at its process, as in `--output`'s files.
    let roots: Vec<Option<String>> = rows
        .iter()
        .map(|(row, _)| (pids.len() > 1).then(|| format!("{} ({})", row.group.comm, row.pid)))
        .collect();
    let samples: Vec<SiteSample> = rows
        .iter()
        .zip(&frames)
        .zip(&roots)
        .map(|((&(row, v), frames), root)| SiteSample {
            frames,
            root: root.as_deref(),
            pid: row.pid,
            comm: &row.group.comm,
            reserved: if metric == Metric::Reserved { v } else { 0 },
            resident: if metric == Metric::Resident { v } else { 0 },
            faults_by_code: if metric == Metric::Faults { v } else { 0 },
        })
        .collect();
    if query.debug {
        return export::folded(&samples, metric).into_bytes();
    }
    let start = before.unwrap_or(now);
    let duration_ns = match before {
        Some(b) => now.taken_ns.saturating_sub(b.taken_ns),
        None => now.taken_ns.saturating_sub(now.started_ns),
    };
    let what = match before {
        Some(_) => "growth of the live sites",
        None => "live sites",
    };
    let info = ProfileInfo {
        metrics: vec![metric],
        time_nanos: i64::try_from(start.taken_unix_ns).unwrap_or(0),
        duration_nanos: i64::try_from(duration_ns).unwrap_or(i64::MAX),
        comments: vec![
            format!("memprof agent: {what}; processes: {}", pids.len()),
            format!("lost events: {}", now.lost_events),
        ],
        drop_frames: stacks::plumbing_pattern(),
    };
    let mut profile = export::pprof_profile(&samples, &info);
    label_groups(&mut profile, rows.iter().map(|(row, _)| &row.group));
    gzip(&profile.encode_to_vec())
}

/// Labels each sample (in the order of `groups`) with its process's cgroup, unit and
/// container, as the metrics are, so that a profile can be narrowed to a service or a
/// container where it is read; empty ones are left out.
fn label_groups<'a>(profile: &mut proto::Profile, groups: impl Iterator<Item = &'a Group>) {
    let mut index: HashMap<String, i64> = profile
        .string_table
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as i64))
        .collect();
    let table = &mut profile.string_table;
    let mut string = |s: &str| {
        *index.entry(s.to_string()).or_insert_with(|| {
            table.push(s.to_string());
            table.len() as i64 - 1
        })
    };
    for (sample, group) in profile.sample.iter_mut().zip(groups) {
        for (key, value) in [
            ("cgroup", &group.cgroup),
            ("unit", &group.unit),
            ("container", &group.container),
        ] {
            if !value.is_empty() {
                sample.label.push(proto::Label {
                    key: string(key),
                    str: string(value),
                    ..proto::Label::default()
                });
            }
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes)
        .and_then(|()| gz.finish())
        .expect("gzip into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(pid: u32) -> Arc<Site> {
        Arc::new(Site {
            pid,
            user: Vec::new(),
            placeholder: Some("[test site]"),
            complete: None,
            cut: false,
        })
    }

    fn row(site: &Arc<Site>, cgroup: &str, reserved: u64) -> SiteRow {
        SiteRow {
            pid: site.pid,
            group: Group::new("app", cgroup),
            site: site.clone(),
            reserved,
            resident: reserved / 2,
            faults_by_code: 0,
        }
    }

    fn snapshot(sites: Vec<SiteRow>) -> Snapshot {
        Snapshot {
            sites,
            ..Snapshot::default()
        }
    }

    #[test]
    fn queries_narrow_by_pid_program_and_cgroup_tree() {
        let now = snapshot(vec![
            row(&site(1), "/a", 10),
            row(&site(2), "/a/b", 20),
            row(&site(3), "/ab", 30),
        ]);
        let pids = |query: Query| -> Vec<u32> {
            figures(&now, None, &query, Metric::Reserved)
                .iter()
                .map(|(r, _)| r.pid)
                .collect()
        };
        let cgroup = |c: &str| Query {
            cgroup: Some(c.into()),
            ..Query::default()
        };
        assert_eq!(pids(cgroup("/a")), [1, 2]);
        assert_eq!(pids(cgroup("/a/")), [1, 2]);
        assert_eq!(pids(cgroup("/")), [1, 2, 3]);
        let pid = Query {
            pid: Some(3),
            ..Query::default()
        };
        assert_eq!(pids(pid), [3]);
        let comm = Query {
            comm: Some("other".into()),
            ..Query::default()
        };
        assert!(pids(comm).is_empty());
    }

    /// Sites are told apart by their stacks' identity, not by their ids, which the tracker
    /// gives again once a site is forgotten.
    #[test]
    fn a_delta_keeps_only_the_growth() {
        let (grew, shrank) = (site(1), site(1));
        let before = snapshot(vec![row(&grew, "/", 10), row(&shrank, "/", 50)]);
        let now = snapshot(vec![
            row(&grew, "/", 15),
            row(&shrank, "/", 40),
            row(&site(1), "/", 8),
        ]);
        let grown: Vec<u64> = figures(&now, Some(&before), &Query::default(), Metric::Reserved)
            .iter()
            .map(|&(_, v)| v)
            .collect();
        assert_eq!(grown, [5, 8]);
        let debug = Query {
            debug: true,
            ..Query::default()
        };
        let mut symbols = Symbols::default();
        let text = profile(&mut symbols, &now, Some(&before), &debug, Metric::Reserved);
        assert_eq!(String::from_utf8(text).unwrap(), "[test site] 13\n");
    }

    /// Samples carry their process's cgroup, and the unit and container read from it when
    /// it names them.
    #[test]
    fn samples_are_labelled_with_cgroup_unit_and_container() {
        let id = "ab".repeat(32);
        let docker = format!("/system.slice/docker-{id}.scope");
        let now = snapshot(vec![row(&site(1), &docker, 10), row(&site(2), "/", 20)]);
        let gzipped = profile(
            &mut Symbols::default(),
            &now,
            None,
            &Query::default(),
            Metric::Reserved,
        );
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzipped[..]), &mut bytes)
            .unwrap();
        let profile = proto::Profile::decode(&bytes[..]).unwrap();
        let name = |i: i64| profile.string_table[i as usize].as_str();
        let labels: Vec<Vec<(&str, String)>> = profile
            .sample
            .iter()
            .map(|s| {
                s.label
                    .iter()
                    .map(|l| match l.str {
                        0 => (name(l.key), l.num.to_string()),
                        v => (name(l.key), name(v).to_string()),
                    })
                    .collect()
            })
            .collect();
        let unit = format!("docker-{id}.scope");
        assert_eq!(
            labels,
            [
                vec![
                    ("pid", "1".to_string()),
                    ("comm", "app".into()),
                    ("cgroup", docker.clone()),
                    ("unit", unit),
                    ("container", id.clone()),
                ],
                vec![
                    ("pid", "2".to_string()),
                    ("comm", "app".into()),
                    ("cgroup", "/".into()),
                ],
            ]
        );
    }
}
