//! What memory is for, in one word per region: its **category**, decided from the region
//! (kind, protection, file) and the frames of the stack that reserved it. Every region has
//! exactly one, so a process's categories add up to its reserved, committed and resident
//! bytes.
//!
//! The rules, tried in this order ([`categorize`]): the region's kind ([`by_kind`]); the
//! table [`FRAME_RULES`] on the frames of its reservation (and, failing that, of the call
//! that mapped it), with glibc's arenas told from its other blocks by their shape, which also
//! names them when no stack says anything; then what the region is ([`by_region`]). A
//! runtime or an allocator is added by a line in [`FRAME_RULES`]; docs/categories.md says
//! more.
use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::stacks::name_matches;
use crate::{
    address_space::{
        AddressSpace, GUARD_MAX, PROT_EXEC, PROT_WRITE, Region, RegionKind, SITE_BEFORE_TRACING,
        SiteId,
    },
    symbolize::Frame,
};

/// glibc's HEAP_MAX_SIZE on 64-bit: a thread arena's heap is reserved this large and
/// aligned to it, which is how its regions are told from blocks malloc mapped alone.
const ARENA_HEAP: u64 = 64 << 20;

/// The sizes of CPython's obmalloc arenas: 1 MiB from 3.10, 256 KiB before.
const PYTHON_ARENAS: [u64; 2] = [1 << 20, 256 << 10];

/// Where the Go runtime puts its heap on 64-bit x86 (its first arena hint, 0xc000000000,
/// and the 256 GiB above it): every Go program has a mapping at its start.
const GO_ARENAS: std::ops::Range<u64> = 0xc0_0000_0000..0x100_0000_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    GoHeap,
    GoRuntime,
    MallocHeap,
    MallocArena,
    MallocMmap,
    MallocOther,
    ThreadStack,
    MainStack,
    JvmHeap,
    JvmMetaspace,
    JvmCodeCache,
    JvmOther,
    V8Heap,
    V8Code,
    PythonHeap,
    Binary,
    File,
    SharedMemory,
    Guard,
    Kernel,
    Other,
}

/// By its identifier, the one name it has everywhere.
impl Serialize for Category {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.id())
    }
}

impl Category {
    /// Its stable identifier, as JSON, folded stacks and the terminal name it.
    pub fn id(self) -> &'static str {
        self.about().0
    }

    /// What it is, in plain words.
    pub fn describe(self) -> &'static str {
        self.about().1
    }

    fn about(self) -> (&'static str, &'static str) {
        match self {
            Self::GoHeap => (
                "go_heap",
                "the Go heap: arenas for Go's objects and goroutine stacks",
            ),
            Self::GoRuntime => (
                "go_runtime",
                "the Go runtime's own metadata: the page allocator's index, the arena map, \
                 span and GC data",
            ),
            Self::MallocHeap => ("malloc_heap", "malloc's main heap (brk)"),
            Self::MallocArena => (
                "malloc_arena",
                "glibc malloc's arenas for other threads, 64 MiB reserved each",
            ),
            Self::MallocMmap => (
                "malloc_mmap",
                "blocks glibc malloc mapped on their own (too large for its heaps)",
            ),
            Self::MallocOther => (
                "malloc_other",
                "another malloc's memory: jemalloc, tcmalloc or mimalloc",
            ),
            Self::ThreadStack => ("thread_stack", "threads' stacks, with their guard pages"),
            Self::MainStack => ("main_stack", "the main thread's stack"),
            Self::JvmHeap => ("jvm_heap", "the Java heap"),
            Self::JvmMetaspace => (
                "jvm_metaspace",
                "the JVM's metaspace and class space: class metadata and the CDS archive",
            ),
            Self::JvmCodeCache => ("jvm_code_cache", "the JVM's code cache: compiled code"),
            Self::JvmOther => (
                "jvm_other",
                "the JVM's own memory: GC data structures, tables, buffers",
            ),
            Self::V8Heap => ("v8_heap", "V8's JavaScript heap"),
            Self::V8Code => (
                "v8_code",
                "V8's code range: compiled JavaScript and builtins",
            ),
            Self::PythonHeap => ("python_heap", "CPython's object arenas (obmalloc)"),
            Self::Binary => (
                "binary",
                "the program and its shared libraries, mapped from their files",
            ),
            Self::File => ("file", "other files mapped into memory"),
            Self::SharedMemory => (
                "shared_memory",
                "shared memory: SysV segments, memfd, /dev/shm, shared anonymous mappings",
            ),
            Self::Guard => ("guard", "guard pages (PROT_NONE) that catch overruns"),
            Self::Kernel => (
                "kernel",
                "pages the kernel maps into every process (vdso, vvar)",
            ),
            Self::Other => (
                "other",
                "memory no rule names: mapped by the program itself, or before memprof \
                 attached",
            ),
        }
    }
}

