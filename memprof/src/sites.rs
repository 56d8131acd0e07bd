//! Sites: the call stacks that reserve memory and fault it in. The kernel sends each stack
//! once; the first event using it pins it to modules and file offsets with the region model
//! as it is at that moment, so it can be symbolized after the process is gone.
use std::{collections::HashMap, sync::Arc};

use memprof_common::{NO_STACK, StackEvent};

use crate::address_space::{AddressSpace, RegionKind, SITE_BEFORE_TRACING, SITE_NO_STACK, SiteId};

/// Where a return address or instruction pointer was when the stack was captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    pub address: u64,
    /// The mapped file (binary or library), when the address was in one.
    pub module: Option<Arc<str>>,
    /// The address's offset in that file.
    pub file_offset: u64,
}

#[derive(Clone, Debug)]
pub struct Site {
    pub pid: u32,
    /// Leaf first.
    pub user: Vec<CapturedFrame>,
    /// Leaf first; kernel addresses (with `--kernel-stacks`).
    pub kernel: Vec<u64>,
    /// What to call the site when it has no stack.
    pub placeholder: Option<&'static str>,
}

pub struct Sites {
    sites: Vec<Site>,
    /// Every stack the kernel sent, by id. Kept: the kernel does not send one twice.
    stacks: HashMap<u64, Vec<u64>>,
}

impl Default for Sites {
    fn default() -> Self {
        let placeholder = |name| Site {
            pid: 0,
            user: Vec::new(),
            kernel: Vec::new(),
            placeholder: Some(name),
        };
        let mut sites = vec![placeholder("[mapped before tracing]"); 2];
        sites[SITE_NO_STACK as usize] = placeholder("[stack not captured]");
        debug_assert_eq!(SITE_BEFORE_TRACING, 0);
        Self {
            sites,
            stacks: HashMap::new(),
        }
    }
}

impl Sites {
    /// Keeps a stack the kernel sent, for the events that refer to it.
    pub fn add_stack(&mut self, event: &StackEvent) {
        let frames = &event.ips[..(event.frames as usize).min(event.ips.len())];
        // A stack ends at its first zero, as the kernel's unwinder ends it.
        let frames = frames.iter().copied().take_while(|&ip| ip != 0).collect();
        self.stacks.insert(event.id, frames);
    }

    fn frames(&self, id: u64) -> Vec<u64> {
        self.stacks.get(&id).cloned().unwrap_or_default()
    }

    /// A new site for stacks captured in process `pid`, pinned to modules with its address
    /// space `space` as it is now.
    pub fn add(
        &mut self,
        pid: u32,
        user_stack: u64,
        kernel_stack: u64,
        space: &AddressSpace,
    ) -> SiteId {
        let id = self.sites.len() as SiteId;
        self.sites.push(Site {
            pid,
            user: self
                .frames(user_stack)
                .into_iter()
                .enumerate()
                .map(|(depth, address)| capture(space, address, depth))
                .collect(),
            kernel: self.frames(kernel_stack),
            placeholder: None,
        });
        id
    }

    /// Whether either stack was captured (and sent).
    pub fn captured(&self, user_stack: u64, kernel_stack: u64) -> bool {
        let known = |id| id != NO_STACK && self.stacks.contains_key(&id);
        known(user_stack) || known(kernel_stack)
    }

    pub fn get(&self, id: SiteId) -> &Site {
        &self.sites[id as usize]
    }
}

/// Pins one address to its module. Frames above the leaf are return addresses: the call
/// that made them is the byte before, which is what symbolization must look up.
fn capture(space: &AddressSpace, address: u64, depth: usize) -> CapturedFrame {
    let lookup = if depth == 0 { address } else { address - 1 };
    let region = space
        .region_at(lookup)
        .filter(|r| r.kind == RegionKind::File);
    CapturedFrame {
        address,
        module: region.and_then(|r| r.path.clone()),
        file_offset: region.map_or(lookup, |r| lookup - r.start + r.offset),
    }
}

/// A site's figures in one process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteFigures {
    /// Live bytes of the regions the site reserved.
    pub reserved: u64,
    pub committed: u64,
    /// Resident bytes in those regions.
    pub resident: u64,
    /// Page faults in those regions.
    pub faults_in_regions: u64,
    /// Bytes the site reserved that were unmapped since.
    pub released: u64,
    /// Page faults made by code with this stack (`--fault-stacks`), scaled up by the
    /// sampling rate.
    pub faults_by_code: u64,
}
