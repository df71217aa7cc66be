//! The process's own memory: one budget for every worker's caches ([`Pool`]), what the
//! process holds (resident set, for the status bar), and giving freed memory back to the OS
//! after a large release.
//!
//! Each worker (the main run's, and the secondary ones behind the compare column, the seed
//! grid, the zoo and calibration) keeps its own key banks, pixel groups, masks and fits. They
//! draw on one [`Pool`] the user sets: a secondary worker gets an eighth of it, the main run
//! the rest. Every worker reports what it holds to its [`Meter`] and shrinks to its share
//! within a second of the budget changing, busy or idle.
//!
//! glibc keeps freed heap pages for reuse, so after a dataset switch drops a gigabyte of key
//! banks the resident size stays where it was; the studio's memory then only ever grew
//! (1.6 GB after 32 switches back to the same run). Trimming after each large release hands
//! those pages back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

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

/// The budget every worker's caches share, and each worker's report of what it holds.
pub struct Pool {
    budget: AtomicUsize,
    members: Mutex<Vec<Weak<Meter>>>,
}

/// What one worker holds, as it last reported (bytes).
#[derive(Debug, Default)]
pub struct Meter {
    /// A secondary worker (compare column, seed grid, zoo, calibration): a fixed small share.
    pub secondary: bool,
    data: AtomicUsize,
    caches: AtomicUsize,
}

/// Every live worker of a pool together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Training sets (each worker loads its own copy).
    pub data: usize,
    /// Key banks, pixel groups, masks, fits, tables: what the budget bounds.
    pub caches: usize,
    pub workers: usize,
    pub secondary: usize,
}

/// The default budget for the caches of every worker together: 2 GiB, which holds every P of
/// a bundled 2000-image set in the main run beside three secondary workers.
pub const DEFAULT_BUDGET: usize = 2 << 30;

/// The smallest budget that can be set (256 MiB): below it the main run recuts its keys on
/// every call.
pub const MIN_BUDGET: usize = 256 << 20;

impl Meter {
    /// Records what the worker holds now.
    pub fn record(&self, data: usize, caches: usize) {
        self.data.store(data, Ordering::Relaxed);
        self.caches.store(caches, Ordering::Relaxed);
    }

    pub fn data(&self) -> usize {
        self.data.load(Ordering::Relaxed)
    }

    pub fn caches(&self) -> usize {
        self.caches.load(Ordering::Relaxed)
    }
}

impl Pool {
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(Self { budget: AtomicUsize::new(budget.max(MIN_BUDGET)), members: Mutex::new(Vec::new()) })
    }

    /// The pool the studio's workers share (and the CLI's, which has one worker).
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<Pool>> = OnceLock::new();
        GLOBAL.get_or_init(|| Pool::new(DEFAULT_BUDGET)).clone()
    }

    /// Sets the budget (at least [`MIN_BUDGET`]); every worker shrinks to its new share
    /// within a second.
    pub fn set_budget(&self, bytes: usize) {
        self.budget.store(bytes.max(MIN_BUDGET), Ordering::Relaxed);
    }

    pub fn budget(&self) -> usize {
        self.budget.load(Ordering::Relaxed)
    }

    /// A new worker's meter; it leaves the pool when the last holder drops it.
    pub fn join(&self, secondary: bool) -> Arc<Meter> {
        let meter = Arc::new(Meter { secondary, ..Meter::default() });
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(&meter));
        meter
    }

    fn live(&self) -> Vec<Arc<Meter>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect()
    }

    /// The bytes `meter`'s worker may keep: a secondary worker an eighth of the budget, the
    /// main workers an equal part of what the secondary ones leave.
    pub fn share(&self, meter: &Meter) -> usize {
        let budget = self.budget();
        let live = self.live();
        let secondary = live.iter().filter(|m| m.secondary).count();
        let main = (live.len() - secondary).max(1);
        if meter.secondary { budget / 8 } else { budget.saturating_sub(secondary * (budget / 8)) / main }
    }

    /// What every live worker holds, added up.
    pub fn totals(&self) -> Totals {
        self.live().iter().fold(Totals::default(), |t, m| Totals {
            data: t.data + m.data(),
            caches: t.caches + m.caches(),
            workers: t.workers + 1,
            secondary: t.secondary + usize::from(m.secondary),
        })
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_one_budget_and_follow_who_is_alive() {
        let pool = Pool::new(1 << 30);
        let main = pool.join(false);
        assert_eq!(pool.share(&main), 1 << 30, "alone, the main run has it all");
        let a = pool.join(true);
        let b = pool.join(true);
        assert_eq!(pool.share(&a), 1 << 27);
        assert_eq!(pool.share(&main), (1 << 30) - 2 * (1 << 27));
        let sum = pool.share(&main) + pool.share(&a) + pool.share(&b);
        assert!(sum <= pool.budget(), "{sum} over the budget");
        drop(b);
        assert_eq!(pool.share(&main), (1 << 30) - (1 << 27), "a closed view's share returns");
        main.record(10, 100);
        a.record(1, 7);
        assert_eq!(pool.totals(), Totals { data: 11, caches: 107, workers: 2, secondary: 1 });
        pool.set_budget(1);
        assert_eq!(pool.budget(), MIN_BUDGET, "the budget has a floor");
    }

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
