//! One run of one configuration: spawning it, timing it, following memprof to its exit for
//! its own CPU time and peak RSS, and reading the figures that the workload, memprof and perf
//! print.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::{
    fs,
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    os::unix::process::ExitStatusExt,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use super::{
    frameless::{self, StackShare},
    report::group,
    soak::{get, metric_value},
    storm::{Commands, Config, Storm},
};
use crate::show;

/// One run of one configuration.
pub(super) struct Run {
    pub(super) storm: Storm,
    pub(super) config: Config,
    pub(super) index: usize,
    /// The storm's own duration, as the workload measured it.
    pub(super) elapsed_ns: u64,
    /// From spawning the command to its exit.
    pub(super) wall_ns: u64,
    pub(super) memprof: Option<MemprofRun>,
    /// perf record's sample count, from its closing message.
    pub(super) perf_samples: Option<u64>,
}

impl Run {
    /// A run with its times and nothing else.
    pub(super) fn timed(
        storm: Storm,
        config: Config,
        index: usize,
        elapsed_ns: u64,
        wall_ns: u64,
    ) -> Self {
        Self {
            storm,
            config,
            index,
            elapsed_ns,
            wall_ns,
            memprof: None,
            perf_samples: None,
        }
    }
}

pub(super) struct MemprofRun {
    /// Events memprof received for the workload: page faults, RSS updates, memory syscalls,
    /// forks and execs; None from the agent, which counts none of them.
    pub(super) events: Option<u64>,
    pub(super) lost_events: u64,
    /// Stacks the kernel could not store, and user stacks it did not copy for unwinding (over
    /// its budget of copies): both charged to "[stack not captured]". 0 from the agent, which
    /// does not export them.
    pub(super) lost_stacks: u64,
    pub(super) stacks_over_budget: u64,
    /// On the frameless storm, the bytes on complete stacks through its round.
    pub(super) stack_share: Option<StackShare>,
    /// memprof's own user + system CPU time (not its child's), and its peak RSS, read when
    /// it exits; None when it could not be followed with ptrace.
    pub(super) cpu_ns: Option<u64>,
    pub(super) peak_rss_kib: Option<u64>,
    /// From spawning memprof until it printed `tracing pid` (the agent: `serving http://`).
    pub(super) to_tracing_ns: u64,
}

impl MemprofRun {
    /// Stacks memprof did not capture, when there were any: "N stacks over budget, N lost
    /// stacks".
    pub(super) fn stacks_missed(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.stacks_over_budget, "stacks over budget"),
            (self.lost_stacks, "lost stacks"),
        ]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, what)| format!("{} {what}", group(n)))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// What the progress line adds about its stacks: their share complete (frameless storm)
    /// and those missed, each after ", "; empty when there is nothing to say.
    pub(super) fn stacks(&self) -> String {
        let share = self.stack_share.and_then(StackShare::percent);
        let share = share.map(|p| format!("complete stacks {p:.1}%"));
        share
            .into_iter()
            .chain(self.stacks_missed())
            .map(|part| format!(", {part}"))
            .collect()
    }
}

/// Runs `storm` under `config` once, as run `index`.
pub(super) fn run_once(
    commands: &Commands,
    storm: Storm,
    config: Config,
    index: usize,
) -> Result<Run> {
    if config.is_memprof() {
        return run_memprof(commands, storm, config, index);
    }
    let mut cmd = commands.command(storm, config);
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", show(&cmd)))?;
    let wall_ns = start.elapsed().as_nanos() as u64;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let elapsed_ns = check_output(&cmd, out.status, &stdout, &stderr, storm)?;
    let perf_samples = (config == Config::Perf)
        .then(|| perf_samples(&stderr))
        .flatten();
    fs::remove_file(commands.perf_data()).ok();
    Ok(Run {
        perf_samples,
        ..Run::timed(storm, config, index, elapsed_ns, wall_ns)
    })
}

