//! The byte bound on log lines an instance holds: logged but not yet acknowledged by
//! JetStream. A build that prints hundreds of megabytes while NATS is down must not grow the
//! process without limit; beyond the bound new lines are dropped (and counted, and the run's log
//! says so once publishing resumes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The log bytes in hand over all runs of an instance, against [`Config::log_buffer`].
///
/// [`Config::log_buffer`]: crate::Config::log_buffer
#[derive(Debug)]
pub(crate) struct LogBuffer {
    used: AtomicUsize,
    limit: usize,
}

impl LogBuffer {
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// The bound, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Takes room for a line of `bytes`; `false` if the buffer is full. A line larger than the
    /// whole bound still fits an empty buffer, so that a bound set below the size of one long
    /// line does not drop every such line.
    pub(super) fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let after = used.saturating_add(bytes);
                (used == 0 || after <= self.limit).then_some(after)
            })
            .is_ok()
    }

    /// Gives back the room of a line that was acknowledged, or failed for good.
    pub(super) fn give_back(&self, bytes: usize) {
        // Never below zero, whatever the caller's arithmetic.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            });
    }

    #[cfg(test)]
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_bound_are_refused_until_room_is_given_back() {
        let buffer = LogBuffer::new(100);
        assert!(buffer.take(60));
        assert!(buffer.take(40));
        assert!(!buffer.take(1), "full");
        buffer.give_back(40);
        assert!(!buffer.take(41));
        assert!(buffer.take(40));
        buffer.give_back(100);
        assert_eq!(buffer.used(), 0);
        assert!(
            buffer.take(1000),
            "one line larger than the bound fits an empty buffer"
        );
        assert!(!buffer.take(1));
        buffer.give_back(5000);
        assert_eq!(buffer.used(), 0, "never below zero");
    }
}
