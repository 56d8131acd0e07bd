//! The real-server bench: Debian's redis-server under redis-benchmark, a second process on
//! loopback, untraced and launched under memprof, interleaved; throughput and p99 latency as
//! ratios traced / untraced. What memprof costs a server people run, where the storms
//! measure what it costs a program that does nothing but change its memory.

use anyhow::{Context, Result, bail, ensure};
use std::{
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::report::median;
use crate::find_in_path;

/// Requests of each kind per run: a few seconds of load here.
const REQUESTS: &str = "100000";
/// Concurrent connections.
const CLIENTS: &str = "50";
/// SET and GET, and list pushes and ranges, which make redis (jemalloc) ask for memory.
const TESTS: &str = "set,get,lpush,lrange_100";
/// Budget: traced throughput at least this share of untraced.
pub(super) const THROUGHPUT_MIN: f64 = 0.97;

/// One run of the load against one server.
#[derive(Clone, Copy, Debug)]
pub(super) struct ServerRun {
    pub(super) index: usize,
    pub(super) traced: bool,
    /// Requests per second, the mean over the benchmark's tests.
    pub(super) rps: f64,
    /// The highest 99th-percentile latency of the tests, in milliseconds.
    pub(super) p99_ms: f64,
}

/// Whether the server bench can run here (Debian's redis-server and redis-tools).
pub(super) fn available() -> bool {
    find_in_path("redis-server").is_some() && find_in_path("redis-benchmark").is_some()
}

/// `runs` pairs of runs, untraced and under `memprof` (a path), in an order alternating by
/// run so that neither always goes first.
pub(super) fn run(memprof: &Path, runs: usize) -> Result<Vec<ServerRun>> {
    let mut results = Vec::new();
    // Not counted: it warms the page cache and the machine.
    run_once(memprof, 0, false)?;
    for index in 0..runs {
        let order = if index % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for traced in order {
            let run = run_once(memprof, index, traced)
                .with_context(|| format!("redis run {}, traced: {traced}", index + 1))?;
            eprintln!(
                "xtask: bench redis {}/{runs}: {:<9} {:>10.0} requests/s, p99 {:.3} ms",
                index + 1,
                if traced { "memprof" } else { "untraced" },
                run.rps,
                run.p99_ms
            );
            results.push(run);
        }
    }
    Ok(results)
}

/// A server that is stopped when dropped: redis-server, and memprof when it traces it.
struct Server {
    redis: Option<u32>,
    memprof: Option<Child>,
    untraced: Option<Child>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let signal = |pid: u32, signal| {
            // SAFETY: signalling a process this bench started.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        };
        // memprof first, so that it reports; then the server it leaves running.
        if let Some(memprof) = &mut self.memprof {
            signal(memprof.id(), libc::SIGINT);
            let _ = memprof.wait();
        }
        if let Some(pid) = self.redis {
            signal(pid, libc::SIGTERM);
        }
        if let Some(untraced) = &mut self.untraced {
            let _ = untraced.wait();
        }
        // Launched by memprof, reaped by it: wait until the server is gone.
        if let Some(pid) = self.redis {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn run_once(memprof: &Path, index: usize, traced: bool) -> Result<ServerRun> {
    let port = TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port()
        .to_string();
    let redis = [
        "redis-server",
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    let _server = if traced {
        let mut child = Command::new(memprof)
            .args(["run", "--json", "/dev/null", "--"])
            .args(redis)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run memprof")?;
        let stderr = child.stderr.take().context("memprof's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let pid = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| {
                let rest = l.split("tracing pid ").nth(1)?;
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .context("memprof did not start tracing redis-server")?;
        // Read on, so that memprof never blocks on a full pipe.
        thread::spawn(move || lines.for_each(drop));
        Server {
            redis: Some(pid),
            memprof: Some(child),
            untraced: None,
        }
    } else {
        let child = Command::new(redis[0])
            .args(&redis[1..])
            .stdout(Stdio::null())
            .spawn()
            .context("cannot run redis-server")?;
        Server {
            redis: Some(child.id()),
            memprof: None,
            untraced: Some(child),
        }
    };
    wait_for_port(&port)?;
    let out = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-n",
            REQUESTS,
            "-c",
            CLIENTS,
        ])
        .args(["-t", TESTS, "--csv"])
        .output()
        .context("cannot run redis-benchmark")?;
    ensure!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rps, p99_ms) = parse_csv(&String::from_utf8_lossy(&out.stdout))?;
    Ok(ServerRun {
        index,
        traced,
        rps,
        p99_ms,
    })
}

fn wait_for_port(port: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not listen on port {port} within 20 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// redis-benchmark's CSV: a header, then one line per test with `rps` and `p99_latency_ms`.
/// Returns the mean requests per second and the highest p99.
fn parse_csv(csv: &str) -> Result<(f64, f64)> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .context("redis-benchmark printed nothing")?
        .split(',')
        .map(|f| f.trim_matches('"'))
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|&h| h == name)
            .with_context(|| format!("no `{name}` column in redis-benchmark's CSV"))
    };
    let (rps_at, p99_at) = (column("rps")?, column("p99_latency_ms")?);
    let (mut rps, mut p99, mut tests) = (0.0, 0.0_f64, 0);
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<f64> = line
            .split(',')
            .map(|f| f.trim_matches('"').parse().unwrap_or(f64::NAN))
            .collect();
        let (Some(&r), Some(&p)) = (fields.get(rps_at), fields.get(p99_at)) else {
            bail!("a short line in redis-benchmark's CSV: {line}");
        };
        rps += r;
        p99 = p99.max(p);
        tests += 1;
    }
    ensure!(tests > 0, "no test in redis-benchmark's CSV");
    Ok((rps / f64::from(tests), p99))
}

