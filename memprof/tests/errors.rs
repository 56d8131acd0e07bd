//! Bad input and a hostile machine: a clear message and a distinct exit code for each.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::process::{Command, Output, Stdio};

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

#[test]
fn command_not_found() {
    let out = memprof()
        .args(["run", "--", "memprof-no-such-command"])
        .output()
        .unwrap();
    expect_failure(out, 7, "command not found: memprof-no-such-command");
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
