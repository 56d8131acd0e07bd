//! pprof profiles (gzipped `profile.proto`): what `go tool pprof`, Pyroscope, Parca and
//! Grafana read.
use std::{collections::HashMap, io::Write as _};

use prost::Message as _;

use super::SiteSample;

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

    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
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
    /// When tracing started, in nanoseconds since the Unix epoch (0: unknown).
    pub time_nanos: i64,
    /// How long memprof traced (0: unknown).
    pub duration_nanos: i64,
    /// Free-form notes (`go tool pprof` shows them with `-comments`).
    pub comments: Vec<String>,
}

/// The label key carrying a sample's root (the process).
pub const PROCESS_LABEL: &str = "process";

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

/// What the frames of one module tell about where it was mapped.
struct ModuleSeen {
    id: u64,
    /// Lowest address seen, with its file offset.
    low: (u64, u64),
    high: u64,
    /// address - file offset, while it is the same for every frame.
    base: Option<u64>,
    has_filenames: bool,
    has_line_numbers: bool,
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The pprof profile (not yet encoded) for `samples`: sample types reserved/bytes,
/// resident/bytes and faults/count, one sample per site, default sample type reserved.
pub fn pprof_profile(samples: &[SiteSample], info: &ProfileInfo) -> proto::Profile {
    let mut strings = Strings::new();
    let value_type = |strings: &mut Strings, t: &str, unit: &str| proto::ValueType {
        r#type: strings.get(t),
        unit: strings.get(unit),
    };
    let sample_type = vec![
        value_type(&mut strings, "reserved", "bytes"),
        value_type(&mut strings, "resident", "bytes"),
        value_type(&mut strings, "faults", "count"),
    ];
    let period_type = value_type(&mut strings, "space", "bytes");

    // Mappings first: their address ranges need every frame of the module. Walked root
    // first, so that the first mapping is the executable (pprof's "File:") as a rule.
    let mut modules: HashMap<&str, ModuleSeen> = HashMap::new();
    let mut module_order: Vec<&str> = Vec::new();
    for frame in samples.iter().flat_map(|s| s.frames.iter().rev()) {
        let Some(module) = frame.module.as_deref() else {
            continue;
        };
        let base = frame.address.wrapping_sub(frame.module_offset);
        let seen = modules.entry(module).or_insert_with(|| {
            module_order.push(module);
            ModuleSeen {
                id: module_order.len() as u64,
                low: (frame.address, frame.module_offset),
                high: frame.address,
                base: Some(base),
                has_filenames: false,
                has_line_numbers: false,
            }
        });
        if frame.address < seen.low.0 {
            seen.low = (frame.address, frame.module_offset);
        }
        seen.high = seen.high.max(frame.address);
        if seen.base != Some(base) {
            seen.base = None;
        }
        seen.has_filenames |= frame.file.is_some();
        seen.has_line_numbers |= frame.line.is_some();
    }
    let mapping = module_order
        .iter()
        .map(|module| {
            let seen = &modules[module];
            // The range the frames cover, when they agree on where the module was loaded
            // (one process, or the same load address everywhere); 0 (unknown) otherwise.
            let (memory_start, memory_limit, file_offset) = match seen.base {
                Some(_) => (seen.low.0, seen.high.saturating_add(1), seen.low.1),
                None => (0, 0, 0),
            };
            proto::Mapping {
                id: seen.id,
                memory_start,
                memory_limit,
                file_offset,
                filename: strings.get(module),
                build_id: 0,
                has_functions: true,
                has_filenames: seen.has_filenames,
                has_line_numbers: seen.has_line_numbers,
                has_inline_frames: false,
            }
        })
        .collect();

    let mut functions: Vec<proto::Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64), u64> = HashMap::new();
    let mut function_id = |strings: &mut Strings, name: &str, file: Option<&str>| {
        let name = strings.get(name);
        let file = strings.get(file.unwrap_or(""));
        *function_ids.entry((name, file)).or_insert_with(|| {
            let id = functions.len() as u64 + 1;
            functions.push(proto::Function {
                id,
                name,
                system_name: name,
                filename: file,
                start_line: 0,
            });
            id
        })
    };

