//! The manager's pull subscription: one long-lived inbox on which the driver asks JetStream for
//! exactly as many events as it has free slots, and tops the request up as slots free.
//!
//! async-nats' own pull streams either prefetch a fixed batch (`messages`), which would hand
//! one instance more events than it can start and starve the others, or open a new inbox per
//! request (`batch`), which costs a subscribe and an unsubscribe per freed slot. Here the
//! requests share one inbox, and the count of events requested but not yet delivered is kept
//! from what comes back: each event takes one, a request that expires gives back the number
//! the server reports as unfilled (`Nats-Pending-Messages`).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use async_nats::{Client, StatusCode, Subscriber};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::wire::subjects;

/// How long one pull request waits on the server for events. Short enough that requests lost
/// in a server restart are noticed soon: the server answers every request within this time,
/// so [`LOST_AFTER`] of silence while events are requested means they are gone.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// Silence after which outstanding requests are presumed lost.
const LOST_AFTER: Duration = Duration::from_secs(7);

/// What came back on the inbox.
// Events are by far the most frequent variant; boxing them would allocate once per event.
#[allow(clippy::large_enum_variant)]
pub(super) enum Pulled {
    /// An event, for one of the requested slots.
    Event(jetstream::Message),
    /// Requests ended with this many events not delivered: those slots are free again.
    Unfilled(usize),
    /// The outstanding requests are gone (server restart, consumer deleted or moved, an
    /// answer that cannot be accounted for): every requested slot is free again, and the
    /// consumer should be bound anew.
    Lost(String),
}

pub(super) struct Puller {
    client: Client,
    context: jetstream::Context,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    subject: String,
    inbox: async_nats::Subject,
    subscriber: Subscriber,
    /// Events requested and neither delivered nor reported unfilled yet.
    requested: usize,
    /// The last time a request went out or anything came back; every request is answered
    /// within [`PULL_EXPIRES`] of going out.
    last_activity: Instant,
}

impl Puller {
    /// Subscribes the inbox for `consumer`'s events.
    pub(super) async fn new(
        js: &jetstream::Context,
        client: &Client,
        consumer: &PullConsumer,
    ) -> Result<Self, async_nats::SubscribeError> {
        let inbox = async_nats::Subject::from(client.new_inbox());
        let subscriber = client.subscribe(inbox.clone()).await?;
        let name = &consumer.cached_info().name;
        Ok(Self {
            client: client.clone(),
            context: js.clone(),
            subject: format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{name}",
                subjects::MESSAGES_STREAM
            ),
            inbox,
            subscriber,
            requested: 0,
            last_activity: Instant::now(),
        })
    }

    /// Asks for `count` more events.
    pub(super) async fn request(&mut self, count: usize) -> Result<(), async_nats::PublishError> {
        // The expiry is in nanoseconds, as the JetStream API wants it.
        let body = format!(
            r#"{{"batch":{count},"expires":{}}}"#,
            PULL_EXPIRES.as_nanos()
        );
        self.client
            .publish_with_reply(self.subject.clone(), self.inbox.clone(), body.into())
            .await?;
        self.requested += count;
        self.last_activity = Instant::now();
        Ok(())
    }

    /// The next event or accounting change. Cancel-safe: nothing is lost if the future is
    /// dropped before it completes.
    pub(super) async fn next(&mut self) -> Pulled {
        loop {
            let silence = tokio::time::sleep_until(self.last_activity + LOST_AFTER);
            let message = tokio::select! {
                message = self.subscriber.next() => message,
                () = silence, if self.requested > 0 => {
                    return self.lost(format!(
                        "no answer to pull requests for {LOST_AFTER:?}"
                    ));
                }
            };
            self.last_activity = Instant::now();
            let Some(message) = message else {
                return self.lost("the subscription ended".to_owned());
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    self.requested = self.requested.saturating_sub(1);
                    return Pulled::Event(jetstream::Message {
                        message,
                        context: self.context.clone(),
                    });
                }
                Some(StatusCode::IDLE_HEARTBEAT) => continue,
                Some(status) => match unfilled(&message) {
                    Some(count) if is_request_end(status) => {
                        self.requested = self.requested.saturating_sub(count);
                        return Pulled::Unfilled(count);
                    }
                    _ => {
                        let description = message.description.unwrap_or_default();
                        return self.lost(format!("pull request ended: {status} {description}"));
                    }
                },
            }
        }
    }

    fn lost(&mut self, reason: String) -> Pulled {
        self.requested = 0;
        Pulled::Lost(reason)
    }

    /// Stops receiving and returns the events that had already arrived, for the caller to
    /// hand back. Drains the subscription, so an event the server sent before it saw the
    /// unsubscribe is returned too rather than dropped (it would only come back after the
    /// ack wait).
    pub(super) async fn close(mut self) -> Vec<jetstream::Message> {
        let mut arrived = Vec::new();
        if self.subscriber.drain().await.is_err() {
            return arrived;
        }
        let collect = async {
            while let Some(message) = self.subscriber.next().await {
                if matches!(message.status, None | Some(StatusCode::OK)) {
                    arrived.push(jetstream::Message {
                        message,
                        context: self.context.clone(),
                    });
                }
            }
        };
        // The drain ends the subscription after one round trip; a dead connection does not.
        let _ = tokio::time::timeout(Duration::from_secs(2), collect).await;
        arrived
    }
}

/// Statuses with which the server ends a request that was not filled: 408 when it expired,
/// 409 when it was ended otherwise.
fn is_request_end(status: StatusCode) -> bool {
    status == StatusCode::TIMEOUT || status == StatusCode::REQUEST_TERMINATED
}

/// How many events the ended request did not deliver, from its `Nats-Pending-Messages`.
fn unfilled(message: &async_nats::Message) -> Option<usize> {
    message
        .headers
        .as_ref()?
        .get("Nats-Pending-Messages")?
        .as_str()
        .parse()
        .ok()
}
