//! What memory is for, on real programs: each process's bytes by category (Go's runtime and
//! heap, glibc's malloc, the JVM's heap and metaspace, V8's heap, CPython's arenas, thread
//! stacks), checked against what the kernel says of the same addresses, and adding up to the
//! process's figures.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    collections::HashMap,
    fs,
    path::Path,
    process::{Command, Stdio},
};

use serde_json::Value;
use support::*;

/// glibc's arenas for threads reserve this much each (HEAP_MAX_SIZE on 64-bit).
const ARENA: u64 = 64 * MIB;

/// (reserved, committed, resident) bytes by category.
fn breakdown(process: &Value) -> HashMap<String, [u64; 3]> {
    process["breakdown"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let figure = |name: &str| row[name].as_u64().unwrap();
            (
                row["category"].as_str().unwrap().to_string(),
                [
                    figure("reserved_bytes"),
                    figure("committed_bytes"),
                    figure("resident_bytes"),
                ],
            )
        })
        .collect()
}

fn reserved(process: &Value, category: &str) -> u64 {
    breakdown(process).get(category).map_or(0, |f| f[0])
}

/// Every category together is the process: reserved, committed and (alive at the end, so
/// settled on the kernel's figures) resident, exactly; and resident is the kernel's.
fn assert_adds_up(process: &Value) {
    let rows = breakdown(process);
    for (i, figure) in ["reserved_bytes", "committed_bytes", "resident_bytes"]
        .into_iter()
        .enumerate()
    {
        let sum: u64 = rows.values().map(|f| f[i]).sum();
        assert_eq!(
            sum,
            process[figure]["end"].as_u64().unwrap(),
            "{figure}: {rows:?}"
        );
    }
    let check = &process["proc_check"];
    assert_eq!(
        process["reserved_bytes"]["end"].as_u64(),
        check["vm_size_bytes"].as_u64()
    );
    let resident = process["resident_bytes"]["end"].as_u64().unwrap();
    let vm_rss = check["vm_rss_bytes"].as_u64().unwrap();
    assert!(resident_close(resident, vm_rss), "{resident} vs {vm_rss}");
}

/// The category of the region holding `address`.
fn category_at(process: &Value, address: u64) -> &str {
    process["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["start"].as_u64().unwrap() <= address && address < r["end"].as_u64().unwrap())
        .and_then(|r| r["category"].as_str())
        .unwrap_or_else(|| panic!("no region holds {address:#x}"))
}

/// The stack pointers of `pid`'s threads but its first, from the kernel (the last-but-one
/// field of /proc/PID/task/TID/syscall, for a thread blocked in a call).
fn thread_stack_pointers(pid: u64) -> Vec<u64> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let tid: u64 = task.ok()?.file_name().to_str()?.parse().ok()?;
            let syscall = fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
            let fields: Vec<&str> = syscall.split_whitespace().collect();
            // "running" has no registers; a thread in no call has three fields.
            let sp = (fields.len() == 9).then(|| fields[7])?;
            (tid != pid).then(|| u64::from_str_radix(sp.trim_start_matches("0x"), 16).ok())?
        })
        .collect()
}

/// The sum of the folded lines of `file` under the root frame `root`.
fn folded_under(dir: &Path, file: &str, root: &str) -> u64 {
    fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(&format!("{root};")) || l.starts_with(&format!("{root} ")))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

/// Runs `memprof run --duration SECS --output DIR -- COMMAND` (the command outlives the
/// trace, so that it is compared with /proc at the end); returns the process's report and
/// the terminal report, with the process still running. `inspect` sees it before it is
/// killed.
fn traced_for(
    name: &str,
    secs: &str,
    command: &[&str],
    inspect: impl FnOnce(u64),
) -> (Value, String) {
    let dir = scratch(name);
    let out = dir.join("out");
    // To a file: the command outlives memprof and keeps what it was given open.
    let stdout = dir.join("stdout.txt");
    let status = memprof()
        .current_dir(&dir)
        .args(["run", "--duration", secs, "--output"])
        .arg(&out)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&stdout).unwrap())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let report = read_json(&out.join("report.json"));
    let process = report["processes"][0].clone();
    let pid = process["pid"].as_u64().unwrap();
    inspect(pid);
    // SAFETY: ending the command memprof launched, which outlives the trace.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let categories: u64 = breakdown(&process).values().map(|f| f[0]).sum();
    assert_eq!(
        folded_under(&out, "breakdown.folded", ""),
        0,
        "every line has a category"
    );
    let folded: u64 = breakdown(&process)
        .keys()
        .map(|c| folded_under(&out, "breakdown.folded", c))
        .sum();
    assert_eq!(folded, categories, "breakdown.folded holds every byte");
    (process, fs::read_to_string(stdout).unwrap())
}

const C_PROGRAM: &str = r#"
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *idle(void *arg) { pause(); return arg; }

/* The bytes glibc maps for a block it maps on its own: the block, and its header. */
static unsigned long mapped(void *block) { return malloc_usable_size(block) + 16; }

