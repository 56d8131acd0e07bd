//! memprof behaves like its peers (strace, time, perf) on the command line: the command it
//! launches runs as it would without it.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use support::*;

/// The command starts with SIGPIPE at its default although memprof (a Rust program) ignores
/// it: `yes` dies quietly when `head` exits instead of printing "Broken pipe".
#[test]
fn the_command_starts_with_default_signal_dispositions() {
    let out = run_ok(memprof().args(["run", "--", "sh", "-c", "yes | head -1"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Broken pipe"), "{stderr}");

    let out = run_ok(memprof().args(["run", "--", "grep", "^SigIgn", "/proc/self/status"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ignored = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .unwrap_or_else(|| panic!("grep printed no SigIgn: {stdout}"));
    let ignored = u64::from_str_radix(ignored.trim(), 16).unwrap();
    assert_eq!(ignored & 1 << (libc::SIGPIPE - 1), 0, "SigIgn {ignored:#x}");
}

/// Runs `cmd` with nobody reading its stdout, nor its stderr when `close_stderr`: its exit
/// status, and its stderr when read.
fn unread(cmd: &mut Command, close_stderr: bool) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    if close_stderr {
        drop(child.stderr.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A reader that went away (`memprof run … | true`) is no error: no panic, every file is
/// written, and memprof exits as it would have.
#[test]
fn a_closed_stdout_still_gets_every_file() {
    let dir = scratch("closed-stdout");
    let (json, output) = (dir.join("report.json"), dir.join("out"));
    let mut cmd = memprof();
    cmd.args(["run", "--json"])
        .arg(&json)
        .arg("--output")
        .arg(&output);
    let (status, stderr) = unread(cmd.args(["--", "true"]), false);
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    read_json(&json);
    read_json(&output.join("report.json"));
    assert!(output.join("profile.pb.gz").exists());
}

/// Nobody reading stderr either (`memprof run … 2>&1 | true`): still no panic, every file.
#[test]
fn closed_stdout_and_stderr_still_get_every_file() {
    let json = scratch("closed-stderr").join("report.json");
    let mut cmd = memprof();
    cmd.args(["run", "--json"]).arg(&json).args(["--", "true"]);
    let (status, _) = unread(&mut cmd, true);
    assert!(status.success(), "{status}");
    read_json(&json);
}

/// After the report, memprof exits with the command's status, as strace and time do: 128 + N
/// for a command killed by signal N.
#[test]
fn memprof_exits_with_the_commands_status() {
    let json = scratch("status").join("report.json");
    let out = memprof()
        .args(["run", "--json"])
        .arg(&json)
        .args(["--", "sh", "-c", "exit 3"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("exited with status 3"), "{stderr}");
    read_json(&json);

    let out = memprof()
        .args(["run", "--", "sh", "-c", "kill -TERM $$"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("reserved"));
}

/// SIGHUP (the terminal closed, or a service manager's stop) ends tracing with the report,
/// as SIGINT and SIGTERM do.
#[test]
fn sighup_ends_tracing_with_the_report() {
    let json = scratch("sighup").join("report.json");
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let mut child = memprof()
        .args(["run", "--pid", &sleeper.id().to_string(), "--json"])
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (pid, _stderr) = wait_until_tracing(&mut child);
    assert_eq!(pid, sleeper.id());
    signal(&child, libc::SIGHUP);
    let out = child.wait_with_output().unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(out.status.success(), "{}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("reserved"));
    assert_eq!(read_json(&json)["processes"][0]["pid"], pid);
}

/// `--json -` writes the JSON report to stdout alone, for `| jq`; the text report goes to
/// stderr, and no file named `-` is made.
#[test]
fn json_dash_is_stdout() {
    let dir = scratch("json-stdout");
    let out = run_ok(
        memprof()
            .current_dir(&dir)
            .args(["run", "--json", "-", "--", "true"]),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(report["processes"][0]["pid"].is_u64(), "{report}");
    assert_eq!(report["version"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reserved"), "{stderr}");
    assert!(!dir.join("-").exists());
}

/// `-q`: no report and no notes, only the files; a device is written in place
/// (`--json /dev/stdout`), not replaced.
#[test]
fn quiet_writes_only_the_files() {
    let output = scratch("quiet").join("out");
    let out = run_ok(
        memprof()
            .args(["run", "-q", "--json", "/dev/stdout", "-o"])
            .arg(&output)
            .args(["--", "true"]),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON alone ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report["version"], 1);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    read_json(&output.join("report.json"));
}

/// A reused --output directory keeps no file of an earlier run that this one does not
/// write (an old faults.folded would pass for this run's); each file is written whole, by a
/// rename, leaving no temporary file; and memprof says what to run next.
#[test]
fn a_reused_output_directory_loses_stale_files() {
    let output = scratch("reused").join("out");
    let run = |options: &[&str]| {
        run_ok(
            memprof()
                .args(["run", "-o"])
                .arg(&output)
                .args(options)
                .args(["--", "true"]),
        )
    };
    run(&["--fault-stacks"]);
    for name in ["faults.folded", "faults.svg"] {
        assert!(output.join(name).exists(), "no {name}");
    }
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("go tool pprof -http=: "), "{stderr}");
    let mut names: Vec<String> = std::fs::read_dir(&output)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "breakdown.folded",
            "breakdown.svg",
            "profile.pb.gz",
            "report.json",
            "reserved.folded",
            "reserved.svg",
            "resident.folded",
            "resident.svg",
            "timeline.svg"
        ]
    );
}

/// Under sudo (root with SUDO_UID and SUDO_GID set), the files and the directories memprof
/// makes belong to the user who ran sudo.
#[test]
fn files_belong_to_the_sudo_user() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = scratch("sudo");
    let (output, json) = (dir.join("out/deeper"), dir.join("report.json"));
    run_ok(
        memprof()
            .env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534")
            .args(["run", "--json"])
            .arg(&json)
            .arg("-o")
            .arg(&output)
            .args(["--", "true"]),
    );
    let mut made = vec![json, dir.join("out"), output.clone()];
    made.extend(
        std::fs::read_dir(&output)
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    for path in made {
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (65534, 65534),
            "{}",
            path.display()
        );
    }
}

/// A launched command that outlives `--duration` keeps running, untraced, and memprof says
/// so with its pid; memprof exits 0 (the command has no status yet).
#[test]
fn a_command_outliving_the_trace_keeps_running_and_is_named() {
    let out = memprof()
        // Its streams elsewhere: memprof's pipes close when memprof exits.
        .args(["run", "--duration", "500ms", "--", "sh", "-c"])
        .arg("exec sleep 30 >/dev/null 2>&1")
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let pid: i32 = stderr
        .split("memprof: the command (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no word of the command: {stderr}"));
    assert!(
        stderr.contains(&format!("stop it with `kill {pid}`")),
        "{stderr}"
    );
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep"),
        "pid {pid} is not the sleep memprof launched"
    );
    // SAFETY: killing the sleep this test launched (through memprof).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// `--json` naming the file stdout writes to (`/dev/stdout`, or the file stdout was
/// redirected to) is `--json -`: stdout holds the JSON alone (`| jq .version` works), the
/// text report goes to stderr.
#[test]
fn json_to_the_file_stdout_writes_is_stdout() {
    let out = run_ok(memprof().args(["run", "--json", "/dev/stdout", "--", "true"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON alone ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report["version"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reserved"), "no report on stderr: {stderr}");

    // `memprof run --json out.json -- true > out.json`: the report is not lost in a file
    // the JSON replaced.
    let json = scratch("json-redirected").join("out.json");
    let out = run_ok(
        memprof()
            .args(["run", "--json"])
            .arg(&json)
            .args(["--", "true"])
            .stdout(std::fs::File::create(&json).unwrap()),
    );
    assert_eq!(read_json(&json)["version"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("reserved"), "no report on stderr: {stderr}");
}

/// A run killed mid-write (SIGKILL: no chance to clean up) leaves its temporary file; the
/// next run writing to the same place removes those whose memprof is gone, and nothing else.
#[test]
fn temporary_files_of_killed_runs_are_removed_by_the_next() {
    let dir = scratch("stale-temps");
    let output = dir.join("out");
    std::fs::create_dir(&output).unwrap();
    // A pid no process has once this one is reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let gone = gone.id();
    let stale = [
        dir.join(format!(".report.json.memprof-{gone}.tmp")),
        output.join(format!(".profile.pb.gz.memprof-{gone}.tmp")),
        // Of a file this run does not write.
        output.join(format!(".faults.folded.memprof-{gone}.tmp")),
    ];
    let kept = [
        // Init's: a live process's.
        dir.join(".report.json.memprof-1.tmp"),
        dir.join(".report.json.swp"),
        dir.join(format!(".notes.txt.memprof-{gone}.tmp")),
    ];
    for file in stale.iter().chain(&kept) {
        std::fs::write(file, "half a file").unwrap();
    }
    run_ok(
        memprof()
            .args(["run", "-q", "--json"])
            .arg(dir.join("report.json"))
            .arg("-o")
            .arg(&output)
            .args(["--", "true"]),
    );
    for file in &stale {
        assert!(!file.exists(), "{} left", file.display());
    }
    for file in &kept {
        assert!(file.exists(), "{} removed", file.display());
    }
    read_json(&dir.join("report.json"));
}

/// What tmux shows of `session`'s pane.
fn pane(session: &str) -> String {
    let out = Command::new("tmux")
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .expect("tmux (Debian's tmux) drives a real terminal");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The status line on `screen`, when it shows one.
fn status_line(screen: &str) -> Option<&str> {
    screen.lines().find(|l| l.starts_with("memprof: traced "))
}

/// Ends the tmux session when the test does, passed or not.
struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

/// On a terminal, `run --pid` redraws a status line on stderr every few seconds (elapsed,
/// processes, events, lost) and clears it before the report; with -q, in launch mode (the
/// command writes on the terminal) and when stderr is no terminal, there is none.
#[test]
fn a_status_line_shows_on_a_terminal_while_tracing_and_is_cleared() {
    let dir = scratch("status-line");
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id();
    let run = |options: &str, file: &str| {
        format!(
            "{MEMPROF} run {options} > {}",
            dir.join(file).to_str().unwrap()
        )
    };
    let script = [
        run(&format!("--pid {pid} --duration 7"), "first.txt"),
        "echo FIRST-DONE".into(),
        run(&format!("-q --pid {pid} --duration 3"), "quiet.txt"),
        "echo QUIET-DONE".into(),
        run("-- sleep 3", "launched.txt"),
        "echo LAUNCHED-DONE; sleep 60".into(),
    ]
    .join("; ");
    let session = Session(format!("memprof-status-{}", std::process::id()));
    let started = Command::new("tmux")
        .args(["new-session", "-d", "-s", &session.0])
        .args(["-x", "80", "-y", "24", "sh", "-c", &script])
        .status()
        .unwrap();
    assert!(started.success());

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut screen = String::new();
    // Redrawn in place: one line at a time, its time going on.
    while !screen.contains("FIRST-DONE") {
        assert!(Instant::now() < deadline, "memprof never ended:\n{screen}");
        screen = pane(&session.0);
        let lines = screen.lines().filter(|l| status_line(l).is_some());
        assert!(lines.count() <= 1, "{screen}");
        if let Some(line) = status_line(&screen) {
            assert!(
                line.contains(" 1 process, ") && line.contains(" lost"),
                "{screen}"
            );
            // "memprof: traced 4s: ...": its time.
            let elapsed = line.split(':').nth(1).unwrap().to_string();
            if seen.last() != Some(&elapsed) {
                seen.push(elapsed);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen.len() >= 2, "status seen {seen:?}:\n{screen}");
    assert_eq!(status_line(&screen), None, "not cleared:\n{screen}");
    assert!(screen.contains(&format!("tracing pid {pid}")), "{screen}");
    let report = std::fs::read_to_string(dir.join("first.txt")).unwrap();
    assert!(!report.contains("memprof: traced"), "{report}");

    while !screen.contains("LAUNCHED-DONE") {
        assert!(Instant::now() < deadline, "memprof never ended:\n{screen}");
        screen = pane(&session.0);
        assert_eq!(status_line(&screen), None, "-q or launched:\n{screen}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Not a terminal: nothing of the kind.
    let out = run_ok(
        memprof()
            .args(["run", "--pid", &pid.to_string(), "--duration", "3"])
            .stderr(Stdio::piped()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("memprof: traced"), "{stderr}");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}
