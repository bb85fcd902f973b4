//! The server's memory, from /proc.

/// The proportional set size of a process, in KiB (from `smaps_rollup`), or its RSS.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find(|l| l.starts_with("Pss:"))
        .or_else(|| rollup.lines().find(|l| l.starts_with("Rss:")))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}
