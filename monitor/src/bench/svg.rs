//! The bar chart of `nestmon bench --svg FILE`: one group of bars per
//! workload, one bar per backend other than native, the height the
//! backend's ratio to native on a logarithmic axis (1x, 10x, 100x...).
//! A capped run is drawn up to the cap's ratio, hatched and marked ">";
//! a run with no ratio (failed, or no native build) is a labelled gap.
//!
//! Invariants: the document is standalone SVG 1.1 written by hand (no
//! dependency); every text that comes from outside (workload names) is
//! XML-escaped; every coordinate is finite.

use super::report::{Outcome, Report};
use super::workload::Backend;
use std::fmt::Write;

/// Plot geometry, in SVG user units.
const LEFT: f64 = 70.0;
const TOP: f64 = 50.0;
const PLOT_HEIGHT: f64 = 300.0;
const BAR_WIDTH: f64 = 18.0;
const GROUP_GAP: f64 = 26.0;
const BOTTOM: f64 = 110.0;
const RIGHT: f64 = 150.0;
/// Wide enough for the title.
const MIN_WIDTH: f64 = 640.0;

/// The fill of each backend's bars.
fn color(backend: Backend) -> &'static str {
    match backend {
        Backend::Native => "#888888",
        Backend::Bt => "#1f77b4",
        Backend::Kvm => "#ff7f0e",
        Backend::Qemu => "#2ca02c",
    }
}

/// `text` escaped for XML character data and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One bar to draw: its ratio, and whether it stands for a capped run.
struct Bar {
    ratio: f64,
    capped: bool,
}

/// One backend's place in a workload's group.
struct Slot<'a> {
    backend: Backend,
    bar: Option<Bar>,
    outcome: &'a Outcome,
}

/// One workload's bars.
struct Group<'a> {
    name: String,
    slots: Vec<Slot<'a>>,
}

/// The bar of `outcome`, given the native time.
fn bar(outcome: &Outcome, ratio: Option<f64>, native: Option<f64>) -> Option<Bar> {
    match (outcome, ratio, native) {
        (Outcome::Ok { .. }, Some(ratio), _) => Some(Bar {
            ratio,
            capped: false,
        }),
        (Outcome::Capped { cap_seconds }, _, Some(native)) if native > 0.0 => Some(Bar {
            ratio: cap_seconds / native,
            capped: true,
        }),
        _ => None,
    }
}

/// The logarithmic axis: decades from `low` to `high` (powers of ten).
struct Axis {
    low: f64,
    high: f64,
}

impl Axis {
    fn covering(ratios: &[f64]) -> Axis {
        let max = ratios.iter().copied().fold(1.0f64, f64::max);
        let min = ratios.iter().copied().fold(1.0f64, f64::min);
        Axis {
            low: 10f64.powf(min.log10().floor()).min(1.0),
            high: 10f64.powf(max.log10().ceil()).max(10.0),
        }
    }

    /// The y coordinate of `ratio`.
    fn y(&self, ratio: f64) -> f64 {
        let span = self.high.log10() - self.low.log10();
        let at = (ratio.max(self.low).log10() - self.low.log10()) / span;
        TOP + PLOT_HEIGHT * (1.0 - at.clamp(0.0, 1.0))
    }

    fn decades(&self) -> Vec<f64> {
        let (a, b) = (
            self.low.log10().round() as i32,
            self.high.log10().round() as i32,
        );
        (a..=b).map(|e| 10f64.powi(e)).collect()
    }
}

/// The chart of `report`.
pub fn chart(report: &Report) -> String {
    let backends: Vec<Backend> = report
        .backends
        .iter()
        .copied()
        .filter(|b| *b != Backend::Native)
        .collect();
    let groups: Vec<Group<'_>> = report
        .rows
        .iter()
        .map(|row| {
            let native = row.cell(Backend::Native).and_then(|c| c.outcome.seconds());
            let slots = row
                .results
                .iter()
                .filter(|c| c.backend != Backend::Native)
                .map(|c| Slot {
                    backend: c.backend,
                    bar: bar(&c.outcome, c.ratio, native),
                    outcome: &c.outcome,
                })
                .collect();
            Group {
                name: row.workload.clone(),
                slots,
            }
        })
        .collect();
    let ratios: Vec<f64> = groups
        .iter()
        .flat_map(|g| {
            g.slots
                .iter()
                .filter_map(|s| s.bar.as_ref().map(|b| b.ratio))
        })
        .collect();
    let axis = Axis::covering(&ratios);
    let group_width = BAR_WIDTH * backends.len().max(1) as f64 + GROUP_GAP;
    let width = (LEFT + group_width * groups.len().max(1) as f64 + RIGHT).max(MIN_WIDTH);
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let mut svg = String::new();
    header(&mut svg, width, height, report);
    grid(&mut svg, &axis, width);
    for (index, group) in groups.iter().enumerate() {
        let x0 = LEFT + GROUP_GAP / 2.0 + group_width * index as f64;
        draw_group(&mut svg, &axis, x0, group, &backends);
    }
    legend(&mut svg, width, &backends);
    svg.push_str("</svg>\n");
    svg
}

fn header(svg: &mut String, width: f64, height: f64, report: &Report) {
    let _ = write!(
        svg,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{width:.0}\" \
         height=\"{height:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <defs><pattern id=\"capped\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"white\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"black\" stroke-width=\"3\"/>\
         </pattern></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"22\" font-size=\"15\">nestmon bench: time relative to \
         native</text>\n<text x=\"{LEFT}\" y=\"38\" font-size=\"11\">lower is better; \
         logarithmic scale; each run capped at {} s</text>\n",
        report.cap_seconds
    );
}

