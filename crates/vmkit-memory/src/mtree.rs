//! Text dumps in the shape of QEMU's `info mtree` (the region trees of the
//! address spaces) and `info mtree -f` (their flat views).

use std::fmt::Write as _;
use std::sync::Arc;

use crate::address_space::AddressSpace;
use crate::region::{MemoryRegion, RegionKind};

fn kind_word(mr: &MemoryRegion) -> &'static str {
    match mr.kind() {
        RegionKind::Ram { .. } if mr.is_readonly() => "rom",
        k => k.mtree_word(),
    }
}

fn range_text(start: u128, size: u128) -> String {
    format!("{:016x}-{:016x}", start, start + size - 1)
}

fn print_region(
    out: &mut String,
    mr: &MemoryRegion,
    base: u128,
    priority: i32,
    depth: usize,
    aliased: &mut Vec<MemoryRegion>,
) {
    let indent = "  ".repeat(depth);
    let disabled = if mr.is_enabled() { "" } else { " [disabled]" };
    let _ = write!(
        out,
        "{indent}{} (prio {priority}, {}): ",
        range_text(base, mr.size()),
        kind_word(mr)
    );
    match mr.kind() {
        RegionKind::Alias { target, offset } => {
            let _ = writeln!(
                out,
                "alias {} @{} {}{disabled}",
                mr.name(),
                target.name(),
                range_text(u128::from(*offset), mr.size())
            );
            if !aliased.contains(target) {
                aliased.push(target.clone());
            }
        }
        _ => {
            let _ = writeln!(out, "{}{disabled}", mr.name());
        }
    }
    for (sub, addr, prio) in mr.subregions() {
        print_region(out, &sub, base + u128::from(addr.0), prio, depth + 1, aliased);
    }
}

/// `info mtree`: each address space's region tree (spaces sharing a root are
/// listed together), then the regions only reachable through aliases.
pub fn mtree(spaces: &[Arc<AddressSpace>]) -> String {
    let mut out = String::new();
    let mut aliased = Vec::new();
    let mut done: Vec<MemoryRegion> = Vec::new();
    for space in spaces {
        if done.contains(space.root()) {
            continue;
        }
        for other in spaces.iter().filter(|s| s.root() == space.root()) {
            let _ = writeln!(out, "address-space: {}", other.name());
        }
        print_region(&mut out, space.root(), 0, 0, 1, &mut aliased);
        out.push('\n');
        done.push(space.root().clone());
    }
    let mut i = 0;
    while i < aliased.len() {
        let target = aliased[i].clone();
        i += 1;
        if target.container_region().is_some() || done.contains(&target) {
            continue;
        }
        let _ = writeln!(out, "memory-region: {}", target.name());
        print_region(&mut out, &target, 0, 0, 1, &mut aliased);
        out.push('\n');
        done.push(target);
    }
    out
}

/// `info mtree -f`: each distinct flat view with the address spaces using it.
pub fn mtree_flat(spaces: &[Arc<AddressSpace>]) -> String {
    let mut out = String::new();
    let mut done: Vec<MemoryRegion> = Vec::new();
    let mut n = 0;
    for space in spaces {
        if done.contains(space.root()) {
            continue;
        }
        let _ = writeln!(out, "FlatView #{n}");
        n += 1;
        for other in spaces.iter().filter(|s| s.root() == space.root()) {
            let _ = writeln!(out, " AS \"{}\", root: {}", other.name(), other.root().name());
        }
        let _ = writeln!(out, " Root memory region: {}", space.root().name());
        let view = space.flat_view();
        if view.ranges().is_empty() {
            let _ = writeln!(out, "  No rendered FlatView");
        }
        for r in view.ranges() {
            let at = if r.offset_in_region != 0 {
                format!(" @{:016x}", r.offset_in_region)
            } else {
                String::new()
            };
            let ro = if r.readonly && matches!(r.region.kind(), RegionKind::Ram { .. }) {
                " [ro]"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {} (prio {}, {}): {}{at}{ro}",
                range_text(u128::from(r.range.start().0), r.range.size()),
                r.region.priority(),
                kind_word(&r.region),
                r.region.name()
            );
        }
        out.push('\n');
        done.push(space.root().clone());
    }
    out
}
