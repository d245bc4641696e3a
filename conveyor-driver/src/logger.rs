//! The Driver Logger: a run's log, published to Conveyor and mirrored to local `tracing`.
//!
//! Logging is synchronous and never fails: a line is handed to the run's publisher, which
//! publishes it (JetStream to `logs.<run_id>`, core NATS to `live.logs.<run_id>.<driver>`) and
//! watches its acknowledgement. The publisher is a future driven by the event's own task
//! beside the reconcile, not a task of its own: a task per run would cost a spawn and a
//! wake-up of its own per event.
//!
//! The runtime publishes the run's result once every line is handed to the connection, so
//! the lines reach the server, and every subscriber, before the result does. It does not wait
//! for their acknowledgements first (that would add a round trip to JetStream per event), but
//! it [flushes](Logger::flush) the log before it acknowledges the event.
//!
//! A line too large for one message (the server's `max_payload`, headers and JSON body
//! counted) is published as consecutive lines that fit, cut on character boundaries, so no
//! text is lost. Every line carries a `Nats-Msg-Id` (see `sizing`) so that JetStream stores
//! it once.
//!
//! The lines an instance holds are bounded in bytes ([`Config::log_buffer`]); when NATS does
//! not take them fast enough, new lines are dropped and counted, and the run's log gets one
//! line saying how many went missing, where they went missing.
//!
//! [`Config::log_buffer`]: crate::Config::log_buffer

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::jetstream;
use chrono::{SecondsFormat, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::wire::{subjects, LogEntry};

mod buffer;
mod publisher;
pub(crate) use buffer::LogBuffer;
use publisher::Publisher;

/// The per-event logger handed to `reconcile`. Cheap to clone, `Send` and `Sync`.
///
/// ```no_run
/// # use conveyor_driver::Logger;
/// # async fn demo(log: Logger) {
/// log.log("cloning repository");
/// log.log_with_labels("step finished", [("step", "test"), ("exit_code", "0")]);
/// log.flush().await; // optional: the runtime flushes before acknowledging the event
/// # }
/// ```
#[derive(Clone)]
pub struct Logger {
    inner: Arc<Inner>,
}

struct Inner {
    context: RunContext,
    sink: Sink,
}

/// Where a logger's lines go besides the local `tracing` mirror.
enum Sink {
    /// The run's NATS publisher (the runtime).
    Publish(Publishing),
    /// Nowhere else ([`Logger::local`]).
    Local,
    /// Collected in memory as they would be published (test kit, `invoke`).
    Capture(Arc<Capture>),
}

/// The sending side of a run's publisher.
struct Publishing {
    commands: mpsc::UnboundedSender<Command>,
    /// The instance's byte bound; a line that does not fit is dropped.
    buffer: Arc<LogBuffer>,
    /// Lines dropped since the last one sent: reported in the log before the next line.
    dropped: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Publishing {
    fn send(&self, line: Line) {
        if !self.buffer.take(line.bytes()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.log_line_dropped();
            return;
        }
        self.report_dropped();
        // The publisher only stops once every sender is gone, so this cannot fail while
        // `self` exists; a send error would mean the task panicked, already reported.
        let _ = self.commands.send(Command::Line(line));
    }

    /// Queues the line saying how many lines were dropped, if any were, since the last one.
    fn report_dropped(&self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = self.commands.send(Command::Dropped(dropped));
        }
    }
}

/// A run's log publishing: publishes the lines in order and waits for their acknowledgements;
/// it ends once every clone of the run's [`Logger`] is gone and the last line is settled. The
/// event's task polls it beside the reconcile ([`Logger::flush`] waits on it), and spawns
/// what is left of it if a clone of the logger outlives the event.
pub(crate) type LogPublishing = futures_util::future::BoxFuture<'static, ()>;

/// A callback seeing each captured line as it is logged (`invoke` prints them live).
pub(crate) type OnLine = Box<dyn Fn(&LogLine) + Send + Sync>;

/// The lines a capturing logger collected, optionally passed to a callback as they come.
pub(crate) struct Capture {
    lines: std::sync::Mutex<Vec<LogLine>>,
    on_line: Option<OnLine>,
}

impl Capture {
    pub(crate) fn new(on_line: Option<OnLine>) -> Arc<Self> {
        Arc::new(Self {
            lines: std::sync::Mutex::new(Vec::new()),
            on_line,
        })
    }

    /// The lines collected so far.
    pub(crate) fn lines(&self) -> Vec<LogLine> {
        // A poisoned lock only means a callback panicked; the lines are still valid.
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One run log line exactly as the runtime publishes it: the JSON body of `logs.<run_id>`
/// (a schema-valid [`LogEntry`]) and the label headers that travel with it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// The JSON body.
    pub entry: LogEntry,
    /// The custom labels, as `(key, value)`; on the wire the headers `Conveyor-Label-<key>`.
    pub labels: Vec<(String, String)>,
}

impl LogLine {
    /// The JSON body as published.
    ///
    /// ```
    /// # use conveyor_driver::testing::LogLine;
    /// # use conveyor_driver::wire::LogEntry;
    /// let line = LogLine {
    ///     entry: LogEntry { runid: "r".into(), driver: "d".into(), pipeline: None,
    ///                       timestamp: "2026-01-01T00:00:00Z".into(), message: "hi".into() },
    ///     labels: vec![],
    /// };
    /// assert_eq!(line.json()["message"], "hi");
    /// ```
    pub fn json(&self) -> serde_json::Value {
        serde_json::to_value(&self.entry).unwrap_or(serde_json::Value::Null)
    }

    /// The NATS headers published with the line: one `Conveyor-Label-<key>` per label.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.labels
            .iter()
            .map(|(key, value)| {
                (
                    format!("{}{key}", subjects::LABEL_HEADER_PREFIX),
                    value.clone(),
                )
            })
            .collect()
    }

    /// The value of label `key`, if the line has it.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Who a log line belongs to; stamped on every line and on the local output.
#[derive(Debug, Clone)]
pub(crate) struct RunContext {
    pub(crate) run_id: String,
    pub(crate) driver: String,
    pub(crate) pipeline: Option<String>,
    pub(crate) event: String,
    pub(crate) resource: String,
    /// The DriverMessage's `id` and the delivery attempt: with the line number, they make
    /// each line's `Nats-Msg-Id`.
    pub(crate) message_id: String,
    pub(crate) attempt: u64,
    /// The reconcile span's trace context, sent with every line.
    pub(crate) trace: crate::otel::RunTrace,
}

enum Command {
    Line(Line),
    /// This many lines were dropped here, the buffer being full.
    Dropped(u64),
    /// Answered once the lines before it are handed to the connection.
    Sent(oneshot::Sender<()>),
    /// Answered once the lines before it are acknowledged (or failed for good).
    Flush(oneshot::Sender<()>),
}

struct Line {
    message: String,
    labels: Vec<(String, String)>,
    timestamp: String,
}

impl Line {
    /// What the line counts against the log buffer: its text and its labels.
    fn bytes(&self) -> usize {
        let labels: usize = self.labels.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.message.len() + labels
    }
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("run_id", &self.inner.context.run_id)
            .field("driver", &self.inner.context.driver)
            .field("publishing", &matches!(self.inner.sink, Sink::Publish(_)))
            .finish()
    }
}

impl Logger {
    /// A logger publishing to NATS, and the publisher that does it: the caller drives it
    /// (see [`LogPublishing`]). Its lines count against `buffer`.
    pub(crate) fn publishing(
        context: RunContext,
        client: async_nats::Client,
        js: jetstream::Context,
        metrics: Arc<Metrics>,
        buffer: Arc<LogBuffer>,
    ) -> (Self, LogPublishing) {
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = Publisher::new(
            context.clone(),
            client,
            js,
            Arc::clone(&metrics),
            Arc::clone(&buffer),
        );
        let logger = Self {
            inner: Arc::new(Inner {
                context,
                sink: Sink::Publish(Publishing {
                    commands: tx,
                    buffer,
                    dropped: AtomicU64::new(0),
                    metrics,
                }),
            }),
        };
        (logger, Box::pin(publisher.run(rx)))
    }

    /// A logger collecting its lines into `capture` (test kit, offline `invoke`).
    pub(crate) fn capturing(context: RunContext, capture: Arc<Capture>) -> Self {
        Self {
            inner: Arc::new(Inner {
                context,
                sink: Sink::Capture(capture),
            }),
        }
    }

    /// A logger that only writes to the local `tracing` output: for unit tests and for running
    /// a driver without a NATS server.
    pub fn local(run_id: impl Into<String>, driver: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                context: RunContext {
                    run_id: run_id.into(),
                    driver: driver.into(),
                    pipeline: None,
                    event: String::new(),
                    resource: String::new(),
                    message_id: String::new(),
                    attempt: 1,
                    trace: Default::default(),
                },
                sink: Sink::Local,
            }),
        }
    }

    /// The run this logger writes to.
    pub fn run_id(&self) -> &str {
        &self.inner.context.run_id
    }

    /// The driver name stamped on each line.
    pub fn driver(&self) -> &str {
        &self.inner.context.driver
    }

    /// Logs a line to the run's log.
    pub fn log(&self, message: impl Into<String>) {
        self.log_with_labels(message, std::iter::empty::<(String, String)>());
    }

    /// Logs a line with custom labels. Labels travel as `Conveyor-Label-<key>` NATS headers
    /// (the log schema has no room for them) and appear in the local output.
    ///
    /// A label whose key cannot be a header name (empty, non-ASCII, whitespace, `:`) is dropped
    /// with a warning; line breaks in values are replaced by spaces.
    pub fn log_with_labels<I, K, V>(&self, message: impl Into<String>, labels: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let line = Line {
            message: message.into(),
            labels: labels.into_iter().filter_map(label).collect(),
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        self.emit(line, true);
    }

    /// A line from the tracing bridge: not mirrored to `tracing` again (it came from there).
    pub(crate) fn log_bridged(&self, message: String, labels: Vec<(String, String)>) {
        let line = Line {
            message,
            labels,
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        self.emit(line, false);
    }

    fn emit(&self, line: Line, mirror: bool) {
        let context = &self.inner.context;
        if mirror {
            tracing::info!(
            target: "conveyor_driver::run_log",
            run_id = %context.run_id,
            driver = %context.driver,
            event = %context.event,
            resource = %context.resource,
            labels = ?line.labels,
            "{}",
            line.message
            );
        }
        match &self.inner.sink {
            Sink::Publish(sink) => sink.send(line),
            Sink::Local => {}
            Sink::Capture(capture) => {
                let line = LogLine {
                    entry: entry(context, line.timestamp, line.message),
                    labels: line.labels,
                };
                if let Some(on_line) = &capture.on_line {
                    on_line(&line);
                }
                capture
                    .lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
            }
        }
    }

    /// Waits until every line logged so far is published and acknowledged (or its failure
    /// reported locally).
    pub async fn flush(&self) {
        self.wait_for(Command::Flush).await;
    }

    /// Waits until every line logged so far is handed to the NATS connection: anything
    /// published on it afterwards reaches the server, and every subscriber, after them.
    /// Cheaper than [`flush`](Self::flush) by a round trip to JetStream.
    pub(crate) async fn sent(&self) {
        self.wait_for(Command::Sent).await;
    }

    /// Sends the publisher `command` after the lines so far and waits for its answer.
    async fn wait_for(&self, command: fn(oneshot::Sender<()>) -> Command) {
        if let Sink::Publish(sink) = &self.inner.sink {
            sink.report_dropped();
            let (done, wait) = oneshot::channel();
            if sink.commands.send(command(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }
}

fn label<K: Into<String>, V: Into<String>>((key, value): (K, V)) -> Option<(String, String)> {
    let key = key.into();
    let valid = !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !valid {
        tracing::warn!(label = %key, "log label dropped: its key cannot be a NATS header name");
        return None;
    }
    let value: String = value.into();
    Some((key, value.replace(['\r', '\n'], " ")))
}

/// The wire body of a line of the run `context`.
fn entry(context: &RunContext, timestamp: String, message: String) -> LogEntry {
    LogEntry {
        runid: context.run_id.clone(),
        driver: context.driver.clone(),
        pipeline: context.pipeline.clone(),
        timestamp,
        message,
    }
}
