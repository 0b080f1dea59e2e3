//! The results of `nestmon bench`: one outcome per workload and backend,
//! the ratios to native, a recommended execution mode per workload, and
//! their table and JSON forms.
//!
//! Invariants: a ratio exists only between two runs that completed with
//! the right output (the backend's and the native one); a capped or failed
//! run has no time; the recommendation only names a nestmon backend (bt or
//! kvm) whose run completed with the right output.

use super::workload::{Backend, Kind, Workload};
use serde::Serialize;
use std::collections::BTreeMap;

/// How one workload fared under one backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Completed with the right output; the best wall time of its runs.
    Ok {
        /// Seconds.
        seconds: f64,
    },
    /// Still running at the cap, and killed.
    Capped {
        /// The cap, in seconds.
        cap_seconds: f64,
    },
    /// Ended another way (exit status, a stop).
    Failed {
        /// Why.
        why: String,
    },
    /// Completed, but its output differs from the reference.
    WrongOutput {
        /// The first difference.
        why: String,
    },
}

impl Outcome {
    /// The time of a correct run.
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Outcome::Ok { seconds } => Some(*seconds),
            _ => None,
        }
    }
}

/// One backend's result for a workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cell {
    /// The backend.
    pub backend: Backend,
    /// How it went.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Its time over the native time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

/// The execution mode recommended for a workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// `bt` or `kvm`, if either ran it correctly.
    pub backend: Option<Backend>,
    /// The `monitor.virtual_exec` value for it.
    pub virtual_exec: Option<&'static str>,
    /// Why, in words.
    pub why: String,
}

/// One workload's row.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The workload.
    pub workload: String,
    /// What it exercises.
    pub kind: Kind,
    /// One cell per backend that ran it.
    pub results: Vec<Cell>,
    /// The recommended execution mode.
    pub recommendation: Recommendation,
}

/// Everything `nestmon bench` measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The backends, in column order.
    pub backends: Vec<Backend>,
    /// Runs per backend and workload (the best time is kept).
    pub runs: u32,
    /// The time cap of one run, in seconds.
    pub cap_seconds: f64,
    /// One row per workload.
    pub rows: Vec<Row>,
    /// Per backend, the geometric mean of its ratios to native (over the
    /// workloads where it has one).
    pub geomean: BTreeMap<Backend, f64>,
}

impl Row {
    /// The row of `workload` from its backends' outcomes (native first,
    /// if it ran).
    pub fn new(workload: &Workload, outcomes: Vec<(Backend, Outcome)>) -> Row {
        let native = outcomes
            .iter()
            .find(|(b, _)| *b == Backend::Native)
            .and_then(|(_, o)| o.seconds());
        let results: Vec<Cell> = outcomes
            .into_iter()
            .map(|(backend, outcome)| Cell {
                ratio: match (backend, outcome.seconds(), native) {
                    (Backend::Native, _, _) => None,
                    (_, Some(s), Some(n)) if n > 0.0 => Some(s / n),
                    _ => None,
                },
                backend,
                outcome,
            })
            .collect();
        let recommendation = recommend(&results);
        Row {
            workload: workload.name.clone(),
            kind: workload.kind,
            results,
            recommendation,
        }
    }

    /// The cell of `backend`, if it ran.
    pub fn cell(&self, backend: Backend) -> Option<&Cell> {
        self.results.iter().find(|c| c.backend == backend)
    }
}

