//! The pprof profile resolves by address, read back with `go tool pprof`: its mappings are
//! the launched program's own regions (as its /proc/self/maps lists them) with the build IDs
//! readelf reads, and every location lies in its mapping.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{
    fs,
    io::Read as _,
    path::Path,
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use memprof::{export::proto, procfs::parse_maps};
use prost::Message as _;
use support::*;

/// Reserves 64 MiB through malloc (glibc maps it), from code inlined into the function that
/// calls it, then copies its /proc/self/maps to the file named by its argument.
const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline __attribute__((always_inline)) char *memprof_pprof_inlined(size_t size) {
    return malloc(size);
}

__attribute__((noinline)) char *memprof_pprof_reserve(size_t size) {
    char *p = memprof_pprof_inlined(size);
    memset(p, 1, size / 2);
    return p;
}

int main(int argc, char **argv) {
    char *p = memprof_pprof_reserve(64 << 20);
    FILE *in = fopen("/proc/self/maps", "r"), *out = fopen(argv[argc - 1], "w");
    char line[4096];
    while (fgets(line, sizeof line, in))
        fputs(line, out);
    fclose(out);
    return p[0] - 1;
}
"#;

/// A mapping as `go tool pprof -raw` prints it: `ID: 0xSTART/0xLIMIT/0xOFFSET FILE BUILDID`.
#[derive(Debug, PartialEq)]
struct RawMapping {
    id: u64,
    start: u64,
    limit: u64,
    offset: u64,
    file: String,
    build_id: String,
}

/// A location as `-raw` prints it: its address, mapping and function names, innermost first.
#[derive(Debug)]
struct RawLocation {
    address: u64,
    mapping: Option<u64>,
    functions: Vec<String>,
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("hex {s}"))
}

/// The lines of `raw` between the line `from` and the next section header.
fn section<'a>(raw: &'a str, from: &str) -> impl Iterator<Item = &'a str> {
    raw.lines()
        .skip_while(move |l| *l != from)
        .skip(1)
        .take_while(|l| !matches!(*l, "Locations" | "Mappings"))
}

fn raw_mappings(raw: &str) -> Vec<RawMapping> {
    section(raw, "Mappings")
        .map(|line| {
            let (id, rest) = line.split_once(": ").unwrap();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let range: Vec<u64> = fields[0].split('/').map(hex).collect();
            RawMapping {
                id: id.trim().parse().unwrap(),
                start: range[0],
                limit: range[1],
                offset: range[2],
                file: fields[1].to_string(),
                // "[FN]…" when the build ID is empty.
                build_id: fields
                    .get(2)
                    .filter(|f| !f.starts_with('['))
                    .map_or_else(String::new, |f| (*f).to_string()),
            }
        })
        .collect()
}

fn raw_locations(raw: &str) -> Vec<RawLocation> {
    let mut locations: Vec<RawLocation> = Vec::new();
    for line in section(raw, "Locations") {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields[0].ends_with(':') {
            let mapping = fields[2].strip_prefix("M=").map(|m| m.parse().unwrap());
            let name = fields[if mapping.is_some() { 3 } else { 2 }];
            locations.push(RawLocation {
                address: hex(fields[1]),
                mapping,
                functions: vec![name.to_string()],
            });
        } else {
            // An inlined call's caller: another line of the same location.
            let last = locations.last_mut().expect("a line after its location");
            last.functions.push(fields[0].to_string());
        }
    }
    locations
}

/// The GNU build ID of `file` as readelf reads it.
fn readelf_build_id(file: &str) -> String {
    let out = run_ok(Command::new("readelf").args(["-n", file]));
    let notes = String::from_utf8_lossy(&out.stdout).into_owned();
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("no build ID in {file}:\n{notes}"))
        .to_string()
}

fn decode(profile: &Path) -> proto::Profile {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(profile).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    proto::Profile::decode(bytes.as_slice()).unwrap()
}

fn unix_ns() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_nanos()).unwrap()
}

#[test]
fn a_launched_programs_profile_resolves_by_address() {
    let dir = scratch("pprof");
    let program = build_c(&dir, "pprof-c", C_PROGRAM, &["-O2", "-g"]);
    let program = program.to_str().unwrap();
    let maps_file = dir.join("maps");
    let out = dir.join("out");
    let before = unix_ns();
    run_ok(
        memprof()
            .args(["run", "--output"])
            .arg(&out)
            .args(["--", program])
            .arg(&maps_file),
    );
    let after = unix_ns();
    let profile = out.join("profile.pb.gz");
    let raw = go_tool_pprof(&["-raw"], &profile);

    // Mappings: the program first; each the very region its /proc/self/maps listed, with
    // the build ID in its file.
    let mappings = raw_mappings(&raw);
    assert_eq!(
        mappings.first().map(|m| m.file.as_str()),
        Some(program),
        "{raw}"
    );
    let maps = parse_maps(&fs::read_to_string(&maps_file).unwrap());
    for m in &mappings {
        assert!(m.start < m.limit, "{m:?} has no range");
        let region = maps
            .iter()
            .find(|e| e.start == m.start && e.path.as_deref() == Some(m.file.as_str()));
        let region = region.unwrap_or_else(|| panic!("{m:?} is no region of the program"));
        assert_eq!((region.end, region.offset), (m.limit, m.offset), "{m:?}");
        assert!(region.perms.exec, "{m:?} is not code");
        assert_eq!(m.build_id, readelf_build_id(&m.file), "{m:?}");
    }
    assert!(mappings.iter().any(|m| m.file.contains("libc.so")), "{raw}");

    // Locations: each in its mapping; the inlined call and its caller one location.
    let locations = raw_locations(&raw);
    for l in &locations {
        let Some(id) = l.mapping else { continue };
        let m = mappings.iter().find(|m| m.id == id).expect("its mapping");
        assert!(
            (m.start..m.limit).contains(&l.address),
            "{l:?} outside {m:?}"
        );
    }
    assert!(
        locations.iter().any(
            |l| l.functions == ["memprof_pprof_inlined", "memprof_pprof_reserve"]
                && l.mapping == Some(mappings[0].id)
        ),
        "no location with the inlined call:\n{raw}"
    );

    // Only what was recorded, labelled by process; the time and what was lost.
    assert!(
        raw.contains("\nreserved/bytes[dflt] resident/bytes\n"),
        "{raw}"
    );
    assert!(raw.contains("comm:[pprof-c]"), "{raw}");
    assert!(raw.contains("pid:["), "{raw}");
    assert!(raw.contains("Comment: lost events: 0"), "{raw}");
    let decoded = decode(&profile);
    assert!(
        (before..after).contains(&decoded.time_nanos),
        "time {} not within the run ({before}..{after})",
        decoded.time_nanos
    );
    assert!(decoded.duration_nanos > 0 && decoded.duration_nanos < after - before);

    // `-top` names the program, and past malloc and mmap (drop_frames) the program's own
    // function reserved most.
    let top = go_tool_pprof(&["-top", "-sample_index=reserved"], &profile);
    assert!(top.contains("File: pprof-c\n"), "{top}");
    let first_row = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_default();
    assert!(first_row.contains("memprof_pprof_"), "{top}");
}
