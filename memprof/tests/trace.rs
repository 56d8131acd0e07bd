//! memprof against real processes on this kernel, checked against /proc.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use support::*;

const PAUSE_MS: u64 = 300;

/// memprof launching `command`, sampling every 20 ms (several samples per checkpoint pause),
/// its report written to `json`.
fn launch_traced(json: &std::path::Path, command: &[&str]) -> std::process::Output {
    run_ok(
        memprof()
            .args(["run", "--interval", "20ms", "--json"])
            .arg(json)
            .arg("--")
            .args(command),
    )
}

#[test]
fn launch_mode_is_exact_at_every_checkpoint() {
    let dir = scratch("launch");
    let json = dir.join("report.json");
    let out = launch_traced(&json, &[WORKLOAD, "--pause-ms", &PAUSE_MS.to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = read_json(&json);
    assert_eq!(report["lost_events"], 0);
    let processes = report["processes"].as_array().unwrap();
    let workload = processes
        .iter()
        .find(|p| p["command"].as_str().unwrap().contains("memprof-workload"))
        .expect("workload in report");
    assert_eq!(workload["exited"], true);
    // Reconciled with the kernel's own figures, read as it exited.
    let check = &workload["proc_check"];
    assert_eq!(check["at_exit"], true, "{check}");
    assert_eq!(workload["reserved_bytes"]["end"], check["vm_size_bytes"]);
    let resident = workload["resident_bytes"]["end"].as_u64().unwrap();
    assert!(
        resident_close(resident, check["vm_rss_bytes"].as_u64().unwrap()),
        "resident {resident} vs the kernel's {check}"
    );
    let checkpoints = checkpoints(&stdout);
    assert_eq!(checkpoints.last().unwrap().name, "end", "{stdout}");
    // What the kernel counted at exit, its per-CPU parts summed, is what /proc said at the
    // workload's last checkpoint (but for the few pages Rust's runtime unmaps on its way out).
    let last = checkpoints.last().unwrap();
    assert!(
        check["vm_rss_bytes"]
            .as_u64()
            .unwrap()
            .abs_diff(last.vm_rss)
            <= 64 << 10,
        "the kernel's {check} at exit vs /proc's {} at the end",
        last.vm_rss
    );
    assert_checkpoints_match(workload, &checkpoints, PAUSE_MS);
    // The stack grew without a syscall, and every kind of change was seen.
    let events = &workload["events"];
    for kind in [
        "mmap", "munmap", "mremap", "brk", "mprotect", "madvise", "shmat", "shmdt",
    ] {
        assert!(events[kind].as_u64().unwrap() > 0, "no {kind} in {events}");
    }
    assert!(events["stack_growths"].as_u64().unwrap() > 0, "{events}");
    assert!(stdout.contains("lost events: 0"), "{stdout}");
}

/// A child the command forks and execs is followed from its first instruction, and its
/// figures are as exact as the command's own.
#[test]
fn forked_children_are_followed_and_exact() {
    let dir = scratch("fork");
    let json = dir.join("report.json");
    // `; true` keeps the shell from exec'ing the workload in place: it must fork.
    let script = format!("{WORKLOAD} --pause-ms {PAUSE_MS}; true");
    let out = launch_traced(&json, &["sh", "-c", &script]);
    let report = read_json(&json);
    assert_eq!(report["lost_events"], 0);
    let processes = report["processes"].as_array().unwrap();
    assert!(processes.len() >= 2, "{report:#}");
    let shell = &processes[0];
    assert!(shell["events"]["forks"].as_u64().unwrap() >= 1, "{shell}");
    let workload = processes
        .iter()
        .find(|p| p["command"].as_str().unwrap().starts_with(WORKLOAD))
        .expect("the forked workload is in the report");
    assert_eq!(workload["events"]["execs"], 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_checkpoints_match(workload, &checkpoints(&stdout), PAUSE_MS);
}

/// Two memprof runs attached to one process at once both match /proc, and nothing either
/// loaded into the kernel outlives it.
#[test]
fn attach_mode_is_exact_and_two_runs_coexist_and_clean_up() {
    let dir = scratch("attach");
    let mut workload = Command::new(WORKLOAD)
        .args(["--wait-stdin", "--hold-ms", "60000"])
        .args(["--pause-ms", &PAUSE_MS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(workload.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    let pid: u64 = ready
        .strip_prefix("ready ")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let runs: Vec<_> = (0..2)
        .map(|i| {
            let json = dir.join(format!("report-{i}.json"));
            let mut child = memprof()
                .args([
                    "run",
                    "--interval",
                    "20ms",
                    "--pid",
                    &pid.to_string(),
                    "--json",
                ])
                .arg(&json)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (traced, stderr) = wait_until_tracing(&mut child);
            assert_eq!(u64::from(traced), pid);
            (child, stderr, json)
        })
        .collect();
    let kernel_objects: Vec<BTreeSet<(String, u32)>> = runs
        .iter()
        .map(|(child, ..)| bpf_objects_of(child.id()))
        .collect();
    for objects in &kernel_objects {
        assert!(
            objects.iter().any(|(kind, _)| kind == "prog_id"),
            "{objects:?}"
        );
        assert!(
            objects.iter().any(|(kind, _)| kind == "map_id"),
            "{objects:?}"
        );
    }

    writeln!(workload.stdin.as_mut().unwrap()).unwrap();
    let mut stdout = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout.push_str(&line);
        stdout.push('\n');
        if line.contains("\"end\"") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(PAUSE_MS));
    let checkpoints = checkpoints(&stdout);
    for (child, mut stderr, json) in runs {
        signal(&child, libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        assert!(out.status.success(), "{}: {rest}", out.status);
        let report = read_json(&json);
        assert_eq!(report["lost_events"], 0);
        let p = process(&report, pid);
        assert_eq!(p["exited"], false);
        assert_checkpoints_match(p, &checkpoints, PAUSE_MS);
        let check = &p["proc_check"];
        assert_eq!(
            p["reserved_bytes"]["end"], check["vm_size_bytes"],
            "{check}"
        );
        assert!(resident_close(
            p["resident_bytes"]["end"].as_u64().unwrap(),
            check["vm_rss_bytes"].as_u64().unwrap()
        ));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("(exact)"), "{text}");
    }
    let _ = workload.kill();
    let _ = workload.wait();

    // The kernel frees programs after an RCU grace period and maps after the programs that
    // use them, so give it a moment before calling anything left behind a leak.
    let ours: BTreeSet<(String, u32)> = kernel_objects.into_iter().flatten().collect();
    let mut left = Vec::new();
    for _ in 0..100 {
        let alive = live_bpf_objects();
        left = ours.intersection(&alive).cloned().collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        left.is_empty(),
        "still loaded 10 s after memprof exited: {left:?}"
    );
}

/// The eBPF programs, maps and links a process holds, from its fdinfo.
fn bpf_objects_of(pid: u32) -> BTreeSet<(String, u32)> {
    let mut objects = BTreeSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some((key, value)) = line.split_once(':')
                && ["prog_id", "map_id", "link_id"].contains(&key)
            {
                objects.insert((key.to_string(), value.trim().parse().unwrap()));
            }
        }
    }
    objects
}

fn live_bpf_objects() -> BTreeSet<(String, u32)> {
    let programs = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| ("prog_id".to_string(), p.id()));
    let maps = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .map(|m| ("map_id".to_string(), m.id()));
    let links = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| ("link_id".to_string(), l.id()));
    programs.chain(maps).chain(links).collect()
}

/// A traced process killed mid-run: the report is still written, with its last state.
#[test]
fn a_killed_process_still_gets_its_report() {
    let dir = scratch("killed");
    let json = dir.join("report.json");
    let mut child = memprof()
        .args(["run", "--json"])
        .arg(&json)
        .args(["--", WORKLOAD, "--pause-ms", "2000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (pid, mut memprof_stderr) = wait_until_tracing(&mut child);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"reserve\""), "{first}");
    // SAFETY: killing the workload we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    // The command's status, as a shell gives it.
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGKILL),
        "{}",
        out.status
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut memprof_stderr, &mut stderr).unwrap();
    assert!(stderr.contains("killed by signal 9"), "{stderr}");
    let report = read_json(&json);
    let p = process(&report, u64::from(pid));
    assert_eq!(p["exited"], true);
    assert!(
        p["reserved_bytes"]["end"].as_u64().unwrap() > 1 << 30,
        "{p}"
    );
}

