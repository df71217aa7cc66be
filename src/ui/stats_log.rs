//! `studio --stats FILE`: once a second, how long the UI thread worked per frame and what the
//! process holds, as CSV, so a soak of the real window (scripts/soak-studio.sh) can report
//! frame times and memory at its start and end without a profiler.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The CSV header: seconds since the window opened, frames in the second, the UI thread's
/// work per frame (median, 95th percentile, largest) and the memory figures of the status bar.
pub const HEADER: &str = "seconds,frames,work_p50_ms,work_p95_ms,work_max_ms,resident_bytes,cache_bytes";

pub struct StatsLog {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    opened: Instant,
    since: Instant,
    work_ms: Vec<f64>,
}

impl StatsLog {
    /// Creates `path`; an existing file is refused (it is never overwritten).
    pub fn create(path: &Path) -> Result<Self, String> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| format!("{}: cannot create the stats log ({e})", path.display()))?;
        let mut file = std::io::BufWriter::new(file);
        writeln!(file, "{HEADER}").map_err(|e| format!("{}: {e}", path.display()))?;
        let now = Instant::now();
        Ok(Self { path: path.to_path_buf(), file, opened: now, since: now, work_ms: Vec::new() })
    }

    /// Counts one frame that took the UI thread `work_ms`; writes a line once a second.
    /// A write that fails is said once (returned) and the log stops.
    pub fn frame(&mut self, work_ms: f64, resident: Option<usize>, caches: usize) -> Result<(), String> {
        self.work_ms.push(work_ms);
        let now = Instant::now();
        if now.duration_since(self.since).as_secs_f64() < 1.0 {
            return Ok(());
        }
        let mut w = std::mem::take(&mut self.work_ms);
        w.sort_by(f64::total_cmp);
        let at = |q: f64| w[((w.len() - 1) as f64 * q).round() as usize];
        let line = format!(
            "{:.1},{},{:.2},{:.2},{:.2},{},{caches}",
            now.duration_since(self.opened).as_secs_f64(),
            w.len(),
            at(0.5),
            at(0.95),
            at(1.0),
            resident.map(|r| r.to_string()).unwrap_or_default(),
        );
        self.since = now;
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.flush())
            .map_err(|e| format!("{}: cannot write the stats log ({e}); it stops here", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_line_a_second_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.csv");
        let mut log = StatsLog::create(&path).unwrap();
        log.since -= std::time::Duration::from_secs(2);
        for ms in [1.0, 2.0, 3.0, 40.0] {
            log.frame(ms, Some(123), 45).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], HEADER);
        // The first frame closes the second: one frame of 1 ms; the rest wait for the next.
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(&fields[1..], ["1", "1.00", "1.00", "1.00", "123", "45"]);
        assert_eq!(lines.len(), 2);
        let err = StatsLog::create(&path).err().expect("an existing log is refused");
        assert!(err.contains("stats.csv"), "{err}");
    }
}