    let mut locations: Vec<proto::Location> = Vec::new();
    // (mapping, address, function, line): one location per (module, address), unless two
    // frames there disagree on the code (inlined frames, or processes loading a module at
    // different addresses).
    let mut location_ids: HashMap<(u64, u64, u64, i64), u64> = HashMap::new();
    let mut location_id = |mapping_id: u64, address: u64, function_id: u64, line: i64| {
        *location_ids
            .entry((mapping_id, address, function_id, line))
            .or_insert_with(|| {
                let id = locations.len() as u64 + 1;
                locations.push(proto::Location {
                    id,
                    mapping_id,
                    address,
                    line: vec![proto::Line {
                        function_id,
                        line,
                        column: 0,
                    }],
                    is_folded: false,
                });
                id
            })
    };

    let process_key = strings.get(PROCESS_LABEL);
    let mut sample = Vec::with_capacity(samples.len());
    for s in samples {
        let mut location_id_list = Vec::with_capacity(s.frames.len() + 1);
        for frame in s.frames {
            let function = function_id(&mut strings, &frame.function, frame.file.as_deref());
            let mapping_id = frame.module.as_deref().map_or(0, |m| modules[m].id);
            location_id_list.push(location_id(
                mapping_id,
                frame.address,
                function,
                frame.line.map_or(0, i64::from),
            ));
        }
        let mut label = Vec::new();
        if let Some(root) = s.root {
            let function = function_id(&mut strings, root, None);
            location_id_list.push(location_id(0, 0, function, 0));
            label.push(proto::Label {
                key: process_key,
                str: strings.get(root),
                num: 0,
                num_unit: 0,
            });
        }
        sample.push(proto::Sample {
            location_id: location_id_list,
            value: vec![int(s.reserved), int(s.resident), int(s.faults_by_code)],
            label,
        });
    }

    let comment = info.comments.iter().map(|c| strings.get(c)).collect();
    proto::Profile {
        default_sample_type: sample_type[0].r#type,
        sample_type,
        sample,
        mapping,
        location: locations,
        function: functions,
        drop_frames: 0,
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
    use std::{collections::HashSet, io::Read as _};

    use super::*;
    use crate::export::Frame;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    struct Fixture {
        a: Vec<Frame>,
        b: Vec<Frame>,
        c: Vec<Frame>,
    }

    fn fixture() -> Fixture {
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        let main = Frame {
            function: "main".into(),
            module: Some("/usr/bin/memprof-workload".into()),
            file: Some("src/main.rs".into()),
            line: Some(12),
            address: 0x5555_0000_1234,
            module_offset: 0x1234,
        };
        let a = vec![
            Frame {
                function: "mmap64".into(),
                module: Some(libc.into()),
                file: None,
                line: None,
                address: 0x7f00_0012_0000,
                module_offset: 0x12_0000,
            },
            Frame {
                function: "reserve_arena".into(),
                module: Some("/usr/bin/memprof-workload".into()),
                file: Some("src/arena.rs".into()),
                line: Some(40),
                address: 0x5555_0000_2000,
                module_offset: 0x2000,
            },
            main.clone(),
        ];
        let b = vec![
            Frame {
                function: "malloc".into(),
                module: Some(libc.into()),
                file: None,
                line: None,
                address: 0x7f00_0009_0000,
                module_offset: 0x9_0000,
            },
            main,
        ];
        let c = vec![Frame {
            function: "[vdso]+0x10".into(),
            module: None,
            file: None,
            line: None,
            address: 0x7ffd_0000_0010,
            module_offset: 0x10,
        }];
        Fixture { a, b, c }
    }

    fn fixture_samples(f: &Fixture) -> Vec<SiteSample<'_>> {
        vec![
            SiteSample {
                frames: &f.a,
                root: Some("memprof-workload (1234)"),
                reserved: 1 << 30,
                resident: 4 << 20,
                faults_by_code: 1024,
            },
            SiteSample {
                frames: &f.b,
                root: Some("memprof-workload (1234)"),
                reserved: 64 << 20,
                resident: 8 << 10,
                faults_by_code: 2,
            },
            SiteSample {
                frames: &f.c,
                root: None,
                reserved: 0,
                resident: 4096,
                faults_by_code: 1,
            },
        ]
    }

