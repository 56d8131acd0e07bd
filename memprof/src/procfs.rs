//! Every read of /proc: parsers of its text, thin readers around them, and [`ProcSource`],
//! the small interface through which the tracker reaches /proc (tests hand it made-up
//! processes instead).
//!
//! Parsers take the file's text and skip what they do not understand rather than fail:
//! /proc formats grow new fields, and a line torn by a concurrent mapping change must
//! not take the profiler down.

use std::{fs, io};

/// What the tracker asks /proc, as a trait so that it can be driven without a kernel.
pub trait ProcSource {
    /// The address space of a live process, with its command and cgroup.
    fn snapshot(&self, pid: u32) -> io::Result<Snapshot>;
    /// Its /proc/PID/maps, to name the files it mapped.
    fn maps(&self, pid: u32) -> io::Result<Vec<MapsEntry>>;
    /// Its /proc/PID/smaps: the maps with each mapping's resident bytes.
    fn smaps(&self, pid: u32) -> io::Result<Vec<MapsEntry>>;
    /// Its memory figures; None for a process without an address space.
    fn status(&self, pid: u32) -> Option<Status>;
    /// Whether the process is gone: no such pid, or a zombie.
    fn is_gone(&self, pid: u32) -> bool;
    /// Its command line as it reads now (a process may rewrite it, as nginx's workers do).
    fn command(&self, pid: u32) -> Option<String>;
}

/// The real /proc.
#[derive(Clone, Copy, Debug, Default)]
pub struct Proc;

impl ProcSource for Proc {
    fn snapshot(&self, pid: u32) -> io::Result<Snapshot> {
        Snapshot::read(pid)
    }

    fn maps(&self, pid: u32) -> io::Result<Vec<MapsEntry>> {
        read_maps(pid)
    }

    fn smaps(&self, pid: u32) -> io::Result<Vec<MapsEntry>> {
        read_smaps(pid)
    }

    fn status(&self, pid: u32) -> Option<Status> {
        read_status(pid).ok().flatten()
    }

    fn is_gone(&self, pid: u32) -> bool {
        let stat = read(pid, "stat").ok();
        let state = stat.as_deref().and_then(parse_state);
        matches!(state, None | Some('Z' | 'X'))
    }

    fn command(&self, pid: u32) -> Option<String> {
        read_command(pid).ok()
    }
}

/// The address space of a process as read from /proc at one instant.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub command: String,
    /// Its cgroup v2 path, "" when /proc does not say.
    pub cgroup: String,
    pub maps: Vec<MapsEntry>,
    pub start_brk: Option<u64>,
    /// The image's startstack, when it was the same before and after its maps were read.
    pub start_stack: Option<u64>,
    pub status: Option<Status>,
}

impl Snapshot {
    pub fn read(pid: u32) -> io::Result<Self> {
        let before = read(pid, "stat")?;
        let maps = read_smaps(pid)?;
        if maps.is_empty() {
            // A zombie or a kernel thread: nothing to seed from.
            return Err(io::Error::new(io::ErrorKind::NotFound, "no address space"));
        }
        // An exec between the two reads leaves maps of either image: vouched for by neither.
        let after = read(pid, "stat")?;
        let start_stack =
            parse_start_stack(&after).filter(|&s| parse_start_stack(&before) == Some(s));
        Ok(Self {
            command: read_command(pid).unwrap_or_default(),
            cgroup: read_cgroup(pid).ok().flatten().unwrap_or_default(),
            maps,
            start_brk: parse_start_brk(&after),
            start_stack,
            status: read_status(pid).ok().flatten(),
        })
    }
}

/// Access bits of a mapping, as the `rwxp` column of /proc/PID/maps shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
}

impl Perms {
    /// The `PROT_*` bits (READ=1, WRITE=2, EXEC=4) these permissions stand for.
    pub fn prot(self) -> u32 {
        u32::from(self.read) | u32::from(self.write) << 1 | u32::from(self.exec) << 2
    }
}

