//! `memprof top`, in batch mode and driven interactively through tmux.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use support::*;

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `memprof top OPTIONS --cgroup CGROUP`, stdin closed, stdout and stderr piped.
fn top(cgroup: &TestCgroup, options: &[&str]) -> Child {
    memprof()
        .arg("top")
        .args(options)
        .args(["--cgroup", &cgroup.path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_success(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn batch_json_names_the_busiest_process_within_two_refreshes() {
    let cgroup = TestCgroup::new("top-json");
    let idle = cgroup.spawn(&["sleep", "30"]);
    std::thread::sleep(Duration::from_millis(100));
    let top = top(
        &cgroup,
        &["--batch", "--json", "--delay", "0.5", "--duration", "3.2"],
    );
    // Let it trace, then start the busy one: it reserves 4 GiB and faults pages in.
    std::thread::sleep(Duration::from_millis(700));
    let busy = cgroup.spawn(&[WORKLOAD, "--storm", "faults", "--scale", "0.5"]);
    let busy_pid = busy.id();
    let out = top.wait_with_output().unwrap();
    kill(busy);
    kill(idle);
    let stdout = assert_success(&out);
    // Every line is one refresh, as JSON.
    let refreshes: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    // Refreshes at 0.5 s steps; the busy process started after the first.
    assert!(refreshes.len() >= 5, "{stdout}");
    let leaders: Vec<u64> = refreshes
        .iter()
        .map(|r| r["rows"][0]["pid"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        leaders[1..3].contains(&u64::from(busy_pid)),
        "pid {busy_pid} not first within two refreshes of its start:\n{stdout}"
    );
    let last = refreshes.last().unwrap();
    let names: Vec<&str> = last["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"sleep"), "{stdout}");
    assert_eq!(
        last["rows"].as_array().unwrap().len(),
        last["processes"].as_u64().unwrap() as usize
    );
    assert_eq!(last["lost_events"], 0, "{stdout}");
    assert_eq!(last["sort"], "reserved");
    // While it holds its 4 GiB, mapped by the program itself, they are most of what it
    // reserved.
    let busy = refreshes
        .iter()
        .flat_map(|r| r["rows"].as_array().unwrap())
        .find(|row| {
            row["pid"].as_u64() == Some(u64::from(busy_pid))
                && row["reserved_bytes"].as_u64().unwrap() >= 4 << 30
        })
        .unwrap_or_else(|| panic!("pid {busy_pid} never held its 4 GiB:\n{stdout}"));
    assert_eq!(busy["reserved_most_in"], "other", "{stdout}");
    assert!(busy["resident_most_in"].is_string(), "{stdout}");
}

#[test]
fn batch_text_stops_after_n_refreshes_and_prints_the_last_one_at_the_duration() {
    let cgroup = TestCgroup::new("top-batch");
    let idle = cgroup.spawn(&["sleep", "30"]);
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let out = top(&cgroup, &["--batch", "-d", "0.2", "-n", "3"])
        .wait_with_output()
        .unwrap();
    let stdout = assert_success(&out);
    assert_eq!(stdout.matches("memprof top ").count(), 3, "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(stdout.contains("\nsleep 30 "), "{stdout}");
    assert!(stdout.contains("1 process  lost events: 0"), "{stdout}");

    // A refresh falls due as the duration ends: printed whichever comes first.
    for _ in 0..3 {
        let out = top(&cgroup, &["--batch", "-d", "0.5", "--duration", "1"])
            .wait_with_output()
            .unwrap();
        let stdout = assert_success(&out);
        let elapsed: Vec<f64> = stdout
            .lines()
            .filter_map(|l| {
                l.strip_prefix("memprof top  ")?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        assert_eq!(elapsed.len(), 2, "{stdout}");
        assert!(elapsed[1] >= 0.95, "{stdout}");
    }
    kill(idle);
}

#[test]
fn a_closed_stdout_ends_batch_mode_quietly() {
    let cgroup = TestCgroup::new("top-closed");
    let idle = cgroup.spawn(&["sleep", "30"]);
    for format in ["--batch", "--json"] {
        let mut top = top(&cgroup, &[format, "-d", "0.2", "--duration", "20"]);
        // Nobody reads: the first refresh finds the pipe closed.
        drop(top.stdout.take());
        let started = Instant::now();
        let out = top.wait_with_output().unwrap();
        assert_success(&out);
        assert!(started.elapsed() < Duration::from_secs(10), "{format}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("error"), "{format}: {stderr}");
    }
    kill(idle);
}

/// tmux's view of one pane.
struct Pane {
    target: String,
}

impl Pane {
    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.target])
    }

    fn alternate_screen(&self) -> bool {
        self.tmux(&["display", "-p", "-t", &self.target, "#{alternate_on}"])
            .trim()
            == "1"
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", &self.target, keys]);
    }

    /// Waits until the pane shows something `ready` accepts; returns that screen.
    fn wait_for(&self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "pane never showed {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The modes the script printed after top: canonical input and echo back on.
fn assert_terminal_restored(screen: &str) {
    let modes: Vec<&str> = screen.lines().map(str::trim).collect();
    assert!(
        modes.contains(&"icanon") && modes.contains(&"echo"),
        "{screen}"
    );
}

impl Drop for Pane {
    fn drop(&mut self) {
        let session = self.target.split(':').next().unwrap().to_string();
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &session])
            .output();
    }
}

#[test]
fn interactive_view_at_80x24_names_the_process_shows_help_sorts_and_restores_the_terminal() {
    let cgroup = TestCgroup::new("top-tmux");
    // Busy for a few seconds (its steps reserve and touch memory), then idle.
    let workload = cgroup.spawn(&[WORKLOAD, "--pause-ms", "300", "--hold-ms", "60000"]);
    let pid = workload.id().to_string();
    let session = format!("memprof-test-{}", std::process::id());
    // After top, the shell prints the terminal's modes: canonical input and echo must be
    // back on, as they were before top took the terminal raw.
    let top = format!("{MEMPROF} top --delay 0.5 --cgroup {}", cgroup.path);
    let modes = "stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo";
    // `read` holds the second run until the first has been looked at.
    let script = format!(
        "{top}; {modes}; echo TOP-EXITED; read next; {top}; clear; {modes}; echo CTRL-C; sleep 60"
    );
    let pane = Pane {
        target: format!("{session}:0"),
    };
    pane.tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        "sh",
        "-c",
        &script,
    ]);
    // Its name starts the row, its pid beside it, on 80 columns.
    let screen = pane.wait_for("the workload's name", |s| {
        s.lines()
            .any(|l| l.starts_with("memprof-workload") && l.split_whitespace().any(|w| w == pid))
    });
    assert!(screen.contains("▼RESERVED/s"), "{screen}");
    assert!(pane.alternate_screen());

    pane.keys("?");
    let help = pane.wait_for("the help", |s| s.contains("memprof top: help"));
    assert!(help.contains("Any key goes back"), "{help}");
    assert!(!help.contains("memprof-workload"), "{help}");
    pane.keys("Space");
    pane.wait_for("the rows again", |s| s.contains("memprof-workload"));

    pane.keys("f");
    pane.wait_for("the fault-rate sort", |s| s.contains("▼FAULTS/s"));
    pane.keys("m");
    pane.wait_for("the resident sort", |s| s.contains("▼RESIDENT/s"));
    pane.keys("Space");
    pane.wait_for("the pause", |s| s.contains("PAUSED"));
    // A wider window has room for the cgroup: redrawn on the resize itself, as refreshes
    // draw nothing while paused.
    pane.tmux(&["resize-window", "-t", &session, "-x", "140", "-y", "30"]);
    pane.wait_for("the cgroup column", |s| s.contains("CGROUP"));
    pane.keys("p");
    pane.wait_for("the end of the pause", |s| !s.contains("PAUSED"));

    pane.keys("q");
    let screen = pane.wait_for("top's exit", |s| s.contains("TOP-EXITED"));
    assert!(
        !screen.contains("RESERVED/s"),
        "top's screen was left behind:\n{screen}"
    );
    assert_terminal_restored(&screen);
    assert!(!pane.alternate_screen());

    // Ctrl-C leaves it as clean.
    pane.keys("Enter");
    pane.wait_for("top again", |s| s.contains("▼RESERVED/s"));
    pane.keys("C-c");
    let screen = pane.wait_for("top's exit on Ctrl-C", |s| s.contains("CTRL-C"));
    assert_terminal_restored(&screen);
    assert!(!pane.alternate_screen());
    kill(workload);
}
