//! Random region trees (containers, aliases, priorities, disabled regions)
//! rendered into a flat view, checked address by address against a
//! brute-force resolver that follows QEMU's lookup rule directly.

use std::sync::Arc;

use proptest::prelude::*;
use vmkit_memory::{FlatView, GuestAddr, MemoryRegion, MmioOps, RegionKind, Result};

struct Nop;
impl MmioOps for Nop {
    fn read(&self, _: u64, _: u32) -> Result<u64> {
        Ok(0)
    }
    fn write(&self, _: u64, _: u32, _: u64) -> Result<()> {
        Ok(())
    }
}

/// The brute-force answer: which terminating region answers at `addr`, at what offset.
fn resolve(mr: &MemoryRegion, base: i128, addr: i128) -> Option<(MemoryRegion, u64)> {
    if !mr.is_enabled() || addr < base || addr >= base + mr.size() as i128 {
        return None;
    }
    if let RegionKind::Alias { target, offset } = mr.kind() {
        return resolve(target, base - i128::from(*offset), addr);
    }
    for (sub, at, _) in mr.subregions() {
        if let Some(hit) = resolve(&sub, base + i128::from(at.0), addr) {
            return Some(hit);
        }
    }
    mr.kind().terminates().then(|| (mr.clone(), (addr - base) as u64))
}

/// A recipe for a region tree, so proptest can shrink it.
#[derive(Debug, Clone)]
enum Node {
    Leaf {
        size: u64,
    },
    Container {
        size: u64,
        children: Vec<(u64, i32, bool, Node)>,
    },
    /// An alias onto the `target`-th leaf created so far, at `offset` in it.
    Alias {
        target: usize,
        offset: u64,
        size: u64,
    },
}

fn node() -> impl Strategy<Value = Node> {
    let leaf = (1u64..0x400).prop_map(|size| Node::Leaf { size });
    let alias =
        (0usize..8, 0u64..0x200, 1u64..0x300).prop_map(|(target, offset, size)| Node::Alias { target, offset, size });
    prop_oneof![3 => leaf, 1 => alias].prop_recursive(3, 24, 5, |inner| {
        (
            0x100u64..0x1000,
            prop::collection::vec((0u64..0x1000, -2i32..3, prop::bool::weighted(0.85), inner), 0..5),
        )
            .prop_map(|(size, children)| Node::Container { size, children })
    })
}

fn build(n: &Node, leaves: &mut Vec<MemoryRegion>, counter: &mut usize) -> Option<MemoryRegion> {
    *counter += 1;
    let name = format!("r{counter}");
    match n {
        Node::Leaf { size } => {
            let r = MemoryRegion::mmio(&name, None, *size, Arc::new(Nop)).ok()?;
            leaves.push(r.clone());
            Some(r)
        }
        Node::Alias { target, offset, size } => {
            let t = leaves.get(*target % leaves.len().max(1))?.clone();
            // Invalid aliases are refused (tested elsewhere); skip them here.
            MemoryRegion::alias(&name, None, &t, *offset, *size).ok()
        }
        Node::Container { size, children } => {
            let c = MemoryRegion::container(&name, None, u128::from(*size)).ok()?;
            for (addr, prio, enabled, child) in children {
                if let Some(ch) = build(child, leaves, counter) {
                    if c.add_subregion_overlap(GuestAddr(*addr), &ch, *prio).is_ok() {
                        ch.set_enabled(*enabled);
                    }
                }
            }
            Some(c)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256), ..ProptestConfig::default() })]

    #[test]
    fn flat_view_matches_brute_force(tree in node(), root_addr in 0u64..0x100) {
        let mut leaves = Vec::new();
        let mut counter = 0;
        let Some(top) = build(&tree, &mut leaves, &mut counter) else { return Ok(()) };
        let root = MemoryRegion::container("root", None, 0x4000).map_err(|e| TestCaseError::fail(e.to_string()))?;
        if root.add_subregion(GuestAddr(root_addr), &top).is_err() {
            return Ok(());
        }
        let view = FlatView::render(&root);
        // Ranges are sorted, non-empty and disjoint.
        for w in view.ranges().windows(2) {
            prop_assert!(w[0].range.end() <= u128::from(w[1].range.start().0));
        }
        for a in 0..0x4000u64 {
            let expected = resolve(&root, 0, i128::from(a));
            let got = view.lookup(GuestAddr(a)).map(|r| (r.region.clone(), r.region_offset(GuestAddr(a))));
            prop_assert_eq!(
                expected.as_ref().map(|(r, o)| (r.name().to_string(), *o)),
                got.as_ref().map(|(r, o)| (r.name().to_string(), *o)),
                "at {:#x}", a
            );
        }
    }
}
