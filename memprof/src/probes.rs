//! Checks the machine, then loads the eBPF programs, attaches them and owns the in-kernel
//! filter. Everything it loads is released when the [`Probes`] are dropped.
use std::{
    fs, io,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    ptr::NonNull,
    sync::atomic::{AtomicU8, Ordering},
};

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::Program,
};
use aya_log::EbpfLogger;
use memprof_common::{
    COUNTER_LOST, COUNTER_STACKS_LOST, COUNTER_STACKS_OVER_BUDGET, FaultEvent, Filter,
    KernelLayout, PID_LIMIT, STACK_WALK_DENIED, TracedProcess, fields,
    pid_state::{TRACED, UNTRACED},
};

use crate::{btf::Btf, error::Error, procfs};

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Every tracepoint memprof attaches to, with the program that handles it. Programs on the
/// events every fault fires (and on every mmap lock) are raw tracepoint programs: they get the
/// tracepoint's arguments without the kernel formatting a record first. The syscalls are
/// followed on their own exit tracepoints, by one program, so that other syscalls do not run
/// it (see the kernel side's syscall.rs).
const ATTACHMENTS: [(&str, &str, &str); 23] = [
    ("syscalls", "sys_exit_mmap", SYSCALL_EXIT),
    ("syscalls", "sys_exit_brk", SYSCALL_EXIT),
    ("syscalls", "sys_exit_munmap", SYSCALL_EXIT),
    ("syscalls", "sys_exit_mremap", SYSCALL_EXIT),
    ("syscalls", "sys_exit_mprotect", SYSCALL_EXIT),
    ("syscalls", "sys_exit_madvise", SYSCALL_EXIT),
    ("syscalls", "sys_exit_shmat", SYSCALL_EXIT),
    ("syscalls", "sys_exit_shmdt", SYSCALL_EXIT),
    ("syscalls", "sys_exit_mlock", SYSCALL_EXIT),
    ("syscalls", "sys_exit_mlock2", SYSCALL_EXIT),
    ("syscalls", "sys_exit_mlockall", SYSCALL_EXIT),
    ("syscalls", "sys_exit_munlockall", SYSCALL_EXIT),
    ("syscalls", "sys_exit_execve", SYSCALL_EXIT),
    ("syscalls", "sys_exit_execveat", SYSCALL_EXIT),
    // Before the program that counts changes: a thread switched out between its change and
    // its syscall's exit must find its number parked.
    ("sched", "sched_switch", "mp_sched_switch"),
    (
        "mmap_lock",
        "mmap_lock_acquire_returned",
        "mp_mmap_write_locked",
    ),
    ("exceptions", "page_fault_user", "mp_page_fault_user"),
    ("exceptions", "page_fault_kernel", "mp_page_fault_kernel"),
    ("sched", "sched_prepare_exec", "mp_prepare_exec"),
    ("kmem", "rss_stat", "mp_rss_stat"),
    ("task", "task_newtask", "mp_newtask"),
    ("sched", "sched_process_exec", "mp_exec"),
    ("sched", "sched_process_exit", "mp_exit"),
];

const SYSCALL_EXIT: &str = "mp_syscall_exit";

/// Refuses early, with the fix named, what would stop tracing; returns where this kernel
/// keeps what the programs read.
pub fn check_machine() -> anyhow::Result<KernelLayout> {
    check_privileges()?;
    if ensure_tracefs()? {
        crate::note!("memprof: mounted tracefs at {TRACEFS}");
    }
    check_tracepoints(Path::new(TRACEFS))?;
    Ok(kernel_layout()?)
}

/// Refuses early, with the fix named, when memprof cannot load eBPF programs.
pub fn check_privileges() -> Result<(), Error> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let effective = procfs::own_effective_capabilities();
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect();
    Err(Error::InsufficientPrivileges(missing.join(", ")))
}

