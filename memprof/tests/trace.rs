//! memprof against real processes on this kernel, checked against /proc.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Command, Stdio},
};

use support::*;

const PAUSE_MS: u64 = 300;

/// memprof launching `command`, sampling every 20 ms (several samples per checkpoint pause),
/// its report written to `json`.
fn launch_traced(json: &std::path::Path, command: &[&str]) -> std::process::Output {
    run_ok(
        memprof()
            .args(["run", "--interval", "20ms", "--json"])
            .arg(json)
            .arg("--")
            .args(command),
    )
}

#[test]
fn launch_mode_is_exact_at_every_checkpoint() {
    let dir = scratch("launch");
    let json = dir.join("report.json");
    let out = launch_traced(&json, &[WORKLOAD, "--pause-ms", &PAUSE_MS.to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = read_json(&json);
    assert_eq!(report["lost_events"], 0);
    let processes = report["processes"].as_array().unwrap();
    let workload = processes
        .iter()
        .find(|p| p["command"].as_str().unwrap().contains("memprof-workload"))
        .expect("workload in report");
    assert_eq!(workload["exited"], true);
    // Reconciled with the kernel's own figures, read as it exited.
    let check = &workload["proc_check"];
    assert_eq!(check["at_exit"], true, "{check}");
    assert_eq!(workload["reserved_bytes"]["end"], check["vm_size_bytes"]);
    // memprof's own count, from the counter changes it followed, is close; the headline
    // ends on the kernel's exact figure.
    let counted = check["counted_rss_bytes"].as_u64().unwrap();
    assert!(
        resident_close(counted, check["vm_rss_bytes"].as_u64().unwrap()),
        "resident counted {counted} vs the kernel's {check}"
    );
    assert_eq!(workload["resident_bytes"]["end"], check["vm_rss_bytes"]);
    let checkpoints = checkpoints(&stdout);
    assert_eq!(checkpoints.last().unwrap().name, "end", "{stdout}");
    // What the kernel counted at exit, its per-CPU parts summed, is what /proc said at the
    // workload's last checkpoint (but for the few pages Rust's runtime unmaps on its way out).
    let last = checkpoints.last().unwrap();
    assert!(
        check["vm_rss_bytes"]
            .as_u64()
            .unwrap()
            .abs_diff(last.vm_rss)
            <= 64 << 10,
        "the kernel's {check} at exit vs /proc's {} at the end",
        last.vm_rss
    );
    assert_checkpoints_match(workload, &checkpoints, PAUSE_MS);
    // The stack grew without a syscall, and every kind of change was seen.
    let events = &workload["events"];
    for kind in [
        "mmap", "munmap", "mremap", "brk", "mprotect", "madvise", "shmat", "shmdt",
    ] {
        assert!(events[kind].as_u64().unwrap() > 0, "no {kind} in {events}");
    }
    assert!(events["stack_growths"].as_u64().unwrap() > 0, "{events}");
    assert!(stdout.contains("lost events: 0"), "{stdout}");
}

/// A child the command forks and execs is followed from its first instruction, and its
/// figures are as exact as the command's own.
#[test]
fn forked_children_are_followed_and_exact() {
    let dir = scratch("fork");
    let json = dir.join("report.json");
    // `; true` keeps the shell from exec'ing the workload in place: it must fork.
    let script = format!("{WORKLOAD} --pause-ms {PAUSE_MS}; true");
    let out = launch_traced(&json, &["sh", "-c", &script]);
    let report = read_json(&json);
    assert_eq!(report["lost_events"], 0);
    let processes = report["processes"].as_array().unwrap();
    assert!(processes.len() >= 2, "{report:#}");
    let shell = &processes[0];
    assert!(shell["events"]["forks"].as_u64().unwrap() >= 1, "{shell}");
    let workload = processes
        .iter()
        .find(|p| p["command"].as_str().unwrap().starts_with(WORKLOAD))
        .expect("the forked workload is in the report");
    assert_eq!(workload["events"]["execs"], 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_checkpoints_match(workload, &checkpoints(&stdout), PAUSE_MS);
}

/// Two memprof runs attached to one process at once both match /proc, and nothing either
/// loaded into the kernel outlives it.
#[test]
fn attach_mode_is_exact_and_two_runs_coexist_and_clean_up() {
    let dir = scratch("attach");
    let mut workload = Command::new(WORKLOAD)
        .args(["--wait-stdin", "--hold-ms", "60000"])
        .args(["--pause-ms", &PAUSE_MS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(workload.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    let pid: u64 = ready
        .strip_prefix("ready ")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let runs: Vec<_> = (0..2)
        .map(|i| {
            let json = dir.join(format!("report-{i}.json"));
            let mut child = memprof()
                .args([
                    "run",
                    "--interval",
                    "20ms",
                    "--pid",
                    &pid.to_string(),
                    "--json",
                ])
                .arg(&json)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let (traced, stderr) = wait_until_tracing(&mut child);
            assert_eq!(u64::from(traced), pid);
            (child, stderr, json)
        })
        .collect();
    let kernel_objects: Vec<BTreeSet<(String, u32)>> = runs
        .iter()
        .map(|(child, ..)| bpf_objects_of(child.id()))
        .collect();
    for objects in &kernel_objects {
        assert!(
            objects.iter().any(|(kind, _)| kind == "prog_id"),
            "{objects:?}"
        );
        assert!(
            objects.iter().any(|(kind, _)| kind == "map_id"),
            "{objects:?}"
        );
    }

    writeln!(workload.stdin.as_mut().unwrap()).unwrap();
    let mut stdout = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        stdout.push_str(&line);
        stdout.push('\n');
        if line.contains("\"end\"") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(PAUSE_MS));
    let checkpoints = checkpoints(&stdout);
    for (child, mut stderr, json) in runs {
        signal(&child, libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        assert!(out.status.success(), "{}: {rest}", out.status);
        let report = read_json(&json);
        assert_eq!(report["lost_events"], 0);
        let p = process(&report, pid);
        assert_eq!(p["exited"], false);
        assert_checkpoints_match(p, &checkpoints, PAUSE_MS);
        let check = &p["proc_check"];
        assert_eq!(
            p["reserved_bytes"]["end"], check["vm_size_bytes"],
            "{check}"
        );
        assert!(resident_close(
            check["counted_rss_bytes"].as_u64().unwrap(),
            check["vm_rss_bytes"].as_u64().unwrap()
        ));
        assert_eq!(p["resident_bytes"]["end"], check["vm_rss_bytes"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("(exact)"), "{text}");
    }
    let _ = workload.kill();
    let _ = workload.wait();

    // The kernel frees programs after an RCU grace period and maps after the programs that
    // use them, so give it a moment before calling anything left behind a leak.
    let ours: BTreeSet<(String, u32)> = kernel_objects.into_iter().flatten().collect();
    let mut left = Vec::new();
    for _ in 0..100 {
        let alive = live_bpf_objects();
        left = ours.intersection(&alive).cloned().collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        left.is_empty(),
        "still loaded 10 s after memprof exited: {left:?}"
    );
}

/// The eBPF programs, maps and links a process holds, from its fdinfo.
fn bpf_objects_of(pid: u32) -> BTreeSet<(String, u32)> {
    let mut objects = BTreeSet::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = fs::read_to_string(entry.unwrap().path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some((key, value)) = line.split_once(':')
                && ["prog_id", "map_id", "link_id"].contains(&key)
            {
                objects.insert((key.to_string(), value.trim().parse().unwrap()));
            }
        }
    }
    objects
}

fn live_bpf_objects() -> BTreeSet<(String, u32)> {
    let programs = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| ("prog_id".to_string(), p.id()));
    let maps = aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .map(|m| ("map_id".to_string(), m.id()));
    let links = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .map(|l| ("link_id".to_string(), l.id()));
    programs.chain(maps).chain(links).collect()
}

/// A traced process killed mid-run: the report is still written, with its last state.
#[test]
fn a_killed_process_still_gets_its_report() {
    let dir = scratch("killed");
    let json = dir.join("report.json");
    let mut child = memprof()
        .args(["run", "--json"])
        .arg(&json)
        .args(["--", WORKLOAD, "--pause-ms", "2000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (pid, mut memprof_stderr) = wait_until_tracing(&mut child);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"reserve\""), "{first}");
    // SAFETY: killing the workload we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let out = child.wait_with_output().unwrap();
    // The command's status, as a shell gives it.
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGKILL),
        "{}",
        out.status
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut memprof_stderr, &mut stderr).unwrap();
    assert!(stderr.contains("killed by signal 9"), "{stderr}");
    let report = read_json(&json);
    let p = process(&report, u64::from(pid));
    assert_eq!(p["exited"], true);
    assert!(
        p["reserved_bytes"]["end"].as_u64().unwrap() > 1 << 30,
        "{p}"
    );
}

/// A Go program traced from launch: the runtime's start-up reservations show, reserved far
/// above resident, both exact.
#[test]
fn go_program_startup_reservations() {
    let dir = scratch("go");
    let program = build_go_program(&dir);
    let json = dir.join("report.json");
    let out = launch_traced(&json, &[program.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = read_json(&json);
    assert_eq!(report["lost_events"], 0);
    let p = &report["processes"][0];
    let reserved = p["reserved_bytes"]["end"].as_u64().unwrap();
    let resident = p["resident_bytes"]["end"].as_u64().unwrap();
    assert!(
        reserved > 20 * resident,
        "reserved {reserved} vs resident {resident}"
    );
    assert!(p["events"]["mmap"].as_u64().unwrap() > 5, "{}", p["events"]);
    assert_checkpoints_match(p, &checkpoints(&stdout), PAUSE_MS);
}

/// timeline.svg draws the workload's phases: reserved jumps by 1 GiB, holds, drops at its
/// munmap step and ends below its peak.
#[test]
fn timeline_svg_shows_the_workloads_phases() {
    let dir = scratch("timeline");
    let out = dir.join("out");
    run_ok(
        memprof()
            .args(["run", "--interval", "20ms", "--output"])
            .arg(&out)
            .args(["--", WORKLOAD, "--pause-ms", "100"]),
    );
    let svg = fs::read_to_string(out.join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    for label in [
        "seconds since tracing began",
        "bytes",
        "reserved",
        "resident",
        "memprof-workload",
    ] {
        assert!(svg.contains(label), "{label} missing");
    }
    let line = svg
        .lines()
        .find(|l| l.contains(r#"id="reserved-0""#))
        .expect("a reserved line");
    // A path of steps: `Mx y`, then `Hx` (time goes on) and `Vy` (the figure changes).
    let path = line
        .split(r#" d=""#)
        .nth(1)
        .expect("a path")
        .split('"')
        .next()
        .unwrap();
    let mut words = path.split_whitespace();
    assert!(words.next().is_some_and(|x| x.starts_with('M')), "{path}");
    // SVG y grows downwards: height above the axis is what was reserved.
    let mut heights = vec![-words.next().unwrap().parse::<f64>().unwrap()];
    for word in words {
        if let Some(y) = word.strip_prefix('V') {
            heights.push(-y.parse::<f64>().unwrap());
        }
    }
    let peak = heights.iter().cloned().fold(f64::MIN, f64::max);
    let first_peak = heights.iter().position(|&h| h == peak).unwrap();
    let (first, last) = (heights[0], *heights.last().unwrap());
    assert!(first < peak - 100.0, "starts low: {first} vs {peak}");
    assert!(
        first_peak > 0 && last < peak,
        "drops after its peak: {heights:?}"
    );
    let dip = heights[first_peak..]
        .iter()
        .cloned()
        .fold(f64::MAX, f64::min);
    assert!(
        dip < last,
        "the munmap step dips below the end: {heights:?}"
    );
}

/// The mixed storm at a quarter of the bench's scale: 65,536 faults in one pass over 256 MiB
/// (sent in runs), then 12,500 rounds of mmap, touch, munmap (an event each, hundreds of
/// thousands a second). With default buffer sizes every one arrives and none is lost.
#[test]
fn nothing_is_lost_at_a_high_event_rate() {
    const FAULTS: u64 = 65_536;
    const ROUNDS: u64 = 12_500;
    let report = json_report(
        "storm",
        &[],
        &[WORKLOAD, "--storm", "mixed", "--scale", "0.25"],
    );
    assert_eq!(report["lost_events"], 0);
    assert_eq!(report["lost_stacks"], 0);
    let p = &report["processes"][0];
    // Start-up adds a few hundred faults and a few dozen calls.
    let events = &p["events"];
    let count = |kind: &str| events[kind].as_u64().unwrap();
    for (kind, expected, slack) in [
        ("page_faults", FAULTS + ROUNDS, 1000),
        ("mmap", ROUNDS + 1, 100),
        ("munmap", ROUNDS + 1, 100),
    ] {
        assert!(
            (expected..expected + slack).contains(&count(kind)),
            "{kind}: {} for {expected}",
            count(kind)
        );
    }
    // The fault storm's faults are charged to the memory it reserved, exactly.
    let storm_faults: u64 = p["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stack"].to_string().contains("memprof_storm_faults"))
        .map(|s| s["faults_in_regions"].as_u64().unwrap())
        .sum();
    assert_eq!(storm_faults, FAULTS);
}

/// Debian's nginx, a master and two workers that name themselves after fork: each is listed
/// by the title it set, exact against /proc when tracing ends, and its regions' resident
/// bytes add up to about its VmRSS.
#[test]
fn nginx_workers_are_named_by_their_titles_and_exact() {
    let dir = scratch("nginx");
    let port = free_port();
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}; proxy_temp_path {d}; \
             fastcgi_temp_path {d}; uwsgi_temp_path {d}; scgi_temp_path {d};\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hi\"; }} }} }}\n"
        ),
    )
    .unwrap();
    let json = dir.join("report.json");
    let memprof = memprof()
        .args(["run", "--duration", "3s", "--json"])
        .arg(&json)
        .args(["--", "/usr/sbin/nginx", "-c"])
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    for _ in 0..10 {
        let mut http = TcpStream::connect(("127.0.0.1", port)).unwrap();
        http.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        http.read_to_end(&mut Vec::new()).unwrap();
    }
    let out = memprof.wait_with_output().unwrap();
    // nginx outlives the trace: stopped here.
    let master: i32 = fs::read_to_string(dir.join("nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: signalling the nginx master this test started.
    unsafe { libc::kill(master, libc::SIGQUIT) };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = read_json(&json);
    let processes = report["processes"].as_array().unwrap();
    let commands: Vec<&str> = processes
        .iter()
        .map(|p| p["command"].as_str().unwrap())
        .collect();
    let workers = commands
        .iter()
        .filter(|&&c| c == "nginx: worker process")
        .count();
    assert_eq!(workers, 2, "{commands:?}");
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("nginx: master process")),
        "{commands:?}"
    );
    for p in processes {
        let check = &p["proc_check"];
        assert_eq!(
            p["reserved_bytes"]["end"], check["vm_size_bytes"],
            "{}",
            p["command"]
        );
        let counted = check["counted_rss_bytes"].as_u64().unwrap();
        let kernel = check["vm_rss_bytes"].as_u64().unwrap();
        assert!(
            resident_close(counted, kernel),
            "{}: {counted} vs {kernel}",
            p["command"]
        );
        // Each region as the kernel has it (the pages fork copied to a worker and those it
        // did not): together the process's VmRSS within 1%.
        let regions = total(&p["regions"], "resident_bytes");
        assert!(
            regions.abs_diff(kernel) <= kernel / 100,
            "{}: regions {regions} vs VmRSS {kernel}",
            p["command"]
        );
    }
}

/// A `#!/usr/bin/env bash` script run from a loop, with both CPUs kept busy: each run forks,
/// execs env, which execs bash, often before memprof reads /proc. No process shows a peak
/// from one image's events replayed onto the next (hundreds of GiB before), and every one
/// memprof saw whole is exact against the kernel's figures at its exit.
#[test]
fn scripts_exec_d_twice_under_load_keep_their_images_apart() {
    let dir = scratch("env-script");
    let script = dir.join("s.sh");
    fs::write(&script, "#!/usr/bin/env bash\necho hi >/dev/null\n").unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let busy = BusyCpus::start();
    let json = dir.join("report.json");
    let command = format!("for i in $(seq 30); do {}; done", script.display());
    let out = launch_traced(&json, &["sh", "-c", &command]);
    drop(busy);
    assert!(out.status.success());
    let report = read_json(&json);
    let processes = report["processes"].as_array().unwrap();
    assert!(processes.len() > 30, "{}", processes.len());
    let mut whole = 0;
    for p in processes {
        let peak = p["reserved_bytes"]["peak"].as_u64().unwrap();
        assert!(peak < 64 * MIB, "{} peaked at {peak}", p["command"]);
        let check = &p["proc_check"];
        if p["incomplete"].is_null() && check["at_exit"] == true {
            assert_eq!(p["reserved_bytes"]["end"], check["vm_size_bytes"], "{p:#}");
            whole += 1;
        }
    }
    assert!(whole > 0, "no process seen whole");
}

/// Eight threads racing to map, protect and unmap the same addresses, with both CPUs kept
/// busy: their syscalls reach their exits, where the events are sent, in another order than
/// the kernel made their changes in (an unmap's event after the map that replaced it), and
/// are applied in the kernel's order anyway: 20 of 20 runs exact against the kernel's
/// figures at exit, with nothing lost.
#[test]
fn threads_racing_on_addresses_are_followed_in_the_kernels_order() {
    let dir = scratch("race");
    let json = dir.join("report.json");
    let _busy = BusyCpus::start();
    for run in 0..20 {
        launch_traced(&json, &[WORKLOAD, "--race", "200", "--pause-ms", "0"]);
        let report = read_json(&json);
        assert_eq!(report["lost_events"], 0);
        let p = &report["processes"][0];
        let check = &p["proc_check"];
        assert_eq!(check["at_exit"], true, "{p:#}");
        assert_eq!(
            p["reserved_bytes"]["end"], check["vm_size_bytes"],
            "run {run}: the model is not where the kernel was"
        );
    }
}

/// Memory the kernel faults in whole, without a fault of the program's per page: mlock,
/// mlockall(MCL_FUTURE), MAP_POPULATE, MADV_POPULATE_WRITE and transparent huge pages
/// (madvise(MADV_HUGEPAGE), a write per 2 MiB). Each region's resident bytes follow, and
/// they add up to VmRSS within 1% (to about a quarter of it before the mlocks and huge
/// pages were followed).
#[test]
fn locked_and_populated_memory_is_resident_in_its_regions() {
    let dir = scratch("locked");
    let program = build_c(
        &dir,
        "locked",
        r#"
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#define MIB (1 << 20)
int main(int argc, char **argv) {
    char *a = mmap(0, 16 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *b = mmap(0, 8 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    char *c = mmap(0, 8 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED || b == MAP_FAILED || c == MAP_FAILED || mlock(a, 16 * MIB) ||
        madvise(c, 4 * MIB, MADV_POPULATE_WRITE) || mlockall(MCL_CURRENT | MCL_FUTURE))
        return 1;
    char *d = mmap(0, 8 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (d == MAP_FAILED || munlockall()) return 1;
    char *e = mmap(0, 12 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (e == MAP_FAILED) return 1;
    char *huge = (char *)(((unsigned long)e + 2 * MIB - 1) & ~(2UL * MIB - 1));
    if (madvise(huge, 8 * MIB, MADV_HUGEPAGE)) return 1;
    for (int i = 0; i < 4; i++) huge[i * 2 * MIB] = 1;
    /* What the kernel gave: the test needs whole huge pages. */
    char line[256];
    FILE *rollup = fopen("/proc/self/smaps_rollup", "r"), *out = fopen(argv[1], "w");
    while (rollup && out && fgets(line, sizeof line, rollup))
        if (!strncmp(line, "AnonHugePages:", 14)) fputs(line, out);
    fclose(out);
    pause();
}
"#,
        &["-O2"],
    );
    let json = dir.join("report.json");
    let huge = dir.join("huge");
    let mut child = memprof()
        .args(["run", "--duration", "2s", "--json"])
        .arg(&json)
        .arg("--")
        .arg(&program)
        .arg(&huge)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let report = read_json(&json);
    let p = &report["processes"][0];
    let pid = p["pid"].as_u64().unwrap() as i32;
    // SAFETY: stopping the program memprof launched, which outlives the trace.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(status.success());
    assert_eq!(
        fs::read_to_string(&huge).unwrap().split_whitespace().nth(1),
        Some("8192"),
        "this machine gave no transparent huge pages (see /sys/kernel/mm/transparent_hugepage)"
    );
    let regions = total(&p["regions"], "resident_bytes");
    let kernel = p["proc_check"]["vm_rss_bytes"].as_u64().unwrap();
    assert!(kernel > 48 * MIB, "{kernel}");
    assert!(
        regions.abs_diff(kernel) <= kernel / 100,
        "regions {regions} vs VmRSS {kernel}"
    );
}

/// Events lost to a ring buffer too small for a storm are named in every output that shows
/// figures they may have left short: the report (on every process) and its JSON, a note
/// beside the folded stacks, the flame graphs' subtitles, the timeline's title and the pprof
/// profile's comments.
#[test]
fn lost_events_are_named_in_every_output() {
    let dir = scratch("lost");
    let out = dir.join("out");
    let run = run_ok(
        memprof()
            .args(["run", "--ring-buffer-size", "4K", "--output"])
            .arg(&out)
            .args(["--", WORKLOAD, "--storm", "mixed", "--scale", "0.25"]),
    );
    let report = read_json(&out.join("report.json"));
    let lost = report["lost_events"].as_u64().unwrap();
    assert!(lost > 0, "a 4 KiB ring lost nothing");
    let line = format!("lost events: {lost},");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains(&format!("lost events: {lost}")));
    assert!(stdout.contains(&format!("figures may be off: memprof lost {lost} events")));
    // Beside the folded stacks, which have no room for a comment renderers would skip.
    for file in ["lost.txt", "reserved.svg", "resident.svg", "timeline.svg"] {
        let text = fs::read_to_string(out.join(file)).unwrap();
        assert!(text.contains(&line), "{file} does not say {line}");
    }
    let mut profile = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(out.join("profile.pb.gz")).unwrap())
        .read_to_end(&mut profile)
        .unwrap();
    assert!(
        String::from_utf8_lossy(&profile).contains(&line),
        "profile.pb.gz does not say {line}"
    );
}

/// Resident memory of a traced process that another process, not traced, reclaims
/// (process_madvise MADV_PAGEOUT: the counters change in the caller's task, as kswapd's
/// reclaim does in its own) is charged to the traced process: memprof's count follows VmRSS
/// down. The kernel learns whose an mm is from a change the process makes itself: the
/// process touches new memory once traced.
#[test]
fn resident_memory_reclaimed_by_another_process_is_charged_to_its_owner() {
    const SIZE: usize = 64 * MIB as usize;
    // Maps the file privately (writable, so ctypes can take its address), reads a byte of
    // every page, prints where, and waits; then touches new memory, and waits.
    const MAPPER: &str = "import ctypes, mmap, sys
f = open(sys.argv[1], 'rb')
m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
sum(m[i] for i in range(0, len(m), 4096))
print(ctypes.addressof(ctypes.c_char.from_buffer(m)), len(m), flush=True)
sys.stdin.readline()
touched = bytearray(b'x' * (8 << 20))
print('touched', flush=True)
sys.stdin.readline()";
    let dir = scratch("reclaimed");
    let path = dir.join("data");
    fs::write(&path, vec![1u8; SIZE]).unwrap();
    // Clean pages: dirty ones are written back before they can be reclaimed.
    fs::File::open(&path).unwrap().sync_all().unwrap();
    let mut mapper = Command::new("python3")
        .args(["-c", MAPPER])
        .arg(&path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = mapper.id();
    let mut mapper_out = BufReader::new(mapper.stdout.take().unwrap());
    let mut line = String::new();
    mapper_out.read_line(&mut line).unwrap();
    let [address, len] = [0, 1].map(|i| {
        line.split_whitespace()
            .nth(i)
            .unwrap()
            .parse::<usize>()
            .unwrap()
    });
    assert_eq!(len, SIZE);
    let json = dir.join("report.json");
    let mut memprof = memprof()
        .args(["run", "--json"])
        .arg(&json)
        .args(["--pid", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_tracing(&mut memprof);
    writeln!(mapper.stdin.as_mut().unwrap()).unwrap();
    let mut touched = String::new();
    mapper_out.read_line(&mut touched).unwrap();
    assert_eq!(touched, "touched\n");
    let vm_rss = || {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = vm_rss();
    // SAFETY: plain syscalls; the iovec lives across the call.
    let reclaimed = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let range = libc::iovec {
            iov_base: address as *mut libc::c_void,
            iov_len: len,
        };
        let advised = libc::syscall(
            libc::SYS_process_madvise,
            pidfd,
            &raw const range,
            1,
            libc::MADV_PAGEOUT,
            0,
        );
        libc::close(pidfd as i32);
        advised
    };
    assert_eq!(reclaimed, len as i64, "{}", std::io::Error::last_os_error());
    let after = vm_rss();
    assert!(
        before - after >= MIB * 32,
        "the kernel reclaimed only {} bytes of {len} (VmRSS {before} then {after})",
        before - after
    );
    std::thread::sleep(std::time::Duration::from_millis(PAUSE_MS));
    signal(&memprof, libc::SIGINT);
    assert!(memprof.wait().unwrap().success());
    writeln!(mapper.stdin.as_mut().unwrap()).unwrap();
    mapper.wait().unwrap();
    let report = read_json(&json);
    let check = &process(&report, u64::from(pid))["proc_check"];
    let counted = check["counted_rss_bytes"].as_u64().unwrap();
    let kernel = check["vm_rss_bytes"].as_u64().unwrap();
    assert!(
        resident_close(counted, kernel),
        "memprof counted {counted} resident bytes, the kernel {kernel} (before the reclaim: \
         {before})"
    );
}
