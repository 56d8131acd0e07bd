//! The paths of the files traced processes map, read from the kernel's own records (the
//! open file's dentries, up through the mount points) when an mmap returns, so that
//! userspace names a mapping without /proc, which a short-lived process leaves no time to
//! read. Only for mmaps of files: a process's libraries, a few dozen per process.

use aya_ebpf::{helpers::generated::bpf_loop, macros::map, maps::PerCpuArray};
use memprof_common::{
    EventKind, FILE_PATH_EVENT_HEAD, FilePathEvent, KernelLayout, PATH_COMPONENT_BYTES,
    PATH_COMPONENTS,
};

use crate::{
    config::{self, LAYOUT},
    event::{header, lost, send},
    kernel::{current_task, read_kernel, read_kernel_str},
    slot::with_scratch,
};

/// Where a path is gathered, per CPU.
#[map]
static MP_FILE_PATH: PerCpuArray<FilePathEvent> = PerCpuArray::with_max_entries(1, 0);

/// Mount points a path may cross (a container's root, `/usr` on its own file system).
const MOUNTS: u32 = 8;

/// A kernel pointer at `base` + `offset`.
fn pointer(base: u64, offset: u32) -> u64 {
    read_kernel((base + u64::from(offset)) as *const u64).unwrap_or(0)
}

/// Where the walk up a path is, between two steps, per CPU: in a map rather than on the
/// program's stack, so that every step looks alike to the verifier, which then checks one.
#[map]
static MP_PATH_WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Walk {
    layout: KernelLayout,
    dentry: u64,
    mnt: u64,
    components: u32,
    crossed: u32,
    /// 1 once the walk reached the root.
    whole: u32,
}

/// Sends the path of the file the current task has open as `fd`, mapped at `address`.
pub(crate) fn send_file_path(tgid: u32, tid: u32, fd: u64, address: u64) {
    let layout = config::get(&LAYOUT);
    let files = pointer(current_task(), layout.task_files);
    let table = pointer(pointer(files, layout.files_fdt), layout.fdtable_fd);
    if table == 0 || fd > u64::from(u32::MAX) {
        return;
    }
    let file = read_kernel((table + 8 * fd) as *const u64).unwrap_or(0);
    if file == 0 {
        return;
    }
    let path = file + u64::from(layout.file_path);
    let started = with_scratch(&MP_PATH_WALK, |walk| {
        *walk = Walk {
            layout,
            dentry: pointer(path, layout.path_dentry),
            mnt: pointer(path, layout.path_mnt),
            components: 0,
            crossed: 0,
            whole: 0,
        };
    });
    if started.is_none() {
        return;
    }
    // A loop the verifier checks once, step by step in a callback: unrolled, its branches
    // multiply beyond what the verifier explores in the syscall program.
    // SAFETY: the helper runs `step`, which takes no context, at most the given number of
    // times.
    unsafe {
        bpf_loop(
            PATH_COMPONENTS as u32 + MOUNTS,
            step as *mut _,
            core::ptr::null_mut(),
            0,
        )
    };
    let Some(walk) = with_scratch(&MP_PATH_WALK, |walk| *walk) else {
        return;
    };
    with_scratch(&MP_FILE_PATH, |event| {
        event.header = header(EventKind::FilePath, tgid, tid);
        event.address = address;
        event.cut = u32::from(walk.whole == 0);
        let components = (walk.components as usize).min(PATH_COMPONENTS);
        event.components = components as u32;
        // Bounded after the sum, which the verifier's bit-level bounds would overestimate.
        let len = core::hint::black_box(FILE_PATH_EVENT_HEAD + PATH_COMPONENT_BYTES * components)
            .min(core::mem::size_of::<FilePathEvent>());
        // SAFETY: `event` is a FilePathEvent, at least `len` bytes, all written up to there.
        let bytes = unsafe { core::slice::from_raw_parts((&raw const *event).cast::<u8>(), len) };
        if !send(bytes) {
            lost(1);
        }
    });
}

/// One step up the path: a component's name into this CPU's event, or across a mount
/// point; 1 (stop) at the root or when the walk cannot go on.
extern "C" fn step(_index: u64, _context: *mut u8) -> i64 {
    with_scratch(&MP_PATH_WALK, step_walk).unwrap_or(1)
}

fn step_walk(walk: &mut Walk) -> i64 {
    let layout = &walk.layout;
    let parent = pointer(walk.dentry, layout.dentry_parent);
    if walk.dentry == 0 || parent == 0 {
        return 1;
    }
    if parent == walk.dentry {
        // The root of a mount: on to where it is mounted, unless it is the root.
        let mount = walk.mnt.wrapping_sub(u64::from(layout.mount_mnt));
        let mount_parent = pointer(mount, layout.mount_parent);
        if mount_parent == mount {
            walk.whole = 1;
            return 1;
        }
        if walk.crossed == MOUNTS {
            return 1;
        }
        walk.crossed += 1;
        walk.dentry = pointer(mount, layout.mount_mountpoint);
        walk.mnt = mount_parent + u64::from(layout.mount_mnt);
        return 0;
    }
    let name = pointer(
        walk.dentry + u64::from(layout.dentry_name),
        layout.qstr_name,
    );
    let index = walk.components;
    let read = with_scratch(&MP_FILE_PATH, |event| {
        event
            .names
            .get_mut(index as usize)
            .is_some_and(|slot| read_kernel_str(slot, name))
    });
    if read != Some(true) {
        return 1;
    }
    walk.components += 1;
    walk.dentry = parent;
    0
}
