//! Outputs other tools read, one file per format: folded stacks (flamegraph.pl, inferno,
//! speedscope), SVG flame graphs rendered in-process with inferno, gzipped pprof profiles
//! (`go tool pprof`, Pyroscope, Parca, Grafana) and the timeline; and the `--output`
//! directory that holds them.
//!
//! The formats are pure: symbolized stacks and their figures in, bytes or text out.
mod breakdown;
mod flamegraph;
mod folded;
mod output;
mod pprof;
mod timeline;

pub use flamegraph::flamegraph_svg;
pub use folded::folded;
pub use output::{
    check_json_path, prepare_output_dir, print, program_name, write_file, write_output_dir,
};
pub use pprof::{COMM_LABEL, PID_LABEL, ProfileInfo, pprof, pprof_profile, proto};
pub use timeline::{Series, timeline_svg};

/// One symbolized frame (the symbolizer's own type): `function` is the demangled name, or
/// "module+0x1f3a" when unknown; `module` the binary or library path; `address` the runtime
/// address; `module_offset` the file offset in `module`; `region` where `module` was mapped;
/// `inlined` when the next frame stands for the same address.
pub use crate::symbolize::Frame;

/// A call stack (a site) with its figures.
#[derive(Debug, Clone, Copy)]
pub struct SiteSample<'a> {
    /// LEAF FIRST, as the kernel gives them.
    pub frames: &'a [Frame],
    /// An extra root frame, e.g. the process, "memprof-workload (1234)"; None: none.
    pub root: Option<&'a str>,
    /// The process the stack ran in, and its name.
    pub pid: u32,
    pub comm: &'a str,
    pub reserved: u64,
    pub resident: u64,
    /// Page faults made by code with this stack (`--fault-stacks`).
    pub faults_by_code: u64,
}

/// Which figure of a [`SiteSample`] a folded line counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Bytes.
    Reserved,
    /// Bytes.
    Resident,
    /// Page faults made by the code (`faults.folded`).
    Faults,
}

impl Metric {
    /// What files and sample types of this figure are called.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Reserved => "reserved",
            Metric::Resident => "resident",
            Metric::Faults => "faults",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::Reserved | Metric::Resident => "bytes",
            Metric::Faults => "count",
        }
    }

    fn of(self, s: &SiteSample) -> u64 {
        match self {
            Metric::Reserved => s.reserved,
            Metric::Resident => s.resident,
            Metric::Faults => s.faults_by_code,
        }
    }
}

pub(crate) fn xml_escape(s: &str) -> String {
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

#[cfg(test)]
mod test_support {
    use super::{Frame, SiteSample};

    pub(super) fn frame(function: &str, module: &str, address: u64) -> Frame {
        Frame {
            function: function.into(),
            module: Some(module.into()),
            address,
            module_offset: address - 0x7f00_0000_0000,
            ..Frame::default()
        }
    }

    pub(super) fn site<'a>(
        frames: &'a [Frame],
        root: Option<&'a str>,
        reserved: u64,
    ) -> SiteSample<'a> {
        SiteSample {
            frames,
            root,
            pid: 1,
            comm: "test",
            reserved,
            resident: reserved / 2,
            faults_by_code: reserved / 4096,
        }
    }
}
