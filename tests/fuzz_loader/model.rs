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

/// The ranges a plan occupies if it fits in `ram_size` bytes clear of the
/// information area, in ascending order; `None` if the loader must refuse it.
pub fn placement(plan: &Plan, ram_size: u64, info: &Range<u32>) -> Option<Vec<Range<u32>>> {
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
    let overlaps_info =
        |&(start, end): &(u64, u64)| start < u64::from(info.end) && end > u64::from(info.start);
    if spans
        .iter()
        .any(|span| span.1 > ram_size || overlaps_info(span))
    {
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
    Some(
        spans
            .into_iter()
            .map(|(start, end)| start as u32..end as u32)
            .collect(),
    )
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

    const INFO: Range<u32> = 0x9000..0x9600;

    #[test]
    fn model_accepts_a_kernel_at_one_mib() {
        let placed = placement(&plan(&[(0x10_0000, 0x100)], 0x10_0000), 2 << 20, &INFO);
        let kernel = 0x10_0000..0x10_0100;
        assert_eq!(placed, Some(vec![kernel]));
    }

    #[test]
    fn model_refuses_what_the_documentation_refuses() {
        let ram = 2 << 20;
        assert_eq!(
            placement(&plan(&[(0x1f_ff00, 0x101)], 0x1f_ff00), ram, &INFO),
            None
        );
        assert_eq!(placement(&plan(&[(0x95ff, 1)], 0x95ff), ram, &INFO), None);
        let touching = plan(&[(0x10_0000, 0x10), (0x10_0010, 0x10)], 0x10_0000);
        assert!(placement(&touching, ram, &INFO).is_some());
        let overlapping = plan(&[(0x10_0000, 0x11), (0x10_0010, 0x10)], 0x10_0000);
        assert_eq!(placement(&overlapping, ram, &INFO), None);
        assert_eq!(
            placement(&plan(&[(0x10_0000, 0x10)], 0x10_0010), ram, &INFO),
            None
        );
    }
}
