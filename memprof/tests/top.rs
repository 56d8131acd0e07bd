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

/// The first pid of each batch block (the table's top row), in order.
fn leaders(stdout: &str) -> Vec<Option<u32>> {
    stdout
        .split("memprof top ")
        .skip(1)
        .map(|block| {
            block
                .lines()
                .nth(2)
                .and_then(|row| row.split_whitespace().next()?.parse().ok())
        })
        .collect()
}

#[test]
fn batch_names_the_busiest_process_within_two_refreshes() {
    let cgroup = TestCgroup::new("top-batch");
    let idle = cgroup.spawn(&["sleep", "30"]);
    std::thread::sleep(Duration::from_millis(100));
    let top = memprof()
        .args(["top", "--batch", "--refresh", "0.5", "--duration", "3.2"])
        .args(["--cgroup", &cgroup.path])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it trace, then start the busy one: it reserves 4 GiB and faults pages in.
    std::thread::sleep(Duration::from_millis(700));
    let busy = cgroup.spawn(&[WORKLOAD, "--storm", "faults", "--scale", "0.5"]);
    let busy_pid = busy.id();
    let out = top.wait_with_output().unwrap();
    kill(busy);
    kill(idle);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let leaders = leaders(&stdout);
    // Refreshes at 0.5 s steps; the busy process started after the first.
    assert!(leaders.len() >= 5, "{stdout}");
    assert!(
        leaders[1..3].contains(&Some(busy_pid)),
        "pid {busy_pid} not first within two refreshes of its start:\n{stdout}"
    );
    assert!(stdout.contains("sleep 30"), "{stdout}");
    assert!(stdout.contains("lost events: 0"), "{stdout}");
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
fn interactive_view_sorts_on_keys_and_q_restores_the_terminal() {
    let cgroup = TestCgroup::new("top-tmux");
    let workload = cgroup.spawn(&[WORKLOAD, "--hold-ms", "60000"]);
    let pid = workload.id().to_string();
    let session = format!("memprof-test-{}", std::process::id());
    // After top, the shell prints the terminal's modes: canonical input and echo must be
    // back on, as they were before top took the terminal raw.
    let top = format!("{MEMPROF} top --refresh 0.5 --cgroup {}", cgroup.path);
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
        "160",
        "-y",
        "30",
        "sh",
        "-c",
        &script,
    ]);
    let screen = pane.wait_for("the workload", |s| {
        s.lines()
            .any(|l| l.split_whitespace().next() == Some(pid.as_str()))
    });
    assert!(screen.contains("▼RESERVED/s"), "{screen}");
    assert!(pane.alternate_screen());

    pane.keys("f");
    pane.wait_for("the fault-rate sort", |s| s.contains("▼FAULTS/s"));
    pane.keys("m");
    pane.wait_for("the resident sort", |s| s.contains("▼RESIDENT/s"));

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
