//! Unwinding raw stacks: a copy of a thread's stack and its registers, unwound with the
//! binaries' own unwind tables (`.eh_frame`, else `.debug_frame`) by framehop, as
//! `perf --call-graph dwarf` does. Code built without frame pointers (a distribution's C
//! library and most of its programs) leaves a frame-pointer walk short or wrong; the tables
//! describe every frame. Where they say nothing (JIT code, cgo's C code), framehop follows
//! the frame pointers, and where those lead nowhere the frame's code is imitated to its
//! return ([`epilogue`]), else the stack above it scanned.
//!
//! Also here: the kernel's frame-pointer walk done again on the copy, and the id it names a
//! stack by, so that userspace can vouch for a walk whose frames the tables confirm (the
//! kernel then sends such a stack by id alone).
mod epilogue;

use std::{
    collections::HashMap,
    ops::Range,
    path::{Path, PathBuf},
    sync::Arc,
};

use framehop::{
    ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _,
    x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64},
};
use memprof_common::MAX_STACK_DEPTH;
use object::{
    Object as _, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _, SegmentFlags,
};

use crate::{
    address_space::{AddressSpace, PROT_EXEC, RegionKind},
    events::RawStack,
};

/// Addresses at or above this are the kernel's (x86_64 with 48-bit user space).
const USER_SPACE_END: u64 = 0x0000_8000_0000_0000;

/// A stack as unwound: return addresses after the first (leaf first), and whether the
/// unwinder reached the outermost frame (a thread's or program's entry point).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Unwound {
    pub frames: Vec<u64>,
    pub complete: bool,
}

/// The kernel's frame-pointer walk (memprof-ebpf's `start_frame_walk` and `frame_step`), on a raw stack: the same
/// frames where the copy holds what the kernel read.
pub fn frame_walk(raw: &RawStack) -> Vec<u64> {
    const FIRST_PAGE_END: u64 = 4096;
    let mut frames = vec![raw.ip];
    if raw.leaf_returns {
        match raw.word(raw.sp) {
            Some(word) => frames.push(word),
            None => return frames,
        }
    }
    let mut fp = raw.bp;
    while frames.len() < MAX_STACK_DEPTH {
        if !fp.is_multiple_of(8) || !(FIRST_PAGE_END..USER_SPACE_END - 16).contains(&fp) {
            break;
        }
        let (Some(next), Some(ret)) = (raw.word(fp), raw.word(fp + 8)) else {
            break;
        };
        if ret == 0 {
            break;
        }
        frames.push(ret);
        fp = next;
    }
    frames
}

