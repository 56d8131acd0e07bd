//! pprof profiles (gzipped `profile.proto`): what `go tool pprof`, Pyroscope, Parca and
//! Grafana read.
use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    io::Write as _,
};

use prost::Message as _;

use super::{Frame, Metric, SiteSample};
use crate::sites::CodeRegion;

/// perftools.profiles, as in
/// <https://github.com/google/pprof/blob/main/proto/profile.proto>, declared by hand.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
        #[prost(int64, tag = "15")]
        pub doc_url: i64,
    }

    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

/// What a pprof profile says about itself besides its samples.
#[derive(Debug, Clone, Default)]
pub struct ProfileInfo {
    /// The figures recorded, one sample type each in this order; the first is the default.
    pub metrics: Vec<Metric>,
    /// When tracing started, in nanoseconds since the Unix epoch (0: unknown).
    pub time_nanos: i64,
    /// How long memprof traced (0: unknown).
    pub duration_nanos: i64,
    /// Free-form notes (`go tool pprof` shows them with `-comments`).
    pub comments: Vec<String>,
    /// A regular expression (RE2, matched against whole function names): pprof drops a
    /// frame it matches and every frame it called, so that allocator plumbing and syscall
    /// wrappers do not take the flat column. Empty: none.
    pub drop_frames: String,
}

/// The numeric label with each sample's process id.
pub const PID_LABEL: &str = "pid";
/// The label with each sample's process name.
pub const COMM_LABEL: &str = "comm";

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Items numbered from 1 in the order they are first asked for, one per key.
struct Numbered<K, V> {
    items: Vec<V>,
    ids: HashMap<K, u64>,
}

