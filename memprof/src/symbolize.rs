//! Symbolization: turn captured instruction addresses into function names, source files
//! and lines.
//!
//! memprof records, at capture time, the module (file path of the mapping) and the file
//! offset of every user-space address (`address - region.start + region.file_offset`).
//! Symbolization therefore works on `(module path, file offset)` pairs and keeps working
//! after the traced process has exited. It reads the ELF files themselves with
//! [`blazesym`]: ELF symbol tables (`.symtab`, `.dynsym`), DWARF (embedded, `.dwp`, or
//! split debug info found through debug links / build ids under `/usr/lib/debug`) for
//! source lines and inlined functions, and demangles Rust and C++ names. Go binaries
//! resolve through their ELF symbol table and DWARF (`main.main`, `runtime.mallocgc`).
//!
//! Nothing is ever dropped: an address that cannot be named becomes one frame called
//! `basename+0xOFFSET` (module known) or `[unknown]+0xADDRESS` (anonymous memory, JIT).
//!
//! Results are memoized per `(module, file offset)`, so a stack seen a million times is
//! symbolized once; every later call is two hash lookups.
//!
//! Return addresses: every frame of a captured stack except a faulting leaf is the address
//! *after* a call instruction. For exact lines and inline frames, pass `file_offset - 1`
//! (and `address - 1`) for those frames; names are right either way except when the call
//! is the last instruction of a function (`noreturn` callees).
//!
//! The [`Symbolizer`] is not `Send` (blazesym keeps `Rc`/`RefCell` caches): create it on
//! the thread that symbolizes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Sym, Symbolized};
use serde::Serialize;

use crate::sites::CodeRegion;

/// One symbolized frame. An address can give several (inlined calls, innermost first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Frame {
    /// Demangled function name; `basename+0x1f3a` (file offset) when no symbol covers the
    /// address, `[unknown]+0xADDRESS` when the module is unknown.
    pub function: String,
    /// Path of the module (as given in [`Location::Module`]); `None` for
    /// [`Location::Unknown`].
    pub module: Option<String>,
    /// Source file (directory joined with file name as recorded in DWARF), when known.
    pub file: Option<String>,
    /// Source line, when known. For an inlined frame's caller this is the line of the call.
    pub line: Option<u32>,
    /// The address as captured in the traced process.
    pub address: u64,
    /// File offset of the address in `module` (0 for [`Location::Unknown`]).
    pub module_offset: u64,
    // What pprof needs to resolve a frame by address; not (yet) part of the JSON contract.
    /// The symbol's own name as the binary spells it (mangled), when it differs from
    /// `function`.
    #[serde(skip)]
    pub symbol: Option<String>,
    /// This frame was inlined into the next one: both stand for one address.
    #[serde(skip)]
    pub inlined: bool,
    /// The region of `module` that held the address when the stack was captured.
    #[serde(skip)]
    pub region: Option<CodeRegion>,
    /// The GNU build ID of `module` (hex), when it has one.
    #[serde(skip)]
    pub build_id: Option<Arc<str>>,
}

/// Where an address was: a known module and file offset, or nothing known (anonymous
/// memory, JIT code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location<'a> {
    /// The address lies in a file mapping: `path` is the mapped file, `file_offset` the
    /// offset of the address inside that file.
    Module { path: &'a str, file_offset: u64 },
    /// Code a runtime generated (JIT) in process `pid`: named from the map of its code the
    /// runtime writes for perf, `/tmp/perf-PID.map` (node `--perf-basic-prof`, the JDK's
    /// `jcmd PID Compiler.perfmap`), when it writes one.
    Jit { pid: u32 },
    /// No module is known for the address.
    Unknown,
}

/// What we know about one module (one path).
#[derive(Debug)]
struct ModuleCache {
    /// File name shown in fallback frames (`libc.so.6+0x1234`).
    basename: String,
    /// The file could not be opened or parsed: every offset falls back, without asking
    /// blazesym (and the file system) again.
    unreadable: bool,
    /// Its GNU build ID, read once (None: not yet read; Some(None): it has none).
    build_id: Option<Option<Arc<str>>>,
    /// Memo: file offset -> frames (innermost first).
    frames: HashMap<u64, Vec<Frame>>,
}

