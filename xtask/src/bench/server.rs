//! The real-server benches: Debian's redis-server under redis-benchmark, and the gin hello
//! world (Go, cgo, built from Debian's gin) under wrk, each load from a second process on
//! loopback; the server untraced and launched under memprof, interleaved; throughput and p99
//! latency as ratios traced / untraced. What memprof costs a server people run, where the
//! storms measure what it costs a program that does nothing but change its memory.

use anyhow::{Context, Result, bail, ensure};
use std::{
    env,
    ffi::OsString,
    fs,
    io::{BufRead, BufReader},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{
    more_runs,
    report::{iqr, median, runs},
    round,
};
use crate::installed;

/// redis: requests of each kind per run, a few seconds of load here.
const REQUESTS: &str = "100000";
/// redis: concurrent connections.
const CLIENTS: &str = "50";
/// redis: SET and GET, and list pushes and ranges, which make redis (jemalloc) ask for memory.
const TESTS: &str = "set,get,lpush,lrange_100";
/// gin: wrk's threads, connections and duration, fixed so that runs compare.
const WRK_THREADS: &str = "1";
const WRK_CONNECTIONS: &str = "32";
const WRK_DURATION: &str = "4s";
/// gin's hello world, on 127.0.0.1 at the port given as its argument; the same program as
/// memprof's gin tests build.
const GIN_HELLO: &str = include_str!("gin_hello.go");
/// Budget: traced throughput at least this share of untraced.
pub(super) const THROUGHPUT_MIN: f64 = 0.97;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Server {
    Redis,
    Gin,
}

impl Server {
    pub(super) const ALL: [Server; 2] = [Server::Redis, Server::Gin];

    pub(super) fn name(self) -> &'static str {
        match self {
            Server::Redis => "redis",
            Server::Gin => "gin",
        }
    }

    /// What it needs, from Debian (setup installs them): programs on PATH, or files.
    fn needs(self) -> &'static [&'static str] {
        match self {
            Server::Redis => &["redis-server", "redis-benchmark"],
            // cgo builds with gcc; gin's source in GOPATH mode.
            Server::Gin => &[
                "go",
                "gcc",
                "wrk",
                "/usr/share/gocode/src/github.com/gin-gonic/gin/gin.go",
            ],
        }
    }

    /// Why it cannot run here, if it cannot.
    pub(super) fn missing(self) -> Option<String> {
        let missing: Vec<&str> = self
            .needs()
            .iter()
            .copied()
            .filter(|need| !installed(need))
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "skipped: {} ({} not installed)",
                self.name(),
                missing.join(" and ")
            )
        })
    }

    fn heading(self) -> String {
        match self {
            Server::Redis => format!(
                "redis-server under redis-benchmark ({REQUESTS} requests × {TESTS}, {CLIENTS} \
                 clients, loopback)"
            ),
            Server::Gin => format!(
                "gin hello world (Go, cgo) under wrk (-t{WRK_THREADS} -c{WRK_CONNECTIONS} \
                 -d{WRK_DURATION} GET /, loopback)"
            ),
        }
    }

    /// The server's program, built in `dir` when it must be.
    fn program(self, dir: &Path) -> Result<PathBuf> {
        match self {
            Server::Redis => Ok("redis-server".into()),
            Server::Gin => {
                fs::write(dir.join("main.go"), GIN_HELLO)?;
                // Debian's gin in GOPATH mode: the module proxy is not reachable here.
                crate::run(
                    Command::new("go")
                        .args(["build", "-o", "gin-hello", "main.go"])
                        .current_dir(dir)
                        .env("GO111MODULE", "off")
                        .env("GOPATH", "/usr/share/gocode")
                        // Kept between benches: the second build takes a second.
                        .env("GOCACHE", env::temp_dir().join("memprof-bench-gocache"))
                        .env("CGO_ENABLED", "1"),
                )
                .context("building the gin hello world")?;
                Ok(dir.join("gin-hello"))
            }
        }
    }

    /// The server's command line, listening on `port` of 127.0.0.1.
    fn argv(self, program: &Path, port: u16) -> Vec<OsString> {
        let port = port.to_string();
        let mut argv = vec![program.into(), OsString::from(&port)];
        if self == Server::Redis {
            argv.insert(1, "--port".into());
            argv.extend(
                ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].map(OsString::from),
            );
        }
        argv
    }

    /// The load, against the server on `port`: requests per second and p99 latency (ms).
    fn load(self, port: u16) -> Result<(f64, f64)> {
        let port = port.to_string();
        let mut cmd = match self {
            Server::Redis => {
                let mut cmd = Command::new("redis-benchmark");
                cmd.args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-n",
                    REQUESTS,
                    "-c",
                    CLIENTS,
                ])
                .args(["-t", TESTS, "--csv"]);
                cmd
            }
            Server::Gin => {
                let mut cmd = Command::new("wrk");
                cmd.args(["-t", WRK_THREADS, "-c", WRK_CONNECTIONS, "-d", WRK_DURATION])
                    .arg("--latency")
                    .arg(format!("http://127.0.0.1:{port}/"));
                cmd
            }
        };
        let out = cmd
            .output()
            .with_context(|| format!("cannot run {}", crate::show(&cmd)))?;
        ensure!(
            out.status.success(),
            "{} failed: {}",
            crate::show(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        match self {
            Server::Redis => parse_csv(&stdout),
            Server::Gin => parse_wrk(&stdout),
        }
    }
}

