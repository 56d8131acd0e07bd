//! Builds the eBPF programs (memprof-ebpf) with aya-build; main.rs embeds the object.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;
// A build dependency so that cargo runs this script again when the kernel side changes;
// aya-build compiles it for BPF itself.
use memprof_ebpf as _;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "memprof-ebpf")
        .ok_or_else(|| anyhow!("memprof-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    // `cargo xtask setup` names another toolchain here when it had to install a dated nightly.
    println!("cargo:rerun-if-env-changed=MEMPROF_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("MEMPROF_EBPF_TOOLCHAIN").ok();
    let toolchain = toolchain
        .as_deref()
        .map_or(Toolchain::Nightly, Toolchain::Custom);
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "memprof-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        toolchain,
    )
}
