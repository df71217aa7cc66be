//! How one call of the fused op is cut into launches, sized by the adapter it runs on.
//!
//! A call's blocks could go out as one launch, but its partial-state buffer is
//! [splits, Q, 3 + C + 1] floats and its query matrix [Q, D]: on a 256×256 canvas either
//! passes a binding limit (128 MiB is all WebGPU promises), and one launch cannot be
//! cancelled. So blocks go out in consecutive runs ("launches"), each under the binding limit
//! and under a fixed amount of work, with a cancel check between them.
//!
//! Splits (the grid's second axis) only fill the GPU on a hardware adapter: about 4096 cubes
//! in all, none with fewer than 64 keys. On a software rasteriser (lavapipe) they must also
//! keep every unit under its loop limit ([`op::MAX_UNIT_TERMS`]); there, a block too long for
//! 65535 splits is refused up front rather than summed wrong.

use std::ops::Range;

use super::gpu::AdapterLimits;
use super::op::{self, Block, STATE_COLS};

/// The most (query, key, coordinate) terms one launch sums on a hardware adapter: ~1 ms on
/// a large discrete GPU, tens on an integrated one, so a cancel waits at most that long.
pub const LAUNCH_TERMS_HARDWARE: u64 = 1 << 32;
/// The same on a software rasteriser: lavapipe sums a few 10⁸ terms a second on two cores.
pub const LAUNCH_TERMS_SOFTWARE: u64 = 1 << 28;
/// The most bytes any one of a launch's buffers takes, whatever the adapter allows: a
/// launch's partial states and queries are transient, and a bigger one buys nothing.
pub const LAUNCH_BUFFER_CAP: u64 = 256 << 20;

/// One call of the op as launches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchPlan {
    /// Key splits per block, the same in every launch (winners are decoded with it).
    pub splits: usize,
    /// Consecutive runs of block indices, in order, covering every block once.
    pub launches: Vec<Range<usize>>,
}

