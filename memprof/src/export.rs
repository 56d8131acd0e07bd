//! Outputs other tools read: folded stacks (flamegraph.pl, inferno, speedscope), SVG flame
//! graphs rendered in-process with inferno, and gzipped pprof profiles (`go tool pprof`,
//! Pyroscope, Parca, Grafana).
//!
//! Everything here is pure: symbolized stacks and their figures in, bytes or text out.
use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    io::Write as _,
};

use anyhow::Context as _;

use crate::process::Sample;
use inferno::flamegraph::{
    self,
    color::{BasicPalette, Palette},
};
use prost::Message as _;

/// One symbolized frame (the symbolizer's own type): `function` is the demangled name, or
/// "module+0x1f3a" when unknown; `module` the binary or library path; `address` the runtime
/// address; `module_offset` the file offset in `module`.
pub use crate::symbolize::Frame;

/// A call stack (a site) with its figures.
#[derive(Debug, Clone, Copy)]
pub struct SiteSample<'a> {
    /// LEAF FIRST, as the kernel gives them.
    pub frames: &'a [Frame],
    /// An extra root frame, e.g. the process, "memprof-workload (1234)"; None: none.
    pub root: Option<&'a str>,
    pub reserved: u64,
    pub resident: u64,
    pub faults: u64,
}

/// Which figure of a [`SiteSample`] a folded line counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Bytes.
    Reserved,
    /// Bytes.
    Resident,
    /// Number of page faults.
    Faults,
}

impl Metric {
    fn of(self, s: &SiteSample) -> u64 {
        match self {
            Metric::Reserved => s.reserved,
            Metric::Resident => s.resident,
            Metric::Faults => s.faults,
        }
    }
}

/// A frame name safe in a folded line: no ';' (the frame separator) and no line breaks or
/// other control characters.
fn folded_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let name = name.trim();
    if name.is_empty() {
        "[unknown]".to_string()
    } else {
        name.to_string()
    }
}

/// Folded stacks: one `root;frame;...;leaf COUNT\n` line per distinct stack, root first,
/// sorted by stack, identical stacks merged, zero counts left out. COUNT is bytes for
/// reserved/resident and faults for [`Metric::Faults`].
pub fn folded(samples: &[SiteSample], metric: Metric) -> String {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    let mut stack = String::new();
    for sample in samples {
        let count = metric.of(sample);
        if count == 0 {
            continue;
        }
        stack.clear();
        let names = sample
            .root
            .into_iter()
            .chain(sample.frames.iter().rev().map(|f| f.function.as_str()));
        for (i, name) in names.enumerate() {
            if i != 0 {
                stack.push(';');
            }
            stack.push_str(&folded_name(name));
        }
        if stack.is_empty() {
            stack.push_str("[unknown]");
        }
        let total = stacks.entry(stack.clone()).or_default();
        *total = total.saturating_add(count);
    }
    let mut out = String::new();
    for (stack, count) in stacks {
        let _ = writeln!(out, "{stack} {count}");
    }
    out
}

/// Whether folded text has at least one stack with a count above zero.
fn has_counts(folded: &str) -> bool {
    folded.lines().map(str::trim).any(|line| {
        !line.is_empty()
            && !line.starts_with("# ")
            && line
                .rsplit_once(' ')
                .and_then(|(_, n)| n.parse::<f64>().ok())
                .is_some_and(|n| n > 0.0)
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The SVG for a profile with nothing in it (inferno refuses to draw one).
fn empty_svg(title: &str) -> String {
    format!(
        concat!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n",
            "<svg version=\"1.1\" width=\"1200\" height=\"80\" viewBox=\"0 0 1200 80\" ",
            "xmlns=\"http://www.w3.org/2000/svg\">\n",
            "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eef2ee\"/>\n",
            "<text x=\"50%\" y=\"24\" text-anchor=\"middle\" font-family=\"monospace\" ",
            "font-size=\"17\">{}</text>\n",
            "<text x=\"50%\" y=\"56\" text-anchor=\"middle\" font-family=\"monospace\" ",
            "font-size=\"12\">no samples</text>\n",
            "</svg>\n"
        ),
        xml_escape(title)
    )
}

/// Renders folded stacks (see [`folded`]) as an SVG flame graph with inferno's memory
/// palette. `count_name` names the unit of the counts ("bytes", "faults"). Colours are
/// deterministic (a function keeps its colour across runs). Frames narrower than 0.1% of
/// the total are left out. Input without any count gives a small SVG saying "no samples".
pub fn flamegraph_svg(folded: &str, title: &str, count_name: &str) -> anyhow::Result<String> {
    if !has_counts(folded) {
        return Ok(empty_svg(title));
    }
    let mut options = flamegraph::Options::default();
    options.colors = Palette::Basic(BasicPalette::Mem);
    options.title = title.to_string();
    options.count_name = count_name.to_string();
    options.deterministic = true;
    options.min_width = 0.1;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut svg)
        .context("rendering the flame graph")?;
    String::from_utf8(svg).context("the flame graph is not UTF-8")
}

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
            value: vec![int(s.reserved), int(s.resident), int(s.faults)],
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

/// One process's timeline for [`timeline_svg`].
pub struct Series<'a> {
    /// How the legend names it, e.g. "memprof-workload (1234)".
    pub name: &'a str,
    pub samples: &'a [Sample],
}

