//! A coarse timer for hyper's HTTP/1 header-read timeout (the slow-loris guard).
//!
//! hyper arms a fresh timer for every request head. With tokio's timer that is a heap
//! allocation plus an insert into and a removal from the timer wheel per request, which the
//! load bench measured at about 40 % of the gateway's overhead over a bare hyper server on
//! cache hits. A header deadline of seconds needs no millisecond precision, so here each
//! connection gets one slot holding its current deadline and waker (atomics), and a single
//! ticker task wakes the connections whose deadline has passed, once per [`TICK`]. Arming and
//! disarming cost a few atomic operations on the connection's own slot.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use hyper::rt::{Sleep, Timer};

/// How often expired header deadlines are checked: a timeout fires up to this much late.
pub const TICK: Duration = Duration::from_millis(500);

/// Every live connection's slot, for the ticker.
pub struct HeaderTimers {
    /// Deadlines are stored as nanoseconds since this instant (0 = none).
    epoch: Instant,
    slots: Mutex<Vec<Weak<Slot>>>,
}

impl HeaderTimers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            slots: Mutex::default(),
        })
    }

    /// A timer for one new connection.
    pub fn connection_timer(&self) -> ConnectionTimer {
        let slot = Arc::new(Slot::default());
        lock(&self.slots).push(Arc::downgrade(&slot));
        ConnectionTimer {
            slot,
            epoch: self.epoch,
        }
    }

    /// Wake expired connections every [`TICK`], forever (abort the task to stop it).
    pub async fn run(self: Arc<Self>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.wake_expired(Instant::now());
        }
    }

    /// Wake the connections whose deadline is at or before `now`; forget closed ones.
    /// Returns how many were woken.
    fn wake_expired(&self, now: Instant) -> usize {
        let now = nanos_since(self.epoch, now);
        let mut woken = 0;
        lock(&self.slots).retain(|weak| {
            let Some(slot) = weak.upgrade() else {
                return false;
            };
            let deadline = slot.deadline.load(Ordering::Acquire);
            if deadline != 0 && deadline <= now {
                slot.waker.wake();
                woken += 1;
            }
            true
        });
        woken
    }
}

/// One connection's pending deadline (0 when its connection is not waiting for a head).
#[derive(Default)]
struct Slot {
    deadline: AtomicU64,
    waker: AtomicWaker,
}

fn nanos_since(epoch: Instant, at: Instant) -> u64 {
    // Never 0, which means "no deadline".
    u64::try_from(at.saturating_duration_since(epoch).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A poisoned lock here only means a panic elsewhere while holding plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hyper [`Timer`] of one connection.
#[derive(Clone)]
pub struct ConnectionTimer {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep {
            slot: Arc::clone(&self.slot),
            deadline,
            deadline_nanos: nanos_since(self.epoch, deadline),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(coarse) => {
                let coarse = coarse.get_mut();
                coarse.deadline = new_deadline;
                coarse.deadline_nanos = nanos_since(self.epoch, new_deadline);
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// Resolves once `deadline` has passed; woken by the ticker, not by a timer of its own.
struct CoarseSleep {
    slot: Arc<Slot>,
    deadline: Instant,
    deadline_nanos: u64,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        self.slot.waker.register(cx.waker());
        self.slot
            .deadline
            .store(self.deadline_nanos, Ordering::Release);
        Poll::Pending
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        // Disarm: the head arrived (or the connection is closing).
        self.slot.deadline.store(0, Ordering::Release);
    }
}

impl Sleep for CoarseSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(sleep: &mut Pin<Box<dyn Sleep>>, waker: &Arc<CountingWaker>) -> Poll<()> {
        let waker = Waker::from(Arc::clone(waker));
        sleep.as_mut().poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn expired_deadline_wakes_its_connection_and_then_resolves() {
        let timers = HeaderTimers::new();
        let timer = timers.connection_timer();
        let woken = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let start = Instant::now();
        let mut sleep = timer.sleep_until(start + Duration::from_secs(10));
        assert!(poll(&mut sleep, &woken).is_pending());

        assert_eq!(timers.wake_expired(start + Duration::from_secs(9)), 0);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        assert_eq!(timers.wake_expired(start + Duration::from_secs(10)), 1);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);

        timer.reset(&mut sleep, Instant::now() - Duration::from_millis(1));
        assert!(poll(&mut sleep, &woken).is_ready());
    }

    #[test]
    fn a_finished_head_disarms_its_deadline() {
        let timers = HeaderTimers::new();
        let timer = timers.connection_timer();
        let woken = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let start = Instant::now();
        let mut sleep = timer.sleep_until(start + Duration::from_secs(1));
        assert!(poll(&mut sleep, &woken).is_pending());
        drop(sleep);
        assert_eq!(timers.wake_expired(start + Duration::from_secs(60)), 0);
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn closed_connections_are_forgotten() {
        let timers = HeaderTimers::new();
        let timer = timers.connection_timer();
        assert_eq!(lock(&timers.slots).len(), 1);
        drop(timer);
        let _ = timers.wake_expired(Instant::now());
        assert!(lock(&timers.slots).is_empty());
    }
}