int main(void) {
    char *big = malloc(48 << 20);
    memset(big, 1, 4 << 20);
    char *zeroed = calloc(24, 1 << 20);
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) pthread_create(&threads[i], NULL, idle, NULL);
    printf("blocks %lu\n", mapped(big) + mapped(zeroed));
    fflush(stdout);
    pause();
    return zeroed[0];
}
"#;

/// A C program without frame pointers mallocs a large block, callocs another and starts 4
/// threads: `malloc_mmap` holds exactly the two blocks' mappings (as glibc sizes them) and
/// `thread_stack` exactly the four threads' stacks and guards (as /proc/PID/maps has them).
#[test]
fn a_c_programs_blocks_and_threads() {
    let dir = scratch("breakdown-c");
    let program = build_c(
        &dir,
        "blocks",
        C_PROGRAM,
        &["-O2", "-fomit-frame-pointer", "-pthread"],
    );
    let mut stacks = Vec::new();
    let mut maps = Vec::new();
    let (process, text) = traced_for(
        "breakdown-c-run",
        "2",
        &[program.to_str().unwrap()],
        |pid| {
            stacks = thread_stack_pointers(pid);
            maps = fs::read_to_string(format!("/proc/{pid}/maps"))
                .unwrap()
                .lines()
                .map(|l| {
                    let mut fields = l.split_whitespace();
                    let (start, end) = fields.next().unwrap().split_once('-').unwrap();
                    let hex = |s| u64::from_str_radix(s, 16).unwrap();
                    (hex(start), hex(end), fields.next().unwrap().to_string())
                })
                .collect();
        },
    );
    assert_eq!(stacks.len(), 4, "the four threads, blocked in pause()");
    // Each thread's stack mapping and the guard page glibc puts below it.
    let mut thread_bytes = 0;
    for &sp in &stacks {
        assert_eq!(category_at(&process, sp), "thread_stack");
        let i = maps
            .iter()
            .position(|&(s, e, _)| s <= sp && sp < e)
            .unwrap();
        let (start, end, _) = maps[i];
        let (guard_start, guard_end, perms) = &maps[i - 1];
        assert_eq!((*guard_end, perms.as_str()), (start, "---p"));
        thread_bytes += end - guard_start;
    }
    assert_eq!(reserved(&process, "thread_stack"), thread_bytes);
    // The program's own line, before memprof's report.
    let blocks: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("blocks "))
        .unwrap_or_else(|| panic!("no blocks line in:\n{text}"))
        .parse()
        .unwrap();
    assert_eq!(reserved(&process, "malloc_mmap"), blocks);
    assert_adds_up(&process);
}

/// The gin hello world (Debian's gin, cgo): the Go runtime's page-allocator index is
/// `go_runtime`, its arenas `go_heap`, the cgo threads' malloc arenas `malloc_arena`; the
/// terminal says so in words.
#[test]
fn a_go_server_by_the_runtime_and_glibc() {
    let dir = scratch("breakdown-gin");
    let (pid, text) = trace_gin_server(&dir);
    let out = dir.join("out");
    let report = read_json(&out.join("report.json"));
    let process = process(&report, u64::from(pid));
    assert_adds_up(process);
    // Idle at the end: the headline is the kernel's, and the sites and the folded stacks
    // hold all of it.
    let resident = process["resident_bytes"]["end"].as_u64().unwrap();
    let vm_rss = process["proc_check"]["vm_rss_bytes"].as_u64().unwrap();
    assert!(
        resident.abs_diff(vm_rss) <= 64 << 10,
        "{resident} vs {vm_rss}"
    );
    let by_sites = total(&process["sites"], "resident_bytes");
    let folded: u64 = fs::read_to_string(out.join("resident.folded"))
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!((by_sites, folded), (resident, resident));
    let sites: HashMap<u64, Vec<&str>> = process["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let names = s["stack"].as_array().unwrap();
            let names = names.iter().map(|f| f["function"].as_str().unwrap());
            (s["id"].as_u64().unwrap(), names.collect())
        })
        .collect();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for region in process["regions"].as_array().unwrap() {
        let stack = &sites[&region["site_id"].as_u64().unwrap()];
        let category = region["category"].as_str().unwrap();
        let size = region["reserved_bytes"].as_u64().unwrap();
        let through = |name: &str| stack.contains(&name);
        let want = if through("runtime.(*pageAlloc).sysInit") {
            "go_runtime"
        } else if stack
            .windows(2)
            .any(|w| w == ["runtime.sysReserve", "runtime.(*mheap).sysAlloc"])
        {
            "go_heap"
        } else if through("alloc_new_heap") {
            "malloc_arena"
        } else {
            continue;
        };
        assert_eq!(category, want, "{stack:?}");
        *seen.entry(want).or_default() += size;
    }
    assert!(seen["go_runtime"] >= 256 * MIB, "{seen:?}");
    assert!(seen["go_heap"] >= 32 * MIB, "{seen:?}");
    let arenas = reserved(process, "malloc_arena");
    assert!(arenas >= ARENA && arenas.is_multiple_of(ARENA), "{arenas}");
    for words in [
        "the Go runtime's own metadata",
        "glibc malloc's arenas for other threads",
        "the Go heap",
    ] {
        assert!(text.contains(words), "no “{words}” in:\n{text}");
    }
}

