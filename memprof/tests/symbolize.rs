//! Symbolization of programs built here: C with DWARF and inlined functions (gcc), and Go
//! (Debian's golang-go). `cargo xtask setup` installs the compilers.
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
mod support;

use std::{path::Path, process::Command};

use memprof::{
    procfs::parse_maps,
    symbolize::{Frame, Location, Symbolizer},
};
use support::{build_c, scratch};

/// The stdout of a command that must succeed; `missing` says how to get the program.
fn run(cmd: &mut Command, what: &str, missing: &str) -> String {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!("{missing}"),
        Err(err) => panic!("{what}: {err}"),
    };
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a test program that prints a function's address (hex) on its first line and the
/// /proc/self/maps line containing it on its second; returns (address, path, file offset).
fn locate_in_program(program: &Path) -> (u64, String, u64) {
    let out = run(
        &mut Command::new(program),
        "test program",
        "test program missing",
    );
    let mut lines = out.lines();
    let address = u64::from_str_radix(lines.next().expect("address line").trim(), 16).unwrap();
    let entry = parse_maps(lines.next().expect("maps line")).remove(0);
    let path = entry.path.expect("a file mapping");
    (address, path, address - entry.start + entry.offset)
}

const C_PRINT_SELF: &str = r#"
static void print_self(unsigned long a) {
    printf("%lx\n", a);
    FILE *f = fopen("/proc/self/maps", "r");
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && a >= s && a < e)
            fputs(line, stdout);
    }
}
"#;

#[test]
fn symbolize_c_program_with_dwarf() {
    let dir = scratch("symbolize-c");
    // memprof_c_known is on line 3.
    let source = format!(
        "#include <stdio.h>\nvolatile int memprof_c_sink;\nvoid memprof_c_known(void) {{\n    memprof_c_sink++;\n}}\n{C_PRINT_SELF}\nint main(void) {{ memprof_c_known(); print_self((unsigned long)&memprof_c_known); return 0; }}\n"
    );
    let exe = build_c(&dir, "known", &source, &["-g", "-O0"]);
    let (address, path, file_offset) = locate_in_program(&exe);
    assert_eq!(Path::new(&path), exe.as_path());

    let location = Location::Module {
        path: &path,
        file_offset,
    };
    let frames = Symbolizer::new().symbolize(address, location).to_vec();
    assert_eq!(frames.len(), 1, "{frames:#?}");
    assert_eq!(frames[0].function, "memprof_c_known");
    assert!(
        frames[0].file.as_deref().unwrap_or("").ends_with("known.c"),
        "{frames:#?}"
    );
    assert_eq!(frames[0].line, Some(3), "{frames:#?}");
    assert_eq!(frames[0].module_offset, file_offset);
}

#[test]
fn symbolize_c_inlined_innermost_first() {
    let dir = scratch("symbolize-c-inline");
    let source = format!(
        r#"#include <stdio.h>
__attribute__((noinline)) void memprof_c_sink(int v) {{ static volatile int s; s = v; }}
static inline __attribute__((always_inline)) void memprof_c_inner(int v) {{
    memprof_c_sink(v * 7);
    memprof_c_sink(v + 1);
}}
__attribute__((noinline)) void memprof_c_outer(int v) {{
    memprof_c_sink(v - 5);
    memprof_c_inner(v);
    memprof_c_sink(v);
}}
{C_PRINT_SELF}
int main(int argc, char **argv) {{ (void)argv; memprof_c_outer(argc); print_self((unsigned long)&memprof_c_outer); return 0; }}
"#
    );
    let exe = build_c(&dir, "known", &source, &["-g", "-O2"]);
    let (address, path, file_offset) = locate_in_program(&exe);

    let mut symbolizer = Symbolizer::new();
    let all: Vec<Vec<Frame>> = (0..64)
        .map(|d| {
            let location = Location::Module {
                path: &path,
                file_offset: file_offset + d,
            };
            symbolizer.symbolize(address + d, location).to_vec()
        })
        .collect();
    let inlined = all
        .iter()
        .find(|frames| frames.len() == 2)
        .unwrap_or_else(|| panic!("no inlined frame in memprof_c_outer: {all:#?}"));
    assert_eq!(inlined[0].function, "memprof_c_inner", "{inlined:#?}");
    assert_eq!(inlined[1].function, "memprof_c_outer", "{inlined:#?}");
    // The inner frame is inside memprof_c_inner (lines 4-5), the outer one at its call
    // (line 9).
    assert!(matches!(inlined[0].line, Some(4 | 5)), "{inlined:#?}");
    assert_eq!(inlined[1].line, Some(9), "{inlined:#?}");
    // Marked so, for pprof: the inner frame stands for the same address as the outer.
    assert!(inlined[0].inlined && !inlined[1].inlined, "{inlined:#?}");
    assert_eq!(all[0].last().unwrap().function, "memprof_c_outer");
}