impl ModuleCache {
    fn new(path: &str) -> Self {
        // `/proc/PID/maps` marks files that were unlinked while mapped with " (deleted)":
        // whatever now sits at the path (if anything) is not the mapped file. Names in
        // brackets (`[vdso]`, `[heap]`, `[anon:...]`) are not files at all.
        let not_a_file = path.is_empty() || path.starts_with('[') || path.ends_with(" (deleted)");
        let shown = path.strip_suffix(" (deleted)").unwrap_or(path);
        let basename = Path::new(shown)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| shown.to_string());
        Self {
            basename,
            unreadable: not_a_file,
            build_id: None,
            frames: HashMap::new(),
        }
    }

    fn fallback(&self, path: &str, address: u64, file_offset: u64) -> Vec<Frame> {
        vec![Frame {
            function: format!("{}+{:#x}", self.basename, file_offset),
            module: Some(path.to_string()),
            address,
            module_offset: file_offset,
            ..Frame::default()
        }]
    }

    fn build_id(&mut self, path: &str) -> Option<Arc<str>> {
        let unreadable = self.unreadable;
        self.build_id
            .get_or_insert_with(|| {
                if unreadable {
                    None
                } else {
                    read_build_id(path)
                }
            })
            .clone()
    }
}

/// The GNU build ID note of the ELF file at `path`, in hex; reads only the headers and the
/// note, not the whole file.
fn read_build_id(path: &str) -> Option<Arc<str>> {
    use object::Object as _;
    let file = std::fs::File::open(path).ok()?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let id = elf.build_id().ok()??;
    Some(
        id.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into(),
    )
}

/// Symbolizes `(module, file offset)` pairs, caching parsed binaries and memoizing results.
#[derive(Debug)]
pub struct Symbolizer {
    inner: blazesym::symbolize::Symbolizer,
    modules: HashMap<String, ModuleCache>,
    /// Storage for the frame returned for [`Location::Unknown`] (not memoized).
    scratch: Vec<Frame>,
    /// Per process, its runtime's perf map: (start, end, name), sorted by start.
    perf_maps: HashMap<u32, Vec<(u64, u64, String)>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    /// A symbolizer using DWARF (lines, inlined functions) when present, ELF symbols
    /// otherwise, with Rust and C++ demangling.
    pub fn new() -> Self {
        let inner = blazesym::symbolize::Symbolizer::builder()
            // A binary is read once; later changes on disk (package upgrades) do not swap
            // the symbols under an open profile: the open file keeps the original inode.
            .enable_auto_reload(false)
            .enable_code_info(true)
            .enable_inlined_fns(true)
            // Demangled here, so that a frame keeps the symbol's own name too.
            .enable_demangling(false)
            .build();
        Self {
            inner,
            modules: HashMap::new(),
            scratch: Vec::with_capacity(1),
            perf_maps: HashMap::new(),
        }
    }

    /// Frames for one address: innermost (inlined) first, the function containing the
    /// address last. Never empty: a frame that cannot be named is kept as
    /// `basename+0xOFFSET` (or `[unknown]+0xADDRESS` for [`Location::Unknown`]).
    pub fn symbolize(&mut self, address: u64, location: Location<'_>) -> &[Frame] {
        let (path, file_offset) = match location {
            Location::Module { path, file_offset } => (path, file_offset),
            Location::Jit { pid } => {
                let map = self
                    .perf_maps
                    .entry(pid)
                    .or_insert_with(|| read_perf_map(pid));
                let i = map.partition_point(|&(start, _, _)| start <= address);
                let name = i
                    .checked_sub(1)
                    .map(|i| &map[i])
                    .filter(|&&(_, end, _)| address < end)
                    .map(|(_, _, name)| name.clone());
                return self.unknown(address, name);
            }
            Location::Unknown => return self.unknown(address, None),
        };
        let module = module_cache(&mut self.modules, path);
        if !module.frames.contains_key(&file_offset) {
            let mut resolved = resolve(&self.inner, module, path, &[(address, file_offset)]);
            let mut frames = resolved.pop().unwrap_or_default();
            let build_id = module.build_id(path);
            for frame in &mut frames {
                frame.build_id.clone_from(&build_id);
            }
            module.frames.insert(file_offset, frames);
        }
        let frames = module
            .frames
            .get_mut(&file_offset)
            .expect("memoized just above");
        // The same code is reached at different addresses in different processes (ASLR):
        // report the address asked about.
        for frame in frames.iter_mut() {
            frame.address = address;
        }
        frames
    }