    #[test]
    fn pprof_round_trips() {
        let f = fixture();
        let samples = fixture_samples(&f);
        let info = ProfileInfo {
            time_nanos: 1_700_000_000_000_000_000,
            duration_nanos: 2_000_000_000,
            comments: vec!["memprof test".into()],
        };
        let bytes = pprof(&samples, &info);
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "not gzip");
        let p = proto::Profile::decode(gunzip(&bytes).as_slice()).unwrap();
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
            assert_eq!(l.line.len(), 1);
            assert!(functions.contains_key(&l.line[0].function_id));
        }

        // Mappings: one per module, with the range and offset the frames show.
        let files: Vec<&str> = p.mapping.iter().map(|m| s(m.filename)).collect();
        assert_eq!(
            files,
            [
                "/usr/bin/memprof-workload",
                "/usr/lib/x86_64-linux-gnu/libc.so.6"
            ],
            "the executable (outermost frames) comes first"
        );
        assert!(p.mapping.iter().all(|m| m.has_functions));
        let libc = &p.mapping[1];
        assert_eq!(
            (libc.memory_start, libc.memory_limit, libc.file_offset),
            (0x7f00_0009_0000, 0x7f00_0012_0001, 0x9_0000)
        );
        let exe = &p.mapping[0];
        assert_eq!(
            (exe.memory_start, exe.memory_limit, exe.file_offset),
            (0x5555_0000_1234, 0x5555_0000_2001, 0x1234)
        );
        assert!(exe.has_filenames && exe.has_line_numbers);
        assert!(!libc.has_filenames && !libc.has_line_numbers);

        // 3 + 2 + 1 frames, main shared, plus the root: 6 locations, 6 functions.
        assert_eq!(p.location.len(), 6);
        assert_eq!(p.function.len(), 6);

        // Samples: values round-trip, stacks leaf first with the process outermost.
        assert_eq!(p.sample.len(), samples.len());
        for (got, want) in p.sample.iter().zip(&samples) {
            assert_eq!(
                got.value,
                [
                    want.reserved as i64,
                    want.resident as i64,
                    want.faults_by_code as i64
                ]
            );
            let stack: Vec<(String, i64, u64)> = got
                .location_id
                .iter()
                .map(|id| {
                    let l = locations[id];
                    let func = functions[&l.line[0].function_id];
                    (s(func.name).to_string(), l.line[0].line, l.address)
                })
                .collect();
            let mut expected: Vec<(String, i64, u64)> = want
                .frames
                .iter()
                .map(|f| (f.function.clone(), f.line.map_or(0, i64::from), f.address))
                .collect();
            let labels: Vec<(&str, &str)> =
                got.label.iter().map(|l| (s(l.key), s(l.str))).collect();
            match want.root {
                Some(root) => {
                    expected.push((root.to_string(), 0, 0));
                    assert_eq!(labels, [("process", root)]);
                }
                None => assert!(labels.is_empty()),
            }
            assert_eq!(stack, expected);
        }
        let reserve = p
            .function
            .iter()
            .find(|f| s(f.name) == "reserve_arena")
            .unwrap();
        assert_eq!(s(reserve.system_name), "reserve_arena");
        assert_eq!(s(reserve.filename), "src/arena.rs");

        // Same input, same bytes.
        assert_eq!(bytes, pprof(&samples, &info));
    }

    #[test]
    fn pprof_of_nothing_decodes() {
        let p = proto::Profile::decode(gunzip(&pprof(&[], &ProfileInfo::default())).as_slice())
            .unwrap();
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.sample_type.len(), 3);
        assert!(p.sample.is_empty() && p.location.is_empty());
    }
}
