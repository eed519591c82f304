//! The life of every client connection, whatever protocol it speaks: the deadlines that close
//! it, the choice of whom to evict at the connection cap, and the server's drain phase.
//!
//! A connection is in one of three states, kept in its [`Slot`] with a few atomics:
//! - **awaiting a request head**: from accept (or the end of the TLS handshake) until the
//!   first request reaches the service, and, on HTTP/1, from the first byte of each later
//!   request. Deadline: `header_read_timeout`. This covers what hyper's own HTTP/1 timer does
//!   not: a socket that sends nothing, a lone byte or a partial HTTP/2 preface (the protocol
//!   detection phase), HTTP/2 SETTINGS and then silence, TLS and then silence.
//! - **busy**: at least one request in flight, from the service call until its response body
//!   is finished or dropped. No deadline here (requests have their own, see
//!   `limits.request_timeout` and the proxy's body limits).
//! - **idle**: served at least once, nothing in flight (HTTP/1 between requests, HTTP/2 with
//!   no open stream). Deadline: `idle_timeout`.
//!
//! One ticker task for all connections wakes those whose deadline has passed, once per
//! [`TICK`]: arming and clearing a deadline costs an atomic store on the connection's own
//! slot, never a timer-wheel insert (the load bench measured per-request timers at about 40 %
//! of the gateway's overhead over a bare hyper server on cache hits). The connection's task
//! then decides, from its slot and the server's [`Phase`], whether to close.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// How often expired deadlines are looked for: a connection closes up to this much late.
pub const TICK: Duration = Duration::from_millis(250);

/// Where the server as a whole stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Normal service.
    Serving,
    /// Shutdown has begun but the listener still accepts: HTTP/1 responses carry
    /// `Connection: close`, HTTP/2 connections are sent GOAWAY.
    Draining,
    /// The listener is closed: idle connections close, in-flight requests finish.
    Stopping,
}

/// Why the server closed a connection (counted in `streamgate_connections_closed_total`).
pub use crate::metrics::ConnectionClose as CloseReason;

// Slot flags.
/// The connection spoke HTTP/2 (seen on its first request).
const HTTP2: u8 = 1;
/// Chosen for eviction.
const EVICTED: u8 = 1 << 1;
/// Waiting for a request head (the deadline is a header deadline).
const AWAITING_HEAD: u8 = 1 << 2;
/// HTTP/1, idle: the next byte read starts a request head.
const WATCH_FOR_HEAD: u8 = 1 << 3;

/// Every live connection of one listener, and the server's phase.
pub struct ConnectionTable {
    /// Deadlines are nanoseconds since this reading of [`coarse_now`] (0 = none).
    epoch: Duration,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    phase: AtomicU8,
    slots: Mutex<Vec<Weak<Slot>>>,
}

/// One connection's state, shared by its task, its service and its socket reader.
///
/// Written several times per request (atomics), so it sits alone on its cache lines: two
/// connections' slots next to each other, served by two cores, would pass a line back and
/// forth. It holds the connection's reference to the table, so that a request, which clones
/// its [`Connection`] (the service's copy and the [`InFlight`] guard), counts references only
/// in this connection's allocation, never in the table's that every connection shares.
#[repr(align(128))]
pub struct Slot {
    table: Arc<ConnectionTable>,
    deadline: AtomicU64,
    /// Requests whose response is not yet finished.
    in_flight: AtomicU32,
    /// When it last became idle (or was accepted): the oldest idle one is evicted first.
    idle_since: AtomicU64,
    flags: AtomicU8,
    /// Wakes the connection's task to look at its slot again.
    notify: Notify,
}