/// What the stack that reserved a region says it is for: the first rule, in this order, one
/// of whose patterns matches its frames decides. A pattern names one frame, or consecutive
/// frames callee first (`callee < caller`, as the terminal prints stacks); a frame is
/// `function` or `function@module` (the module's file name), each whole or by its start
/// where it ends in `*`. Malloc's arenas and blocks are told apart by their region after.
const FRAME_RULES: &[(Category, &[&str])] = &[
    // glibc's malloc, in libc (the dynamic loader has a minimal one of its own). Thread
    // arenas are made on a thread's first malloc or free.
    (
        Category::MallocMmap,
        &[
            "malloc@libc.so*",
            "__libc_malloc@libc.so*",
            "calloc@libc.so*",
            "__libc_calloc@libc.so*",
            "realloc@libc.so*",
            "__libc_realloc@libc.so*",
            "reallocarray@libc.so*",
            "free@libc.so*",
            "__libc_free@libc.so*",
            "memalign@libc.so*",
            "__libc_memalign@libc.so*",
            "aligned_alloc@libc.so*",
            "posix_memalign@libc.so*",
            "__posix_memalign@libc.so*",
            "valloc@libc.so*",
            "pvalloc@libc.so*",
            "sysmalloc*@libc.so*",
            "alloc_new_heap@libc.so*",
        ],
    ),
    (
        Category::MallocOther,
        &[
            "*@libjemalloc*",
            "*@libtcmalloc*",
            "*@libmimalloc*",
            // jemalloc built into the program, as redis's own build has it.
            "je_*",
        ],
    ),
    // Go: the heap's arenas are reserved by mheap.sysAlloc (and mapped in by mheap.grow);
    // everything else the runtime maps itself (through runtime.mmap, which the program's
    // own code does not call) is its metadata.
    (
        Category::GoHeap,
        &[
            "runtime.sysReserve < runtime.(*mheap).sysAlloc",
            "runtime.sysMap < runtime.(*mheap).grow",
        ],
    ),
    (Category::GoRuntime, &["runtime.mmap*"]),
    // HotSpot.
    (
        Category::JvmHeap,
        &[
            "ReservedHeapSpace::*",
            "ZVirtualMemoryManager::*",
            "XVirtualMemoryManager::*",
        ],
    ),
    (
        Category::JvmCodeCache,
        &["ReservedCodeSpace::*", "CodeHeap::*", "CodeCache::*"],
    ),
    (
        Category::JvmMetaspace,
        &[
            "Metaspace::*",
            "metaspace::*",
            "MetaspaceShared::*",
            "FileMapInfo::*",
        ],
    ),
    // What the JVM maps itself; not what Java code or a JNI library maps below its frames.
    (Category::JvmOther, &["mmap* < *@libjvm.so"]),
    // V8: its code range first, which the heap's setup reserves.
    (
        Category::V8Code,
        &["v8::internal::CodeRange::*", "v8::internal::CodeSpace::*"],
    ),
    (
        Category::V8Heap,
        &[
            "v8::internal::MemoryAllocator::*",
            "v8::internal::VirtualMemoryCage::*",
            "cppgc::*",
        ],
    ),
    // CPython maps memory itself for obmalloc's arenas: named, or without symbols (Debian
    // strips them) the caller of the mmap wrapper in the interpreter, an arena's size (its
    // built-in mmap module maps what it is asked).
    (
        Category::PythonHeap,
        &[
            "_PyObject_ArenaMmap",
            "mmap* < *@python3*",
            "mmap* < *@libpython3*",
        ],
    ),
    // The dynamic loader mapping a library: its segments and its zero-filled .bss.
    (
        Category::Binary,
        &["_dl_map_segment*@ld-linux*", "_dl_map_object*@ld-linux*"],
    ),
];

/// Whether `frame` is the one `spec` (`function` or `function@module`) names.
fn frame_matches(spec: &str, frame: &Frame) -> bool {
    let (function, module) = match spec.rsplit_once('@') {
        Some((function, module)) => (function, Some(module)),
        None => (spec, None),
    };
    let in_module = module.is_none_or(|module| {
        frame
            .module
            .as_deref()
            .map(|path| path.rsplit('/').next().unwrap_or(path))
            .is_some_and(|file| name_matches(module, file))
    });
    in_module && name_matches(function, &frame.function)
}

