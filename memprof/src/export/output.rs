//! Where the outputs go: files written whole or not at all, owned by the user who ran sudo,
//! checked before tracing starts; the `--output` directory with every format of one trace
//! side by side; and the report on stdout.
use std::{
    ffi::{OsStr, OsString},
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use super::{
    Metric, ProfileInfo, Series, SiteSample, breakdown::category_stacks, flamegraph_svg, folded,
    pprof, timeline_svg,
};
use crate::report::{ProcessReport, Report, stacks};

/// Says what memprof lost, beside the files it makes up for: flamegraph.pl, inferno and
/// speedscope read a `# lost 3` line in a folded file as a stack named "# lost".
const LOST_NOTE: &str = "lost.txt";

/// Every file memprof writes in an `--output` directory. A reused directory loses those
/// this run does not write: an old `faults.folded` would pass for this run's.
const OUTPUT_FILES: [&str; 12] = [
    "reserved.folded",
    "resident.folded",
    "faults.folded",
    "reserved.svg",
    "resident.svg",
    "faults.svg",
    "breakdown.folded",
    "breakdown.svg",
    "timeline.svg",
    "profile.pb.gz",
    "report.json",
    LOST_NOTE,
];

/// Endings of the files memprof writes: `-o` naming one is a file meant, not a directory.
const FILE_ENDINGS: [&str; 5] = [".pb.gz", ".json", ".svg", ".folded", ".txt"];

/// The user files go to: under sudo (root, with SUDO_UID and SUDO_GID set), the one who
/// ran it, so that they can move and delete what memprof made for them.
fn sudo_owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let id = |name: &str| std::env::var(name).ok()?.parse().ok();
    Some((id("SUDO_UID")?, id("SUDO_GID")?))
}

fn give_to_sudo_user(path: &Path) -> io::Result<()> {
    match sudo_owner() {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// The directory a file goes in ("." for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The file `path` is written to before it is renamed to `path`: in the same directory, so
/// that the rename is atomic. Named `.NAME.memprof-PID.tmp`, which says whose it is.
fn temp_path(path: &Path) -> PathBuf {
    dir_of(path).join(temp_name(path, std::process::id()))
}

fn temp_name(path: &Path, pid: u32) -> OsString {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".memprof-{pid}.tmp"));
    name
}

/// The pid of the memprof whose temporary file for `path` is named `name`.
fn temp_owner(path: &Path, name: &OsStr) -> Option<u32> {
    let prefix = temp_name(path, 0);
    let prefix = prefix.to_str()?.strip_suffix("0.tmp")?;
    name.to_str()?
        .strip_prefix(prefix)?
        .strip_suffix(".tmp")?
        .parse()
        .ok()
}

/// Removes the temporary files for `path` left by runs killed mid-write (SIGKILL gives no
/// chance to clean up): those whose memprof is gone. One whose pid another process has
/// taken since stays until that one is gone too; a live memprof's is its own to rename.
/// Called before each write, when this run has no temporary file of its own.
/// Best effort: a directory memprof may write in but not list still gets its outputs.
fn remove_stale_temps(path: &Path) {
    let dir = dir_of(path);
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for name in entries.filter_map(|e| Some(e.ok()?.file_name())) {
        // memprof's own pid too: a run killed earlier had it, as this one writes its files
        // one after another and has none open now.
        if let Some(pid) = temp_owner(path, &name)
            && (pid == std::process::id() || !Path::new("/proc").join(pid.to_string()).exists())
        {
            let _ = fs::remove_file(dir.join(&name));
        }
    }
}

fn create_temp(temp: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp)
}