/// Cuts `blocks` (of `n` training images, keys of width `d`, `channels` values) into
/// launches for an adapter with `limits`. Errs, naming the limit, when even one block cannot
/// run on it.
pub fn plan(
    blocks: &[Block],
    n: usize,
    d: usize,
    channels: usize,
    limits: &AdapterLimits,
) -> Result<LaunchPlan, String> {
    let max_keys = blocks.iter().map(|b| n * b.kn).max().unwrap_or(0);
    let fill = 4096usize.div_ceil(blocks.len().max(1)).min(max_keys.div_ceil(64)).max(1);
    let splits = if limits.software {
        let need = op::min_splits(max_keys, d);
        if need > 65_535 {
            return Err(format!(
                "{max_keys} keys of {d} values per pixel exceed what a software GPU can sum \
                 ({} per pixel); use fewer images, a smaller patch, or the CPU",
                65_535 * (op::MAX_UNIT_TERMS / d.max(1))
            ));
        }
        fill.max(need)
    } else {
        fill.min(65_535)
    };
    // `op::state_cols` at most: `channels` counts E[ln n] for a merged part already.
    let cols = (STATE_COLS + channels + 3) as u64;
    let cap = limits.max_binding_bytes.min(LAUNCH_BUFFER_CAP);
    let max_terms = if limits.software { LAUNCH_TERMS_SOFTWARE } else { LAUNCH_TERMS_HARDWARE };
    let bytes = |queries: u64| (queries * splits as u64 * cols * 4).max(queries * d as u64 * 4);
    let mut launches = Vec::new();
    let (mut start, mut queries, mut terms) = (0, 0u64, 0u64);
    for (i, b) in blocks.iter().enumerate() {
        let (bq, bt) = (b.qn as u64, b.qn as u64 * (n * b.kn) as u64 * d as u64);
        if bytes(bq) > cap {
            return Err(format!(
                "one block of the GPU kernel needs {:.0} MB, more than the adapter binds at once ({:.0} MB)",
                bytes(bq) as f64 / 1e6,
                cap as f64 / 1e6
            ));
        }
        if i > start && (bytes(queries + bq) > cap || terms + bt > max_terms) {
            launches.push(start..i);
            (start, queries, terms) = (i, 0, 0);
        }
        queries += bq;
        terms += bt;
    }
    if start < blocks.len() {
        launches.push(start..blocks.len());
    }
    Ok(LaunchPlan { splits, launches })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(blocks: usize, kn: usize) -> Vec<Block> {
        (0..blocks).map(|i| Block { q0: i * 64, qn: 64, k0: 0, kn, kstride: 0 }).collect()
    }

    fn covers(plan: &LaunchPlan, blocks: usize) {
        let mut next = 0;
        for r in &plan.launches {
            assert_eq!(r.start, next, "launches are consecutive");
            assert!(r.end > r.start, "no empty launch");
            next = r.end;
        }
        assert_eq!(next, blocks, "every block is launched once");
    }

    #[test]
    fn a_hardware_adapter_gets_few_splits_and_a_software_one_its_loop_limit() {
        // MNIST at P = 7: ~13 blocks of 2000 × 484 keys, D = 49.
        let blocks = group(13, 484);
        let hw = plan(&blocks, 2000, 49, 1, &AdapterLimits::WEBGPU_DEFAULT).unwrap();
        assert_eq!(hw.splits, 316, "⌈4096 / 13⌉ cubes per block fill the GPU");
        let sw = AdapterLimits { software: true, ..AdapterLimits::WEBGPU_DEFAULT };
        let lv = plan(&blocks, 2000, 49, 1, &sw).unwrap();
        assert_eq!(lv.splits, op::min_splits(2000 * 484, 49));
        assert!(2000 * 484 * 49 / lv.splits <= op::MAX_UNIT_TERMS + 49, "each unit under the loop limit");
        covers(&hw, 13);
        covers(&lv, 13);
    }

    #[test]
    fn every_buffer_stays_under_the_binding_limit() {
        // 265×265 RGB at P = 13 on a 128 MiB adapter, one training image (so the work is
        // small): one launch would need 70400 queries × 507 × 4 = 143 MB of queries.
        let blocks = group(1100, 1);
        let limits = AdapterLimits::WEBGPU_DEFAULT;
        let p = plan(&blocks, 1, 507, 3, &limits).unwrap();
        covers(&p, 1100);
        assert!(p.launches.len() > 1);
        for r in &p.launches {
            let q = (r.len() * 64) as u64;
            assert!(q * 507 * 4 <= limits.max_binding_bytes, "queries bind");
            assert!(q * p.splits as u64 * 7 * 4 <= limits.max_binding_bytes, "partials bind");
        }
        // A smaller adapter cuts smaller launches.
        let small = AdapterLimits { max_binding_bytes: 8 << 20, ..limits };
        let ps = plan(&blocks, 1, 507, 3, &small).unwrap();
        assert!(ps.launches.len() > p.launches.len());
        covers(&ps, 1100);
    }

    #[test]
    fn launches_are_cut_by_work_so_a_cancel_waits_for_one() {
        let blocks = group(40, 484);
        let sw = AdapterLimits { software: true, ..AdapterLimits::WEBGPU_DEFAULT };
        let p = plan(&blocks, 2000, 49, 1, &sw).unwrap();
        covers(&p, 40);
        // Each block is 64 × 968000 × 49 ≈ 3.0e9 terms, past the software budget alone:
        // one block per launch.
        assert_eq!(p.launches.len(), 40);
        let hw = plan(&blocks, 2000, 49, 1, &AdapterLimits::WEBGPU_DEFAULT).unwrap();
        for r in &hw.launches {
            let terms = r.len() as u64 * 64 * 968_000 * 49;
            assert!(r.len() == 1 || terms <= LAUNCH_TERMS_HARDWARE);
        }
    }

    #[test]
    fn a_block_past_the_software_loop_limit_or_the_binding_is_refused_by_name() {
        // 65535 splits × 60000 terms is the most one block can sum on lavapipe.
        let edge_keys = 65_535 * op::MAX_UNIT_TERMS / 100;
        let sw = AdapterLimits { software: true, max_binding_bytes: 4 << 30, memory_bytes: None };
        let ok = plan(&[Block { q0: 0, qn: 1, k0: 0, kn: edge_keys, kstride: 0 }], 1, 100, 1, &sw).unwrap();
        assert_eq!(ok.splits, 65_535, "at the edge: exactly the most splits");
        let past = plan(&[Block { q0: 0, qn: 1, k0: 0, kn: edge_keys + 1, kstride: 0 }], 1, 100, 1, &sw);
        assert!(past.unwrap_err().contains("software GPU"));
        // A hardware adapter has no loop limit.
        assert!(
            plan(
                &[Block { q0: 0, qn: 1, k0: 0, kn: edge_keys + 1, kstride: 0 }],
                1,
                100,
                1,
                &AdapterLimits::WEBGPU_DEFAULT
            )
            .is_ok()
        );
        let tiny = AdapterLimits { max_binding_bytes: 1000, memory_bytes: None, software: false };
        let err = plan(&group(1, 10), 10, 49, 1, &tiny).unwrap_err();
        assert!(err.contains("binds"), "{err}");
    }
}