/// One line of /proc/PID/maps, with what memprof needs from its smaps block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MapsEntry {
    pub start: u64,
    pub end: u64,
    pub perms: Perms,
    pub offset: u64,
    pub inode: u64,
    /// None for anonymous memory; otherwise as the kernel prints it: "[heap]",
    /// "/usr/lib/libc.so.6", "/tmp/x (deleted)", ...
    pub path: Option<String>,
    /// smaps `Rss`, in bytes; 0 when parsed from plain maps.
    pub rss_bytes: u64,
    /// smaps `Anonymous`, in bytes (pages of its own, written or COW'd); 0 from plain maps.
    pub anonymous_bytes: u64,
    /// smaps `VmFlags` has `gd` (the mapping grows down, like a stack).
    pub growsdown: bool,
    /// smaps `VmFlags` has `hg` (madvise(MADV_HUGEPAGE): faults may map a huge page).
    pub huge: bool,
    /// smaps `VmFlags` has `nh` (no huge pages: MADV_NOHUGEPAGE, or MAP_STACK, which the
    /// kernel maps to it since 6.7).
    pub no_huge: bool,
}

/// Parses /proc/PID/maps or /proc/PID/smaps text.
pub fn parse_maps(text: &str) -> Vec<MapsEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        if let Some(entry) = parse_maps_line(line) {
            entries.push(entry);
        } else if let (Some((key, value)), Some(last)) = (line.split_once(':'), entries.last_mut())
        {
            match key {
                "Rss" => last.rss_bytes = kb(value).unwrap_or(0),
                "Anonymous" => last.anonymous_bytes = kb(value).unwrap_or(0),
                "VmFlags" => {
                    last.growsdown = value.split_whitespace().any(|f| f == "gd");
                    last.huge = value.split_whitespace().any(|f| f == "hg");
                    last.no_huge = value.split_whitespace().any(|f| f == "nh");
                }
                _ => {}
            }
        }
    }
    entries
}

/// `start-end perms offset dev inode [path]`; the path may contain spaces.
fn parse_maps_line(line: &str) -> Option<MapsEntry> {
    let mut rest = line;
    let mut field = || {
        let s = rest.trim_start();
        let (field, tail) = s.split_at(s.find(' ').unwrap_or(s.len()));
        rest = tail;
        (!field.is_empty()).then_some(field)
    };
    let (start, end) = field()?.split_once('-')?;
    let perms = field()?.as_bytes();
    let offset = field()?;
    let _device = field()?;
    let inode = field()?.parse().ok()?;
    let [read, write, exec, share] = *perms else {
        return None;
    };
    let path = rest.trim_start();
    Some(MapsEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms: Perms {
            read: read == b'r',
            write: write == b'w',
            exec: exec == b'x',
            shared: share == b's',
        },
        offset: u64::from_str_radix(offset, 16).ok()?,
        inode,
        path: (!path.is_empty()).then(|| path.to_owned()),
        rss_bytes: 0,
        anonymous_bytes: 0,
        growsdown: false,
        huge: false,
        no_huge: false,
    })
}

/// The memory figures of /proc/PID/status, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    pub vm_size: u64,
    pub vm_rss: u64,
    pub rss_anon: u64,
    pub rss_file: u64,
    pub rss_shmem: u64,
}

/// Parses /proc/PID/status; None when the memory fields are absent (kernel threads,
/// zombies).
pub fn parse_status(text: &str) -> Option<Status> {
    let [
        mut vm_size,
        mut vm_rss,
        mut rss_anon,
        mut rss_file,
        mut rss_shmem,
    ] = [None; 5];
    for (key, value) in text.lines().filter_map(|l| l.split_once(':')) {
        let slot = match key {
            "VmSize" => &mut vm_size,
            "VmRSS" => &mut vm_rss,
            "RssAnon" => &mut rss_anon,
            "RssFile" => &mut rss_file,
            "RssShmem" => &mut rss_shmem,
            _ => continue,
        };
        *slot = kb(value);
    }
    Some(Status {
        vm_size: vm_size?,
        vm_rss: vm_rss?,
        rss_anon: rss_anon?,
        rss_file: rss_file?,
        rss_shmem: rss_shmem?,
    })
}

