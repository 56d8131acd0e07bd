//! Full call stacks on real software: a C program built without frame pointers, a frame
//! pointer planted into the heap, Debian's redis-server (with jemalloc) under
//! redis-benchmark, a Go web server built with cgo, and JavaScript functions named from
//! node's perf map. Each checks the stacks' frames and the bytes charged to them.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use serde_json::Value;
use support::*;

/// A C program whose named functions reserve through malloc, calloc and pthread_create, one
/// that calls mmap through a frame whose frame pointer points at a heap address, and a
/// thread whose first malloc makes glibc a new arena. It prints, as JSON, the bytes each
/// reserved, then waits a little (for its maps to be read).
const C_PROGRAM: &str = r#"
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

/* The size of the mapping /proc/self/maps shows around `p` (neighbours with the same
   permissions show as one). */
static unsigned long mapping_size(const void *p) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned long s, e, a = (unsigned long)p, size = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && a >= s && a < e) size = e - s;
    fclose(f);
    return size;
}

__attribute__((noinline)) void *memprof_c_big_malloc(void) {
    void *p = malloc(48 << 20);
    memset(p, 1, 1 << 20);
    return p;
}

__attribute__((noinline)) void *memprof_c_calloc(void) { return calloc(24, 1 << 20); }

static void *arena_block;

__attribute__((noinline)) void *memprof_c_thread_main(void *arg) {
    arena_block = malloc(1000);
    return arg;
}

__attribute__((noinline)) size_t memprof_c_start_thread(pthread_t *thread) {
    pthread_attr_t attr;
    size_t guard;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 4 << 20);
    pthread_attr_getguardsize(&attr, &guard);
    pthread_create(thread, &attr, memprof_c_thread_main, NULL);
    return guard;
}

/* Maps 1 MiB with protection `prot`: the two planted cases differ in it, so that their
   mappings stay apart. */
__attribute__((noinline)) void *memprof_c_planted_mmap(int prot) {
    void *p = mmap(0, 1 << 20, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    __asm__ volatile("" ::: "memory");
    return p;
}

/* No unwind table for this one: unwinders fall back to its frame pointer, which it points at
   a made-up frame whose return address is a heap address. */
void *memprof_c_planted(uint64_t *frame, int prot);
__asm__(".text\n.globl memprof_c_planted\n.type memprof_c_planted, @function\n"
        "memprof_c_planted:\n push %rbp\n mov %rdi, %rbp\n mov %esi, %edi\n"
        " call memprof_c_planted_mmap\n"
        " pop %rbp\n ret\n.size memprof_c_planted, .-memprof_c_planted\n");

/* The same, in code whose unwind table says what a frame-pointer build's would: the caller's
   frame is where the frame pointer points. The table leads into the heap. */
void *memprof_c_planted_cfi(uint64_t *frame, int prot);
__asm__(".text\n.globl memprof_c_planted_cfi\n.type memprof_c_planted_cfi, @function\n"
        "memprof_c_planted_cfi:\n .cfi_startproc\n push %rbp\n .cfi_def_cfa_offset 16\n"
        " .cfi_offset %rbp, -16\n mov %rdi, %rbp\n .cfi_def_cfa_register %rbp\n mov %esi, %edi\n"
        " call memprof_c_planted_mmap\n pop %rbp\n .cfi_def_cfa %rsp, 8\n ret\n"
        " .cfi_endproc\n.size memprof_c_planted_cfi, .-memprof_c_planted_cfi\n");

/* The bytes glibc maps for a block it maps on its own: the block, and its header. */
static unsigned long mapped(void *block) { return malloc_usable_size(block) + 16; }

int main(void) {
    /* glibc sets up its heap on the first malloc: here, not in the functions below (through
       a volatile, or the compiler drops the pair). */
    void *volatile warm = malloc(1);
    free(warm);
    void *big = memprof_c_big_malloc();
    void *zeroed = memprof_c_calloc();
    pthread_t thread;
    size_t guard = memprof_c_start_thread(&thread);
    pthread_join(thread, NULL);
    void *heap = malloc(64);
    uint64_t frame[2] = {0, (uint64_t)heap};
    void *planted = memprof_c_planted(frame, PROT_READ | PROT_WRITE);
    void *planted_cfi = memprof_c_planted_cfi(frame, PROT_READ);
    printf("{\"big\":%lu,\"calloc\":%lu,\"thread\":%lu,\"planted\":%lu,"
           "\"planted_cfi\":%lu,\"heap\":%lu}\n",
           mapped(big), mapped(zeroed), (4ul << 20) + guard, mapping_size(planted),
           mapping_size(planted_cfi), (unsigned long)heap);
    fflush(stdout);
    usleep(300000);
    return arena_block == NULL;
}
"#;

/// glibc's arenas for threads reserve this much each (HEAP_MAX_SIZE on 64-bit).
const ARENA: u64 = 64 * MIB;

fn build_stacks_program(dir: &Path) -> PathBuf {
    let flags = [
        "-O2",
        "-g",
        "-fomit-frame-pointer",
        "-fno-optimize-sibling-calls",
        "-pthread",
    ];
    build_c(dir, "stacks", C_PROGRAM, &flags)
}

/// The folded lines (root first) whose stack names `function`, with their counts.
fn folded_lines<'a>(folded: &'a str, function: &str) -> Vec<(&'a str, u64)> {
    folded
        .lines()
        .filter(|l| l.split(';').any(|frame| frame.starts_with(function)))
        .map(|l| {
            let (stack, count) = l.rsplit_once(' ').unwrap();
            (stack, count.parse().unwrap())
        })
        .collect()
}

