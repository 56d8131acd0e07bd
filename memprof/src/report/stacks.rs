//! What to call a call stack for people: where it starts, whether it looks cut short, and
//! the frames that say who asked for the memory. Folded stacks, pprof and JSON keep every
//! frame; the terminal's site lines and RESERVED AT name a site by its first frame past the
//! plumbing that carries a request for memory to the kernel.
use crate::symbolize::Frame;

/// Functions a thread's stack starts in: a stack that ends anywhere else was cut short. Go's
/// system stack starts where the runtime switched to it from a goroutine's stack
/// (`systemstack`, `mcall`, `asmcgocall`, `morestack`: the functions that write the stack
/// pointer, where Go's own tracebacks of it end): the goroutine's part lies on another stack,
/// which the kernel does not copy.
const STACK_ROOTS: [&str; 12] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone3",
    "runtime.goexit",
    "runtime.rt0_go",
    "runtime.mstart",
    "runtime.systemstack",
    "runtime.mcall",
    "runtime.asmcgocall",
    "runtime.morestack",
];

/// Whether a stack's outermost frame is not an entry point: the stack was cut short.
pub fn looks_truncated(frames: &[Frame]) -> bool {
    frames
        .last()
        .is_some_and(|f| !STACK_ROOTS.iter().any(|root| f.function.starts_with(root)))
}

/// Allocator and runtime plumbing: the frames that carry a request for memory from the code
/// that made it to the kernel. A name matches whole, or by its start where the entry ends in
/// `*`; compiler suffixes (`.part.0`, `.constprop.0`, `.cold`) are ignored. Add a runtime's
/// or allocator's entries here.
const PLUMBING: &[&str] = &[
    // glibc: the syscall wrappers, malloc and its arenas, thread stacks.
    "mmap",
    "mmap64",
    "__mmap*",
    "__GI___mmap*",
    "brk",
    "__brk",
    "sbrk",
    "__sbrk",
    "__GI___sbrk",
    "__default_morecore",
    "malloc",
    "__libc_malloc",
    "__malloc_*",
    "_int_malloc",
    "sysmalloc",
    "sysmalloc_mmap",
    "calloc",
    "__libc_calloc",
    "realloc",
    "__libc_realloc",
    "_int_realloc",
    "memalign",
    "__libc_memalign",
    "_mid_memalign",
    "_int_memalign",
    "aligned_alloc",
    "posix_memalign",
    "__posix_memalign",
    "valloc",
    "pvalloc",
    "tcache_init",
    "malloc_hook_ini",
    "new_heap",
    "alloc_new_heap",
    "_int_new_arena",
    "arena_get2",
    "allocate_stack",
    "pthread_create*",
    "__pthread_create_2_1",
    // The dynamic loader's own allocation.
    "__minimal_malloc",
    "__minimal_calloc",
    // C++ and Rust allocation.
    "operator new*",
    "__rust_alloc*",
    "__rust_realloc",
    "__rdl_alloc*",
    "__rdl_realloc",
    "alloc::alloc::*",
    "alloc::raw_vec::*",
    "<alloc::alloc::Global as core::alloc::Allocator>::*",
    "std::sys::alloc::*",
    // jemalloc (redis builds it with the je_ prefix).
    "je_*",
    "jemalloc_*",
    "pages_map*",
    "os_pages_map",
    "extent_alloc_mmap",
    "ehooks_default_alloc_impl",
    // The Go runtime, and cgo's C trampolines (named by their section when the C code has no
    // symbol of its own).
    "runtime.mmap*",
    "runtime.callCgo*",
    "runtime.asmcgocall*",
    "runtime/cgo(.text)",
    "x_cgo_thread_start",
    "_cgo_sys_thread_start",
    "_cgo_try_pthread_create",
    "runtime.newosproc*",
    "runtime.newm1",
    "x_cgo_mmap",
    "_cgo_mmap",
    "runtime.sysMmap",
    "runtime.sysReserve*",
    "runtime.sysAlloc*",
    "runtime.sysMap*",
    "runtime.sysUsed*",
    "runtime.sysHugePage*",
    "runtime.persistentalloc*",
    "runtime.(*linearAlloc).alloc",
    "runtime.systemstack*",
    // HotSpot.
    "os::reserve_memory*",
    "os::pd_reserve_memory*",
    "os::attempt_reserve_memory*",
    "os::commit_memory*",
    "os::pd_commit_memory*",
    "os::Linux::commit_memory_impl",
    "os::map_memory*",
    "os::malloc",
    "os::realloc",
    "AllocateHeap",
    "ReservedSpace::*",
    "VirtualSpace::*",
    // V8.
    "v8::base::OS::Allocate*",
    "v8::base::OS::SetPermissions",
    "v8::base::PageAllocator::*",
    "v8::internal::VirtualMemory::*",
    "v8::internal::AllocatePages*",
    // CPython's allocators.
    "_PyObject_ArenaMmap",
    "new_arena",
    "allocate_from_new_pool",
    "pymalloc_alloc",
    "_PyObject_Malloc",
    "PyObject_Malloc",
    "_PyMem_RawMalloc",
    "PyMem_RawMalloc",
];

/// `sysmalloc.part.0`, `_int_malloc.constprop.0`: GCC's clones of one function.
const CLONES: [&str; 5] = [".part.", ".constprop.", ".isra.", ".cold", ".lto_priv."];

/// Whether `function` is named by `entry`: whole, or by its start where the entry ends in
/// `*`, leaving out GCC's clone suffixes (see [`CLONES`]).
pub fn name_matches(entry: &str, function: &str) -> bool {
    let name = CLONES
        .iter()
        .filter_map(|clone| function.find(clone))
        .min()
        .map_or(function, |at| &function[..at]);
    match entry.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == entry,
    }
}