/// Writes `contents` to `path` whole or not at all: into a file beside it, synced, then
/// renamed over it, so that a run killed mid-write leaves the previous file or none. A path
/// that is no regular file (`/dev/stdout`, a pipe) is written in place.
pub fn write_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write_atomically(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let path = match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return fs::write(path, contents),
        // Through a symbolic link, the file it names is replaced, not the link.
        Ok(_) => fs::canonicalize(path)?,
        Err(_) => path.to_path_buf(),
    };
    remove_stale_temps(&path);
    let temp = temp_path(&path);
    let written = create_temp(&temp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()?;
        give_to_sudo_user(&temp)?;
        fs::rename(&temp, &path)
    });
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The rename itself lasts once the directory is synced.
    File::open(dir_of(&path))?.sync_all()
}

/// Creates in `dir` the file [`write_file`] would write `name` through, and removes it:
/// whether the file can be written, found before tracing rather than after.
fn probe_writable(path: &Path) -> io::Result<()> {
    remove_stale_temps(path);
    let temp = temp_path(path);
    create_temp(&temp)?;
    fs::remove_file(&temp)
}

/// Refuses, before anything is traced, a `--json` path that could not be written at the end.
pub fn check_json_path(path: &Path) -> anyhow::Result<()> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => bail!(
            "--json {0} is a directory: give a file, e.g. --json {0}/report.json",
            path.display()
        ),
        // A device or a pipe (`--json /dev/stdout`) is written in place.
        Ok(meta) if !meta.is_file() => Ok(()),
        _ => probe_writable(path).with_context(|| {
            format!(
                "--json {}: cannot write in {}",
                path.display(),
                dir_of(path).display()
            )
        }),
    }
}

/// Makes the `--output` directory (owned by the sudo user, as every directory it creates)
/// and checks it can be written, before anything is traced: a bad path would lose every
/// output, and in launch mode after the command ran.
pub fn prepare_output_dir(dir: &Path) -> anyhow::Result<()> {
    let shown = dir.display();
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => bail!(
            "--output {shown} is a file: --output takes a directory, where memprof writes \
             profile.pb.gz, report.json, the flame graphs and the folded stacks"
        ),
        Ok(_) => {}
        Err(_) => {
            let name = dir.to_string_lossy();
            if let Some(ending) = FILE_ENDINGS.iter().find(|e| name.ends_with(*e)) {
                let stem = name.strip_suffix(ending).unwrap_or(&name);
                bail!(
                    "--output takes a directory, and {shown} names a file: give a directory \
                     (--output {stem}), where memprof writes profile.pb.gz, report.json, the \
                     flame graphs and the folded stacks; --json PATH writes the JSON alone"
                );
            }
            // The directories missing on the way, outermost first.
            let mut missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
            missing.reverse();
            for d in missing.into_iter().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir(d)
                    .and_then(|()| give_to_sudo_user(d))
                    .with_context(|| format!("--output: cannot create {}", d.display()))?;
            }
        }
    }
    probe_writable(&dir.join("report.json"))
        .with_context(|| format!("--output {shown}: cannot write in it"))
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

