//! A workload whose memory operations are known, for memprof's integration tests and demo.
//!
//! It runs fixed steps (mmap, mprotect, madvise, munmap, mremap, brk, a file mapping, SysV
//! shared memory, a thread, stack growth), each followed by a checkpoint: one JSON line on stdout with the kernel's own
//! VmSize and VmRSS at that moment, then a pause without memory operations.
//!
//! With `--race ROUNDS` it instead runs threads racing on one address space (see
//! `memprof_race`), then the checkpoint "end".
//!
//! With `--storm faults|syscalls|mixed|host` it instead runs one of the benchmark's storms (see
//! `cargo xtask bench`) and prints only `{"storm":"NAME","elapsed_ns":N,"cpu_ns":M}`, the
//! storm's own CLOCK_MONOTONIC duration, so that start-up and a tracer's attach time are not
//! counted, and the CPU time it took (the probes' time in its system time among it).
#![expect(
    unused_crate_dependencies,
    reason = "a standalone program that shares the package's dependencies"
)]

use anyhow::{Context, Result, anyhow, bail, ensure};
use libc::c_int;
use std::{
    fs::File,
    hint::black_box,
    io::{self, Read, Write},
    mem::ManuallyDrop,
    os::fd::{AsRawFd, FromRawFd},
    process, ptr, thread,
    time::Duration,
};

const USAGE: &str = "usage: memprof-workload [--pause-ms N] [--hold-ms N] [--wait-stdin] \
                     [--sites] [--fault-rounds N] [--race ROUNDS] \
                     [--storm faults|syscalls|mixed|host] [--scale F]";
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;
/// The smallest page size Linux uses: writing every 4 KiB touches every page whatever its size.
const PAGE: usize = 4096;
const RW: c_int = libc::PROT_READ | libc::PROT_WRITE;
const ANON: c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// Contents of the mapped file: real data, so that its pages are page cache, not holes.
static FILE_PAGE: [u8; PAGE] = [0xa5; PAGE];

struct Options {
    pause: Duration,
    hold: Duration,
    wait_stdin: bool,
    /// Only the call sites of `sites()`, for attribution tests.
    sites: bool,
    /// Only this many rounds of `memprof_fault_storm`, 65536 faults each.
    fault_rounds: usize,
    /// Only this many rounds of `memprof_race` in each of its threads.
    race_rounds: usize,
    /// Only this benchmark storm, then its duration.
    storm: Option<Storm>,
    /// Multiplies the storm's sizes and round counts (1.0: the benchmark's full storm).
    scale: f64,
}

#[derive(Clone, Copy)]
enum Storm {
    /// Reserve 4 GiB, then 4 rounds: touch every page of the first 1 GiB, hand them back.
    Faults,
    /// 200,000 rounds: mmap 64 KiB, touch one page, munmap.
    Syscalls,
    /// One round of the fault storm, then 50,000 rounds of the syscall storm.
    Mixed,
    /// 1,500,000 rounds of a 1-byte read of /dev/zero and write to /dev/null (`dd bs=1`):
    /// what memprof costs a syscall-bound process it does not trace.
    Host,
}

impl Storm {
    fn name(self) -> &'static str {
        match self {
            Storm::Faults => "faults",
            Storm::Syscalls => "syscalls",
            Storm::Mixed => "mixed",
            Storm::Host => "host",
        }
    }
}