impl ConnectionTable {
    /// A table whose connections must send a head within `header_read_timeout` and may stay
    /// idle for `idle_timeout`.
    pub fn new(header_read_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            epoch: coarse_now(),
            header_read_timeout,
            idle_timeout,
            phase: AtomicU8::new(Phase::Serving as u8),
            slots: Mutex::default(),
        })
    }

    fn now(&self) -> u64 {
        nanos_since(self.epoch, coarse_now())
    }

    fn later(&self, now: u64, after: Duration) -> u64 {
        now.saturating_add(u64::try_from(after.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The state of a connection accepted now: awaiting its first request head.
    pub fn open(self: &Arc<Self>) -> Connection {
        let now = self.now();
        let slot = Arc::new(Slot {
            table: Arc::clone(self),
            deadline: AtomicU64::new(self.later(now, self.header_read_timeout)),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            flags: AtomicU8::new(AWAITING_HEAD),
            notify: Notify::new(),
        });
        lock(&self.slots).push(Arc::downgrade(&slot));
        Connection { slot }
    }

    /// The server's phase now.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Serving,
            1 => Phase::Draining,
            _ => Phase::Stopping,
        }
    }

    /// Move to `phase` (never back) and let every connection act on it.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
        self.for_each_live(|slot| slot.notify.notify_one());
    }

    /// Mark the connection idle the longest (or waiting longest for its first head) for
    /// eviction; `false` when every connection has a request in flight.
    pub fn evict_oldest_idle(&self) -> bool {
        let mut oldest: Option<(u64, Arc<Slot>)> = None;
        self.for_each_live(|slot| {
            let flags = slot.flags.load(Ordering::Acquire);
            if slot.in_flight.load(Ordering::Acquire) > 0 || flags & EVICTED != 0 {
                return;
            }
            let since = slot.idle_since.load(Ordering::Acquire);
            if oldest.as_ref().is_none_or(|(at, _)| since < *at) {
                oldest = Some((since, Arc::clone(slot)));
            }
        });
        let Some((_, slot)) = oldest else {
            return false;
        };
        slot.flags.fetch_or(EVICTED, Ordering::AcqRel);
        slot.notify.notify_one();
        true
    }

    /// Wake the connections whose deadline has passed, every [`TICK`], forever (abort the
    /// task to stop it).
    pub async fn run(self: Arc<Self>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            self.wake_expired(self.now());
        }
    }

    /// Wake the connections that should close at `now`; forget closed ones. Returns how
    /// many were woken.
    fn wake_expired(&self, now: u64) -> usize {
        let mut woken = 0;
        self.for_each_live(|slot| {
            if slot.close_reason(now).is_some() {
                slot.notify.notify_one();
                woken += 1;
            }
        });
        woken
    }

    fn for_each_live(&self, mut each: impl FnMut(&Arc<Slot>)) {
        lock(&self.slots).retain(|weak| match weak.upgrade() {
            Some(slot) => {
                each(&slot);
                true
            }
            None => false,
        });
    }

    /// Connections in the table (closed ones are forgotten at the next tick).
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Slot {
    /// Why this connection should be closed at `now`, if it should. A connection with a
    /// request in flight is never closed here.
    fn close_reason(&self, now: u64) -> Option<CloseReason> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let flags = self.flags.load(Ordering::Acquire);
        if flags & EVICTED != 0 {
            return Some(CloseReason::Evicted);
        }
        let deadline = self.deadline.load(Ordering::Acquire);
        if deadline == 0 || deadline > now {
            return None;
        }
        // Read again: a request may have started between the two loads.
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(if flags & AWAITING_HEAD != 0 {
            CloseReason::HeaderTimeout
        } else {
            CloseReason::IdleTimeout
        })
    }
}

/// One connection's handle on its slot.
#[derive(Clone)]
pub struct Connection {
    slot: Arc<Slot>,
}

impl Connection {
    fn table(&self) -> &ConnectionTable {
        &self.slot.table
    }

    /// A request head arrived and is being served; the connection is busy until the returned
    /// guard is dropped (with the response body).
    pub fn request_started(&self, http2: bool) -> InFlight {
        let slot = &self.slot;
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        slot.deadline.store(0, Ordering::Release);
        let flags = slot.flags.load(Ordering::Acquire);
        if flags & (AWAITING_HEAD | WATCH_FOR_HEAD) != 0 {
            slot.flags
                .fetch_and(!(AWAITING_HEAD | WATCH_FOR_HEAD), Ordering::AcqRel);
        }
        if http2 && flags & HTTP2 == 0 {
            slot.flags.fetch_or(HTTP2, Ordering::AcqRel);
        }
        if http2 && self.table().phase() != Phase::Serving {
            // Its first request told us it is HTTP/2: it may need a GOAWAY now.
            slot.notify.notify_one();
        }
        InFlight(self.clone())
    }