/// The three figures drawn, with their colours.
const TIMELINE_METRICS: [(&str, &str); 3] = [
    ("reserved", "#1f77b4"),
    ("committed", "#ff7f0e"),
    ("resident", "#2ca02c"),
];
/// Line styles telling processes apart (the colour tells the figure).
const TIMELINE_DASHES: [&str; 3] = ["", "8 4", "2 3"];

/// Reserved, committed and resident bytes over time, one line each per process (at most
/// three: pass the ones that matter), with labelled axes in bytes and seconds and a legend.
/// Each line is a `polyline` with id `FIGURE-INDEX` (e.g. `reserved-0`).
pub fn timeline_svg(title: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 480.0, 90.0, 20.0, 70.0, 50.0_f64);
    let series = &series[..series.len().min(TIMELINE_DASHES.len())];
    let samples = || series.iter().flat_map(|s| s.samples.iter());
    let t0 = samples().map(|s| s.monotonic_ns).min().unwrap_or(0);
    // Four ticks per axis at round values: a power of two of bytes, 1/2/5 x 10^k seconds.
    let seconds = samples().map(|s| s.monotonic_ns - t0).max().unwrap_or(0) as f64 / 1e9;
    let t_step = [1.0, 2.0, 5.0]
        .iter()
        .flat_map(|m| (-3..4).map(move |e| m * 10f64.powi(e)))
        .filter(|step| step * 4.0 >= seconds)
        .fold(f64::MAX, f64::min);
    let t_max = t_step * 4.0;
    let peak = samples()
        .map(|s| s.reserved.max(s.resident))
        .max()
        .unwrap_or(0);
    let y_step = peak.div_ceil(4).max(1).next_power_of_two();
    let y_ticks = peak.div_ceil(y_step).max(1);
    let y_max = (y_step * y_ticks) as f64;
    let x = |ns: u64| left + (ns - t0) as f64 / 1e9 / t_max * (w - left - right);
    let y = |bytes: u64| h - bottom - bytes as f64 / y_max * (h - top - bottom);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="16">{}</text>"#,
        w / 2.0,
        xml_escape(title)
    );
    // Axes, ticks and grid.
    let (x0, x1, y0, y1) = (left, w - right, h - bottom, top);
    let _ = writeln!(
        svg,
        r##"<path d="M{x0} {y1} V{y0} h{x1}" stroke="black" fill="none"/>
<text x="{}" y="{}" text-anchor="middle">seconds since tracing began</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">bytes</text>"##,
        (x0 + x1) / 2.0,
        h - 12.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
    );
    for i in 0..=y_ticks {
        let ty = y(i * y_step);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{ty:.1}" x2="{x1}" y2="{ty:.1}" stroke="#ddd"/>
<text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            ty + 4.0,
            crate::report::bytes(i * y_step),
        );
    }
    // As many decimals as the step has: 0.1 s steps print "0.3", not 0.30000000000000004.
    let decimals = (-t_step.log10().floor()).max(0.0) as usize;
    for i in 0..=4 {
        let second = t_step * f64::from(i);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{second:.decimals$}</text>"#,
            x0 + second / t_max * (x1 - x0),
            y0 + 18.0,
        );
    }
    // Lines, then the legend.
    for (index, s) in series.iter().enumerate() {
        let step = s.samples.len().div_ceil(2000).max(1);
        for (metric, colour) in TIMELINE_METRICS {
            let mut points = String::new();
            for sample in s.samples.iter().step_by(step).chain(s.samples.last()) {
                let value = match metric {
                    "reserved" => sample.reserved,
                    "committed" => sample.committed,
                    _ => sample.resident,
                };
                let _ = write!(points, "{:.1},{:.1} ", x(sample.monotonic_ns), y(value));
            }
            let _ = writeln!(
                svg,
                r#"<polyline id="{metric}-{index}" points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{}"/>"#,
                points.trim_end(),
                TIMELINE_DASHES[index]
            );
        }
    }
    let mut lx = left;
    for (metric, colour) in TIMELINE_METRICS {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="40" x2="{}" y2="40" stroke="{colour}" stroke-width="3"/><text x="{}" y="44">{metric}</text>"#,
            lx + 24.0,
            lx + 30.0
        );
        lx += 110.0;
    }
    for (s, dash) in series.iter().zip(TIMELINE_DASHES) {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="40" x2="{}" y2="40" stroke="black" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="44">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            xml_escape(s.name)
        );
        lx += 40.0 + 7.0 * s.name.chars().count() as f64;
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, io::Read as _, process::Command};

    use super::*;
    use crate::testing::assert_snapshot;

    fn frame(function: &str, module: &str, address: u64) -> Frame {
        Frame {
            function: function.into(),
            module: Some(module.into()),
            file: None,
            line: None,
            address,
            module_offset: address - 0x7f00_0000_0000,
        }
    }

    fn site<'a>(frames: &'a [Frame], root: Option<&'a str>, reserved: u64) -> SiteSample<'a> {
        SiteSample {
            frames,
            root,
            reserved,
            resident: reserved / 2,
            faults: reserved / 4096,
        }
    }

    #[test]
    fn folded_merges_sorts_and_escapes() {
        let libc = "/usr/lib/libc.so.6";
        let a = [
            frame("mmap", libc, 0x7f00_0000_1000),
            frame("main", "/bin/w", 0x7f00_0000_2000),
        ];
        let b = [
            frame("malloc", libc, 0x7f00_0000_3000),
            frame("<[u8; 8] as Foo>::bar\nbaz", "/bin/w", 0x7f00_0000_4000),
            frame("main", "/bin/w", 0x7f00_0000_2000),
        ];
        let samples = [
            site(&b, Some("w (7)"), 4096),
            site(&a, Some("w (7)"), 1 << 20),
            site(&a, Some("w (7)"), 1 << 20),
            site(&a, None, 8192),
            site(&b, Some("w (7)"), 0),
            site(&[], Some("w (7)"), 3),
        ];
        assert_eq!(
            folded(&samples, Metric::Reserved),
            "main;mmap 8192\n\
             w (7) 3\n\
             w (7);main;<[u8: 8] as Foo>::bar baz;malloc 4096\n\
             w (7);main;mmap 2097152\n"
        );
        assert_eq!(
            folded(&samples, Metric::Resident),
            "main;mmap 4096\n\
             w (7) 1\n\
             w (7);main;<[u8: 8] as Foo>::bar baz;malloc 2048\n\
             w (7);main;mmap 1048576\n"
        );
        assert_eq!(
            folded(&samples, Metric::Faults),
            "main;mmap 2\nw (7);main;<[u8: 8] as Foo>::bar baz;malloc 1\nw (7);main;mmap 512\n"
        );
        assert_eq!(folded(&[], Metric::Reserved), "");
    }

    fn assert_svg(svg: &str, title: &str) {
        assert!(svg.starts_with("<?xml"), "{svg}");
        let open = svg.find("<svg").expect("no <svg");
        let close = svg.rfind("</svg>").expect("no </svg>");
        assert!(open < close);
        assert!(svg[close + "</svg>".len()..].trim().is_empty());
        assert!(svg.contains(title), "title {title:?} missing");
    }

    const FOLDED: &str = "\
memprof-workload (1234);_start;main;alloc::vec::Vec<T>::reserve;malloc;mmap 1073741824
memprof-workload (1234);_start;main;runtime.sysReserve;mmap 268435456
memprof-workload (1234);_start;main;std::thread::spawn;pthread_create;mmap 8392704
memprof-workload (1234);_start;_dl_start;mmap 4096
memprof-workload (1234);_start;main;tiny 100
";

    #[test]
    fn flamegraph_snapshot() {
        let title = "memprof: reserved & mapped";
        let svg = flamegraph_svg(FOLDED, title, "bytes").unwrap();
        assert_svg(&svg, "memprof: reserved &amp; mapped");
        for name in [
            "runtime.sysReserve",
            "pthread_create",
            "memprof-workload (1234)",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.contains("bytes"));
        // Under min_width (0.1%): not drawn.
        assert!(!svg.contains(">tiny"));
        assert_snapshot("export_flamegraph.svg", &svg);
        // Same input, same bytes: colours are deterministic.
        assert_eq!(svg, flamegraph_svg(FOLDED, title, "bytes").unwrap());
    }

    #[test]
    fn flamegraph_of_nothing_is_a_valid_svg() {
        let svg = flamegraph_svg("", "memprof: <none>", "bytes").unwrap();
        assert_svg(&svg, "memprof: &lt;none&gt;");
        assert!(svg.contains("no samples"));
        assert_snapshot("export_flamegraph_empty.svg", &svg);
        assert_eq!(
            flamegraph_svg("a;b 0\n\n", "memprof: <none>", "bytes").unwrap(),
            svg
        );
        let folded = folded(&[site(&[], Some("p"), 0)], Metric::Faults);
        assert_eq!(
            flamegraph_svg(&folded, "t", "faults").unwrap(),
            empty_svg("t")
        );
    }

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
                faults: 1024,
            },
            SiteSample {
                frames: &f.b,
                root: Some("memprof-workload (1234)"),
                reserved: 64 << 20,
                resident: 8 << 10,
                faults: 2,
            },
            SiteSample {
                frames: &f.c,
                root: None,
                reserved: 0,
                resident: 4096,
                faults: 1,
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
                    want.faults as i64
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

    fn go_tool_pprof(args: &[&str], file: &std::path::Path) -> String {
        let out = Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(file)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "running `go tool pprof`: {e}. This test needs Go's pprof: \
                     `cargo xtask setup` installs Debian's golang-go"
                )
            });
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "go tool pprof {args:?} failed: {}\n{stdout}\n{stderr}",
            out.status
        );
        stdout
    }

    /// `go tool pprof`, the reference reader, accepts the profile and shows our functions.
    #[test]
    fn go_tool_pprof_reads_the_profile() {
        let f = fixture();
        let bytes = pprof(&fixture_samples(&f), &ProfileInfo::default());
        let path =
            std::env::temp_dir().join(format!("memprof-export-test-{}.pb.gz", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let top = go_tool_pprof(&["-top", "-sample_index=reserved"], &path);
        let traces = go_tool_pprof(&["-traces"], &path);
        let resident = go_tool_pprof(
            &["-top", "-sample_index=resident", "-nodefraction=0"],
            &path,
        );
        let _ = std::fs::remove_file(&path);
        println!("go tool pprof -top -sample_index=reserved:\n{top}");
        println!("go tool pprof -traces:\n{traces}");
        for name in [
            "mmap64",
            "reserve_arena",
            "malloc",
            "main",
            "memprof-workload (1234)",
        ] {
            assert!(top.contains(name), "{name} missing from -top:\n{top}");
            assert!(
                traces.contains(name),
                "{name} missing from -traces:\n{traces}"
            );
        }
        assert!(top.contains("Type: reserved"), "{top}");
        assert!(top.contains("1024MB"), "{top}");
        assert!(
            traces.contains("process:  memprof-workload (1234)"),
            "{traces}"
        );
        assert!(resident.contains("Type: resident"), "{resident}");
        assert!(resident.contains("[vdso]+0x10"), "{resident}");
    }

    #[test]
    fn timeline_snapshot() {
        let sample = |ms: u64, reserved: u64, committed: u64, resident: u64| Sample {
            monotonic_ns: 5_000_000_000 + ms * 1_000_000,
            reserved: reserved << 20,
            committed: committed << 20,
            resident: resident << 20,
        };
        let first = [
            sample(0, 1, 1, 0),
            sample(100, 1024, 1, 0),
            sample(200, 1024, 256, 64),
            sample(300, 880, 256, 48),
        ];
        let second = [sample(50, 10, 10, 5), sample(250, 40, 40, 30)];
        let svg = timeline_svg(
            "memory over time: a <b> & c",
            &[
                Series {
                    name: "workload (1)",
                    samples: &first,
                },
                Series {
                    name: "child (2)",
                    samples: &second,
                },
            ],
        );
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        for label in [
            "seconds since tracing began",
            "bytes",
            "1.0 GiB",
            "reserved-1",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert_snapshot("export_timeline.svg", &svg);
    }
}
