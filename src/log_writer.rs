//! Log lines written off the request path. Each line is formatted on the thread that logs it
//! and appended to that thread's own bounded buffer; a writer thread of its own swaps the
//! buffers out and writes them to the sink, every [`FLUSH_EVERY`] or as soon as one holds
//! [`WAKE_AT_BYTES`] (or half its share of the room, if less), whichever comes first.
//!
//! Nothing on the request path waits for the sink, makes a system call or wakes a thread per
//! line: a line costs its formatting, a lock no other thread takes but the writer (every
//! [`FLUSH_EVERY`]) and a copy. A thread is woken only when a batch is large (about one wake
//! per thousand access lines under load). The cost of that choice is a delay of up to
//! [`FLUSH_EVERY`] before a line reaches the sink when traffic is light. Each thread's lines
//! keep their order; lines of different threads may be interleaved a batch at a time (as
//! nginx's per-worker log buffers do), so a line can follow one stamped up to
//! [`FLUSH_EVERY`] later.
//!
//! When the sink cannot keep up and the buffers hold [`QUEUE_BYTES`] (shared evenly among
//! the threads that log), new lines are dropped and counted ([`dropped_lines`], exported as
//! `streamgate_log_lines_dropped_total`). Waiting would turn a slow log sink (a full pipe, a
//! stalled collector) into a stalled gateway. [`LogGuard`] writes and flushes everything
//! appended before it is dropped, so a graceful shutdown loses no line.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use thread_local::ThreadLocal;
use tracing_subscriber::fmt::MakeWriter;
use try_lock::{Locked, TryLock};

/// The longest an appended line waits before the writer thread writes and flushes it.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// How many bytes may wait for the writer, in all threads' buffers together, before new lines
/// are dropped.
pub const QUEUE_BYTES: usize = 16 * 1024 * 1024;

/// How many bytes waiting in one thread's buffer wake the writer before [`FLUSH_EVERY`] has
/// passed.
pub const WAKE_AT_BYTES: usize = 256 * 1024;

/// Lines dropped because the buffer was full, since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Token audit events dropped because their writer could not keep up (see
/// [`crate::audit`]); kept here, below the metrics that export it.
pub static AUDIT_DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many token audit events were dropped because their writer could not keep up.
pub fn dropped_audit_events() -> u64 {
    AUDIT_DROPPED.load(Ordering::Relaxed)
}

/// What the logging threads and the writer thread share.
struct Shared {
    /// One buffer per thread that logs: a line is appended under a lock only its own thread
    /// and (every [`FLUSH_EVERY`]) the writer take, so two workers logging at once never
    /// contend for a lock or a cache line.
    slots: ThreadLocal<Slot>,
    /// How many slots there are; each may hold `capacity / slots` bytes.
    slot_count: AtomicUsize,
    /// Set (under `control`) when the writer is told to stop; read under a slot's lock.
    stop: AtomicBool,
    /// Where lines dropped for want of room are counted.
    dropped: &'static AtomicU64,
    /// The writer waits on `wake` under `control`: signalled when a slot passes the wake
    /// mark, and to stop.
    control: Mutex<bool>,
    wake: Condvar,
    capacity: usize,
    wake_at: usize,
}

/// One thread's waiting lines, alone on its cache lines.
///
/// The lock is a flag: taken with one atomic swap and released with a plain store, so the
/// line just copied in need not reach the cache before the thread goes on (a `Mutex`'s
/// release is a locked instruction that waits for it; in a `perf` profile of cache hits that
/// wait was most of the cost of logging a line). Only the owning thread and the writer, for
/// a swap every [`FLUSH_EVERY`], ever take it.
#[repr(align(128))]
#[derive(Default)]
struct Slot {
    bytes: TryLock<Vec<u8>>,
}