/// Runs memprof as a child followed with ptrace (PTRACE_SEIZE, which stops it only when
/// it exits), to read its own CPU time and peak RSS then: the rusage that wait4 returns
/// would include the workload, which memprof reaps. On the host storm (and for memprof's
/// hooks alone) memprof traces an idle process of the bench's, or the agent the host, while
/// the storm runs beside it, then is interrupted.
fn run_memprof(commands: &Commands, storm: Storm, config: Config, index: usize) -> Result<Run> {
    let json_path = commands.report_json();
    fs::remove_file(&json_path).ok();
    let mut traced = None;
    let mut agent_port = None;
    let beside_storm = storm == Storm::Host || config == Config::Hooks;
    let mut cmd = if config == Config::Agent {
        // Free now; the agent refuses a busy one before it loads anything.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        agent_port = Some(port);
        commands.agent(port)
    } else if beside_storm {
        let idle = Command::new("sleep")
            .arg("3600")
            .spawn()
            .context("cannot run sleep")?;
        let cmd = commands.memprof_beside(idle.id(), config);
        traced = Some(Killed(idle));
        cmd
    } else {
        commands.command(storm, config)
    };
    let ready = if config == Config::Agent {
        "serving http://"
    } else {
        "tracing pid"
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", show(&cmd)))?;
    let pid = child.id() as libc::pid_t;
    let options = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_EXITKILL;
    // SAFETY: PTRACE_SEIZE of our own child; the data argument carries the options.
    let seized = unsafe {
        libc::ptrace(
            libc::PTRACE_SEIZE,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            options as usize as *mut libc::c_void,
        )
    } == 0;
    let mut stdout = child.stdout.take().context("memprof's stdout")?;
    let stderr = child.stderr.take().context("memprof's stderr")?;
    let stdout = thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let (tracing_tx, tracing_rx) = mpsc::channel();
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let mut tracing = None;
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            if tracing.is_none() && line.contains(ready) {
                tracing = Some(start.elapsed());
                tracing_tx.send(()).ok();
            }
            text.push_str(&line);
            text.push('\n');
        }
        Ok::<_, std::io::Error>((text, tracing))
    });
    let beside = beside_storm.then(|| run_beside(commands, storm, pid, &tracing_rx, agent_port));
    let (status, own) = reap(pid, seized)?;
    drop(traced);
    let wall_ns = start.elapsed().as_nanos() as u64;
    let stdout = stdout.join().expect("stdout reader panicked")?;
    let (stderr, to_tracing) = stderr.join().expect("stderr reader panicked")?;
    let (elapsed_ns, metrics) = match beside {
        Some(storm_elapsed) => {
            ensure!(
                status.success(),
                "{} failed ({status}):\n{stderr}",
                show(&cmd)
            );
            storm_elapsed?
        }
        None => (check_output(&cmd, status, &stdout, &stderr, storm)?, None),
    };
    let to_tracing = to_tracing.with_context(|| format!("memprof never printed `{ready}`"))?;
    let own_figures = |events, lost_events, lost_stacks, stacks_over_budget, stack_share| Run {
        memprof: Some(MemprofRun {
            events,
            lost_events,
            lost_stacks,
            stacks_over_budget,
            stack_share,
            cpu_ns: own.map(|o| o.cpu_ns),
            peak_rss_kib: own.map(|o| o.peak_rss_kib),
            to_tracing_ns: to_tracing.as_nanos() as u64,
        }),
        ..Run::timed(storm, config, index, elapsed_ns, wall_ns)
    };
    if let Some(metrics) = metrics {
        let lost = metric_value(&metrics, "memprof_lost_events_total")
            .context("the agent's /metrics has no memprof_lost_events_total")?;
        return Ok(own_figures(None, lost, 0, 0, None));
    }
    let report = fs::read_to_string(&json_path)
        .with_context(|| format!("memprof wrote no {}", json_path.display()))?;
    let report: Value = serde_json::from_str(&report)
        .with_context(|| format!("{} is not JSON", json_path.display()))?;
    let count = |key: &str| {
        report[key]
            .as_u64()
            .with_context(|| format!("memprof's report has no {key}"))
    };
    let (lost_events, lost_stacks) = (count("lost_events")?, count("lost_stacks")?);
    let stacks_over_budget = count("stacks_over_budget")?;
    let stack_share = (storm == Storm::Frameless)
        .then(|| frameless::stack_share(&report))
        .transpose()?;
    let events = report["processes"]
        .as_array()
        .context("memprof's report has no processes")?
        .iter()
        .map(|p| events(&p["events"]))
        .sum();
    Ok(own_figures(
        Some(events),
        lost_events,
        lost_stacks,
        stacks_over_budget,
        stack_share,
    ))
}