/// OpenJDK 17 with -Xmx2g: the Java heap's reservation is `jvm_heap`, exactly 2 GiB; the
/// class space `jvm_metaspace`; every Java thread's stack `thread_stack`.
#[test]
fn a_jvm_by_heap_metaspace_and_threads() {
    let dir = scratch("breakdown-jvm");
    fs::write(
        dir.join("Idle.java"),
        "public class Idle { public static void main(String[] a) throws Exception {\n\
         byte[][] keep = new byte[64][];\n\
         for (int i = 0; i < 64; i++) keep[i] = new byte[1 << 20];\n\
         Thread.sleep(60000); System.out.println(keep.length); } }\n",
    )
    .unwrap();
    run_ok(Command::new("javac").arg("Idle.java").current_dir(&dir));
    let classes = dir.to_str().unwrap();
    let mut stacks = Vec::new();
    let (process, text) = traced_for(
        "breakdown-jvm-run",
        "5",
        &["java", "-Xmx2g", "-cp", classes, "Idle"],
        |pid| stacks = thread_stack_pointers(pid),
    );
    assert_eq!(reserved(&process, "jvm_heap"), 2 << 30);
    // The compressed class space, 1 GiB by default, and the CDS archive mapped into it.
    assert!(reserved(&process, "jvm_metaspace") >= 1 << 30);
    assert!(reserved(&process, "jvm_code_cache") >= 48 * MIB);
    // Its 64 MiB of arrays are in the heap.
    assert!(breakdown(&process)["jvm_heap"][2] >= 64 * MIB);
    assert!(stacks.len() >= 8, "{stacks:?}");
    for sp in stacks {
        assert_eq!(category_at(&process, sp), "thread_stack", "{sp:#x}");
    }
    assert!(text.contains("the Java heap"), "{text}");
    assert_adds_up(&process);
}

/// node: V8's heap holds the objects a script made, and its code range is `v8_code`.
#[test]
fn node_by_v8_heap_and_code() {
    let dir = scratch("breakdown-node");
    let script = dir.join("objects.js");
    fs::write(
        &script,
        "const keep = [];\n\
         for (let i = 0; i < 400000; i++) keep.push({ n: i, s: 'x' + i });\n\
         setTimeout(() => console.log(keep.length), 60000);\n",
    )
    .unwrap();
    let (process, _) = traced_for(
        "breakdown-node-run",
        "4",
        &["node", script.to_str().unwrap()],
        |_| {},
    );
    let rows = breakdown(&process);
    // 400,000 objects and strings: tens of MiB of JavaScript heap.
    assert!(rows["v8_heap"][2] >= 16 * MIB, "{rows:?}");
    assert!(rows["v8_code"][0] >= 64 * MIB, "{rows:?}");
    assert_adds_up(&process);
}

/// CPython: small objects in obmalloc's arenas (`python_heap`), a large bytearray from
/// malloc (`malloc_mmap`).
#[test]
fn python_by_its_arenas_and_malloc() {
    let dir = scratch("breakdown-python");
    let script = dir.join("objects.py");
    fs::write(
        &script,
        "import time\n\
         keep = [str(i) * 3 for i in range(300000)]\n\
         big = bytearray(64 << 20)\n\
         time.sleep(60)\n",
    )
    .unwrap();
    // Debian's interpreter, whatever else is first on PATH.
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .unwrap();
    let (process, _) = traced_for(
        "breakdown-python-run",
        "4",
        &[python, script.to_str().unwrap()],
        |_| {},
    );
    let rows = breakdown(&process);
    assert!(rows["python_heap"][2] >= 16 * MIB, "{rows:?}");
    assert!(rows["malloc_mmap"][2] >= 64 * MIB, "{rows:?}");
    assert_adds_up(&process);
}

/// Attached to the gin server already running, memprof has no stacks for what it mapped:
/// the shapes say the same as the stacks do when it is launched.
#[test]
fn a_go_server_attached_by_the_shape_of_its_memory() {
    let dir = scratch("breakdown-gin-attached");
    let gin = build_gin_server(&dir);
    let port = free_port();
    let mut server = Command::new(&gin)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let pid = server.id().to_string();
    let report = json_report(
        "breakdown-gin-attached-run",
        &["--pid", &pid, "--duration", "1"],
        &[],
    );
    server.kill().unwrap();
    server.wait().unwrap();
    let process = &report["processes"][0];
    assert_adds_up(process);
    assert!(
        reserved(process, "go_runtime") >= 256 * MIB,
        "{:?}",
        breakdown(process)
    );
    assert!(
        reserved(process, "go_heap") >= 32 * MIB,
        "{:?}",
        breakdown(process)
    );
    let arenas = reserved(process, "malloc_arena");
    assert!(arenas >= ARENA && arenas.is_multiple_of(ARENA), "{arenas}");
    assert!(
        reserved(process, "thread_stack") >= 8 * MIB,
        "{:?}",
        breakdown(process)
    );
    assert_eq!(reserved(process, "other"), 0, "{:?}", breakdown(process));
}
