//! A coarse timer for hyper's HTTP/1 header-read timeout (the slow-loris guard).
//!
//! hyper arms a fresh timer for every request head. With tokio's timer that is a heap
//! allocation plus an insert into and a removal from the timer wheel per request, which the
//! load bench measured at about 40 % of the gateway's overhead over a bare hyper server on
//! cache hits. A header deadline of seconds needs no millisecond precision, so here each
//! connection gets one slot holding its current deadline and waker, and a single ticker task
//! wakes the connections whose deadline has passed, once per [`TICK`]. Arming and disarming
//! costs two uncontended lock operations on the connection's own slot.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// How often expired header deadlines are checked: a timeout fires up to this much late.
pub const TICK: Duration = Duration::from_millis(500);

/// Every live connection's slot, for the ticker.
#[derive(Default)]
pub struct HeaderTimers {
    slots: Mutex<Vec<Weak<Slot>>>,
}

impl HeaderTimers {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A timer for one new connection.
    pub fn connection_timer(&self) -> ConnectionTimer {
        let slot = Arc::new(Slot::default());
        lock(&self.slots).push(Arc::downgrade(&slot));
        ConnectionTimer { slot }
    }

    /// Wake expired connections every [`TICK`], forever (abort the task to stop it).
    pub async fn run(self: Arc<Self>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            for waker in self.expired(Instant::now()) {
                waker.wake();
            }
        }
    }

    /// Take the wakers of slots whose deadline is at or before `now`; forget closed
    /// connections.
    fn expired(&self, now: Instant) -> Vec<Waker> {
        let mut wakers = Vec::new();
        lock(&self.slots).retain(|weak| {
            let Some(slot) = weak.upgrade() else {
                return false;
            };
            let mut waiting = lock(&slot.waiting);
            if waiting.deadline.is_some_and(|deadline| deadline <= now) {
                wakers.extend(waiting.waker.take());
            }
            true
        });
        wakers
    }
}

/// One connection's pending deadline, if its connection is waiting for a request head.
#[derive(Default)]
struct Slot {
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    deadline: Option<Instant>,
    waker: Option<Waker>,
}

/// A poisoned lock here only means a panic elsewhere while holding plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The hyper [`Timer`] of one connection.
#[derive(Clone)]
pub struct ConnectionTimer {
    slot: Arc<Slot>,
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(CoarseSleep {
            slot: Arc::clone(&self.slot),
            deadline,
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<CoarseSleep>() {
            Some(coarse) => coarse.get_mut().deadline = new_deadline,
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

/// Resolves once `deadline` has passed; woken by the ticker, not by a timer of its own.
struct CoarseSleep {
    slot: Arc<Slot>,
    deadline: Instant,
}

impl Future for CoarseSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let mut waiting = lock(&self.slot.waiting);
        waiting.deadline = Some(self.deadline);
        match &waiting.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => waiting.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for CoarseSleep {
    fn drop(&mut self) {
        // Disarm; the waker stays for the connection's next request head.
        lock(&self.slot.waiting).deadline = None;
    }
}

impl Sleep for CoarseSleep {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

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

        assert!(timers.expired(start + Duration::from_secs(9)).is_empty());
        let wakers = timers.expired(start + Duration::from_secs(10));
        assert_eq!(wakers.len(), 1);
        wakers.into_iter().for_each(Waker::wake);
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
        assert!(timers.expired(start + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn closed_connections_are_forgotten() {
        let timers = HeaderTimers::new();
        let timer = timers.connection_timer();
        assert_eq!(lock(&timers.slots).len(), 1);
        drop(timer);
        let _ = timers.expired(Instant::now());
        assert!(lock(&timers.slots).is_empty());
    }
}
