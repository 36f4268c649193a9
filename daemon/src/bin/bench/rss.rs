//! A process's memory from /proc (Linux).

/// A `kB` line of /proc/PID/status (`VmRSS`, `VmHWM`, ...) in megabytes (MiB).
pub fn status_mb(pid: u32, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(&format!("{key}:")))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Resets VmHWM (peak resident) to the current resident size: `5` to /proc/PID/clear_refs.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok()
}
