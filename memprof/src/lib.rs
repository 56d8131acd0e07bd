//! memprof: where a process's reserved and resident memory came from, traced with eBPF.
pub mod attribution;
pub mod btf;
pub mod cli;
pub mod error;
pub mod export;
pub mod filter;
pub mod launch;
pub mod loader;
pub mod model;
pub mod process;
pub mod procfs;
pub mod reader;
pub mod report;
pub mod run;
pub mod session;
pub mod symbolize;
#[cfg(test)]
mod testing;
pub mod top;
