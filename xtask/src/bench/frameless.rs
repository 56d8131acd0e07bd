//! The frameless storm: a C program built without frame pointers, whose named functions
//! malloc and free a block large enough that glibc maps it (a mmap and a munmap every round),
//! so that memprof has to unwind each reservation with the binary's unwind tables. This
//! file holds its source, its build, and the check that memprof's stacks of it are complete.

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::show;

/// The function every round goes through: a complete stack of the storm names it.
pub(super) const ROUND_FUNCTION: &str = "memprof_frameless_round";

/// Rounds of the full storm.
const ROUNDS: f64 = 100_000.0;

/// How the bench builds it: no frame pointers, and no tail calls, which would take the
/// named functions' frames off the stack.
const CFLAGS: [&str; 3] = ["-O2", "-fomit-frame-pointer", "-fno-optimize-sibling-calls"];

/// Usage: `frameless ROUNDS`. Prints the workload's storm line.
const SOURCE: &str = r#"/* memprof's bench: the frameless storm (xtask/src/bench/frameless.rs). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define BLOCK (256 << 10)

static long page;

/* noipa: neither inlined nor cloned (a clone would be named memprof_frameless_*.constprop.0). */
__attribute__((noipa)) void memprof_frameless_touch(void)
{
    /* volatile: the compiler may drop a malloc whose block is only written. */
    volatile char *block = malloc(BLOCK);
    if (!block) {
        perror("malloc");
        exit(1);
    }
    /* One page, as the syscall storm: the storm measures the reservation and its stack, not
       page faults (the fault storm does). */
    block[page] = 1;
    free((void *)block);
}

__attribute__((noipa)) void memprof_frameless_round(void)
{
    memprof_frameless_touch();
}

int main(int argc, char **argv)
{
    char *end = "";
    long rounds = argc == 2 ? strtol(argv[1], &end, 10) : 0;
    if (argc != 2 || *end || rounds < 1) {
        fprintf(stderr, "usage: %s ROUNDS\n", argv[0]);
        return 2;
    }
    page = sysconf(_SC_PAGESIZE);
    /* A fixed threshold: glibc's dynamic one rises past the block at its first free, and
       later rounds would come from the heap without a mmap. */
    if (!mallopt(M_MMAP_THRESHOLD, 128 << 10)) {
        fprintf(stderr, "mallopt(M_MMAP_THRESHOLD) failed\n");
        return 1;
    }
    struct timespec start, stop;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < rounds; i++)
        memprof_frameless_round();
    clock_gettime(CLOCK_MONOTONIC, &stop);
    long long ns = (stop.tv_sec - start.tv_sec) * 1000000000LL + (stop.tv_nsec - start.tv_nsec);
    printf("{\"storm\":\"frameless\",\"elapsed_ns\":%lld}\n", ns);
    return 0;
}
"#;

/// The storm's rounds at `scale`, at least one (as the workload scales its storms).
pub(super) fn rounds(scale: f64) -> u64 {
    ((ROUNDS * scale) as u64).max(1)
}

/// Writes the source into `dir` and builds it there with gcc; the program's path.
pub(super) fn build(dir: &Path) -> Result<PathBuf> {
    let source = dir.join("frameless.c");
    let program = dir.join("frameless");
    fs::write(&source, SOURCE).with_context(|| format!("writing {}", source.display()))?;
    let mut gcc = Command::new("gcc");
    gcc.args(CFLAGS).arg("-o").arg(&program).arg(&source);
    let out = gcc
        .output()
        .with_context(|| format!("cannot run {}", show(&gcc)))?;
    ensure!(
        out.status.success(),
        "{} failed ({}):\n{}",
        show(&gcc),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(program)
}

/// Of the bytes a memprof report charges to sites, those whose stack is complete and goes
/// through [`ROUND_FUNCTION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StackShare {
    pub(super) complete_bytes: u64,
    pub(super) bytes: u64,
}

impl StackShare {
    /// In percent; None when no byte was charged.
    pub(super) fn percent(self) -> Option<f64> {
        (self.bytes > 0).then(|| self.complete_bytes as f64 * 100.0 / self.bytes as f64)
    }
}