/// Whether some consecutive frames (leaf first) are the ones `pattern` names.
fn stack_matches(pattern: &str, frames: &[Frame]) -> bool {
    let specs = || pattern.split(" < ");
    frames.windows(specs().count()).any(|run| {
        specs()
            .zip(run)
            .all(|(spec, frame)| frame_matches(spec, frame))
    })
}

/// The category [`FRAME_RULES`] give a stack, if any.
fn by_frames(frames: &[Frame]) -> Option<Category> {
    FRAME_RULES
        .iter()
        .find(|(_, patterns)| patterns.iter().any(|p| stack_matches(p, frames)))
        .map(|&(category, _)| category)
}

/// What the region's kind says, whatever made it.
fn by_kind(region: &Region) -> Option<Category> {
    Some(match region.kind {
        RegionKind::Vdso | RegionKind::Vvar | RegionKind::Special => Category::Kernel,
        RegionKind::MainStack => Category::MainStack,
        // glibc makes a thread's stack and its guard one mapping (MAP_STACK).
        RegionKind::ThreadStack => Category::ThreadStack,
        RegionKind::SysvShm => Category::SharedMemory,
        RegionKind::Heap => Category::MallocHeap,
        RegionKind::Anonymous if region.shared => Category::SharedMemory,
        RegionKind::File if is_shared_file(region) => Category::SharedMemory,
        RegionKind::Anonymous | RegionKind::File => return None,
    })
}

/// A memfd, or a file of /dev/shm (POSIX shared memory): memory shared between processes.
fn is_shared_file(region: &Region) -> bool {
    region
        .path
        .as_deref()
        .is_some_and(|p| p.starts_with("/memfd:") || p.starts_with("/dev/shm/"))
}

/// What is left to say from the region alone.
fn by_region(space: &AddressSpace, region: &Region, process: &ProcessFacts) -> Category {
    match (&region.kind, region.path.as_deref()) {
        (RegionKind::File, Some(path)) if process.code_files.contains(path) => Category::Binary,
        (RegionKind::File, _) => Category::File,
        (RegionKind::Anonymous, None) if is_bss(space, region, &process.code_files) => {
            Category::Binary
        }
        // A stack's guard is the stack's (the JVM maps its own below a thread's).
        _ if region.prot == 0 && region.size() <= GUARD_MAX => match space.stack_guarded(region) {
            Some(RegionKind::ThreadStack) => Category::ThreadStack,
            Some(RegionKind::MainStack) => Category::MainStack,
            _ => Category::Guard,
        },
        // What a Go program mapped before memprof looked: its heap's arenas from the first
        // hint up, the runtime's metadata elsewhere.
        (RegionKind::Anonymous, None) if process.go && !region.shared => {
            if GO_ARENAS.contains(&region.start) {
                Category::GoHeap
            } else {
                Category::GoRuntime
            }
        }
        _ => Category::Other,
    }
}

/// A binary's zero-filled data (.bss) mapped before tracing (by the kernel for the program,
/// by the loader for libraries): anonymous memory right after the writable segment of a
/// code file, where the program or the loader put it.
fn is_bss(space: &AddressSpace, region: &Region, code_files: &HashSet<&str>) -> bool {
    region.reservation == SITE_BEFORE_TRACING
        && region
            .start
            .checked_sub(1)
            .and_then(|a| space.region_at(a))
            .is_some_and(|below| {
                below.kind == RegionKind::File
                    && below.prot & PROT_WRITE != 0
                    && below
                        .path
                        .as_deref()
                        .is_some_and(|p| code_files.contains(p))
            })
}

/// The symbolized stack of a site.
pub trait SiteFrames {
    fn frames(&mut self, site: SiteId) -> &[Frame];
}

/// What a site's stack says of the memory it reserved, for [`categorize`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSays {
    /// The category [`FRAME_RULES`] give it.
    pub category: Option<Category>,
    /// Nothing of who asked (see [`says_nothing`]).
    pub nothing: bool,
}

impl StackSays {
    pub fn of(frames: &[Frame]) -> Self {
        Self {
            category: by_frames(frames),
            nothing: says_nothing(frames),
        }
    }
}

/// What sites' stacks say, for [`categorize`]: from their frames, or remembered (`top`
/// works it out once per site).
pub trait SiteStacks {
    fn says(&mut self, site: SiteId) -> StackSays;
}