/// Code built without frame pointers: each named function is charged exactly the bytes it
/// reserved, on stacks that reach the program's or the thread's entry point; a frame
/// pointer into the heap, in code without unwind tables, puts no heap address in a stack.
#[test]
fn code_without_frame_pointers_is_charged_on_complete_stacks() {
    let dir = scratch("stacks-c");
    let exe = build_stacks_program(&dir);
    let out = dir.join("out");
    let run = run_ok(
        memprof()
            .args(["run", "--output"])
            .arg(&out)
            .arg("--")
            .arg(&exe),
    );
    let printed = String::from_utf8_lossy(&run.stdout);
    let line = printed
        .lines()
        .find(|l| l.starts_with("{\"big\""))
        .unwrap_or_else(|| panic!("the program printed no sizes:\n{printed}"));
    let sizes: Value = serde_json::from_str(line).unwrap();
    let size = |name: &str| sizes[name].as_u64().unwrap();
    let reserved = fs::read_to_string(out.join("reserved.folded")).unwrap();
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["lost_events"], 0);

    let charged = |function: &str, entry: &str| -> u64 {
        let lines = folded_lines(&reserved, function);
        assert!(!lines.is_empty(), "no stack names {function}:\n{reserved}");
        for (stack, _) in &lines {
            assert!(
                stack.contains(entry),
                "{function}'s stack does not reach {entry}: {stack}"
            );
        }
        lines.iter().map(|(_, bytes)| bytes).sum()
    };
    assert_eq!(charged("memprof_c_big_malloc", "main"), size("big"));
    assert_eq!(charged("memprof_c_calloc", "main"), size("calloc"));
    assert_eq!(charged("memprof_c_start_thread", "main"), size("thread"));
    assert_eq!(charged("memprof_c_thread_main", "start_thread"), ARENA);
    for function in ["memprof_c_big_malloc", "memprof_c_calloc"] {
        for (stack, _) in folded_lines(&reserved, function) {
            assert!(stack.starts_with("_start;"), "{stack}");
        }
    }

    // The planted frame pointer leads nowhere (a heap address is no return address). Where
    // no table describes the function, imitating its code to its `ret` finds its real caller;
    // where a table follows the frame pointer, the stack ends there, marked truncated.
    let planted_cfi = folded_lines(&reserved, "memprof_c_planted_cfi");
    let planted: Vec<_> = folded_lines(&reserved, "memprof_c_planted")
        .into_iter()
        .filter(|(stack, _)| !stack.contains("memprof_c_planted_cfi"))
        .collect();
    let sum = |lines: &[(&str, u64)]| lines.iter().map(|(_, bytes)| bytes).sum::<u64>();
    assert_eq!(sum(&planted), size("planted"), "{reserved}");
    assert_eq!(sum(&planted_cfi), size("planted_cfi"), "{reserved}");
    let heap = format!("{:#x}", size("heap"));
    assert!(
        !reserved.contains(&heap),
        "a heap address is a frame:\n{reserved}"
    );
    for (stack, _) in &planted {
        assert!(stack.contains(";main;memprof_c_planted;"), "{stack}");
        assert!(!stack.contains("[unknown]"), "{stack}");
    }
    for (stack, _) in &planted_cfi {
        assert!(stack.starts_with("memprof_c_planted_cfi;"), "{stack}");
    }
    let sites = report["processes"][0]["sites"].as_array().unwrap();
    let site = |function: &str| {
        sites
            .iter()
            .find(|s| names(s).iter().any(|n| n == function))
            .unwrap_or_else(|| panic!("no site names {function}"))
    };
    assert_eq!(site("memprof_c_planted")["truncated"], false);
    assert_eq!(site("memprof_c_planted_cfi")["truncated"], true);
    assert_eq!(site("memprof_c_big_malloc")["truncated"], false);
}