/// Flame graphs, folded stacks, a pprof profile, the timeline and the JSON report, in
/// `dir` (made by [`prepare_output_dir`]); the files of an earlier run that this one does
/// not write are removed. Returns the names of the files written.
pub fn write_output_dir(
    dir: &Path,
    report: &Report,
    json: &str,
) -> anyhow::Result<Vec<&'static str>> {
    fn name(p: &ProcessReport) -> &str {
        program_name(&p.command)
    }
    let mut written = Vec::new();
    let mut write = |name: &'static str, contents: &[u8]| {
        written.push(name);
        write_file(&dir.join(name), contents)
    };
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
    if report.lost_events + report.lost_stacks + report.stacks_over_budget > 0 {
        let note = format!(
            "{lost}\n\nThe kernel could not send memprof everything: the figures in the \
             folded stacks, flame graphs, profile and timeline beside this file may be off by \
             what it missed (lost stacks and stacks over budget are charged to \
             [stack not captured]).\n"
        );
        write(LOST_NOTE, note.as_bytes())?;
    }
    let mut metrics = vec![Metric::Reserved, Metric::Resident];
    if report.fault_sample > 0 {
        metrics.push(Metric::Faults);
    }
    for &metric in &metrics {
        let (folded_name, svg_name, title, unit) = match metric {
            Metric::Reserved => ("reserved.folded", "reserved.svg", "reserved bytes", "bytes"),
            Metric::Resident => ("resident.folded", "resident.svg", "resident bytes", "bytes"),
            Metric::Faults => (
                "faults.folded",
                "faults.svg",
                "page faults by code",
                "faults",
            ),
        };
        let folded = folded(&samples, metric);
        write(folded_name, folded.as_bytes())?;
        let svg = flamegraph_svg(&folded, &format!("{title}: {who}"), &lost, unit)?;
        write(svg_name, svg.as_bytes())?;
    }
    // Reserved bytes with each category as a root: what the address space is for first.
    let by_category: Vec<_> = report
        .processes
        .iter()
        .map(|p| (p, category_stacks(p)))
        .collect();
    let category_samples: Vec<SiteSample> = by_category
        .iter()
        .zip(&roots)
        .flat_map(|((p, stacks), root)| {
            stacks.iter().map(move |s| SiteSample {
                frames: &s.frames,
                root: root.as_deref(),
                pid: p.pid,
                comm: name(p),
                reserved: s.reserved,
                resident: s.resident,
                faults_by_code: 0,
            })
        })
        .collect();
    let folded_categories = folded(&category_samples, Metric::Reserved);
    write("breakdown.folded", folded_categories.as_bytes())?;
    let svg = flamegraph_svg(
        &folded_categories,
        &format!("reserved bytes by what they are for: {who}"),
        &lost,
        "bytes",
    )?;
    write("breakdown.svg", svg.as_bytes())?;
    let info = ProfileInfo {
        metrics,
        time_nanos: i64::try_from(report.started_unix_ns).unwrap_or(0),
        duration_nanos: (report.duration_secs * 1e9) as i64,
        comments: vec![format!("memprof: {who}"), lost.clone()],
        drop_frames: stacks::plumbing_pattern(),
    };
    write("profile.pb.gz", &pprof(&samples, &info))?;
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
    write("timeline.svg", svg.as_bytes())?;
    write("report.json", json.as_bytes())?;
    for stale in OUTPUT_FILES.iter().filter(|f| !written.contains(f)) {
        remove_stale_temps(&dir.join(stale));
        match fs::remove_file(dir.join(stale)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.join(stale).display()));
            }
            _ => {}
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_file_names_its_file_and_its_writer() {
        let path = Path::new("/some/dir/report.json");
        let name = temp_name(path, 4321);
        assert_eq!(name, ".report.json.memprof-4321.tmp");
        assert_eq!(temp_owner(path, &name), Some(4321));
        // Another file's, or not memprof's.
        assert_eq!(temp_owner(Path::new("json"), &name), None);
        for other in [
            ".report.json.memprof-x.tmp",
            ".report.json.swp",
            "report.json",
        ] {
            assert_eq!(temp_owner(path, OsStr::new(other)), None, "{other}");
        }
    }

    #[test]
    fn stale_temporary_files_of_gone_writers_are_removed() {
        let dir = std::env::temp_dir().join(format!("memprof-stale-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).unwrap();
        let path = dir.join("report.json");
        // A pid nobody has once this child is reaped (until the kernel hands it out again).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let stale = dir.join(temp_name(&path, gone));
        // Init never ends; a run killed earlier with this run's pid left the other one.
        let live = dir.join(temp_name(&path, 1));
        let mine = dir.join(temp_name(&path, std::process::id()));
        let other = dir.join(temp_name(&dir.join("resident.svg"), gone));
        for file in [&stale, &live, &mine, &other] {
            fs::write(file, "partial").unwrap();
        }
        remove_stale_temps(&path);
        assert!(!stale.exists());
        assert!(!mine.exists());
        assert!(live.exists(), "a live writer's file was removed");
        assert!(other.exists(), "another file's was removed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