impl Slot {
    fn lock(&self) -> Locked<'_, Vec<u8>> {
        let mut spins = 0u32;
        loop {
            if let Some(bytes) = self.bytes.try_lock() {
                return bytes;
            }
            // Held for a copy or a swap: spin briefly, then let the holder run.
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, bool> {
        self.control.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This thread's slot, made on its first line; `None` once the writer has stopped.
    fn slot(&self) -> Option<&Slot> {
        if let Some(slot) = self.slots.get() {
            return Some(slot);
        }
        // Made under `control`, so the writer's last pass, which starts after it sets `stop`
        // under the same lock, sees every slot made before.
        let _control = self.control();
        if self.stop.load(Ordering::Acquire) {
            return None;
        }
        Some(self.slots.get_or(|| {
            self.slot_count.fetch_add(1, Ordering::Relaxed);
            Slot::default()
        }))
    }

    /// Append one whole line, or drop and count it when this thread's share is full.
    fn append(&self, line: &[u8]) {
        self.write_line(|out| out.extend_from_slice(line));
    }

    /// Format one line with `write` straight into this thread's buffer (no copy of the line
    /// afterwards), or drop and count it when this thread's share is full: not formatted at
    /// all when the buffer is already full.
    fn write_line(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let Some(slot) = self.slot() else {
            return unbuffered(write);
        };
        let bytes = slot.lock();
        if self.stop.load(Ordering::Acquire) {
            drop(bytes);
            return unbuffered(write);
        }
        let before = bytes.len();
        let (room, wake_at) = share(
            self.capacity,
            self.slot_count.load(Ordering::Relaxed),
            self.wake_at,
        );
        if before >= room {
            drop(bytes);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut line = Uncommitted { bytes, before };
        write(&mut line.bytes);
        let after = line.bytes.len();
        if after > room {
            drop(line);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line.before = after;
        drop(line);
        if before < wake_at && after >= wake_at {
            *self.control() = true;
            self.wake.notify_one();
        }
    }
}

/// One thread's share of `capacity` among `slots` threads, and the mark at which its buffer
/// wakes the writer: never above half the share, so that however many threads log, a busy
/// thread wakes the writer well before its buffer is full.
fn share(capacity: usize, slots: usize, wake_at: usize) -> (usize, usize) {
    let room = capacity / slots.max(1);
    (room, wake_at.min(room / 2).max(1))
}

/// A line being formatted into a thread's buffer: cut back to `before` when dropped, so a
/// line that does not fit (or whose formatting panicked) leaves nothing behind.
struct Uncommitted<'a> {
    bytes: Locked<'a, Vec<u8>>,
    before: usize,
}

impl Drop for Uncommitted<'_> {
    fn drop(&mut self) {
        self.bytes.truncate(self.before);
    }
}

/// A line formatted once the writer has gone (the process is exiting): written directly.
fn unbuffered(write: impl FnOnce(&mut Vec<u8>)) {
    let mut line = Vec::new();
    write(&mut line);
    let _ = io::stderr().write_all(&line);
}

/// The `MakeWriter` the log formatter writes through: cheap to clone, one buffer per process.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written and flushed every line appended
/// before.
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Start the writer thread over `sink`, with room for `capacity` bytes of waiting lines.
/// Dropped lines are counted in [`dropped_lines`].
pub fn spawn<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
) -> io::Result<(LogWriter, LogGuard)> {
    spawn_counted(sink, capacity, &DROPPED, "log-writer")
}

/// [`spawn`] for another stream of lines (the token audit trail): its dropped lines are
/// counted in `dropped`, and its thread is called `thread_name`.
pub fn spawn_counted<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
    dropped: &'static AtomicU64,
    thread_name: &str,
) -> io::Result<(LogWriter, LogGuard)> {
    let shared = Arc::new(Shared {
        slots: ThreadLocal::new(),
        slot_count: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        dropped,
        control: Mutex::new(false),
        wake: Condvar::new(),
        capacity,
        wake_at: WAKE_AT_BYTES.min(capacity / 2).max(1),
    });
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || write_batches(&shared, sink))?
    };
    Ok((
        LogWriter {
            shared: Arc::clone(&shared),
        },
        LogGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: every [`FLUSH_EVERY`] (or when woken), take what each thread has
/// waiting, write it and flush, until told to stop; then write the rest.
fn write_batches<W: Write>(shared: &Shared, mut sink: W) {
    // Buffers trade places with the slots, so that neither side allocates in the steady state.
    let mut batch: Vec<u8> = Vec::new();
    loop {
        let stop = {
            let control = shared.control();
            let (mut woken, _) = shared
                .wake
                .wait_timeout_while(control, FLUSH_EVERY, |woken| {
                    !*woken && !shared.stop.load(Ordering::Acquire)
                })
                .unwrap_or_else(PoisonError::into_inner);
            *woken = false;
            shared.stop.load(Ordering::Acquire)
        };
        let mut wrote = false;
        for slot in shared.slots.iter() {
            {
                let mut bytes = slot.lock();
                if bytes.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *bytes, &mut batch);
            }
            // A sink that fails has nowhere to report it: the log is where it would go.
            let _ = sink.write_all(&batch);
            batch.clear();
            wrote = true;
        }
        if wrote {
            let _ = sink.flush();
        }
        if stop {
            return;
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        {
            let _control = self.shared.control();
            self.shared.stop.store(true, Ordering::Release);
        }
        self.shared.wake.notify_one();
        // Blocking on purpose: shutdown waits for what is waiting to be written.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

thread_local! {
    /// The line being formatted on this thread, reused from line to line.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// One formatted line, collected as the formatter writes it and appended when it is done.
pub struct Line<'a> {
    buffer: Vec<u8>,
    shared: &'a Shared,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        let buffer = LINE
            .try_with(|line| std::mem::take(&mut *line.borrow_mut()))
            .unwrap_or_default();
        Line {
            buffer,
            shared: &self.shared,
        }
    }
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.shared.append(&self.buffer);
        }
        let mut buffer = std::mem::take(&mut self.buffer);
        buffer.clear();
        // Keep the allocation for the next line on this thread, unless a huge line grew it.
        if buffer.capacity() <= 64 * 1024 {
            let _ = LINE.try_with(|line| *line.borrow_mut() = buffer);
        }
    }
}

// === records formatted here, without `tracing` ===

impl LogWriter {
    /// Append one JSON object, `{"timestamp":"<at>", <the fields fill adds>}`, as a line
    /// (`at` is a time the caller has read: the clock is not read again here).
    pub fn json_event(&self, at: SystemTime, fill: impl FnOnce(&mut Record<'_>)) {
        json_event(&self.shared, at, fill);
    }
}

/// One JSON object line stamped `at` into `shared`, formatted in place in this thread's
/// buffer.
fn json_event(shared: &Shared, at: SystemTime, fill: impl FnOnce(&mut Record<'_>)) {
    shared.write_line(|out| {
        let mut record = Record { out, json: true };
        record.out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(record.out, at);
        record.out.push(b'"');
        fill(&mut record);
        record.out.extend_from_slice(b"}\n");
    });
}

/// Where records formatted without `tracing` go: the same buffer and format as the subscriber's
/// lines. The access log uses it, because formatting a line through `tracing-subscriber`
/// (a visitor per field, JSON through `serde_json` into a `String`, then copied) cost more
/// than the rest of a cache hit; the outside bench keeps the measurement.
pub struct Direct {
    shared: Arc<Shared>,
    json: bool,
}

static DIRECT: OnceLock<Direct> = OnceLock::new();

/// Send direct records through `writer` in the subscriber's format (`json`, else plain text
/// without colours). Once per process; later calls are ignored.
pub fn install_direct(writer: &LogWriter, json: bool) {
    let _ = DIRECT.set(Direct {
        shared: Arc::clone(&writer.shared),
        json,
    });
}

/// The direct sink, when the binary installed one; `None` means "log through `tracing`".
pub fn direct() -> Option<&'static Direct> {
    DIRECT.get()
}

impl Direct {
    /// Write one INFO record of `target` with `message` and the fields `fill` adds, stamped
    /// `at` (a time the caller has read).
    pub fn info(
        &self,
        at: SystemTime,
        target: &'static str,
        message: &'static str,
        fill: impl FnOnce(&mut Record<'_>),
    ) {
        self.shared.write_line(|out| {
            let mut record = Record {
                out,
                json: self.json,
            };
            record.start(at, target, message);
            fill(&mut record);
            record.finish(target);
        });
    }

    /// Append one JSON object line stamped `at`, as [`LogWriter::json_event`] does, whatever
    /// the log format: for streams of events that share the log's sink (the audit trail on
    /// stderr).
    pub fn json_event(&self, at: SystemTime, fill: impl FnOnce(&mut Record<'_>)) {
        json_event(&self.shared, at, fill);
    }
}

/// A field's name as each format writes it before the value; made by [`log_field!`] from the
/// name, at compile time.
#[derive(Clone, Copy)]
pub struct Field {
    pub json: &'static str,
    pub json_open: &'static str,
    pub text: &'static str,
    pub text_open: &'static str,
}

/// The [`Field`] called `$name` (a literal, plain): `,"name":` and ` name=`, with and without
/// the value's opening quote.
macro_rules! log_field {
    ($name:literal) => {
        $crate::log_writer::Field {
            json: concat!(",\"", $name, "\":"),
            json_open: concat!(",\"", $name, "\":\""),
            text: concat!(" ", $name, "="),
            text_open: concat!(" ", $name, "=\""),
        }
    };
}
pub(crate) use log_field;

/// One record being written: fields in order, escaped for the format. Numbers, addresses
/// and the timestamp are written without `core::fmt`, which costs more than the rest of the
/// line together.
pub struct Record<'a> {
    out: &'a mut Vec<u8>,
    json: bool,
}

impl Record<'_> {
    fn start(&mut self, now: SystemTime, target: &str, message: &str) {
        if self.json {
            self.out.extend_from_slice(b"{\"timestamp\":\"");
            timestamp(self.out, now);
            // A message is a fixed text of the code's, plain.
            debug_assert!(is_plain(message), "a message that is not plain");
            self.out
                .extend_from_slice(b"\",\"level\":\"INFO\",\"message\":");
            quoted(self.out, message.as_bytes());
        } else {
            timestamp(self.out, now);
            self.out.extend_from_slice(b"  INFO ");
            self.out.extend_from_slice(target.as_bytes());
            self.out.extend_from_slice(b": ");
            self.out.extend_from_slice(message.as_bytes());
        }
    }

    fn finish(&mut self, target: &str) {
        if self.json {
            // A target is a module path of the code's, plain.
            debug_assert!(is_plain(target), "a target that is not plain");
            self.out.extend_from_slice(b",\"target\":");
            quoted(self.out, target.as_bytes());
            self.out.extend_from_slice(b"}\n");
        } else {
            self.out.push(b'\n');
        }
    }

    /// What comes before `field`'s value: `,"name":` in JSON, ` name=` in text, and with the
    /// value's opening quote when `open`. One copy of a constant: writing the separator, the
    /// name and the quote apart cost a capacity check and a length update each, a quarter of
    /// an access line's formatting.
    #[inline(always)]
    fn name(&mut self, field: &Field, open: bool) {
        // One copy per branch, so that each copies a constant of known length (inlined moves,
        // not a `memcpy` call).
        match (self.json, open) {
            (true, false) => self.out.extend_from_slice(field.json.as_bytes()),
            (true, true) => self.out.extend_from_slice(field.json_open.as_bytes()),
            (false, false) => self.out.extend_from_slice(field.text.as_bytes()),
            (false, true) => self.out.extend_from_slice(field.text_open.as_bytes()),
        }
    }

    /// `field` with `value` between quotes, as is: for a value that needs no escape in
    /// either format.
    #[inline(always)]
    fn quoted_field(&mut self, field: &Field, value: &[u8]) {
        self.name(field, true);
        self.out.extend_from_slice(value);
        self.out.push(b'"');
    }

    /// A text field: a JSON string, or quoted and escaped as `tracing` shows a `&str`.
    #[inline(always)]
    pub fn str(&mut self, field: Field, value: &str) -> &mut Self {
        if self.json {
            if !any_json_escaped(value.as_bytes()) {
                self.quoted_field(&field, value.as_bytes());
            } else {
                self.name(&field, false);
                json_string(self.out, value);
            }
        } else {
            self.name(&field, false);
            debug_string(self.out, value);
        }
        self
    }

    /// A text field whose value is plain by construction (printable ASCII without `"` or
    /// `\\`: a generated or validated request id, a video uid or alias, a fixed label):
    /// written as [`Record::str`] writes it, without looking for escapes.
    #[inline(always)]
    pub fn plain(&mut self, field: Field, value: &str) -> &mut Self {
        debug_assert!(is_plain(value), "`{}` is not plain", field.text);
        self.quoted_field(&field, value.as_bytes());
        self
    }

    /// [`Record::plain`] for a value held as bytes (a request id in its header value, a video
    /// uid): plain by construction, so written without the check that makes it a `&str`.
    #[inline(always)]
    pub fn plain_bytes(&mut self, field: Field, value: &[u8]) -> &mut Self {
        debug_assert!(
            std::str::from_utf8(value).is_ok_and(is_plain),
            "`{}` is not plain",
            field.text
        );
        self.quoted_field(&field, value);
        self
    }

    /// [`Record::bare`] for a value that is plain and holds no space by construction (an
    /// HTTP method: token characters only), without looking for escapes.
    #[inline(always)]
    pub fn plain_bare(&mut self, field: Field, value: &str) -> &mut Self {
        debug_assert!(
            is_plain(value) && !value.contains(' '),
            "`{}` is not plain",
            field.text
        );
        if self.json {
            return self.plain(field, value);
        }
        self.name(&field, false);
        self.out.extend_from_slice(value.as_bytes());
        self
    }

    /// A text field shown as `tracing` shows a `%` (Display) field: a JSON string, or bare in
    /// text. For values that hold no space, quote, backslash or control character (a method);
    /// anything else is quoted as [`Record::str`] does, so the line keeps its shape.
    #[inline(always)]
    pub fn bare(&mut self, field: Field, value: &str) -> &mut Self {
        if self.json {
            return self.str(field, value);
        }
        if value
            .bytes()
            .any(|b| b <= b' ' || b == b'"' || b == b'\\' || b == 0x7f)
        {
            return self.str(field, value);
        }
        self.name(&field, false);
        self.out.extend_from_slice(value.as_bytes());
        self
    }

    /// An address, shown as `Display` does.
    #[inline(always)]
    pub fn ip(&mut self, field: Field, value: std::net::IpAddr) -> &mut Self {
        self.name(&field, self.json);
        address(self.out, value);
        if self.json {
            self.out.push(b'"');
        }
        self
    }

    /// JSON members written as they are (`"a":1,"b":"x"`): for parts of a JSON record made
    /// once and reused. Only for JSON records (see [`LogWriter::json_event`]).
    #[inline(always)]
    pub fn members(&mut self, members: &str) -> &mut Self {
        debug_assert!(self.json, "members are JSON");
        self.out.push(b',');
        self.out.extend_from_slice(members.as_bytes());
        self
    }

    #[inline(always)]
    pub fn u64(&mut self, field: Field, value: u64) -> &mut Self {
        self.name(&field, false);
        decimal(self.out, value);
        self
    }

    /// A duration in milliseconds, with six decimals (nanoseconds).
    #[inline(always)]
    pub fn millis(&mut self, field: Field, value: Duration) -> &mut Self {
        self.name(&field, false);
        let nanos = value.as_nanos().min(u128::from(u64::MAX)) as u64;
        decimal(self.out, nanos / 1_000_000);
        self.out.push(b'.');
        six_digits(self.out, nanos);
        self
    }

    #[inline(always)]
    pub fn bool(&mut self, field: Field, value: bool) -> &mut Self {
        self.name(&field, false);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }
}

thread_local! {
    /// The last address written on this thread, as text: a request's line writes the peer and
    /// the client (usually the same) and its audit event the client again, and a connection's
    /// requests come from one peer.
    static LAST_ADDRESS: RefCell<(Option<std::net::IpAddr>, Vec<u8>)> =
        const { RefCell::new((None, Vec::new())) };
}

/// `value` as `Display` shows it.
fn address(out: &mut Vec<u8>, value: std::net::IpAddr) {
    let copied = LAST_ADDRESS.try_with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != Some(value) {
            last.1.clear();
            format_address(&mut last.1, value);
            last.0 = Some(value);
        }
        out.extend_from_slice(&last.1);
    });
    if copied.is_err() {
        format_address(out, value);
    }
}

