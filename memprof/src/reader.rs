//! Turns ring-buffer bytes into typed records, without allocating.
use aya::Pod;
use memprof_common::{
    ExecRecord, FaultRecord, NewProcessRecord, RecordHeader, RecordKind, RssRecord, StackRecord,
    SyscallRecord,
};

#[derive(Clone, Debug)]
pub enum Record {
    Syscall(SyscallRecord),
    Fault(FaultRecord),
    Rss(RssRecord),
    NewProcess(NewProcessRecord),
    Exec(ExecRecord),
    Exit(RecordHeader),
    /// Boxed: 1 KiB, and rare, unlike the records every fault and syscall sends.
    Stack(Box<StackRecord>),
}

impl Record {
    pub fn header(&self) -> &RecordHeader {
        match self {
            Self::Syscall(r) => &r.header,
            Self::Fault(r) => &r.header,
            Self::Rss(r) => &r.header,
            Self::NewProcess(r) => &r.header,
            Self::Exec(r) => &r.header,
            Self::Exit(h) => h,
            Self::Stack(r) => &r.header,
        }
    }
}

fn read<T: Pod>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= size_of::<T>())
        // SAFETY: T is Pod (any bit pattern is valid) and the length was checked.
        .then(|| unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// Decodes one record; `None` for a record this build does not know (counted as lost).
pub fn parse(bytes: &[u8]) -> Option<Record> {
    let header: RecordHeader = read(bytes)?;
    Some(match RecordKind::from_u32(header.kind)? {
        RecordKind::Syscall => Record::Syscall(read(bytes)?),
        RecordKind::Fault => Record::Fault(read(bytes)?),
        RecordKind::Rss => Record::Rss(read(bytes)?),
        RecordKind::NewProcess => Record::NewProcess(read(bytes)?),
        RecordKind::Exec => Record::Exec(read(bytes)?),
        RecordKind::Exit => Record::Exit(header),
        RecordKind::Stack => Record::Stack(Box::new(read(bytes)?)),
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
    fn records_round_trip_and_short_or_unknown_ones_are_refused() {
        let fault = FaultRecord {
            header: RecordHeader {
                kind: RecordKind::Fault as u32,
                tgid: 7,
                tid: 8,
                _reserved: 0,
                ts_ns: 99,
            },
            address: 0x1000,
            error_code: 2,
            stack_id: 3,
            _reserved: 0,
        };
        let bytes = bytes_of(&fault);
        match parse(&bytes) {
            Some(Record::Fault(f)) => {
                assert_eq!((f.header.tgid, f.address, f.error_code), (7, 0x1000, 2))
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&bytes[..bytes.len() - 1]).is_none());
        let mut unknown = fault;
        unknown.header.kind = 77;
        assert!(parse(&bytes_of(&unknown)).is_none());
    }
}
