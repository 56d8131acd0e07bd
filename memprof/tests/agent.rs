//! `memprof agent`: its metrics checked against /proc, read by a real Prometheus (Debian's
//! package) and promtool, its profiles decoded, its bad requests answered, and its memory
//! through a churn of short processes.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use memprof::export::proto;
use prost::Message as _;
use serde_json::Value;
use support::*;

/// How often the agent under test takes its figures.
const REFRESH: &str = "200ms";

/// An agent tracing one test cgroup, killed (and reaped) at the end.
struct Agent {
    child: Child,
    port: u16,
}

impl Agent {
    fn start(cgroup: &TestCgroup, extra: &[&str]) -> Self {
        let port = free_port();
        let mut child = memprof()
            .args(["agent", "--cgroup", &cgroup.path, "--refresh", REFRESH])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Tracing once it says so; then its server is up.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("serving http://") {
            line.clear();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "the agent ended before serving"
            );
        }
        // Keep draining its stderr so that it never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        wait_for_port(port);
        Self { child, port }
    }

    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        get(self.port, path)
    }

    fn metrics(&self) -> String {
        let (status, _, body) = self.get("/metrics");
        assert_eq!(status, 200);
        String::from_utf8(body).unwrap()
    }

    /// The sum of `metric`'s series whose labels include every one of `labels`.
    fn sum(&self, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
        sum(&self.metrics(), metric, labels)
    }

    /// `metric` and the kernel's figure, scraped until `agree` says they do (or 15 s passed):
    /// what the agent serves may be a refresh behind the process.
    fn settle(
        &self,
        metric: &str,
        labels: &[(&str, &str)],
        kernel: impl Fn() -> u64,
        agree: impl Fn(u64, u64) -> bool,
    ) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ours = self.sum(metric, labels);
            let theirs = kernel();
            if let Some(ours) = ours
                && (agree(ours, theirs) || Instant::now() > deadline)
            {
                return (ours, theirs);
            }
            assert!(
                Instant::now() < deadline,
                "no {metric}{labels:?}:\n{}",
                self.metrics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn rss(&self) -> u64 {
        status_field(self.child.id(), "VmRSS:")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        signal(&self.child, libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// A GET over HTTP/1.1: status, content type and body.
fn get(port: u16, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, content_type, raw[split + 4..].to_vec())
}

/// The labels of a series line (`name{a="b",c="d"} value`), and its value.
fn series<'a>(line: &'a str, metric: &str) -> Option<(Vec<(&'a str, &'a str)>, u64)> {
    let rest = line.strip_prefix(metric)?;
    let (labels, value) = match rest.strip_prefix('{') {
        Some(rest) => rest.split_once("} ")?,
        None => ("", rest.strip_prefix(' ')?),
    };
    let labels = labels
        .split("\",")
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.split_once("=\"")?;
            Some((key, value.trim_end_matches('"')))
        })
        .collect();
    Some((labels, value.parse().ok()?))
}

fn sum(exposition: &str, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let values: Vec<u64> = exposition
        .lines()
        .filter_map(|line| series(line, metric))
        .filter(|(have, _)| labels.iter().all(|l| have.contains(l)))
        .map(|(_, value)| value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// A field of /proc/PID/status in bytes (`VmSize:`, `VmRSS:`).
fn status_field(pid: u32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} for pid {pid}"))
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap();
    kb * 1024
}

fn total(pids: &[u32], field: &str) -> u64 {
    pids.iter().map(|&pid| status_field(pid, field)).sum()
}

/// A child killed and reaped when dropped, however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts the workload's sites (256 MiB and 16 MiB reserved from known functions) in
/// `cgroup`, and waits until it has made them: it then sleeps a minute.
fn start_workload(cgroup: &TestCgroup) -> Child {
    let mut child = cgroup.spawn(&[WORKLOAD, "--sites", "--pause-ms", "60000"]);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"checkpoint\":\"end\""), "{line}");
    child
}

fn decode(gzipped: &[u8]) -> proto::Profile {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut bytes)
        .unwrap();
    proto::Profile::decode(bytes.as_slice()).unwrap()
}