impl<T: SiteFrames> SiteStacks for T {
    fn says(&mut self, site: SiteId) -> StackSays {
        StackSays::of(self.frames(site))
    }
}

/// What the rules need to know of the whole process.
pub struct ProcessFacts<'a> {
    /// The files it maps executable somewhere: its program and libraries, whose other
    /// segments are theirs too.
    code_files: HashSet<&'a str>,
    /// It is a Go program: it has a mapping where the Go runtime puts its heap.
    go: bool,
}

impl<'a> ProcessFacts<'a> {
    pub fn of(space: &'a AddressSpace) -> Self {
        Self {
            code_files: space
                .regions()
                .filter(|r| r.kind == RegionKind::File && r.prot & PROT_EXEC != 0)
                .filter_map(|r| r.path.as_deref())
                .collect(),
            go: space
                .region_at(GO_ARENAS.start)
                .is_some_and(|r| r.start == GO_ARENAS.start),
        }
    }
}

/// The category of one region of `space`.
pub fn categorize(
    space: &AddressSpace,
    region: &Region,
    process: &ProcessFacts,
    sites: &mut impl SiteStacks,
) -> Category {
    if let Some(category) = by_kind(region) {
        return category;
    }
    let reservation = sites.says(region.reservation);
    let by_stack = if region.kind == RegionKind::File {
        // A file mapped on its own is a file, whichever code mapped it; mapped into what a
        // runtime reserved (the JVM's class-data archive), it is part of that.
        reservation
            .category
            .filter(|_| region.reservation != region.site)
    } else {
        reservation
            .category
            .or_else(|| sites.says(region.site).category)
    };
    match by_stack {
        Some(Category::MallocMmap) if in_arena_heap(space, region, process) => {
            Category::MallocArena
        }
        Some(Category::PythonHeap) if !PYTHON_ARENAS.contains(&region.size()) => {
            by_region(space, region, process)
        }
        Some(category) => category,
        // An arena's shape says what it is when its stack does not (attach mode).
        None if reservation.nothing && in_arena_heap(space, region, process) => {
            Category::MallocArena
        }
        None => by_region(space, region, process),
    }
}

/// Whether a region lies in one of glibc's arena heaps: 64 MiB of private anonymous memory
/// reserved at once, aligned to 64 MiB, usable from its start (a block malloc maps alone is
/// as large as asked). Its regions share a reservation, unless mapped before tracing. The Go
/// heap's first arena has that shape too, where glibc puts none.
fn in_arena_heap(space: &AddressSpace, region: &Region, process: &ProcessFacts) -> bool {
    if process.go && GO_ARENAS.contains(&region.start) {
        return false;
    }
    let heap_start = region.start & !(ARENA_HEAP - 1);
    let heap_end = heap_start + ARENA_HEAP;
    let mut end = heap_start;
    while let Some(r) = space.region_at(end).filter(|r| {
        r.start == end
            && r.end <= heap_end
            && r.kind == RegionKind::Anonymous
            && !r.shared
            && r.reservation == region.reservation
    }) {
        if r.start == heap_start && r.prot & PROT_WRITE == 0 {
            return false;
        }
        end = r.end;
    }
    end == heap_end
}

/// Whether a stack says nothing of who asked: none, a placeholder, or only frames of the C
/// library (an unwinding that stopped in it) and of no file (code a runtime generated).
fn says_nothing(frames: &[Frame]) -> bool {
    frames.iter().all(|f| {
        f.module.as_deref().is_none_or(|m| {
            m.rsplit('/')
                .next()
                .is_some_and(|file| file.starts_with("libc.so"))
        })
    })
}

/// A category's share of a process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CategoryFigures {
    pub reserved_bytes: u64,
    pub committed_bytes: u64,
    pub resident_bytes: u64,
}

