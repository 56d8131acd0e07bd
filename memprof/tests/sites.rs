//! Attribution: every reserved and resident byte charged to the call stack that made it,
//! checked on known functions, and the exports read back.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{fs, path::Path};

use support::*;

const PAGE: u64 = 4096;

/// Sum of the counts of the folded lines whose stack names `function`.
fn folded_total(dir: &Path, file: &str, function: &str) -> u64 {
    let text = fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .filter(|l| l.contains(function))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

fn assert_near(what: &str, value: u64, expected: u64, slack: u64) {
    assert!(
        value.abs_diff(expected) <= slack,
        "{what}: {value} vs {expected} (allowed ±{slack})"
    );
}

#[test]
fn bytes_and_faults_are_charged_to_the_functions_that_made_them() {
    charged_to_known_functions("sites", &["--fault-stacks"]);
}

/// With a one-slot stack map every stack but the first collides and is sent whole: the
/// figures must not change and no stack may be lost.
#[test]
fn stacks_that_collide_in_the_stack_map_are_sent_whole() {
    charged_to_known_functions("collide", &["--fault-stacks", "--stack-cache-slots", "1"]);
}

/// Without fault stacks: the same figures. The kernel sends a thread's faults on consecutive
/// pages as one event, with fault stacks when they have one stack too; a sampled fault
/// whose stack went out as a copy goes alone (`sampled_fault_stacks_estimate_a_million_faults`
/// sends most alone).
#[test]
fn faults_sent_in_runs_are_charged_as_faults_sent_alone() {
    charged_to_known_functions("runs", &[]);
}

fn charged_to_known_functions(name: &str, options: &[&str]) {
    let dir = scratch(name);
    let out = dir.join("out");
    run_ok(
        memprof()
            .arg("run")
            .args(options)
            .arg("--output")
            .arg(&out)
            .args(["--", WORKLOAD, "--sites", "--pause-ms", "50"]),
    );
    let report = read_json(&out.join("report.json"));
    for lost in ["lost_events", "lost_stacks", "stacks_over_budget"] {
        assert_eq!(report[lost], 0, "{lost}");
    }
    let total = |file, function| folded_total(&out, file, function);
    // Reserved: exactly what each function mapped, which called glibc's mmap itself.
    let reserved = fs::read_to_string(out.join("reserved.folded")).unwrap();
    assert_eq!(
        total("reserved.folded", "memprof_reserve_big"),
        256 * MIB,
        "{reserved}"
    );
    assert_eq!(
        total("reserved.folded", "memprof_reserve_and_touch"),
        16 * MIB
    );
    // Resident: charged to the site that reserved the memory, whoever touched it.
    let resident = |f| total("resident.folded", f);
    assert_near(
        "resident of memprof_reserve_big",
        resident("memprof_reserve_big"),
        32 * MIB,
        2 * PAGE,
    );
    assert_near(
        "resident of memprof_reserve_and_touch",
        resident("memprof_reserve_and_touch"),
        8 * MIB,
        2 * PAGE,
    );
    assert_eq!(
        resident("memprof_touch_known"),
        0,
        "touching does not reserve"
    );
    // Faults landing in each site's memory, one per page touched.
    let sites = report["processes"][0]["sites"].as_array().unwrap();
    let faults_in = |function: &str| -> u64 {
        sites
            .iter()
            .filter(|s| {
                let frames = s["stack"].as_array().unwrap();
                frames
                    .iter()
                    .any(|f| f["function"].as_str().unwrap().contains(function))
            })
            .map(|s| s["faults_in_regions"].as_u64().unwrap())
            .sum()
    };
    assert_near(
        "faults in memprof_reserve_big's memory",
        faults_in("memprof_reserve_big"),
        32 * MIB / PAGE,
        2,
    );
    assert_near(
        "faults in memprof_reserve_and_touch's memory",
        faults_in("memprof_reserve_and_touch"),
        8 * MIB / PAGE,
        2,
    );
    if options.contains(&"--fault-stacks") {
        // Faults by stack: charged to the code that touched.
        let faults = |f| total("faults.folded", f);
        assert_near(
            "faults in memprof_touch_known",
            faults("memprof_touch_known"),
            32 * MIB / PAGE,
            2,
        );
        assert_near(
            "faults in memprof_reserve_and_touch",
            faults("memprof_reserve_and_touch"),
            8 * MIB / PAGE,
            2,
        );
    }
    for svg in ["reserved.svg", "resident.svg"] {
        let text = fs::read_to_string(out.join(svg)).unwrap();
        assert!(
            text.starts_with("<?xml") && text.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(text.contains("memprof_reserve_big"), "{svg} lacks the site");
    }
    // `go tool pprof`, the reference reader, reads the profile and names the same functions.
    let profile = out.join("profile.pb.gz");
    let top = go_tool_pprof(&["-top", "-sample_index=reserved"], &profile);
    assert!(top.contains("Type: reserved"), "{top}");
    assert!(top.contains("memprof_reserve_big"), "{top}");
    let resident = go_tool_pprof(&["-top", "-sample_index=resident"], &profile);
    assert!(resident.contains("memprof_reserve_and_touch"), "{resident}");
    if options.contains(&"--fault-stacks") {
        let faults = go_tool_pprof(&["-top", "-sample_index=faults"], &profile);
        assert!(faults.contains("memprof_touch_known"), "{faults}");
    }
}

/// A Go program: its reserved flame graph shows the runtime reserving, and with fault stacks
/// the program's own code shows where it touched memory.
#[test]
fn go_runtime_reservations_and_the_programs_own_touches() {
    let dir = scratch("go-sites");
    let program = build_go_program(&dir);
    let out = dir.join("out");
    run_ok(
        memprof()
            .args(["run", "--fault-stacks", "--output"])
            .arg(&out)
            .arg("--")
            .arg(program),
    );
    let reserved = fs::read_to_string(out.join("reserved.folded")).unwrap();
    assert!(
        reserved
            .lines()
            .any(|l| l.contains("runtime.") && l.contains("sysAlloc")
                || l.contains("runtime.sysReserve")),
        "no Go runtime reservation in:\n{reserved}"
    );
    // main.main touches its 4 MiB slice: hundreds of faults (fewer than 1024 where the
    // runtime or a huge page got there first).
    let faults = folded_total(&out, "faults.folded", "main.main");
    assert!(faults > 256, "main.main made {faults} faults");
}

/// Sampled fault stacks: one in 100 recorded, scaled back up, within 5% of the exact count of
/// a million faults.
#[test]
fn sampled_fault_stacks_estimate_a_million_faults() {
    let report = json_report(
        "sampled",
        &["--fault-stacks", "--fault-sample", "100"],
        &[WORKLOAD, "--fault-rounds", "16", "--pause-ms", "0"],
    );
    assert_eq!(report["lost_events"], 0);
    assert_eq!(report["fault_sample"], 100);
    let sites = report["processes"][0]["sites"].as_array().unwrap();
    let names = |s: &serde_json::Value| -> Vec<String> {
        let frames = s["stack"].as_array().unwrap();
        frames
            .iter()
            .map(|f| f["function"].as_str().unwrap().to_string())
            .collect()
    };
    let storm = |s: &&serde_json::Value| names(s).iter().any(|f| f.contains("memprof_fault_storm"));
    // Exact: every fault in the region the storm reserved.
    let exact: u64 = sites
        .iter()
        .filter(storm)
        .map(|s| s["faults_in_regions"].as_u64().unwrap())
        .sum();
    assert!(exact >= 16 * 65536, "{exact} faults");
    let estimate: u64 = sites
        .iter()
        .filter(storm)
        .map(|s| s["faults_by_code"].as_u64().unwrap())
        .sum();
    let error = (estimate as f64 - exact as f64).abs() / exact as f64;
    assert!(
        error < 0.05,
        "estimate {estimate} vs exact {exact}: {:.1}% off",
        error * 100.0
    );
}

/// A stack seen again is the same site: 4,000 mmaps from one loop make one site, not 4,000.
#[test]
fn a_stack_seen_again_is_the_same_site() {
    let report = json_report(
        "same-site",
        &[],
        &[WORKLOAD, "--storm", "syscalls", "--scale", "0.02"],
    );
    let sites = report["processes"][0]["sites"].as_array().unwrap();
    let stacks: std::collections::BTreeSet<String> =
        sites.iter().map(|s| s["stack"].to_string()).collect();
    assert_eq!(stacks.len(), sites.len(), "a stack is listed twice");
    assert!(sites.len() < 100, "{} sites for a loop", sites.len());
}