/// The faster of bt and kvm among correct runs.
fn recommend(results: &[Cell]) -> Recommendation {
    let timed = |b: Backend| {
        results
            .iter()
            .find(|c| c.backend == b)
            .and_then(|c| c.outcome.seconds())
    };
    let choice = match (timed(Backend::Bt), timed(Backend::Kvm)) {
        (Some(bt), Some(kvm)) if kvm < bt => Some((
            Backend::Kvm,
            format!(
                "hardware execution was {:.2}x faster than binary translation",
                bt / kvm
            ),
        )),
        (Some(bt), Some(kvm)) => Some((
            Backend::Bt,
            format!(
                "binary translation was {:.2}x faster than hardware execution",
                kvm / bt
            ),
        )),
        (Some(_), None) => Some((
            Backend::Bt,
            "only binary translation ran it correctly within the cap".to_string(),
        )),
        (None, Some(_)) => Some((
            Backend::Kvm,
            "only hardware execution ran it correctly within the cap".to_string(),
        )),
        (None, None) => None,
    };
    match choice {
        Some((backend, why)) => Recommendation {
            backend: Some(backend),
            virtual_exec: Some(if backend == Backend::Kvm {
                "hardware"
            } else {
                "software"
            }),
            why,
        },
        None => Recommendation {
            backend: None,
            virtual_exec: None,
            why: "no nestmon backend ran it correctly within the cap".to_string(),
        },
    }
}

impl Report {
    /// The report of `rows`.
    pub fn new(backends: Vec<Backend>, runs: u32, cap_seconds: f64, rows: Vec<Row>) -> Report {
        let geomean = backends
            .iter()
            .filter(|b| **b != Backend::Native)
            .filter_map(|&b| {
                let ratios: Vec<f64> = rows
                    .iter()
                    .filter_map(|r| r.cell(b).and_then(|c| c.ratio))
                    .collect();
                (!ratios.is_empty()).then(|| {
                    let mean_log = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
                    (b, mean_log.exp())
                })
            })
            .collect();
        Report {
            backends,
            runs,
            cap_seconds,
            rows,
            geomean,
        }
    }

    /// The JSON form.
    pub fn json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self).map(|s| s + "\n")
    }

    /// The table: one row per workload, a column per backend (ratio to
    /// native and time), the recommendation last; a geometric-mean row.
    pub fn table(&self) -> String {
        let mut header = vec!["workload".to_string()];
        header.extend(self.backends.iter().map(|b| b.name().to_string()));
        header.push("recommended".to_string());
        let mut lines = vec![header];
        for row in &self.rows {
            let mut line = vec![row.workload.clone()];
            line.extend(self.backends.iter().map(|&b| cell_text(row.cell(b))));
            line.push(match row.recommendation.backend {
                Some(b) => b.name().to_string(),
                None => "-".to_string(),
            });
            lines.push(line);
        }
        let mut mean = vec!["geomean".to_string()];
        mean.extend(self.backends.iter().map(|b| {
            self.geomean
                .get(b)
                .map_or(String::new(), |g| format!("{g:.2}x"))
        }));
        mean.push(String::new());
        lines.push(mean);
        let mut text = format!(
            "nestmon bench: ratio to native (wall time, best of {} run{}); each run capped at {} s\n",
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            self.cap_seconds
        );
        text.push_str(&aligned(&lines));
        text.push_str(&self.footnotes());
        text
    }

    /// What the table's marks mean, and each recommendation's reason.
    fn footnotes(&self) -> String {
        let mut notes = String::from(
            "capped: still running at the cap (killed); FAIL: wrong exit status or output; \
             -: no such build or backend\n",
        );
        for row in &self.rows {
            for cell in &row.results {
                if let Outcome::Failed { why } | Outcome::WrongOutput { why } = &cell.outcome {
                    notes.push_str(&format!(
                        "  {} under {}: {}\n",
                        row.workload,
                        cell.backend.name(),
                        why
                    ));
                }
            }
        }
        notes.push_str("recommended execution mode (monitor.virtual_exec):\n");
        for row in &self.rows {
            let mode = row
                .recommendation
                .virtual_exec
                .map_or(String::new(), |m| format!(" = \"{m}\""));
            notes.push_str(&format!(
                "  {}{}: {}\n",
                row.workload, mode, row.recommendation.why
            ));
        }
        notes
    }
}