#[expect(
    clippy::undocumented_unsafe_blocks,
    reason = "one SAFETY note, before the first step, covers every step"
)]
fn main() -> Result<()> {
    let options = parse_args()?;
    if options.wait_stdin {
        emit(format!("ready {}\n", process::id()).as_bytes())?;
        io::stdin().read_line(&mut String::new())?;
    }
    let checkpoint = |name: &str| {
        checkpoint(name)?;
        thread::sleep(options.pause);
        Ok::<_, anyhow::Error>(())
    };
    if let Some(storm) = options.storm {
        return storm_run(storm, options.scale);
    }
    if options.sites {
        sites()?;
        return checkpoint("end");
    }
    if options.fault_rounds > 0 {
        memprof_fault_storm(options.fault_rounds)?;
        return checkpoint("end");
    }
    if options.race_rounds > 0 {
        memprof_race(options.race_rounds)?;
        return checkpoint("end");
    }

    let base = mmap(GIB, libc::PROT_NONE, ANON | libc::MAP_NORESERVE, -1)?;
    checkpoint("reserve")?;

    // SAFETY (every unsafe block below): the memory changed or touched is in mappings that
    // this program made, holds no Rust values, and is mapped writable where it is written.
    unsafe { mprotect(base, 256 * MIB, RW)? };
    checkpoint("commit")?;

    unsafe { touch(base, 64 * MIB) };
    checkpoint("touch")?;

    // Replaces 48..64 MiB (touched) and 64..80 MiB (untouched) of the reservation.
    let fixed = base.wrapping_add(48 * MIB);
    unsafe { mmap_fixed(fixed, 32 * MIB)? };
    unsafe { touch(fixed, 8 * MIB) };
    checkpoint("map_fixed")?;

    unsafe { madvise(base, 16 * MIB, libc::MADV_DONTNEED)? };
    checkpoint("dontneed")?;

    unsafe { munmap(base.wrapping_add(GIB - 128 * MIB), 128 * MIB)? };
    // Splits the reservation in two.
    unsafe { munmap(base.wrapping_add(512 * MIB), 16 * MIB)? };
    checkpoint("munmap")?;

    let grown = mmap(16 * MIB, RW, ANON, -1)?;
    unsafe { touch(grown, 16 * MIB) };
    let grown = unsafe { mremap(grown, 16 * MIB, 32 * MIB, libc::MREMAP_MAYMOVE)? };
    unsafe { touch(grown.wrapping_add(16 * MIB), 16 * MIB) };
    unsafe { mremap(grown, 32 * MIB, 8 * MIB, 0)? };
    checkpoint("mremap")?;

    // The raw syscall: glibc's brk() returns no address, and sbrk() answers from a cache.
    let start = unsafe { libc::syscall(libc::SYS_brk, 0) } as *mut u8;
    unsafe { brk(start.wrapping_add(8 * MIB))? };
    unsafe { touch(start, 8 * MIB) };
    unsafe { brk(start.wrapping_add(4 * MIB))? };
    checkpoint("brk")?;

    map_file()?;
    checkpoint("file")?;

    // SysV shared memory: 8 MiB attached and touched, 4 MiB attached read-only, and 2 MiB
    // attached, touched and detached.
    let shared = shm_attach(8 * MIB, 0)?;
    unsafe { touch(shared, 8 * MIB) };
    black_box(shm_attach(4 * MIB, libc::SHM_RDONLY)?);
    let detached = shm_attach(2 * MIB, 0)?;
    unsafe { touch(detached, 2 * MIB) };
    unsafe { shmdt(detached)? };
    checkpoint("shm")?;

    // Besides its 8 MiB mapping and its 2 MiB stack, the thread's first malloc (in std) gets it
    // glibc's own arena: 64 MiB reserved, 132 KiB of it committed. The stack stays cached.
    let thread_mapping = thread::spawn(|| -> Result<usize> {
        let mapping = mmap(8 * MIB, RW, ANON, -1)?;
        unsafe { touch(mapping, 8 * MIB) };
        black_box(use_stack::<{ 16 << 10 }>(8));
        Ok(mapping as usize)
    })
    .join()
    .map_err(|_| anyhow!("the workload thread panicked"))??;
    black_box(thread_mapping);
    checkpoint("thread")?;

    // 32 frames of 64 KiB grow the main thread's stack VMA by about 2 MiB, for good.
    black_box(use_stack::<{ 64 << 10 }>(32));
    checkpoint("stack")?;

    checkpoint("end")?;
    thread::sleep(options.hold);
    Ok(())
}

/// Known call sites: attribution tests expect each byte charged to the function named here.
fn sites() -> Result<()> {
    let big = memprof_reserve_big()?;
    memprof_touch_known(big);
    memprof_reserve_and_touch()
}

/// Reserves 256 MiB and touches none of it.
#[inline(never)]
fn memprof_reserve_big() -> Result<*mut u8> {
    // black_box after the call: as a tail call, this function's frame would be gone from
    // the stack by the time mmap runs.
    black_box(mmap(256 * MIB, RW, ANON | libc::MAP_NORESERVE, -1))
}