/// Whether a function is allocator or runtime plumbing (see [`PLUMBING`]).
fn is_plumbing(function: &str) -> bool {
    PLUMBING.iter().any(|entry| name_matches(entry, function))
}

/// A site's frames from the first one past the plumbing (leaf first); all of them when every
/// frame is plumbing.
pub fn own_frames(frames: &[Frame]) -> &[Frame] {
    match frames.iter().position(|f| !is_plumbing(&f.function)) {
        Some(first) => &frames[first..],
        None => frames,
    }
}

/// A stack on one line: its first own frames, callee < caller.
pub fn short_stack(frames: &[Frame]) -> String {
    let names: Vec<&str> = own_frames(frames)
        .iter()
        .take(4)
        .map(|f| f.function.as_str())
        .collect();
    names.join(" < ")
}

/// The frame that names a site in the region table.
pub fn site_name(frames: &[Frame]) -> String {
    own_frames(frames)
        .first()
        .map_or_else(String::new, |f| f.function.clone())
}

/// [`PLUMBING`] as a regular expression for pprof's `drop_frames` (RE2, which pprof
/// anchors at both ends), clones included. pprof matches a name cut at its first `(` (an
/// argument list, or a Go method's receiver), so entries with one are left out: what is
/// left of them would match their neighbours too.
pub fn plumbing_pattern() -> String {
    let quote = |s: &str| {
        s.chars().fold(String::new(), |mut out, c| {
            if r"\.+*?()|[]{}^$".contains(c) {
                out.push('\\');
            }
            out.push(c);
            out
        })
    };
    let entries: Vec<String> = PLUMBING
        .iter()
        .filter(|entry| !entry.contains('('))
        .map(|entry| match entry.strip_suffix('*') {
            Some(prefix) => format!("{}.*", quote(prefix)),
            None => quote(entry),
        })
        .collect();
    let clones: Vec<String> = CLONES.iter().map(|clone| quote(clone)).collect();
    format!("(?:{})(?:(?:{}).*)?", entries.join("|"), clones.join("|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<Frame> {
        names
            .iter()
            .map(|name| Frame {
                function: (*name).into(),
                module: Some("/lib/x".into()),
                ..Frame::default()
            })
            .collect()
    }

    /// pprof's drop_frames names the same plumbing as the table, as pprof anchors it.
    #[test]
    fn the_plumbing_pattern_matches_what_the_table_does() {
        let pattern = regex::Regex::new(&format!("^(?:{})$", plumbing_pattern())).unwrap();
        let names = PLUMBING
            .iter()
            .filter(|entry| !entry.contains('('))
            .flat_map(|entry| {
                let name = entry.replace('*', "_x");
                [format!("{name}.part.0"), format!("{name}.cold"), name]
            });
        for name in names {
            assert!(is_plumbing(&name), "{name}");
            assert!(pattern.is_match(&name), "{name}");
        }
        for name in [
            "main",
            "mmap_mine",
            "xmalloc",
            "runtime.mallocgc",
            "my.part.0",
        ] {
            assert!(!is_plumbing(name), "{name}");
            assert!(!pattern.is_match(name), "{name}");
        }
    }

    /// Sites are named past allocator and runtime plumbing, whatever the runtime.
    #[test]
    fn sites_are_named_past_the_plumbing() {
        let cases: [(&[&str], &str); 5] = [
            (
                &[
                    "__GI___mmap64",
                    "mmap",
                    "sysmalloc_mmap.isra.0",
                    "sysmalloc",
                    "_int_malloc",
                    "malloc",
                    "load_config",
                    "main",
                    "__libc_start_call_main",
                ],
                "load_config < main < __libc_start_call_main",
            ),
            (
                &[
                    "runtime.mmap.func1",
                    "runtime.mmap",
                    "runtime.sysReserveOS",
                    "runtime.sysReserve",
                    "runtime.(*pageAlloc).sysInit",
                    "runtime.(*pageAlloc).init",
                    "runtime.(*mheap).init",
                    "runtime.mallocinit",
                    "runtime.schedinit",
                ],
                "runtime.(*pageAlloc).sysInit < runtime.(*pageAlloc).init < runtime.(*mheap).init \
                 < runtime.mallocinit",
            ),
            (
                &[
                    "__mmap",
                    "allocate_stack",
                    "pthread_create@@GLIBC_2.34",
                    "spawn_workers",
                    "main",
                ],
                "spawn_workers < main",
            ),
            (
                &[
                    "__mmap64",
                    "je_pages_map",
                    "je_extent_alloc_mmap",
                    "je_malloc_default",
                    "zmalloc_usable",
                    "createStringObject",
                ],
                "zmalloc_usable < createStringObject",
            ),
            (&["mmap64", "malloc"], "mmap64 < malloc"),
        ];
        for (stack, label) in cases {
            assert_eq!(short_stack(&frames(stack)), label, "{stack:?}");
        }
        assert_eq!(site_name(&frames(&["brk", "sbrk", "grow"])), "grow");
        assert!(!is_plumbing("mmap_region_list"), "a prefix needs its `*`");
        assert!(is_plumbing("runtime.persistentalloc.func1"));
        assert!(is_plumbing("_int_malloc.constprop.0"));
    }

    #[test]
    fn a_stack_ending_elsewhere_than_an_entry_point_is_truncated() {
        assert!(!looks_truncated(&frames(&[
            "f",
            "main",
            "__libc_start_call_main"
        ])));
        assert!(!looks_truncated(&frames(&["f", "start_thread"])));
        assert!(looks_truncated(&frames(&["f", "g"])));
        assert!(looks_truncated(&frames(&["f", "[unknown]+0x7ffd64cc4f50"])));
        assert!(!looks_truncated(&[]));
    }
}