/// The function names of a JSON site's stack.
fn names(site: &Value) -> Vec<String> {
    site["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["function"].as_str().unwrap().to_string())
        .collect()
}

/// Of the bytes reserved while traced (every site but the regions mapped before), the share
/// on stacks that reach an entry point.
fn complete_share(process: &Value) -> f64 {
    let sites = process["sites"].as_array().unwrap();
    let traced = sites
        .iter()
        .filter(|s| names(s) != ["[mapped before tracing]"])
        .map(|s| s["reserved_bytes"].as_u64().unwrap() + s["released_bytes"].as_u64().unwrap());
    let complete = sites
        .iter()
        .filter(|s| names(s) != ["[mapped before tracing]"] && s["truncated"] == false)
        .map(|s| s["reserved_bytes"].as_u64().unwrap() + s["released_bytes"].as_u64().unwrap());
    let (traced, complete): (u64, u64) = (traced.sum(), complete.sum());
    assert!(traced > 0, "nothing reserved while traced");
    complete as f64 / traced as f64
}

fn redis_benchmark(port: u16) {
    run_ok(
        Command::new("redis-benchmark")
            .args(["-p", &port.to_string(), "-q", "-n", "20000", "-d", "2000"])
            .args(["-t", "set,lpush,get", "-r", "100000"]),
    );
}

fn kill(child: &mut Child) {
    signal(child, libc::SIGTERM);
    let _ = child.wait();
}

/// The process of `report` running `program`, and its reserved folded stacks.
fn traced<'a>(report: &'a Value, program: &str) -> &'a Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["command"].as_str().unwrap().contains(program))
        .unwrap_or_else(|| panic!("no {program} in the report"))
}

