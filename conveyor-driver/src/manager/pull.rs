//! The manager's pull subscription: the driver asks JetStream for exactly as many events as
//! it has free slots, and tops the requests up as slots free.
//!
//! async-nats' own pull streams either prefetch a fixed batch (`messages`), which would hand
//! one instance more events than it can start and starve the others, or open a new inbox per
//! request (`batch`), which costs a subscribe and an unsubscribe per freed slot. Here the
//! requests of a few seconds share one subscription, a *generation*, and the slots they asked
//! for stay reserved in it:
//! - an event takes one of its generation's slots;
//! - a request the server ends unfilled gives back what it did not deliver: 408 and 409 say
//!   how many (`Nats-Pending-Messages`), and a 503 (JetStream cannot serve it yet) gives back
//!   the whole request, whose size its reply subject carries;
//! - a request can also be lost without an answer (a server restart, a consumer leader
//!   change). JetStream does not say which request an event filled, so a loss cannot be told
//!   from a fill. Instead each generation takes new requests for [`PULL_EXPIRES`] only, then
//!   retires; once all its requests have expired, nothing more can arrive on it, and the slots
//!   it still holds are freed. No slot stays reserved by a lost request for longer than a
//!   couple of expiries.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use async_nats::{Client, StatusCode, Subscriber};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::wire::subjects;

/// How long one pull request waits on the server for events, and how long a generation takes
/// new requests.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

/// How long a request made while events are taken ahead waits on the server. Short: what it
/// asks for was decided by reconcile times that may no longer hold (short builds followed by
/// long ones), and a request cannot be taken back once it is in the air.
pub(super) const AHEAD_EXPIRES: Duration = Duration::from_secs(1);

/// How long after its expiry a request can no longer deliver: a margin for a busy server and
/// events still on the wire.
const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

/// How long to wait before asking again when JetStream answered that it cannot serve
/// requests (no responders: the consumer has no leader yet).
const REFUSED_PAUSE: Duration = Duration::from_millis(250);

/// What came back.
// Events are by far the most frequent variant; boxing them would allocate once per event.
#[allow(clippy::large_enum_variant)]
pub(super) enum Pulled {
    /// An event, with the slot requested for it; `None` if it came beyond what was requested
    /// (only after a request was given up for lost; the caller hands it back).
    Event(jetstream::Message, Option<OwnedSemaphorePermit>),
    /// The consumer is gone (deleted) or the subscription ended: bind again.
    Gone(String),
}

/// The requests of a few seconds: one subscription, and the slots reserved for them.
struct Generation {
    /// Request `n` events is answered on `<inbox>.<n>`.
    inbox: String,
    subscriber: Subscriber,
    started: Instant,
    /// When the newest request can no longer deliver; `None` before the first request.
    last_deadline: Option<Instant>,
    /// The slots of events requested and not delivered yet.
    reserved: Option<OwnedSemaphorePermit>,
}

impl Generation {
    async fn new(client: &Client) -> Result<Self, async_nats::SubscribeError> {
        let inbox = client.new_inbox();
        let subscriber = client.subscribe(format!("{inbox}.*")).await?;
        Ok(Self {
            inbox,
            subscriber,
            started: Instant::now(),
            last_deadline: None,
            reserved: None,
        })
    }

    /// Takes up to `count` reserved slots.
    fn take(&mut self, count: usize) -> Option<OwnedSemaphorePermit> {
        let reserved = self.reserved.as_mut()?;
        if count >= reserved.num_permits() {
            return self.reserved.take();
        }
        reserved.split(count)
    }

    /// When it stops taking requests.
    fn retires_at(&self) -> Option<Instant> {
        self.last_deadline.map(|_| self.started + PULL_EXPIRES)
    }
}

pub(super) struct Puller {
    client: Client,
    context: jetstream::Context,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    subject: String,
    /// Takes the new requests.
    current: Generation,
    /// Takes no more requests; closed once they have all expired.
    retiring: Option<Generation>,
    /// Events that arrived on a closed generation, to hand back.
    stray: VecDeque<jetstream::Message>,
    /// No request goes out before this (after JetStream refused one).
    paused_until: Instant,
}

/// Which generation a message came from.
enum Source {
    Current,
    Retiring,
}

/// Why [`Puller::wake`] returned.
enum Wake {
    Message(Source, Option<async_nats::Message>),
    /// The current generation has taken requests long enough.
    Rotate,
    /// Every request of the retiring generation has expired.
    Close,
}