    fn request_finished(&self) {
        let slot = &self.slot;
        if slot.in_flight.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let now = self.table().now();
        slot.idle_since.store(now, Ordering::Release);
        if slot.flags.load(Ordering::Acquire) & HTTP2 == 0 {
            slot.flags.fetch_or(WATCH_FOR_HEAD, Ordering::AcqRel);
        }
        slot.deadline.store(
            self.table().later(now, self.table().idle_timeout),
            Ordering::Release,
        );
        if self.table().phase() == Phase::Stopping {
            slot.notify.notify_one();
        }
    }

    /// Bytes arrived from the client: on an idle HTTP/1 connection they begin a request head,
    /// which must be complete within `header_read_timeout`.
    fn bytes_read(&self) {
        let slot = &self.slot;
        if slot.flags.load(Ordering::Relaxed) & WATCH_FOR_HEAD == 0 {
            return;
        }
        slot.flags.fetch_and(!WATCH_FOR_HEAD, Ordering::AcqRel);
        if slot.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        slot.flags.fetch_or(AWAITING_HEAD, Ordering::AcqRel);
        let now = self.table().now();
        // Active again: not the first to be evicted while its request is on the way.
        slot.idle_since.store(now, Ordering::Release);
        let head_by = self.table().later(now, self.table().header_read_timeout);
        let _ = slot
            .deadline
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |deadline| {
                (deadline != 0 && head_by < deadline).then_some(head_by)
            });
    }

    /// Why the server should close this connection now, if it should.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.slot.close_reason(self.table().now())
    }

    /// Whether it has spoken HTTP/2.
    pub fn is_http2(&self) -> bool {
        self.slot.flags.load(Ordering::Acquire) & HTTP2 != 0
    }

    /// The server's phase.
    pub fn phase(&self) -> Phase {
        self.table().phase()
    }

    /// Resolves when something about this connection may have changed: a deadline passed,
    /// it was chosen for eviction, the server changed phase.
    pub async fn changed(&self) {
        self.slot.notify.notified().await;
    }

    /// `io` read through this connection's state, so that the first byte of a request head
    /// on an idle HTTP/1 connection starts its header deadline.
    pub fn watch<I>(&self, io: I) -> WatchedIo<I> {
        WatchedIo {
            io,
            connection: self.clone(),
        }
    }
}

/// Keeps a connection busy while alive: held by a request's service future and then its
/// response body.
pub struct InFlight(Connection);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A client socket whose reads are reported to its [`Connection`].
pub struct WatchedIo<I> {
    io: I,
    connection: Connection,
}

impl<I: AsyncRead + Unpin> AsyncRead for WatchedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.connection.bytes_read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WatchedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The monotonic clock as the kernel last ticked it (`CLOCK_MONOTONIC_COARSE`): read from
/// memory, with no read of the time-stamp counter. A request reads the table's clock three
/// times (started, its next head's first bytes, finished), for deadlines of seconds checked
/// every [`TICK`]; the coarse clock's few milliseconds of resolution cost them nothing, and a
/// read cost 3 ns against 23 for the precise clock on the machine the benches ran on.
fn coarse_now() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

