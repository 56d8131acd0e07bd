//! Shared by the integration tests: run memprof and the workload, read their output, and
//! compare memprof's figures with the kernel's.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;

pub(crate) const MEMPROF: &str = env!("CARGO_BIN_EXE_memprof");
pub(crate) const WORKLOAD: &str = env!("CARGO_BIN_EXE_memprof-workload");
pub(crate) const MIB: u64 = 1 << 20;

/// A fresh directory for one test's files.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("memprof-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) fn memprof() -> Command {
    let mut cmd = Command::new(MEMPROF);
    cmd.env("RUST_LOG", "warn");
    cmd
}

/// What a workload printed at one checkpoint: the kernel's figures at that instant.
#[derive(Debug)]
pub(crate) struct Checkpoint {
    pub(crate) name: String,
    pub(crate) monotonic_ns: u64,
    /// When the program itself saw VmSize unchanged until then (programs whose runtime keeps
    /// mapping memory while they sleep); otherwise the pause after the checkpoint counts.
    pub(crate) until_ns: Option<u64>,
    pub(crate) vm_size: u64,
    pub(crate) vm_rss: u64,
}

pub(crate) fn checkpoints(stdout: &str) -> Vec<Checkpoint> {
    stdout
        .lines()
        .filter(|l| l.starts_with("{\"checkpoint\""))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Checkpoint {
                name: v["checkpoint"].as_str().unwrap().to_string(),
                monotonic_ns: v["monotonic_ns"].as_u64().unwrap(),
                until_ns: v["until_ns"].as_u64(),
                vm_size: v["vm_size_bytes"].as_u64().unwrap(),
                vm_rss: v["vm_rss_bytes"].as_u64().unwrap(),
            }
        })
        .collect()
}

pub(crate) fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("memprof wrote no {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The JSON report of `memprof run OPTIONS --json … -- COMMAND`, run in a scratch directory.
pub(crate) fn json_report(name: &str, options: &[&str], command: &[&str]) -> Value {
    let json = scratch(name).join("report.json");
    run_ok(
        memprof()
            .arg("run")
            .args(options)
            .arg("--json")
            .arg(&json)
            .arg("--")
            .args(command),
    );
    read_json(&json)
}

pub(crate) fn process(report: &Value, pid: u64) -> &Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|| panic!("pid {pid} not in report: {report:#}"))
}

/// The sum of `field` over the objects of the array `items` (a process's regions or sites).
pub(crate) fn total(items: &Value, field: &str) -> u64 {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[field].as_u64().unwrap())
        .sum()
}

pub(crate) fn resident_close(ours: u64, kernel: u64) -> bool {
    let tolerance = (kernel / 100).max(MIB);
    ours.abs_diff(kernel) <= tolerance
}

/// Every checkpoint must have timeline samples taken while the workload paused after it, and
/// each must show reserved == VmSize exactly and resident within max(1%, 1 MiB) of VmRSS.
pub(crate) fn assert_checkpoints_match(process: &Value, checkpoints: &[Checkpoint], pause_ms: u64) {
    assert!(
        !checkpoints.is_empty(),
        "the workload printed no checkpoints"
    );
    let timeline = process["timeline"].as_array().unwrap();
    for c in checkpoints {
        let (from, to) = match c.until_ns {
            Some(until) => (c.monotonic_ns, until),
            None => (
                c.monotonic_ns + pause_ms * 1_000_000 / 5,
                c.monotonic_ns + pause_ms * 1_000_000 * 4 / 5,
            ),
        };
        let samples: Vec<&Value> = timeline
            .iter()
            .filter(|s| (from..to).contains(&s["monotonic_ns"].as_u64().unwrap()))
            .collect();
        assert!(
            !samples.is_empty(),
            "no timeline sample during checkpoint {}",
            c.name
        );
        for s in samples {
            let reserved = s["reserved_bytes"].as_u64().unwrap();
            let resident = s["resident_bytes"].as_u64().unwrap();
            assert_eq!(
                reserved,
                c.vm_size,
                "checkpoint {}: reserved {reserved} != VmSize {} (off by {} pages)",
                c.name,
                c.vm_size,
                (reserved as i64 - c.vm_size as i64) / 4096
            );
            assert!(
                resident_close(resident, c.vm_rss),
                "checkpoint {}: resident {resident} vs VmRSS {}",
                c.name,
                c.vm_rss
            );
        }
    }
}

