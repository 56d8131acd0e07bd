//! memprof: where a process's reserved and resident memory came from, traced with eBPF.
pub mod address_space;
pub mod btf;
pub mod cli;
pub mod error;
pub mod events;
pub mod export;
pub mod filter;
pub mod launch;
pub mod probes;
pub mod process;
pub mod procfs;
pub mod report;
pub mod run;
pub mod session;
pub mod sites;
pub mod symbolize;
#[cfg(test)]
mod testing;
pub mod top;
