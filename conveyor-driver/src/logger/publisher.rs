//! The per-run publisher of a logger's lines: in order, split to fit the server's
//! `max_payload`, each with its `Nats-Msg-Id`, their acknowledgements tracked. A line's room
//! in the log buffer is given back once JetStream acknowledged it (or it failed for good), so
//! the bound covers what waits in the NATS client too.

use std::future::IntoFuture;
use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use chrono::{SecondsFormat, Utc};

use super::{entry, Command, Line, LogBuffer, RunContext};
use crate::metrics::Metrics;
use crate::sizing;
use crate::wire::{subjects, LogEntry};

/// The per-run publisher of log lines, in order, tracking their acknowledgements.
pub(super) struct Publisher {
    metrics: Arc<Metrics>,
    buffer: Arc<LogBuffer>,
    context: RunContext,
    client: async_nats::Client,
    js: jetstream::Context,
    logs_subject: String,
    live_subject: String,
    /// Lines published so far: the last line's number in its `Nats-Msg-Id`.
    lines: u64,
}

/// A line's PubAck, being awaited, with the bytes of log buffer it gives back.
type Ack = BoxFuture<'static, (PublishResult, usize)>;
type PublishResult = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>;

impl Publisher {
    pub(super) fn new(
        context: RunContext,
        client: async_nats::Client,
        js: jetstream::Context,
        metrics: Arc<Metrics>,
        buffer: Arc<LogBuffer>,
    ) -> Self {
        Self {
            metrics,
            buffer,
            logs_subject: subjects::logs(&context.run_id),
            live_subject: subjects::live_logs(&context.run_id, &context.driver),
            context,
            client,
            js,
            lines: 0,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut acks = FuturesUnordered::new();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Line(line)) => self.publish(line, &mut acks).await,
                    Some(Command::Dropped(count)) => self.publish_dropped(count, &mut acks).await,
                    Some(Command::Sent(done)) => {
                        let _ = done.send(());
                    }
                    Some(Command::Flush(done)) => {
                        while let Some(acked) = acks.next().await {
                            self.report(acked);
                        }
                        let _ = done.send(());
                    }
                    None => break,
                },
                Some(acked) = acks.next(), if !acks.is_empty() => self.report(acked),
            }
        }
        while let Some(acked) = acks.next().await {
            self.report(acked);
        }
    }

    /// Publishes the line saying that `count` lines were dropped here (outside the buffer's
    /// bound: it is small, and it is what tells the reader that lines are missing).
    async fn publish_dropped(&mut self, count: u64, acks: &mut FuturesUnordered<Ack>) {
        let limit = self.buffer.limit();
        tracing::warn!(run_id = %self.context.run_id, count, limit, "log lines dropped: the log buffer was full");
        let message = format!(
            "{count} log lines dropped here: the log buffer of {limit} bytes was full (NATS was not taking the lines as fast as they came)"
        );
        let line = Line {
            message,
            labels: Vec::new(),
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        };
        self.publish_pieces(line, 0, acks).await;
    }

    /// Publishes `line`, which holds its bytes of the log buffer.
    async fn publish(&mut self, line: Line, acks: &mut FuturesUnordered<Ack>) {
        let held = line.bytes();
        self.publish_pieces(line, held, acks).await;
    }

    /// Publishes `line`, split into consecutive lines when it does not fit in one message;
    /// each piece's ack gives back its part of the `held` buffer bytes.
    async fn publish_pieces(&mut self, line: Line, held: usize, acks: &mut FuturesUnordered<Ack>) {
        let mut held = Held(Arc::clone(&self.buffer), held);
        let Line {
            message,
            mut labels,
            timestamp,
        } = line;
        let limit = sizing::max_payload(&self.client);
        // Nearly every line fits whole: it is encoded once, and measured for splitting only
        // when it does not.
        let whole = entry(&self.context, timestamp, message);
        let Some((payload, headers)) = self.encode(&whole, &labels) else {
            return;
        };
        if payload.len() + headers.wire_len() <= limit {
            let bytes = held.part(usize::MAX);
            return self.send(payload, headers, bytes, acks).await;
        }
        let LogEntry {
            timestamp, message, ..
        } = whole;
        let mut budget = self.budget(&timestamp, &labels, limit);
        if budget < sizing::MIN_BUDGET && !labels.is_empty() {
            tracing::warn!(run_id = %self.context.run_id, "log labels dropped: with them the line cannot fit the server's max_payload");
            labels.clear();
            budget = self.budget(&timestamp, &labels, limit);
        }
        if budget < sizing::MIN_BUDGET {
            self.metrics.log_publish_failed();
            tracing::warn!(run_id = %self.context.run_id, limit, "log line not published: its run context alone exceeds the server's max_payload");
            return;
        }
        for piece in sizing::split(&message, budget) {
            let entry = entry(&self.context, timestamp.clone(), piece.to_owned());
            let bytes = held.part(piece.len());
            match self.encode(&entry, &labels) {
                Some((payload, headers)) => self.send(payload, headers, bytes, acks).await,
                None => self.buffer.give_back(bytes),
            }
        }
    }

    /// The bytes left for the message text of a line, once its JSON body, its labels and its
    /// `Nats-Msg-Id` (with the widest line number) are counted.
    fn budget(&self, timestamp: &str, labels: &[(String, String)], limit: usize) -> usize {
        let empty = entry(&self.context, timestamp.to_owned(), String::new());
        let body = serde_json::to_vec(&empty).map_or(usize::MAX, |json| json.len());
        let headers = self.headers(labels, u64::MAX).wire_len();
        limit.saturating_sub(body.saturating_add(headers))
    }

    /// The headers of line number `line`: its labels, its `Nats-Msg-Id` and the run's trace
    /// context.
    fn headers(&self, labels: &[(String, String)], line: u64) -> sizing::Headers {
        let mut headers = sizing::Headers::new();
        for (key, value) in labels {
            headers.insert(&format!("{}{key}", subjects::LABEL_HEADER_PREFIX), value);
        }
        let context = &self.context;
        let id = sizing::log_msg_id(
            &context.run_id,
            &context.driver,
            &context.message_id,
            context.attempt,
            line,
        );
        headers.msg_id(&id).trace(context.trace.headers())
    }

    /// The body of `entry` and its headers as the next line to be published.
    fn encode(
        &self,
        entry: &LogEntry,
        labels: &[(String, String)],
    ) -> Option<(Bytes, sizing::Headers)> {
        match serde_json::to_vec(entry) {
            Ok(json) => Some((Bytes::from(json), self.headers(labels, self.lines + 1))),
            Err(err) => {
                tracing::warn!(run_id = %self.context.run_id, error = %err, "log line not encodable");
                None
            }
        }
    }

    /// Publishes one line that fits, live (core NATS) and persisted (JetStream); its ack,
    /// awaited in `acks`, gives back `bytes` of the log buffer.
    async fn send(
        &mut self,
        payload: Bytes,
        headers: sizing::Headers,
        bytes: usize,
        acks: &mut FuturesUnordered<Ack>,
    ) {
        self.lines += 1;
        let headers = headers.into_map();
        if let Err(err) = self
            .client
            .publish_with_headers(self.live_subject.clone(), headers.clone(), payload.clone())
            .await
        {
            tracing::warn!(run_id = %self.context.run_id, error = %err, "live log publish failed");
        }
        match self
            .js
            .publish_with_headers(self.logs_subject.clone(), headers, payload)
            .await
        {
            Ok(ack) => acks.push(ack.into_future().map(move |result| (result, bytes)).boxed()),
            Err(err) => {
                self.buffer.give_back(bytes);
                self.metrics.log_publish_failed();
                tracing::warn!(run_id = %self.context.run_id, error = %err, "log publish failed");
            }
        }
    }

    fn report(&self, (result, bytes): (PublishResult, usize)) {
        self.buffer.give_back(bytes);
        if let Err(err) = result {
            self.metrics.log_publish_failed();
            tracing::warn!(run_id = %self.context.run_id, error = %err, "log line not persisted");
        }
    }
}

/// Bytes of the log buffer a line holds, handed to its pieces' acks as they are published;
/// what no piece took is given back when the line is done.
struct Held(Arc<LogBuffer>, usize);

impl Held {
    /// Up to `bytes` of what is held, for one piece.
    fn part(&mut self, bytes: usize) -> usize {
        let part = bytes.min(self.1);
        self.1 -= part;
        part
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.give_back(self.1);
    }
}