fn format_address(out: &mut Vec<u8>, value: std::net::IpAddr) {
    match value {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                decimal(out, u64::from(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// `value` in decimal.
fn decimal(out: &mut Vec<u8>, mut value: u64) {
    // Statuses and address octets: a few pushes, no copy of a digit buffer.
    if value < 1000 {
        let digit = |d: u64| b'0' + d as u8;
        if value >= 100 {
            out.push(digit(value / 100));
        }
        if value >= 10 {
            out.push(digit(value / 10 % 10));
        }
        out.push(digit(value % 10));
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The two digits of every number below 100, for [`six_digits`].
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// `value % 1_000_000` in six digits, zero-padded: the fraction of a timestamp (microseconds)
/// or of a millisecond figure (nanoseconds). Three divisions by 100 and three two-byte
/// copies, where a digit at a time took six of each (callgrind: 168 of a cache hit's
/// instructions went to the loop).
fn six_digits(out: &mut Vec<u8>, value: u64) {
    let value = (value % 1_000_000) as u32;
    let pair = |n: u32| {
        let at = n as usize * 2;
        [DIGIT_PAIRS[at], DIGIT_PAIRS[at + 1]]
    };
    let [a, b] = pair(value / 10_000);
    let [c, d] = pair(value / 100 % 100);
    let [e, f] = pair(value % 100);
    out.extend_from_slice(&[a, b, c, d, e, f]);
}

thread_local! {
    /// The last second stamped on this thread and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
}

/// `now` as RFC 3339 UTC with microseconds, as `tracing-subscriber` stamps its lines. The
/// date and time of day are formatted once per second per thread.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let seconds = since.as_secs();
    let cached = SECOND.try_with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != seconds {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            // `YYYY-MM-DDTHH:MM:SSZ`: keep all but the `Z`.
            if text.len() == 20 {
                second.1.copy_from_slice(&text.as_bytes()[..19]);
                second.0 = seconds;
            }
        }
        (second.0 == seconds).then_some(second.1)
    });
    match cached.ok().flatten() {
        Some(prefix) => {
            out.extend_from_slice(&prefix);
            out.push(b'.');
            six_digits(out, u64::from(since.subsec_micros()));
            out.push(b'Z');
        }
        None => {
            let _ = write!(out, "{}", humantime::format_rfc3339_micros(now));
        }
    }
}

/// Whether `value` needs no escape in either format: printable ASCII without `"` or `\\`.
fn is_plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Whether a byte must be escaped inside a JSON string.
fn json_escaped(b: u8) -> bool {
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// Whether any byte of `bytes` must be escaped in a JSON string.
fn any_json_escaped(bytes: &[u8]) -> bool {
    any_byte(bytes, json_escaped)
}

/// Whether `escaped` holds for any byte of `bytes`. Sixteen bytes at a time, in a loop of
/// fixed length that the compiler turns into vector compares.
#[inline(always)]
fn any_byte(bytes: &[u8], escaped: impl Fn(u8) -> bool + Copy) -> bool {
    let any_in = |chunk: &[u8; 16]| {
        let mut any = false;
        for &b in chunk {
            any |= escaped(b);
        }
        any
    };
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if any_in(chunk.try_into().expect("16 bytes")) {
            return true;
        }
    }
    // The tail, padded with a byte that needs no escape, through the same vector compare.
    let tail = chunks.remainder();
    let mut padded = [b' '; 16];
    padded[..tail.len()].copy_from_slice(tail);
    any_in(&padded)
}

/// `value` between double quotes, as is: for a value that needs no escape in either format.
#[inline(always)]
fn quoted(out: &mut Vec<u8>, value: &[u8]) {
    out.push(b'"');
    out.extend_from_slice(value);
    out.push(b'"');
}

/// `value` as a JSON string.
fn json_string(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    // Most values need no escape: one check, one copy.
    if !any_json_escaped(bytes) {
        return quoted(out, bytes);
    }
    out.push(b'"');
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !json_escaped(b) {
            continue;
        }
        out.extend_from_slice(&bytes[plain..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.extend_from_slice(&crate::hex::digits(b));
            }
        }
        plain = i + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

/// `value` quoted and escaped as Rust's `Debug` shows a string (what `tracing`'s text format
/// writes for a `&str` field).
fn debug_string(out: &mut Vec<u8>, value: &str) {
    let escaped = |b: u8| !(0x20..0x7f).contains(&b) | (b == b'"') | (b == b'\\');
    if !any_byte(value.as_bytes(), escaped) {
        quoted(out, value.as_bytes());
    } else {
        let _ = write!(out, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;

    #[test]
    fn addresses_are_written_as_display_shows_them_whatever_came_before() {
        let addresses: Vec<std::net::IpAddr> = [
            "127.0.0.1",
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "2001:db8::1",
            "::ffff:192.0.2.1",
            "2001:db8::1",
            "10.0.0.9",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        for value in addresses {
            let mut out = b"x=".to_vec();
            address(&mut out, value);
            assert_eq!(out, format!("x={value}").into_bytes());
        }
    }

    #[test]
    fn an_escape_is_found_at_every_position_of_every_length() {
        for len in 0..70 {
            let plain = vec![b'a'; len];
            assert!(!any_json_escaped(&plain));
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                    let mut bytes = plain.clone();
                    bytes[at] = special;
                    assert!(any_json_escaped(&bytes), "len {len} at {at}");
                }
            }
        }
        assert!(!any_json_escaped("é ü ~ \u{7f} \u{2028}".as_bytes()));
    }

    #[test]
    fn text_strings_are_quoted_as_debug_shows_them_whatever_the_position_of_an_escape() {
        for len in 0..40 {
            let plain = "a".repeat(len);
            for at in 0..len {
                for special in ['"', '\\', '\n', '\0', '\u{7f}', 'é'] {
                    let mut value = plain.clone();
                    value.replace_range(at..=at, &special.to_string());
                    let mut out = Vec::new();
                    debug_string(&mut out, &value);
                    assert_eq!(out, format!("{value:?}").into_bytes(), "len {len} at {at}");
                }
            }
            let mut out = Vec::new();
            debug_string(&mut out, &plain);
            assert_eq!(out, format!("{plain:?}").into_bytes());
        }
    }

    /// A sink tests can read, and hold shut to fill the buffer.
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            let _open = self.gate.lock().unwrap();
            Ok(())
        }
    }

    /// A writer over `sink` whose dropped lines are counted apart: other tests drop lines too.
    fn spawn_own_counter(
        sink: &Sink,
        capacity: usize,
    ) -> (LogWriter, LogGuard, &'static AtomicU64) {
        let dropped: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let (writer, guard) = spawn_counted(sink.clone(), capacity, dropped, "test").unwrap();
        (writer, guard, dropped)
    }

    fn line(writer: &LogWriter, text: &str) {
        let mut line = writer.make_writer();
        line.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn every_appended_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), 1 << 20).unwrap();
        for i in 0..500 {
            line(&writer, &format!("line {i}\n"));
        }
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..500).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written, expected);
    }

    #[test]
    fn lines_from_many_threads_stay_whole() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), 1 << 20).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let writer = writer.clone();
                scope.spawn(move || {
                    for i in 0..200 {
                        let mut line = writer.make_writer();
                        // Written in pieces, as the formatter does.
                        write!(line, "thread {t} ").unwrap();
                        write!(line, "line {i}").unwrap();
                        line.write_all(b"\n").unwrap();
                    }
                });
            }
        });
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 800);
        for t in 0..4 {
            let ours: Vec<&str> = written
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> = (0..200).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(ours, expected, "thread {t}'s lines, whole and in order");
        }
    }

    #[test]
    fn a_line_reaches_the_sink_within_the_flush_interval_without_more_traffic() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(sink.clone(), 1 << 20).unwrap();
        let started = Instant::now();
        line(&writer, "alone\n");
        // Bounded: the writer flushes every FLUSH_EVERY; give it twenty of them.
        while sink.written.lock().unwrap().is_empty() {
            assert!(
                started.elapsed() < FLUSH_EVERY * 20,
                "the line never reached the sink"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.written.lock().unwrap().as_slice(), b"alone\n");
    }

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them_instead_of_waiting() {
        let sink = Sink::default();
        let closed = sink.gate.lock().unwrap();
        // Room for 8 lines of 8 bytes; the writer blocks on the closed sink with its first
        // batch, so the buffer then fills and the rest are dropped, and no call here blocks.
        let (writer, guard, dropped_here) = spawn_own_counter(&sink, 64);
        let dropped_lines = || dropped_here.load(Ordering::Relaxed);
        let before = dropped_lines();
        for i in 0..40 {
            line(&writer, &format!("line {i:02}\n"));
        }
        let dropped = dropped_lines() - before;
        assert!((16..=32).contains(&dropped), "{dropped} dropped");
        drop(closed);
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let kept = written.lines().count() as u64;
        assert_eq!(kept + dropped, 40, "every line is written or counted");
        // The first 8 always fit; which later ones found room depends on when the writer
        // took its batch, but what is kept is in order.
        let first: String = (0..8).map(|i| format!("line {i:02}\n")).collect();
        assert!(
            written.starts_with(&first),
            "the first lines are kept: {written}"
        );
        let numbers: Vec<u32> = written
            .lines()
            .map(|l| l.trim_start_matches("line ").parse().unwrap())
            .collect();
        assert!(numbers.is_sorted(), "kept lines in order: {written}");
    }

    #[test]
    fn a_small_share_wakes_the_writer_at_half_of_it() {
        assert_eq!(
            share(QUEUE_BYTES, 1, WAKE_AT_BYTES),
            (QUEUE_BYTES, WAKE_AT_BYTES)
        );
        // 512 threads that log: 32 KiB each, woken at 16 KiB rather than at 256 KiB, which
        // such a buffer would never reach.
        assert_eq!(
            share(QUEUE_BYTES, 512, WAKE_AT_BYTES),
            (32 * 1024, 16 * 1024)
        );
        assert_eq!(share(64, 0, 32), (64, 32));
    }

    #[test]
    fn a_record_larger_than_the_room_leaves_nothing_behind() {
        let sink = Sink::default();
        let (writer, guard, dropped_here) = spawn_own_counter(&sink, 64);
        // Formatted in place in the buffer, then found too long: cut back whole.
        writer.json_event(SystemTime::now(), |record| {
            record.str(log_field!("long"), &"x".repeat(100));
        });
        writer.json_event(SystemTime::now(), |record| {
            record.u64(log_field!("n"), 1);
        });
        drop(guard);
        assert_eq!(dropped_here.load(Ordering::Relaxed), 1);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        assert_eq!(written.lines().count(), 1, "{written}");
        assert!(written.ends_with(",\"n\":1}\n"), "{written}");
    }

    #[test]
    fn the_room_is_shared_among_the_threads_that_log_and_a_gone_threads_lines_are_written() {
        let sink = Sink::default();
        let closed = sink.gate.lock().unwrap();
        // Room for 16 lines of 8 bytes in all. A second thread logs once (and exits), so
        // this thread's share is 8 lines; the writer may hold one more batch, blocked on the
        // closed sink. With the whole room to itself this thread would keep up to 32.
        let (writer, guard, dropped_here) = spawn_own_counter(&sink, 128);
        let dropped_lines = || dropped_here.load(Ordering::Relaxed);
        line(&writer, "main 00\n");
        std::thread::scope(|scope| {
            scope.spawn(|| line(&writer, "gone 00\n"));
        });
        let before = dropped_lines();
        for i in 1..=20 {
            line(&writer, &format!("main {i:02}\n"));
        }
        let dropped = dropped_lines() - before;
        assert!(
            dropped >= 5,
            "{dropped} dropped: this thread took more than its share"
        );
        drop(closed);
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        assert!(
            written.contains("gone 00\n"),
            "the exited thread's line is written"
        );
        let ours = written.lines().filter(|l| l.starts_with("main")).count() as u64;
        assert_eq!(ours + dropped, 21, "every line is written or counted");
    }

    /// The same record written by `tracing-subscriber` (as the binary configures it) and by
    /// [`Direct`], for both formats.
    fn both_ways(json: bool) -> (String, String) {
        use tracing_subscriber::fmt::MakeWriter as _;
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), 1 << 20).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer.clone());
        let tricky = "a \"quoted\" \\ path\n\twith \u{1b}[2K and é";
        let peer: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let log = || {
            tracing::info!(
                target: "streamgate::access",
                request_id = "abc",
                method = %http::Method::GET,
                path = tricky,
                status = 302u64,
                latency_ms = 1.321064f64,
                body_bytes = Some(42u64),
                truncated = false,
                peer = %peer,
                client = %"192.0.2.7".parse::<std::net::IpAddr>().unwrap(),
                "request"
            );
        };
        if json {
            tracing::subscriber::with_default(subscriber.json().flatten_event(true).finish(), log);
        } else {
            tracing::subscriber::with_default(subscriber.finish(), log);
        }
        let direct = Direct {
            shared: Arc::clone(&writer.shared),
            json,
        };
        direct.info(
            SystemTime::now(),
            "streamgate::access",
            "request",
            |record| {
                record
                    .str(log_field!("request_id"), "abc")
                    .bare(log_field!("method"), "GET")
                    .str(log_field!("path"), tricky)
                    .u64(log_field!("status"), 302)
                    .millis(log_field!("latency_ms"), Duration::from_nanos(1_321_064))
                    .u64(log_field!("body_bytes"), 42)
                    .bool(log_field!("truncated"), false)
                    .ip(log_field!("peer"), peer)
                    .ip(log_field!("client"), "192.0.2.7".parse().unwrap());
            },
        );
        drop(writer.make_writer());
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let mut lines = written.lines().map(str::to_string);
        (lines.next().unwrap(), lines.next().unwrap())
    }

    #[test]
    fn direct_json_records_carry_what_the_subscriber_writes() {
        let (traced, direct) = both_ways(true);
        let mut traced: serde_json::Value = serde_json::from_str(&traced).unwrap();
        let mut direct: serde_json::Value = serde_json::from_str(&direct).unwrap();
        let stamp = direct["timestamp"].as_str().unwrap().to_string();
        assert_eq!(stamp.len(), "2026-12-01T11:30:05.236260Z".len(), "{stamp}");
        traced.as_object_mut().unwrap().remove("timestamp");
        direct.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(direct, traced);
    }

    #[test]
    fn direct_text_records_read_as_the_subscriber_writes_them() {
        let (traced, direct) = both_ways(false);
        let after_stamp = |line: &str| line.split_once("  ").unwrap().1.to_string();
        assert_eq!(after_stamp(&direct), after_stamp(&traced));
        assert!(!direct.contains('\u{1b}'), "{direct}");
    }

    #[test]
    fn timestamps_and_numbers_are_written_as_core_fmt_would() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_117_405);
        for offset in [0, 7, 999_999, 1_000_000, 86_400_000_123] {
            let now = base + Duration::from_micros(offset);
            let mut out = Vec::new();
            timestamp(&mut out, now);
            let expected = humantime::format_rfc3339_micros(now).to_string();
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
        for value in [
            0,
            7,
            9,
            10,
            99,
            100,
            255,
            302,
            999,
            1000,
            18_446_744_073_709_551_615,
        ] {
            let mut out = Vec::new();
            decimal(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }
        for value in [
            0, 1, 9, 10, 99, 100, 4_207, 99_999, 100_000, 999_999, 1_000_000, 1_234_567,
        ] {
            let mut out = Vec::new();
            six_digits(&mut out, value);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{:06}", value % 1_000_000)
            );
        }
        let mut out = Vec::new();
        let mut record = Record {
            out: &mut out,
            json: false,
        };
        record
            .millis(log_field!("a"), Duration::from_nanos(33_362))
            .millis(log_field!("b"), Duration::from_secs(2))
            .ip(log_field!("v6"), "2001:db8::1".parse().unwrap())
            .bare(log_field!("odd"), "a b");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            " a=0.033362 b=2000.000000 v6=2001:db8::1 odd=\"a b\""
        );
    }
}
