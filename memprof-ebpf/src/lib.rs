//! Empty: the programs are the `memprof` binary (main.rs). This library target exists so that
//! memprof's build.rs can depend on the package (aya-build builds the binary).
#![no_std]
#![expect(
    unused_crate_dependencies,
    reason = "a placeholder; the dependencies are the binary's"
)]