/// Touches 32 MiB of memory reserved elsewhere.
#[inline(never)]
fn memprof_touch_known(start: *mut u8) {
    // SAFETY: the first 32 MiB of a 256 MiB read-write private mapping of ours.
    unsafe { touch(start, 32 * MIB) };
}

/// Reserves 16 MiB and touches 8 MiB of it.
#[inline(never)]
fn memprof_reserve_and_touch() -> Result<()> {
    let start = mmap(16 * MIB, RW, ANON, -1)?;
    // SAFETY: the first half of a read-write private mapping just made.
    unsafe { touch(start, 8 * MIB) };
    Ok(())
}

/// Faults in every page of 256 MiB, `rounds` times, handing the pages back in between.
#[inline(never)]
fn memprof_fault_storm(rounds: usize) -> Result<()> {
    let len = 256 * MIB;
    let start = mmap(len, RW, ANON | libc::MAP_NORESERVE, -1)?;
    for _ in 0..rounds {
        // SAFETY: a read-write private mapping just made, of `len` bytes.
        unsafe {
            touch(start, len);
            madvise(start, len, libc::MADV_DONTNEED)?;
        }
    }
    Ok(())
}

/// Runs a benchmark storm and prints its duration, measured around the storm alone.
fn storm_run(storm: Storm, scale: f64) -> Result<()> {
    // The full storm's figures, scaled; at least one page and one round.
    let touch_len = (((GIB as f64 * scale) as usize) / PAGE).max(1) * PAGE;
    let rounds = |full: usize| ((full as f64 * scale) as usize).max(1);
    let (start, cpu_start) = (monotonic_ns()?, clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)?);
    match storm {
        Storm::Faults => memprof_storm_faults(4, touch_len)?,
        Storm::Syscalls => memprof_storm_syscalls(rounds(200_000))?,
        Storm::Mixed => {
            memprof_storm_faults(1, touch_len)?;
            memprof_storm_syscalls(rounds(50_000))?;
        }
        Storm::Host => copy_bytes(rounds(1_500_000))?,
    }
    let elapsed = monotonic_ns()? - start;
    let cpu = clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)? - cpu_start;
    let mut line = io::Cursor::new([0u8; 128]);
    writeln!(
        line,
        r#"{{"storm":"{}","elapsed_ns":{elapsed},"cpu_ns":{cpu}}}"#,
        storm.name()
    )?;
    emit(&line.get_ref()[..line.position() as usize])?;
    Ok(())
}

/// Reserves 4 GiB; `rounds` times, writes one byte to every page of its first `len` bytes,
/// then hands them back (MADV_DONTNEED), so that every round faults every page in again.
#[inline(never)]
fn memprof_storm_faults(rounds: usize, len: usize) -> Result<()> {
    let reserved = 4 * GIB;
    let start = mmap(reserved, RW, ANON | libc::MAP_NORESERVE, -1)?;
    let len = len.min(reserved);
    for _ in 0..rounds {
        // SAFETY: the first `len` bytes of the read-write private mapping just made.
        unsafe {
            touch(start, len);
            madvise(start, len, libc::MADV_DONTNEED)?;
        }
    }
    // SAFETY: the mapping made above, which holds no Rust values.
    unsafe { munmap(start, reserved) }
}

/// `rounds` times: maps 64 KiB, writes one byte to it, unmaps it.
#[inline(never)]
fn memprof_storm_syscalls(rounds: usize) -> Result<()> {
    let len = 64 << 10;
    for _ in 0..rounds {
        let start = mmap(len, RW, ANON, -1)?;
        // SAFETY: the first byte of a read-write private mapping just made; then that
        // mapping, which holds no Rust values, is unmapped.
        unsafe {
            black_box(start).write_volatile(1);
            munmap(start, len)?;
        }
    }
    Ok(())
}

