//! Every test guest in guests/ runs under `nestmon run --kernel NAME.elf`
//! and must print exactly guests/expected/NAME.out (lines starting with '#'
//! are informational and ignored) and exit with status 0, which is how
//! nestmon reports the guest's `rt_exit(0)` (QEMU exits with 1 for it,
//! (0 << 1) | 1, the isa-debug-exit convention).  Guests without an
//! expected file (backdoor, which only works under nestmon) must still
//! exit with status 0.
//!
//! Two oracle tests check the expected files themselves, independent of
//! nestmon: `native_oracle` (every native-capable guest run as a static
//! i386 Linux program) and `qemu_oracle` (every guest under
//! qemu-system-i386 TCG; skipped when QEMU is not installed).

#[path = "guestkit/mod.rs"]
mod guestkit;

use guestkit::*;

#[test]
fn guests_under_nestmon() {
    let dir = guest_dir();
    let pending = pending_guests();
    let mut failures = Vec::new();
    for (name, _, _) in guests() {
        if pending.contains(&name) {
            eprintln!("pending {name}: not yet required under nestmon (NESTMON_PENDING)");
            continue;
        }
        let elf = dir.join(format!("{name}.elf"));
        let r = run_nestmon(&elf);
        let got = filter(&r.stdout);
        if r.code != Some(0) {
            failures.push(format!(
                "{name}: want exit status 0, {}\n{}",
                describe(&r),
                got
            ));
            continue;
        }
        if let Some(want) = expected(&name) {
            if got != want {
                failures.push(format!(
                    "{name}: output differs from expected/{name}.out: {}",
                    first_diff(&want, &got)
                ));
            }
        }
        eprintln!("ok {name} ({:.2?})", r.elapsed);
    }
    assert!(
        failures.is_empty(),
        "{} guest(s) failed under nestmon:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A pending guest that passes under nestmon must leave the pending list,
/// so that it is required from then on.
#[test]
fn pending_guests_are_still_pending() {
    let dir = guest_dir();
    let passing: Vec<String> = pending_guests()
        .into_iter()
        .filter(|name| {
            let r = run_nestmon(&dir.join(format!("{name}.elf")));
            r.code == Some(0) && expected(name).is_some_and(|want| want == filter(&r.stdout))
        })
        .collect();
    assert!(
        passing.is_empty(),
        "these guests pass under nestmon now: remove them from NESTMON_PENDING in guests/Makefile: {passing:?}"
    );
}

#[test]
fn native_oracle() {
    let dir = guest_dir();
    let mut failures = Vec::new();
    for (name, native, _) in guests() {
        if !native {
            continue;
        }
        let r = run_native(&dir.join(format!("{name}.native")));
        let got = filter(&r.stdout);
        match expected(&name) {
            _ if r.code != Some(0) => failures.push(format!("{name}: native {}", describe(&r))),
            Some(want) if want != got => failures.push(format!(
                "{name}: native output: {}",
                first_diff(&want, &got)
            )),
            None => failures.push(format!("{name}: no expected/{name}.out")),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn qemu_oracle() {
    if qemu().is_none() {
        eprintln!("qemu-system-i386 not installed: skipping");
        return;
    }
    let dir = guest_dir();
    let mut failures = Vec::new();
    for (name, _, qemu_ok) in guests() {
        if !qemu_ok {
            continue;
        }
        let r = run_qemu(&dir.join(format!("{name}.elf")));
        let got = filter(&r.stdout);
        match expected(&name) {
            _ if r.code != Some(1) => failures.push(format!("{name}: qemu {}", describe(&r))),
            Some(want) if want != got => {
                failures.push(format!("{name}: qemu output: {}", first_diff(&want, &got)))
            }
            None => failures.push(format!("{name}: no expected/{name}.out")),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