#[test]
fn symbolize_go_program() {
    let dir = scratch("symbolize-go");
    std::fs::write(dir.join("go.mod"), "module x\n\ngo 1.19\n").unwrap();
    std::fs::write(
        dir.join("main.go"),
        r#"package main

import (
	"bufio"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
)

var sink int

//go:noinline
func knownGoFunc() {
	sink++
}

func main() {
	knownGoFunc()
	addr := uint64(reflect.ValueOf(knownGoFunc).Pointer())
	fmt.Printf("%x\n", addr)
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		panic(err)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		r := strings.SplitN(strings.Fields(line)[0], "-", 2)
		s, _ := strconv.ParseUint(r[0], 16, 64)
		e, _ := strconv.ParseUint(r[1], 16, 64)
		if addr >= s && addr < e {
			fmt.Println(line)
		}
	}
}
"#,
    )
    .unwrap();
    let exe = dir.join("gobin");
    run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&exe)
            .arg(".")
            .current_dir(&dir)
            .env("GOCACHE", dir.join("gocache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", "0"),
        "go build",
        "`go` not found: `cargo xtask setup` installs golang-go (Debian package)",
    );
    let (address, path, file_offset) = locate_in_program(&exe);

    let mut symbolizer = Symbolizer::new();
    let location = Location::Module {
        path: &path,
        file_offset,
    };
    let frames = symbolizer.symbolize(address, location).to_vec();
    let known = frames.last().unwrap();
    assert_eq!(known.function, "main.knownGoFunc", "{frames:#?}");
    // Go's DWARF (zlib-compressed sections) gives the source position.
    assert!(
        known.file.as_deref().unwrap_or("").ends_with("main.go"),
        "{frames:#?}"
    );
    assert!(matches!(known.line, Some(15 | 16)), "{frames:#?}");

    // The runtime resolves too: find runtime.mallocgc with binutils' nm. The binary is
    // not PIE, so symbol values are run-time addresses in the same text mapping.
    let nm = run(
        Command::new("nm").arg(&exe),
        "nm",
        "nm not found: `cargo xtask setup` installs binutils",
    );
    let mallocgc = nm
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let value = fields.next()?;
            let _kind = fields.next()?;
            (fields.next()? == "runtime.mallocgc").then(|| u64::from_str_radix(value, 16))
        })
        .expect("runtime.mallocgc in nm output")
        .unwrap();
    let mallocgc_offset = mallocgc + file_offset - address;
    let location = Location::Module {
        path: &path,
        file_offset: mallocgc_offset + 0x10,
    };
    let frames = symbolizer.symbolize(mallocgc + 0x10, location).to_vec();
    let last = frames.last().unwrap();
    assert_eq!(last.function, "runtime.mallocgc", "{frames:#?}");
    assert!(
        last.file.as_deref().unwrap_or("").ends_with("malloc.go"),
        "{frames:#?}"
    );
}