/// Reserved, committed and resident bytes by category, from the regions of `space` and
/// their categories: each figure adds up to the space's own.
pub fn breakdown<'a>(
    space: &AddressSpace,
    regions: impl IntoIterator<Item = (&'a Region, Category)>,
) -> BTreeMap<Category, CategoryFigures> {
    let mut rows: BTreeMap<Category, CategoryFigures> = BTreeMap::new();
    for (region, category) in regions {
        let row = rows.entry(category).or_default();
        row.reserved_bytes += region.size();
        row.committed_bytes += region.committed();
        row.resident_bytes += space.region_resident(region);
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{address_space::PAGE_SIZE, procfs::parse_maps};

    const MIB: u64 = 1 << 20;
    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    const RW: u64 = 3;
    const NONE: u64 = 0;
    const PRIVATE_ANON: u64 = 0x22;
    const FIXED: u64 = 0x10;
    const STACK: u64 = 0x20000;

    fn frame(function: &str, module: &str) -> Frame {
        Frame {
            function: function.into(),
            module: Some(module.into()),
            ..Frame::default()
        }
    }

    /// Stacks by site, leaf first, from `function@module` specs.
    #[derive(Default)]
    struct Stacks(HashMap<SiteId, Vec<Frame>>);

    impl Stacks {
        fn with(mut self, site: SiteId, stack: &[&str]) -> Self {
            let frames = stack
                .iter()
                .map(|s| match s.rsplit_once('@') {
                    Some((function, module)) => frame(function, module),
                    // Placeholders ("[mapped before tracing]") have no module.
                    None if s.starts_with('[') => Frame {
                        function: s.to_string(),
                        ..Frame::default()
                    },
                    None => frame(s, "/usr/bin/app"),
                })
                .collect();
            self.0.insert(site, frames);
            self
        }
    }

    impl SiteFrames for Stacks {
        fn frames(&mut self, site: SiteId) -> &[Frame] {
            self.0.get(&site).map_or(&[], Vec::as_slice)
        }
    }

    fn categories(space: &AddressSpace, stacks: &mut Stacks) -> Vec<(u64, &'static str)> {
        let code = ProcessFacts::of(space);
        space
            .regions()
            .map(|r| (r.start, categorize(space, r, &code, stacks).id()))
            .collect()
    }

    /// Each region's category, in address order.
    fn category_ids(space: &AddressSpace, stacks: &mut Stacks) -> Vec<&'static str> {
        categories(space, stacks)
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    /// The sum of every category is the totals, whatever the regions.
    fn assert_adds_up(space: &AddressSpace, stacks: &mut Stacks) {
        let code = ProcessFacts::of(space);
        let rows = breakdown(
            space,
            space
                .regions()
                .map(|r| (r, categorize(space, r, &code, stacks))),
        );
        let sum = |f: fn(&CategoryFigures) -> u64| rows.values().map(f).sum::<u64>();
        assert_eq!(sum(|r| r.reserved_bytes), space.reserved());
        assert_eq!(sum(|r| r.committed_bytes), space.committed());
        let resident: u64 = space.regions().map(|r| space.region_resident(r)).sum();
        assert_eq!(sum(|r| r.resident_bytes), resident);
    }

    #[test]
    fn glibc_arenas_blocks_heap_and_thread_stacks() {
        const ARENA_SITE: SiteId = 2;
        const BLOCK_SITE: SiteId = 3;
        const THREAD_SITE: SiteId = 4;
        let mut stacks = Stacks::default()
            .with(
                ARENA_SITE,
                &[
                    "mmap@libc.so.6",
                    // Without libc's symbols, its static functions take the name of an
                    // exported one before them.
                    "pthread_getattr_np@libc.so.6",
                    "__libc_free@libc.so.6",
                    "worker",
                    "start_thread@libc.so.6",
                ],
            )
            .with(
                BLOCK_SITE,
                &["mmap@libc.so.6", "calloc@libc.so.6", "main", "_start"],
            )
            .with(
                THREAD_SITE,
                &["mmap@libc.so.6", "pthread_create@libc.so.6", "main"],
            );
        let mut space = AddressSpace::from_maps(
            &parse_maps(&format!(
                "555555554000-555555556000 r-xp 00000000 fe:00 1 /usr/bin/app\n\
                 555555556000-555555558000 rw-p 00002000 fe:00 1 /usr/bin/app\n\
                 555555558000-555555559000 rw-p 00000000 00:00 0\n\
                 555555559000-555555579000 rw-p 00000000 00:00 0 [heap]\n\
                 7f0000000000-7f0000028000 r--p 00000000 fe:00 2 {LIBC}\n\
                 7f0000028000-7f000017d000 r-xp 00028000 fe:00 2 {LIBC}\n\
                 7f0000200000-7f0000300000 r--p 00000000 fe:00 3 /usr/lib/locale/locale-archive\n\
                 7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n\
                 7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0 [vdso]\n"
            )),
            None,
        );
        // An arena's heap: 64 MiB reserved aligned, its first 132 KiB made usable.
        let arena = 0x7f10_0000_0000;
        space.mmap(arena, 64 * MIB, NONE, PRIVATE_ANON, -1, 0, ARENA_SITE);
        space.mprotect(arena, 132 << 10, RW);
        // A block too large for it, and a thread's stack with its guard page.
        space.mmap(
            0x7f20_0010_0000,
            40 * MIB,
            RW,
            PRIVATE_ANON,
            -1,
            0,
            BLOCK_SITE,
        );
        let stack = 0x7f30_0000_0000;
        space.mmap(stack, 8 * MIB, RW, PRIVATE_ANON | STACK, -1, 0, THREAD_SITE);
        space.mprotect(stack, PAGE_SIZE, NONE);
        assert_eq!(
            categories(&space, &mut stacks),
            [
                (0x5555_5555_4000, "binary"),
                (0x5555_5555_6000, "binary"),
                (0x5555_5555_8000, "binary"),
                (0x5555_5555_9000, "malloc_heap"),
                (0x7f00_0000_0000, "binary"),
                (0x7f00_0002_8000, "binary"),
                (0x7f00_0020_0000, "file"),
                (arena, "malloc_arena"),
                (arena + (132 << 10), "malloc_arena"),
                (0x7f20_0010_0000, "malloc_mmap"),
                (stack, "thread_stack"),
                (stack + PAGE_SIZE, "thread_stack"),
                (0x7ffd_0000_0000, "main_stack"),
                (0x7ffd_0010_0000, "kernel"),
            ]
        );
        assert_adds_up(&space, &mut stacks);
    }

    #[test]
    fn go_heap_and_runtime_by_the_reservation_a_mapping_commits() {
        const ARENA: SiteId = 2;
        const GROW: SiteId = 3;
        const INDEX: SiteId = 4;
        const ARENA_MAP: SiteId = 5;
        let go = |stack: &[&'static str]| -> Vec<&'static str> {
            ["runtime/internal/syscall.Syscall6", "runtime.mmap"]
                .iter()
                .chain(stack)
                .copied()
                .collect()
        };
        let mut stacks = Stacks::default()
            .with(
                ARENA,
                &go(&[
                    "runtime.sysReserveOS",
                    "runtime.sysReserve",
                    "runtime.(*mheap).sysAlloc",
                    "runtime.(*mheap).grow",
                ]),
            )
            // Committing part of the arena, over its reservation.
            .with(
                GROW,
                &go(&[
                    "runtime.sysMapOS",
                    "runtime.sysMap",
                    "runtime.(*mheap).grow",
                ]),
            )
            .with(
                INDEX,
                &go(&[
                    "runtime.sysReserve",
                    "runtime.(*pageAlloc).sysInit",
                    "runtime.mallocinit",
                ]),
            )
            // mheap.sysAlloc's arena map is metadata, not heap.
            .with(
                ARENA_MAP,
                &go(&["runtime.sysAllocOS", "runtime.(*mheap).sysAlloc"]),
            );
        let mut space = AddressSpace::new();
        let heap = 0xc0_0000_0000;
        space.mmap(heap, 64 * MIB, NONE, PRIVATE_ANON, -1, 0, ARENA);
        space.mmap(heap, 4 * MIB, RW, PRIVATE_ANON | FIXED, -1, 0, GROW);
        space.mmap(
            0x7f00_0000_0000,
            512 * MIB,
            NONE,
            PRIVATE_ANON,
            -1,
            0,
            INDEX,
        );
        space.mmap(
            0x7f10_0000_0000,
            32 * MIB,
            RW,
            PRIVATE_ANON,
            -1,
            0,
            ARENA_MAP,
        );
        // A MAP_FIXED mapping where nothing was reserved is its own reservation.
        space.mmap(0x7f20_0000_0000, MIB, RW, PRIVATE_ANON | FIXED, -1, 0, GROW);
        assert_eq!(
            categories(&space, &mut stacks),
            [
                (heap, "go_heap"),
                (heap + 4 * MIB, "go_heap"),
                (0x7f00_0000_0000, "go_runtime"),
                (0x7f10_0000_0000, "go_runtime"),
                (0x7f20_0000_0000, "go_heap"),
            ]
        );
        assert_adds_up(&space, &mut stacks);
    }

    #[test]
    fn jvm_v8_and_python_by_their_frames() {
        let sites: [(&[&str], &str); 9] = [
            (
                &[
                    "mmap@libc.so.6",
                    "os::pd_attempt_reserve_memory_at(char*, unsigned long, bool)@libjvm.so",
                    "ReservedSpace::reserve(unsigned long)@libjvm.so",
                    "ReservedHeapSpace::try_reserve_range(char*)@libjvm.so",
                ],
                "jvm_heap",
            ),
            (
                &[
                    "mmap@libc.so.6",
                    "os::pd_reserve_memory(unsigned long, bool)@libjvm.so",
                    "Metaspace::reserve_address_space_for_compressed_classes(unsigned long)@libjvm.so",
                ],
                "jvm_metaspace",
            ),
            (
                &[
                    "mmap@libc.so.6",
                    "ReservedCodeSpace::ReservedCodeSpace(unsigned long)@libjvm.so",
                    "CodeCache::initialize_heaps()@libjvm.so",
                ],
                "jvm_code_cache",
            ),
            // malloc under a metaspace frame is malloc's.
            (
                &[
                    "mmap@libc.so.6",
                    "malloc@libc.so.6",
                    "os::malloc(unsigned long)@libjvm.so",
                    "MetaspaceShared::initialize_shared_spaces()@libjvm.so",
                ],
                "malloc_mmap",
            ),
            (
                &[
                    "mmap@libc.so.6",
                    "G1CollectedHeap::create_aux_memory_mapper(char const*)@libjvm.so",
                ],
                "jvm_other",
            ),
            (
                &[
                    "mmap@libc.so.6",
                    "v8::base::OS::Allocate@libnode.so.108",
                    "v8::internal::VirtualMemoryCage::InitReservation@libnode.so.108",
                    "v8::internal::CodeRange::InitReservation@libnode.so.108",
                    "v8::internal::Heap::SetUp@libnode.so.108",
                ],
                "v8_code",
            ),
            (
                &[
                    "mmap@libc.so.6",
                    "v8::internal::MemoryAllocator::AllocatePage@libnode.so.108",
                ],
                "v8_heap",
            ),
            (
                &[
                    "mmap@libc.so.6",
                    "python3.11+0x22d098@python3.11",
                    "python3.11+0xfb706@python3.11",
                ],
                "python_heap",
            ),
            // The dynamic loader's own minimal malloc is not glibc's.
            (
                &[
                    "__mmap64@ld-linux-x86-64.so.2",
                    "__minimal_malloc@ld-linux-x86-64.so.2",
                    "malloc@ld-linux-x86-64.so.2",
                ],
                "other",
            ),
        ];
        let mut stacks = Stacks::default();
        let mut space = AddressSpace::new();
        let mut want = Vec::new();
        for (i, (stack, category)) in sites.iter().enumerate() {
            let site = 10 + i as SiteId;
            stacks = stacks.with(site, stack);
            let start = 0x7f00_0000_0000 + i as u64 * 0x1_0000_0000;
            space.mmap(start, MIB, RW, PRIVATE_ANON, -1, 0, site);
            want.push((start, *category));
        }
        assert_eq!(categories(&space, &mut stacks), want);
        assert_adds_up(&space, &mut stacks);
    }

    #[test]
    fn shared_memory_guards_files_and_memory_from_before_tracing() {
        let space = AddressSpace::from_maps(
            &parse_maps(
                "7f0000000000-7f0000100000 rw-s 00000000 00:01 5 /memfd:pool (deleted)\n\
                 7f0000100000-7f0000200000 rw-s 00000000 00:01 6 /dev/shm/ring\n\
                 7f0000200000-7f0000300000 rw-s 00000000 00:01 7 /dev/zero (deleted)\n\
                 7f0000300000-7f0000400000 rw-s 00000000 00:01 8 /SYSV0000abcd\n\
                 7f0000400000-7f0000401000 ---p 00000000 00:00 0\n\
                 7f0000401000-7f0000500000 rw-p 00000000 00:00 0 [stack]\n\
                 7f0000600000-7f0000700000 ---p 00000000 00:00 0\n\
                 7f0000700000-7f0000800000 rw-p 00000000 00:00 0\n\
                 7f0000800000-7f0000900000 r--p 00000000 fe:00 9 /var/lib/data.db\n\
                 7f0004000000-7f0004021000 rw-p 00000000 00:00 0\n\
                 7f0004021000-7f0008000000 ---p 00000000 00:00 0\n\
                 7f0008000000-7f000c000000 ---p 00000000 00:00 0\n",
            ),
            None,
        );
        let mut stacks = Stacks::default().with(SITE_BEFORE_TRACING, &["[mapped before tracing]"]);
        assert_eq!(
            category_ids(&space, &mut stacks),
            [
                "shared_memory",
                "shared_memory",
                "shared_memory",
                "shared_memory",
                // The stack's guard is the stack's.
                "main_stack",
                "main_stack",
                "other",
                "other",
                "file",
                // The shape of glibc's arena heap; a reservation as large, unusable at its start.
                "malloc_arena",
                "malloc_arena",
                "other",
            ]
        );
        assert_adds_up(&space, &mut stacks);
    }

    /// Attached to a running Go program: no stacks for what it mapped before, so its shape
    /// says: the heap where the Go runtime puts it, thread stacks by their flag, guards.
    #[test]
    fn a_go_program_mapped_before_tracing_by_its_shape() {
        let smaps = |range: &str, perms: &str, flags: &str| {
            format!("{range} {perms} 00000000 00:00 0\nRss: 0 kB\nVmFlags: {flags}\n")
        };
        let text = [
            // No huge pages for it (Go's scavenger asks so): not a stack, with no guard.
            smaps("c000000000-c000400000", "rw-p", "rd wr mr mw me ac nh"),
            smaps("c000400000-c004000000", "---p", "mr mw me"),
            smaps("7f0000000000-7f0020000000", "---p", "mr mw me"),
            smaps("7f1000000000-7f1000001000", "---p", "mr mw me nh"),
            smaps("7f1000001000-7f1000801000", "rw-p", "rd wr mr mw me ac nh"),
            smaps("7f2000000000-7f2000001000", "---p", "mr mw me"),
        ]
        .concat();
        let space = AddressSpace::from_maps(&parse_maps(&text), None);
        let mut stacks = Stacks::default().with(SITE_BEFORE_TRACING, &["[mapped before tracing]"]);
        assert_eq!(
            category_ids(&space, &mut stacks),
            [
                "go_heap",
                "go_heap",
                "go_runtime",
                "thread_stack",
                "thread_stack",
                "guard"
            ]
        );
        assert_adds_up(&space, &mut stacks);
    }

    /// A program's own mappings are not its runtime's because the runtime's frames lie
    /// below them: a Go program's or a JVM's own files are files, their own anonymous
    /// memory `other`, and CPython's mmap module maps no arena.
    #[test]
    fn code_that_runs_on_a_runtime_maps_its_own_memory() {
        let go_file = &[
            "runtime/internal/syscall.Syscall6@/srv/app",
            "syscall.Mmap@/srv/app",
            "main.openIndex@/srv/app",
            "runtime.main@/srv/app",
            "runtime.goexit@/srv/app",
        ];
        let jni = &[
            "mmap@libc.so.6",
            "Java_com_example_Native_map@libexample.so",
            "JavaCalls::call_helper@libjvm.so",
            "thread_native_entry@libjvm.so",
        ];
        let python_mmap = &["mmap@libc.so.6", "python3.11+0x1f00@python3.11"];
        let mut stacks = Stacks::default()
            .with(2, go_file)
            .with(3, jni)
            .with(4, python_mmap);
        let mut space = AddressSpace::new();
        let file = 0x7f00_0000_0000;
        space.mmap(file, 16 * MIB, 1, 0x01, 3, 0, 2);
        space.name_file(file, "/srv/index.db");
        space.mmap(0x7f10_0000_0000, 16 * MIB, RW, PRIVATE_ANON, -1, 0, 2);
        space.mmap(0x7f20_0000_0000, 8 * MIB, RW, PRIVATE_ANON, -1, 0, 3);
        space.mmap(0x7f30_0000_0000, 3 * MIB, RW, PRIVATE_ANON, -1, 0, 4);
        space.mmap(0x7f40_0000_0000, MIB, RW, PRIVATE_ANON, -1, 0, 4);
        assert_eq!(
            category_ids(&space, &mut stacks),
            ["file", "other", "other", "other", "python_heap"]
        );
        assert_adds_up(&space, &mut stacks);
    }

    #[test]
    fn patterns_name_frames_by_function_module_and_callee() {
        let frames = [
            frame("mmap64", LIBC),
            frame("python3.11+0x22d098", "/usr/bin/python3.11"),
            frame("main", "/usr/bin/python3.11"),
        ];
        assert!(stack_matches("mmap* < *@python3*", &frames));
        assert!(!stack_matches("mmap* < main", &frames), "not consecutive");
        assert!(stack_matches("mmap64@libc.so*", &frames));
        assert!(!stack_matches("mmap64@libjvm.so", &frames));
        assert!(!stack_matches("mmap", &frames), "whole names unless `*`");
        assert!(stack_matches(
            "sysmalloc*@libc.so*",
            &[frame("sysmalloc.part.0", LIBC)]
        ));
    }
}