/// Mounts tracefs when it is not there yet (aya attaches tracepoints through it).
pub fn ensure_tracefs() -> Result<bool, Error> {
    match fs::metadata(Path::new(TRACEFS).join("events")) {
        Ok(events) if events.is_dir() => return Ok(false),
        // Mounted, root's alone (0700): the capability mode without CAP_DAC_READ_SEARCH.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(Error::TracefsUnreadable);
        }
        _ => {}
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(Error::TracefsUnavailable)?;
    if !status.status.success() || !Path::new(TRACEFS).join("events").is_dir() {
        let why = String::from_utf8_lossy(&status.stderr).trim().to_string();
        return Err(Error::TracefsUnavailable(io::Error::other(why)));
    }
    Ok(true)
}

/// Where this kernel keeps what the rss_stat program reads, from its BTF.
pub fn kernel_layout() -> Result<KernelLayout, Error> {
    let btf = Btf::from_sys_fs()?;
    Ok(KernelLayout {
        task_mm: btf.member_offset("task_struct", "mm")?,
        mm_rss_stat: btf.member_offset("mm_struct", "rss_stat")?,
        counter_size: btf.struct_size("percpu_counter")?,
        counter_count: btf.member_offset("percpu_counter", "count")?,
        mm_start_stack: btf.member_offset("mm_struct", "start_stack")?,
        vma_end: btf.member_offset("vm_area_struct", "vm_end")?,
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_path: btf.member_offset("file", "f_path")?,
        path_mnt: btf.member_offset("path", "mnt")?,
        path_dentry: btf.member_offset("path", "dentry")?,
        dentry_parent: btf.member_offset("dentry", "d_parent")?,
        dentry_name: btf.member_offset("dentry", "d_name")?,
        qstr_name: btf.member_offset("qstr", "name")?,
        mount_mnt: btf.member_offset("mount", "mnt")?,
        mount_parent: btf.member_offset("mount", "mnt_parent")?,
        mount_mountpoint: btf.member_offset("mount", "mnt_mountpoint")?,
        mm_total_vm: btf.member_offset("mm_struct", "total_vm")?,
        counter_counters: btf.member_offset("percpu_counter", "counters")?,
        array_pptrs: btf.member_offset("bpf_array", "pptrs")?,
        mm_users: btf.member_offset("mm_struct", "mm_users")?,
    })
}

/// Checks that each tracepoint exists and that every field the programs read is where they
/// read it.
pub fn check_tracepoints(tracefs: &Path) -> Result<(), Error> {
    for (category, name, _) in ATTACHMENTS {
        let dir = tracefs.join("events").join(category).join(name);
        if !dir.join("id").exists() {
            return Err(Error::TracepointMissing(format!("{category}:{name}"), dir));
        }
    }
    check_fields(tracefs, &fields::ALL)
}

pub fn check_fields(tracefs: &Path, wanted: &[fields::Field]) -> Result<(), Error> {
    for &(tracepoint, field, expected) in wanted {
        check_field(tracefs, tracepoint, field, expected)?;
    }
    Ok(())
}

/// Checks that `field` of `tracepoint` (`category/name`) is at offset `expected`.
fn check_field(
    tracefs: &Path,
    tracepoint: &str,
    field: &str,
    expected: usize,
) -> Result<(), Error> {
    let path = tracefs.join("events").join(tracepoint).join("format");
    let format = fs::read_to_string(&path)
        .map_err(|_| Error::TracepointMissing(tracepoint.replace('/', ":"), path.clone()))?;
    let found = field_offset(&format, field);
    if found != Some(expected) {
        return Err(Error::TracepointLayout {
            tracepoint: tracepoint.replace('/', ":"),
            field: field.to_string(),
            expected,
            found,
        });
    }
    Ok(())
}

/// The offset of `field` in a tracepoint `format` file
/// (`field:unsigned long address;\toffset:8;\tsize:8;\tsigned:0;`).
fn field_offset(format: &str, field: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let declaration = line.trim().strip_prefix("field:")?.split(';').next()?;
        let name = declaration.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line.split("offset:").nth(1)?.split(';').next()?;
        offset.trim().parse().ok()
    })
}

/// What userspace found of the kernel's frame walk of a user stack it copied, by the stack's
/// id: the unwinding confirmed its frames, or did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Vouched(u64),
    Denied(u64),
}

