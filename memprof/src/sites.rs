//! Sites: the call stacks that reserve memory and fault it in. A stack comes as an id the
//! kernel sent (once) or userspace vouched for, or unwound from a raw stack; the first event
//! using it pins it to modules and file offsets with the region model as it is at that
//! moment, so it can be symbolized after the process is gone.
use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use memprof_common::{NO_STACK, StackEvent};

use crate::{
    address_space::{
        AddressSpace, PROT_EXEC, RegionKind, SITE_BEFORE_TRACING, SITE_NO_STACK, SiteId,
    },
    unwind::Unwound,
};

/// A region of a mapped file (one line of /proc/PID/maps): `address - start + file_offset`
/// is an address's offset in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CodeRegion {
    pub start: u64,
    pub end: u64,
    pub file_offset: u64,
}

/// Where a return address or instruction pointer was when the stack was captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedFrame {
    pub address: u64,
    /// The mapped file (binary or library), when the address was in one.
    pub module: Option<Arc<str>>,
    /// The address's offset in that file.
    pub file_offset: u64,
    /// The region of that file the address was in.
    pub region: Option<CodeRegion>,
}

#[derive(Clone, Debug)]
pub struct Site {
    pub pid: u32,
    /// Leaf first.
    pub user: Vec<CapturedFrame>,
    /// What to call the site when it has no stack.
    pub placeholder: Option<&'static str>,
    /// Whether the unwinder reached the thread's entry point; None when the stack came from
    /// a frame walk alone (then only the names of its frames can tell).
    pub complete: Option<bool>,
    /// The stack was cut at a frame that was not code (a frame pointer into data): what
    /// followed was not to be trusted.
    pub cut: bool,
}

/// A user stack's frames, leaf first, and whether they reach the thread's entry point (None:
/// not known).
#[derive(Clone, Debug, Default)]
struct Stack {
    frames: Vec<u64>,
    complete: Option<bool>,
    /// The process it was captured in (its id hashes the process id: no other uses it).
    pid: u32,
}

pub struct Sites {
    sites: Vec<Site>,
    /// Every stack the kernel sent, and every user stack userspace vouched for, by id. Kept
    /// while its process lives: the kernel does not send one twice.
    stacks: HashMap<u64, Stack>,
    /// Ids of sites forgotten ([`Sites::forget`]), for new sites to take.
    free: Vec<SiteId>,
}

/// What a forgotten site's slot holds until a new site takes it.
const FORGOTTEN: Site = Site {
    pid: 0,
    user: Vec::new(),
    placeholder: Some("[forgotten]"),
    complete: None,
    cut: false,
};

impl Default for Sites {
    fn default() -> Self {
        let placeholder = |name| Site {
            pid: 0,
            user: Vec::new(),
            placeholder: Some(name),
            complete: None,
            cut: false,
        };
        let mut sites = vec![placeholder("[mapped before tracing]"); 2];
        sites[SITE_NO_STACK as usize] = placeholder("[stack not captured]");
        debug_assert_eq!(SITE_BEFORE_TRACING, 0);
        Self {
            sites,
            stacks: HashMap::new(),
            free: Vec::new(),
        }
    }
}

impl Sites {
    /// Keeps a stack the kernel sent, for the events that refer to it.
    pub fn add_stack(&mut self, event: &StackEvent) {
        let frames = &event.ips[..(event.frames as usize).min(event.ips.len())];
        // A stack ends at its first zero, as the kernel's unwinder ends it.
        let frames = frames.iter().copied().take_while(|&ip| ip != 0).collect();
        let stack = Stack {
            frames,
            complete: None,
            pid: event.header.tgid,
        };
        self.stacks.insert(event.id, stack);
    }

    /// Keeps the unwound frames of a user stack whose frame walk userspace vouched for: the
    /// kernel names it by `id` from now on. `pid` is the process it was captured in.
    pub fn add_vouched(&mut self, id: u64, pid: u32, unwound: &Unwound) {
        let stack = Stack {
            frames: unwound.frames.clone(),
            complete: Some(unwound.complete),
            pid,
        };
        self.stacks.insert(id, stack);
    }