/// The id the kernel names a stack of process `tgid` by (memprof-ebpf's `stack_id`).
pub fn stack_id(tgid: u32, frames: &[u64]) -> u64 {
    let frames = &frames[..frames.len().min(MAX_STACK_DEPTH)];
    let mut id = 0xcbf2_9ce4_8422_2325 ^ (u64::from(tgid) | (frames.len() as u64) << 32);
    for &ip in frames {
        id = (id ^ ip).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (id | 1) & !(1 << 63)
}

/// Whether a frame-pointer walk can stand for the stack the tables unwound: the unwinding is
/// complete and begins with the walk's frames, and what the walk missed is the C library's
/// start-up code at most (the walk ends where glibc, built without frame pointers, called
/// the program's code: `__libc_start_call_main`, `start_thread`), whose callers are fixed.
pub fn walk_is_whole(walk: &[u64], unwound: &Unwound, space: &AddressSpace) -> bool {
    const START_UP_FRAMES: usize = 3;
    if !unwound.complete || !unwound.frames.starts_with(walk) {
        return false;
    }
    let missed = unwound.frames.len() - walk.len();
    missed == 0
        || (missed <= START_UP_FRAMES
            && walk
                .last()
                .is_some_and(|&ret| in_c_library(space, ret.wrapping_sub(1))))
}

/// Whether `address` is in the C library or the dynamic loader.
fn in_c_library(space: &AddressSpace, address: u64) -> bool {
    space
        .region_at(address)
        .and_then(|r| r.path.as_deref())
        .and_then(|path| path.rsplit('/').next())
        .is_some_and(|file| file.starts_with("libc.so") || file.starts_with("ld-linux"))
}

/// What framehop needs of one ELF file: its unwind sections, and where its executable code
/// lies in the file and in its own address space (to place it where a process mapped it);
/// and the file itself, to read the instruction before a return address.
struct ElfTables {
    sections: ExplicitModuleSectionInfo<Arc<[u8]>>,
    /// (file offset range, virtual address) of each executable segment.
    code_segments: Vec<(Range<u64>, u64)>,
    /// The code the tables describe (virtual addresses, sorted): other code of the file has
    /// no rule to unwind it by.
    described: Vec<Range<u64>>,
    /// Code the tables describe wrongly (virtual addresses): [`MISDESCRIBED`], each with
    /// whether a stack ends in it ([`SWITCHING`]).
    misdescribed: Vec<(Range<u64>, bool)>,
    file: memmap2::Mmap,
}

/// Functions whose unwind tables are known to be wrong (by the start of their names): Go's
/// assembly that moves to another stack, or to an aligned one, to call C or run on the
/// system stack, which the `.debug_frame` Go's linker writes does not say (it claims the
/// return address at the stack pointer throughout). Imitating their code follows them where
/// it can (a call to C on the same stack) and ends the stack where it cannot (a switch from
/// a goroutine's stack, which the kernel did not copy).
const MISDESCRIBED: [&str; 5] = [
    "runtime.asmcgocall",
    "runtime.callCgo",
    "runtime.systemstack",
    "runtime.mcall",
    "runtime.morestack",
];

/// Of those, the ones that always leave the goroutine's stack for the system stack and never
/// return: a stack copied from the system stack ends in them (the goroutine's part is on a
/// stack the kernel did not copy), and the words above their frame there are whatever it last
/// held (imitating morestack's code to its `ret` under load read a stale return address).
const SWITCHING: [&str; 2] = ["runtime.mcall", "runtime.morestack"];

impl ElfTables {
    fn read(path: &Path) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: a private, read-only mapping of a file; a binary changing under it (an
        // upgrade writes a new file, it does not rewrite the old) at worst gives wrong unwind
        // tables, never memory unsafety in the parser, which bounds-checks every read.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let elf = object::File::parse(&*map).ok()?;
        let section = |name: &str| elf.section_by_name(name);
        let range = |name: &str| section(name).map(|s| s.address()..s.address() + s.size());
        let data = |name: &str| {
            let data = section(name)?.uncompressed_data().ok()?;
            Some(Arc::<[u8]>::from(&*data))
        };
        let eh_frame = data(".eh_frame");
        // framehop reads .debug_frame only without .eh_frame.
        let debug_frame = if eh_frame.is_none() {
            data(".debug_frame")
        } else {
            None
        };
        let sections = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: range(".text"),
            got_svma: range(".got"),
            eh_frame_svma: range(".eh_frame"),
            eh_frame,
            eh_frame_hdr_svma: range(".eh_frame_hdr"),
            eh_frame_hdr: data(".eh_frame_hdr"),
            debug_frame,
            ..Default::default()
        };
        const PF_X: u32 = 1;
        let code_segments = elf
            .segments()
            .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset..offset + size, s.address())
            })
            .collect();
        let described = described_code(&sections).unwrap_or_default();
        // Only a Go binary has them: the symbols of the others (libjvm's are many) stay unread.
        let misdescribed = match section(".go.buildinfo") {
            Some(_) => elf
                .symbols()
                .filter_map(|s| {
                    let name = s.name().ok()?;
                    MISDESCRIBED.iter().find(|m| name.starts_with(*m))?;
                    let switching = SWITCHING.iter().any(|m| name.starts_with(m));
                    Some((s.address()..s.address() + s.size(), switching))
                })
                .collect(),
            None => Vec::new(),
        };
        Some(Self {
            sections,
            code_segments,
            described,
            misdescribed,
            file: map,
        })
    }

    /// The virtual address of file offset `offset`, in an executable segment.
    fn vaddr(&self, offset: u64) -> Option<u64> {
        let (range, vaddr) = self
            .code_segments
            .iter()
            .find(|(range, _)| range.contains(&offset))?;
        Some(offset - range.start + vaddr)
    }

    /// Whether the tables describe the code at file offset `offset`.
    fn describes(&self, offset: u64) -> bool {
        let Some(address) = self.vaddr(offset) else {
            return false;
        };
        let i = self.described.partition_point(|r| r.start <= address);
        i > 0 && self.described[i - 1].contains(&address)
    }

    /// The function [`MISDESCRIBED`] names that holds file offset `offset`: its virtual
    /// addresses, and whether it is [`SWITCHING`].
    fn misdescribed_at(&self, offset: u64) -> Option<(Range<u64>, bool)> {
        let address = self.vaddr(offset)?;
        self.misdescribed
            .iter()
            .find(|(r, _)| r.contains(&address))
            .cloned()
    }

    fn nop_precedes(&self, offset: u64) -> bool {
        let at = usize::try_from(offset).ok().and_then(|o| o.checked_sub(1));
        at.and_then(|at| self.file.get(at)) == Some(&0x90)
    }

    /// Whether the bytes before file offset `offset` end with a call instruction: `offset`
    /// is then a return address. The forms compilers emit: `call rel32` (e8), and `call r/m64`
    /// (ff /2) through a register, `[reg]`, `[reg+disp8]`, `[rip+disp32]`.
    fn call_precedes(&self, offset: u64) -> bool {
        let Ok(end) = usize::try_from(offset) else {
            return false;
        };
        let before = |n: usize| end.checked_sub(n).and_then(|at| self.file.get(at..end));
        let is_call_rm = |bytes: &[u8], modrm_ok: fn(u8) -> bool| {
            bytes[0] == 0xff && (bytes[1] >> 3) & 7 == 2 && modrm_ok(bytes[1])
        };
        before(5).is_some_and(|b| b[0] == 0xe8)
            || before(2).is_some_and(|b| {
                is_call_rm(b, |m| {
                    m >> 6 == 3 || (m >> 6 == 0 && m & 7 != 4 && m & 7 != 5)
                })
            })
            || before(3).is_some_and(|b| is_call_rm(b, |m| m >> 6 == 1 && m & 7 != 4))
            || before(6)
                .is_some_and(|b| is_call_rm(b, |m| m >> 6 == 0 && m & 7 == 5 || m >> 6 == 2))
    }

    /// framehop's module for this file mapped executable at `avma`, from file offset
    /// `offset`: its base is where the file's address 0 would be in the process.
    fn module(&self, name: &str, avma: Range<u64>, offset: u64) -> Option<Module<Arc<[u8]>>> {
        let (file_range, vaddr) = self
            .code_segments
            .iter()
            .find(|(range, _)| range.start & !0xfff <= offset && offset < range.end)?;
        let base = avma.start.checked_sub(offset + vaddr - file_range.start)?;
        Some(Module::new(
            name.to_string(),
            avma,
            base,
            self.sections.clone(),
        ))
    }
}

