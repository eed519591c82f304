//! Log lines written off the request path: each formatted line goes into a bounded queue, and
//! one writer thread moves the queue into a buffered writer, flushing whenever the queue runs
//! dry (so at once when traffic is light, in large batches when it is heavy) and at least every
//! [`FLUSH_EVERY`].
//!
//! A request thread never waits for the log: when the queue is full the line is dropped and
//! counted ([`dropped_lines`], exported as `streamgate_log_lines_dropped_total`). Waiting
//! would turn a slow log sink (a full pipe, a stalled collector) into a stalled gateway.
//! [`LogGuard`] flushes everything queued before it when it is dropped, so a graceful shutdown
//! loses no line.

use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// The longest a written line waits in the buffer before it reaches the sink.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Lines the queue holds before new ones are dropped.
pub const QUEUE_LINES: usize = 65_536;

/// Lines dropped because the queue was full, since the process started.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

enum Message {
    Line(Vec<u8>),
    /// Flush everything before this and stop.
    Stop,
}

/// The `MakeWriter` the log formatter writes through: cheap to clone, one queue per process.
#[derive(Clone)]
pub struct LogWriter {
    queue: SyncSender<Message>,
}

/// Stops the writer thread when dropped, after it has written and flushed every line queued
/// before.
pub struct LogGuard {
    queue: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

/// Start the writer thread over `sink`, with room for `capacity` lines.
pub fn spawn<W: Write + Send + 'static>(
    sink: W,
    capacity: usize,
) -> io::Result<(LogWriter, LogGuard)> {
    let (queue, lines) = mpsc::sync_channel(capacity);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(lines, sink))?;
    Ok((
        LogWriter {
            queue: queue.clone(),
        },
        LogGuard {
            queue,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: write what is queued, flush when the queue is empty or
/// [`FLUSH_EVERY`] has passed, until told to stop.
fn write_lines<W: Write>(lines: Receiver<Message>, sink: W) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    loop {
        let first = match lines.recv_timeout(FLUSH_EVERY) {
            Ok(message) => message,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                // A sink that fails has nowhere to report it: the log is where it would go.
                Message::Line(line) => drop(out.write_all(&line)),
                Message::Stop => {
                    let _ = out.flush();
                    return;
                }
            }
            // Whatever else is already queued goes into the same flush.
            next = lines.try_recv().ok();
        }
        let _ = out.flush();
    }
    let _ = out.flush();
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        // Blocking on purpose: shutdown waits for the queue to drain.
        if self.queue.send(Message::Stop).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

/// One formatted line, collected as the formatter writes it and queued when it is done.
pub struct Line<'a> {
    buffer: Vec<u8>,
    queue: &'a SyncSender<Message>,
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            buffer: Vec::with_capacity(256),
            queue: &self.queue,
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
        if self.buffer.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buffer);
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            // The writer has stopped (the process is exiting): write directly.
            Err(TrySendError::Disconnected(Message::Line(line))) => {
                let _ = io::stderr().write_all(&line);
            }
            Err(TrySendError::Disconnected(Message::Stop)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A sink tests can read, and hold shut to fill the queue.
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

    fn line(writer: &LogWriter, text: &str) {
        let mut line = writer.make_writer();
        line.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn every_queued_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), 1024).unwrap();
        for i in 0..500 {
            line(&writer, &format!("line {i}\n"));
        }
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..500).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written, expected);
    }

    #[test]
    fn a_full_queue_drops_lines_and_counts_them_instead_of_waiting() {
        let sink = Sink::default();
        let closed = sink.gate.lock().unwrap();
        let (writer, guard) = spawn(sink.clone(), 4).unwrap();
        let before = dropped_lines();
        // The writer thread blocks on its first flush into the closed sink; the queue then
        // holds 4 more lines and the rest are dropped, and no call here blocks.
        for i in 0..20 {
            line(&writer, &format!("line {i}\n"));
        }
        let dropped = dropped_lines() - before;
        assert!((1..=16).contains(&dropped), "{dropped} dropped");
        drop(closed);
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let kept: String = (0..20 - dropped).map(|i| format!("line {i}\n")).collect();
        assert_eq!(written, kept, "the first lines are kept, in order");
    }
}
