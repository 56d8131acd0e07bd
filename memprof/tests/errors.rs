//! Bad input and a hostile machine: a clear message and a distinct exit code for each.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use support::*;

fn expect_failure(out: Output, code: i32, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in: {stderr}"
    );
}

#[test]
fn no_such_pid() {
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let out = memprof()
        .args(["run", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    expect_failure(out, 3, &format!("no process with pid {pid}"));
}

/// memprof itself, a kernel thread and a zombie exist, but have no address space to trace:
/// each is named as what it is.
#[test]
fn pids_that_cannot_be_traced_are_named() {
    // The shell's pid is memprof's once it execs.
    let script = format!("exec {MEMPROF} run --pid $$");
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    expect_failure(out, 3, "cannot be traced: it is memprof itself");
    // kthreadd.
    let out = memprof().args(["run", "--pid", "2"]).output().unwrap();
    expect_failure(out, 3, "pid 2 cannot be traced: it is a kernel thread");
    // Exited, not reaped yet.
    let mut zombie = Command::new("true").spawn().unwrap();
    let pid = zombie.id();
    while !std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap()
        .contains(") Z ")
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = memprof()
        .args(["run", "--pid", &pid.to_string()])
        .output()
        .unwrap();
    zombie.wait().unwrap();
    expect_failure(out, 3, "it is a zombie");
}

#[test]
fn command_not_found() {
    let out = memprof()
        .args(["run", "--", "memprof-no-such-command"])
        .output()
        .unwrap();
    expect_failure(out, 7, "command not found: memprof-no-such-command");
}

/// A command that is there but cannot run says why, as a shell does: refused before anything
/// is loaded where a look at the file tells, with the exec's own errno where only the exec
/// does.
#[test]
fn commands_that_cannot_run_say_why() {
    let dir = scratch("cannot-run");
    let write = |name: &str, contents: &[u8], mode: u32| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        path.display().to_string()
    };
    let cases = [
        (
            write("data", b"data", 0o644),
            "permission denied (not executable",
        ),
        (dir.display().to_string(), "it is a directory"),
        (write("junk", b"junk", 0o755), "exec format error"),
        (
            write("script", b"#!/memprof/no-such-interpreter\n", 0o755),
            "no such file or directory (a script whose interpreter is missing",
        ),
    ];
    for (command, why) in cases {
        let out = memprof().args(["run", "--", &command]).output().unwrap();
        expect_failure(out, 7, &format!("cannot execute {command}: {why}"));
    }
}

#[test]
fn not_root_is_told_to_use_sudo() {
    use std::os::unix::process::CommandExt as _;
    // Run as `nobody`: memprof refuses before loading anything, and names the fix. A copy in
    // a world-readable place, in case the checkout is not.
    let copy = scratch("nobody").join("memprof");
    std::fs::copy(MEMPROF, &copy).unwrap();
    let out = Command::new(&copy)
        .args(["run", "--", "true"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    expect_failure(out, 4, "run it with sudo");
}

/// Without root, with capabilities as the README says: CAP_BPF and CAP_PERFMON, and
/// CAP_DAC_READ_SEARCH where tracefs is root's alone (as on these machines), which memprof
/// names when it is missing.
#[test]
fn capabilities_instead_of_root_trace_a_launched_command() {
    let dir = scratch("capabilities");
    let copy = dir.join("memprof");
    std::fs::copy(MEMPROF, &copy).unwrap();
    let json = dir.join("report.json");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let as_nobody_with = |caps: &str| {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(["--inh-caps", caps, "--ambient-caps", caps])
            .arg(&copy)
            .args(["run", "--json"])
            .arg(&json)
            .args(["--", "/bin/true"])
            .output()
            .expect("setpriv (util-linux) runs memprof with capabilities")
    };
    let tracefs_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata("/sys/kernel/tracing")
            .unwrap()
            .permissions(),
    );
    if tracefs_mode & 0o005 == 0 {
        let out = as_nobody_with("+bpf,+perfmon");
        expect_failure(
            out,
            5,
            "needs CAP_DAC_READ_SEARCH besides CAP_BPF and CAP_PERFMON",
        );
    }
    let out = as_nobody_with("+bpf,+perfmon,+dac_read_search");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = read_json(&json);
    let p = &report["processes"][0];
    assert_eq!(
        p["reserved_bytes"]["end"], p["proc_check"]["vm_size_bytes"],
        "{p:#}"
    );
}

/// In a private mount namespace: with tracefs unmounted memprof mounts it itself; when it
/// cannot (its mount point hidden), it says how to fix it.
#[test]
fn tracefs_unmounted_is_mounted_or_explained() {
    let script = format!("umount /sys/kernel/tracing 2>/dev/null; {MEMPROF} run -- true");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("mounted tracefs"), "{stderr}");

    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; mount -t tmpfs -o ro none /sys/kernel && \
         {MEMPROF} run -- true"
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    expect_failure(out, 5, "mount -t tracefs nodev /sys/kernel/tracing");
}

#[test]
fn usage_errors_come_from_clap() {
    let out = memprof().args(["run"]).output().unwrap();
    expect_failure(out, 2, "required arguments were not provided");
    let out = memprof()
        .args(["run", "--pid", "1", "--", "true"])
        .output()
        .unwrap();
    expect_failure(out, 2, "cannot be used with");
}

/// Every number is checked against its range before anything runs, with the range named: an
/// interval of 2^58 s overflowed the timeline and exhausted memory.
#[test]
fn numbers_out_of_range_are_usage_errors() {
    for (args, message) in [
        (
            &["run", "--interval", "288230376151711744", "--", "true"][..],
            "give a duration from 1ms to 1h",
        ),
        (
            &["run", "--interval", "1ns", "--", "true"],
            "from 1ms to 1h",
        ),
        (
            &["run", "--duration", "0", "--", "true"],
            "from 1ms to 8760h",
        ),
        (&["run", "--pid", "0"], "give 1 or more"),
        (
            &[
                "run",
                "--fault-stacks",
                "--fault-sample",
                "4294967296",
                "--",
                "true",
            ],
            "too large",
        ),
        (&["top", "--refresh", "0"], "from 100ms to 1h"),
        (&["top", "--limit", "0"], "give 1 or more"),
    ] {
        let out = memprof().args(args).output().unwrap();
        expect_failure(out, 2, message);
    }
}

/// Outputs are checked before anything is loaded or launched: a bad path fails at once and
/// the command never runs, where it used to run and lose every output at the end.
#[test]
fn bad_outputs_are_refused_before_the_command_runs() {
    let dir = scratch("bad-outputs");
    let touched = dir.join("F");
    let started = std::time::Instant::now();
    let out = memprof()
        .args(["run", "-o", "/proc/nope", "--", "touch"])
        .arg(&touched)
        .output()
        .unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    expect_failure(out, 1, "cannot create /proc/nope");
    assert!(!touched.exists(), "the command ran");

    // A file's name for the directory (refused with the fix named, and nothing made), a file
    // where a directory is meant, a directory where a file is, and a file nowhere.
    let (profile, file) = (dir.join("x.pb.gz"), dir.join("file"));
    std::fs::write(&file, "").unwrap();
    let fix = format!("give a directory (--output {})", dir.join("x").display());
    let nowhere = Path::new("/proc/nope/report.json");
    for (option, path, message) in [
        ("-o", profile.as_path(), fix.as_str()),
        ("-o", &file, "is a file: --output takes a directory"),
        ("--json", &dir, "is a directory: give a file"),
        ("--json", nowhere, "cannot write in /proc/nope"),
    ] {
        let out = memprof()
            .args(["run", option])
            .arg(path)
            .args(["--", "true"])
            .output()
            .unwrap();
        expect_failure(out, 1, message);
    }
    assert!(!profile.exists());
}