fn nanos_since(epoch: Duration, at: Duration) -> u64 {
    // Never 0, which means "no deadline".
    u64::try_from(at.saturating_sub(epoch).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// A poisoned lock here only means a panic elsewhere while holding plain data: keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<ConnectionTable> {
        ConnectionTable::new(Duration::from_secs(10), Duration::from_secs(60))
    }

    /// Wait (at most a second) until the table's clock has moved on: the coarse clock
    /// advances a kernel tick at a time (1–10 ms).
    fn next_tick(table: &ConnectionTable) {
        let before = table.now();
        let give_up = std::time::Instant::now() + Duration::from_secs(1);
        while table.now() == before {
            assert!(
                std::time::Instant::now() < give_up,
                "the coarse clock stood still"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The table's time `after` it was made.
    fn at(table: &ConnectionTable, after: Duration) -> u64 {
        nanos_since(table.epoch, table.epoch + after)
    }

    #[test]
    fn a_request_counts_references_in_its_connection_not_in_the_shared_table() {
        let table = table();
        let connection = table.open();
        let other = table.open();
        let shared = Arc::strong_count(&table);
        let slot = Arc::strong_count(&connection.slot);
        // What a request does: the service's copy and the busy guard.
        let copy = connection.clone();
        let in_flight = copy.request_started(false);
        assert_eq!(
            Arc::strong_count(&table),
            shared,
            "the table's count is untouched"
        );
        assert_eq!(Arc::strong_count(&connection.slot), slot + 2);
        drop((in_flight, copy));
        assert_eq!(Arc::strong_count(&connection.slot), slot);
        // Each slot has its cache lines to itself.
        assert_eq!(std::mem::align_of::<Slot>(), 128);
        let (a, b) = (
            Arc::as_ptr(&connection.slot).addr(),
            Arc::as_ptr(&other.slot).addr(),
        );
        assert!(a.abs_diff(b) >= 128, "two slots share no 128-byte block");
    }

    #[test]
    fn a_silent_connection_is_closed_for_its_head_after_the_header_timeout() {
        let table = table();
        let connection = table.open();
        assert_eq!(table.wake_expired(at(&table, Duration::from_secs(9))), 0);
        assert_eq!(table.wake_expired(at(&table, Duration::from_secs(11))), 1);
        let now = at(&table, Duration::from_secs(11));
        assert_eq!(
            connection.slot.close_reason(now),
            Some(CloseReason::HeaderTimeout)
        );
    }

    #[test]
    fn a_busy_connection_is_never_closed_and_an_idle_one_closes_after_the_idle_timeout() {
        let table = table();
        let connection = table.open();
        let request = connection.request_started(false);
        assert_eq!(table.wake_expired(at(&table, Duration::from_secs(3600))), 0);
        drop(request);
        let idle_at = connection.slot.deadline.load(Ordering::Acquire);
        let now = table.now();
        assert!(idle_at >= now + Duration::from_secs(59).as_nanos() as u64);
        assert_eq!(
            connection.slot.close_reason(idle_at),
            Some(CloseReason::IdleTimeout)
        );
    }

    #[test]
    fn the_first_byte_of_a_later_http1_head_starts_a_header_deadline() {
        let table = table();
        let connection = table.open();
        drop(connection.request_started(false));
        connection.bytes_read();
        let deadline = connection.slot.deadline.load(Ordering::Acquire);
        assert!(deadline <= table.now() + Duration::from_secs(10).as_nanos() as u64);
        assert_eq!(
            connection.slot.close_reason(deadline),
            Some(CloseReason::HeaderTimeout)
        );
        // HTTP/2 frames on an idle connection (pings, settings) do not.
        let h2 = table.open();
        drop(h2.request_started(true));
        let idle_at = h2.slot.deadline.load(Ordering::Acquire);
        h2.bytes_read();
        assert_eq!(h2.slot.deadline.load(Ordering::Acquire), idle_at);
    }

    #[test]
    fn eviction_picks_the_oldest_connection_with_nothing_in_flight() {
        let table = table();
        let busy = table.open();
        let _request = busy.request_started(false);
        let old = table.open();
        let young = table.open();
        assert!(table.evict_oldest_idle());
        assert_eq!(old.close_reason(), Some(CloseReason::Evicted));
        assert_eq!(young.close_reason(), None);
        assert_eq!(busy.close_reason(), None);
        assert!(table.evict_oldest_idle());
        assert_eq!(young.close_reason(), Some(CloseReason::Evicted));
        assert!(!table.evict_oldest_idle(), "only the busy one is left");
    }

    #[test]
    fn a_connection_starting_a_new_head_is_not_taken_for_the_oldest_idle_one() {
        let table = table();
        let older = table.open();
        drop(older.request_started(false));
        // Distinct readings of the table's coarse clock, so that "oldest" is well defined.
        next_tick(&table);
        let newer = table.open();
        drop(newer.request_started(false));
        next_tick(&table);
        older.bytes_read();
        assert!(table.evict_oldest_idle());
        assert_eq!(newer.close_reason(), Some(CloseReason::Evicted));
        assert_eq!(older.close_reason(), None);
    }

    #[test]
    fn closed_connections_are_forgotten() {
        let table = table();
        let connection = table.open();
        assert_eq!(table.len(), 1);
        drop(connection);
        let _ = table.wake_expired(table.now());
        assert!(table.is_empty());
    }

    #[test]
    fn the_phase_only_moves_forward() {
        let table = table();
        assert_eq!(table.phase(), Phase::Serving);
        table.set_phase(Phase::Stopping);
        table.set_phase(Phase::Draining);
        assert_eq!(table.phase(), Phase::Stopping);
    }
}