/// The function names of a sample's stack, leaf first.
fn functions(profile: &proto::Profile, sample: &proto::Sample) -> Vec<String> {
    let name = |i: i64| profile.string_table[i as usize].clone();
    sample
        .location_id
        .iter()
        .flat_map(|id| {
            let location = &profile.location[*id as usize - 1];
            location.line.iter().map(|line| {
                let function = &profile.function[line.function_id as usize - 1];
                name(function.name)
            })
        })
        .collect()
}

/// The first value of the samples whose stack passes through `function` (of process `pid`
/// alone, when given).
fn value_through(profile: &proto::Profile, function: &str, pid: Option<u32>) -> i64 {
    let name = |i: i64| profile.string_table[i as usize].as_str();
    profile
        .sample
        .iter()
        .filter(|s| {
            pid.is_none_or(|pid| {
                s.label
                    .iter()
                    .any(|l| name(l.key) == "pid" && l.num == i64::from(pid))
            })
        })
        .filter(|s| functions(profile, s).iter().any(|f| f.contains(function)))
        .map(|s| s.value[0])
        .sum()
}

#[test]
fn metrics_are_the_kernels_figures_summed_by_program() {
    let cgroup = TestCgroup::new("agent-metrics");
    // Two sites per process apart: the workload's others are folded, and counted.
    let agent = Agent::start(&cgroup, &["--per-pid", "1", "--max-sites-per-process", "2"]);
    // The sleeps in a cgroup shaped as docker's systemd driver makes them: their series
    // name the unit and the container.
    let id: String = (0..64)
        .map(|i| b"0123456789abcdef"[i % 16] as char)
        .collect();
    let unit = format!("docker-{id}.scope");
    let container = cgroup.child(&unit);
    let sleeps: Vec<Child> = (0..2).map(|_| container.spawn(&["sleep", "60"])).collect();
    let workload = start_workload(&cgroup);
    let sleep_pids: Vec<u32> = sleeps.iter().map(Child::id).collect();
    let pid = workload.id();
    let sleep = [
        ("comm", "sleep"),
        ("cgroup", container.path.as_str()),
        ("unit", unit.as_str()),
        ("container", id.as_str()),
    ];
    let equal = |ours, theirs| ours == theirs;
    let (ours, vm_size) = agent.settle(
        "memprof_reserved_bytes",
        &sleep,
        || total(&sleep_pids, "VmSize:"),
        equal,
    );
    assert_eq!(ours, vm_size, "{}", agent.metrics());
    let workload_labels = [
        ("comm", "memprof-workload"),
        ("unit", ""),
        ("container", ""),
    ];
    let vm = |field| move || status_field(pid, field);
    let (ours, vm_size) = agent.settle(
        "memprof_reserved_bytes",
        &workload_labels,
        vm("VmSize:"),
        equal,
    );
    assert_eq!(ours, vm_size);
    let (resident, vm_rss) = agent.settle(
        "memprof_resident_bytes",
        &workload_labels,
        vm("VmRSS:"),
        resident_close,
    );
    assert!(
        resident_close(resident, vm_rss),
        "resident {resident} vs VmRSS {vm_rss}"
    );
    let metrics = agent.metrics();
    assert_eq!(
        sum(&metrics, "memprof_processes", &sleep),
        Some(2),
        "{metrics}"
    );
    assert_eq!(sum(&metrics, "memprof_lost_events_total", &[]), Some(0));
    // The workload faulted 40 MiB in, page by page or in huge pages.
    let faults = sum(&metrics, "memprof_page_faults_total", &workload_labels).unwrap();
    assert!(faults >= 20, "{metrics}");
    // --per-pid 1: the workload, which reserved most, alone; the sleeps counted.
    let pid_label = pid.to_string();
    assert_eq!(
        sum(&metrics, "memprof_process_reserved_bytes", &[]),
        sum(
            &metrics,
            "memprof_process_reserved_bytes",
            &[("pid", &pid_label)]
        ),
        "{metrics}"
    );
    assert_eq!(sum(&metrics, "memprof_processes_not_listed", &[]), Some(2));
    // Its profile keeps every byte: the two largest sites and one `[other sites]`, which
    // stands for as many sites as memprof_sites_folded says.
    let (_, _, body) = agent.get(&format!("/debug/pprof/reserved?pid={pid}&debug=1"));
    let folded = String::from_utf8(body).unwrap();
    let lines: Vec<(&str, u64)> = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(stack, bytes)| (stack, bytes.parse().unwrap()))
        .collect();
    assert_eq!(lines.len(), 3, "{folded}");
    assert!(
        lines.iter().any(|(stack, _)| *stack == "[other sites]"),
        "{folded}"
    );
    assert_eq!(
        lines.iter().map(|(_, bytes)| bytes).sum::<u64>(),
        sum(&metrics, "memprof_reserved_bytes", &workload_labels).unwrap(),
        "{folded}"
    );
    let sites_folded = sum(&metrics, "memprof_sites_folded", &workload_labels).unwrap();
    assert!(sites_folded >= 2, "{metrics}");

    // promtool reads the exposition as Prometheus does.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("`promtool` is not installed: `cargo xtask setup` installs Debian's prometheus");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for child in sleeps {
        kill(child);
    }
    // Exited: no series left for them after a refresh or two.
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.sum("memprof_processes", &sleep).is_some() {
        assert!(Instant::now() < deadline, "{}", agent.metrics());
        std::thread::sleep(Duration::from_millis(200));
    }
    kill(workload);
}