    /// The frame of an address in no module: `name`, or `[unknown]+0xADDRESS`.
    fn unknown(&mut self, address: u64, name: Option<String>) -> &[Frame] {
        self.scratch.clear();
        self.scratch.push(Frame {
            function: name.unwrap_or_else(|| format!("[unknown]+{address:#x}")),
            address,
            ..Frame::default()
        });
        &self.scratch
    }

    /// Number of distinct `(module, file offset)` pairs memoized so far.
    #[cfg(test)]
    fn memoized(&self) -> usize {
        self.modules.values().map(|m| m.frames.len()).sum()
    }
}

/// Process `pid`'s perf map (`START SIZE name` per line, hexadecimal), sorted; empty when
/// its runtime wrote none.
fn read_perf_map(pid: u32) -> Vec<(u64, u64, String)> {
    let text = std::fs::read_to_string(format!("/tmp/perf-{pid}.map")).unwrap_or_default();
    let mut map: Vec<(u64, u64, String)> = text.lines().filter_map(parse_perf_map_line).collect();
    map.sort_unstable_by_key(|&(start, _, _)| start);
    map
}

fn parse_perf_map_line(line: &str) -> Option<(u64, u64, String)> {
    let mut fields = line.splitn(3, ' ');
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    let start = hex(fields.next()?)?;
    let size = hex(fields.next()?)?;
    let name = fields.next()?.trim();
    (!name.is_empty()).then(|| (start, start.saturating_add(size), name.to_string()))
}

fn module_cache<'m>(
    modules: &'m mut HashMap<String, ModuleCache>,
    path: &str,
) -> &'m mut ModuleCache {
    if !modules.contains_key(path) {
        modules.insert(path.to_string(), ModuleCache::new(path));
    }
    modules.get_mut(path).expect("inserted just above")
}

/// Resolves `(address, file_offset)` pairs of one module; one frame list per input.
fn resolve(
    inner: &blazesym::symbolize::Symbolizer,
    module: &mut ModuleCache,
    path: &str,
    addresses: &[(u64, u64)],
) -> Vec<Vec<Frame>> {
    let fallback_all = |module: &ModuleCache| {
        addresses
            .iter()
            .map(|&(address, offset)| module.fallback(path, address, offset))
            .collect()
    };
    if module.unreadable {
        return fallback_all(module);
    }
    let offsets: Vec<u64> = addresses.iter().map(|&(_, offset)| offset).collect();
    let with_debug = Source::Elf(Elf::new(path));
    let elf_only = Source::Elf({
        let mut elf = Elf::new(path);
        elf.debug_syms = false;
        elf
    });

    // Debug info (lines, inlined calls) when present, falling back to ELF symbols inside
    // blazesym; and the ELF symbol tables on their own, for public names (below).
    let with_debug = inner.symbolize(&with_debug, Input::FileOffset(&offsets));
    let elf_only = inner.symbolize(&elf_only, Input::FileOffset(&offsets));
    let (with_debug, elf_only) = match (with_debug, elf_only) {
        (Err(err), Err(_)) => {
            log::debug!("{path}: cannot symbolize ({err:#}), using file offsets");
            module.unreadable = true;
            return fallback_all(module);
        }
        (with_debug, elf_only) => {
            if let Err(err) = &with_debug {
                // Broken or unsupported debug info must not cost us the ELF symbols.
                log::debug!("{path}: debug info unusable ({err:#}), using ELF symbols");
            }
            (with_debug.unwrap_or_default(), elf_only.unwrap_or_default())
        }
    };
    addresses
        .iter()
        .enumerate()
        .map(|(i, &(address, offset))| {
            let elf = named(elf_only.get(i));
            match (named(with_debug.get(i)), elf) {
                (Some(debug), elf) => {
                    let mut frames = frames_of(debug, path, address, offset);
                    // DWARF names a C function as written in its source, which for glibc
                    // is an internal alias (`__GI___libc_malloc`, `__GI___mmap64`); the
                    // symbol table has the public name (`malloc`, `mmap`) that people
                    // look for. Take it when it names the very same function.
                    if let Some(elf) = elf.filter(|elf| elf.addr == debug.addr) {
                        let outer = frames.last_mut().expect("frames_of is never empty");
                        name_frame(outer, &elf.name);
                    }
                    frames
                }
                (None, Some(elf)) => frames_of(elf, path, address, offset),
                (None, None) => module.fallback(path, address, offset),
            }
        })
        .collect()
}

