//! The kernel's events as userspace sees them: ring-buffer bytes turned into typed events
//! without allocating, and the clock they are stamped with.
use std::mem::offset_of;

use aya::Pod;
use memprof_common::{
    EventHeader, EventKind, ExecEvent, ExitEvent, FILE_PATH_EVENT_HEAD, FaultEvent, FilePathEvent,
    NewProcessEvent, PATH_COMPONENT_BYTES, RAW_STACK_AWAITS_VERDICT, RAW_STACK_EVENT_HEAD,
    RAW_STACK_LEAF_RETURNS, RawStackEvent, RssEvent, STACK_EVENT_HEAD, StackEvent, SyscallEvent,
};

/// A [`RawStackEvent`] as it lies in the ring buffer: its head, and the copy of the stack
/// borrowed from where it was sent (up to 16 KiB each, up to a million a second: not copied
/// again).
#[derive(Clone, Copy, Debug)]
pub struct RawStack<'a> {
    pub header: EventHeader,
    /// The id of the kernel's frame-pointer walk of this stack.
    pub id: u64,
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The leaf keeps no frame: the word at `sp` is its return address.
    pub leaf_returns: bool,
    /// The kernel waits for a verdict on this stack's frame walk.
    pub awaits_verdict: bool,
    /// Where the copy starts: `sp`, or the page above it when `sp`'s page was not there.
    pub start: u64,
    /// The stack's bytes from `start` up.
    pub stack: &'a [u8],
}

