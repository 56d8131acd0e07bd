//! Failures a user can act on, each with its own exit code (listed in the README).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no process with pid {0} (check the pid with `ps -p {0}`)")]
    NoSuchProcess(u32),
    #[error("pid {pid} cannot be traced: it is {what}")]
    CannotTrace { pid: u32, what: &'static str },
    #[error(
        "pid {pid} cannot be traced: reading its maps in /proc/{pid} was refused ({why}); memprof \
         reads a process's maps to know its regions. The process is another user namespace's \
         or protected by ptrace rules (kernel.yama.ptrace_scope): run memprof where it runs, \
         as its owner or root of its namespace"
    )]
    ProcessUnreadable { pid: u32, why: std::io::Error },
    #[error(
        "memprof needs root or the CAP_BPF and CAP_PERFMON capabilities to load eBPF programs: \
         run it with sudo (missing: {0})"
    )]
    InsufficientPrivileges(String),
    #[error(
        "tracefs is not mounted at /sys/kernel/tracing and mounting it failed ({0}); \
         mount it with `sudo mount -t tracefs nodev /sys/kernel/tracing`"
    )]
    TracefsUnavailable(std::io::Error),
    #[error(
        "tracefs at /sys/kernel/tracing is root's alone (mode 0700) and this user may not read \
         it: without root, memprof needs CAP_DAC_READ_SEARCH besides CAP_BPF and CAP_PERFMON \
         (`sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep $(command -v memprof)`), or \
         tracefs mounted for a group of this user (`gid=` and `mode=0750`)"
    )]
    TracefsUnreadable,
    #[error(
        "this kernel lacks the tracepoint {0} that memprof needs (no {1}); \
         memprof needs Linux 6.2 or newer built with CONFIG_FTRACE_SYSCALLS"
    )]
    TracepointMissing(String, PathBuf),
    #[error(
        "tracepoint {tracepoint} field `{field}` is at offset {found:?} on this kernel, \
         memprof expects {expected}"
    )]
    TracepointLayout {
        tracepoint: String,
        field: String,
        expected: usize,
        found: Option<usize>,
    },
    #[error(
        "{0}: memprof reads where the kernel keeps the resident-page counters from its BTF, \
         which needs a kernel built with CONFIG_DEBUG_INFO_BTF"
    )]
    KernelTypes(#[from] crate::btf::BtfError),
    #[error("command not found: {0}")]
    CommandNotFound(String),
    #[error("cannot execute {program}: {why}")]
    CannotExecute { program: String, why: String },
    #[error("no cgroup {path}: {why} (list them with `systemd-cgls` or `ls /sys/fs/cgroup`)")]
    NoSuchCgroup { path: String, why: String },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NoSuchProcess(_) | Self::CannotTrace { .. } | Self::ProcessUnreadable { .. } => 3,
            Self::InsufficientPrivileges(_) => 4,
            Self::TracefsUnavailable(_) | Self::TracefsUnreadable => 5,
            Self::TracepointMissing(..) | Self::TracepointLayout { .. } | Self::KernelTypes(_) => 6,
            Self::CommandNotFound(_) | Self::CannotExecute { .. } => 7,
            Self::NoSuchCgroup { .. } => 8,
        }
    }
}
