//! Helpers for the unit tests: snapshots, and made-up processes and events to drive the
//! tracker without a kernel.
use std::{
    collections::{HashMap, HashSet},
    io,
};

use memprof_common::{
    EventHeader, EventKind, ExecEvent, ExitEvent, FaultEvent, MAX_STACK_DEPTH, NO_STACK,
    NewProcessEvent, StackEvent, SyscallEvent,
};

use crate::{
    events::{Event, RawStack},
    procfs::{MapsEntry, ProcSource, Snapshot, Status, parse_maps},
};

pub(crate) const MIB: u64 = 1 << 20;
const PROT_RW: u64 = 3;
const MAP_PRIVATE_ANONYMOUS: u64 = 0x22;
const FAULT_WRITE: u64 = 2;

/// Compares `text` with `src/snapshots/NAME`; MEMPROF_UPDATE_SNAPSHOTS=1 rewrites the file
/// (review the diff before committing).
pub(crate) fn assert_snapshot(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/snapshots")
        .join(name);
    if std::env::var_os("MEMPROF_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; MEMPROF_UPDATE_SNAPSHOTS=1 writes it",
            path.display()
        )
    });
    assert_eq!(text, expected);
}

/// Made-up processes: what /proc would say of each pid, changed as a test goes on.
#[derive(Default)]
pub(crate) struct FakeProc {
    pub(crate) snapshots: HashMap<u32, Snapshot>,
    pub(crate) gone: HashSet<u32>,
    /// Maps reads, to check files are named while a process lives.
    pub(crate) maps_reads: std::cell::Cell<usize>,
    /// What smaps says of a pid at the end; unreadable when not given.
    pub(crate) smaps: HashMap<u32, Vec<MapsEntry>>,
}

impl FakeProc {
    pub(crate) fn with(mut self, pid: u32, command: &str, maps: &str, rss: u64) -> Self {
        let status = Status {
            vm_size: parse_maps(maps).iter().map(|e| e.end - e.start).sum(),
            vm_rss: rss,
            rss_anon: rss,
            ..Status::default()
        };
        self.snapshots.insert(
            pid,
            Snapshot {
                command: command.into(),
                cgroup: "/test".into(),
                maps: parse_maps(maps),
                start_brk: None,
                start_stack: None,
                status: Some(status),
            },
        );
        self
    }
}

impl ProcSource for FakeProc {
    fn snapshot(&self, pid: u32) -> io::Result<Snapshot> {
        match self.snapshots.get(&pid) {
            Some(s) if !self.gone.contains(&pid) => Ok(s.clone()),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn maps(&self, pid: u32) -> io::Result<Vec<MapsEntry>> {
        self.maps_reads.set(self.maps_reads.get() + 1);
        Ok(self.snapshot(pid)?.maps)
    }

    fn smaps(&self, pid: u32) -> io::Result<Vec<MapsEntry>> {
        self.snapshot(pid)?;
        self.smaps
            .get(&pid)
            .cloned()
            .ok_or_else(|| io::ErrorKind::PermissionDenied.into())
    }

    fn status(&self, pid: u32) -> Option<Status> {
        self.snapshot(pid).ok()?.status
    }

    fn is_gone(&self, pid: u32) -> bool {
        self.gone.contains(&pid) || !self.snapshots.contains_key(&pid)
    }

    fn command(&self, pid: u32) -> Option<String> {
        Some(self.snapshot(pid).ok()?.command)
    }
}

pub(crate) const BASH_MAPS: &str = "\
55550000000-55550001000 r-xp 00000000 fe:00 1 /usr/bin/bash
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
pub(crate) const BASH_RESERVED: u64 = 0x1000 + MIB + 0x21000;

pub(crate) fn header(kind: EventKind, tgid: u32, ts_ns: u64) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        tgid,
        tid: tgid,
        _pad: 0,
        ts_ns,
    }
}

pub(crate) fn syscall(tgid: u32, nr: i64, args: [u64; 6], ret: i64, stack: u64) -> Event<'static> {
    Event::Syscall(SyscallEvent {
        header: header(EventKind::Syscall, tgid, 10),
        nr: nr as u32,
        user_stack: stack,
        args,
        ret,
        ..Default::default()
    })
}

pub(crate) fn mmap(tgid: u32, addr: u64, len: u64, stack: u64) -> Event<'static> {
    let args = [0, len, PROT_RW, MAP_PRIVATE_ANONYMOUS, u64::MAX, 0];
    syscall(tgid, libc::SYS_mmap, args, addr as i64, stack)
}

/// A read-only private mapping of the file open as `fd`.
pub(crate) fn file_mmap(tgid: u32, addr: u64, len: u64, fd: u64) -> Event<'static> {
    const PROT_READ: u64 = 1;
    const MAP_PRIVATE: u64 = 2;
    let args = [0, len, PROT_READ, MAP_PRIVATE, fd, 0];
    syscall(tgid, libc::SYS_mmap, args, addr as i64, NO_STACK)
}

/// The path the kernel sends before a file's mmap returns.
pub(crate) fn file_path(tgid: u32, address: u64, path: &str) -> Event<'static> {
    Event::FilePath {
        header: header(EventKind::FilePath, tgid, 10),
        address,
        path: path.into(),
    }
}

pub(crate) fn stack(tgid: u32, id: u64, ips: &[u64]) -> Event<'static> {
    let mut event = StackEvent {
        header: header(EventKind::Stack, tgid, 10),
        id,
        frames: ips.len() as u32,
        _pad: 0,
        ips: [0; MAX_STACK_DEPTH],
    };
    event.ips[..ips.len()].copy_from_slice(ips);
    Event::Stack(Box::new(event))
}

/// A copy of a stack of zeros (which no unwinding takes for whole): `awaits` is the
/// kernel's question whether the walk with `id` is right.
pub(crate) fn raw_stack(tgid: u32, id: u64, awaits: bool) -> Event<'static> {
    const ZEROS: [u8; 64] = [0; 64];
    Event::RawStack(RawStack {
        header: header(EventKind::RawStack, tgid, 10),
        id,
        ip: 0x1000,
        sp: 0x7ffe_0000_0000,
        bp: 0,
        leaf_returns: false,
        awaits_verdict: awaits,
        start: 0x7ffe_0000_0000,
        stack: &ZEROS,
    })
}

pub(crate) fn faults(tgid: u32, address: u64, pages: u64) -> Event<'static> {
    Event::Fault(FaultEvent {
        header: header(EventKind::Fault, tgid, 20),
        address,
        error_code: FAULT_WRITE,
        stack: NO_STACK,
        pages,
    })
}

pub(crate) fn new_process(parent: u32, child: u32, comm: &str) -> Event<'static> {
    let mut name = [0; 16];
    name[..comm.len()].copy_from_slice(comm.as_bytes());
    Event::NewProcess(NewProcessEvent {
        header: header(EventKind::NewProcess, parent, 30),
        child_pid: child,
        _pad: 0,
        clone_flags: 0,
        comm: name,
    })
}

pub(crate) fn exec(pid: u32, comm: &str) -> Event<'static> {
    let mut name = [0; 16];
    name[..comm.len()].copy_from_slice(comm.as_bytes());
    Event::Exec(ExecEvent {
        header: header(EventKind::Exec, pid, 40),
        comm: name,
        start_stack: 0,
    })
}

pub(crate) fn exit(pid: u32) -> Event<'static> {
    Event::Exit(ExitEvent {
        header: header(EventKind::Exit, pid, 50),
        ..Default::default()
    })
}
