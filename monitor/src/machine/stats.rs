//! `--stats` and `--stats-json`: the vCPU's counters, totals and rates
//! over the run's elapsed time, and the bus's unclaimed ports.
//!
//! Invariant: a run the guest reset is reported whole: the counters and
//! unclaimed-port counts of the machines a reset ended ([`Totals`]) are
//! added to the last machine's, the elapsed time is the run's, and a
//! `machine: resets` counter says how many machines came before.

use super::board::Board;
use crate::console;
use crate::vcpu::bt::GUEST_INSNS_ESTIMATE;
use crate::vcpu::Vcpu;
use std::time::Duration;

/// Everything `--stats` reports, as text or JSON.
#[derive(Debug)]
pub struct StatsReport {
    /// Wall-clock seconds the guest ran (from the first entry to the end).
    pub elapsed_seconds: f64,
    /// Every counter of the vCPU, then the backdoor's, in print order.
    pub counters: Vec<(String, u64)>,
    /// The sum of the `exits: …` counters.
    pub exits_total: u64,
    /// `exits_total` per second of `elapsed_seconds`.
    pub exits_per_second: f64,
    /// Guest instructions executed per second of `elapsed_seconds`, from
    /// the vCPU's estimate (when it gives one).
    pub guest_insns_per_second: Option<f64>,
    /// Further lines the vCPU reports.
    pub notes: Vec<String>,
    /// Ports no device claims that the guest accessed through the monitor:
    /// (port, reads, writes).
    pub unclaimed_ports: Vec<(u16, u64, u64)>,
}

/// The counters of the machines a reset ended, summed.
#[derive(Debug, Default)]
pub struct Totals {
    /// Machines that ended in a reset.
    resets: u64,
    /// Counters by name, in the order first seen.
    counters: Vec<(String, u64)>,
    /// Unclaimed-port counts: (port, reads, writes).
    unclaimed_ports: Vec<(u16, u64, u64)>,
}

impl Totals {
    /// Adds the report of a machine a reset ended.
    pub fn add(&mut self, report: &StatsReport) {
        self.resets += 1;
        for (name, value) in &report.counters {
            add_counter(&mut self.counters, name, *value);
        }
        for &(port, reads, writes) in &report.unclaimed_ports {
            add_port(&mut self.unclaimed_ports, port, reads, writes);
        }
    }
}

fn add_counter(counters: &mut Vec<(String, u64)>, name: &str, value: u64) {
    match counters.iter_mut().find(|(n, _)| n == name) {
        Some((_, total)) => *total = total.saturating_add(value),
        None => counters.push((name.to_string(), value)),
    }
}

fn add_port(ports: &mut Vec<(u16, u64, u64)>, port: u16, reads: u64, writes: u64) {
    match ports.iter_mut().find(|(p, _, _)| *p == port) {
        Some((_, r, w)) => {
            *r = r.saturating_add(reads);
            *w = w.saturating_add(writes);
        }
        None => ports.push((port, reads, writes)),
    }
}