/// What the kernel side records.
pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    /// How many stacks the kernel remembers having sent: a power of two.
    pub stack_cache_slots: u32,
    /// Record the stack of one fault in this many; 0 for none.
    pub fault_stack_sample: u32,
    /// `--all`: the processes the kernel starts tracing on its own.
    pub filter: Filter,
    /// Record the call stack of mmap and brk (the sites); `top` does without.
    pub user_stacks: bool,
    /// From [`kernel_layout`].
    pub layout: KernelLayout,
    /// The bench's floor: attach everything, record nothing (`run --empty-programs`).
    pub empty_programs: bool,
}

/// The loaded and attached programs and the maps userspace uses.
pub struct Probes {
    /// Kept alive: dropping it detaches and unloads everything.
    _ebpf: Ebpf,
    pid_states: PidStates,
    traced: HashMap<MapData, u32, TracedProcess>,
    counters: PerCpuArray<MapData, u64>,
    fault_runs: PerCpuArray<MapData, FaultEvent>,
    /// The user stacks whose frame walk userspace vouched for (MP_STACKS_KNOWN), and those
    /// last copied (MP_STACKS_COPIED), by slot.
    known_stacks: Array<MapData, u64>,
    copied_stacks: Array<MapData, u64>,
    stack_slot_mask: u32,
    /// The kernel side's log lines (aya-log), forwarded by [`Probes::drain_logs`]; `None`
    /// when the logger could not start (memprof goes on without them).
    logger: Option<EbpfLogger<&'static dyn log::Log>>,
    /// Owned here so that they are detached together (see Drop).
    links: Vec<Box<dyn Send>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.detach();
    }
}

impl Probes {
    /// Loads and attaches everything; returns the probes and the ring buffer of events.
    pub fn load(options: &LoadOptions) -> anyhow::Result<(Self, RingBuf<MapData>)> {
        // Older kernels charge BPF maps to RLIMIT_MEMLOCK; newer ones ignore it.
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain syscall with a valid pointer.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };

        let user_stacks = u32::from(options.user_stacks);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("MP_EVENTS", options.ring_buffer_bytes)
            .map_max_entries("MP_STACKS_SENT", options.stack_cache_slots)
            .map_max_entries("MP_STACKS_KNOWN", options.stack_cache_slots)
            .map_max_entries("MP_STACKS_COPIED", options.stack_cache_slots)
            .override_global("USER_STACKS", &user_stacks, true)
            .override_global("STACK_SLOT_MASK", &(options.stack_cache_slots - 1), true)
            .override_global("FAULT_STACK_SAMPLE", &options.fault_stack_sample, true)
            .override_global("FILTER", &options.filter, true)
            .override_global("LAYOUT", &options.layout, true)
            .override_global("EMPTY_PROGRAMS", &u32::from(options.empty_programs), true)
            // The programs' log statements above the `log` crate's level (RUST_LOG) are cut
            // by the verifier: they cost nothing when not shown.
            .override_global(aya_log::LEVEL, &(log::max_level() as u8), false)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/memprof"
            )))
            .context("loading memprof's eBPF programs")?;
        // The loader read the kernel's BTF and dropped it; the BTF tracepoint programs need it
        // too. Read after, not before: two parsed copies at once would be memprof's peak RSS.
        let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
        for (program_name, program) in ebpf.programs_mut() {
            let verifying = std::time::Instant::now();
            match program {
                Program::TracePoint(p) => p.load(),
                Program::RawTracePoint(p) => p.load(),
                Program::BtfTracePoint(p) => {
                    let tracepoint = ATTACHMENTS
                        .iter()
                        .find(|&&(_, _, program)| program == program_name)
                        .map_or(program_name, |&(_, name, _)| name);
                    p.load(tracepoint, &btf)
                }
                other => unreachable!("memprof has no {:?} programs", other.prog_type()),
            }
            .context("the kernel's verifier refused a program")?;
            log::debug!("{program_name}: loaded in {:?}", verifying.elapsed());
        }
        drop(btf);
        release_freed_memory();
        let mut links: Vec<Box<dyn Send>> = Vec::new();
        for (category, name, program) in ATTACHMENTS {
            let attaching = || format!("attaching to {category}:{name}");
            match ebpf.program_mut(program) {
                Some(Program::TracePoint(p)) => {
                    let link = p.attach(category, name).with_context(attaching)?;
                    links.push(Box::new(p.take_link(link)?));
                }
                Some(Program::RawTracePoint(p)) => {
                    let link = p.attach(name).with_context(attaching)?;
                    links.push(Box::new(p.take_link(link)?));
                }
                Some(Program::BtfTracePoint(p)) => {
                    let link = p.attach().with_context(attaching)?;
                    links.push(Box::new(p.take_link(link)?));
                }
                _ => anyhow::bail!("program {program} missing from the eBPF object"),
            }
        }
        let events = RingBuf::try_from(ebpf.take_map("MP_EVENTS").context("MP_EVENTS")?)?;
        let traced = HashMap::try_from(ebpf.take_map("MP_TRACED").context("MP_TRACED")?)?;
        let counters = PerCpuArray::try_from(ebpf.take_map("MP_COUNTERS").context("MP_COUNTERS")?)?;
        let fault_runs =
            PerCpuArray::try_from(ebpf.take_map("MP_FAULT_RUN").context("MP_FAULT_RUN")?)?;
        let Some(Map::Array(pid_states)) = ebpf.map("MP_PID_STATE") else {
            anyhow::bail!("map MP_PID_STATE missing from the eBPF object");
        };
        let pid_states = PidStates::map(pid_states)?;
        let mut stack_map = |name: &str| -> anyhow::Result<Array<MapData, u64>> {
            Ok(Array::try_from(
                ebpf.take_map(name).context(name.to_string())?,
            )?)
        };
        let known_stacks = stack_map("MP_STACKS_KNOWN")?;
        let copied_stacks = stack_map("MP_STACKS_COPIED")?;
        let logger = EbpfLogger::init(&mut ebpf)
            .inspect_err(|e| log::warn!("the kernel side's log lines will not be shown: {e}"))
            .ok();
        let probes = Self {
            _ebpf: ebpf,
            pid_states,
            traced,
            counters,
            fault_runs,
            known_stacks,
            copied_stacks,
            stack_slot_mask: options.stack_cache_slots - 1,
            logger,
            links,
        };
        Ok((probes, events))
    }

    /// Adds a process to the in-kernel filter; its future children follow on their own.
    pub fn trace(&mut self, pid: u32) -> anyhow::Result<()> {
        self.traced
            .insert(pid, TracedProcess::NEW, 0)
            .with_context(|| format!("adding pid {pid} to the filter"))?;
        self.pid_states.set(pid, TRACED);
        Ok(())
    }

    /// Whether the process is in the in-kernel filter (the kernel adds new ones itself).
    pub fn is_traced(&self, pid: u32) -> bool {
        self.pid_states.get(pid) != UNTRACED
    }

    /// Tells the kernel what userspace found of the frame walks of user stacks it copied
    /// (`tracker::Tracker::take_verdicts`): a stack vouched for goes out by id from now on,
    /// without a copy; one denied is copied each time.
    pub fn record_verdicts(&mut self, verdicts: &[Verdict]) {
        for &verdict in verdicts {
            let (map, id, value) = match verdict {
                Verdict::Vouched(id) => (&mut self.known_stacks, id, id),
                Verdict::Denied(id) => (&mut self.copied_stacks, id, id | STACK_WALK_DENIED),
            };
            if let Err(e) = map.set(id as u32 & self.stack_slot_mask, value, 0) {
                log::warn!("telling the kernel about a stack failed: {e}");
            }
        }
    }

    /// Takes a process out of the in-kernel filter (one that was gone before it was read).
    pub fn untrace(&mut self, pid: u32) {
        self.pid_states.set(pid, UNTRACED);
        let _ = self.traced.remove(&pid);
    }

    /// Events the kernel side could not deliver (ring buffer full), summed over CPUs.
    pub fn lost_events(&self) -> u64 {
        self.counter(COUNTER_LOST)
    }

    /// Stacks the kernel could not walk or send (ring buffer full).
    pub fn lost_stacks(&self) -> u64 {
        self.counter(COUNTER_STACKS_LOST)
    }

    /// User stacks not copied because the copies were over budget (`RAW_STACKS_PER_TICK`).
    pub fn stacks_over_budget(&self) -> u64 {
        self.counter(COUNTER_STACKS_OVER_BUDGET)
    }

    /// Stops every program. Detaching a tracepoint program waits for RCU grace periods
    /// (~70 ms here): overlapped, the detaches take what one or two take (the kernel
    /// serialises part).
    pub fn detach(&mut self) {
        std::thread::scope(|scope| {
            for link in self.links.drain(..) {
                scope.spawn(move || drop(link));
            }
        });
    }

    /// The runs of faults the kernel had not sent yet, one per CPU at most (see
    /// `FaultEvent`); complete once the programs are detached.
    pub fn unsent_fault_runs(&self) -> Result<Vec<FaultEvent>, aya::maps::MapError> {
        let per_cpu = self.fault_runs.get(&0, 0)?;
        Ok(per_cpu.iter().copied().filter(|r| r.pages != 0).collect())
    }

    /// Forwards the kernel side's pending log lines to the `log` crate (which shows them
    /// as RUST_LOG says); returns at once when there are none.
    pub fn drain_logs(&mut self) {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
    }

    fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }
}

