//! The kernel's own description of its types (BTF, /sys/kernel/btf/vmlinux): where a field
//! lies in a kernel structure on this very kernel, for the programs that read kernel memory
//! themselves instead of a tracepoint's formatted record.
use std::collections::HashMap;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {VMLINUX}: {0}")]
    Read(#[from] std::io::Error),
    #[error("{VMLINUX} is not BTF this build understands ({0})")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no `{0}`")]
    Missing(String),
}

/// One type record: where it starts in the type section, and its header words.
#[derive(Clone, Copy)]
struct Type {
    at: usize,
    name: u32,
    info: u32,
    size: u32,
}

impl Type {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }
}

pub struct Btf {
    types_section: Vec<u8>,
    strings: Vec<u8>,
    /// By type id; id 0 is void.
    types: Vec<Type>,
    /// Structs and unions by name.
    by_name: HashMap<String, u32>,
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::parse(&std::fs::read(VMLINUX)?)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let word = |at: usize| -> Result<u32, BtfError> {
            let bytes = data
                .get(at..at + 4)
                .ok_or(BtfError::Malformed("truncated"))?;
            Ok(u32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
        };
        if data.len() < 24 || u16::from_ne_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed("no BTF magic in this byte order"));
        }
        let header_len = word(4)? as usize;
        let section = |offset: usize, len: usize| -> Result<Vec<u8>, BtfError> {
            let start = header_len + word(offset)? as usize;
            let len = word(len)? as usize;
            let bytes = data.get(start..start + len);
            Ok(bytes
                .ok_or(BtfError::Malformed("section out of bounds"))?
                .to_vec())
        };
        let types_section = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut btf = Self {
            types_section,
            strings,
            types: vec![Type {
                at: 0,
                name: 0,
                info: 0,
                size: 0,
            }],
            by_name: HashMap::new(),
        };
        let mut at = 0;
        while at < btf.types_section.len() {
            let t = Type {
                at,
                name: btf.word(at)?,
                info: btf.word(at + 4)?,
                size: btf.word(at + 8)?,
            };
            if matches!(t.kind(), KIND_STRUCT | KIND_UNION) && t.name != 0 {
                let name = btf.string(t.name)?.to_string();
                btf.by_name.entry(name).or_insert(btf.types.len() as u32);
            }
            at += 12 + extra_bytes(t.kind(), t.vlen())?;
            btf.types.push(t);
        }
        Ok(btf)
    }

    fn word(&self, at: usize) -> Result<u32, BtfError> {
        let bytes = self.types_section.get(at..at + 4);
        let bytes = bytes.ok_or(BtfError::Malformed("type out of bounds"))?;
        Ok(u32::from_ne_bytes(bytes.try_into().expect("4 bytes")))
    }

    fn string(&self, offset: u32) -> Result<&str, BtfError> {
        let bytes = self
            .strings
            .get(offset as usize..)
            .ok_or(BtfError::Malformed("string out of bounds"))?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).map_err(|_| BtfError::Malformed("string not UTF-8"))
    }

    fn named_struct(&self, name: &str) -> Result<Type, BtfError> {
        let id = self.by_name.get(name);
        let id = id.ok_or_else(|| BtfError::Missing(format!("struct {name}")))?;
        Ok(self.types[*id as usize])
    }

    /// `struct name`'s size in bytes.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.named_struct(name)?.size)
    }

    /// The byte offset of `member` in `struct name`, looking inside anonymous structs and
    /// unions (mm_struct keeps its fields in one).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing(format!("struct {name}.{member}"));
        let bits = self.find_member(self.named_struct(name)?, member, 0)?;
        let bits = bits.ok_or_else(missing)?;
        Ok(bits / 8)
    }

    /// The member's offset in bits from `base`, searching `t`'s members depth first.
    fn find_member(&self, t: Type, member: &str, base: u32) -> Result<Option<u32>, BtfError> {
        let bitfields = t.info >> 31 != 0;
        for i in 0..t.vlen() {
            let at = t.at + 12 + 12 * i;
            let (name, type_id, offset) = (self.word(at)?, self.word(at + 4)?, self.word(at + 8)?);
            // With the kind flag set, the top byte is a bitfield's width.
            let offset = base
                + if bitfields {
                    offset & 0xff_ffff
                } else {
                    offset
                };
            if name != 0 {
                if self.string(name)? == member {
                    return Ok(Some(offset));
                }
                continue;
            }
            let inner = *self
                .types
                .get(type_id as usize)
                .ok_or(BtfError::Malformed("member type out of range"))?;
            if matches!(inner.kind(), KIND_STRUCT | KIND_UNION)
                && let Some(found) = self.find_member(inner, member, offset)?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
}

/// The bytes that follow a type's 12-byte header, by kind.
fn extra_bytes(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        // ptr, fwd, typedef, volatile, const, restrict, func, float, type tag
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        // int, var, decl tag
        1 | 14 | 17 => 4,
        // array
        3 => 12,
        // struct, union, datasec, enum64
        4 | 5 | 15 | 19 => 12 * vlen,
        // enum, func proto
        6 | 13 => 8 * vlen,
        _ => return Err(BtfError::Malformed("unknown type kind")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up BTF: a struct whose second field hides in an anonymous union.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0b\0outer\0a\0";
        let words: [u32; 21] = [
            // 1: int, 4 bytes (and its encoding word)
            1,
            1 << 24,
            4,
            32,
            // 2: an anonymous union { int b; }, member b at bit 32
            0,
            5 << 24 | 1,
            8,
            5,
            1,
            32,
            // 3: struct outer { int a; union {...}; }, 16 bytes; the union at bit 64
            7,
            4 << 24 | 2,
            16,
            13,
            1,
            0,
            0,
            2,
            64,
            // padding words the parser never reaches
            0,
            0,
        ];
        let types: Vec<u8> = words[..19].iter().flat_map(|w| w.to_ne_bytes()).collect();
        let mut data = Vec::new();
        data.extend_from_slice(&MAGIC.to_ne_bytes());
        data.extend_from_slice(&[1, 0]); // version, flags
        for word in [
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&u32::to_ne_bytes(word));
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(strings);
        data
    }

    #[test]
    fn members_are_found_inside_anonymous_unions() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.struct_size("outer").unwrap(), 16);
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 12);
        let err = btf.member_offset("outer", "c").unwrap_err();
        assert_eq!(err.to_string(), "the kernel's BTF has no `struct outer.c`");
        assert!(btf.struct_size("missing").is_err());
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        let truncated = sample();
        assert!(Btf::parse(&truncated[..truncated.len() - 20]).is_err());
    }
}