impl StatsReport {
    /// Adds the machines a reset ended to this report of the last one,
    /// with a `machine: resets` counter when there were any; totals and
    /// rates follow.
    pub fn include(&mut self, earlier: &Totals) {
        if earlier.resets == 0 {
            return;
        }
        for (name, value) in &earlier.counters {
            add_counter(&mut self.counters, name, *value);
        }
        self.counters
            .push(("machine: resets".to_string(), earlier.resets));
        for &(port, reads, writes) in &earlier.unclaimed_ports {
            add_port(&mut self.unclaimed_ports, port, reads, writes);
        }
        self.unclaimed_ports.sort_by_key(|&(port, _, _)| port);
        self.exits_total = self
            .counters
            .iter()
            .filter(|(name, _)| name.starts_with("exits: "))
            .map(|(_, value)| value)
            .sum();
        let seconds = self.elapsed_seconds;
        let rate = |count: u64| {
            if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            }
        };
        self.exits_per_second = rate(self.exits_total);
        if self.guest_insns_per_second.is_some() {
            let insns = self
                .counters
                .iter()
                .find(|(name, _)| *name == GUEST_INSNS_ESTIMATE)
                .map_or(0, |(_, value)| *value);
            self.guest_insns_per_second = Some(rate(insns));
        }
    }

    /// The report of `vcpu` and `board` after a run of `elapsed`.
    pub fn new(vcpu: &dyn Vcpu, board: &Board, elapsed: Duration) -> StatsReport {
        let stats = vcpu.stats();
        let exits_total = stats
            .counters
            .iter()
            .filter(|(name, _)| name.starts_with("exits: "))
            .map(|(_, value)| value)
            .sum();
        let seconds = elapsed.as_secs_f64();
        let per_second = |count: u64| {
            if seconds > 0.0 {
                count as f64 / seconds
            } else {
                0.0
            }
        };
        let guest_insns = stats
            .counters
            .iter()
            .find(|(name, _)| *name == GUEST_INSNS_ESTIMATE)
            .map(|(_, value)| *value);
        // The backdoor's traffic after the vCPU's counters ("backdoor:
        // low-bandwidth calls", "backdoor: TCLO polls", ...).
        let backdoor = board.backdoor.counters();
        let backdoor_counters = backdoor
            .named()
            .into_iter()
            .map(|(name, value)| (format!("backdoor: {name}"), value));
        StatsReport {
            elapsed_seconds: seconds,
            counters: stats
                .counters
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .chain(backdoor_counters)
                .collect(),
            exits_total,
            exits_per_second: per_second(exits_total),
            guest_insns_per_second: guest_insns.map(per_second),
            notes: stats.notes,
            unclaimed_ports: board.bus.unclaimed_counts().collect(),
        }
    }

    /// The text `--stats` prints.
    pub fn text(&self) -> String {
        let mut out = String::from("nestmon statistics:\n");
        let line = |name: &str, value: String| format!("  {name:<28} {value}\n");
        out.push_str(&line("elapsed (s)", format!("{:.3}", self.elapsed_seconds)));
        for (name, value) in &self.counters {
            out.push_str(&line(name, value.to_string()));
        }
        out.push_str(&line("exits: total", self.exits_total.to_string()));
        out.push_str(&line(
            "exits per second",
            format!("{:.0}", self.exits_per_second),
        ));
        if let Some(rate) = self.guest_insns_per_second {
            out.push_str(&line(
                "guest instructions per second (estimate)",
                format!("{rate:.0}"),
            ));
        }
        for note in &self.notes {
            out.push_str(&format!("  {note}\n"));
        }
        for (port, reads, writes) in &self.unclaimed_ports {
            out.push_str(&format!(
                "  unclaimed port {port:#06x}: {reads} reads, {writes} writes\n"
            ));
        }
        out
    }

    /// The JSON `--stats-json` writes: counters as an object keyed by
    /// their names, unclaimed ports as objects.
    pub fn json(&self) -> String {
        let counters: serde_json::Map<String, serde_json::Value> = self
            .counters
            .iter()
            .map(|(name, value)| (name.clone(), (*value).into()))
            .collect();
        let ports: Vec<serde_json::Value> = self
            .unclaimed_ports
            .iter()
            .map(|(port, reads, writes)| {
                serde_json::json!({ "port": port, "reads": reads, "writes": writes })
            })
            .collect();
        let value = serde_json::json!({
            "elapsed_seconds": self.elapsed_seconds,
            "counters": counters,
            "exits_total": self.exits_total,
            "exits_per_second": self.exits_per_second,
            "guest_instructions_per_second_estimate": self.guest_insns_per_second,
            "notes": self.notes,
            "unclaimed_ports": ports,
        });
        // Plain data: serialization cannot fail.
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    }
}

/// Prints the report on stderr (best effort: stderr may be gone).
pub fn print_stats(report: &StatsReport) {
    console::diagnostic_text(&report.text());
}
