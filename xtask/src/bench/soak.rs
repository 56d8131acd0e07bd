//! `cargo xtask bench --soak MINUTES`: `memprof agent` (the release build) for MINUTES
//! against process churn and a memory storm, with its RSS and CPU over time, as a host that
//! runs it for days would see them. Its budget: at most 150 MB, and flat (the second half's
//! peak no more than 5 MB over the first half's).
//!
//! The agent traces a cgroup of the soak's own, where two shells run: one starts
//! `/bin/true` over and over (the churn), the other the workload's mixed storm, one process
//! after the other (a quarter of the bench's: 256 MiB touched page by page, then 12,500 rounds
//! of mmap, touch, munmap). Like a scraper, the soak reads `/metrics` and the resident
//! profile at every sample: the server's own caches count in the agent's memory.

use anyhow::{Context, Result, bail, ensure};
use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

/// The agent's RSS budget, in bytes (MB as the issue gives it, not MiB).
pub(super) const RSS_BUDGET: u64 = 150_000_000;
/// How far the second half's peak may rise over the first half's and still be flat.
const FLAT_BUDGET: u64 = 5_000_000;

/// One reading of the agent and its load.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    elapsed: Duration,
    rss: u64,
    /// The agent's utime + stime so far.
    cpu: Duration,
    /// Processes the churn started so far (counted by hundreds).
    churned: u64,
    /// Storm processes finished so far.
    storms: u64,
    /// Series in `/metrics`.
    series: usize,
    lost_events: u64,
    /// Bytes of the gzipped resident profile.
    profile_bytes: usize,
}

/// A cgroup v2 directory for the soak, whose processes are killed and which is removed when
/// dropped.
struct SoakCgroup {
    dir: PathBuf,
    /// From the cgroup v2 root, as `--cgroup` takes it.
    path: String,
}

impl SoakCgroup {
    fn new() -> Result<Self> {
        let mounts = fs::read_to_string("/proc/self/mounts")?;
        let root = mounts
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.get(2) == Some(&"cgroup2")).then(|| fields[1].to_string())
            })
            .context("cgroup v2 is not mounted: the soak runs its load in a cgroup")?;
        let path = format!("/memprof-soak-{}", std::process::id());
        let dir = Path::new(&root).join(&path[1..]);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir, path })
    }

    /// `script` run by a shell that first moves itself into the cgroup.
    fn spawn(&self, script: &str) -> Result<Child> {
        let script = format!(
            "echo $$ > {}/cgroup.procs || exit 1\n{script}",
            self.dir.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("starting sh")
    }
}

