//! A process's address space as a live map of regions, kept in step with the memory
//! syscalls and page faults it makes, with reserved and committed bytes as running
//! totals and the pages it touched.
//!
//! Every mutator mirrors what the kernel does for a *successful* call: the caller drops
//! failed ones. Addresses from successful calls are page aligned; lengths are rounded up
//! here as the kernel rounds them.

use crate::procfs::MapsEntry;
use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap},
    ops::Range,
    sync::Arc,
};

pub const PAGE_SIZE: u64 = 4096;
/// The kernel's default fault_around_bytes (64 KiB), in pages.
const FAULT_AROUND_PAGES: u64 = 16;

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;
const PROT_MASK: u64 = 7;
const HEAP_PROT: u32 = PROT_READ | PROT_WRITE;

const MAP_SHARED: u64 = 0x01; // also set in MAP_SHARED_VALIDATE (0x03)
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_GROWSDOWN: u64 = 0x0100;
const MAP_LOCKED: u64 = 0x2000;
const MAP_POPULATE: u64 = 0x8000;
const MAP_STACK: u64 = 0x20000;
const MAP_HUGETLB: u64 = 0x40000;
const MAP_HUGE_SHIFT: u64 = 26;
const MAP_HUGE_MASK: u64 = 0x3f;
const DEFAULT_HUGE_SHIFT: u64 = 21; // 2 MiB

const MREMAP_DONTUNMAP: u64 = 4;

const MLOCK_ONFAULT: u64 = 1;
const MCL_CURRENT: u64 = 1;
const MCL_FUTURE: u64 = 2;
const MCL_ONFAULT: u64 = 4;

const SHM_RDONLY: u64 = 0o10000;
const SHM_EXEC: u64 = 0o100000;

const MADV_DONTNEED: u64 = 4;
const MADV_REMOVE: u64 = 9;
const MADV_POPULATE_READ: u64 = 22;
const MADV_POPULATE_WRITE: u64 = 23;
const MADV_DONTNEED_LOCKED: u64 = 24;
const MADV_HUGEPAGE: u64 = 14;
const MADV_NOHUGEPAGE: u64 = 15;
/// x86_64's PMD-mapped transparent huge page.
const HUGE_PAGE: u64 = 2 << 20;

/// x86 page fault error code bit: the access was a write.
const FAULT_WRITE: u64 = 2;

/// Largest mapping before tracing taken for a thread's stack by its shape (glibc's default
/// is 8 MiB, Java's 1 MiB; servers raise them).
const THREAD_STACK_MAX: u64 = 64 << 20;

/// Whether entry `i` of a process's smaps (mapped before tracing) is a thread's stack or the
/// guard glibc puts below one: anonymous, private, with the no-huge-pages flag the kernel
/// gives MAP_STACK mappings (since 6.7), the stack writable right above a guard of a few
/// PROT_NONE pages (glibc's, or one the JVM maps). The flag alone is not enough:
/// MADV_NOHUGEPAGE sets it too (Go's scavenger, jemalloc's metadata).
fn is_thread_stack(entries: &[MapsEntry], i: usize) -> bool {
    let plain = |e: &MapsEntry| e.path.is_none() && !e.perms.shared;
    let guard = |e: &MapsEntry| plain(e) && e.perms.prot() == 0 && e.end - e.start <= GUARD_MAX;
    let stack = |e: &MapsEntry| {
        plain(e) && e.no_huge && e.perms.write && e.end - e.start <= THREAD_STACK_MAX
    };
    let e = &entries[i];
    let below = i.checked_sub(1).map(|b| &entries[b]);
    let above = entries.get(i + 1);
    (stack(e) && below.is_some_and(|b| b.end == e.start && guard(b)))
        || (e.no_huge && guard(e) && above.is_some_and(|a| a.start == e.end && stack(a)))
}

/// Largest PROT_NONE region below a stack still called its guard (glibc's default guard
/// is one page, Java's a few), and the largest called a guard at all.
pub const GUARD_MAX: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegionKind {
    Heap,
    Anonymous,
    File,
    MainStack,
    ThreadStack,
    /// A SysV shared memory segment (shmat).
    SysvShm,
    Vdso,
    Vvar,
    /// Other kernel-named mappings ("[uprobes]", ...).
    Special,
}

impl RegionKind {
    /// The kind of a /proc/PID/maps entry, from its path.
    fn of_maps(path: Option<&str>, shared: bool) -> Self {
        match path {
            None => Self::Anonymous,
            Some("[heap]") => Self::Heap,
            Some("[stack]") => Self::MainStack,
            Some("[vdso]") => Self::Vdso,
            Some("[vvar]" | "[vvar_vclock]") => Self::Vvar,
            Some(p) if p.starts_with("[anon:") || p.starts_with("[anon_shmem:") => Self::Anonymous,
            Some(p) if p.starts_with('[') => Self::Special,
            // What a MAP_SHARED|MAP_ANONYMOUS mapping (shmem) looks like in maps.
            Some("/dev/zero (deleted)") if shared => Self::Anonymous,
            Some(p) if p.starts_with("/SYSV") && shared => Self::SysvShm,
            Some(_) => Self::File,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Heap => "heap",
            Self::Anonymous => "anonymous",
            Self::File => "file",
            Self::MainStack => "main stack",
            Self::ThreadStack => "thread stack",
            Self::SysvShm => "sysv shm",
            Self::Vdso => "vdso",
            Self::Vvar => "vvar",
            Self::Special => "special",
        }
    }
}

/// A call stack that made memory, as an index into the session's table of sites.
pub type SiteId = u32;
/// Regions that existed before tracing began (seeded from /proc).
pub const SITE_BEFORE_TRACING: SiteId = 0;
/// Regions whose creating stack could not be captured.
pub const SITE_NO_STACK: SiteId = 1;

/// One mapping, like a line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// `PROT_READ | PROT_WRITE | PROT_EXEC` bits; 0 is PROT_NONE.
    pub prot: u32,
    pub shared: bool,
    pub kind: RegionKind,
    /// As /proc showed it at attach; for files mapped later, None until `name_files`.
    pub path: Option<Arc<str>>,
    pub growsdown: bool,
    /// Resident bytes smaps reported at attach (pages touched before memprof looked).
    pub seeded_resident: u64,
    /// It holds pages of its own (anonymous memory written to, or a private file mapping's
    /// pages copied on write): fork copies its page tables, so a child starts with its
    /// resident pages. A child faults the pages of every other region in again.
    pub anon: bool,
    /// madvise(MADV_HUGEPAGE): a write fault in private anonymous memory maps a whole huge
    /// page where one fits (transparent huge pages in "madvise" mode).
    pub huge: bool,
    /// Offset in the mapped file of `start` (meaningful for file regions).
    pub offset: u64,
    /// The call stack that reserved this region ("reserved at").
    pub site: SiteId,
    /// The site of the reservation it was carved from: its own, or for a mapping placed
    /// with MAP_FIXED over an earlier one (a runtime committing part of the address space
    /// it reserved), that one's. It says what the memory is for.
    pub reservation: SiteId,
}

impl Region {
    /// A mapping made while traced: no path known yet, nothing of it resident.
    fn made(start: u64, end: u64, prot: u32, shared: bool, kind: RegionKind, site: SiteId) -> Self {
        Self {
            start,
            end,
            prot,
            shared,
            kind,
            path: None,
            growsdown: false,
            seeded_resident: 0,
            anon: false,
            huge: false,
            offset: 0,
            site,
            reservation: site,
        }
    }

    /// Whether the kernel faults its pages in with a write when it populates it
    /// (MAP_POPULATE, mlock): where it is private and writable, to break copy-on-write.
    fn populated_with_write(&self) -> bool {
        self.prot & PROT_WRITE != 0 && !self.shared
    }

    pub fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Its bytes when not PROT_NONE.
    pub fn committed(&self) -> u64 {
        if self.prot == 0 { 0 } else { self.size() }
    }

    /// Whether an access that faults a page in here leaves it resident: private
    /// anonymous memory read before it is written maps the shared zero page, which no
    /// RSS counter charges; an access the protection forbids is a SIGSEGV.
    fn resident_after(&self, write: bool) -> bool {
        let allowed = if write {
            self.prot & PROT_WRITE != 0
        } else {
            self.prot != 0
        };
        allowed && (write || self.shared || self.kind == RegionKind::File)
    }
}

/// Sums over all regions, kept in step on every insert, removal and in-place change.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Totals {
    reserved: u64,
    committed: u64,
    /// Bytes of File regions whose path is not known yet.
    unnamed_files: u64,
    /// How many times an executable file mapping came, went or changed (its path named): the
    /// unwinder's modules follow them.
    exec_file_changes: u64,
}

impl Totals {
    fn of(r: &Region) -> Self {
        let file = r.kind == RegionKind::File;
        let unnamed = file && r.path.is_none();
        Self {
            reserved: r.size(),
            committed: r.committed(),
            unnamed_files: if unnamed { r.size() } else { 0 },
            exec_file_changes: u64::from(file && r.prot & PROT_EXEC != 0),
        }
    }

    fn add(&mut self, r: &Region) {
        let d = Self::of(r);
        self.reserved += d.reserved;
        self.committed += d.committed;
        self.unnamed_files += d.unnamed_files;
        self.exec_file_changes += d.exec_file_changes;
    }

    fn sub(&mut self, r: &Region) {
        let d = Self::of(r);
        self.reserved -= d.reserved;
        self.committed -= d.committed;
        self.unnamed_files -= d.unnamed_files;
        self.exec_file_changes += d.exec_file_changes;
    }
}