impl Puller {
    /// Subscribes for `consumer`'s events.
    pub(super) async fn new(
        js: &jetstream::Context,
        client: &Client,
        consumer: &PullConsumer,
    ) -> Result<Self, async_nats::SubscribeError> {
        let name = &consumer.cached_info().name;
        Ok(Self {
            client: client.clone(),
            context: js.clone(),
            subject: format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{name}",
                subjects::MESSAGES_STREAM
            ),
            current: Generation::new(client).await?,
            retiring: None,
            stray: VecDeque::new(),
            paused_until: Instant::now(),
        })
    }

    /// Asks for one event per permit, waiting at most `expires` (up to [`PULL_EXPIRES`]) on
    /// the server; the permits stay reserved for those events.
    pub(super) async fn request(
        &mut self,
        permits: OwnedSemaphorePermit,
        expires: Duration,
    ) -> Result<(), async_nats::PublishError> {
        tokio::time::sleep_until(self.paused_until).await;
        let count = permits.num_permits();
        let expires = expires.min(PULL_EXPIRES);
        // The expiry is in nanoseconds, as the JetStream API wants it.
        let body = format!(r#"{{"batch":{count},"expires":{}}}"#, expires.as_nanos());
        let generation = &mut self.current;
        let reply = format!("{}.{count}", generation.inbox);
        self.client
            .publish_with_reply(self.subject.clone(), reply, body.into())
            .await?;
        let deadline = Instant::now() + expires + EXPIRY_MARGIN;
        generation.last_deadline = generation.last_deadline.max(Some(deadline));
        match &mut generation.reserved {
            Some(reserved) => reserved.merge(permits),
            None => generation.reserved = Some(permits),
        }
        Ok(())
    }

    /// The next event. Slots of requests that end unfilled are freed meanwhile. Cancel-safe:
    /// nothing is lost if the future is dropped before it completes.
    pub(super) async fn next(&mut self) -> Pulled {
        loop {
            if let Some(message) = self.stray.pop_front() {
                return Pulled::Event(message, None);
            }
            let (source, message) = match self.wake().await {
                Wake::Message(source, Some(message)) => (source, message),
                Wake::Message(_, None) => return Pulled::Gone("the subscription ended".to_owned()),
                Wake::Rotate => {
                    if let Err(err) = self.rotate().await {
                        return Pulled::Gone(format!("subscribing for events failed: {err}"));
                    }
                    continue;
                }
                Wake::Close => {
                    self.close_retiring();
                    continue;
                }
            };
            let generation = match source {
                Source::Current => &mut self.current,
                Source::Retiring => match &mut self.retiring {
                    Some(generation) => generation,
                    None => continue,
                },
            };
            match message.status {
                None | Some(StatusCode::OK) => {
                    let permit = generation.take(1);
                    let message = jetstream::Message {
                        message,
                        context: self.context.clone(),
                    };
                    return Pulled::Event(message, permit);
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                Some(status) => {
                    let description = message.description.as_deref().unwrap_or_default();
                    if description.eq_ignore_ascii_case("consumer deleted") {
                        return Pulled::Gone(format!("{status} {description}"));
                    }
                    if status == StatusCode::NO_RESPONDERS {
                        self.paused_until = Instant::now() + REFUSED_PAUSE;
                    }
                    match unfilled(status, &message) {
                        Some(count) => drop(generation.take(count)),
                        None => tracing::debug!(%status, description, "pull request ended"),
                    }
                }
            }
        }
    }

    /// Waits for a message on either generation, or for the time to rotate or close one.
    async fn wake(&mut self) -> Wake {
        let rotate_at = match self.retiring {
            None => self.current.retires_at(),
            Some(_) => None,
        };
        let close_at = self.retiring.as_ref().and_then(|g| g.last_deadline);
        let retiring = async {
            match &mut self.retiring {
                Some(generation) => generation.subscriber.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = self.current.subscriber.next() => Wake::Message(Source::Current, message),
            message = retiring => Wake::Message(Source::Retiring, message),
            () = sleep_until(rotate_at) => Wake::Rotate,
            () = sleep_until(close_at) => Wake::Close,
        }
    }

    /// Starts a new generation for the requests to come.
    async fn rotate(&mut self) -> Result<(), async_nats::SubscribeError> {
        let next = Generation::new(&self.client).await?;
        self.retiring = Some(std::mem::replace(&mut self.current, next));
        Ok(())
    }

    /// Ends the retiring generation once none of its requests can deliver: frees the slots
    /// only they could have filled, and keeps what already arrived to hand back.
    fn close_retiring(&mut self) {
        if let Some(mut generation) = self.retiring.take() {
            while let Some(Some(message)) = generation.subscriber.next().now_or_never() {
                if matches!(message.status, None | Some(StatusCode::OK)) {
                    self.stray.push_back(jetstream::Message {
                        message,
                        context: self.context.clone(),
                    });
                }
            }
            if let Some(reserved) = &generation.reserved {
                tracing::debug!(
                    slots = reserved.num_permits(),
                    "pull requests given up without an answer"
                );
            }
        }
    }

    /// Stops receiving and returns the events that had already arrived, for the caller to
    /// hand back. Drains the subscriptions, so an event the server sent before it saw the
    /// unsubscribe is returned too rather than dropped (it would only come back after the
    /// ack wait).
    pub(super) async fn close(self) -> Vec<jetstream::Message> {
        let mut arrived: Vec<jetstream::Message> = self.stray.into();
        for mut generation in [Some(self.current), self.retiring].into_iter().flatten() {
            if generation.subscriber.drain().await.is_err() {
                continue;
            }
            let collect = async {
                while let Some(message) = generation.subscriber.next().await {
                    if matches!(message.status, None | Some(StatusCode::OK)) {
                        arrived.push(jetstream::Message {
                            message,
                            context: self.context.clone(),
                        });
                    }
                }
            };
            // The drain ends the subscription after one round trip; a dead connection
            // does not.
            let _ = tokio::time::timeout(Duration::from_secs(2), collect).await;
        }
        arrived
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How many events the request ended with `status` did not deliver: a 503 never reached the
/// consumer, so all it asked for (its reply subject ends with the count); 408 and 409 say it
/// in `Nats-Pending-Messages`.
fn unfilled(status: StatusCode, message: &async_nats::Message) -> Option<usize> {
    if status == StatusCode::NO_RESPONDERS {
        return message.subject.rsplit('.').next()?.parse().ok();
    }
    message
        .headers
        .as_ref()?
        .get("Nats-Pending-Messages")?
        .as_str()
        .parse()
        .ok()
}
