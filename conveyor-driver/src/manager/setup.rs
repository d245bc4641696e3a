//! Finding (or, on request, creating) the Conveyor streams and binding the driver's durable
//! consumer.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::config::Config;
use crate::error::{Error, NatsError};
use crate::wire::subjects;

use super::signals::Shutdown;

/// The streams as the Conveyor server creates them.
pub(crate) fn conveyor_streams() -> [stream::Config; 3] {
    let stream = |name: &str, subjects: &[&str], retention| stream::Config {
        name: name.to_owned(),
        subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
        retention,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    [
        stream(
            subjects::MESSAGES_STREAM,
            &["resources.>", "events.>", "drivers.>"],
            stream::RetentionPolicy::Interest,
        ),
        stream(
            subjects::PIPELINE_STREAM,
            &["pipelines.>"],
            stream::RetentionPolicy::WorkQueue,
        ),
        stream(
            subjects::LOGS_STREAM,
            &["logs.>"],
            stream::RetentionPolicy::WorkQueue,
        ),
    ]
}

/// Creates the Conveyor streams that are missing (local development and tests only).
pub(crate) async fn create_streams(js: &jetstream::Context) -> Result<(), Error> {
    for config in conveyor_streams() {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|err| Error::Setup {
                what: format!("stream {name}"),
                source: NatsError::new(err),
            })?;
    }
    Ok(())
}

/// The durable pull consumer of WIRE.md for `driver` and its `resources`.
pub(crate) fn consumer_config(
    driver: &str,
    resources: &[String],
    config: &Config,
) -> consumer::pull::Config {
    let filter_subjects = resources
        .iter()
        .flat_map(|r| [subjects::resource(r), subjects::driver_resource(driver, r)])
        .collect();
    consumer::pull::Config {
        durable_name: Some(driver.to_owned()),
        description: Some(format!("Conveyor CI driver {driver}")),
        filter_subjects,
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::All,
        ack_wait: config.ack_wait,
        // Unlimited on the server: the runtime enforces `max_deliver` itself, publishing a
        // failed result instead of letting JetStream drop the event silently.
        max_deliver: -1,
        max_ack_pending: i64::from(config.max_ack_pending),
        ..Default::default()
    }
}

/// Waits for the `messages` stream (creating the streams first when configured to), then
/// creates or updates the consumer. Returns `None` when shut down while waiting.
pub(super) async fn bind_consumer(
    js: &jetstream::Context,
    consumer_config: consumer::pull::Config,
    config: &Config,
    shutdown: &mut Shutdown,
) -> Result<Option<consumer::PullConsumer>, Error> {
    let mut delay = Duration::from_millis(250);
    loop {
        if config.create_streams {
            create_streams(js).await?;
        }
        match js.get_stream(subjects::MESSAGES_STREAM).await {
            Ok(stream) => return create_or_reuse(&stream, consumer_config).await.map(Some),
            Err(err) => tracing::warn!(
                stream = subjects::MESSAGES_STREAM,
                error = %err,
                retry_in = ?delay,
                "the Conveyor stream is not available (is the Conveyor server up?); retrying"
            ),
        }
        if shutdown.sleep(delay).await {
            return Ok(None);
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// Binds the consumer that already exists with this configuration, and creates (or updates)
/// it otherwise.
///
/// Not asking for a consumer that is already right matters in a JetStream cluster: when
/// several instances create the same durable at the same moment, the consumer can skip the
/// events published meanwhile, and the interest-retention `messages` stream then drops them
/// (RELIABILITY.md has the measurements). Instances that start after the consumer exists
/// (after `register`, or after the first instance) never race this way.
async fn create_or_reuse(
    stream: &stream::Stream,
    wanted: consumer::pull::Config,
) -> Result<consumer::PullConsumer, Error> {
    let name = wanted.durable_name.clone().unwrap_or_default();
    if let Ok(existing) = stream.get_consumer::<consumer::pull::Config>(&name).await {
        if same_settings(&existing.cached_info().config, &wanted) {
            return Ok(existing);
        }
    }
    stream
        .create_consumer(wanted)
        .await
        .map_err(|err| Error::Setup {
            what: format!("consumer {name}"),
            source: NatsError::new(err),
        })
}

/// Whether `existing` has every setting the runtime asks for. The server fills in the
/// settings the runtime leaves at their defaults, so only the ones it sets are compared.
fn same_settings(existing: &consumer::Config, wanted: &consumer::pull::Config) -> bool {
    let mut filters = existing.filter_subjects.clone();
    if !existing.filter_subject.is_empty() {
        filters.push(existing.filter_subject.clone());
    }
    // The order of the filters does not matter to JetStream.
    let mut wanted_filters = wanted.filter_subjects.clone();
    filters.sort();
    wanted_filters.sort();
    filters == wanted_filters
        && existing.durable_name == wanted.durable_name
        && existing.description == wanted.description
        && existing.ack_policy == wanted.ack_policy
        && existing.deliver_policy == wanted.deliver_policy
        && existing.ack_wait == wanted.ack_wait
        && existing.max_deliver == wanted.max_deliver
        && existing.max_ack_pending == wanted.max_ack_pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::consumer::IntoConsumerConfig;

    #[test]
    fn only_the_settings_the_runtime_sets_are_compared() {
        let wanted = consumer_config("builder", &["build".to_owned()], &Config::default());
        let mut existing = wanted.clone().into_consumer_config();
        // What the server fills in does not count.
        existing.max_waiting = 512;
        existing.num_replicas = 3;
        assert!(same_settings(&existing, &wanted));

        let mut single = wanted.clone();
        single.filter_subjects = vec!["resources.build".to_owned()];
        let mut existing_single = single.clone().into_consumer_config();
        existing_single.filter_subjects = Vec::new();
        existing_single.filter_subject = "resources.build".to_owned();
        assert!(same_settings(&existing_single, &single));

        let mut reordered = wanted.clone().into_consumer_config();
        reordered.filter_subjects.reverse();
        assert!(same_settings(&reordered, &wanted));

        existing.max_ack_pending += 1;
        assert!(!same_settings(&existing, &wanted));
        let mut fewer = wanted.clone().into_consumer_config();
        fewer.filter_subjects.pop();
        assert!(!same_settings(&fewer, &wanted));
    }
}
