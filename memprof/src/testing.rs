//! Helpers for the unit tests.

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