/// A Go program traced from launch: the runtime's start-up reservations show, reserved far
/// above resident, both exact.
#[test]
fn go_program_startup_reservations() {
    let dir = scratch("go");
    let program = build_go_program(&dir);
    let json = dir.join("report.json");
    let out = launch_traced(&json, &[program.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = read_json(&json);
    assert_eq!(report["lost_events"], 0);
    let p = &report["processes"][0];
    let reserved = p["reserved_bytes"]["end"].as_u64().unwrap();
    let resident = p["resident_bytes"]["end"].as_u64().unwrap();
    assert!(
        reserved > 20 * resident,
        "reserved {reserved} vs resident {resident}"
    );
    assert!(p["events"]["mmap"].as_u64().unwrap() > 5, "{}", p["events"]);
    assert_checkpoints_match(p, &checkpoints(&stdout), PAUSE_MS);
}

/// timeline.svg draws the workload's phases: reserved jumps by 1 GiB, holds, drops at its
/// munmap step and ends below its peak.
#[test]
fn timeline_svg_shows_the_workloads_phases() {
    let dir = scratch("timeline");
    let out = dir.join("out");
    run_ok(
        memprof()
            .args(["run", "--interval", "20ms", "--output"])
            .arg(&out)
            .args(["--", WORKLOAD, "--pause-ms", "100"]),
    );
    let svg = fs::read_to_string(out.join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    for label in [
        "seconds since tracing began",
        "bytes",
        "reserved",
        "resident",
        "memprof-workload",
    ] {
        assert!(svg.contains(label), "{label} missing");
    }
    let line = svg
        .lines()
        .find(|l| l.contains(r#"id="reserved-0""#))
        .expect("a reserved line");
    let points = line
        .split(r#"points=""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    // SVG y grows downwards: height above the axis is what was reserved.
    let heights: Vec<f64> = points
        .split_whitespace()
        .map(|p| -p.split(',').nth(1).unwrap().parse::<f64>().unwrap())
        .collect();
    let peak = heights.iter().cloned().fold(f64::MIN, f64::max);
    let first_peak = heights.iter().position(|&h| h == peak).unwrap();
    let (first, last) = (heights[0], *heights.last().unwrap());
    assert!(first < peak - 100.0, "starts low: {first} vs {peak}");
    assert!(
        first_peak > 0 && last < peak,
        "drops after its peak: {heights:?}"
    );
    let dip = heights[first_peak..]
        .iter()
        .cloned()
        .fold(f64::MAX, f64::min);
    assert!(
        dip < last,
        "the munmap step dips below the end: {heights:?}"
    );
}

/// The mixed storm at a quarter of the bench's scale: 65,536 faults in one pass over 256 MiB
/// (sent in runs), then 12,500 rounds of mmap, touch, munmap (an event each, hundreds of
/// thousands a second). With default buffer sizes every one arrives and none is lost.
#[test]
fn nothing_is_lost_at_a_high_event_rate() {
    const FAULTS: u64 = 65_536;
    const ROUNDS: u64 = 12_500;
    let report = json_report(
        "storm",
        &[],
        &[WORKLOAD, "--storm", "mixed", "--scale", "0.25"],
    );
    assert_eq!(report["lost_events"], 0);
    assert_eq!(report["lost_stacks"], 0);
    let p = &report["processes"][0];
    // Start-up adds a few hundred faults and a few dozen calls.
    let events = &p["events"];
    let count = |kind: &str| events[kind].as_u64().unwrap();
    for (kind, expected, slack) in [
        ("page_faults", FAULTS + ROUNDS, 1000),
        ("mmap", ROUNDS + 1, 100),
        ("munmap", ROUNDS + 1, 100),
    ] {
        assert!(
            (expected..expected + slack).contains(&count(kind)),
            "{kind}: {} for {expected}",
            count(kind)
        );
    }
    // The fault storm's faults are charged to the memory it reserved, exactly.
    let storm_faults: u64 = p["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stack"].to_string().contains("memprof_storm_faults"))
        .map(|s| s["faults_in_regions"].as_u64().unwrap())
        .sum();
    assert_eq!(storm_faults, FAULTS);
}