#[test]
fn profiles_name_the_sites_and_bad_requests_get_400() {
    let cgroup = TestCgroup::new("agent-pprof");
    let agent = Agent::start(&cgroup, &[]);
    let workload = start_workload(&cgroup);
    let pid = workload.id();
    // Its sites are served from the refresh after it made them.
    std::thread::sleep(Duration::from_millis(600));
    let (status, content_type, body) = agent.get(&format!("/debug/pprof/reserved?pid={pid}"));
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/octet-stream")
    );
    let profile = decode(&body);
    let name = |i: i64| profile.string_table[i as usize].as_str();
    assert_eq!(name(profile.default_sample_type), "reserved");
    assert!(profile.mapping.iter().all(|m| m.has_functions));
    let big = value_through(&profile, "memprof_reserve_big", None);
    assert_eq!(big, 256 << 20, "{profile:#?}");

    // What `go tool pprof` reads over HTTP, named by its functions.
    let url = format!(
        "http://127.0.0.1:{}/debug/pprof/reserved?pid={pid}",
        agent.port
    );
    let dir = scratch("agent-pprof");
    // It keeps what it fetched, in PPROF_TMPDIR.
    let out = run_ok(
        Command::new("go")
            .args(["tool", "pprof", "-top", &url])
            .env("PPROF_TMPDIR", &dir),
    );
    let top = String::from_utf8_lossy(&out.stdout);
    assert!(
        top.contains("memprof_workload::memprof_reserve_big"),
        "{top}"
    );

    let (status, content_type, body) =
        agent.get("/debug/pprof/resident?debug=1&comm=memprof-workload");
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/plain; charset=utf-8")
    );
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("memprof_reserve_and_touch"), "{text}");

    // The growth over three seconds in which a second workload made the same sites as the
    // first, now idle: the second's alone (the two's identical stacks would fold into one
    // line of twice the bytes).
    let port = agent.port;
    let delta = std::thread::spawn(move || {
        get(
            port,
            "/debug/pprof/reserved?comm=memprof-workload&seconds=3&debug=1",
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let second = start_workload(&cgroup);
    let (status, _, body) = delta.join().unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let big: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("memprof_reserve_big"))
        .collect();
    assert_eq!(big.len(), 1, "{text}");
    assert!(big[0].ends_with(&format!(" {}", 256 << 20)), "{text}");
    kill(second);

    let (status, content_type, body) = agent.get("/debug/pprof/");
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    assert!(String::from_utf8(body).unwrap().contains("resident"));
    for (path, expected, says) in [
        ("/debug/pprof/reserved?pid=abc", 400, "not a whole number"),
        ("/debug/pprof/reserved?seconds=0", 400, "give 1 to"),
        ("/debug/pprof/reserved?nonsense=1", 400, "unknown parameter"),
        ("/metrics?x=1", 400, "no parameters"),
        ("/debug/pprof/heap", 404, "no profile heap"),
        ("/debug/pprof/faults", 404, "--fault-stacks"),
        ("/nowhere", 404, "no such page"),
    ] {
        let (status, _, body) = agent.get(path);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, expected, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    // Still serving after all that.
    assert_eq!(agent.get("/metrics").0, 200);
    kill(workload);
    let _ = fs::remove_dir_all(&dir);
}

/// Prometheus's answer to an instant query: the value of its one series.
fn prometheus_query(port: u16, query: &str) -> Option<u64> {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, _, body) = get(port, &format!("/api/v1/query?query={encoded}"));
    if status != 200 {
        return None;
    }
    let answer: Value = serde_json::from_slice(&body).ok()?;
    let result = answer["data"]["result"].as_array()?;
    let [series] = result.as_slice() else {
        return None;
    };
    series["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_the_agent() {
    let cgroup = TestCgroup::new("agent-prometheus");
    let agent = Agent::start(&cgroup, &[]);
    let workload = start_workload(&cgroup);
    let pid = workload.id();
    let dir = scratch("agent-prometheus");
    let config = dir.join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: memprof\n    \
             static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            agent.port
        ),
    )
    .unwrap();
    let port = free_port();
    // Not in the test's cgroup, whose end kills what a failed test left there: killed on drop.
    let prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("`prometheus` is not installed: `cargo xtask setup` installs Debian's package"),
    );
    wait_for_port(port);
    let query = format!(
        "memprof_reserved_bytes{{comm=\"memprof-workload\",cgroup=\"{}\"}}",
        cgroup.path
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let answer = prometheus_query(port, &query);
        if answer == Some(status_field(pid, "VmSize:")) || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(prometheus);
    let log = fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
    assert_eq!(
        answer,
        Some(status_field(pid, "VmSize:")),
        "Prometheus's answer to {query}; its log:\n{log}"
    );
    kill(workload);
    let _ = fs::remove_dir_all(&dir);
}

