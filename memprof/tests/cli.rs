//! memprof behaves like its peers (strace, time, perf) on the command line: the command it
//! launches runs as it would without it.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

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
