#![no_std]
// This file exists to enable the library target, which memprof's build.rs depends on.
