//! What memprof reads from this machine's kernel before it loads anything: the tracepoints
//! and their layouts (tracefs, so root), and the structures its programs read (BTF).
#![expect(
    unused_crate_dependencies,
    reason = "a test crate sees every dependency of the package"
)]
use std::path::Path;

use memprof::{
    btf::Btf,
    probes::{TRACEFS, check_fields, check_tracepoints, ensure_tracefs},
};

/// Every tracepoint memprof needs is there with the layout the programs read, and one this
/// kernel lacks, or a field elsewhere, is refused by name.
#[test]
fn this_kernel_has_every_tracepoint_and_a_missing_one_is_named() {
    ensure_tracefs().expect("tracefs (tests run as root)");
    check_tracepoints(Path::new(TRACEFS)).expect("this kernel's tracepoints");
    let missing = ("syscalls/sys_enter_memprof_nonexistent", "addr", 16);
    let err = check_fields(Path::new(TRACEFS), &[missing]).unwrap_err();
    assert_eq!(err.exit_code(), 6);
    assert!(
        err.to_string()
            .contains("syscalls:sys_enter_memprof_nonexistent")
    );
    let moved = ("exceptions/page_fault_user", "address", 16);
    let err = check_fields(Path::new(TRACEFS), &[moved]).unwrap_err();
    assert!(
        err.to_string().contains("`address` is at offset Some(8)"),
        "{err}"
    );
}

/// This kernel's BTF: fields the programs read are found, inside anonymous structs too, and
/// a field that does not exist is named in the error.
#[test]
fn this_kernel_describes_its_structures() {
    let btf = Btf::from_sys_fs().expect("kernel BTF");
    let mm = btf.member_offset("task_struct", "mm").unwrap();
    let active_mm = btf.member_offset("task_struct", "active_mm").unwrap();
    assert_eq!(active_mm, mm + 8, "active_mm follows mm");
    let counter = btf.struct_size("percpu_counter").unwrap();
    assert!(counter >= 16, "{counter}");
    assert_eq!(btf.member_offset("percpu_counter", "count").unwrap() % 8, 0);
    // mm_struct's fields sit in an anonymous struct.
    let rss_stat = btf.member_offset("mm_struct", "rss_stat").unwrap();
    assert!(rss_stat > btf.member_offset("mm_struct", "mmap_base").unwrap());
    let err = btf.member_offset("mm_struct", "no_such_field").unwrap_err();
    assert_eq!(
        err.to_string(),
        "the kernel's BTF has no `struct mm_struct.no_such_field`"
    );
}