/// The symbol of one result, if it has a name.
fn named<'a, 'src>(symbolized: Option<&'a Symbolized<'src>>) -> Option<&'a Sym<'src>> {
    symbolized
        .and_then(Symbolized::as_sym)
        .filter(|sym| !sym.name.is_empty())
}

/// Frames of one blazesym symbol, innermost first.
///
/// blazesym reports `f` with `inlined = [g, h]` for an instruction of `h`, inlined into
/// `g`, inlined into `f`; `f.code_info` is the call of `g` in `f`, `g`'s that of `h` in
/// `g`, and `h`'s the instruction itself.
fn frames_of(sym: &Sym<'_>, path: &str, address: u64, offset: u64) -> Vec<Frame> {
    let frame = |name: &str, code_info: Option<&blazesym::symbolize::CodeInfo<'_>>| {
        let mut frame = Frame {
            module: Some(path.to_string()),
            file: code_info.map(|info| info.to_path().to_string_lossy().into_owned()),
            line: code_info.and_then(|info| info.line),
            address,
            module_offset: offset,
            inlined: true,
            ..Frame::default()
        };
        name_frame(&mut frame, name);
        frame
    };
    let mut frames = Vec::with_capacity(sym.inlined.len() + 1);
    for inlined in sym.inlined.iter().rev() {
        frames.push(frame(&inlined.name, inlined.code_info.as_ref()));
    }
    frames.push(Frame {
        inlined: false,
        ..frame(&sym.name, sym.code_info.as_deref())
    });
    frames
}

