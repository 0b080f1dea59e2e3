//! What docs/devices.md says the loader does with an image whose layout is
//! known: an independent model the generated images are checked against.
//!
//! Invariant: the model is written from the documentation, not from the
//! loader's code; a disagreement is a bug in one of them.

use std::ops::Range;

/// One range of the image placed in guest RAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Guest-physical address of its first byte.
    pub paddr: u32,
    /// The file bytes copied there.
    pub file: Range<usize>,
    /// Bytes occupied in memory (the rest are zeroed).
    pub mem_size: u32,
}

/// Where an image asks to be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The segments, in header order.
    pub segments: Vec<Planned>,
    /// The physical entry point.
    pub entry: u32,
}

/// What must happen to an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// Nothing is known (a mutated or foreign image).
    Unknown,
    /// The image itself breaks a documented rule: it must be refused.
    Refused,
    /// The image asks for this; it loads iff the plan fits the machine.
    Plan(Plan),
}

/// The end of usable low memory (the EBDA starts there): the information
/// area ends at or below it.
pub const LOW_MEMORY_END: u64 = 0x9_fc00;
/// QEMU's address of the information area, tried first.
pub const DEFAULT_INFO: u64 = 0x9000;
/// The lowest base the area moves to, and the boundary it moves on.
pub const INFO_SEARCH_START: u64 = 0x1000;

/// The ranges a plan occupies if it fits in `ram_size` bytes, in ascending
/// order, and where the information area of `info_len` bytes goes beside
/// them; `None` if the loader must refuse it.
pub fn placement(
    plan: &Plan,
    ram_size: u64,
    info_len: u32,
) -> Option<(Vec<Range<u32>>, Range<u32>)> {
    let mut spans: Vec<(u64, u64)> = plan
        .segments
        .iter()
        .map(|s| {
            (
                u64::from(s.paddr),
                u64::from(s.paddr) + u64::from(s.mem_size),
            )
        })
        .collect();
    if spans.iter().any(|span| span.1 > ram_size) {
        return None;
    }
    spans.sort_unstable();
    if spans.windows(2).any(|pair| pair[1].0 < pair[0].1) {
        return None;
    }
    let entry = u64::from(plan.entry);
    if !spans
        .iter()
        .any(|&(start, end)| start <= entry && entry < end)
    {
        return None;
    }
    let info = info_area(&spans, u64::from(info_len))?;
    Some((
        spans
            .into_iter()
            .map(|(start, end)| start as u32..end as u32)
            .collect(),
        info,
    ))
}

/// The documented place of the information area: QEMU's address when it is
/// clear of every span, else the lowest 4 KiB boundary from 0x1000 where
/// it is; always ending by [`LOW_MEMORY_END`].
fn info_area(spans: &[(u64, u64)], len: u64) -> Option<Range<u32>> {
    let clear = |base: u64| {
        base + len <= LOW_MEMORY_END
            && spans
                .iter()
                .all(|&(start, end)| start == end || end <= base || start >= base + len)
    };
    std::iter::once(DEFAULT_INFO)
        .chain((INFO_SEARCH_START..LOW_MEMORY_END).step_by(INFO_SEARCH_START as usize))
        .find(|&base| clear(base))
        .map(|base| base as u32..(base + len) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(segments: &[(u32, u32)], entry: u32) -> Plan {
        Plan {
            segments: segments
                .iter()
                .map(|&(paddr, mem_size)| Planned {
                    paddr,
                    file: 0..0,
                    mem_size,
                })
                .collect(),
            entry,
        }
    }

    const INFO_LEN: u32 = 0x600;
    const INFO: Range<u32> = 0x9000..0x9600;

    #[test]
    fn model_accepts_a_kernel_at_one_mib() {
        let placed = placement(&plan(&[(0x10_0000, 0x100)], 0x10_0000), 2 << 20, INFO_LEN);
        let kernel = 0x10_0000..0x10_0100;
        assert_eq!(placed, Some((vec![kernel], INFO)));
    }

    #[test]
    fn model_moves_the_information_area_off_a_segment() {
        let ram = 2 << 20;
        let placed = placement(&plan(&[(0x95ff, 1)], 0x95ff), ram, INFO_LEN);
        assert_eq!(placed.map(|p| p.1), Some(0x1000..0x1600));
        let placed = placement(&plan(&[(0x1000, 0x9_f000)], 0x1000), ram, INFO_LEN);
        assert_eq!(placed, None);
    }

    #[test]
    fn model_refuses_what_the_documentation_refuses() {
        let ram = 2 << 20;
        assert_eq!(
            placement(&plan(&[(0x1f_ff00, 0x101)], 0x1f_ff00), ram, INFO_LEN),
            None
        );
        let touching = plan(&[(0x10_0000, 0x10), (0x10_0010, 0x10)], 0x10_0000);
        assert!(placement(&touching, ram, INFO_LEN).is_some());
        let overlapping = plan(&[(0x10_0000, 0x11), (0x10_0010, 0x10)], 0x10_0000);
        assert_eq!(placement(&overlapping, ram, INFO_LEN), None);
        assert_eq!(
            placement(&plan(&[(0x10_0000, 0x10)], 0x10_0010), ram, INFO_LEN),
            None
        );
    }
}