/// Waits until memprof says it is tracing; returns the traced pid and memprof's stderr for
/// later reading.
pub(crate) fn wait_until_tracing(child: &mut Child) -> (u32, BufReader<ChildStderr>) {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "memprof ended before tracing"
        );
        if let Some(rest) = line.split("tracing pid ").nth(1) {
            let pid = rest.split(|c: char| !c.is_ascii_digit()).next().unwrap();
            return (pid.parse().unwrap(), stderr);
        }
    }
}

pub(crate) fn signal(child: &Child, signal: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
}

pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A cgroup v2 directory made for one test, removed (with its children) at the end.
pub(crate) struct TestCgroup {
    dir: PathBuf,
    /// From the cgroup v2 root, as `--cgroup` takes it.
    pub(crate) path: String,
}

impl TestCgroup {
    pub(crate) fn new(name: &str) -> Self {
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
        let root = memprof::procfs::cgroup2_root(&mounts).expect("cgroup v2 is mounted");
        let path = format!("/memprof-test-{name}-{}", std::process::id());
        let dir = PathBuf::from(root).join(&path[1..]);
        fs::create_dir_all(&dir).unwrap();
        Self { dir, path }
    }

    pub(crate) fn child(&self, name: &str) -> Self {
        let dir = self.dir.join(name);
        fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            path: format!("{}/{name}", self.path),
        }
    }

    /// Starts `command` inside this cgroup: a shell moves itself in, then execs it. Its
    /// stdout is piped.
    pub(crate) fn spawn(&self, command: &[&str]) -> Child {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec \"$@\"",
            self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script, "sh"])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // What a failed test left running would keep the cgroup busy.
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        // A cgroup can be removed once its processes are reaped and its children are gone.
        for _ in 0..50 {
            let children: Vec<PathBuf> = fs::read_dir(&self.dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            for child in children {
                let _ = fs::remove_dir(child);
            }
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Builds the C program `source` as `dir/name` with gcc and `flags`; returns its path.
pub(crate) fn build_c(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    fs::write(&src, source).unwrap();
    let exe = dir.join(name);
    run_ok(
        Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(&exe)
            .arg(&src),
    );
    exe
}

/// The stdout of `go tool pprof ARGS PROFILE`, which must succeed.
pub(crate) fn go_tool_pprof(args: &[&str], profile: &Path) -> String {
    let out = run_ok(
        Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(profile),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the test Go program in `dir` with Debian's go; returns its path.
pub(crate) fn build_go_program(dir: &Path) -> PathBuf {
    let go = which("go").expect(
        "`go` is not installed: `cargo xtask setup` installs Debian's golang-go for this test",
    );
    std::fs::write(dir.join("main.go"), GO_PROGRAM).unwrap();
    std::fs::write(dir.join("go.mod"), "module memprofgo\n\ngo 1.19\n").unwrap();
    run_ok(
        Command::new(go)
            .args(["build", "-o", "prog", "."])
            .current_dir(dir)
            .env("GOCACHE", dir.join("cache"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off"),
    );
    dir.join("prog")
}

/// Builds the gin hello world (Debian's gin, in GOPATH mode, with cgo) in `dir`: a server
/// on 127.0.0.1 at the port given as its argument. Returns its path.
pub(crate) fn build_gin_server(dir: &Path) -> PathBuf {
    // The bench's server too: one source.
    std::fs::write(
        dir.join("main.go"),
        include_str!("../../../xtask/src/bench/gin_hello.go"),
    )
    .unwrap();
    let go = which("go").expect("`cargo xtask setup` installs Debian's golang-go");
    run_ok(
        Command::new(go)
            .args(["build", "-o", "gin-hello", "main.go"])
            .current_dir(dir)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            // Shared by the tests that build it: the second build takes a second.
            .env("GOCACHE", std::env::temp_dir().join("memprof-test-gocache"))
            .env("CGO_ENABLED", "1"),
    );
    dir.join("gin-hello")
}

/// The gin hello world built in `dir`, run under `memprof run --output DIR/out` until it
/// served 20 requests; then memprof is stopped (SIGINT, so it reports) and the server,
/// which outlives the trace, killed. Returns the server's pid and memprof's terminal
/// report.
pub(crate) fn trace_gin_server(dir: &Path) -> (u32, String) {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream,
    };
    let gin = build_gin_server(dir);
    let port = free_port();
    let mut memprof = memprof()
        .args(["run", "--output"])
        .arg(dir.join("out"))
        .arg("--")
        .arg(&gin)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (pid, _stderr) = wait_until_tracing(&mut memprof);
    // The server keeps memprof's stdout open: read it meanwhile.
    let mut stdout = memprof.stdout.take().unwrap();
    let text = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    wait_for_port(port);
    for _ in 0..20 {
        let mut http = TcpStream::connect(("127.0.0.1", port)).unwrap();
        http.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        http.read_to_end(&mut Vec::new()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&memprof, libc::SIGINT);
    let status = memprof.wait().unwrap();
    // SAFETY: ending the server memprof launched.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(status.success());
    (pid, text.join().unwrap().unwrap())
}

pub(crate) fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .chain(["/usr/lib/go/bin".into(), "/usr/local/go/bin".into()])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Allocates and touches 4 MiB, then prints a checkpoint like the Rust workload's, with the
/// window (`until_ns`) over which it saw its VmSize hold still.
pub(crate) const GO_PROGRAM: &str = r#"package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

var keep []byte

func kb(status, key string) uint64 {
	for _, line := range strings.Split(status, "\n") {
		if strings.HasPrefix(line, key) {
			f := strings.Fields(line)
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n * 1024
		}
	}
	return 0
}

func main() {
	keep = make([]byte, 4<<20)
	for i := 0; i < len(keep); i += 4096 {
		keep[i] = 1
	}
	// The runtime's own threads may map memory while main sleeps: report a window only
	// once VmSize stayed the same across it.
	for try := 0; try < 20; try++ {
		start, status := now(), readStatus()
		time.Sleep(300 * time.Millisecond)
		end, after := now(), readStatus()
		if kb(status, "VmSize:") == kb(after, "VmSize:") {
			fmt.Printf("{\"checkpoint\":\"end\",\"monotonic_ns\":%d,\"until_ns\":%d,\"vm_size_bytes\":%d,\"vm_rss_bytes\":%d}\n",
				start, end, kb(status, "VmSize:"), kb(status, "VmRSS:"))
			return
		}
	}
}

func readStatus() string {
	raw, _ := os.ReadFile("/proc/self/status")
	return string(raw)
}

func now() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}
"#;

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
pub(crate) fn wait_for_port(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Both CPUs of the machine kept busy until dropped: races show when a traced program's
/// threads are preempted, which is when people profile.
pub(crate) struct BusyCpus {
    busy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    loops: Vec<std::thread::JoinHandle<()>>,
}

impl BusyCpus {
    pub(crate) fn start() -> Self {
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let loops = (0..2)
            .map(|_| {
                let busy = busy.clone();
                std::thread::spawn(move || {
                    while busy.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        Self { busy, loops }
    }
}

impl Drop for BusyCpus {
    fn drop(&mut self) {
        self.busy.store(false, std::sync::atomic::Ordering::Relaxed);
        for spin in self.loops.drain(..) {
            let _ = spin.join();
        }
    }
}