/// traced_i / untraced_i of `figure` over the runs, paired by run.
pub(super) fn ratios(runs: &[ServerRun], figure: fn(&ServerRun) -> f64) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.traced)
        .filter_map(|t| {
            let u = runs.iter().find(|u| !u.traced && u.index == t.index)?;
            Some(figure(t) / figure(u))
        })
        .collect()
}

/// The markdown table and the budget line of the server bench.
pub(super) fn text(runs: &[ServerRun]) -> String {
    let of = |traced: bool, figure: fn(&ServerRun) -> f64| {
        let values: Vec<f64> = runs
            .iter()
            .filter(|r| r.traced == traced)
            .map(figure)
            .collect();
        median(&values).unwrap_or(f64::NAN)
    };
    let spread = |ratios: &[f64]| {
        let median = median(ratios).unwrap_or(f64::NAN);
        let (lo, hi) = ratios
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        (median, format!("{median:.3}x ({lo:.3}–{hi:.3})"))
    };
    let (throughput, throughput_text) = spread(&ratios(runs, |r| r.rps));
    let (_, p99_text) = spread(&ratios(runs, |r| r.p99_ms));
    let verdict = if throughput >= THROUGHPUT_MIN {
        "PASS"
    } else {
        "OVER"
    };
    format!(
        "### redis-server under redis-benchmark ({REQUESTS} requests × {TESTS}, {CLIENTS} \
         clients, loopback)\n\n\
         | configuration | requests/s (median) | p99 latency (median) |\n\
         | --- | ---: | ---: |\n\
         | untraced | {:.0} | {:.3} ms |\n\
         | memprof | {:.0} | {:.3} ms |\n\n\
         throughput traced/untraced {throughput_text}; p99 latency traced/untraced {p99_text}\n\
         - {verdict} redis throughput under memprof: {throughput:.3}x untraced (budget ≥ \
         {THROUGHPUT_MIN:.2}x)\n",
        of(false, |r| r.rps),
        of(false, |r| r.p99_ms),
        of(true, |r| r.rps),
        of(true, |r| r.p99_ms),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_benchmark_csv_gives_the_mean_rate_and_the_worst_p99() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\
                   \"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                   \"SET\",\"100000.00\",\"0.3\",\"0.1\",\"0.3\",\"0.5\",\"0.700\",\"2.0\"\n\
                   \"GET\",\"120000.00\",\"0.2\",\"0.1\",\"0.2\",\"0.4\",\"0.500\",\"1.0\"\n";
        assert_eq!(parse_csv(csv).unwrap(), (110000.0, 0.7));
        assert!(parse_csv("").is_err());
        assert!(parse_csv("\"test\",\"rps\"\n\"SET\",\"1\"\n").is_err());
    }

    #[test]
    fn ratios_pair_runs_by_index() {
        let run = |index, traced, rps| ServerRun {
            index,
            traced,
            rps,
            p99_ms: 1.0,
        };
        let runs = [
            run(0, false, 100.0),
            run(0, true, 98.0),
            run(1, true, 90.0),
            run(1, false, 100.0),
        ];
        assert_eq!(ratios(&runs, |r| r.rps), [0.98, 0.9]);
        assert!(text(&runs).contains("OVER redis throughput"));
    }
}