/// The code ranges the unwind tables in `sections` describe, sorted.
fn described_code(sections: &ExplicitModuleSectionInfo<Arc<[u8]>>) -> Option<Vec<Range<u64>>> {
    use gimli::{
        BaseAddresses, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, UnwindSection,
    };

    fn ranges<'a, S: UnwindSection<EndianSlice<'a, LittleEndian>>>(
        section: &S,
        bases: &BaseAddresses,
    ) -> Vec<Range<u64>> {
        let mut ranges = Vec::new();
        let mut entries = section.entries(bases);
        while let Ok(Some(entry)) = entries.next() {
            if let CieOrFde::Fde(partial) = entry
                && let Ok(fde) = partial.parse(S::cie_from_offset)
            {
                let start = fde.initial_address();
                ranges.push(start..start.saturating_add(fde.len()));
            }
        }
        ranges.sort_unstable_by_key(|r| r.start);
        ranges
    }

    let mut bases = BaseAddresses::default();
    if let Some(text) = &sections.text_svma {
        bases = bases.set_text(text.start);
    }
    if let Some(got) = &sections.got_svma {
        bases = bases.set_got(got.start);
    }
    if let (Some(data), Some(svma)) = (&sections.eh_frame, &sections.eh_frame_svma) {
        let section = EhFrame::new(data, LittleEndian);
        return Some(ranges(&section, &bases.set_eh_frame(svma.start)));
    }
    let data = sections.debug_frame.as_ref()?;
    Some(ranges(&DebugFrame::new(data, LittleEndian), &bases))
}

/// The modules framehop knows in one process, kept in step with its executable file
/// mappings.
#[derive(Default)]
struct ProcessModules {
    unwinder: UnwinderX86_64<Arc<[u8]>>,
    /// The start of each module's mapping, with its end and path.
    added: HashMap<u64, (u64, Arc<str>)>,
    /// The address space's count of changes to executable file mappings at the last sync.
    synced_at: Option<u64>,
}

/// Unwinds the raw stacks of every traced process, reading each binary's tables once.
pub struct Unwinding {
    /// By path, as the process sees it; None: unreadable, or not ELF.
    files: HashMap<Arc<str>, Option<Arc<ElfTables>>>,
    processes: HashMap<u32, ProcessModules>,
    cache: CacheX86_64,
}