impl RawStack<'_> {
    /// The stack's word at `address`, when the copy holds it.
    pub fn word(&self, address: u64) -> Option<u64> {
        let at = usize::try_from(address.checked_sub(self.start)?).ok()?;
        let bytes = self.stack.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

#[derive(Clone, Debug)]
pub enum Event<'a> {
    Syscall(SyscallEvent),
    Fault(FaultEvent),
    Rss(RssEvent),
    NewProcess(NewProcessEvent),
    Exec(ExecEvent),
    Exit(ExitEvent),
    /// Boxed: 1 KiB, and rare (once per stack), unlike the events every fault and syscall
    /// sends.
    Stack(Box<StackEvent>),
    RawStack(RawStack<'a>),
    /// The path of a file mapped at `address`.
    FilePath {
        header: EventHeader,
        address: u64,
        path: String,
    },
}

impl Event<'_> {
    pub fn header(&self) -> &EventHeader {
        match self {
            Self::Syscall(r) => &r.header,
            Self::Fault(r) => &r.header,
            Self::Rss(r) => &r.header,
            Self::NewProcess(r) => &r.header,
            Self::Exec(r) => &r.header,
            Self::Exit(r) => &r.header,
            Self::Stack(r) => &r.header,
            Self::RawStack(r) => &r.header,
            Self::FilePath { header, .. } => header,
        }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock events are stamped with (bpf_ktime_get_ns), so
/// that events and what userspace samples line up.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn read<T: Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: T is Pod (any bit pattern is valid) and the length was checked.
        .then(|| unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Decodes one event; `None` for one this build does not know (counted as lost).
pub fn parse(bytes: &[u8]) -> Option<Event<'_>> {
    let header: EventHeader = read(bytes)?;
    Some(match EventKind::from_u32(header.kind)? {
        EventKind::Syscall => Event::Syscall(read(bytes)?),
        EventKind::Fault => Event::Fault(read(bytes)?),
        EventKind::Rss => Event::Rss(read(bytes)?),
        EventKind::NewProcess => Event::NewProcess(read(bytes)?),
        EventKind::Exec => Event::Exec(read(bytes)?),
        EventKind::Exit => Event::Exit(read(bytes)?),
        EventKind::Stack => Event::Stack(read_stack(bytes)?),
        EventKind::RawStack => Event::RawStack(read_raw_stack(bytes)?),
        EventKind::FilePath => read_file_path(bytes)?,
    })
}

/// A path's components come leaf first, each NUL-terminated in its slot.
fn read_file_path(bytes: &[u8]) -> Option<Event<'_>> {
    let (head, names) = bytes.split_at_checked(FILE_PATH_EVENT_HEAD)?;
    let at = |offset: usize| &head[offset..];
    let components = read::<u32>(at(offset_of!(FilePathEvent, components)))? as usize;
    let cut = read::<u32>(at(offset_of!(FilePathEvent, cut)))? != 0;
    let mut path = String::from(if cut { "…" } else { "" });
    for name in names
        .chunks_exact(PATH_COMPONENT_BYTES)
        .take(components)
        .rev()
    {
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        path.push('/');
        path.push_str(&String::from_utf8_lossy(&name[..end]));
    }
    Some(Event::FilePath {
        header: read(head)?,
        address: read(at(offset_of!(FilePathEvent, address)))?,
        path,
    })
}

/// A stack event carries only its filled addresses: the rest reads as zeroes.
fn read_stack(bytes: &[u8]) -> Option<Box<StackEvent>> {
    if bytes.len() < STACK_EVENT_HEAD {
        return None;
    }
    let mut whole = [0; size_of::<StackEvent>()];
    let len = bytes.len().min(whole.len());
    whole[..len].copy_from_slice(&bytes[..len]);
    let mut event: StackEvent = read(&whole)?;
    let sent = (len - STACK_EVENT_HEAD) / 8;
    event.frames = event.frames.min(sent as u32);
    Some(Box::new(event))
}

/// A raw stack event carries only the bytes copied.
fn read_raw_stack(bytes: &[u8]) -> Option<RawStack<'_>> {
    let (head, stack) = bytes.split_at_checked(RAW_STACK_EVENT_HEAD)?;
    let u64_at = |offset: usize| read::<u64>(&head[offset..]);
    let u32_at = |offset: usize| read::<u32>(&head[offset..]);
    let len = u32_at(offset_of!(RawStackEvent, len))? as usize;
    let skip = u32_at(offset_of!(RawStackEvent, skip))?;
    let flags = u32_at(offset_of!(RawStackEvent, flags))?;
    let sp = u64_at(offset_of!(RawStackEvent, sp))?;
    Some(RawStack {
        header: read(head)?,
        id: u64_at(offset_of!(RawStackEvent, id))?,
        ip: u64_at(offset_of!(RawStackEvent, ip))?,
        sp,
        bp: u64_at(offset_of!(RawStackEvent, bp))?,
        leaf_returns: flags & RAW_STACK_LEAF_RETURNS != 0,
        awaits_verdict: flags & RAW_STACK_AWAITS_VERDICT != 0,
        start: sp.saturating_add(u64::from(skip)),
        stack: &stack[..len.min(stack.len())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Pod>(value: &T) -> Vec<u8> {
        // SAFETY: T is Pod, so its bytes are initialised.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn events_round_trip_and_short_or_unknown_ones_are_refused() {
        let fault = FaultEvent {
            header: EventHeader {
                kind: EventKind::Fault as u32,
                tgid: 7,
                tid: 8,
                _pad: 0,
                ts_ns: 99,
            },
            address: 0x1000,
            error_code: 2,
            stack: 3,
            pages: 4,
        };
        let bytes = bytes_of(&fault);
        match parse(&bytes) {
            Some(Event::Fault(f)) => {
                assert_eq!(
                    (f.header.tgid, f.address, f.error_code, f.pages),
                    (7, 0x1000, 2, 4)
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&bytes[..bytes.len() - 1]).is_none());
        let mut unknown = fault;
        unknown.header.kind = 77;
        assert!(parse(&bytes_of(&unknown)).is_none());
    }

    #[test]
    fn a_file_path_comes_in_components_leaf_first() {
        let mut event = FilePathEvent {
            header: EventHeader {
                kind: EventKind::FilePath as u32,
                tgid: 3,
                ..Default::default()
            },
            address: 0x7f00_0000_0000,
            components: 3,
            cut: 0,
            names: [[0; PATH_COMPONENT_BYTES]; memprof_common::PATH_COMPONENTS],
        };
        for (slot, name) in event.names.iter_mut().zip(["libc.so.6", "lib", "usr"]) {
            slot[..name.len()].copy_from_slice(name.as_bytes());
        }
        let bytes = bytes_of(&event);
        let sent = &bytes[..FILE_PATH_EVENT_HEAD + 3 * PATH_COMPONENT_BYTES];
        match parse(sent) {
            Some(Event::FilePath { address, path, .. }) => {
                assert_eq!(
                    (address, path.as_str()),
                    (0x7f00_0000_0000, "/usr/lib/libc.so.6")
                );
            }
            other => panic!("{other:?}"),
        }
        event.cut = 1;
        event.components = 1;
        let bytes = bytes_of(&event);
        match parse(&bytes[..FILE_PATH_EVENT_HEAD + PATH_COMPONENT_BYTES]) {
            Some(Event::FilePath { path, .. }) => assert_eq!(path, "…/libc.so.6"),
            other => panic!("{other:?}"),
        }
        assert!(parse(&bytes[..FILE_PATH_EVENT_HEAD - 1]).is_none());
    }

    #[test]
    fn a_stack_event_is_as_long_as_its_frames() {
        let mut stack = StackEvent {
            header: EventHeader {
                kind: EventKind::Stack as u32,
                ..Default::default()
            },
            id: 42,
            frames: 3,
            _pad: 0,
            ips: [0; memprof_common::MAX_STACK_DEPTH],
        };
        stack.ips[..3].copy_from_slice(&[0x10, 0x20, 0x30]);
        let bytes = bytes_of(&stack);
        let sent = &bytes[..STACK_EVENT_HEAD + 3 * 8];
        match parse(sent) {
            Some(Event::Stack(s)) => {
                assert_eq!(
                    (s.id, s.frames, &s.ips[..4]),
                    (42, 3, &[0x10, 0x20, 0x30, 0][..])
                )
            }
            other => panic!("{other:?}"),
        }
        // An event claiming more frames than it carries keeps those it carries.
        match parse(&bytes[..STACK_EVENT_HEAD + 2 * 8]) {
            Some(Event::Stack(s)) => assert_eq!(s.frames, 2),
            other => panic!("{other:?}"),
        }
        assert!(parse(&bytes[..STACK_EVENT_HEAD - 1]).is_none());
    }
}
