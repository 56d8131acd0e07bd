//! Folded stacks, one `root;frame;...;leaf COUNT` line per stack: what flamegraph.pl,
//! inferno and speedscope read.
use std::{collections::BTreeMap, fmt::Write as _};

use super::{Metric, SiteSample};

/// A frame name safe in a folded line: no ';' (the frame separator) and no line breaks or
/// other control characters.
fn folded_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let name = name.trim();
    if name.is_empty() {
        "[unknown]".to_string()
    } else {
        name.to_string()
    }
}

/// Folded stacks: one `root;frame;...;leaf COUNT\n` line per distinct stack, root first,
/// sorted by stack, identical stacks merged, zero counts left out. COUNT is bytes for
/// reserved/resident and faults for [`Metric::Faults`].
pub fn folded(samples: &[SiteSample], metric: Metric) -> String {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    let mut stack = String::new();
    for sample in samples {
        let count = metric.of(sample);
        if count == 0 {
            continue;
        }
        stack.clear();
        let names = sample
            .root
            .into_iter()
            .chain(sample.frames.iter().rev().map(|f| f.function.as_str()));
        for (i, name) in names.enumerate() {
            if i != 0 {
                stack.push(';');
            }
            stack.push_str(&folded_name(name));
        }
        if stack.is_empty() {
            stack.push_str("[unknown]");
        }
        let total = stacks.entry(stack.clone()).or_default();
        *total = total.saturating_add(count);
    }
    let mut out = String::new();
    for (stack, count) in stacks {
        let _ = writeln!(out, "{stack} {count}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::test_support::{frame, site};

    #[test]
    fn folded_merges_sorts_and_escapes() {
        let libc = "/usr/lib/libc.so.6";
        let a = [
            frame("mmap", libc, 0x7f00_0000_1000),
            frame("main", "/bin/w", 0x7f00_0000_2000),
        ];
        let b = [
            frame("malloc", libc, 0x7f00_0000_3000),
            frame("<[u8; 8] as Foo>::bar\nbaz", "/bin/w", 0x7f00_0000_4000),
            frame("main", "/bin/w", 0x7f00_0000_2000),
        ];
        let samples = [
            site(&b, Some("w (7)"), 4096),
            site(&a, Some("w (7)"), 1 << 20),
            site(&a, Some("w (7)"), 1 << 20),
            site(&a, None, 8192),
            site(&b, Some("w (7)"), 0),
            site(&[], Some("w (7)"), 3),
        ];
        assert_eq!(
            folded(&samples, Metric::Reserved),
            "main;mmap 8192\n\
             w (7) 3\n\
             w (7);main;<[u8: 8] as Foo>::bar baz;malloc 4096\n\
             w (7);main;mmap 2097152\n"
        );
        assert_eq!(
            folded(&samples, Metric::Resident),
            "main;mmap 4096\n\
             w (7) 1\n\
             w (7);main;<[u8: 8] as Foo>::bar baz;malloc 2048\n\
             w (7);main;mmap 1048576\n"
        );
        assert_eq!(
            folded(&samples, Metric::Faults),
            "main;mmap 2\nw (7);main;<[u8: 8] as Foo>::bar baz;malloc 1\nw (7);main;mmap 512\n"
        );
        assert_eq!(folded(&[], Metric::Reserved), "");
    }
}
