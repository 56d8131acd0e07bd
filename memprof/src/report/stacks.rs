//! What to call a call stack for people: where it starts, whether it looks cut short, and
//! the frames that say who asked for the memory.
use crate::symbolize::Frame;

/// Functions a thread's stack starts in: a stack that ends anywhere else was cut short.
const STACK_ROOTS: [&str; 8] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "start_thread",
    "clone3",
    "runtime.goexit",
    "runtime.rt0_go",
    "runtime.mstart",
];

pub fn looks_truncated(frames: &[Frame]) -> bool {
    frames.last().is_some_and(|f| {
        f.module.is_some() && !STACK_ROOTS.iter().any(|root| f.function.starts_with(root))
    })
}

/// A site's frames from the first one outside the C library and dynamic loader (whose
/// syscall wrappers every stack starts with); all of them if none is.
pub fn own_frames(frames: &[Frame]) -> &[Frame] {
    let in_libc = |f: &Frame| {
        f.module.as_deref().is_some_and(|m| {
            let base = m.rsplit('/').next().unwrap_or(m);
            base.starts_with("libc.so") || base.starts_with("ld-linux")
        })
    };
    match frames.iter().position(|f| !in_libc(f)) {
        Some(first) => &frames[first..],
        None => frames,
    }
}

/// A stack on one line: its first own frames, callee < caller.
pub fn short_stack(frames: &[Frame]) -> String {
    let names: Vec<&str> = own_frames(frames)
        .iter()
        .take(4)
        .map(|f| f.function.as_str())
        .collect();
    names.join(" < ")
}

/// The frame that names a site in the region table.
pub fn site_name(frames: &[Frame]) -> String {
    own_frames(frames)
        .first()
        .map_or_else(String::new, |f| f.function.clone())
}
