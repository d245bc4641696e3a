//! The per-run task publishing a logger's lines: in order, split to fit the server's
//! `max_payload`, each with its `Nats-Msg-Id`, their acknowledgements tracked.

use std::future::IntoFuture;
use std::sync::Arc;

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{entry, Command, Line, RunContext};
use crate::metrics::Metrics;
use crate::sizing;
use crate::wire::{subjects, LogEntry};

/// The per-run task that publishes log lines in order and tracks their acknowledgements.
pub(super) struct Publisher {
    pub(super) metrics: Arc<Metrics>,
    pub(super) context: RunContext,
    pub(super) client: async_nats::Client,
    pub(super) js: jetstream::Context,
    pub(super) logs_subject: String,
    pub(super) live_subject: String,
    /// Lines published so far: the last line's number in its `Nats-Msg-Id`.
    pub(super) lines: u64,
}

/// A line's PubAck, being awaited.
type Ack = <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture;

impl Publisher {
    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut acks = FuturesUnordered::new();
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Line(line)) => self.publish(line, &mut acks).await,
                    Some(Command::Flush(done)) => {
                        while let Some(result) = acks.next().await {
                            self.report(result);
                        }
                        let _ = done.send(());
                    }
                    None => break,
                },
                Some(result) = acks.next(), if !acks.is_empty() => self.report(result),
            }
        }
        while let Some(result) = acks.next().await {
            self.report(result);
        }
    }

    /// Publishes `line`, split into consecutive lines when it does not fit in one message.
    async fn publish(&mut self, line: Line, acks: &mut FuturesUnordered<Ack>) {
        let Line {
            message,
            mut labels,
            timestamp,
        } = line;
        let limit = sizing::max_payload(&self.client);
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
            if let Some(ack) = self.publish_one(&entry, &labels).await {
                acks.push(ack.into_future());
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

    /// Publishes one line that fits: live (core NATS) and persisted (JetStream).
    async fn publish_one(
        &mut self,
        entry: &LogEntry,
        labels: &[(String, String)],
    ) -> Option<jetstream::context::PublishAckFuture> {
        let payload = match serde_json::to_vec(entry) {
            Ok(json) => Bytes::from(json),
            Err(err) => {
                tracing::warn!(run_id = %self.context.run_id, error = %err, "log line not encodable");
                return None;
            }
        };
        self.lines += 1;
        let headers = self.headers(labels, self.lines).into_map();
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
            Ok(ack) => Some(ack),
            Err(err) => {
                self.metrics.log_publish_failed();
                tracing::warn!(run_id = %self.context.run_id, error = %err, "log publish failed");
                None
            }
        }
    }

    fn report(
        &self,
        result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) {
        if let Err(err) = result {
            self.metrics.log_publish_failed();
            tracing::warn!(run_id = %self.context.run_id, error = %err, "log line not persisted");
        }
    }
}