/// Names `frame` by the symbol `name`: demangled (Rust first, as blazesym does, then C++),
/// keeping the mangled name when it differs.
fn name_frame(frame: &mut Frame, name: &str) {
    let demangled = rustc_demangle::try_demangle(name)
        .map(|rust| format!("{rust:#}"))
        .ok()
        .or_else(|| cpp_demangle::Symbol::new(name).ok()?.demangle().ok());
    match demangled {
        Some(demangled) if demangled != name => {
            frame.function = demangled;
            frame.symbol = Some(name.to_string());
        }
        _ => {
            frame.function = name.to_string();
            frame.symbol = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn memprof_symbolize_probe_fn() -> u64 {
        std::hint::black_box(0x5eed_u64).wrapping_mul(3)
    }

    /// A maps line: (start, end, file offset, path).
    /// The mapped file containing `address` in maps text, and the address's offset in it.
    fn module_of(maps: &str, address: u64) -> (String, u64) {
        let entry = crate::procfs::parse_maps(maps)
            .into_iter()
            .find(|e| (e.start..e.end).contains(&address))
            .unwrap_or_else(|| panic!("{address:#x} is not mapped"));
        let path = entry.path.expect("a file mapping");
        (path, address - entry.start + entry.offset)
    }

    /// The frames `symbolizer` gives for `address`, at `file_offset` in the file at `path`.
    fn symbolize_in(
        symbolizer: &mut Symbolizer,
        path: &str,
        file_offset: u64,
        address: u64,
    ) -> Vec<Frame> {
        symbolizer
            .symbolize(address, Location::Module { path, file_offset })
            .to_vec()
    }

    #[test]
    fn symbolize_own_test_binary() {
        assert_eq!(memprof_symbolize_probe_fn(), 0x5eed * 3);
        let address = memprof_symbolize_probe_fn as *const () as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let (path, file_offset) = module_of(&maps, address);

        let mut symbolizer = Symbolizer::new();
        let frames = symbolize_in(&mut symbolizer, &path, file_offset, address);
        let last = frames.last().unwrap();
        assert!(
            last.function.contains("memprof_symbolize_probe_fn"),
            "{frames:#?}"
        );
        assert!(!last.function.contains("17h"), "not demangled: {frames:#?}");
        // The symbol's own name, mangled (legacy `_ZN` or v0 `_R`).
        let symbol = last.symbol.as_deref().unwrap_or_default();
        assert!(
            symbol.starts_with("_ZN") || symbol.starts_with("_R"),
            "{frames:#?}"
        );
        // A GNU build ID (the linker's SHA-1 here).
        let build_id = last.build_id.as_deref().unwrap_or_default();
        assert_eq!(build_id.len(), 40, "{frames:#?}");
        assert!(
            build_id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{frames:#?}"
        );
        assert_eq!(last.address, address);
        assert_eq!(last.module_offset, file_offset);
        assert_eq!(last.module.as_deref(), Some(path.as_str()));
        assert!(
            last.file.as_deref().unwrap_or("").ends_with("symbolize.rs"),
            "{frames:#?}"
        );
        assert!(last.line.is_some(), "{frames:#?}");

        // Memoized: a second process with another load address gets its own address back.
        let again = symbolize_in(&mut symbolizer, &path, file_offset, address + 0x1000);
        assert_eq!(symbolizer.memoized(), 1);
        assert_eq!(again.last().unwrap().function, last.function);
        assert_eq!(again.last().unwrap().address, address + 0x1000);
    }

    #[test]
    fn symbolize_libc_public_names() {
        // libc's DWARF (libc6-dbg) calls these `__GI___libc_malloc` and `__GI___mmap64`;
        // reports must show the names people know, with or without debug info installed.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut symbolizer = Symbolizer::new();
        for (address, name) in [
            (libc::malloc as *const () as u64, "malloc"),
            (libc::mmap as *const () as u64, "mmap"),
        ] {
            let (path, file_offset) = module_of(&maps, address);
            assert!(path.contains("libc"), "{name} at {address:#x} is in {path}");
            let frames = symbolizer.symbolize(
                address,
                Location::Module {
                    path: &path,
                    file_offset,
                },
            );
            assert_eq!(frames.last().unwrap().function, name, "{frames:#?}");
        }
    }

    #[test]
    fn perf_map_lines() {
        assert_eq!(
            parse_perf_map_line("7f3a0c000040 1a8 JS:*memprofAllocBig /tmp/a.js:3:27"),
            Some((
                0x7f3a_0c00_0040,
                0x7f3a_0c00_01e8,
                "JS:*memprofAllocBig /tmp/a.js:3:27".into()
            ))
        );
        assert_eq!(
            parse_perf_map_line("0x10 0x4 Interpreter"),
            Some((0x10, 0x14, "Interpreter".into()))
        );
        assert_eq!(parse_perf_map_line("garbage"), None);
        assert_eq!(parse_perf_map_line("10 4 "), None);
    }

    #[test]
    fn unreadable_and_unknown_fall_back() {
        let mut symbolizer = Symbolizer::new();
        let path = "/nonexistent/memprof/libgone.so.1";
        let frames = symbolize_in(&mut symbolizer, path, 0x1f3a, 0x7f00_0000_1f3a);
        assert_eq!(
            frames,
            vec![Frame {
                function: "libgone.so.1+0x1f3a".into(),
                module: Some(path.into()),
                address: 0x7f00_0000_1f3a,
                module_offset: 0x1f3a,
                ..Frame::default()
            }]
        );
        // The function name a module offset falls back to.
        let mut fallback = |path: &str, file_offset: u64| {
            let location = Location::Module { path, file_offset };
            symbolizer.symbolize(1, location)[0].function.clone()
        };
        // A second offset of the same unreadable module does not retry the file.
        assert_eq!(fallback(path, 0x20), "libgone.so.1+0x20");
        assert_eq!(fallback("[vdso]", 0x9a0), "[vdso]+0x9a0");
        assert_eq!(
            fallback("/usr/lib/libold.so (deleted)", 0x10),
            "libold.so+0x10"
        );
        // Not an ELF file.
        assert_eq!(fallback("/proc/self/status", 0x10), "status+0x10");

        let frames = symbolizer.symbolize(0xdead_beef, Location::Unknown);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].function, "[unknown]+0xdeadbeef");
        assert_eq!(frames[0].module, None);
        assert_eq!(frames[0].address, 0xdead_beef);

        // An offset outside every loadable segment of a real binary.
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let size = std::fs::metadata(exe).unwrap().len();
        let frames = symbolizer.symbolize(
            9,
            Location::Module {
                path: exe,
                file_offset: size + 0x100,
            },
        );
        let base = Path::new(exe).file_name().unwrap().to_str().unwrap();
        assert_eq!(frames[0].function, format!("{base}+{:#x}", size + 0x100));
    }
}