/// One run of the load against one server.
#[derive(Clone, Copy, Debug)]
pub(super) struct ServerRun {
    pub(super) index: usize,
    pub(super) traced: bool,
    /// Requests per second (redis: the mean over the benchmark's tests).
    pub(super) rps: f64,
    /// The 99th-percentile latency (redis: the highest of the tests'), in milliseconds.
    pub(super) p99_ms: f64,
}

/// At least `runs` pairs of runs, untraced and under `memprof` (a path), in an order
/// alternating by run so that neither always goes first; more while the throughput ratios
/// spread (see [`more_runs`]). Builds what it must in `dir`.
pub(super) fn run(
    server: Server,
    memprof: &Path,
    dir: &Path,
    runs: usize,
) -> Result<Vec<ServerRun>> {
    let program = server.program(dir)?;
    let name = server.name();
    let mut results = Vec::new();
    // Not counted: it warms the page cache and the machine.
    run_once(server, &program, memprof, 0, false)?;
    let mut index = 0;
    while more_runs(&[ratios(&results, |r| r.rps)], index, runs) {
        let order = if index % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for traced in order {
            let run = run_once(server, &program, memprof, index, traced)
                .with_context(|| format!("{name} run {}, traced: {traced}", index + 1))?;
            eprintln!(
                "xtask: bench {name} {}: {:<9} {:>10.0} requests/s, p99 {:.3} ms",
                round(index, runs),
                if traced { "memprof" } else { "untraced" },
                run.rps,
                run.p99_ms
            );
            results.push(run);
        }
        index += 1;
    }
    Ok(results)
}

/// A server that is stopped when dropped, and memprof when it traces it.
struct Running {
    server: Option<u32>,
    memprof: Option<Child>,
    untraced: Option<Child>,
}

impl Drop for Running {
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
        if let Some(pid) = self.server {
            signal(pid, libc::SIGTERM);
        }
        if let Some(untraced) = &mut self.untraced {
            let _ = untraced.wait();
        }
        // Launched by memprof, reaped by it: wait until the server is gone.
        if let Some(pid) = self.server {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn run_once(
    server: Server,
    program: &Path,
    memprof: &Path,
    index: usize,
    traced: bool,
) -> Result<ServerRun> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let argv = server.argv(program, port);
    let _running = if traced {
        let mut child = Command::new(memprof)
            .args(["run", "--json", "/dev/null", "--"])
            .args(&argv)
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
            .with_context(|| format!("memprof did not start tracing {}", server.name()))?;
        // Read on, so that memprof never blocks on a full pipe.
        thread::spawn(move || lines.for_each(drop));
        Running {
            server: Some(pid),
            memprof: Some(child),
            untraced: None,
        }
    } else {
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", program.display()))?;
        Running {
            server: Some(child.id()),
            memprof: None,
            untraced: Some(child),
        }
    };
    wait_for_port(server, port)?;
    let (rps, p99_ms) = server.load(port)?;
    Ok(ServerRun {
        index,
        traced,
        rps,
        p99_ms,
    })
}

fn wait_for_port(server: Server, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "{} did not listen on port {port} within 20 s",
                server.name()
            );
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

/// wrk's report with --latency: `Requests/sec:` and the `99%` line of its latency
/// distribution, in wrk's units (us, ms, s). Non-2xx answers are an error: a server that
/// fails fast would look fast.
fn parse_wrk(text: &str) -> Result<(f64, f64)> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
            .with_context(|| format!("no `{key}` in wrk's output:\n{text}"))
    };
    if let Ok(n) = value("Non-2xx or 3xx responses:") {
        bail!("the server answered {n} requests with an error");
    }
    // wrk leaves requests that timed out out of its latencies: a p99 without them would
    // flatter the slower server.
    if let Ok(errors) = value("Socket errors:")
        && let Some(timeouts) = errors.split(", ").find_map(|e| e.strip_prefix("timeout "))
        && timeouts != "0"
    {
        bail!("{timeouts} requests timed out (wrk: {errors})");
    }
    let rps: f64 = value("Requests/sec:")?
        .parse()
        .context("wrk's Requests/sec")?;
    let p99 = value("99%")?;
    let split = p99
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in wrk's 99% latency `{p99}`"))?;
    let (number, unit) = p99.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("wrk's 99% latency `{p99}`"))?;
    let ms = match unit {
        "us" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        "m" => number * 60e3,
        _ => bail!("wrk's 99% latency `{p99}`: unknown unit"),
    };
    Ok((rps, ms))
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