/// Debian's redis-server (built without frame pointers, with the system's jemalloc) under
/// redis-benchmark, launched by memprof: the memory it reserves is on complete stacks that
/// name redis and jemalloc.
#[test]
fn redis_launched_is_charged_on_complete_stacks() {
    let dir = scratch("stacks-redis");
    let port = free_port();
    let out = dir.join("out");
    let mut memprof = memprof()
        .args(["run", "--output"])
        .arg(&out)
        .args(["--", "redis-server", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (pid, _stderr) = wait_until_tracing(&mut memprof);
    wait_for_port(port);
    redis_benchmark(port);
    // SAFETY: signalling the redis-server memprof launched.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(memprof.wait().unwrap().success());
    let report = read_json(&out.join("report.json"));
    assert_eq!(report["lost_events"], 0);
    let redis = traced(&report, "redis-server");
    let share = complete_share(redis);
    assert!(share >= 0.95, "{:.1}% on complete stacks", share * 100.0);
    let reserved = fs::read_to_string(out.join("reserved.folded")).unwrap();
    assert!(reserved.contains("zmalloc"), "no redis frame:\n{reserved}");
    let modules: Vec<&str> = redis["sites"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["stack"].as_array().unwrap())
        .filter_map(|f| f["module"].as_str())
        .collect();
    assert!(
        modules.iter().any(|m| m.contains("libjemalloc")),
        "no jemalloc frame: {modules:?}"
    );
}

/// The same, attached to a redis-server that runs already.
#[test]
fn redis_attached_is_charged_on_complete_stacks() {
    let dir = scratch("stacks-redis-attach");
    let port = free_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let json = dir.join("report.json");
    let mut memprof = memprof()
        .args(["run", "--pid", &redis.id().to_string(), "--json"])
        .arg(&json)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stderr = wait_until_tracing(&mut memprof);
    redis_benchmark(port);
    signal(&memprof, libc::SIGINT);
    assert!(memprof.wait().unwrap().success());
    kill(&mut redis);
    let report = read_json(&json);
    assert_eq!(report["lost_events"], 0);
    let share = complete_share(traced(&report, "redis-server"));
    assert!(share >= 0.95, "{:.1}% on complete stacks", share * 100.0);
}

/// The gin "hello world" built with cgo (Debian's gin, GOPATH mode): the Go runtime's
/// reservations are named by the runtime functions that explain them, and glibc's arenas
/// and thread stacks of the cgo threads are on complete stacks.
#[test]
fn a_go_server_with_cgo_is_charged_on_complete_stacks() {
    let dir = scratch("stacks-gin");
    let (_, text) = trace_gin_server(&dir);
    let out = dir.join("out");
    assert!(
        text.contains("runtime.(*pageAlloc).sysInit"),
        "the report does not name the page allocator's reservation:\n{text}"
    );
    let report = read_json(&out.join("report.json"));
    let sites = traced(&report, "gin-hello")["sites"].as_array().unwrap();
    let through = |function: &str| {
        sites
            .iter()
            .filter(|s| names(s).iter().any(|n| n.contains(function)))
            .collect::<Vec<_>>()
    };
    // The Go runtime's own reservations reach its entry point.
    let page_alloc = through("runtime.(*pageAlloc).sysInit");
    assert!(!page_alloc.is_empty());
    for site in page_alloc {
        assert_eq!(site["truncated"], false, "{:?}", names(site));
    }
    // glibc's arenas of the cgo threads, made from cgo's C code (no unwind tables in a Go
    // binary linked internally), reach the threads' entry point.
    let arenas = through("new_heap");
    assert!(!arenas.is_empty(), "no site reserves an arena");
    for site in arenas {
        assert_eq!(site["truncated"], false, "{:?}", names(site));
        assert!(names(site).iter().any(|n| n == "start_thread"));
    }
    // The cgo threads' stacks, made from cgo's C code called through `asmcgocall` (whose
    // tables Go's linker writes wrong), reach the start of the thread's system stack.
    let thread_stacks = through("allocate_stack");
    assert!(!thread_stacks.is_empty(), "no site reserves a thread stack");
    for site in thread_stacks {
        assert_eq!(site["truncated"], false, "{:?}", names(site));
        assert!(
            names(site)
                .iter()
                .any(|n| n.starts_with("runtime.asmcgocall")),
            "{:?}",
            names(site)
        );
    }
}

/// node, with its perf map (`--perf-basic-prof`): the JavaScript functions that allocate
/// Buffers are named in the reserved flame graph.
#[test]
fn javascript_functions_are_named_from_the_perf_map() {
    let dir = scratch("stacks-node");
    let script = dir.join("alloc.js");
    // Holds its Buffers past the trace (node frees them when it exits).
    fs::write(
        &script,
        "function memprofAllocBig() { return Buffer.alloc(32 << 20); }\n\
         const keep = [];\n\
         for (let i = 0; i < 4; i++) keep.push(memprofAllocBig());\n\
         setTimeout(() => console.log(keep.length), 20000);\n",
    )
    .unwrap();
    let out = dir.join("out");
    let json = dir.join("report.json");
    // Not through a pipe: node would hold it open past memprof's end.
    let status = memprof()
        // node writes V8's logs where it runs.
        .current_dir(&dir)
        .args(["run", "--duration", "3", "--json"])
        .arg(&json)
        .arg("--output")
        .arg(&out)
        .args([
            "--",
            "node",
            "--perf-basic-prof",
            "--interpreted-frames-native-stack",
        ])
        .arg(&script)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let node = read_json(&json)["processes"][0]["pid"].as_u64().unwrap();
    // SAFETY: ending the node memprof launched, which outlives the trace.
    unsafe { libc::kill(node as i32, libc::SIGKILL) };
    let reserved = fs::read_to_string(out.join("reserved.folded")).unwrap();
    let named: u64 = reserved
        .lines()
        .filter(|l| l.contains("memprofAllocBig"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert!(named >= 4 * 32 * MIB, "{named} bytes named:\n{reserved}");
}

/// A command that exits before memprof could read its /proc (a few milliseconds): its
/// libraries are named from the paths the kernel sent with their mmaps, so its stacks unwind
/// and symbolize through them.
#[test]
fn a_short_lived_process_is_named_without_proc() {
    let json = scratch("stacks-short").join("report.json");
    run_ok(
        memprof()
            .args(["run", "--json"])
            .arg(&json)
            .args(["--", "ls", "/"]),
    );
    let report = read_json(&json);
    let ls = &report["processes"][0];
    let regions = ls["regions"].as_array().unwrap();
    let unnamed: Vec<&Value> = regions
        .iter()
        .filter(|r| r["kind"] == "file" && r["path"].is_null())
        .collect();
    assert!(
        unnamed.is_empty(),
        "file mappings without a path: {unnamed:#?}"
    );
    assert!(regions.iter().any(|r| {
        r["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("/libc.so.6"))
    }));
    for site in ls["sites"].as_array().unwrap() {
        let names = names(site);
        assert!(
            !names.iter().any(|n| n.starts_with("[unknown]")),
            "{names:?}"
        );
    }
}