impl Default for Unwinding {
    fn default() -> Self {
        Self {
            files: HashMap::new(),
            processes: HashMap::new(),
            cache: CacheX86_64::new(),
        }
    }
}

impl Unwinding {
    /// Unwinds a raw stack of process `pid`, whose address space is `space` (with the paths
    /// of its file mappings named: the tables are read from those files, through
    /// /proc/PID/root while the process lives, so that a container's files are its own).
    pub fn unwind(&mut self, pid: u32, space: &AddressSpace, raw: &RawStack) -> Unwound {
        let Self {
            files,
            processes,
            cache,
        } = self;
        let modules = processes.entry(pid).or_default();
        if modules.synced_at != Some(space.exec_file_changes()) {
            sync(modules, files, pid, space);
        }
        let mut read_stack = |address| raw.word(address).ok_or(());
        let code = Code { space, files };
        let mut regs = UnwindRegsX86_64::new(raw.ip, raw.sp, raw.bp);
        let mut frame = FrameAddress::from_instruction_pointer(raw.ip);
        let mut unwound = Unwound::default();
        while unwound.frames.len() < MAX_STACK_DEPTH {
            unwound.frames.push(frame.address());
            let at = regs;
            let lookup = frame.address_for_lookup();
            let undescribed = code.undescribed(lookup);
            let (misdescribed, switching) = match code.misdescribed(lookup) {
                Some((function, switching)) => (Some(function), switching),
                None => (None, false),
            };
            if switching {
                unwound.complete = true;
                break;
            }
            // framehop follows the tables; where they say nothing (`undescribed`), the frame
            // pointers, which code that keeps them (V8's builtins, JIT code) leaves right
            // and other code leaves pointing anywhere: a return address that follows no call
            // tells.
            let step = match misdescribed {
                Some(_) => None,
                None => Some(modules.unwinder.unwind_frame(
                    frame,
                    &mut regs,
                    cache,
                    &mut read_stack,
                )),
            };
            let next = match step {
                // The tables mark the outermost frame; a frame pointer guessed at says nothing.
                Some(Ok(None)) if !undescribed => {
                    unwound.complete = true;
                    break;
                }
                Some(Ok(Some(ret))) if code.is_return_address(ret, false) => {
                    Some((ret, regs.sp(), regs.bp()))
                }
                // No rule to trust: imitate the code to its return, else (where the tables
                // say nothing at all) look above the frame for the return address it was
                // called with.
                _ if undescribed || misdescribed.is_some() => {
                    let machine = Imitation { code: &code, raw };
                    epilogue::unwind(&machine, misdescribed, frame.address(), at.sp(), at.bp())
                        .or_else(|| {
                            let (ret, sp) = code.scan(&at, raw).filter(|_| undescribed)?;
                            Some((ret, sp, at.bp()))
                        })
                }
                // The tables describe the frame and still end the walk: what came before
                // holds.
                _ => None,
            };
            let Some((ret, sp, bp)) = next else { break };
            regs = UnwindRegsX86_64::new(ret, sp, bp);
            frame = FrameAddress::from_return_address(ret).expect("not 0");
        }
        unwound
    }

    /// Forgets a process's modules: it exited, or exec'd (a new image).
    pub fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }
}

/// A process's code: its mappings, and the files behind them.
struct Code<'a> {
    space: &'a AddressSpace,
    files: &'a HashMap<Arc<str>, Option<Arc<ElfTables>>>,
}