/// The label sets of every series of `exposition` that has a `cgroup` label under `cgroup`.
fn label_sets_in<'a>(exposition: &'a str, cgroup: &str) -> Vec<Vec<(&'a str, &'a str)>> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, _) = l.split_once('{')?;
            series(l, name)
        })
        .map(|(labels, _)| labels)
        .filter(|labels| {
            labels
                .iter()
                .any(|&(k, v)| k == "cgroup" && v.starts_with(cgroup))
        })
        .collect()
}

/// Five thousand short processes come and go beside a long one: the agent sees them, then
/// keeps series only for the label sets and pids still live, and its memory stays bounded.
#[test]
fn churn_of_5000_processes_leaves_series_of_the_live_alone_and_bounded_memory() {
    const PROCESSES: usize = 5000;
    let cgroup = TestCgroup::new("agent-churn");
    let agent = Agent::start(&cgroup, &["--per-pid", "50"]);
    let before = agent.rss();
    let sleep = Running(cgroup.spawn(&["sleep", "120"]));
    let sleep_pid = sleep.0.id().to_string();
    let started = Instant::now();
    let mut churn = cgroup.spawn(&[
        "sh",
        "-c",
        &format!("for i in $(seq {PROCESSES}); do /bin/true; done"),
    ]);
    // Scraped throughout: an exited process's faults are served once, so the churn shows.
    let mut peak = before;
    let mut saw_true = false;
    let status = loop {
        if let Some(status) = churn.try_wait().unwrap() {
            break status;
        }
        saw_true |= agent.metrics().contains("comm=\"true\"");
        peak = peak.max(agent.rss());
        std::thread::sleep(Duration::from_millis(100));
    };
    let churned = started.elapsed();
    assert!(status.success());
    assert!(saw_true, "no /bin/true was ever served");
    // Their faults are counted in one more refresh, then nothing is left of them: every
    // series of the cgroup is the sleep's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = agent.metrics();
        let sets = label_sets_in(&metrics, &cgroup.path);
        let live = |labels: &Vec<(&str, &str)>| {
            labels.contains(&("comm", "sleep"))
                && labels
                    .iter()
                    .all(|&(k, v)| k != "pid" || v == sleep_pid.as_str())
        };
        if !sets.is_empty() && sets.iter().all(live) {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "series of exited processes left after the churn:\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        sum(&metrics, "memprof_process_reserved_bytes", &[]),
        Some(status_field(sleep.0.id(), "VmSize:")),
        "{metrics}"
    );
    assert_eq!(sum(&metrics, "memprof_processes_not_listed", &[]), Some(0));
    let rss = agent.rss();
    peak = peak.max(rss);
    // Lost events are said, not judged: a debug build loses some under this churn, and
    // they cost it memory (see the README's agent section).
    eprintln!(
        "agent RSS {:.1} MB before {PROCESSES} processes (run in {:.1} s), {:.1} MB at most \
         during, {:.1} MB after; lost events: {}",
        before as f64 / 1e6,
        churned.as_secs_f64(),
        peak as f64 / 1e6,
        rss as f64 / 1e6,
        sum(&metrics, "memprof_lost_events_total", &[]).unwrap_or(0),
    );
    assert!(peak <= 150_000_000, "agent RSS peaked at {peak} bytes");
}

