//! Reading `nestmon run --stats` output in tests.

/// The value of the `--stats` counter `key` in a run's standard error
/// (the last number on the line that starts with it); panics if there is
/// none.
pub fn stat(stderr: &str, key: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("--stats lacks {key:?}:\n{stderr}"))
}

/// Asserts that the `--stats` counter `key` in `stderr` is below `limit`;
/// the message names `what` the limit stands for and shows the statistics.
// Not every test binary that includes this file uses it.
#[allow(dead_code)]
pub fn assert_stat_below(stderr: &str, key: &str, limit: u64, what: &str) {
    let n = stat(stderr, key);
    assert!(
        n < limit,
        "{key}: {n}, not below {limit} ({what}):\n{stderr}"
    );
}