impl Code<'_> {
    /// Words of stack [`Code::scan`] looks at above a frame's stack pointer.
    const SCAN_WORDS: u64 = 64;

    /// Whether `address` can be a return address: in executable memory and, where the code
    /// comes from a file memprof read, right after a call instruction (or Go's `goexit`,
    /// whose address after a NOP Go puts below each goroutine's first frame). `known`
    /// demands a call in a file (a scan trusts nothing less).
    fn is_return_address(&self, address: u64, known: bool) -> bool {
        let Some(region) = address
            .checked_sub(1)
            .and_then(|a| self.space.region_at(a))
            .filter(|r| r.prot & PROT_EXEC != 0)
        else {
            return false;
        };
        let tables = region
            .path
            .as_ref()
            .and_then(|path| self.files.get(path))
            .and_then(Option::as_ref);
        let offset = address - region.start + region.offset;
        match tables {
            Some(tables) => tables.call_precedes(offset) || (!known && tables.nop_precedes(offset)),
            None => !known,
        }
    }

    /// The tables of the file mapped at `address`, and the file offset it maps there.
    fn tables_at(&self, address: u64) -> Option<(&ElfTables, u64)> {
        let region = self.space.region_at(address)?;
        let tables = self.files.get(region.path.as_ref()?)?.as_ref()?;
        Some((tables, address - region.start + region.offset))
    }

    /// Whether `address` lies in a file memprof read whose unwind tables do not describe it.
    fn undescribed(&self, address: u64) -> bool {
        self.tables_at(address)
            .is_some_and(|(tables, offset)| !tables.describes(offset))
    }

    /// The function whose tables are known to be wrong that holds `address`: its addresses
    /// in the process, and whether a stack ends in it ([`SWITCHING`]).
    fn misdescribed(&self, address: u64) -> Option<(Range<u64>, bool)> {
        let (tables, offset) = self.tables_at(address)?;
        let (function, switching) = tables.misdescribed_at(offset)?;
        let shift = address - tables.vaddr(offset)?;
        Some((
            function.start.wrapping_add(shift)..function.end.wrapping_add(shift),
            switching,
        ))
    }

    /// The first word above the stack pointer of `regs` that is a return address into code
    /// memprof read, and the stack pointer just above it: where the frame that has no rule
    /// was called from (stack scanning, the unwinders' last resort).
    fn scan(&self, regs: &UnwindRegsX86_64, raw: &RawStack) -> Option<(u64, u64)> {
        (0..Self::SCAN_WORDS)
            .map(|i| regs.sp() + 8 * i)
            .find_map(|at| {
                let word = raw.word(at)?;
                self.is_return_address(word, true).then_some((word, at + 8))
            })
    }
}

/// A frame's code and the stack copy, for [`epilogue::unwind`].
struct Imitation<'a> {
    code: &'a Code<'a>,
    raw: &'a RawStack<'a>,
}

impl epilogue::Machine for Imitation<'_> {
    fn code(&self, address: u64) -> Option<&[u8]> {
        let (tables, offset) = self.code.tables_at(address)?;
        tables.file.get(usize::try_from(offset).ok()?..)
    }

    fn stack_word(&self, address: u64) -> Option<u64> {
        self.raw.word(address)
    }

    fn returns_to(&self, address: u64) -> bool {
        self.code.is_return_address(address, true)
    }
}

/// Makes `modules` the executable file mappings of `space`.
fn sync(
    modules: &mut ProcessModules,
    files: &mut HashMap<Arc<str>, Option<Arc<ElfTables>>>,
    pid: u32,
    space: &AddressSpace,
) {
    let wanted: HashMap<u64, (u64, Arc<str>, u64)> = space
        .regions()
        .filter(|r| r.kind == RegionKind::File && r.prot & PROT_EXEC != 0)
        .filter_map(|r| Some((r.start, (r.end, r.path.clone()?, r.offset))))
        .collect();
    modules.added.retain(|start, (end, path)| {
        let keep = wanted
            .get(start)
            .is_some_and(|(e, p, _)| e == end && p == path);
        if !keep {
            modules.unwinder.remove_module(*start);
        }
        keep
    });
    for (&start, (end, path, offset)) in &wanted {
        if modules.added.contains_key(&start) {
            continue;
        }
        let tables = files
            .entry(path.clone())
            .or_insert_with(|| ElfTables::read(&file_path(pid, path)).map(Arc::new));
        if let Some(module) = tables
            .as_ref()
            .and_then(|t| t.module(path, start..*end, *offset))
        {
            modules.unwinder.add_module(module);
        }
        // Added even without tables, so that it is not tried again until it changes.
        modules.added.insert(start, (*end, path.clone()));
    }
    modules.synced_at = Some(space.exec_file_changes());
}

/// Where memprof can read a file process `pid` mapped at `path`: through the process's root
/// while it lives (its mount namespace may differ), else the path itself.
fn file_path(pid: u32, path: &str) -> PathBuf {
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let through_root = PathBuf::from(format!("/proc/{pid}/root{path}"));
    if through_root.exists() {
        through_root
    } else {
        PathBuf::from(path)
    }
}

#[cfg(test)]
mod tests {
    use std::arch::asm;

    use memprof_common::EventHeader;

    use super::*;
    use crate::{
        procfs,
        symbolize::{Location, Symbolizer},
    };