/// The share of a memprof JSON report (`memprof run --json`) of the storm. Every block is
/// freed, so a site's bytes are those it still holds plus those it released. The total is
/// every site's, the program's start-up (its binary, libraries, stack) too: a few hundred
/// KiB against the storm's 25 GiB.
pub(super) fn stack_share(report: &Value) -> Result<StackShare> {
    let mut share = StackShare {
        complete_bytes: 0,
        bytes: 0,
    };
    let processes = report["processes"]
        .as_array()
        .context("memprof's report has no processes")?;
    for process in processes {
        let sites = process["sites"]
            .as_array()
            .context("a process in memprof's report has no sites")?;
        for site in sites {
            let bytes = ["reserved_bytes", "released_bytes"]
                .iter()
                .map(|k| {
                    site[k]
                        .as_u64()
                        .with_context(|| format!("a site has no {k}"))
                })
                .sum::<Result<u64>>()?;
            let truncated = site["truncated"]
                .as_bool()
                .context("a site has no truncated")?;
            let stack = site["stack"].as_array().context("a site has no stack")?;
            let through_round = stack.iter().any(|f| f["function"] == ROUND_FUNCTION);
            share.bytes += bytes;
            if !truncated && through_round {
                share.complete_bytes += bytes;
            }
        }
    }
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rounds_scale_with_at_least_one() {
        assert_eq!(rounds(1.0), 100_000);
        assert_eq!(rounds(0.25), 25_000);
        assert_eq!(rounds(0.000_001), 1);
    }

    fn site(functions: &[&str], truncated: bool, reserved: u64, released: u64) -> Value {
        let stack: Vec<Value> = functions
            .iter()
            .map(|f| json!({"function": f, "module": null, "address": 0}))
            .collect();
        json!({
            "stack": stack, "truncated": truncated,
            "reserved_bytes": reserved, "released_bytes": released,
        })
    }

    #[test]
    fn share_of_complete_stacks_through_the_round() {
        let report = json!({"processes": [
            {"sites": [
                // Complete and through the round: counted.
                site(&["__mmap", "sysmalloc", "malloc", "memprof_frameless_touch",
                       ROUND_FUNCTION, "main", "__libc_start_call_main"], false, 0, 700),
                // Through the round but cut short.
                site(&["__mmap", "malloc", "memprof_frameless_touch", ROUND_FUNCTION],
                     true, 0, 100),
                // Complete, elsewhere (the dynamic loader), reserved at the end.
                site(&["__mmap", "_dl_map_object", "_dl_start"], false, 150, 0),
                // A placeholder is never truncated, and names no function of the storm.
                site(&["[stack not captured]"], false, 40, 10),
            ]},
            {"sites": [
                site(&["memprof_frameless_roundabout", "main"], false, 0, 0),
            ]},
        ]});
        let share = stack_share(&report).unwrap();
        assert_eq!(
            share,
            StackShare {
                complete_bytes: 700,
                bytes: 1000
            }
        );
        assert_eq!(share.percent(), Some(70.0));
        let empty = stack_share(&json!({"processes": []})).unwrap();
        assert_eq!(empty.percent(), None);
    }

    #[test]
    fn share_of_a_malformed_report() {
        let error = |report: Value| format!("{:#}", stack_share(&report).unwrap_err());
        assert!(error(json!({})).contains("no processes"));
        assert!(error(json!({"processes": [{}]})).contains("no sites"));
        let site = json!({"stack": [], "truncated": false, "reserved_bytes": 1});
        let report = json!({"processes": [{"sites": [site]}]});
        assert!(error(report).contains("no released_bytes"));
    }

    /// gcc builds the source without a word, and the program prints the storm line.
    #[test]
    fn builds_and_runs() {
        let dir = std::env::temp_dir().join(format!("memprof-frameless-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let program = build(&dir);
        let mut gcc = Command::new("gcc");
        gcc.args(CFLAGS)
            .args(["-Wall", "-Wextra", "-fsyntax-only"])
            .arg(dir.join("frameless.c"));
        let warnings = gcc.output().unwrap();
        let run = |args: &[&str]| Command::new(program.as_ref().unwrap()).args(args).output();
        let (ok, usage) = (run(&["3"]), run(&["3x"]));
        fs::remove_dir_all(&dir).unwrap();
        program.unwrap();
        assert_eq!(String::from_utf8_lossy(&warnings.stderr), "");
        let ok = ok.unwrap();
        assert!(ok.status.success());
        let line: Value = serde_json::from_slice(&ok.stdout).unwrap();
        assert_eq!(line["storm"], "frameless");
        assert!(line["elapsed_ns"].as_u64().unwrap() > 0);
        assert_eq!(usage.unwrap().status.code(), Some(2));
    }
}
