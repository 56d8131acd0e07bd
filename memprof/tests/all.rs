//! `memprof run --all`: processes that start during the run, in their own cgroups, each
//! checked against /proc; the filters keep only what they name.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Stdio},
};

use serde_json::Value;
use support::*;

const PAUSE_MS: u64 = 300;

/// memprof tracing `--all` with `filter`, started and tracing; its report goes to `json`.
fn start_all(json: &std::path::Path, filter: &[&str]) -> Child {
    let mut child = memprof()
        .args(["run", "--all", "--interval", "20ms", "--json"])
        .arg(json)
        .args(filter)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("memprof: tracing every process") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "memprof ended early"
        );
    }
    child.stderr = None;
    // Keep reading stderr so memprof never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    child
}

fn stop(child: Child, json: &std::path::Path) -> Value {
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "memprof failed: {}", out.status);
    let report = read_json(json);
    assert_eq!(report["lost_events"], 0);
    report
}

fn pids(report: &Value) -> Vec<u64> {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect()
}

#[test]
fn all_traces_processes_started_in_cgroups_exactly_and_filters_keep_what_they_name() {
    let dir = scratch("all");
    let parent = TestCgroup::new("all");
    let (a, b) = (parent.child("a"), parent.child("b"));
    let jsons: Vec<PathBuf> = ["parent", "a", "comm"]
        .iter()
        .map(|n| dir.join(format!("{n}.json")))
        .collect();
    let tracers = [
        start_all(&jsons[0], &["--cgroup", &parent.path]),
        start_all(&jsons[1], &["--cgroup", &a.path]),
        // The kernel keeps 15 characters of a command name.
        start_all(&jsons[2], &["--comm", "memprof-workload", "--uid", "0"]),
    ];

    let pause = PAUSE_MS.to_string();
    let workloads = [
        a.spawn(&[WORKLOAD, "--pause-ms", &pause]),
        b.spawn(&[WORKLOAD, "--pause-ms", &pause, "--sites"]),
    ];
    // Lives for 50 ms.
    let short = a.spawn(&["sleep", "0.05"]);
    let short_pid = u64::from(short.id());
    assert!(short.wait_with_output().unwrap().status.success());
    let outputs: Vec<(u64, String)> = workloads
        .into_iter()
        .map(|w| {
            let pid = u64::from(w.id());
            let out = w.wait_with_output().unwrap();
            assert!(out.status.success());
            (pid, String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .collect();
    let [in_parent, in_a, by_comm] = tracers;
    let reports = [
        stop(in_parent, &jsons[0]),
        stop(in_a, &jsons[1]),
        stop(by_comm, &jsons[2]),
    ];

    let [(a_pid, a_out), (b_pid, b_out)] = &outputs[..] else {
        unreachable!()
    };
    // The parent cgroup holds both workloads, each as exact as a single-process run, and
    // the process that lived 50 ms.
    let all = &reports[0];
    for (pid, out, cgroup) in [(a_pid, a_out, &a.path), (b_pid, b_out, &b.path)] {
        let p = process(all, *pid);
        assert_eq!(p["cgroup"].as_str(), Some(cgroup.as_str()));
        assert_eq!(p["exited"], true);
        assert_checkpoints_match(p, &checkpoints(out), PAUSE_MS);
    }
    let short = process(all, short_pid);
    assert_eq!(short["exited"], true, "{short}");
    assert!(
        short["command"].as_str().unwrap().contains("sleep"),
        "{short}"
    );
    // Nothing from outside the cgroup: the tracers, the test, the shells before they moved.
    for pid in pids(all) {
        assert!(
            [*a_pid, *b_pid, short_pid].contains(&pid),
            "pid {pid} is not in {}: {all:#}",
            parent.path
        );
    }

    // --cgroup of one child: its processes only.
    let mut only_a = pids(&reports[1]);
    only_a.sort_unstable();
    let mut expected = vec![*a_pid, short_pid];
    expected.sort_unstable();
    assert_eq!(only_a, expected);
    assert_checkpoints_match(process(&reports[1], *a_pid), &checkpoints(a_out), PAUSE_MS);

    // --comm and --uid: both workloads, wherever they run, and not `sleep`.
    let mut by_name = pids(&reports[2]);
    by_name.sort_unstable();
    let mut expected = vec![*a_pid, *b_pid];
    expected.sort_unstable();
    assert_eq!(by_name, expected);
}

/// A host's churn: 300 short processes under `--keep-exited 5`. The report keeps a few (those
/// that grew most) and counts the rest, so memprof holds no more however long it runs.
#[test]
fn exited_processes_beyond_keep_exited_are_counted_not_kept() {
    let dir = scratch("all-churn");
    let cgroup = TestCgroup::new("all-churn");
    let json = dir.join("report.json");
    let tracer = start_all(&json, &["--cgroup", &cgroup.path, "--keep-exited", "5"]);
    let mut shell = cgroup.spawn(&["sh", "-c", "for i in $(seq 300); do /bin/true; done"]);
    assert!(shell.wait().unwrap().success());
    // A few of memprof's checks (every 200 ms) after the last exit.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let report = stop(tracer, &json);
    let kept = report["processes"].as_array().unwrap().len() as u64;
    let left_out = report["processes_left_out"].as_u64().unwrap();
    // The shell, its `seq` and its 300 children, all exited: kept or counted, each once.
    assert_eq!(kept + left_out, 302, "{kept} kept, {left_out} left out");
    // At most the bound and its slack (5 + 5/4 + 16) between two checks.
    assert!(kept <= 22, "{kept} kept");
}