/// One request a receiver got: its request line, content type and body.
struct Received {
    request_line: String,
    content_type: String,
    body: Vec<u8>,
}

/// A tiny HTTP receiver in Pyroscope's place: answers the first request with a Connect
/// error (503), the others with an empty `PushResponse`, and hands each over.
fn receiver(listener: std::net::TcpListener) -> std::sync::mpsc::Receiver<Received> {
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut head = Vec::new();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                head.push(std::mem::take(&mut line));
            }
            let header = |name: &str| {
                head.iter().find_map(|l| {
                    let (key, value) = l.split_once(':')?;
                    key.eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_string())
                })
            };
            let length: usize = header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let answer: &[u8] = if n == 0 {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
                  Content-Length: 48\r\n\r\n{\"code\":\"unavailable\",\"message\":\"starting up!!\"}"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n"
            };
            let _ = reader.get_mut().write_all(answer);
            let received = Received {
                request_line: head.first().cloned().unwrap_or_default(),
                content_type: header("content-type").unwrap_or_default(),
                body,
            };
            if send.send(received).is_err() {
                return;
            }
        }
    });
    receive
}

/// `--push-url`: the profiles arrive at a Pyroscope-shaped receiver every `--push-interval`
/// as Connect's unary protobuf, one series per profile, and decode to the workload's sites;
/// a refused push is counted and the next one made.
#[test]
fn profiles_are_pushed_to_pyroscopes_api() {
    let cgroup = TestCgroup::new("agent-push");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let pushes = receiver(listener);
    let agent = Agent::start(&cgroup, &["--push-url", &url, "--push-interval", "1s"]);
    let workload = start_workload(&cgroup);
    let pid = workload.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let big = loop {
        let push = pushes
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("no push with the workload's sites arrived in 30 s");
        assert_eq!(
            push.request_line.trim(),
            "POST /push.v1.PusherService/Push HTTP/1.1"
        );
        assert_eq!(push.content_type, "application/proto");
        let request = memprof::agent::PushRequest::decode(push.body.as_slice()).unwrap();
        let labels: Vec<Vec<(String, String)>> = request
            .series
            .iter()
            .map(|s| {
                s.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect()
            })
            .collect();
        assert_eq!(labels.len(), 2, "reserved and resident: {labels:?}");
        for series in &labels {
            assert!(
                series.contains(&("__name__".into(), "memprof".into())),
                "{series:?}"
            );
            assert!(
                series.iter().any(|(k, _)| k == "service_name"),
                "{series:?}"
            );
        }
        let reserved = decode(&request.series[0].samples[0].raw_profile);
        let name = |i: i64| reserved.string_table[i as usize].as_str();
        assert_eq!(name(reserved.sample_type[0].r#type), "reserved");
        // The workload's 256 MiB site, once it has made it.
        let big = value_through(&reserved, "memprof_reserve_big", Some(pid));
        if big > 0 {
            break big;
        }
    };
    assert_eq!(big, 256 << 20);
    // Counted once the receiver's answer is read, which may be after the test got the push.
    let deadline = Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = agent.metrics();
        if sum(&metrics, "memprof_pushes_total", &[]).unwrap() >= 1 || Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        sum(&metrics, "memprof_pushes_total", &[]).unwrap() >= 1,
        "{metrics}"
    );
    assert_eq!(
        sum(&metrics, "memprof_push_failures_total", &[]),
        Some(1),
        "{metrics}"
    );
    kill(workload);
}

/// A push URL memprof cannot push to is a usage error, said before anything loads.
#[test]
fn a_bad_push_url_is_a_usage_error() {
    for (url, says) in [
        ("https://pyroscope:4040", "https is not supported"),
        ("http://pyroscope:port", "`port` is not a port"),
    ] {
        let out = memprof()
            .args(["agent", "--push-url", url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
    }
}
