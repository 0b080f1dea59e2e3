//! `--stats`: the vCPU's counters and the bus's unclaimed ports, on stderr.

use super::board::Board;
use crate::console;
use crate::vcpu::Vcpu;

/// Prints the counters (best effort: stderr may be gone).
pub fn print_stats(vcpu: &dyn Vcpu, board: &Board) {
    let mut out = String::from("nestmon statistics:\n");
    let stats = vcpu.stats();
    for (name, value) in stats.counters {
        out.push_str(&format!("  {name:<28} {value}\n"));
    }
    for note in stats.notes {
        out.push_str(&format!("  {note}\n"));
    }
    for (port, reads, writes) in board.bus.unclaimed_counts() {
        out.push_str(&format!(
            "  unclaimed port {port:#06x}: {reads} reads, {writes} writes\n"
        ));
    }
    console::diagnostic_text(&out);
}