/// Pages per chunk of `PageSet`: one 512-bit bitmap covers 2 MiB.
const CHUNK_PAGES: u64 = 512;

/// A sparse set of pages, as bitmaps of 512 pages keyed by chunk index. The API speaks in
/// byte addresses.
#[derive(Debug, Default, Clone)]
struct PageSet {
    chunks: BTreeMap<u64, [u64; 8]>,
    len: u64,
}

impl PageSet {
    fn insert(&mut self, addr: u64) {
        let page = addr / PAGE_SIZE;
        let word =
            &mut self.chunks.entry(page / CHUNK_PAGES).or_default()[(page / 64 % 8) as usize];
        let bit = 1 << (page % 64);
        self.len += u64::from(*word & bit == 0);
        *word |= bit;
    }

    fn insert_range(&mut self, start: u64, end: u64) {
        let (first, last, chunks) = pages(start, end);
        for k in chunks {
            let chunk = self.chunks.entry(k).or_default();
            for (word, mask) in chunk.iter_mut().zip(chunk_mask(k, first, last)) {
                self.len += u64::from((mask & !*word).count_ones());
                *word |= mask;
            }
        }
    }

    fn remove_range(&mut self, start: u64, end: u64) {
        let (first, last, chunks) = pages(start, end);
        let len = &mut self.len;
        let emptied = self.chunks.extract_if(chunks, |&k, chunk| {
            for (word, mask) in chunk.iter_mut().zip(chunk_mask(k, first, last)) {
                *len -= u64::from((*word & mask).count_ones());
                *word &= !mask;
            }
            *chunk == [0; 8]
        });
        emptied.for_each(drop);
    }

    /// The (chunk, masked bitmap) pairs holding the pages of [start, end).
    fn masked(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, [u64; 8])> {
        let (first, last, chunks) = pages(start, end);
        self.chunks.range(chunks).map(move |(&k, chunk)| {
            let mask = chunk_mask(k, first, last);
            (k, std::array::from_fn(|w| chunk[w] & mask[w]))
        })
    }

    fn count(&self, start: u64, end: u64) -> u64 {
        self.masked(start, end)
            .flat_map(|(_, bits)| bits)
            .map(|w| u64::from(w.count_ones()))
            .sum()
    }

    /// Addresses of the pages in [start, end).
    fn iter(&self, start: u64, end: u64) -> impl Iterator<Item = u64> {
        self.masked(start, end).flat_map(|(k, bits)| {
            (0..8u64).flat_map(move |w| {
                let mut word = bits[w as usize];
                std::iter::from_fn(move || {
                    (word != 0).then(|| {
                        let bit = u64::from(word.trailing_zeros());
                        word &= word - 1;
                        (k * CHUNK_PAGES + w * 64 + bit) * PAGE_SIZE
                    })
                })
            })
        })
    }
}

/// Pages [first, last) of the bytes [start, end), and the chunks holding them.
fn pages(start: u64, end: u64) -> (u64, u64, Range<u64>) {
    let (first, last) = (start / PAGE_SIZE, end.div_ceil(PAGE_SIZE));
    (first, last, first / CHUNK_PAGES..last.div_ceil(CHUNK_PAGES))
}

/// The bits of chunk `k` that fall in pages [first, last).
fn chunk_mask(k: u64, first: u64, last: u64) -> [u64; 8] {
    let base = k * CHUNK_PAGES;
    let (lo, hi) = (first.saturating_sub(base), last.saturating_sub(base));
    std::array::from_fn(|w| {
        let w0 = w as u64 * 64;
        let (l, h) = (lo.clamp(w0, w0 + 64) - w0, hi.clamp(w0, w0 + 64) - w0);
        if h > l {
            u64::MAX >> (64 - (h - l)) << l
        } else {
            0
        }
    })
}

fn align_up(x: u64, align: u64) -> u64 {
    x.saturating_add(align - 1) & !(align - 1)
}

/// The end of a syscall's [addr, addr + len), its length rounded up to pages.
fn page_end(addr: u64, len: u64) -> u64 {
    addr.saturating_add(align_up(len, PAGE_SIZE))
}

/// `total * part / whole` without overflow, to the nearest whole page (no more than
/// `total`): the share of a region's resident bytes that goes with `part` of its bytes.
fn share(total: u64, part: u64, whole: u64) -> u64 {
    let exact = u128::from(total) * u128::from(part) / u128::from(whole);
    let page = u128::from(PAGE_SIZE);
    (((exact + page / 2) / page * page) as u64).min(total)
}

/// Consecutive regions usually have the same path (an ELF's segments): share one copy.
fn intern(last: &mut Option<Arc<str>>, path: &str) -> Arc<str> {
    match last {
        Some(p) if **p == *path => p.clone(),
        _ => last.insert(path.into()).clone(),
    }
}

/// A process's address space: non-overlapping regions by start address.
#[derive(Debug, Default, Clone)]
pub struct AddressSpace {
    regions: BTreeMap<u64, Region>,
    totals: Totals,
    touched: PageSet,
    brk: Option<u64>,
    /// Bytes unmapped, by site id: sparse, as ids are numbered across every process.
    released: HashMap<SiteId, u64>,
    /// mlockall(MCL_FUTURE): mappings made from now on are locked, so faulted in whole.
    lock_future: bool,
}

impl AddressSpace {
    pub fn new() -> Self {
        Self::default()
    }

    /// The address space /proc/PID/smaps (or maps) shows, with stat's start_brk for a
    /// process that has no heap yet.
    pub fn from_maps(entries: &[MapsEntry], start_brk: Option<u64>) -> Self {
        let mut space = Self::new();
        let mut last_path = None;
        for (i, e) in entries.iter().enumerate() {
            let path = e.path.as_deref();
            // The vsyscall page is not the process's own: VmSize leaves it out.
            if path == Some("[vsyscall]") {
                continue;
            }
            let kind = match RegionKind::of_maps(path, e.perms.shared) {
                RegionKind::Anonymous if is_thread_stack(entries, i) => RegionKind::ThreadStack,
                kind => kind,
            };
            space.assign(Region {
                start: e.start,
                end: e.end,
                prot: e.perms.prot(),
                shared: e.perms.shared,
                kind,
                path: path.map(|p| intern(&mut last_path, p)),
                growsdown: e.growsdown || kind == RegionKind::MainStack,
                seeded_resident: e.rss_bytes,
                // Smaps counts a private anonymous region's resident pages as its own too.
                anon: !e.perms.shared
                    && (e.anonymous_bytes > 0 || (kind != RegionKind::File && e.rss_bytes > 0)),
                huge: e.huge,
                offset: e.offset,
                site: SITE_BEFORE_TRACING,
                reservation: SITE_BEFORE_TRACING,
            });
        }
        // The heap's end stands in for brk: both round up to the same page.
        let heap_end = space
            .regions
            .values()
            .rev()
            .find(|r| r.kind == RegionKind::Heap)
            .map(|r| r.end);
        space.brk = heap_end.or(start_brk);
        space
    }

    pub fn reserved(&self) -> u64 {
        self.totals.reserved
    }

    pub fn committed(&self) -> u64 {
        self.totals.committed
    }

    /// A count that changes whenever an executable file mapping comes, goes or is named.
    pub fn exec_file_changes(&self) -> u64 {
        self.totals.exec_file_changes
    }

    pub fn touched_bytes(&self) -> u64 {
        self.touched.len * PAGE_SIZE
    }