/// A child killed and reaped when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// Once memprof (`memprof_pid`) traces, runs `storm` untraced beside it, then interrupts
/// memprof (which reports and exits); the storm's duration, and the agent's `/metrics` then
/// when it is the agent serving on `agent_port`.
fn run_beside(
    commands: &Commands,
    storm: Storm,
    memprof_pid: libc::pid_t,
    tracing: &mpsc::Receiver<()>,
    agent_port: Option<u16>,
) -> Result<(u64, Option<String>)> {
    let traces = tracing.recv_timeout(Duration::from_secs(30));
    let result = traces
        .context("memprof did not start tracing within 30 s")
        .and_then(|()| {
            let mut cmd = commands.command(storm, Config::Untraced);
            cmd.stdin(Stdio::null());
            let out = cmd
                .output()
                .with_context(|| format!("cannot run {}", show(&cmd)))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let elapsed = check_output(&cmd, out.status, &stdout, &stderr, storm)?;
            let metrics = agent_port
                .map(|port| get(port, "/metrics").context("GET /metrics from the agent"))
                .transpose()?;
            Ok((
                elapsed,
                metrics.map(|m| String::from_utf8_lossy(&m).into_owned()),
            ))
        });
    // SAFETY: signalling our own child, which reap() has not waited for yet.
    unsafe { libc::kill(memprof_pid, libc::SIGINT) };
    result
}

/// The storm's duration from the workload's last line; an error with the command's output
/// when it failed.
fn check_output(
    cmd: &Command,
    status: ExitStatus,
    stdout: &str,
    stderr: &str,
    storm: Storm,
) -> Result<u64> {
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    };
    ensure!(
        status.success(),
        "{} failed ({status}):\n{}",
        show(cmd),
        tail(stderr)
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with(r#"{"storm":"#))
        .with_context(|| format!("{} printed no storm line:\n{}", show(cmd), tail(stdout)))?;
    let line: Value = serde_json::from_str(line).with_context(|| format!("storm line {line}"))?;
    ensure!(
        line["storm"] == storm.name(),
        "the workload ran the wrong storm: {line}"
    );
    line["elapsed_ns"]
        .as_u64()
        .with_context(|| format!("no elapsed_ns in {line}"))
}

/// Events memprof received for one process.
fn events(counts: &Value) -> u64 {
    [
        "page_faults",
        "rss_updates",
        "mmap",
        "munmap",
        "mremap",
        "brk",
        "mprotect",
        "madvise",
        "shmat",
        "shmdt",
        "mlock",
        "forks",
        "execs",
    ]
    .iter()
    .filter_map(|k| counts[k].as_u64())
    .sum()
}

/// `(N samples)` in perf record's closing message.
fn perf_samples(stderr: &str) -> Option<u64> {
    let (before, _) = stderr.rsplit_once(" samples)")?;
    let (_, n) = before.rsplit_once('(')?;
    n.trim().parse().ok()
}

/// memprof's own figures, read when it stops at its exit.
#[derive(Clone, Copy)]
struct Own {
    cpu_ns: u64,
    peak_rss_kib: u64,
}

/// Waits for memprof to exit. When it is followed (seized), continues it past every stop and
/// reads its own figures at its exit stop, while its address space is still there.
fn reap(pid: libc::pid_t, seized: bool) -> Result<(ExitStatus, Option<Own>)> {
    let mut own = None;
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child, with a valid status pointer.
        let ret = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if ret < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("waitpid");
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            return Ok((ExitStatus::from_raw(status), own));
        }
        if !(seized && libc::WIFSTOPPED(status)) {
            continue;
        }
        let event = (status >> 16) & 0xff;
        let signal = if event == libc::PTRACE_EVENT_EXIT {
            own = read_own(pid);
            0
        } else if event == libc::PTRACE_EVENT_STOP {
            0
        } else {
            // A signal on its way to memprof: deliver it.
            libc::WSTOPSIG(status)
        };
        // SAFETY: restarting our stopped tracee, with the signal it was to receive.
        unsafe {
            libc::ptrace(
                libc::PTRACE_CONT,
                pid,
                std::ptr::null_mut::<libc::c_void>(),
                signal as usize as *mut libc::c_void,
            )
        };
    }
}