fn grid(svg: &mut String, axis: &Axis, width: f64) {
    for decade in axis.decades() {
        let y = axis.y(decade);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#cccccc\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}x</text>",
            width - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            decade
        );
    }
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\" \
         stroke-dasharray=\"4 3\"/><text x=\"{:.1}\" y=\"{:.1}\">native</text>",
        axis.y(1.0),
        width - RIGHT,
        axis.y(1.0),
        width - RIGHT + 4.0,
        axis.y(1.0) + 4.0
    );
}

fn draw_group(svg: &mut String, axis: &Axis, x0: f64, group: &Group<'_>, backends: &[Backend]) {
    let base = TOP + PLOT_HEIGHT;
    let name = group.name.as_str();
    for (n, backend) in backends.iter().enumerate() {
        let x = x0 + BAR_WIDTH * n as f64;
        let Some(Slot { bar, outcome, .. }) = group.slots.iter().find(|s| s.backend == *backend)
        else {
            continue;
        };
        match bar {
            Some(bar) => {
                let y = axis.y(bar.ratio);
                let fill = if bar.capped {
                    "url(#capped)".to_string()
                } else {
                    color(*backend).to_string()
                };
                let label = if bar.capped {
                    format!("&gt;{:.1}x (capped)", bar.ratio)
                } else {
                    format!("{:.2}x", bar.ratio)
                };
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" \
                     stroke=\"{}\"><title>{} {}: {label}</title></rect>",
                    BAR_WIDTH - 2.0,
                    (base - y).max(0.5),
                    color(*backend),
                    escape(name),
                    backend.name()
                );
                if bar.capped {
                    let _ = writeln!(
                        svg,
                        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">&gt;</text>",
                        x + (BAR_WIDTH - 2.0) / 2.0,
                        y - 3.0
                    );
                }
            }
            None => {
                let why = match outcome {
                    Outcome::Ok { .. } => "no native time",
                    Outcome::Capped { .. } => "capped",
                    Outcome::Failed { .. } | Outcome::WrongOutput { .. } => "failed",
                };
                let _ = writeln!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" transform=\"rotate(-90 {:.1} \
                     {:.1})\" fill=\"{}\">{}: {why}</text>",
                    x + BAR_WIDTH / 2.0,
                    base - 4.0,
                    x + BAR_WIDTH / 2.0,
                    base - 4.0,
                    color(*backend),
                    backend.name()
                );
            }
        }
    }
    let middle = x0 + BAR_WIDTH * backends.len() as f64 / 2.0;
    let _ = writeln!(
        svg,
        "<text x=\"{middle:.1}\" y=\"{:.1}\" text-anchor=\"end\" transform=\"rotate(-35 \
         {middle:.1} {:.1})\">{}</text>",
        base + 16.0,
        base + 16.0,
        escape(name)
    );
}

fn legend(svg: &mut String, width: f64, backends: &[Backend]) {
    let x = width - RIGHT + 20.0;
    for (n, backend) in backends.iter().enumerate() {
        let y = TOP + 20.0 * n as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            color(*backend),
            x + 18.0,
            y + 10.0,
            backend.name()
        );
    }
    let y = TOP + 20.0 * backends.len() as f64;
    let _ = writeln!(
        svg,
        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"12\" height=\"12\" fill=\"url(#capped)\" \
         stroke=\"black\"/><text x=\"{:.1}\" y=\"{:.1}\">capped</text>",
        x + 18.0,
        y + 10.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Row;
    use crate::bench::workload::{Check, Kind, Workload};

    fn report() -> Report {
        let workload = Workload {
            name: "a<b>&c".into(),
            kind: Kind::Custom,
            kernel: "/k".into(),
            initrd: None,
            append: None,
            native: Some("/n".into()),
            check: Check::SameAsNative,
        };
        let row = Row::new(
            &workload,
            vec![
                (Backend::Native, Outcome::Ok { seconds: 0.5 }),
                (Backend::Bt, Outcome::Ok { seconds: 1.0 }),
                (Backend::Kvm, Outcome::Capped { cap_seconds: 50.0 }),
                (Backend::Qemu, Outcome::Failed { why: "x".into() }),
            ],
        );
        Report::new(Backend::ALL.to_vec(), 1, 50.0, vec![row])
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(escape("a<b>&\"c'\n"), "a&lt;b&gt;&amp;&quot;c&apos; ");
        let svg = chart(&report());
        assert!(svg.contains("a&lt;b&gt;&amp;c") && !svg.contains("a<b>"));
    }

    #[test]
    fn a_bar_per_ratio_a_hatched_bar_for_a_capped_run_and_a_label_for_a_failure() {
        let svg = chart(&report());
        assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(">a&lt;b&gt;&amp;c bt: 2.00x</title>"), "{svg}");
        assert!(svg.contains("kvm: &gt;100.0x (capped)"), "{svg}");
        assert!(svg.contains("qemu: failed"), "{svg}");
        // Decades up to the capped ratio (100x).
        assert!(svg.contains(">100x</text>"), "{svg}");
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn the_axis_covers_every_ratio_in_decades() {
        let axis = Axis::covering(&[0.8, 37.0]);
        assert_eq!((axis.low, axis.high), (0.1, 100.0));
        assert_eq!(axis.decades().len(), 4);
        assert!(axis.y(100.0) < axis.y(1.0));
        assert_eq!(axis.y(1000.0), TOP);
    }
}