impl<K, V> Default for Numbered<K, V> {
    fn default() -> Self {
        Self {
            items: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq, V> Numbered<K, V> {
    /// The id of `key`'s item, made by `make` (given its id) the first time.
    fn id(&mut self, key: K, make: impl FnOnce(u64) -> V) -> u64 {
        let Self { items, ids } = self;
        *ids.entry(key).or_insert_with(|| {
            let id = items.len() as u64 + 1;
            items.push(make(id));
            id
        })
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A pprof mapping: one region of one module in one process.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct MappingKey<'a> {
    pid: u32,
    start: u64,
    module: &'a str,
}

/// The mappings of the modules `samples` pass through, with their ids: process by process,
/// each one's in address order as /proc/PID/maps lists them, its executable first (the
/// kernel maps it below the libraries and the dynamic loader).
fn mappings<'a>(
    samples: &[SiteSample<'a>],
    strings: &mut Strings,
) -> (Vec<proto::Mapping>, HashMap<MappingKey<'a>, u64>) {
    let mut seen: BTreeMap<MappingKey<'a>, proto::Mapping> = BTreeMap::new();
    for s in samples {
        for frame in s.frames {
            let Some((key, region)) = mapped(s.pid, frame) else {
                continue;
            };
            let mapping = seen.entry(key).or_insert_with(|| proto::Mapping {
                memory_start: region.start,
                memory_limit: region.end,
                file_offset: region.file_offset,
                filename: strings.get(key.module),
                build_id: strings.get(frame.build_id.as_deref().unwrap_or("")),
                has_functions: true,
                ..proto::Mapping::default()
            });
            mapping.has_filenames |= frame.file.is_some();
            // Line numbers come from DWARF, which names inlined calls too.
            mapping.has_line_numbers |= frame.line.is_some();
            mapping.has_inline_frames |= frame.line.is_some();
        }
    }
    let mut ids = HashMap::new();
    let mappings = seen
        .into_iter()
        .zip(1..)
        .map(|((key, mapping), id)| {
            ids.insert(key, id);
            proto::Mapping { id, ..mapping }
        })
        .collect();
    (mappings, ids)
}

/// The mapping of a frame of process `pid`, and the region it stands for: None outside a
/// file.
fn mapped(pid: u32, frame: &Frame) -> Option<(MappingKey<'_>, CodeRegion)> {
    let region = frame.region?;
    let key = MappingKey {
        pid,
        start: region.start,
        module: frame.module.as_deref()?,
    };
    Some((key, region))
}

/// The pprof profile (not yet encoded) for `samples`: a sample per site with a value per
/// metric of `info`. Each frame lies in the mapping of its process's region, at the address
/// of the code it names (a return address's call), so that `address - memory_start +
/// file_offset` is its offset in the file; inlined frames are Lines of one Location,
/// innermost first.
pub fn pprof_profile(samples: &[SiteSample], info: &ProfileInfo) -> proto::Profile {
    let mut strings = Strings::new();
    let sample_type: Vec<proto::ValueType> = info
        .metrics
        .iter()
        .map(|metric| proto::ValueType {
            r#type: strings.get(metric.name()),
            unit: strings.get(metric.unit()),
        })
        .collect();
    let period_type = proto::ValueType {
        r#type: strings.get("space"),
        unit: strings.get("bytes"),
    };
    let (mapping, mapping_ids) = mappings(samples, &mut strings);

    let mut functions = Numbered::default();
    let mut function_id = |strings: &mut Strings, frame: &Frame| {
        let name = strings.get(&frame.function);
        let system_name = strings.get(frame.symbol.as_deref().unwrap_or(&frame.function));
        let filename = strings.get(frame.file.as_deref().unwrap_or(""));
        functions.id((name, system_name, filename), |id| proto::Function {
            id,
            name,
            system_name,
            filename,
            start_line: 0,
        })
    };
    // Deduplicated by everything they say: code is named the same wherever it is reached.
    let mut locations = Numbered::default();
    let mut location_id = |mapping_id: u64, address: u64, line: Vec<proto::Line>| {
        let key = (mapping_id, address, line.clone());
        locations.id(key, |id| proto::Location {
            id,
            mapping_id,
            address,
            line,
            is_folded: false,
        })
    };
    let line_of = |function_id: u64, frame: &Frame| proto::Line {
        function_id,
        line: frame.line.map_or(0, i64::from),
        column: 0,
    };

    let pid_key = strings.get(PID_LABEL);
    let comm_key = strings.get(COMM_LABEL);
    let mut sample = Vec::with_capacity(samples.len());
    for s in samples {
        let mut location_id_list = Vec::with_capacity(s.frames.len() + 1);
        let mut lines = Vec::new();
        for frame in s.frames {
            lines.push(line_of(function_id(&mut strings, frame), frame));
            if frame.inlined {
                continue;
            }
            let (mapping_id, address) = match mapped(s.pid, frame) {
                Some((key, region)) => (
                    mapping_ids[&key],
                    region.start + (frame.module_offset - region.file_offset),
                ),
                None => (0, frame.address),
            };
            location_id_list.push(location_id(mapping_id, address, std::mem::take(&mut lines)));
        }
        if let Some(root) = s.root {
            let root = Frame {
                function: root.to_string(),
                ..Frame::default()
            };
            let line = line_of(function_id(&mut strings, &root), &root);
            location_id_list.push(location_id(0, 0, vec![line]));
        }
        let label = vec![
            proto::Label {
                key: pid_key,
                num: i64::from(s.pid),
                ..proto::Label::default()
            },
            proto::Label {
                key: comm_key,
                str: strings.get(s.comm),
                ..proto::Label::default()
            },
        ];
        sample.push(proto::Sample {
            location_id: location_id_list,
            value: info.metrics.iter().map(|m| int(m.of(s))).collect(),
            label,
        });
    }

    let comment = info.comments.iter().map(|c| strings.get(c)).collect();
    proto::Profile {
        default_sample_type: sample_type.first().map_or(0, |t| t.r#type),
        sample_type,
        sample,
        mapping,
        location: locations.items,
        function: functions.items,
        drop_frames: strings.get(&info.drop_frames),
        keep_frames: 0,
        time_nanos: info.time_nanos,
        duration_nanos: info.duration_nanos,
        period_type: Some(period_type),
        period: 1,
        comment,
        doc_url: 0,
        string_table: strings.table,
    }
}

/// A gzipped pprof `profile.proto` for `samples` (see [`pprof_profile`]).
pub fn pprof(samples: &[SiteSample], info: &ProfileInfo) -> Vec<u8> {
    let encoded = pprof_profile(samples, info).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&encoded)
        .and_then(|()| gz.finish())
        .expect("gzip into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, io::Read as _, sync::Arc};

    use super::*;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    const EXE: &str = "/usr/bin/memprof-workload";
    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

    /// A module as one process mapped it.
    #[derive(Clone, Copy)]
    struct Mapped {
        path: &'static str,
        region: CodeRegion,
        build_id: &'static str,
    }

    fn exe_at(start: u64) -> Mapped {
        Mapped {
            path: EXE,
            region: CodeRegion {
                start,
                end: start + 0x8000,
                file_offset: 0x1000,
            },
            build_id: "0a1b2c",
        }
    }

    fn libc_at(start: u64) -> Mapped {
        Mapped {
            path: LIBC,
            region: CodeRegion {
                start,
                end: start + 0x17_5000,
                file_offset: 0x2_8000,
            },
            build_id: "ffee01",
        }
    }

    /// The frame of `function` at `address` in `m`, pinned as capture pins it: a return
    /// address (not the leaf) is looked up at the call before it.
    fn frame(function: &str, m: Mapped, address: u64, leaf: bool) -> Frame {
        let lookup = if leaf { address } else { address - 1 };
        Frame {
            function: function.into(),
            module: Some(m.path.into()),
            address,
            module_offset: lookup - m.region.start + m.region.file_offset,
            region: Some(m.region),
            build_id: Some(Arc::from(m.build_id)),
            ..Frame::default()
        }
    }

    struct Fixture {
        stacks: Vec<Vec<Frame>>,
    }

    fn fixture() -> Fixture {
        let (exe, libc) = (exe_at(0x5555_0000_1000), libc_at(0x7f00_0002_8000));
        let main = Frame {
            file: Some("src/main.rs".into()),
            line: Some(12),
            ..frame("main", exe, 0x5555_0000_1235, false)
        };
        let reserve = vec![
            frame("mmap64", libc, 0x7f00_0012_0000, true),
            // reserve_arena's call of mmap, in code inlined into it.
            Frame {
                inlined: true,
                file: Some("src/arena.rs".into()),
                line: Some(7),
                ..frame("arena_hint", exe, 0x5555_0000_2001, false)
            },
            Frame {
                symbol: Some("_ZN8workload13reserve_arena17h0123456789abcdefE".into()),
                file: Some("src/arena.rs".into()),
                line: Some(40),
                ..frame("workload::reserve_arena", exe, 0x5555_0000_2001, false)
            },
            main.clone(),
        ];
        let malloc = vec![frame("malloc", libc, 0x7f00_0009_0000, true), main];
        let jit = vec![Frame {
            function: "[unknown]+0x7ffd00000010".into(),
            address: 0x7ffd_0000_0010,
            ..Frame::default()
        }];
        // Another process, its modules loaded elsewhere.
        let (exe2, libc2) = (exe_at(0x5600_0000_1000), libc_at(0x7e00_0002_8000));
        let other = vec![
            frame("mmap64", libc2, 0x7e00_0012_0000, true),
            frame("main", exe2, 0x5600_0000_1235, false),
        ];
        Fixture {
            stacks: vec![reserve, malloc, jit, other],
        }
    }

    fn fixture_samples(f: &Fixture) -> Vec<SiteSample<'_>> {
        let sample = |i: usize, (pid, comm, root), reserved, resident, faults_by_code| SiteSample {
            frames: &f.stacks[i],
            root: Some(root),
            pid,
            comm,
            reserved,
            resident,
            faults_by_code,
        };
        let workload = (1234, "workload", "workload (1234)");
        vec![
            sample(0, workload, 1 << 30, 4 << 20, 1024),
            sample(1, workload, 64 << 20, 8 << 10, 2),
            sample(2, workload, 0, 4096, 1),
            sample(3, (4321, "other", "other (4321)"), 1 << 20, 0, 0),
        ]
    }

    fn info(metrics: Vec<Metric>) -> ProfileInfo {
        ProfileInfo {
            metrics,
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 2_000_000_000,
            comments: vec!["memprof test".into()],
            drop_frames: "malloc|mmap64".into(),
        }
    }

    fn decode(bytes: &[u8]) -> proto::Profile {
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "not gzip");
        proto::Profile::decode(gunzip(bytes).as_slice()).unwrap()
    }

    #[test]
    fn pprof_round_trips() {
        let f = fixture();
        let samples = fixture_samples(&f);
        let info = info(vec![Metric::Reserved, Metric::Resident, Metric::Faults]);
        let bytes = pprof(&samples, &info);
        let p = decode(&bytes);
        assert_eq!(p, pprof_profile(&samples, &info));
        let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].as_str();

        assert_eq!(p.string_table[0], "");
        let unique: HashSet<&String> = p.string_table.iter().collect();
        assert_eq!(
            unique.len(),
            p.string_table.len(),
            "strings not deduplicated"
        );
        let types: Vec<(&str, &str)> = p
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(
            types,
            [
                ("reserved", "bytes"),
                ("resident", "bytes"),
                ("faults", "count")
            ]
        );
        assert_eq!(s(p.default_sample_type), "reserved");
        assert_eq!(p.time_nanos, info.time_nanos);
        assert_eq!(p.duration_nanos, info.duration_nanos);
        assert_eq!(s(p.drop_frames), "malloc|mmap64");
        assert_eq!(
            p.comment.iter().map(|&c| s(c)).collect::<Vec<_>>(),
            ["memprof test"]
        );

        // Ids are unique, nonzero and every reference resolves.
        let mappings: HashMap<u64, &proto::Mapping> = p.mapping.iter().map(|m| (m.id, m)).collect();
        let locations: HashMap<u64, &proto::Location> =
            p.location.iter().map(|l| (l.id, l)).collect();
        let functions: HashMap<u64, &proto::Function> =
            p.function.iter().map(|f| (f.id, f)).collect();
        assert_eq!(mappings.len(), p.mapping.len());
        assert_eq!(locations.len(), p.location.len());
        assert_eq!(functions.len(), p.function.len());
        assert!(!mappings.contains_key(&0) && !locations.contains_key(&0));
        assert!(!functions.contains_key(&0));
        for l in &p.location {
            assert!(l.mapping_id == 0 || mappings.contains_key(&l.mapping_id));
            assert!(!l.line.is_empty());
            assert!(
                l.line
                    .iter()
                    .all(|line| functions.contains_key(&line.function_id))
            );
        }

        // Mappings: one per process and region, each process's executable first, with the
        // region's own range, offset and build ID.
        let mapped: Vec<(&str, u64, u64, u64, &str)> = p
            .mapping
            .iter()
            .map(|m| {
                let (file, id) = (s(m.filename), s(m.build_id));
                (file, m.memory_start, m.memory_limit, m.file_offset, id)
            })
            .collect();
        let expected: Vec<(&str, u64, u64, u64, &str)> = [
            exe_at(0x5555_0000_1000),
            libc_at(0x7f00_0002_8000),
            exe_at(0x5600_0000_1000),
            libc_at(0x7e00_0002_8000),
        ]
        .iter()
        .map(|m| {
            let r = m.region;
            (m.path, r.start, r.end, r.file_offset, m.build_id)
        })
        .collect();
        assert_eq!(mapped, expected);
        assert!(p.mapping.iter().all(|m| m.has_functions));
        assert!(p.mapping[0].has_filenames && p.mapping[0].has_line_numbers);
        assert!(!p.mapping[1].has_filenames && !p.mapping[1].has_line_numbers);

        // Samples: values round-trip; stacks leaf first, inlined frames as Lines of one
        // Location, the process outermost; each frame's location at its offset in the file.
        assert_eq!(p.sample.len(), samples.len());
        for (got, want) in p.sample.iter().zip(&samples) {
            let values = [want.reserved, want.resident, want.faults_by_code];
            assert_eq!(got.value, values.map(|v| v as i64));
            let mut frames = want.frames.iter();
            for id in &got.location_id[..got.location_id.len() - 1] {
                let l = locations[id];
                for line in &l.line {
                    let frame = frames.next().expect("as many lines as frames");
                    let function = functions[&line.function_id];
                    assert_eq!(s(function.name), frame.function);
                    assert_eq!(line.line, frame.line.map_or(0, i64::from));
                    let system_name = frame.symbol.as_deref().unwrap_or(&frame.function);
                    assert_eq!(s(function.system_name), system_name);
                    match l.mapping_id {
                        0 => assert_eq!(l.address, frame.address),
                        id => {
                            let m = mappings[&id];
                            assert_eq!(s(m.filename), frame.module.as_deref().unwrap());
                            let in_file = l.address - m.memory_start + m.file_offset;
                            assert_eq!(in_file, frame.module_offset, "{}", frame.function);
                        }
                    }
                }
            }
            assert!(frames.next().is_none(), "a frame without a location");
            let root = locations[got.location_id.last().unwrap()];
            assert_eq!(
                s(functions[&root.line[0].function_id].name),
                want.root.unwrap()
            );
            let labels: Vec<(&str, &str, i64)> = got
                .label
                .iter()
                .map(|l| (s(l.key), s(l.str), l.num))
                .collect();
            let pid = i64::from(want.pid);
            assert_eq!(labels, [("pid", "", pid), ("comm", want.comm, 0)]);
        }
        let inlined = locations[&p.sample[0].location_id[1]];
        assert_eq!(inlined.line.len(), 2, "one location for an inlined call");

        // Same input, same bytes.
        assert_eq!(bytes, pprof(&samples, &info));
    }

    /// The reading pprof's users rely on: `address - memory_start + file_offset` is an
    /// offset in the mapping's file, for every location of a profile built and decoded.
    #[test]
    fn every_location_lies_in_its_mapping() {
        let f = fixture();
        let p = decode(&pprof(&fixture_samples(&f), &info(vec![Metric::Reserved])));
        let mappings: HashMap<u64, &proto::Mapping> = p.mapping.iter().map(|m| (m.id, m)).collect();
        let in_mappings = p.location.iter().filter(|l| l.mapping_id != 0);
        assert_eq!(in_mappings.clone().count(), 6, "{:#?}", p.location);
        for l in in_mappings {
            let m = mappings[&l.mapping_id];
            assert!(
                (m.memory_start..m.memory_limit).contains(&l.address),
                "{l:?} outside {m:?}"
            );
        }
    }

    /// No sample type for a figure that was not recorded.
    #[test]
    fn sample_types_are_the_metrics_recorded() {
        let f = fixture();
        let p = pprof_profile(
            &fixture_samples(&f),
            &info(vec![Metric::Reserved, Metric::Resident]),
        );
        let s = |i: i64| p.string_table[usize::try_from(i).unwrap()].as_str();
        let types: Vec<&str> = p.sample_type.iter().map(|t| s(t.r#type)).collect();
        assert_eq!(types, ["reserved", "resident"]);
        assert!(p.sample.iter().all(|s| s.value.len() == 2));
    }

    #[test]
    fn pprof_of_nothing_decodes() {
        let p = decode(&pprof(&[], &ProfileInfo::default()));
        assert_eq!(p.string_table[0], "");
        assert!(p.sample_type.is_empty() && p.sample.is_empty() && p.location.is_empty());
    }
}