/// utime + stime (memprof's own, all threads, not its reaped children) and VmHWM.
fn read_own(pid: libc::pid_t) -> Option<Own> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis start at field 3 (state).
    let (_, fields) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = fields.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(Own {
        cpu_ns: ticks * 1_000_000_000 / hz,
        peak_rss_kib: hwm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn perf_samples_from_the_closing_message() {
        let stderr = "[ perf record: Woken up 41 times to write data ]\n\
                      [ perf record: Captured and wrote 75.312 MB /tmp/perf.data (1048653 samples) ]\n";
        assert_eq!(perf_samples(stderr), Some(1_048_653));
        assert_eq!(perf_samples("perf: no samples\n"), None);
    }

    #[test]
    fn events_sum_the_memory_counts_only() {
        let counts = json!({
            "page_faults": 1000, "rss_updates": 200, "mmap": 30, "munmap": 29, "mremap": 1,
            "brk": 2, "mprotect": 3, "madvise": 4, "forks": 1, "execs": 1,
            "exits": 1, "lost": 99,
        });
        assert_eq!(events(&counts), 1271);
        assert_eq!(events(&json!({})), 0);
    }

    #[test]
    fn storm_line_gives_the_elapsed_time() {
        let cmd = Command::new("memprof-workload");
        let ok = ExitStatus::from_raw(0);
        let stdout = "starting\n{\"storm\":\"faults\",\"elapsed_ns\":1430000000}\n";
        let elapsed = check_output(&cmd, ok, stdout, "", Storm::Faults).unwrap();
        assert_eq!(elapsed, 1_430_000_000);
        let wrong = check_output(&cmd, ok, stdout, "", Storm::Mixed).unwrap_err();
        assert!(format!("{wrong:#}").contains("wrong storm"), "{wrong:#}");
        let none = check_output(&cmd, ok, "starting\n", "", Storm::Faults).unwrap_err();
        assert!(
            format!("{none:#}").contains("printed no storm line"),
            "{none:#}"
        );
        // Exit code 1: the error carries the tail of stderr.
        let failed = ExitStatus::from_raw(1 << 8);
        let err = check_output(&cmd, failed, stdout, "boom\n", Storm::Faults).unwrap_err();
        assert!(format!("{err:#}").ends_with("boom"), "{err:#}");
    }

    #[test]
    fn stack_figures_said_when_there_is_something_to_say() {
        let mut run = MemprofRun {
            events: Some(1),
            lost_events: 0,
            lost_stacks: 0,
            stacks_over_budget: 0,
            stack_share: None,
            cpu_ns: None,
            peak_rss_kib: None,
            to_tracing_ns: 0,
        };
        assert_eq!(run.stacks_missed(), None);
        assert_eq!(run.stacks(), "");
        run.stacks_over_budget = 12_345;
        assert_eq!(run.stacks(), ", 12,345 stacks over budget");
        run.lost_stacks = 2;
        run.stack_share = Some(StackShare {
            complete_bytes: 999,
            bytes: 1000,
        });
        assert_eq!(
            run.stacks_missed().as_deref(),
            Some("12,345 stacks over budget, 2 lost stacks")
        );
        assert_eq!(
            run.stacks(),
            ", complete stacks 99.9%, 12,345 stacks over budget, 2 lost stacks"
        );
    }

    #[test]
    fn own_figures_of_this_process() {
        let own = read_own(std::process::id() as libc::pid_t).expect("reads /proc/self");
        assert!(own.peak_rss_kib > 0);
    }
}
