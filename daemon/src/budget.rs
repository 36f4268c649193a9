//! One memory budget for the whole process (`MEMORY_BUDGET_BYTES`): the request bodies being
//! read and the images being decoded draw from it, so that no mix of uploads, however many
//! or large, can take the daemon (or the board) out of memory.
//!
//! What draws: every byte a form keeps while it is read (a file part's buffer, counted by
//! its capacity, so before it grows), and each decode's estimated peak before its pixels are
//! allocated. A request that cannot get its share is refused at once with DeepStack's busy
//! answer and a `reason` naming the setting (`http::error`); what was admitted finishes
//! normally. The models, the gallery index and the per-connection buffers are not counted:
//! they are bounded by other means (the embedded models, the gallery's size, MAX_CONNECTIONS).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The default budget: an eighth of the machine's memory, at least 32 MiB and at most
/// 128 MiB (a Raspberry Pi Zero 2 W with 512 MB: 64 MiB; 1 GB and more: 128 MiB).
pub fn default_budget_bytes() -> u64 {
    (physical_memory_bytes() / 8).clamp(32 << 20, 128 << 20)
}

/// Physical memory (0 if unknown, which the clamp of [`default_budget_bytes`] turns into
/// its floor).
fn physical_memory_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages <= 0 || page <= 0 {
        return 0;
    }
    (pages as u64).saturating_mul(page as u64)
}

/// The budget and what is drawn from it.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
    /// Woken when a reservation gives bytes back.
    released: Notify,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, nothing drawn.
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
            released: Notify::new(),
        })
    }

    /// The budget's size.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes drawn now.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Draws `bytes`, or nothing if that would go over the budget.
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut reservation = Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        };
        reservation.try_grow(bytes).then_some(reservation)
    }

    /// Draws `bytes`, waiting up to `wait` for other reservations to give enough back; `None`
    /// when the budget could not give them in time (at once if `bytes` is over the limit).
    pub async fn reserve_within(
        self: &Arc<Self>,
        bytes: u64,
        wait: Duration,
    ) -> Option<Reservation> {
        if bytes > self.limit {
            return None;
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the attempt, so a release in between is not missed.
            let released = self.released.notified();
            if let Some(r) = self.try_reserve(bytes) {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.try_reserve(bytes);
            }
        }
    }

    fn draw(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }
}

/// Bytes drawn from a budget until dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    /// Draws `more` bytes into this reservation; false (and nothing drawn) if the budget
    /// cannot give them.
    pub fn try_grow(&mut self, more: u64) -> bool {
        if more == 0 {
            return true;
        }
        let ok = self.budget.draw(more);
        if ok {
            self.bytes += more;
        }
        ok
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
            self.budget.released.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_draw_until_the_limit_and_give_back_when_dropped() {
        let budget = MemoryBudget::new(100);
        let a = budget.try_reserve(60).unwrap();
        assert!(budget.try_reserve(41).is_none(), "over the limit");
        let mut b = budget.try_reserve(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        assert!(!b.try_grow(1));
        assert_eq!(b.bytes(), 40);
        drop(a);
        assert!(b.try_grow(60));
        assert_eq!(budget.in_use(), 100);
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.try_reserve(u64::MAX).is_none(), "no overflow");
        assert!(budget.try_reserve(0).is_some());
    }

    #[test]
    fn the_default_follows_the_machine_within_its_bounds() {
        let d = default_budget_bytes();
        assert!((32 << 20..=128 << 20).contains(&d), "{d}");
    }
}
