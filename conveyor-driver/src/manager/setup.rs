//! Finding (or, on request, creating) the Conveyor streams and binding the driver's durable
//! consumer.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

use crate::config::Config;
use crate::error::Error;
use crate::wire::subjects;

use super::Shutdown;

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
pub async fn create_streams(js: &jetstream::Context) -> Result<(), Error> {
    for config in conveyor_streams() {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|err| Error::Setup {
                what: format!("stream {name}"),
                source: err.into(),
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
            Ok(stream) => {
                let name = consumer_config.durable_name.clone().unwrap_or_default();
                return stream
                    .create_consumer(consumer_config)
                    .await
                    .map(Some)
                    .map_err(|err| Error::Setup {
                        what: format!("consumer {name}"),
                        source: err.into(),
                    });
            }
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