    pub fn brk_value(&self) -> Option<u64> {
        self.brk
    }

    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }

    /// The region containing `addr`.
    pub fn region_at(&self, addr: u64) -> Option<&Region> {
        self.regions
            .range(..=addr)
            .next_back()
            .map(|(_, r)| r)
            .filter(|r| r.end > addr)
    }

    /// Resident bytes of `r`: seeded at attach plus touched since. Capped at its size, as
    /// a seeded page faulted in again (after swap, on COW) would count twice.
    pub fn region_resident(&self, r: &Region) -> u64 {
        (r.seeded_resident + self.touched.count(r.start, r.end) * PAGE_SIZE).min(r.size())
    }

    /// What a region is, for people: its kind, or what a PROT_NONE region is for.
    pub fn region_label(&self, r: &Region) -> &'static str {
        match (r.prot, self.stack_guarded(r)) {
            (0, Some(_)) => "guard",
            (0, None) => "PROT_NONE reservation",
            _ => r.kind.label(),
        }
    }

    /// The kind of stack (main or thread) whose guard `r` is: a PROT_NONE region of a few
    /// pages right below a stack.
    pub fn stack_guarded(&self, r: &Region) -> Option<RegionKind> {
        let above = self.regions.get(&r.end)?;
        let stack = matches!(above.kind, RegionKind::MainStack | RegionKind::ThreadStack);
        (r.prot == 0 && r.size() <= GUARD_MAX && above.prot != 0 && stack).then_some(above.kind)
    }

    pub fn has_unnamed_files(&self) -> bool {
        self.totals.unnamed_files > 0
    }

    /// Names File regions mapped since attach from a fresh /proc/PID/maps read.
    pub fn name_files(&mut self, entries: &[MapsEntry]) {
        if !self.has_unnamed_files() {
            return;
        }
        let mut last_path = None;
        let unnamed = self
            .regions
            .values_mut()
            .filter(|r| r.kind == RegionKind::File && r.path.is_none());
        for r in unnamed {
            // maps is sorted by address.
            let i = entries.partition_point(|e| e.end <= r.start);
            let entry = entries.get(i).filter(|e| e.start <= r.start);
            if let Some(path) = entry.and_then(|e| e.path.as_deref()) {
                self.totals.sub(r);
                r.path = Some(intern(&mut last_path, path));
                self.totals.add(r);
            }
        }
    }

    /// Takes each region's resident bytes from the kernel's own per-mapping figures
    /// (/proc/PID/smaps `Rss`, read at the end of tracing): exact where memprof's count of
    /// faults is not (pages a fork did or did not copy, huge pages, readahead). Where a
    /// mapping of the kernel spans several regions (it merged what memprof keeps apart), its
    /// pages are shared among them as memprof counted them (by size where it counted none),
    /// whole pages, none beyond a region's size. Returns the resident bytes of all the
    /// kernel's mappings: more than the regions hold only where memprof lacks a mapping (its
    /// reserved bytes then differ from VmSize too).
    pub fn settle_resident(&mut self, entries: &[MapsEntry]) -> u64 {
        let mut settled: BTreeMap<u64, u64> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.rss_bytes > 0) {
            self.split_at(e.start);
            self.split_at(e.end);
            let parts: Vec<(u64, u64, u64)> = self
                .regions
                .range(e.start..e.end)
                .map(|(&start, r)| {
                    let pages = r.size() / PAGE_SIZE;
                    (start, pages, self.region_resident(r) / PAGE_SIZE)
                })
                .collect();
            let resident = e.rss_bytes / PAGE_SIZE;
            let counted: u128 = parts
                .iter()
                .map(|&(_, _, counted)| u128::from(counted))
                .sum();
            // None counted: by size.
            let (parts, counted) = match counted {
                0 => (
                    parts
                        .iter()
                        .map(|&(s, pages, _)| (s, pages, pages))
                        .collect::<Vec<_>>(),
                    parts.iter().map(|&(_, pages, _)| u128::from(pages)).sum(),
                ),
                _ => (parts, counted),
            };
            // As counted (whole pages, the largest remainders first), then what is left into
            // the room each region has.
            let mut shares: Vec<(u64, u64, u64, u128)> = parts
                .iter()
                .map(|&(start, pages, counted_here)| {
                    let exact = u128::from(resident) * u128::from(counted_here);
                    let (share, rest) = match counted {
                        0 => (0, 0),
                        _ => (exact / counted, exact % counted),
                    };
                    (start, pages, (share as u64).min(pages), rest)
                })
                .collect();
            let mut left = resident - shares.iter().map(|s| s.2).sum::<u64>().min(resident);
            shares.sort_by_key(|&(start, .., rest)| (std::cmp::Reverse(rest), start));
            for one_more in [true, false] {
                for (_, pages, take, _) in &mut shares {
                    let room = (*pages - *take).min(if one_more { 1 } else { u64::MAX });
                    let more = room.min(left);
                    *take += more;
                    left -= more;
                }
            }
            for (start, _, take, _) in shares {
                *settled.entry(start).or_default() += take;
            }
        }
        self.touched = PageSet::default();
        for (start, r) in &mut self.regions {
            r.seeded_resident = settled.get(start).copied().unwrap_or(0) * PAGE_SIZE;
        }
        entries
            .iter()
            .map(|e| e.rss_bytes / PAGE_SIZE * PAGE_SIZE)
            .sum()
    }

    /// Names the file mapping that starts at `start` (the kernel sent its path when it was
    /// mapped).
    pub fn name_file(&mut self, start: u64, path: &str) {
        if let Some(r) = self.regions.get_mut(&start)
            && r.kind == RegionKind::File
            && r.path.is_none()
        {
            self.totals.sub(r);
            r.path = Some(path.into());
            self.totals.add(r);
        }
    }

    /// `addr` is the syscall's return value. File mappings get their path from `name_file`
    /// or `name_files`.
    #[allow(clippy::too_many_arguments)] // mmap's own six arguments, and who called it
    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: u64,
        flags: u64,
        fd: i64,
        offset: u64,
        site: SiteId,
    ) {
        let align = if flags & MAP_HUGETLB != 0 {
            match flags >> MAP_HUGE_SHIFT & MAP_HUGE_MASK {
                0 => 1 << DEFAULT_HUGE_SHIFT,
                shift => 1 << shift,
            }
        } else {
            PAGE_SIZE
        };
        let end = addr.saturating_add(align_up(len, align));
        let kind = match (flags & MAP_ANONYMOUS != 0 || fd < 0, flags & MAP_STACK != 0) {
            (true, true) => RegionKind::ThreadStack,
            (true, false) => RegionKind::Anonymous,
            (false, _) => RegionKind::File,
        };
        let prot = (prot & PROT_MASK) as u32;
        let shared = flags & MAP_SHARED != 0;
        let reservation = match flags & MAP_FIXED {
            0 => site,
            _ => self.region_at(addr).map_or(site, |r| r.reservation),
        };
        self.assign(Region {
            growsdown: flags & MAP_GROWSDOWN != 0,
            offset,
            reservation,
            ..Region::made(addr, end, prot, shared, kind, site)
        });
        if flags & (MAP_POPULATE | MAP_LOCKED) != 0 || self.lock_future {
            self.populate(addr, end, Region::populated_with_write);
        }
    }

    /// A SysV shared memory segment attached at `addr`, `len` bytes (the kernel's mapping).
    pub fn shmat(&mut self, addr: u64, len: u64, shmflg: u64, site: SiteId) {
        let mut prot = PROT_READ;
        if shmflg & SHM_RDONLY == 0 {
            prot |= PROT_WRITE;
        }
        if shmflg & SHM_EXEC != 0 {
            prot |= PROT_EXEC;
        }
        let end = addr.saturating_add(align_up(len, PAGE_SIZE));
        self.assign(Region::made(
            addr,
            end,
            prot,
            true,
            RegionKind::SysvShm,
            site,
        ));
    }

    /// Detaches the segment attached at `addr`: as the kernel does, every piece of it from
    /// there on (mprotect may have split it), known by its offset in the segment.
    pub fn shmdt(&mut self, addr: u64) {
        let mut end = addr;
        while let Some(r) = self
            .region_at(end)
            .filter(|r| r.start == end && r.kind == RegionKind::SysvShm && r.offset == end - addr)
        {
            end = r.end;
        }
        self.release(addr, end);
    }

    /// mlock, and mlock2 without MLOCK_ONFAULT: the kernel faults every page of the range
    /// in, with a write where the mapping is private and writable (to break copy-on-write).
    pub fn mlock(&mut self, addr: u64, len: u64, flags: u64) {
        if flags & MLOCK_ONFAULT == 0 {
            self.populate(addr, page_end(addr, len), Region::populated_with_write);
        }
    }

    /// mlockall: MCL_CURRENT faults every mapping in now (unless MCL_ONFAULT), MCL_FUTURE
    /// every one made from now on.
    pub fn mlockall(&mut self, flags: u64) {
        if flags & MCL_CURRENT != 0 && flags & MCL_ONFAULT == 0 {
            self.populate(0, u64::MAX, Region::populated_with_write);
        }
        self.lock_future = flags & MCL_FUTURE != 0 && flags & MCL_ONFAULT == 0;
    }

    /// munlockall: mappings made from now on are no longer locked (those locked stay
    /// resident until reclaim, which rss_stat reports).
    pub fn munlockall(&mut self) {
        self.lock_future = false;
    }

    pub fn munmap(&mut self, addr: u64, len: u64) {
        self.release(addr, page_end(addr, len));
    }

    /// `new_addr` is the syscall's return value: `old_addr` when resized in place.
    pub fn mremap(&mut self, old_addr: u64, old_len: u64, new_len: u64, flags: u64, new_addr: u64) {
        let (old_len, new_len) = (align_up(old_len, PAGE_SIZE), align_up(new_len, PAGE_SIZE));
        let (old_end, new_end) = (old_addr + old_len, new_addr + new_len);
        if old_len == 0 {
            // A second mapping of the same shared memory; its pages are mapped on fault.
            if let Some(r) = self.region_at(old_addr) {
                let copy = Region {
                    start: new_addr,
                    end: new_end,
                    seeded_resident: 0,
                    ..r.clone()
                };
                self.assign(copy);
            }
        } else if new_addr == old_addr {
            match new_len.cmp(&old_len) {
                Ordering::Less => self.release(new_end, old_end),
                Ordering::Greater => _ = self.extend_end(old_end, new_end, |_| true),
                Ordering::Equal => {}
            }
        } else {
            let copy_end = old_addr + old_len.min(new_len);
            let moved = |a: u64| a - old_addr + new_addr;
            self.split_at(old_addr);
            self.split_at(copy_end);
            let pieces: Vec<Region> = self
                .regions
                .range(old_addr..copy_end)
                .map(|(_, r)| Region {
                    start: moved(r.start),
                    end: moved(r.end),
                    ..r.clone()
                })
                .collect();
            let pages: Vec<u64> = self.touched.iter(old_addr, copy_end).map(moved).collect();
            if flags & MREMAP_DONTUNMAP != 0 {
                // The old mapping stays, emptied: its pages went with the move.
                self.touched.remove_range(old_addr, old_end);
                self.regions
                    .range_mut(old_addr..old_end)
                    .for_each(|(_, r)| r.seeded_resident = 0);
            } else {
                self.clear(old_addr, old_end);
            }
            self.release(new_addr, new_end);
            for r in pieces {
                self.insert(r);
            }
            if new_len > old_len {
                self.extend_end(new_addr + old_len, new_end, |_| true);
            }
            for a in pages {
                self.touched.insert(a);
            }
        }
    }

    /// `new_brk` is the syscall's return value (the current break, also on failure).
    /// Growth made by another call site than the heap's last piece becomes its own region.
    pub fn brk(&mut self, new_brk: u64, site: SiteId) {
        let Some(old_brk) = self.brk.replace(new_brk) else {
            return;
        };
        let (old_end, new_end) = (align_up(old_brk, PAGE_SIZE), align_up(new_brk, PAGE_SIZE));
        if new_end < old_end {
            self.release(new_end, old_end);
        } else if new_end > old_end
            && !self.extend_end(old_end, new_end, |r| {
                r.kind == RegionKind::Heap && r.prot == HEAP_PROT && r.site == site
            })
        {
            let heap = Region::made(old_end, new_end, HEAP_PROT, false, RegionKind::Heap, site);
            self.insert(heap);
        }
        if self.lock_future && new_end > old_end {
            self.populate(old_end, new_end, Region::populated_with_write);
        }
    }

    pub fn mprotect(&mut self, addr: u64, len: u64, prot: u64) {
        let end = page_end(addr, len);
        self.split_at(addr);
        self.split_at(end);
        for r in self.regions.range_mut(addr..end).map(|(_, r)| r) {
            self.totals.sub(r);
            r.prot = (prot & PROT_MASK) as u32;
            self.totals.add(r);
        }
    }

    pub fn madvise(&mut self, addr: u64, len: u64, advice: u64) {
        let end = page_end(addr, len);
        match advice {
            MADV_DONTNEED | MADV_REMOVE | MADV_DONTNEED_LOCKED => {
                self.touched.remove_range(addr, end);
                let first = self.region_at(addr).map_or(addr, |r| r.start);
                for r in self.regions.range_mut(first..end).map(|(_, r)| r) {
                    let overlap = r.end.min(end) - r.start.max(addr);
                    r.seeded_resident -= share(r.seeded_resident, overlap, r.size());
                }
            }
            MADV_HUGEPAGE | MADV_NOHUGEPAGE => {
                self.split_at(addr);
                self.split_at(end);
                for r in self.regions.range_mut(addr..end).map(|(_, r)| r) {
                    r.huge = advice == MADV_HUGEPAGE;
                }
            }
            MADV_POPULATE_READ => self.populate(addr, end, |_| false),
            MADV_POPULATE_WRITE => self.populate(addr, end, |_| true),
            // MADV_FREE (8) included: its pages stay resident until reclaim takes them,
            // which rss_stat reports.
            _ => {}
        }
    }

    /// User page faults, one on each of `pages` pages from `address`'s on, all with one
    /// `error_code` (the x86 one, bit 1: write): the kernel sends such a run as one event.
    /// `charge` is called with the site of each region the faults landed in and how many did.
    pub fn fault_run(
        &mut self,
        address: u64,
        pages: u64,
        error_code: u64,
        mut charge: impl FnMut(SiteId, u64),
    ) {
        let write = error_code & FAULT_WRITE != 0;
        let end = (address / PAGE_SIZE).saturating_add(pages) * PAGE_SIZE;
        let mut at = address;
        while at < end {
            let page = at / PAGE_SIZE * PAGE_SIZE;
            let region = match self.region_at(at) {
                Some(r) => r,
                None => match self.grow_stack(at) {
                    Some(r) => r,
                    // Outside every region: a SIGSEGV.
                    None => {
                        at = page + PAGE_SIZE;
                        continue;
                    }
                },
            };
            let stop = region.end.min(end);
            let (site, resident) = (region.site, region.resident_after(write));
            // A write that makes a page of private memory resident: the page is the region's own.
            let owned = write && resident && !region.shared;
            let huge = owned
                && region.huge
                && matches!(region.kind, RegionKind::Anonymous | RegionKind::Heap);
            let (region_start, region_end, kind) = (region.start, region.end, region.kind);
            if owned
                && !region.anon
                && let Some(r) = self.regions.get_mut(&region_start)
            {
                r.anon = true;
            }
            // A read fault on a file maps the neighbours already in the page cache too
            // ("fault-around"); they usually are, so count each fault's whole window.
            let (first, last) = if kind == RegionKind::File && !write {
                let window = FAULT_AROUND_PAGES * PAGE_SIZE;
                (
                    (page / window * window).max(region_start),
                    stop.div_ceil(window).saturating_mul(window).min(region_end),
                )
            } else if huge {
                // A huge page where a whole one fits in the region; 4 KiB pages at its edges.
                let fits = |block: u64| block >= region_start && block + HUGE_PAGE <= region_end;
                let (low, high) = (
                    page / HUGE_PAGE * HUGE_PAGE,
                    (stop - 1) / HUGE_PAGE * HUGE_PAGE,
                );
                (
                    if fits(low) { low } else { page },
                    if fits(high) { high + HUGE_PAGE } else { stop },
                )
            } else {
                (page, stop)
            };
            if resident {
                self.touched.insert_range(first, last);
            }
            charge(site, (stop - page) / PAGE_SIZE);
            at = stop;
        }
    }

    /// The kernel grows a stack (a growsdown region) down to a fault in the gap below it.
    fn grow_stack(&mut self, address: u64) -> Option<&Region> {
        let (&start, stack) = self.regions.range(address..).next()?;
        if !stack.growsdown {
            return None;
        }
        let (end, new_start) = (stack.end, address / PAGE_SIZE * PAGE_SIZE);
        self.resize(start, new_start, end);
        self.regions.get(&new_start)
    }

    /// Marks the pages of [start, end) that an access of each region there makes resident,
    /// a write where `write` says so.
    fn populate(&mut self, start: u64, end: u64, write: impl Fn(&Region) -> bool) {
        let first = self.region_at(start).map_or(start, |r| r.start);
        for r in self.regions.range_mut(first..end).map(|(_, r)| r) {
            let write = write(r);
            if r.resident_after(write) {
                self.touched
                    .insert_range(r.start.max(start), r.end.min(end));
                r.anon |= write && !r.shared;
            }
        }
    }

    /// Adds a region where there may be others: what it overlaps goes.
    fn assign(&mut self, r: Region) {
        self.release(r.start, r.end);
        self.insert(r);
    }

    /// Unmaps [start, end) for good, charging the bytes back to the sites that made them.
    fn release(&mut self, start: u64, end: u64) {
        self.split_at(start);
        self.split_at(end);
        for r in self.regions.range(start..end).map(|(_, r)| r) {
            *self.released.entry(r.site).or_default() += r.size();
        }
        self.clear(start, end);
    }

    /// The address space after exec: `new`'s regions, this one's history of releases.
    pub fn replace(&mut self, new: AddressSpace) {
        let released = std::mem::take(&mut self.released);
        *self = new;
        self.released = released;
    }

    /// A forked child's copy: the same regions, no releases of its own yet.
    pub fn forked(&self) -> Self {
        // Memory locks are not inherited across fork.
        let mut child = Self {
            released: HashMap::new(),
            lock_future: false,
            ..self.clone()
        };
        // Fork copies the page tables of the regions with pages of their own only (the
        // kernel's vma_needs_copy): the child faults the others' pages in again.
        for r in child.regions.values_mut().filter(|r| !r.anon) {
            r.seeded_resident = 0;
            child.touched.remove_range(r.start, r.end);
        }
        child
    }

    /// Bytes unmapped so far, by the site that had reserved them.
    pub fn released(&self, site: SiteId) -> u64 {
        self.released.get(&site).copied().unwrap_or(0)
    }

    /// Every site that has released bytes, with how many.
    pub fn released_by_site(&self) -> impl Iterator<Item = (SiteId, u64)> + '_ {
        self.released
            .iter()
            .map(|(&site, &bytes)| (site, bytes))
            .filter(|&(_, bytes)| bytes > 0)
    }

    /// Adds a region over free space.
    fn insert(&mut self, r: Region) {
        if r.start >= r.end {
            return;
        }
        debug_assert!(
            self.region_at(r.start).is_none()
                && self.regions.range(r.start..r.end).next().is_none()
        );
        self.totals.add(&r);
        self.regions.insert(r.start, r);
    }

    /// Unmaps [start, end): regions there go, those across its ends are cut.
    fn clear(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        self.split_at(start);
        self.split_at(end);
        for (_, r) in self.regions.extract_if(start..end, |_, _| true) {
            self.totals.sub(&r);
        }
        self.touched.remove_range(start, end);
    }

    /// Cuts the region across `addr` in two, sharing its seeded resident bytes by size.
    fn split_at(&mut self, addr: u64) {
        let Some((_, r)) = self.regions.range_mut(..addr).next_back() else {
            return;
        };
        if r.end <= addr {
            return;
        }
        let head_resident = share(r.seeded_resident, addr - r.start, r.size());
        let tail = Region {
            start: addr,
            seeded_resident: r.seeded_resident - head_resident,
            offset: r.offset + (addr - r.start),
            ..r.clone()
        };
        r.end = addr;
        r.seeded_resident = head_resident;
        self.regions.insert(addr, tail);
    }

    /// Moves the region starting at `key` to [start, end).
    fn resize(&mut self, key: u64, start: u64, end: u64) {
        if let Some(mut r) = self.regions.remove(&key) {
            self.totals.sub(&r);
            (r.start, r.end) = (start, end);
            self.insert(r);
        }
    }

    /// Unmaps [end, new_end) and stretches the region ending at `end` over it if `fits`
    /// it; false when there was no such region.
    fn extend_end(&mut self, end: u64, new_end: u64, fits: impl Fn(&Region) -> bool) -> bool {
        self.release(end, new_end);
        let below = end.checked_sub(1).and_then(|a| self.region_at(a));
        let below = below.filter(|r| r.end == end && fits(r));
        let Some(start) = below.map(|r| r.start) else {
            return false;
        };
        self.resize(start, start, new_end);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::{Perms, parse_maps, read_smaps, read_status};

    const P: u64 = PAGE_SIZE;
    const A: u64 = 0x7f00_0000_0000;
    const B: u64 = 0x7f10_0000_0000;
    const RW: u64 = 3;
    const PRIVATE_ANON: u64 = 0x22;
    const SHARED_ANON: u64 = 0x21;
    const MAYMOVE: u64 = 1;
    const READ_FAULT: u64 = 4; // user
    const WRITE_FAULT: u64 = 6; // user | write

    impl AddressSpace {
        /// One page fault.
        fn fault(&mut self, address: u64, error_code: u64) {
            self.fault_run(address, 1, error_code, |_, _| {});
        }
    }

    /// A repeatable pseudo-random source: `rand(n)` is below n.
    fn xorshift(mut state: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        }
    }

    /// (start, end, prot) of every region, after checking the running totals against a
    /// recount.
    fn spans(s: &AddressSpace) -> Vec<(u64, u64, u32)> {
        check(s);
        s.regions().map(|r| (r.start, r.end, r.prot)).collect()
    }

    fn check(s: &AddressSpace) {
        let regions: Vec<&Region> = s.regions().collect();
        assert!(regions.iter().all(|r| r.start < r.end));
        assert!(
            regions.windows(2).all(|w| w[0].end <= w[1].start),
            "overlap: {regions:#?}"
        );
        let sum = |f: fn(&Region) -> u64| regions.iter().map(|r| f(r)).sum::<u64>();
        assert_eq!(s.reserved(), sum(Region::size));
        assert_eq!(
            s.committed(),
            sum(|r| if r.prot == 0 { 0 } else { r.size() })
        );
        let unnamed = regions
            .iter()
            .any(|r| r.kind == RegionKind::File && r.path.is_none());
        assert_eq!(s.has_unnamed_files(), unnamed);
        // Every touched page lies in a region.
        let touched: u64 = regions
            .iter()
            .map(|r| s.region_resident(r) - r.seeded_resident)
            .sum();
        assert_eq!(s.touched_bytes(), touched);
    }

    fn anon(addr: u64, pages: u64, prot: u64) -> AddressSpace {
        let mut s = AddressSpace::new();
        s.mmap(addr, pages * P, prot, PRIVATE_ANON, -1, 0, 2);
        s
    }

    fn entry(start: u64, end: u64, perms: &str, path: Option<&str>, rss_bytes: u64) -> MapsEntry {
        let p = perms.as_bytes();
        MapsEntry {
            start,
            end,
            perms: Perms {
                read: p[0] == b'r',
                write: p[1] == b'w',
                exec: p[2] == b'x',
                shared: p[3] == b's',
            },
            path: path.map(Into::into),
            rss_bytes,
            ..MapsEntry::default()
        }
    }

    #[test]
    fn partial_munmap_splits() {
        let mut s = AddressSpace::from_maps(&[entry(A, A + 10 * P, "rw-p", None, 10 * P)], None);
        s.munmap(A + 3 * P, 2 * P);
        assert_eq!(spans(&s), [(A, A + 3 * P, 3), (A + 5 * P, A + 10 * P, 3)]);
        let seeded: Vec<u64> = s.regions().map(|r| r.seeded_resident).collect();
        assert_eq!(seeded, [3 * P, 5 * P]);
        s.munmap(A, 1); // head, length rounded up to a page
        assert_eq!(
            spans(&s),
            [(A + P, A + 3 * P, 3), (A + 5 * P, A + 10 * P, 3)]
        );
        s.munmap(A + 9 * P, P); // tail
        assert_eq!(
            spans(&s),
            [(A + P, A + 3 * P, 3), (A + 5 * P, A + 9 * P, 3)]
        );
        assert_eq!((s.reserved(), s.committed()), (6 * P, 6 * P));
        assert_eq!(
            s.regions().map(|r| s.region_resident(r)).sum::<u64>(),
            6 * P
        );
    }

    #[test]
    fn a_forked_child_keeps_the_resident_pages_of_regions_with_pages_of_their_own() {
        let mut s = AddressSpace::from_maps(
            &[
                // Seeded: library code (read-only, never written), a written data segment,
                // anonymous memory.
                entry(A, A + 4 * P, "r-xp", Some("/lib/x.so"), 4 * P),
                MapsEntry {
                    anonymous_bytes: P,
                    ..entry(A + 4 * P, A + 6 * P, "rw-p", Some("/lib/x.so"), 2 * P)
                },
                entry(A + 6 * P, A + 8 * P, "rw-p", None, 2 * P),
            ],
            None,
        );
        // Mapped while traced: private anonymous written, shared anonymous written, a
        // private file mapping only read.
        s.mmap(B, 2 * P, RW, PRIVATE_ANON, -1, 0, 2);
        s.fault(B, WRITE_FAULT);
        s.mmap(B + 2 * P, 2 * P, RW, SHARED_ANON, -1, 0, 2);
        s.fault(B + 2 * P, WRITE_FAULT);
        s.mmap(B + 4 * P, 2 * P, RW, 0x02, 3, 0, 2);
        s.fault(B + 4 * P, READ_FAULT);
        let resident = |s: &AddressSpace| {
            s.regions()
                .map(|r| (r.start, s.region_resident(r)))
                .collect::<Vec<_>>()
        };
        let child = s.forked();
        assert_eq!(
            resident(&child),
            [
                (A, 0),
                (A + 4 * P, 2 * P),
                (A + 6 * P, 2 * P),
                (B, P),
                (B + 2 * P, 0),
                (B + 4 * P, 0),
            ]
        );
        // The parent keeps its own.
        assert_eq!(resident(&s)[0], (A, 4 * P));
    }

    #[test]
    fn a_write_fault_in_memory_advised_huge_maps_a_huge_page_where_one_fits() {
        const MIB: u64 = 1 << 20;
        let mut s = AddressSpace::new();
        // From A + 1 page to A + 8 MiB: the first huge page does not fit.
        s.mmap(A + P, 8 * MIB - P, RW, PRIVATE_ANON, -1, 0, 2);
        s.fault(A + 3 * MIB, WRITE_FAULT);
        assert_eq!(s.touched_bytes(), P, "not advised");
        s.madvise(A + P, 8 * MIB - P, MADV_HUGEPAGE);
        s.fault(A + 5 * MIB, WRITE_FAULT);
        assert_eq!(s.touched_bytes(), P + 2 * MIB);
        s.fault(A + 2 * P, WRITE_FAULT);
        assert_eq!(s.touched_bytes(), 2 * P + 2 * MIB, "at the edge: a page");
        s.fault(A + 6 * MIB, READ_FAULT);
        assert_eq!(
            s.touched_bytes(),
            2 * P + 2 * MIB,
            "a read maps the huge zero page"
        );
        s.madvise(A + 6 * MIB, 2 * MIB, MADV_NOHUGEPAGE);
        s.fault(A + 6 * MIB, WRITE_FAULT);
        assert_eq!(s.touched_bytes(), 3 * P + 2 * MIB);
        check(&s);
    }

    #[test]
    fn locked_memory_is_faulted_in_whole() {
        let mut s = AddressSpace::new();
        s.mmap(A, 4 * P, RW, PRIVATE_ANON, -1, 0, 2);
        s.mmap(B, 4 * P, 1, PRIVATE_ANON, -1, 0, 2);
        s.mlock(A + P, 2 * P, 0);
        assert_eq!(s.touched_bytes(), 2 * P);
        s.mlock(A, 4 * P, MLOCK_ONFAULT);
        assert_eq!(s.touched_bytes(), 2 * P, "on fault: nothing now");
        // Read-only private anonymous memory maps the zero page: nothing resident.
        s.mlockall(MCL_CURRENT | MCL_FUTURE);
        assert_eq!(s.touched_bytes(), 4 * P);
        s.mmap(B + 8 * P, 2 * P, RW, PRIVATE_ANON, -1, 0, 2);
        assert_eq!(s.touched_bytes(), 6 * P, "locked as it is made");
        assert!(!s.forked().lock_future, "not inherited by fork");
        s.munlockall();
        s.mmap(B + 16 * P, 2 * P, RW, PRIVATE_ANON, -1, 0, 2);
        assert_eq!(s.touched_bytes(), 6 * P);
    }

    #[test]
    fn a_split_shares_resident_bytes_in_whole_pages() {
        // 3 pages resident of 4: the halves get 2 and 1 (not 1.5 each), 3 in all.
        let mut s = AddressSpace::from_maps(&[entry(A, A + 4 * P, "rw-p", None, 3 * P)], None);
        s.mprotect(A + 2 * P, 2 * P, 1);
        let seeded: Vec<u64> = s.regions().map(|r| r.seeded_resident).collect();
        assert_eq!(seeded, [2 * P, P]);
        // 1 page of 3 unmapped from one of them: no fraction left behind either.
        let mut s = AddressSpace::from_maps(&[entry(A, A + 3 * P, "rw-p", None, 2 * P)], None);
        s.madvise(A, P, MADV_DONTNEED);
        assert!(s.regions().all(|r| r.seeded_resident % P == 0));
    }

    #[test]
    fn munmap_across_regions_and_holes() {
        let mut s = anon(A, 2, RW);
        s.mmap(A + 4 * P, 2 * P, 0, PRIVATE_ANON, -1, 0, 2);
        s.mmap(A + 8 * P, 2 * P, 1, PRIVATE_ANON, -1, 0, 2);
        assert_eq!((s.reserved(), s.committed()), (6 * P, 4 * P));
        s.munmap(A + 11 * P, 4 * P); // only a hole
        s.munmap(A + P, 8 * P);
        assert_eq!(spans(&s), [(A, A + P, 3), (A + 9 * P, A + 10 * P, 1)]);
        assert_eq!((s.reserved(), s.committed()), (2 * P, 2 * P));
    }

    #[test]
    fn map_fixed_replaces_parts_of_two_regions() {
        let mut s = anon(A, 4, RW);
        s.mmap(A + 4 * P, 4 * P, 0, PRIVATE_ANON, -1, 0, 2);
        s.fault(A + 3 * P, WRITE_FAULT);
        s.mmap(A + 2 * P, 4 * P, 1, 0x12, 3, 0, 2); // MAP_PRIVATE | MAP_FIXED, a file
        assert_eq!(
            spans(&s),
            [
                (A, A + 2 * P, 3),
                (A + 2 * P, A + 6 * P, 1),
                (A + 6 * P, A + 8 * P, 0)
            ]
        );
        assert_eq!((s.reserved(), s.committed()), (8 * P, 6 * P));
        let kinds: Vec<RegionKind> = s.regions().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                RegionKind::Anonymous,
                RegionKind::File,
                RegionKind::Anonymous
            ]
        );
        assert_eq!(s.touched_bytes(), 0, "the replaced page is gone");
        assert!(s.has_unnamed_files());
    }

    #[test]
    fn mprotect_commits_and_decommits() {
        let mut s = anon(A, 16, 0);
        assert_eq!((s.reserved(), s.committed()), (16 * P, 0));
        s.mprotect(A + 4 * P, 4 * P, RW);
        assert_eq!(
            spans(&s),
            [
                (A, A + 4 * P, 0),
                (A + 4 * P, A + 8 * P, 3),
                (A + 8 * P, A + 16 * P, 0)
            ]
        );
        assert_eq!(s.committed(), 4 * P);
        s.mprotect(A + 4 * P, 4 * P, 0);
        assert_eq!((s.reserved(), s.committed()), (16 * P, 0));
        // Holes stay holes.
        s.munmap(A + 10 * P, 2 * P);
        s.mprotect(A + 9 * P, 4 * P, 1);
        assert_eq!(s.reserved(), 14 * P);
        assert_eq!(s.committed(), 2 * P);
        assert_eq!(s.region_at(A + 10 * P), None);
    }

    #[test]
    fn shmdt_detaches_every_piece_of_the_segment_and_nothing_else() {
        let mut s = AddressSpace::new();
        s.shmat(A, 8 * P, 0, 2);
        s.shmat(A + 8 * P, 4 * P, SHM_RDONLY, 3);
        assert_eq!((s.reserved(), s.committed()), (12 * P, 12 * P));
        assert_eq!(s.region_at(A + 8 * P).unwrap().prot, PROT_READ);
        s.fault(A + P, WRITE_FAULT);
        assert_eq!(s.touched_bytes(), P);
        // Split in three by mprotect; the neighbour attached right after it stays.
        s.mprotect(A + 2 * P, 2 * P, 1);
        s.shmdt(A);
        assert_eq!(s.reserved(), 4 * P);
        assert_eq!(s.touched_bytes(), 0);
        assert_eq!(s.region_at(A + 8 * P).unwrap().site, 3);
        assert_eq!(s.released(2), 8 * P);
        // Not where a segment starts: nothing.
        s.shmdt(A + 9 * P);
        assert_eq!(s.reserved(), 4 * P);
        assert_eq!(s.region_at(A + 8 * P).unwrap().kind.label(), "sysv shm");
    }

    #[test]
    fn mremap_in_place() {
        let mut s = anon(A, 4, RW);
        s.fault(A + 3 * P, WRITE_FAULT);
        s.mremap(A, 4 * P, 5 * P + 1, MAYMOVE, A);
        assert_eq!(spans(&s), [(A, A + 6 * P, 3)]);
        s.mremap(A, 6 * P, 2 * P, 0, A);
        assert_eq!(spans(&s), [(A, A + 2 * P, 3)]);
        assert_eq!(s.touched_bytes(), 0, "the touched page was in the cut tail");
    }

    #[test]
    fn mremap_move_takes_attributes_and_pages() {
        let mut s = anon(A, 4, RW);
        s.mprotect(A + 2 * P, 2 * P, 1);
        s.fault(A, WRITE_FAULT);
        s.fault(A + 3 * P, READ_FAULT); // zero page: not resident
        s.fault(A + P, WRITE_FAULT);
        s.mremap(A, 4 * P, 6 * P, MAYMOVE, B);
        assert_eq!(spans(&s), [(B, B + 2 * P, 3), (B + 2 * P, B + 6 * P, 1)]);
        assert_eq!((s.reserved(), s.committed()), (6 * P, 6 * P));
        assert_eq!(s.region_resident(s.region_at(B).unwrap()), 2 * P);
        // A shrinking move drops the tail.
        s.mremap(B, 6 * P, P, MAYMOVE, A);
        assert_eq!(spans(&s), [(A, A + P, 3)]);
        assert_eq!(s.touched_bytes(), P);
    }

    #[test]
    fn mremap_dontunmap_leaves_empty_old_mapping() {
        let mut s = AddressSpace::from_maps(&[entry(A, A + 4 * P, "rw-p", None, 2 * P)], None);
        s.fault(A + 2 * P, WRITE_FAULT);
        s.mremap(A, 4 * P, 4 * P, MAYMOVE | MREMAP_DONTUNMAP, B);
        assert_eq!(spans(&s), [(A, A + 4 * P, 3), (B, B + 4 * P, 3)]);
        assert_eq!((s.reserved(), s.committed()), (8 * P, 8 * P));
        assert_eq!(s.region_resident(s.region_at(A).unwrap()), 0);
        assert_eq!(s.region_resident(s.region_at(B).unwrap()), 3 * P);
    }

    #[test]
    fn mremap_old_len_zero_duplicates_shared_mapping() {
        let mut s = AddressSpace::new();
        s.mmap(A, 4 * P, RW, SHARED_ANON, -1, 0, 2);
        s.fault(A, READ_FAULT);
        s.mremap(A, 0, 4 * P, MAYMOVE, B);
        assert_eq!(spans(&s), [(A, A + 4 * P, 3), (B, B + 4 * P, 3)]);
        assert!(
            s.regions()
                .all(|r| r.shared && r.kind == RegionKind::Anonymous)
        );
        assert_eq!(s.touched_bytes(), P, "the copy maps its pages on fault");
    }

    #[test]
    fn brk_grows_and_shrinks_the_heap() {
        const H: u64 = 0x5600_0000_0000;
        let mut s = AddressSpace::from_maps(&[], Some(H));
        s.brk(H, 2); // brk(0) answers the current break
        assert_eq!(spans(&s), []);
        s.brk(H + 0x1234, 2);
        assert_eq!(spans(&s), [(H, H + 2 * P, 3)]);
        s.brk(H + 0x5123, 2);
        assert_eq!(spans(&s), [(H, H + 6 * P, 3)], "grew the same region");
        assert_eq!(s.region_label(s.region_at(H).unwrap()), "heap");
        s.fault(H + 5 * P, WRITE_FAULT);
        s.brk(H + 0x1800, 2);
        assert_eq!(
            spans(&s),
            [(H, H + 2 * P, 3)],
            "down to the page holding the break"
        );
        assert_eq!((s.touched_bytes(), s.brk_value()), (0, Some(H + 0x1800)));
        s.brk(H + 0x1900, 2);
        assert_eq!(spans(&s), [(H, H + 2 * P, 3)]);
        s.brk(H, 2);
        assert_eq!((s.reserved(), s.committed()), (0, 0));

        let mut unknown = AddressSpace::new();
        unknown.brk(H + 0x1234, 2);
        assert_eq!(
            (spans(&unknown), unknown.brk_value()),
            (vec![], Some(H + 0x1234))
        );

        let seeded =
            AddressSpace::from_maps(&[entry(H, H + 8 * P, "rw-p", Some("[heap]"), 0)], Some(H));
        assert_eq!(seeded.brk_value(), Some(H + 8 * P));
    }

    #[test]
    fn fault_below_growsdown_region_grows_it() {
        const S: u64 = 0x7ffd_0000_0000;
        let mut s = AddressSpace::from_maps(
            &[entry(S, S + 33 * P, "rw-p", Some("[stack]"), 16 << 10)],
            None,
        );
        s.fault(S - P - 8, WRITE_FAULT);
        assert_eq!(spans(&s), [(S - 2 * P, S + 33 * P, 3)]);
        assert_eq!(
            (s.reserved(), s.committed(), s.touched_bytes()),
            (35 * P, 35 * P, P)
        );
        assert_eq!(s.region_label(s.region_at(S).unwrap()), "main stack");

        let mut s = anon(A, 4, RW);
        s.fault(A - 8, WRITE_FAULT);
        assert_eq!(spans(&s), [(A, A + 4 * P, 3)]);
        assert_eq!(s.touched_bytes(), 0);
    }

    #[test]
    fn fault_touches_pages_that_become_resident() {
        let mut s = anon(A, 2, RW);
        s.fault(A + 5, READ_FAULT);
        assert_eq!(
            s.touched_bytes(),
            0,
            "private anonymous read maps the zero page"
        );
        s.fault(A + 5, WRITE_FAULT);
        s.fault(A + 6, WRITE_FAULT);
        assert_eq!(s.touched_bytes(), P);
        s.mmap(B, 2 * P, 1, 0x02, 3, 0, 2); // private file: a read maps both pages (fault-around)
        s.fault(B, READ_FAULT);
        s.fault(B + P, WRITE_FAULT); // not writable: SIGSEGV
        s.mmap(B + 2 * P, 2 * P, RW, SHARED_ANON, -1, 0, 2);
        s.fault(B + 2 * P, READ_FAULT);
        s.mmap(B + 4 * P, 2 * P, 0, PRIVATE_ANON, -1, 0, 2);
        s.fault(B + 4 * P, WRITE_FAULT);
        assert_eq!(s.touched_bytes(), 4 * P);
        check(&s);
    }

    /// At the end the regions take the kernel's resident bytes: one mapping each where the
    /// two agree, shared as counted where the kernel merged what memprof keeps apart.
    #[test]
    fn resident_settles_on_the_kernels_figures() {
        let mut s = AddressSpace::new();
        // Two sites' mappings side by side, which the kernel keeps as one VMA.
        s.mmap(A, 8 * P, RW, PRIVATE_ANON, -1, 0, 2);
        s.mmap(A + 8 * P, 8 * P, RW, PRIVATE_ANON, -1, 0, 3);
        s.mmap(B, 4 * P, RW, PRIVATE_ANON, -1, 0, 4);
        for page in [0, 1, 2, 9] {
            s.fault(A + page * P, WRITE_FAULT);
        }
        // memprof missed a fork's copies: the kernel says 7 pages, not 4, and B has 2.
        let smaps = |start: u64, end: u64, rss: u64| MapsEntry {
            start,
            end,
            perms: Perms {
                read: true,
                write: true,
                ..Perms::default()
            },
            rss_bytes: rss,
            ..MapsEntry::default()
        };
        let total = s.settle_resident(&[smaps(A, A + 16 * P, 7 * P), smaps(B, B + 4 * P, 2 * P)]);
        check(&s);
        let resident: Vec<u64> = s.regions().map(|r| s.region_resident(r) / P).collect();
        assert_eq!(
            resident,
            [5, 2, 2],
            "7 pages shared 3:1 as counted, whole pages"
        );
        assert_eq!(total, 9 * P);
        // More than a region holds goes to the others; a mapping the kernel has no more of
        // ends with nothing.
        let total = s.settle_resident(&[smaps(A, A + 16 * P, 12 * P)]);
        let resident: Vec<u64> = s.regions().map(|r| s.region_resident(r) / P).collect();
        assert_eq!((resident, total), (vec![8, 4, 0], 12 * P));
    }

    #[test]
    fn releases_are_charged_to_the_site_that_reserved() {
        let mut s = AddressSpace::new();
        s.mmap(A, 8 * P, RW, PRIVATE_ANON, -1, 0, 5);
        s.mmap(A + 2 * P, 2 * P, RW, PRIVATE_ANON | 0x10, -1, 0, 6); // MAP_FIXED
        assert_eq!(s.released(5), 2 * P, "MAP_FIXED replaced part of site 5");
        s.munmap(A, 3 * P);
        assert_eq!((s.released(5), s.released(6)), (4 * P, P));
        s.mremap(A + 4 * P, 4 * P, 2 * P, 0, A + 4 * P);
        assert_eq!(s.released(5), 6 * P);
        let sites: Vec<(u64, SiteId)> = s.regions().map(|r| (r.size(), r.site)).collect();
        assert_eq!(sites, [(P, 6), (2 * P, 5)]);
        assert_eq!(
            s.forked().released(5),
            0,
            "a child has released nothing yet"
        );
        let mut after_exec = s.clone();
        after_exec.replace(AddressSpace::new());
        assert_eq!((after_exec.reserved(), after_exec.released(5)), (0, 6 * P));
    }

    #[test]
    fn heap_growth_from_another_site_is_its_own_region() {
        let mut s = AddressSpace::from_maps(&[], Some(A));
        s.brk(A + 2 * P, 7);
        s.brk(A + 4 * P, 7);
        s.brk(A + 5 * P, 8);
        let sites: Vec<(u64, u64, SiteId)> =
            s.regions().map(|r| (r.start, r.end, r.site)).collect();
        assert_eq!(sites, [(A, A + 4 * P, 7), (A + 4 * P, A + 5 * P, 8)]);
        s.brk(A + P, 9);
        assert_eq!((s.released(7), s.released(8)), (3 * P, P));
    }

    #[test]
    fn split_file_regions_keep_their_file_offsets() {
        let mut s = AddressSpace::new();
        s.mmap(A, 4 * P, 1, 0x02, 3, 0x10000, 2);
        s.mprotect(A + P, P, 5);
        let offsets: Vec<u64> = s.regions().map(|r| r.offset).collect();
        assert_eq!(offsets, [0x10000, 0x10000 + P, 0x10000 + 2 * P]);
    }

    #[test]
    fn file_read_faults_map_the_aligned_window_within_the_region() {
        let mut s = AddressSpace::new();
        let window = FAULT_AROUND_PAGES * P;
        // The region starts 3 pages into a window and is 40 pages long.
        let start = 0x7000_0000_0000 + 3 * P;
        s.mmap(start, 40 * P, 1, 0x02, 3, 0, 2);
        s.fault(start + P, READ_FAULT);
        assert_eq!(
            s.touched_bytes(),
            window - 3 * P,
            "clamped to the region's start"
        );
        s.fault(start + 38 * P, READ_FAULT);
        let last_window_start = (start + 38 * P) / window * window;
        assert_eq!(
            s.touched_bytes(),
            window - 3 * P + (start + 40 * P - last_window_start),
            "clamped to the region's end"
        );
        check(&s);
    }

    #[test]
    fn madvise_dontneed_forgets_pages() {
        let mut s = AddressSpace::from_maps(&[entry(A, A + 8 * P, "rw-p", None, 4 * P)], None);
        s.mmap(B, 4 * P, RW, PRIVATE_ANON, -1, 0, 2);
        for page in 0..3 {
            s.fault(B + page * P, WRITE_FAULT);
        }
        s.madvise(A, 2 * P, MADV_DONTNEED);
        assert_eq!(s.region_resident(s.region_at(A).unwrap()), 3 * P);
        s.madvise(B + P, 4 * P, MADV_DONTNEED);
        assert_eq!(s.touched_bytes(), P);
        s.madvise(B, 4 * P, 8); // MADV_FREE
        assert_eq!(s.touched_bytes(), P);
        assert_eq!(spans(&s), [(A, A + 8 * P, 3), (B, B + 4 * P, 3)]);
    }

    #[test]
    fn populate_marks_resident_pages() {
        let mut s = AddressSpace::new();
        s.mmap(A, 4 * P, RW, PRIVATE_ANON | MAP_POPULATE, -1, 0, 2);
        assert_eq!(s.touched_bytes(), 4 * P);
        s.mmap(B, 4 * P, 1, PRIVATE_ANON | MAP_POPULATE, -1, 0, 2);
        assert_eq!(
            s.touched_bytes(),
            4 * P,
            "read-only private anonymous: zero page"
        );
        s.madvise(B - P, 3 * P, MADV_POPULATE_READ);
        assert_eq!(s.touched_bytes(), 4 * P);
        s.mprotect(B, 4 * P, RW);
        s.madvise(B - P, 3 * P, MADV_POPULATE_WRITE); // only where regions exist
        assert_eq!(s.touched_bytes(), 6 * P);
        check(&s);
    }

    #[test]
    fn hugetlb_lengths_round_to_the_huge_page() {
        let mut s = AddressSpace::new();
        s.mmap(A, 1, RW, PRIVATE_ANON | MAP_HUGETLB, -1, 0, 2);
        s.mmap(
            B,
            1,
            RW,
            PRIVATE_ANON | MAP_HUGETLB | 30 << MAP_HUGE_SHIFT,
            -1,
            0,
            2,
        );
        assert_eq!(spans(&s), [(A, A + (2 << 20), 3), (B, B + (1 << 30), 3)]);
    }

    const SMAPS: &str = "\
55d0c0a00000-55d0c0a02000 r--p 00000000 fe:00 247030                     /usr/bin/cat
Rss:                   8 kB
VmFlags: rd mr mw me sd 
55d0c0a02000-55d0c0a07000 r-xp 00002000 fe:00 247030                     /usr/bin/cat
Rss:                  20 kB
55d0c1453000-55d0c1474000 rw-p 00000000 00:00 0                          [heap]
Rss:                  12 kB
7fc14a800000-7fc14a801000 ---p 00000000 00:00 0 
7fc14a801000-7fc14a901000 rw-p 00000000 00:00 0 
Rss:                   8 kB
7fc14a905000-7fc14a927000 rw-s 00000000 00:01 2048                       /dev/zero (deleted)
7fc14a927000-7fc14a928000 r--p 00000000 fe:00 316534                     /home/me/my data (deleted)
7fc14ab77000-7fc14ab7b000 r--p 00000000 00:00 0                          [vvar]
7fc14ab7b000-7fc14ab7d000 r--p 00000000 00:00 0                          [vvar_vclock]
7fc14ab7d000-7fc14ab7f000 r-xp 00000000 00:00 0                          [vdso]
7fc14ab7f000-7fc14ab80000 rw-p 00000000 00:00 0                          [anon:go heap]
7ffde5413000-7ffde5434000 rw-p 00000000 00:00 0                          [stack]
Rss:                  16 kB
VmFlags: rd wr mr mw me gd ac 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
VmFlags: ex 
";

    #[test]
    fn from_maps_skips_vsyscall() {
        let entries = parse_maps(SMAPS);
        let s = AddressSpace::from_maps(&entries, Some(0x55d0c1453000));
        let expected: u64 = entries[..entries.len() - 1]
            .iter()
            .map(|e| e.end - e.start)
            .sum();
        assert_eq!(s.reserved(), expected);
        assert_eq!(s.committed(), expected - P);
        assert_eq!(s.regions().count(), entries.len() - 1);
        let labels: Vec<&str> = s.regions().map(|r| s.region_label(r)).collect();
        let anon = "anonymous";
        assert_eq!(
            labels,
            [
                "file",
                "file",
                "heap",
                "PROT_NONE reservation",
                anon,
                anon,
                "file",
                "vvar",
                "vvar",
                "vdso",
                anon,
                "main stack"
            ]
        );
        let stack = s.region_at(0x7ffde5413000).unwrap();
        assert!(stack.growsdown && s.region_resident(stack) == 16 << 10);
        assert_eq!(s.brk_value(), Some(0x55d0c1474000));
        assert!(!s.has_unnamed_files());
        let cat: Vec<&Arc<str>> = s
            .regions()
            .take(2)
            .map(|r| r.path.as_ref().unwrap())
            .collect();
        assert!(Arc::ptr_eq(cat[0], cat[1]));
    }

    #[test]
    fn from_smaps_of_this_process_matches_its_vm_size() {
        let pid = std::process::id();
        let vm_size = || read_status(pid).unwrap().unwrap().vm_size;
        // Other tests map memory meanwhile: retry until VmSize holds still across the read.
        let readings: Vec<(u64, u64, u64)> = (0..20)
            .map(|_| {
                let before = vm_size();
                let space = AddressSpace::from_maps(&read_smaps(pid).unwrap(), None);
                (before, space.reserved(), vm_size())
            })
            .collect();
        assert!(
            readings.iter().any(|&(b, r, a)| b == a && r == b),
            "{readings:x?}"
        );
    }

    #[test]
    fn guard_below_thread_stack() {
        let mut s = AddressSpace::new();
        s.mmap(A, 16 * P, 0, PRIVATE_ANON | MAP_STACK, -1, 0, 2);
        assert_eq!(
            s.region_label(s.region_at(A).unwrap()),
            "PROT_NONE reservation"
        );
        s.mprotect(A + P, 15 * P, RW);
        let labels: Vec<&str> = s.regions().map(|r| s.region_label(r)).collect();
        assert_eq!(labels, ["guard", "thread stack"]);
    }

    #[test]
    fn name_files_fills_paths() {
        let mut s = AddressSpace::new();
        s.mmap(A, 4 * P, 1, 0x02, 3, 0, 2);
        s.mprotect(A + 2 * P, 2 * P, 5);
        s.mmap(B, P, RW, PRIVATE_ANON, -1, 0, 2);
        assert!(s.has_unnamed_files());
        let maps = parse_maps(&format!(
            "{:x}-{:x} r--p 00000000 fe:00 7 /usr/lib/libfoo.so\n{:x}-{:x} r-xp 00002000 fe:00 7 /usr/lib/libfoo.so\n",
            A,
            A + 2 * P,
            A + 2 * P,
            A + 4 * P
        ));
        s.name_files(&maps);
        assert!(!s.has_unnamed_files());
        let paths: Vec<Option<&str>> = s.regions().map(|r| r.path.as_deref()).collect();
        assert_eq!(
            paths,
            [Some("/usr/lib/libfoo.so"), Some("/usr/lib/libfoo.so"), None]
        );
        check(&s);
    }

    #[test]
    fn page_set_matches_a_plain_set() {
        let mut rand = xorshift(0x2545_f491_4f6c_dd1d);
        let (mut set, mut plain) = (PageSet::default(), std::collections::BTreeSet::new());
        for _ in 0..3000 {
            let start = A + rand(3000) * P;
            let end = start + rand(1200) * P;
            match rand(3) {
                0 => {
                    set.insert_range(start, end);
                    plain.extend((start..end).step_by(P as usize));
                }
                1 => {
                    set.remove_range(start, end);
                    plain.retain(|a| !(start..end).contains(a));
                }
                _ => {
                    set.insert(start + rand(P));
                    plain.insert(start);
                }
            }
        }
        assert_eq!(set.len, plain.len() as u64);
        assert!(
            set.chunks.values().all(|c| *c != [0; 8]),
            "empty chunks are dropped"
        );
        for _ in 0..100 {
            let start = A + rand(3000) * P;
            let end = start + rand(1200) * P;
            let inside: Vec<u64> = plain.range(start..end).copied().collect();
            assert_eq!(set.iter(start, end).collect::<Vec<_>>(), inside);
            assert_eq!(set.count(start, end), inside.len() as u64);
        }
    }

    /// Random operations in a small window, so that they overlap a lot.
    #[test]
    fn random_operations_keep_totals() {
        let mut rand = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut s = AddressSpace::new();
        for _ in 0..5000 {
            let addr = A + rand(256) * P;
            let len = (1 + rand(32)) * P - rand(2);
            let other = A + rand(256) * P;
            match rand(9) {
                0 | 1 => {
                    let flags = [PRIVATE_ANON, SHARED_ANON, 0x02, PRIVATE_ANON | MAP_POPULATE]
                        [rand(4) as usize];
                    s.mmap(
                        addr,
                        len,
                        rand(8),
                        flags,
                        if flags & MAP_ANONYMOUS != 0 { -1 } else { 3 },
                        0,
                        2,
                    );
                }
                2 => s.munmap(addr, len),
                3 => s.mprotect(addr, len, rand(8)),
                4 => {
                    let new_len = (1 + rand(32)) * P;
                    match rand(4) {
                        0 => s.mremap(addr, len, new_len, MAYMOVE, addr),
                        1 => s.mremap(addr, len, new_len, MAYMOVE, other),
                        2 => s.mremap(addr, len, len, MAYMOVE | MREMAP_DONTUNMAP, other),
                        _ => s.mremap(addr, 0, new_len, MAYMOVE, other),
                    }
                }
                5 => s.brk(A + rand(64 * P), 2),
                6 => s.madvise(
                    addr,
                    len,
                    [MADV_DONTNEED, MADV_POPULATE_WRITE][rand(2) as usize],
                ),
                _ => s.fault(addr + rand(P), rand(8)),
            }
            check(&s);
        }
        assert!(s.regions().count() > 5, "the window should stay busy");
    }

    /// The kernel sends consecutive faults as one run: it must leave the model as the same
    /// faults one by one do, in the pages touched, the stacks grown and the sites charged.
    #[test]
    fn a_fault_run_is_its_faults_one_by_one() {
        const STACK: u64 = A + 300 * P;
        let mut rand = xorshift(0x2545_f491_4f6c_dd1d);
        let mut s = AddressSpace::new();
        s.mmap(STACK, 8 * P, RW, PRIVATE_ANON | MAP_GROWSDOWN, -1, 0, 2);
        // Regions of every kind, some adjacent, some with gaps between them.
        for site in 3..40 {
            let flags = [PRIVATE_ANON, SHARED_ANON, 0x02][rand(3) as usize];
            let fd = if flags & MAP_ANONYMOUS != 0 { -1 } else { 3 };
            let (addr, len) = (A + rand(250) * P, (1 + rand(24)) * P);
            s.mmap(addr, len, rand(4), flags, fd, 0, site);
        }
        let charged = |s: &mut AddressSpace, faults: &[(u64, u64)], error_code| {
            let mut sites = BTreeMap::new();
            for &(address, pages) in faults {
                s.fault_run(address, pages, error_code, |site, n| {
                    *sites.entry(site).or_insert(0) += n
                });
            }
            sites
        };
        for _ in 0..2000 {
            let (address, pages, error_code) = (A + rand(310 * P), 1 + rand(40), rand(8));
            let one_by_one: Vec<(u64, u64)> = std::iter::once(address)
                .chain((1..pages).map(|i| (address / P + i) * P))
                .map(|page| (page, 1))
                .collect();
            let (mut run, mut single) = (s.clone(), s.clone());
            assert_eq!(
                charged(&mut run, &[(address, pages)], error_code),
                charged(&mut single, &one_by_one, error_code),
                "{address:#x} {pages}"
            );
            assert!(run.regions().eq(single.regions()));
            let resident = |s: &AddressSpace| -> Vec<u64> {
                s.regions().map(|r| s.region_resident(r)).collect()
            };
            assert_eq!(resident(&run), resident(&single), "{address:#x} {pages}");
            check(&run);
            // Keep some of the faults, so later runs land on pages touched already.
            if rand(4) == 0 {
                s = run;
            }
        }
        assert!(s.touched_bytes() > 0 && s.reserved() > 8 * P);
    }
}