/// The markdown table and the budget line of `server`'s bench.
pub(super) fn text(server: Server, runs: &[ServerRun]) -> String {
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
        let iqr = iqr(ratios).unwrap_or(f64::NAN);
        (
            median,
            format!("{median:.3}x ({lo:.3}–{hi:.3}, IQR {iqr:.3})"),
        )
    };
    let (throughput, throughput_text) = spread(&ratios(runs, |r| r.rps));
    let (_, p99_text) = spread(&ratios(runs, |r| r.p99_ms));
    let verdict = if throughput >= THROUGHPUT_MIN {
        "PASS"
    } else {
        "OVER"
    };
    let pairs = runs.iter().filter(|r| r.traced).count();
    let name = server.name();
    format!(
        "### {}, {}\n\n\
         | configuration | requests/s (median) | p99 latency (median) |\n\
         | --- | ---: | ---: |\n\
         | untraced | {:.0} | {:.3} ms |\n\
         | memprof | {:.0} | {:.3} ms |\n\n\
         throughput traced/untraced {throughput_text}; p99 latency traced/untraced {p99_text}\n\
         - {verdict} {name} throughput under memprof: {throughput:.3}x untraced (budget ≥ \
         {THROUGHPUT_MIN:.2}x)\n",
        server.heading(),
        self::runs(pairs),
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
    fn wrk_latency_report_gives_the_rate_and_the_p99() {
        // A real capture: wrk -t1 -c32 -d2s --latency against the gin hello world.
        let text = include_str!("testdata/wrk-latency.txt");
        assert_eq!(parse_wrk(text).unwrap(), (13501.72, 10.40));
        let us = text.replace("10.40ms", "812.00us");
        assert_eq!(parse_wrk(&us).unwrap().1, 0.812);
        let s = text.replace("10.40ms", "1.20s");
        assert_eq!(parse_wrk(&s).unwrap().1, 1200.0);
        let errors = format!("{text}  Non-2xx or 3xx responses: 27208\n");
        let error = format!("{:#}", parse_wrk(&errors).unwrap_err());
        assert!(
            error.contains("answered 27208 requests with an error"),
            "{error}"
        );
        // wrk's line when requests timed out.
        let timeouts = text.replace(
            "  27208 requests",
            "  Socket errors: connect 0, read 0, write 0, timeout 12\n  27208 requests",
        );
        let error = format!("{:#}", parse_wrk(&timeouts).unwrap_err());
        assert!(error.contains("12 requests timed out"), "{error}");
        let no_timeouts = timeouts.replace("timeout 12", "timeout 0");
        assert_eq!(parse_wrk(&no_timeouts).unwrap().0, 13501.72);
        let no_latency = text.replace("99%", "98%");
        assert!(parse_wrk(&no_latency).is_err());
        assert!(parse_wrk("").is_err());
    }

    #[test]
    fn server_command_lines() {
        let words = |server: Server, program: &str| {
            let argv = server.argv(Path::new(program), 6379);
            argv.iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            words(Server::Redis, "redis-server"),
            "redis-server --port 6379 --bind 127.0.0.1 --save  --appendonly no"
        );
        assert_eq!(words(Server::Gin, "/d/gin-hello"), "/d/gin-hello 6379");
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
        let text = text(Server::Redis, &runs);
        assert!(
            text.starts_with("### redis-server under redis-benchmark"),
            "{text}"
        );
        assert!(text.contains("loopback), 2 runs\n"), "{text}");
        assert!(text.contains("0.940x (0.900–0.980, IQR 0.040)"), "{text}");
        assert!(text.contains("OVER redis throughput"), "{text}");
    }
}
