//! The categories as the root of a flame graph: each region's bytes under its category, then
//! the stack that reserved it (`breakdown.folded`, `breakdown.svg`).
use std::collections::{BTreeMap, HashMap};

use crate::{
    address_space::SiteId,
    report::{ProcessReport, category::Category},
    symbolize::Frame,
};

/// A category's frame over a site's stack, and what it holds there.
pub(super) struct CategoryStack {
    /// Leaf first, the category's own frame outermost.
    pub(super) frames: Vec<Frame>,
    pub(super) reserved: u64,
    pub(super) resident: u64,
}

/// The regions of `process` by (category, site that reserved them), each as the site's stack
/// under a frame named after the category.
pub(super) fn category_stacks(process: &ProcessReport) -> Vec<CategoryStack> {
    let stacks: HashMap<_, &[Frame]> = process
        .sites
        .iter()
        .map(|s| (s.id, s.stack.as_slice()))
        .collect();
    let mut figures: BTreeMap<(Category, SiteId), (u64, u64)> = BTreeMap::new();
    for r in &process.regions {
        let f = figures.entry((r.category, r.site_id)).or_default();
        f.0 += r.reserved_bytes;
        f.1 += r.resident_bytes;
    }
    figures
        .into_iter()
        .map(|((category, site), (reserved, resident))| {
            let mut frames = stacks.get(&site).map_or_else(Vec::new, |s| s.to_vec());
            frames.push(Frame {
                function: category.id().to_string(),
                ..Frame::default()
            });
            CategoryStack {
                frames,
                reserved,
                resident,
            }
        })
        .collect()
}
