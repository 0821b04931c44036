//! Gives memory back to the operating system after a burst of large request bodies.
//!
//! mimalloc keeps freed memory for reuse and returns it (purges it) only when the thread that
//! freed it allocates again: after a burst of large bodies on an otherwise quiet gateway,
//! hundreds of megabytes stayed resident for good. Once the bodies held at once have peaked
//! above [`BURST_BYTES`] and no body is held any more, this service asks mimalloc to collect
//! (purging what is free in every arena) at most once a second.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;

use crate::body::BodyBudget;

/// A peak of request bodies held at once above this is a burst worth returning memory after.
pub const BURST_BYTES: usize = 8 * 1024 * 1024;

pub struct MemoryReturn {
    pub budget: Arc<BodyBudget>,
}

impl MemoryReturn {
    /// One look: collects when a burst is over; `true` when it did.
    pub fn tick(&self, pending: &mut bool) -> bool {
        if self.budget.take_peak() > BURST_BYTES {
            *pending = true;
        }
        if *pending && self.budget.used() == 0 {
            *pending = false;
            // SAFETY: mi_collect takes no pointer and may be called from any thread at any time
            unsafe { libmimalloc_sys::mi_collect(true) };
            return true;
        }
        false
    }
}

#[async_trait]
impl BackgroundService for MemoryReturn {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut pending = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if self.tick(&mut pending) {
                log::debug!("request-body burst over: freed memory returned to the OS");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_once_after_a_burst_and_not_while_bodies_are_held() {
        let budget = BodyBudget::new(64 << 20);
        let m = MemoryReturn {
            budget: budget.clone(),
        };
        let mut pending = false;
        assert!(!m.tick(&mut pending), "no burst yet");
        let held = budget.hold_for_test(BURST_BYTES + 1);
        assert!(!m.tick(&mut pending), "bodies still held");
        assert!(pending);
        drop(held);
        assert!(m.tick(&mut pending), "the burst is over");
        assert!(!m.tick(&mut pending), "once per burst");
    }
}
