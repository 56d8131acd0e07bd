//! Sites: the call stacks that reserve memory and fault it in. Each stack is read from the
//! kernel's stack map once and pinned to modules and file offsets with the region model as it
//! is at that moment, so it can be symbolized after the process is gone.
use std::{collections::HashMap, sync::Arc};

use aya::maps::{MapData, StackTraceMap};

use memprof_common::{INLINE_STACK, StackRecord};

use crate::model::{AddressSpace, RegionKind, SITE_BEFORE_TRACING, SITE_NO_STACK, SiteId};

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
    index: HashMap<(u32, i32, i32), SiteId>,
    /// By the stacks' addresses: a stack sent whole (a new id each time) or stored under two
    /// ids is still one site.
    by_addresses: HashMap<(u32, Vec<u64>, Vec<u64>), SiteId>,
    /// Stacks the kernel sent whole (their ids have INLINE_STACK set), until used.
    inline: HashMap<i32, Vec<u64>>,
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
            index: HashMap::new(),
            by_addresses: HashMap::new(),
            inline: HashMap::new(),
        }
    }
}

/// A stack sent whole in its own record; negative ids (no stack) are not.
fn is_inline(id: i32) -> bool {
    id >= 0 && id & INLINE_STACK != 0
}

impl Sites {
    /// Keeps a stack the kernel sent whole for the record that refers to it next.
    pub fn add_inline(&mut self, record: &StackRecord) {
        let frames = &record.ips[..(record.frames as usize).min(record.ips.len())];
        // Like the stack map's, a stack ends at its first zero.
        let frames = frames.iter().copied().take_while(|&ip| ip != 0).collect();
        self.inline.insert(record.id as i32, frames);
    }

    fn read_stack(&mut self, stacks: &StackTraceMap<MapData>, id: i32) -> Vec<u64> {
        if is_inline(id) {
            return self.inline.remove(&id).unwrap_or_default();
        }
        u32::try_from(id)
            .ok()
            .and_then(|id| stacks.get(&id, 0).ok())
            .map(|s| s.frames().iter().map(|f| f.ip).collect())
            .unwrap_or_default()
    }

    /// The site of a stack captured in process `pid`, whose address space is `space`.
    pub fn resolve(
        &mut self,
        pid: u32,
        user_stack: i32,
        kernel_stack: i32,
        space: &AddressSpace,
        stacks: &StackTraceMap<MapData>,
    ) -> SiteId {
        if user_stack < 0 && kernel_stack < 0 {
            return SITE_NO_STACK;
        }
        let key = (pid, user_stack, kernel_stack);
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        let addresses = (
            pid,
            self.read_stack(stacks, user_stack),
            self.read_stack(stacks, kernel_stack),
        );
        let id = match self.by_addresses.get(&addresses) {
            Some(&id) => id,
            None => {
                let id = self.sites.len() as SiteId;
                let (_, user, kernel) = &addresses;
                self.sites.push(Site {
                    pid,
                    user: user
                        .iter()
                        .enumerate()
                        .map(|(depth, &address)| capture(space, address, depth))
                        .collect(),
                    kernel: kernel.clone(),
                    placeholder: None,
                });
                self.by_addresses.insert(addresses, id);
                id
            }
        };
        // Inline ids are used once (and wrap around): only stack-map ids name a stack again.
        if !is_inline(user_stack) && !is_inline(kernel_stack) {
            self.index.insert(key, id);
        }
        id
    }

    /// Whether [`Sites::resolve`] would answer without reading the stack map.
    pub fn knows(&self, pid: u32, user_stack: i32, kernel_stack: i32) -> bool {
        (user_stack < 0 && kernel_stack < 0)
            || self.index.contains_key(&(pid, user_stack, kernel_stack))
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
    pub faults: u64,
    /// Bytes the site reserved that were unmapped since.
    pub released: u64,
    /// Faults whose faulting code had this stack (`--fault-stacks`), scaled up by the
    /// sampling rate.
    pub made_resident_faults: u64,
}

/// Charges every region, fault and release of `process` to its site.
pub fn charge(
    process: &crate::process::Process,
    fault_sample: u64,
) -> HashMap<SiteId, SiteFigures> {
    let mut figures: HashMap<SiteId, SiteFigures> = HashMap::new();
    let space = &process.space;
    for r in space.regions() {
        let f = figures.entry(r.site).or_default();
        f.reserved += r.size();
        f.committed += if r.prot == 0 { 0 } else { r.size() };
        f.resident += space.region_resident(r);
    }
    for (&site, &n) in &process.faults_by_site {
        figures.entry(site).or_default().faults += n;
    }
    for (site, bytes) in space.released_by_site() {
        figures.entry(site).or_default().released += bytes;
    }
    for (&site, &n) in &process.faults_by_stack {
        figures.entry(site).or_default().made_resident_faults += n * fault_sample;
    }
    figures
}

/// The kernel function containing `address`, from /proc/kallsyms (read once).
pub fn kernel_symbol(address: u64) -> String {
    static KALLSYMS: std::sync::OnceLock<Vec<(u64, String)>> = std::sync::OnceLock::new();
    let symbols = KALLSYMS.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let address = u64::from_str_radix(words.next()?, 16).ok()?;
                let name = words.nth(1)?;
                (address != 0).then(|| (address, name.to_string()))
            })
            .collect();
        symbols.sort_unstable();
        symbols
    });
    match symbols.partition_point(|&(a, _)| a <= address) {
        0 => format!("[kernel]+{address:#x}"),
        i => format!("{}_[k]", symbols[i - 1].1),
    }
}