/// `   1234 kB` → 1234 * 1024.
fn kb(value: &str) -> Option<u64> {
    value
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?
        .checked_mul(1024)
}

/// Field 47 (start_brk) of /proc/PID/stat; None when absent or 0 (no mm, or the reader
/// may not see it).
pub fn parse_start_brk(stat: &str) -> Option<u64> {
    stat_address(stat, 47)
}

/// Field 28 (startstack) of /proc/PID/stat, as [`parse_start_brk`].
pub fn parse_start_stack(stat: &str) -> Option<u64> {
    stat_address(stat, 28)
}

fn stat_address(stat: &str, field: usize) -> Option<u64> {
    // comm (field 2) may hold spaces and ')': fields resume after the last ')', with field 3.
    let (_, fields) = stat.rsplit_once(')')?;
    let value = fields
        .split_ascii_whitespace()
        .nth(field - 3)?
        .parse()
        .ok()?;
    (value != 0).then_some(value)
}

/// /proc/PID/{file} as text; file names in maps need not be UTF-8, so replace what is not.
fn read(pid: u32, file: &str) -> io::Result<String> {
    let bytes = fs::read(format!("/proc/{pid}/{file}"))?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

pub fn read_maps(pid: u32) -> io::Result<Vec<MapsEntry>> {
    Ok(parse_maps(&read(pid, "maps")?))
}

pub fn read_smaps(pid: u32) -> io::Result<Vec<MapsEntry>> {
    Ok(parse_maps(&read(pid, "smaps")?))
}

pub fn read_status(pid: u32) -> io::Result<Option<Status>> {
    Ok(parse_status(&read(pid, "status")?))
}

/// The cgroup v2 path in /proc/PID/cgroup (`0::/system.slice/ssh.service`).
pub fn parse_cgroup(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

pub fn read_cgroup(pid: u32) -> io::Result<Option<String>> {
    Ok(parse_cgroup(&read(pid, "cgroup")?))
}

/// The real uid in /proc/PID/status (`Uid:\treal\teffective\tsaved\tfs`).
pub fn parse_uid(status: &str) -> Option<u32> {
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().next()?.parse().ok()
}

/// A process's command line, words joined by spaces; `[comm]` for one without (a kernel
/// thread).
pub fn read_command(pid: u32) -> io::Result<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline"))?;
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if words.is_empty() {
        return read_comm(pid).map(|c| format!("[{c}]"));
    }
    Ok(words.join(" "))
}

/// The kernel's name for a process (/proc/PID/comm, at most 15 characters).
pub fn read_comm(pid: u32) -> io::Result<String> {
    Ok(read(pid, "comm")?.trim_end_matches('\n').to_string())
}

/// The real uid of a process.
pub fn read_uid(pid: u32) -> io::Result<Option<u32>> {
    Ok(parse_uid(&read(pid, "status")?))
}

/// The process (thread group) a pid belongs to: a thread id gives its process's.
pub fn read_tgid(pid: u32) -> io::Result<Option<u32>> {
    let status = read(pid, "status")?;
    Ok(status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok()))
}

/// Why a process cannot be traced, from its /proc/PID/status: a zombie, or a kernel thread;
/// `None` when it can be (or is gone: the caller finds out).
pub fn untraceable(pid: u32) -> Option<&'static str> {
    let status = read(pid, "status").ok()?;
    let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key));
    if field("State:").is_some_and(|state| state.trim_start().starts_with('Z')) {
        return Some("a zombie: it has exited and waits for its parent to reap it");
    }
    // Only a process with an address space has VmSize.
    if field("VmSize:").is_none() {
        return Some("a kernel thread, which has no user address space");
    }
    None
}

/// The state letter of /proc/PID/stat (R, S, D, Z, X, ...).
pub fn parse_state(stat: &str) -> Option<char> {
    stat.rsplit_once(") ")?.1.chars().next()
}

/// The effective capabilities of memprof itself, as a bit set.
pub fn own_effective_capabilities() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// memprof's own mount table.
pub fn read_own_mounts() -> io::Result<String> {
    fs::read_to_string("/proc/self/mounts")
}