/// Threads racing on one address space: 8 threads, `rounds` times each, pick one of 8 slots
/// of 64 pages in an arena and map it afresh (MAP_FIXED, populated), make its second half
/// read-only, or unmap it; then, 32 times at once, pairs of threads race to map afresh and
/// to unmap one slot each. What is left where depends on the order in which the kernel made
/// the threads' changes, which a model must follow to end where the kernel did.
#[inline(never)]
fn memprof_race(rounds: usize) -> Result<()> {
    const THREADS: usize = 8;
    const SLOTS: usize = 8;
    const SLOT: usize = 64 * PAGE;
    let arena = mmap(SLOTS * SLOT, libc::PROT_NONE, ANON, -1)? as usize;
    // The last races' slots: each raced for by one pair of threads, once.
    const LAST_RACES: usize = 32;
    const PAIRS: usize = THREADS / 2;
    let last_arena = mmap(LAST_RACES * PAIRS * SLOT, libc::PROT_NONE, ANON, -1)? as usize;
    // Every thread is made before any slot is unmapped: the kernel would put a new thread's
    // mappings (its signal stack) in a hole of the arena, where another's MAP_FIXED would
    // replace them.
    let first = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let last = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (first, last) = (first.clone(), last.clone());
            thread::spawn(move || -> Result<()> {
                first.wait();
                // xorshift: a different, repeatable walk over the slots in each thread.
                let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (i as u64 + 1);
                for _ in 0..rounds {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let slot = (arena + (state as usize % SLOTS) * SLOT) as *mut u8;
                    // SAFETY: `slot` lies in the arena this program reserved, which holds no
                    // Rust values and is never read or written: only mapped, protected and
                    // unmapped.
                    unsafe {
                        match (state >> 40) % 4 {
                            // Populated: the kernel faults the pages in after it made the
                            // mapping and let go of the address space, so another thread's
                            // change to the slot often reaches its syscall's exit first.
                            0 | 1 => {
                                let flags = ANON | libc::MAP_FIXED | libc::MAP_POPULATE;
                                let made = libc::mmap(slot.cast(), SLOT, RW, flags, -1, 0);
                                check(made == libc::MAP_FAILED, "mmap")?;
                            }
                            // Fails (ENOMEM) where another thread unmapped the slot: fine.
                            2 => {
                                let half = slot.wrapping_add(SLOT / 2).cast();
                                libc::mprotect(half, SLOT / 2, libc::PROT_READ);
                            }
                            _ => munmap(slot, SLOT)?,
                        }
                    }
                }
                // Last, at once, in pairs: one thread maps a slot afresh, the other unmaps it;
                // which stays is the kernel's order's, and no later change hides it.
                for race in 0..LAST_RACES {
                    last.wait();
                    let slot = (last_arena + (race * PAIRS + i / 2) * SLOT) as *mut u8;
                    // SAFETY: as above, in the last races' arena.
                    unsafe {
                        if i % 2 == 0 {
                            mmap_fixed(slot, SLOT)?;
                        } else {
                            munmap(slot, SLOT)?;
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow!("a racing thread panicked"))??;
    }
    Ok(())
}

/// `rounds` times: reads one byte of /dev/zero, writes it to /dev/null.
fn copy_bytes(rounds: usize) -> Result<()> {
    let mut zero = File::open("/dev/zero").context("opening /dev/zero")?;
    let mut null = File::options()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    let mut byte = [0u8; 1];
    for _ in 0..rounds {
        zero.read_exact(&mut byte).context("reading /dev/zero")?;
        null.write_all(&byte).context("writing /dev/null")?;
    }
    Ok(())
}

/// CLOCK_MONOTONIC, in nanoseconds.
fn monotonic_ns() -> Result<u64> {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> Result<u64> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to fill.
    let ret = unsafe { libc::clock_gettime(clock, &mut now) };
    check(ret != 0, "clock_gettime")?;
    Ok(now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64)
}

fn parse_args() -> Result<Options> {
    let mut options = Options {
        pause: Duration::from_millis(300),
        hold: Duration::ZERO,
        wait_stdin: false,
        sites: false,
        fault_rounds: 0,
        race_rounds: 0,
        storm: None,
        scale: 1.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut millis = || -> Result<Duration> {
            let value = args
                .next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))?;
            let millis = value
                .parse()
                .with_context(|| format!("{arg} {value}: not a number"))?;
            Ok(Duration::from_millis(millis))
        };
        match arg.as_str() {
            "--pause-ms" => options.pause = millis()?,
            "--hold-ms" => options.hold = millis()?,
            "--wait-stdin" => options.wait_stdin = true,
            "--sites" => options.sites = true,
            "--fault-rounds" => {
                let value = args.next().context("--fault-rounds needs a value")?;
                options.fault_rounds = value.parse().context("--fault-rounds: not a number")?;
            }
            "--race" => {
                let value = args.next().context("--race needs a value")?;
                options.race_rounds = value.parse().context("--race: not a number")?;
            }
            "--storm" => {
                let value = args.next().context("--storm needs a value")?;
                options.storm = Some(match value.as_str() {
                    "faults" => Storm::Faults,
                    "syscalls" => Storm::Syscalls,
                    "mixed" => Storm::Mixed,
                    "host" => Storm::Host,
                    _ => bail!("--storm {value}: not faults, syscalls, mixed or host\n{USAGE}"),
                });
            }
            "--scale" => {
                let value = args.next().context("--scale needs a value")?;
                let scale: f64 = value.parse().context("--scale: not a number")?;
                ensure!(
                    scale > 0.0 && scale <= 4.0,
                    "--scale {value}: not in (0, 4]"
                );
                options.scale = scale;
            }
            _ => bail!("unknown argument {arg}\n{USAGE}"),
        }
    }
    Ok(options)
}

/// Prints the checkpoint line. Nothing here allocates, so the figures read are the ones the
/// line reports and a tracer sees no memory operation of the checkpoint itself.
fn checkpoint(name: &str) -> Result<()> {
    let mut status = [0u8; 4096];
    let mut len = 0;
    let mut file = File::open("/proc/self/status")?;
    while len < status.len() {
        match file.read(&mut status[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let status = &status[..len];
    let size = status_bytes(status, "VmSize:")?;
    let rss = status_bytes(status, "VmRSS:")?;
    let ns = monotonic_ns()?;
    let mut line = io::Cursor::new([0u8; 256]);
    writeln!(
        line,
        r#"{{"checkpoint":"{name}","monotonic_ns":{ns},"vm_size_bytes":{size},"vm_rss_bytes":{rss}}}"#
    )?;
    emit(&line.get_ref()[..line.position() as usize])?;
    Ok(())
}

/// A `Key:   N kB` line of /proc/PID/status, in bytes.
fn status_bytes(status: &[u8], key: &str) -> Result<u64> {
    status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(key.as_bytes()))
        .and_then(|value| std::str::from_utf8(value).ok()?.trim().strip_suffix(" kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .with_context(|| format!("no {key} in /proc/self/status"))
}

/// Writes straight to fd 1: no buffer to allocate or flush, and each line leaves at once.
fn emit(bytes: &[u8]) -> io::Result<()> {
    // SAFETY: fd 1 is open for the life of the process; ManuallyDrop never closes it.
    ManuallyDrop::new(unsafe { File::from_raw_fd(1) }).write_all(bytes)
}

/// Creates an 8 MiB file, maps it shared read-only, reads every page, and removes its path:
/// the mapping (file-backed resident memory) stays until exit.
fn map_file() -> Result<()> {
    let path = std::env::temp_dir().join(format!("memprof-workload-{}", process::id()));
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    for _ in 0..8 * MIB / PAGE {
        file.write_all(&FILE_PAGE)?;
    }
    let fd = file.as_raw_fd();
    let mapping = mmap(8 * MIB, libc::PROT_READ, libc::MAP_SHARED, fd)?;
    let sum = pages(mapping, 8 * MIB)
        // SAFETY: every page is within the readable mapping.
        .map(|page| unsafe { page.read_volatile() })
        .fold(0u8, u8::wrapping_add);
    black_box(sum);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// Attaches a new SysV shared memory segment of `len` bytes, marked for removal so that it
/// goes with its last detach.
fn shm_attach(len: usize, flags: c_int) -> Result<*mut u8> {
    // SAFETY: plain syscalls; the segment is new and attached where the kernel chooses.
    unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600);
        check(id < 0, "shmget")?;
        let address = libc::shmat(id, ptr::null(), flags);
        let attached = address as isize != -1;
        check(
            libc::shmctl(id, libc::IPC_RMID, ptr::null_mut()) != 0,
            "shmctl",
        )?;
        check(!attached, "shmat")?;
        Ok(address.cast())
    }
}

/// Uses `depth` stack frames of at least N bytes each, all written.
#[inline(never)]
fn use_stack<const N: usize>(depth: usize) -> u8 {
    if depth == 0 {
        return 0;
    }
    let mut frame = [depth as u8; N];
    black_box(&mut frame);
    // The frame is used after the call, so the recursion cannot become a loop reusing it.
    frame[0].wrapping_add(use_stack::<N>(depth - 1))
}

fn pages(start: *mut u8, len: usize) -> impl Iterator<Item = *mut u8> {
    (0..len)
        .step_by(PAGE)
        .map(move |offset| start.wrapping_add(offset))
}

/// Writes one byte to every page of `start..start + len`.
///
/// # Safety
/// The range must be mapped writable and hold no Rust values.
unsafe fn touch(start: *mut u8, len: usize) {
    for page in pages(start, len) {
        // SAFETY: the caller guarantees the page is writable.
        unsafe { page.write_volatile(1) };
    }
}

/// A new mapping, where the kernel chooses (`flags` has no MAP_FIXED). Inlined, so that the
/// function that calls it calls glibc's mmap itself: glibc's wrapper keeps no frame, and
/// memprof must still name its caller.
#[inline(always)]
fn mmap(len: usize, prot: c_int, flags: c_int, fd: c_int) -> Result<*mut u8> {
    // SAFETY: a new mapping replaces nothing.
    let address = unsafe { libc::mmap(ptr::null_mut(), len, prot, flags, fd, 0) };
    check(address == libc::MAP_FAILED, "mmap")?;
    Ok(address.cast())
}

// The unsafe wrappers below change existing memory. Safety: the range is part of a mapping
// this program made and holds no Rust values.

/// A new anonymous read-write mapping replacing whatever was at `addr..addr + len`.
unsafe fn mmap_fixed(addr: *mut u8, len: usize) -> Result<()> {
    let flags = ANON | libc::MAP_FIXED;
    // SAFETY: see above.
    let address = unsafe { libc::mmap(addr.cast(), len, RW, flags, -1, 0) };
    check(address == libc::MAP_FAILED, "mmap")
}

unsafe fn mremap(old: *mut u8, old_len: usize, new_len: usize, flags: c_int) -> Result<*mut u8> {
    // SAFETY: see above.
    let address = unsafe { libc::mremap(old.cast(), old_len, new_len, flags) };
    check(address == libc::MAP_FAILED, "mremap")?;
    Ok(address.cast())
}

unsafe fn mprotect(addr: *mut u8, len: usize, prot: c_int) -> Result<()> {
    // SAFETY: see above.
    let ret = unsafe { libc::mprotect(addr.cast(), len, prot) };
    check(ret != 0, "mprotect")
}

unsafe fn madvise(addr: *mut u8, len: usize, advice: c_int) -> Result<()> {
    // SAFETY: see above.
    let ret = unsafe { libc::madvise(addr.cast(), len, advice) };
    check(ret != 0, "madvise")
}

unsafe fn munmap(addr: *mut u8, len: usize) -> Result<()> {
    // SAFETY: see above.
    let ret = unsafe { libc::munmap(addr.cast(), len) };
    check(ret != 0, "munmap")
}

/// Moves the program break with glibc's brk(): the syscall itself plus an update of glibc's
/// cached break, so that malloc's own later heap growth goes above it instead of cutting it.
unsafe fn brk(end: *mut u8) -> Result<()> {
    // SAFETY: see above.
    let ret = unsafe { libc::brk(end.cast()) };
    check(ret != 0, "brk")
}

/// Turns a failed syscall into an error naming it and the errno it left.
/// # Safety
/// `addr` is where a SysV segment is attached, holding no Rust values.
unsafe fn shmdt(addr: *mut u8) -> Result<()> {
    // SAFETY: per the caller.
    check(unsafe { libc::shmdt(addr.cast()) } != 0, "shmdt")
}

fn check(failed: bool, what: &str) -> Result<()> {
    if failed {
        bail!("{what}: {}", io::Error::last_os_error());
    }
    Ok(())
}
