//! The `--output` directory: every format of one trace, side by side; and the report on
//! stdout.
use std::{
    fs,
    io::{self, Write},
    path::Path,
};

use anyhow::Context as _;

use super::{Metric, ProfileInfo, Series, SiteSample, flamegraph_svg, folded, pprof, timeline_svg};
use crate::report::{ProcessReport, Report, stacks};

/// Writes `contents` to `path` and says so on stderr.
pub fn write_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    crate::note!("memprof: wrote {}", path.display());
    Ok(())
}

/// Writes `text` to stdout or stderr. A reader that went away (`memprof run … | head -1`)
/// is no error, as for other tools: the files still get written.
pub fn print(mut out: impl Write, text: &str) -> io::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The program's name in a command line: its first word without the directory, as the
/// pprof `comm` label and the agent's metrics name processes.
pub fn program_name(command: &str) -> &str {
    let name = command.split_whitespace().next().unwrap_or("?");
    name.rsplit('/').next().unwrap_or(name)
}

/// Flame graphs, folded stacks, a pprof profile and the JSON report, in `dir`.
pub fn write_output_dir(dir: &Path, report: &Report, json: &str) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fn name(p: &ProcessReport) -> &str {
        program_name(&p.command)
    }
    // "name (pid)": with several processes, each stack starts at its process.
    let label = |p: &ProcessReport| format!("{} ({})", name(p), p.pid);
    let roots: Vec<Option<String>> = report
        .processes
        .iter()
        .map(|p| (report.processes.len() > 1).then(|| label(p)))
        .collect();
    let samples: Vec<SiteSample> = report
        .processes
        .iter()
        .zip(&roots)
        .flat_map(|(p, root)| {
            p.sites.iter().map(move |s| SiteSample {
                frames: &s.stack,
                root: root.as_deref(),
                pid: p.pid,
                comm: name(p),
                reserved: s.reserved_bytes,
                resident: s.resident_bytes,
                faults_by_code: s.faults_by_code,
            })
        })
        .collect();
    let who = match report.processes.as_slice() {
        [p] => format!("{} (pid {})", p.command, p.pid),
        all => format!("{} processes", all.len()),
    };
    // In every picture and profile: what memprof missed, which the figures may be short by.
    let lost = format!(
        "lost events: {}, lost stacks: {}, stacks over budget: {}",
        report.lost_events, report.lost_stacks, report.stacks_over_budget
    );
    let mut metrics = vec![Metric::Reserved, Metric::Resident];
    if report.fault_sample > 0 {
        metrics.push(Metric::Faults);
    }
    for &metric in &metrics {
        let name = metric.name();
        let folded = folded(&samples, metric);
        write_file(&dir.join(format!("{name}.folded")), folded.as_bytes())?;
        if metric != Metric::Faults {
            let title = format!("{name} bytes: {who}");
            let svg = flamegraph_svg(&folded, &title, &lost, "bytes")?;
            write_file(&dir.join(format!("{name}.svg")), svg.as_bytes())?;
        }
    }
    let info = ProfileInfo {
        metrics,
        time_nanos: i64::try_from(report.started_unix_ns).unwrap_or(0),
        duration_nanos: (report.duration_secs * 1e9) as i64,
        comments: vec![format!("memprof: {who}"), lost.clone()],
        drop_frames: stacks::plumbing_pattern(),
    };
    write_file(&dir.join("profile.pb.gz"), &pprof(&samples, &info))?;
    // The processes whose address space grew most.
    let growing: Vec<(&ProcessReport, String)> = report
        .by_growth()
        .into_iter()
        .map(|p| match report.processes.len() {
            1 => (p, format!("pid {}", p.pid)),
            _ => (p, label(p)),
        })
        .collect();
    let series: Vec<Series> = growing
        .iter()
        .map(|(p, name)| Series {
            name,
            samples: &p.timeline,
        })
        .collect();
    let svg = timeline_svg(&format!("memory over time: {who} ({lost})"), &series);
    write_file(&dir.join("timeline.svg"), svg.as_bytes())?;
    write_file(&dir.join("report.json"), json.as_bytes())
}