    fn raw(ip: u64, sp: u64, bp: u64, stack: &[u8], leaf_returns: bool) -> RawStack<'_> {
        RawStack {
            header: EventHeader::default(),
            id: 0,
            ip,
            sp,
            bp,
            leaf_returns,
            awaits_verdict: true,
            start: sp,
            stack,
        }
    }

    fn words(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// The frame walk on a copy: the leaf's return address at sp, then the saved frame
    /// pointers' chain, stopping where the copy or a plausible frame pointer ends.
    #[test]
    fn the_frame_walk_follows_the_copied_chain() {
        let sp = 0x7ffd_0000_1000;
        // sp: a return address; sp+16: a frame (next fp, return address); sp+32: the last,
        // whose next frame pointer (5, as glibc's start-up code leaves) ends the walk.
        let stack = words(&[0x4011, 0, sp + 32, 0x4022, 5, 0x4033]);
        let walk = frame_walk(&raw(0x4000, sp, sp + 16, &stack, true));
        assert_eq!(walk, [0x4000, 0x4011, 0x4022, 0x4033]);
        let walk = frame_walk(&raw(0x4000, sp, sp + 16, &stack, false));
        assert_eq!(walk, [0x4000, 0x4022, 0x4033]);
        // A frame pointer past the copy ends the walk there.
        let walk = frame_walk(&raw(0x4000, sp, sp + 40, &stack, false));
        assert_eq!(walk, [0x4000]);
        assert_eq!(frame_walk(&raw(0x4000, sp, sp, &[], true)), [0x4000]);
        // Ids: never the kernel's markers, the same for the same frames and process.
        let id = stack_id(7, &[0x4000, 0x4011]);
        assert_eq!(id, stack_id(7, &[0x4000, 0x4011]));
        assert_ne!(id, stack_id(8, &[0x4000, 0x4011]));
        assert_ne!(id, stack_id(7, &[0x4000, 0x4012]));
        assert!(id & 1 == 1 && id >> 63 == 0);
    }

    /// This thread's registers and a copy of its stack up to the end of its mapping.
    #[inline(never)]
    fn capture_own_stack() -> (u64, u64, u64, Vec<u8>) {
        let (ip, sp, bp): (u64, u64, u64);
        // SAFETY: reads three registers, touches no memory.
        unsafe {
            asm!("lea {ip}, [rip]", "mov {sp}, rsp", "mov {bp}, rbp",
                 ip = out(reg) ip, sp = out(reg) sp, bp = out(reg) bp);
        }
        let maps = procfs::read_maps(std::process::id()).unwrap();
        let stack = maps
            .iter()
            .find(|e| (e.start..e.end).contains(&sp))
            .unwrap();
        let len = (stack.end - sp).min(64 << 10) as usize;
        // SAFETY: this thread's own stack, mapped from sp to the end of its mapping.
        let copy = unsafe { std::slice::from_raw_parts(sp as *const u8, len) }.to_vec();
        (ip, sp, bp, copy)
    }

    /// A stack copied from this very test unwinds through the test harness and the standard
    /// library to the thread's start, with the tables of this binary and of libc.
    #[test]
    fn a_copied_stack_unwinds_to_the_threads_start() {
        let (ip, sp, bp, copy) = capture_own_stack();
        let pid = std::process::id();
        let space = AddressSpace::from_maps(&procfs::read_maps(pid).unwrap(), None);
        let unwound = Unwinding::default().unwind(pid, &space, &raw(ip, sp, bp, &copy, false));
        let mut symbolizer = Symbolizer::new();
        let names: Vec<String> = unwound
            .frames
            .iter()
            .enumerate()
            .flat_map(|(depth, &address)| {
                let lookup = if depth == 0 { address } else { address - 1 };
                let region = space.region_at(lookup).unwrap();
                let location = Location::Module {
                    path: region.path.as_deref().unwrap(),
                    file_offset: lookup - region.start + region.offset,
                };
                symbolizer.symbolize(address, location).to_vec()
            })
            .map(|frame| frame.function)
            .collect();
        assert!(unwound.complete, "{names:#?}");
        assert!(names[0].contains("capture_own_stack"), "{names:#?}");
        assert!(
            names.iter().any(|n| n.contains("a_copied_stack_unwinds")),
            "{names:#?}"
        );
        let last = names.last().unwrap();
        assert!(
            last.contains("clone3") || last.contains("start_thread"),
            "{names:#?}"
        );
    }
}