    /// The unwound stack userspace vouched for under `id`, if it did.
    pub fn vouched(&self, id: u64) -> Option<Unwound> {
        let stack = self.stacks.get(&id)?;
        Some(Unwound {
            frames: stack.frames.clone(),
            complete: stack.complete?,
        })
    }

    fn stack(&self, id: u64) -> Stack {
        self.stacks.get(&id).cloned().unwrap_or_default()
    }

    /// A new site for a stack captured in process `pid` (an id the kernel sent or userspace
    /// vouched for), pinned to modules with its address space `space` as it is now.
    pub fn add(&mut self, pid: u32, user_stack: u64, space: &AddressSpace) -> SiteId {
        let user = self.stack(user_stack);
        self.push(pid, &user.frames, user.complete, space)
    }

    /// A new site for a stack unwound from a raw stack of process `pid`.
    pub fn add_unwound(&mut self, pid: u32, unwound: &Unwound, space: &AddressSpace) -> SiteId {
        self.push(pid, &unwound.frames, Some(unwound.complete), space)
    }

    fn push(
        &mut self,
        pid: u32,
        frames: &[u64],
        complete: Option<bool>,
        space: &AddressSpace,
    ) -> SiteId {
        let mut user = Vec::with_capacity(frames.len());
        for (depth, &address) in frames.iter().enumerate() {
            match capture(space, address, depth) {
                Some(frame) => user.push(frame),
                None => break,
            }
        }
        let cut = user.len() < frames.len();
        let site = Site {
            pid,
            user,
            placeholder: None,
            complete,
            cut,
        };
        match self.free.pop() {
            Some(id) => {
                self.sites[id as usize] = site;
                id
            }
            None => {
                self.sites.push(site);
                self.sites.len() as SiteId - 1
            }
        }
    }

    /// Forgets the sites no process uses any more (`used` are those the live ones use), and
    /// the stacks of processes no longer in `live`: a trace of the host may run for days.
    /// Their ids go to new sites, so that ids stay as few as the sites in use.
    pub fn forget(&mut self, live: &HashSet<u32>, used: &HashSet<SiteId>) {
        for (id, site) in self.sites.iter_mut().enumerate() {
            let id = id as SiteId;
            if site.placeholder.is_none() && !used.contains(&id) {
                *site = FORGOTTEN;
                self.free.push(id);
            }
        }
        self.stacks.retain(|_, stack| live.contains(&stack.pid));
    }

    /// Whether the stack was captured (and sent).
    pub fn captured(&self, user_stack: u64) -> bool {
        user_stack != NO_STACK && self.stacks.contains_key(&user_stack)
    }

    pub fn get(&self, id: SiteId) -> &Site {
        &self.sites[id as usize]
    }
}

/// Pins one address to its module. Frames above the leaf are return addresses: the call
/// that made them is the byte before, which is what symbolization must look up. None for a
/// return address outside executable memory: no call made it (a frame pointer pointed into
/// data), and the frames after it are no more to be trusted.
fn capture(space: &AddressSpace, address: u64, depth: usize) -> Option<CapturedFrame> {
    let lookup = if depth == 0 {
        address
    } else {
        address.checked_sub(1)?
    };
    let region = space.region_at(lookup);
    if depth > 0 && region.is_none_or(|r| r.prot & PROT_EXEC == 0) {
        return None;
    }
    let file = region.filter(|r| r.kind == RegionKind::File);
    Some(CapturedFrame {
        address,
        module: file.and_then(|r| r.path.clone()),
        file_offset: file.map_or(lookup, |r| lookup - r.start + r.offset),
        region: file.map(|r| CodeRegion {
            start: r.start,
            end: r.end,
            file_offset: r.offset,
        }),
    })
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