/// Hands the memory of the parsed BTF (freed, ~20 MB in small pieces) back to the system
/// before the ring buffer is mapped beside it: the allocator would keep it, and memprof's
/// peak RSS with it.
fn release_freed_memory() {
    // SAFETY: glibc's malloc_trim only releases free memory.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0)
    };
}

/// The kernel's per-pid state bytes (MP_PID_STATE), mapped into memprof. A byte store
/// changes one pid alone; a map update would write back a whole entry, eight pids, over any
/// change the kernel made to the others meanwhile.
struct PidStates {
    bytes: NonNull<u8>,
}

// SAFETY: the mapping is shared memory, accessed only through atomics.
unsafe impl Send for PidStates {}

impl PidStates {
    const LEN: usize = PID_LIMIT as usize;

    fn map(map: &MapData) -> anyhow::Result<Self> {
        // The map's own descriptor: asking the kernel for another by id takes CAP_SYS_ADMIN,
        // which the capability mode (CAP_BPF, CAP_PERFMON) does not have.
        let fd = map.fd();
        // SAFETY: maps the array's LEN bytes (it is BPF_F_MMAPABLE), shared with the kernel.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_fd().as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).context("mapping MP_PID_STATE");
        }
        let bytes = NonNull::new(address.cast()).context("mapping MP_PID_STATE")?;
        Ok(Self { bytes })
    }

    fn byte(&self, pid: u32) -> Option<&AtomicU8> {
        let pid = pid as usize;
        // SAFETY: within the mapping, which lives as long as self; the kernel writes it too,
        // hence atomics.
        (pid < Self::LEN).then(|| unsafe { AtomicU8::from_ptr(self.bytes.as_ptr().add(pid)) })
    }

    fn get(&self, pid: u32) -> u8 {
        self.byte(pid)
            .map_or(UNTRACED, |b| b.load(Ordering::Relaxed))
    }

    fn set(&self, pid: u32, state: u8) {
        if let Some(b) = self.byte(pid) {
            b.store(state, Ordering::Relaxed);
        }
    }
}

impl Drop for PidStates {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, used by nothing after this.
        unsafe { libc::munmap(self.bytes.as_ptr().cast(), Self::LEN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_are_read_from_a_format_file() {
        let format = "name: rss_stat\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:unsigned int mm_id;\toffset:8;\tsize:4;\tsigned:0;\n\
            \tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
            \tfield:struct clone_args * uargs;\toffset:32;\tsize:8;\tsigned:0;\n";
        assert_eq!(field_offset(format, "mm_id"), Some(8));
        assert_eq!(field_offset(format, "comm"), Some(12));
        assert_eq!(field_offset(format, "uargs"), Some(32));
        assert_eq!(field_offset(format, "curr"), None);
    }
}