/// A cell: "1.27x 0.523s", "0.523s" without a native time, "capped",
/// "FAIL", "-".
fn cell_text(cell: Option<&Cell>) -> String {
    let Some(cell) = cell else {
        return "-".to_string();
    };
    match (&cell.outcome, cell.ratio) {
        (Outcome::Ok { seconds }, Some(ratio)) => format!("{ratio:.2}x {seconds:.3}s"),
        (Outcome::Ok { seconds }, None) => format!("{seconds:.3}s"),
        (Outcome::Capped { cap_seconds }, _) => format!("capped >{cap_seconds}s"),
        (Outcome::Failed { .. } | Outcome::WrongOutput { .. }, _) => "FAIL".to_string(),
    }
}

/// `lines` as columns two spaces apart, each as wide as its widest cell.
fn aligned(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter_map(|l| l.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::workload::Check;
    use std::path::PathBuf;

    fn workload(name: &str) -> Workload {
        Workload {
            name: name.into(),
            kind: Kind::Compute,
            kernel: PathBuf::from("/k"),
            initrd: None,
            append: None,
            native: Some(PathBuf::from("/n")),
            check: Check::SameAsNative,
        }
    }

    fn ok(seconds: f64) -> Outcome {
        Outcome::Ok { seconds }
    }

    fn report() -> Report {
        let rows = vec![
            Row::new(
                &workload("fast"),
                vec![
                    (Backend::Native, ok(1.0)),
                    (Backend::Bt, ok(2.0)),
                    (Backend::Kvm, Outcome::Capped { cap_seconds: 5.0 }),
                ],
            ),
            Row::new(
                &workload("slow"),
                vec![
                    (Backend::Native, ok(2.0)),
                    (Backend::Bt, ok(16.0)),
                    (Backend::Kvm, ok(4.0)),
                ],
            ),
        ];
        Report::new(
            vec![Backend::Native, Backend::Bt, Backend::Kvm],
            1,
            5.0,
            rows,
        )
    }

    #[test]
    fn ratios_are_to_native_and_the_geomean_is_over_the_ratios() {
        let r = report();
        assert_eq!(r.rows[0].cell(Backend::Bt).unwrap().ratio, Some(2.0));
        assert_eq!(r.rows[0].cell(Backend::Kvm).unwrap().ratio, None);
        let bt = r.geomean[&Backend::Bt];
        assert!((bt - 4.0).abs() < 1e-9, "sqrt(2 * 8) = 4, got {bt}");
    }

    #[test]
    fn the_recommendation_is_the_faster_correct_nestmon_backend() {
        let r = report();
        assert_eq!(r.rows[0].recommendation.backend, Some(Backend::Bt));
        assert_eq!(r.rows[1].recommendation.backend, Some(Backend::Kvm));
        assert_eq!(r.rows[1].recommendation.virtual_exec, Some("hardware"));
        let none = Row::new(
            &workload("x"),
            vec![(Backend::Bt, Outcome::Failed { why: "boom".into() })],
        );
        assert_eq!(none.recommendation.backend, None);
    }

    #[test]
    fn the_table_has_a_column_per_backend_and_marks_capped_runs() {
        let table = report().table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("workload  native"), "{table}");
        assert!(lines[1].ends_with("recommended"), "{table}");
        assert!(lines[2].contains("2.00x 2.000s") && lines[2].contains("capped >5s"));
        assert!(lines[4].starts_with("geomean"), "{table}");
        assert!(table.contains("slow = \"hardware\": hardware execution was 4.00x faster"));
    }

    #[test]
    fn the_json_names_every_outcome() {
        let json: serde_json::Value = serde_json::from_str(&report().json().unwrap()).unwrap();
        let kvm = &json["rows"][0]["results"][2];
        assert_eq!(kvm["backend"], "kvm");
        assert_eq!(kvm["status"], "capped");
        assert_eq!(json["rows"][1]["results"][1]["ratio"], 8.0);
        assert_eq!(json["cap_seconds"], 5.0);
        assert!((json["geomean"]["bt"].as_f64().unwrap() - 4.0).abs() < 1e-9);
    }
}
