//! The process's own memory: what it holds (resident set, for the status bar) and giving
//! freed memory back to the OS after a large release.
//!
//! glibc keeps freed heap pages for reuse, so after a dataset switch drops a gigabyte of key
//! banks the resident size stays where it was; the studio's memory then only ever grew
//! (1.6 GB after 32 switches back to the same run). Trimming after each large release hands
//! those pages back.

/// Bytes resident in memory (Linux: /proc/self/statm); None elsewhere.
pub fn resident_bytes() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf with a valid name only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * usize::try_from(page).ok()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// Gives the heap's free pages back to the OS (glibc's malloc_trim); a no-op elsewhere.
pub fn give_back_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_memory_goes_back_to_the_os() {
        let Some(start) = super::resident_bytes() else { return };
        assert!(start > 1 << 20, "a running test holds more than a MB: {start}");
        // 400 MB in small blocks (below the mmap threshold, so they live on the heap), touched.
        let blocks: Vec<Vec<u8>> = (0..3200).map(|i| vec![i as u8 | 1; 125_000]).collect();
        let full = super::resident_bytes().unwrap();
        assert!(full > start + 300_000_000, "{start} → {full}");
        drop(blocks);
        super::give_back_freed();
        let after = super::resident_bytes().unwrap();
        assert!(after < full - 300_000_000, "trim gave back too little: {full} → {after}");
    }
}