/// Where cgroup v2 is mounted, from a mounts table (`/proc/self/mounts`).
pub fn cgroup2_root(mounts: &str) -> Option<&str> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, root, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == "cgroup2").then_some(root)
    })
}

/// The pids of every process, from the directories of /proc.
pub fn pids() -> io::Result<Vec<u32>> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
563fc5e76000-563fc5e78000 r--p 00000000 fe:00 247030                     /usr/bin/cat
563fc5e78000-563fc5e7d000 r-xp 00002000 fe:00 247030                     /usr/bin/cat
563fc6453000-563fc6474000 rw-p 00000000 00:00 0                          [heap]
7fc14a905000-7fc14a927000 rw-p 00000000 00:00 0 
7fc14a982000-7fc14a983000 r--p 00000000 fe:00 316538                     /opt/My App/data file.bin
7fc14ab6d000-7fc14ab74000 r--s 00000000 fe:00 325745                     /tmp/gone (deleted)
7fc14ab74000-7fc14ab75000 ---p 00000000 00:00 0 
7fc14ab77000-7fc14ab7b000 r--p 00000000 00:00 0                          [vvar]
7ffde5413000-7ffde5434000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn maps_lines() {
        let e = parse_maps(MAPS);
        assert_eq!(e.len(), 10);
        assert_eq!(
            e[1],
            MapsEntry {
                start: 0x563fc5e78000,
                end: 0x563fc5e7d000,
                perms: Perms {
                    read: true,
                    write: false,
                    exec: true,
                    shared: false
                },
                offset: 0x2000,
                inode: 247030,
                path: Some("/usr/bin/cat".into()),
                rss_bytes: 0,
                anonymous_bytes: 0,
                growsdown: false,
                huge: false,
                no_huge: false,
            }
        );
        assert_eq!(e[1].perms.prot(), 5);
        assert_eq!(e[2].path.as_deref(), Some("[heap]"));
        assert_eq!(e[3].path, None, "trailing space, no path");
        assert_eq!(e[4].path.as_deref(), Some("/opt/My App/data file.bin"));
        assert_eq!(e[5].path.as_deref(), Some("/tmp/gone (deleted)"));
        assert!(e[5].perms.shared && e[5].perms.read);
        assert_eq!(e[6].perms.prot(), 0);
        assert!(!e[8].growsdown, "plain maps has no VmFlags");
        assert_eq!(e[9].path.as_deref(), Some("[vsyscall]"));
        assert_eq!(
            (e[9].start, e[9].end),
            (0xffffffffff600000, 0xffffffffff601000)
        );
    }

    #[test]
    fn maps_skips_malformed_lines() {
        let text = "garbage\n1000-zz rw-p 0 00:00 0\n1000-2000 rw 0 00:00 0\n1000-2000 rw-p 0\n\
                    3000-4000 rw-p 00000000 00:00 0\n";
        let e = parse_maps(text);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].start, e[0].end), (0x3000, 0x4000));
    }

    #[test]
    fn smaps_blocks() {
        let text = "\
563fc6453000-563fc6474000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                  12 kB
Pss:                  12 kB
Anonymous:            12 kB
THPeligible:           0
VmFlags: rd wr mr mw me ac 
7ffde5413000-7ffde5434000 rw-p 00000000 00:00 0                          [stack]
Size:                132 kB
Rss:                  16 kB
Pss:                  16 kB
Private_Dirty:        16 kB
VmFlags: rd wr mr mw me gd ac 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Size:                  4 kB
Rss:                   0 kB
VmFlags: ex 
";
        let e = parse_maps(text);
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].rss_bytes, e[0].growsdown), (12 << 10, false));
        assert_eq!(e[0].anonymous_bytes, 12 << 10);
        assert_eq!((e[1].rss_bytes, e[1].growsdown), (16 << 10, true));
        assert_eq!(e[1].path.as_deref(), Some("[stack]"));
        assert_eq!((e[2].rss_bytes, e[2].growsdown), (0, false));
    }

    #[test]
    fn status() {
        let text = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nVmPeak:\t    3060 kB\n\
                    VmSize:\t    3060 kB\nVmLck:\t       0 kB\nVmHWM:\t    1720 kB\nVmRSS:\t    1720 kB\n\
                    RssAnon:\t     116 kB\nRssFile:\t    1604 kB\nRssShmem:\t       0 kB\n\
                    VmData:\t     360 kB\nThreads:\t1\n";
        assert_eq!(
            parse_status(text),
            Some(Status {
                vm_size: 3060 << 10,
                vm_rss: 1720 << 10,
                rss_anon: 116 << 10,
                rss_file: 1604 << 10,
                rss_shmem: 0,
            })
        );
        let kthread = "Name:\tkthreadd\nUmask:\t0000\nState:\tS (sleeping)\nThreads:\t1\n";
        assert_eq!(parse_status(kthread), None);
    }

    #[test]
    fn start_brk() {
        let stat = "4248 (my (odd) proc) R 4242 4242 3923 0 -1 4194304 101 0 0 0 0 0 0 0 20 0 1 0 \
                    44139 3133440 358 18446744073709551615 94348393959424 94348393979305 \
                    140735654220000 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 94348393995312 94348393996928 \
                    94348720414720 140735654226659 140735654226679 140735654226679 140735654227947 0\n";
        assert_eq!(parse_start_brk(stat), Some(94348720414720));
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0 \
                       18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0 0 0 0 0 0 0 \
                       0 0 0 0 0\n";
        assert_eq!(parse_start_brk(kthread), None);
        assert_eq!(parse_start_brk("1 (truncated) R 0"), None);
    }

    #[test]
    fn readers_on_self() {
        let pid = std::process::id();
        let maps = read_maps(pid).unwrap();
        let smaps = read_smaps(pid).unwrap();
        assert!(maps.iter().any(|e| e.path.as_deref() == Some("[stack]")));
        assert!(
            smaps
                .iter()
                .any(|e| e.growsdown && e.path.as_deref() == Some("[stack]"))
        );
        assert!(smaps.iter().any(|e| e.rss_bytes > 0));
        let status = read_status(pid).unwrap().unwrap();
        assert!(status.vm_rss > 0 && status.vm_size >= status.vm_rss);
        let stat = read(pid, "stat").unwrap();
        let start_brk = parse_start_brk(&stat).unwrap();
        assert!(
            maps.iter()
                .all(|e| e.path.as_deref() != Some("[heap]") || e.start == start_brk)
        );
        assert_eq!(read_tgid(pid).unwrap(), Some(pid));
        assert!(!read_comm(pid).unwrap().is_empty());
        assert!(read_uid(pid).unwrap().is_some());
        assert!(!Proc.is_gone(pid));
        assert!(Proc.is_gone(u32::MAX), "no such pid");
        let snapshot = Proc.snapshot(pid).unwrap();
        assert!(snapshot.command.contains("memprof"), "{}", snapshot.command);
        // The same image before and after its maps were read.
        assert_eq!(snapshot.start_stack, parse_start_stack(&stat));
        assert!(snapshot.start_stack.is_some());
        assert!(snapshot.cgroup.starts_with('/'));
    }

    #[test]
    fn state_and_cgroup2_root() {
        assert_eq!(parse_state("42 (a) b) Z 1 2"), Some('Z'));
        assert_eq!(parse_state("42 (sleep) S 1"), Some('S'));
        assert_eq!(parse_state("42 (cut"), None);
        let mounts = "proc /proc proc rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n";
        assert_eq!(cgroup2_root(mounts), Some("/sys/fs/cgroup"));
        assert!(cgroup2_root("proc /proc proc rw 0 0\n").is_none());
    }

    #[test]
    fn cgroup_and_uid_are_read_from_proc_texts() {
        let cgroup = "12:cpu:/old\n0::/system.slice/nginx.service\n";
        assert_eq!(
            parse_cgroup(cgroup).as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(parse_cgroup("3:memory:/v1only\n"), None);
        assert_eq!(parse_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(1000));
        assert_eq!(
            read_cgroup(std::process::id())
                .unwrap()
                .map(|c| c.starts_with('/')),
            Some(true)
        );
    }
}