impl Drop for SoakCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The agent, stopped with SIGTERM and reaped when dropped.
struct Agent {
    child: Child,
    port: u16,
    /// Its stderr's last lines, for an error.
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    fn start(memprof: &Path, cgroup: &str) -> Result<Self> {
        // A port free now; the agent refuses a busy one before it loads anything.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut child = Command::new(memprof)
            .args(["agent", "--cgroup", cgroup])
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} agent", memprof.display()))?;
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let mut line = String::new();
        while !line.contains("serving http://") {
            line.clear();
            if stderr.read_line(&mut line)? == 0 {
                let status = child.wait()?;
                bail!("memprof agent ended before serving ({status})");
            }
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        // Drained to the end so that it never blocks on a full pipe.
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() == 20 {
                    kept.remove(0);
                }
                kept.push(line);
            }
        });
        Ok(Self {
            child,
            port,
            stderr: lines,
        })
    }

    fn get(&self, path: &str) -> Result<Vec<u8>> {
        get(self.port, path).with_context(|| {
            let stderr = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
            format!(
                "GET {path} from the agent; its stderr:\n{}",
                stderr.join("\n")
            )
        })
    }

    fn sample(&mut self, started: Instant, counts: &Path) -> Result<Sample> {
        if let Some(status) = self.child.try_wait()? {
            let stderr = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
            bail!("memprof agent ended ({status}):\n{}", stderr.join("\n"));
        }
        let metrics = String::from_utf8(self.get("/metrics")?)?;
        let profile = self.get("/debug/pprof/resident")?;
        let (rss, cpu) = rss_and_cpu(self.child.id())?;
        let count = |name: &str| -> u64 {
            fs::read_to_string(counts.join(name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(Sample {
            elapsed: started.elapsed(),
            rss,
            cpu,
            churned: count("churned"),
            storms: count("storms"),
            series: metrics
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .count(),
            lost_events: metric_value(&metrics, "memprof_lost_events_total").unwrap_or(0),
            profile_bytes: profile.len(),
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our unreaped child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A GET over HTTP/1.1: the body of a 200.
pub(super) fn get(port: u16, path: &str) -> Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(raw[split + 4..].to_vec())
}

/// The value of an unlabelled series of a Prometheus exposition.
pub(super) fn metric_value(exposition: &str, name: &str) -> Option<u64> {
    exposition.lines().find_map(|l| {
        let (series, value) = l.split_once(' ')?;
        (series == name).then(|| value.parse().ok())?
    })
}

/// VmRSS in bytes and utime + stime of process `pid`.
fn rss_and_cpu(pid: u32) -> Result<(u64, Duration)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .context("no VmRSS")?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command's closing parenthesis start at field 3 (state).
    let (_, fields) = stat.rsplit_once(')').context("no ) in stat")?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok((kib * 1024, Duration::from_nanos(ticks * 1_000_000_000 / hz)))
}

/// How often to sample a soak of `minutes`: about 30 samples, every 5 s to a minute.
fn interval(minutes: f64) -> Duration {
    Duration::from_secs_f64((minutes * 60.0 / 30.0).clamp(5.0, 60.0))
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The CPU the agent used between two samples, in cores.
fn cores(from: &Sample, to: &Sample) -> f64 {
    let wall = to.elapsed.saturating_sub(from.elapsed).as_secs_f64();
    if wall == 0.0 {
        return 0.0;
    }
    to.cpu.saturating_sub(from.cpu).as_secs_f64() / wall
}

fn row(previous: Option<&Sample>, s: &Sample) -> String {
    let cores = previous.map_or(String::from("–"), |p| format!("{:.3}", cores(p, s)));
    format!(
        "| {:.0} s | {} | {:.2} s | {cores} | {} | {} | {} | {} | {} |",
        s.elapsed.as_secs_f64(),
        mb(s.rss),
        s.cpu.as_secs_f64(),
        s.churned,
        s.storms,
        s.series,
        s.profile_bytes,
        s.lost_events,
    )
}

/// The budget lines for a soak's samples: its peak RSS, whether it stayed flat, its CPU.
fn budgets(samples: &[Sample]) -> Vec<String> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return vec!["no samples".into()];
    };
    let verdict = |pass: bool| if pass { "PASS" } else { "OVER" };
    let peak = samples.iter().map(|s| s.rss).max().unwrap_or(0);
    let (early, late) = samples.split_at(samples.len() / 2);
    let peak_of = |half: &[Sample]| half.iter().map(|s| s.rss).max().unwrap_or(0);
    let rise = peak_of(late).saturating_sub(peak_of(early));
    let busiest = samples
        .windows(2)
        .map(|w| cores(&w[0], &w[1]))
        .fold(0.0, f64::max);
    let mut lines = vec![
        format!(
            "{} agent RSS: peak {} (budget ≤ {})",
            verdict(peak <= RSS_BUDGET),
            mb(peak),
            mb(RSS_BUDGET)
        ),
        format!(
            "{} agent RSS flat: the second half's peak {} above the first half's (budget ≤ {})",
            verdict(!early.is_empty() && rise <= FLAT_BUDGET),
            mb(rise),
            mb(FLAT_BUDGET)
        ),
        format!(
            "agent CPU: {:.3} cores on average, {busiest:.3} in the busiest interval",
            cores(first, last)
        ),
    ];
    if last.lost_events > 0 {
        lines.push(format!(
            "lost events: {} (the figures served were off)",
            last.lost_events
        ));
    }
    lines
}

/// Runs the soak for `minutes` with memprof's release build in `target`.
pub(super) fn run(target: &Path, minutes: f64) -> Result<()> {
    let memprof = target.join("release/memprof");
    let workload = target.join("release/memprof-workload");
    for binary in [&memprof, &workload] {
        ensure!(binary.is_file(), "{} is missing", binary.display());
    }
    let counts = std::env::temp_dir().join(format!("memprof-soak-{}", std::process::id()));
    fs::create_dir_all(&counts)?;
    let result = soak(&memprof, &workload, &counts, minutes);
    fs::remove_dir_all(&counts).ok();
    result
}

fn soak(memprof: &Path, workload: &Path, counts: &Path, minutes: f64) -> Result<()> {
    let cgroup = SoakCgroup::new()?;
    let mut agent = Agent::start(memprof, &cgroup.path)?;
    let started = Instant::now();
    let counts_dir = counts.display();
    // The shells' loops are the churn; they count what they started in files the soak reads.
    cgroup.spawn(&format!(
        "i=0; while :; do /bin/true; i=$((i+1)); \
         [ $((i % 100)) -eq 0 ] && echo $i > {counts_dir}/churned; done"
    ))?;
    cgroup.spawn(&format!(
        "n=0; while {} --storm mixed --scale 0.25 >/dev/null; do n=$((n+1)); \
         echo $n > {counts_dir}/storms; done",
        workload.display()
    ))?;
    let every = interval(minutes);
    let end = Duration::from_secs_f64(minutes * 60.0);
    println!(
        "memprof agent soak: {minutes} min, tracing {} (process churn: /bin/true in a loop; \
         memory storm: memprof-workload --storm mixed --scale 0.25 in a loop); a sample \
         every {:.0} s\n",
        cgroup.path,
        every.as_secs_f64()
    );
    println!(
        "| elapsed | agent RSS | agent CPU | cores | processes churned | storms | series | \
         resident profile (bytes) | lost events |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut samples: Vec<Sample> = Vec::new();
    loop {
        let mut sample = agent.sample(started, counts)?;
        // A count read while its shell rewrites the file reads as nothing: counts only grow.
        if let Some(previous) = samples.last() {
            sample.churned = sample.churned.max(previous.churned);
            sample.storms = sample.storms.max(previous.storms);
        }
        println!("{}", row(samples.last(), &sample));
        samples.push(sample);
        if sample.elapsed >= end {
            break;
        }
        thread::sleep(every.min(end.saturating_sub(started.elapsed())));
    }
    drop(cgroup);
    drop(agent);
    let last = samples.last().copied();
    ensure!(
        last.is_some_and(|s| s.storms > 0 && s.churned > 0),
        "the load did not run: {last:?}"
    );
    println!("\nBudgets:\n");
    for line in budgets(&samples) {
        println!("- {line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(secs: u64, rss_mb: u64, cpu_ms: u64) -> Sample {
        Sample {
            elapsed: Duration::from_secs(secs),
            rss: rss_mb * 1_000_000,
            cpu: Duration::from_millis(cpu_ms),
            churned: 0,
            storms: 0,
            series: 0,
            lost_events: 0,
            profile_bytes: 0,
        }
    }

    #[test]
    fn budgets_judge_the_peak_and_whether_it_stayed_flat() {
        let flat = [
            sample(0, 80, 0),
            sample(10, 90, 1000),
            sample(20, 88, 1500),
            sample(30, 92, 4500),
        ];
        let lines = budgets(&flat);
        assert_eq!(lines[0], "PASS agent RSS: peak 92.0 MB (budget ≤ 150.0 MB)");
        assert!(lines[1].starts_with("PASS agent RSS flat: the second half's peak 2.0 MB"));
        assert_eq!(
            lines[2],
            "agent CPU: 0.150 cores on average, 0.300 in the busiest interval"
        );
        let growing = [sample(0, 80, 0), sample(10, 100, 0), sample(20, 160, 0)];
        let lines = budgets(&growing);
        assert!(lines[0].starts_with("OVER agent RSS: peak 160.0 MB"));
        assert!(lines[1].starts_with("OVER agent RSS flat: the second half's peak 80.0 MB"));
        // One sample has no halves to compare.
        assert!(budgets(&[sample(0, 80, 0)])[1].starts_with("OVER"));
    }

    #[test]
    fn samples_come_about_thirty_times_a_soak() {
        assert_eq!(interval(1.0), Duration::from_secs(5));
        assert_eq!(interval(10.0), Duration::from_secs(20));
        assert_eq!(interval(60.0), Duration::from_secs(60));
    }

    #[test]
    fn unlabelled_values_are_read_from_the_exposition() {
        let text = "# TYPE memprof_lost_events counter\nmemprof_lost_events_total 7\n\
                    memprof_lost_events_totals 9\n";
        assert_eq!(metric_value(text, "memprof_lost_events_total"), Some(7));
        assert_eq!(metric_value(text, "memprof_traced_seconds"), None);
    }

    #[test]
    fn this_process_has_rss_and_cpu() {
        let (rss, _) = rss_and_cpu(std::process::id()).unwrap();
        assert!(rss > 0);
    }
}
