//! Server-Sent Events: turns a `text/event-stream` body into log entries.
//!
//! `eventsource-stream` parses the stream (events split over chunks, comments, multi-line
//! `data`). It buffers an unfinished event without bound, so the bytes go through
//! [`EventSize`] first, which ends the stream once one event passes
//! `CONVEYOR_API_MAX_EVENT_BYTES`: memory stays within that limit plus one chunk. It also
//! turns CRLF and bare CR into LF: the parser waits for the byte after a CR that ends a chunk
//! (it could be a CRLF), which would hold back an event ended by bare CRs until the next one.

use std::fmt;

use bytes::Bytes;
use eventsource_stream::{EventStream, EventStreamError};
use futures_util::StreamExt as _;
use reqwest::Method;

use super::{ClientError, LogStream};
use crate::wire::LogEntry;

/// What ends a byte stream before the parser sees it.
#[derive(Debug)]
enum Cut {
    /// The event being received has passed the limit (its size so far).
    TooLarge(u64),
    /// The connection failed.
    Transport(reqwest::Error),
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(size) => write!(f, "an event of {size} bytes or more"),
            Self::Transport(err) => f.write_str(&crate::error::chain(err)),
        }
    }
}

/// The size of the event being received: the bytes of its lines since the last blank line
/// (which ends an event), line ends not counted. One pass over each byte; a chunk is copied
/// only when it has a CR to turn into LF.
#[derive(Debug)]
pub(crate) struct EventSize {
    limit: usize,
    event: usize,
    line: usize,
    /// The last byte was a CR, so an LF right after it ends no further line.
    after_cr: bool,
}

impl EventSize {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            event: 0,
            line: 0,
            after_cr: false,
        }
    }

    /// Counts `chunk` and returns it with LF line ends; the event's size so far once it
    /// passes the limit.
    pub(crate) fn check(&mut self, chunk: Bytes) -> Result<Bytes, u64> {
        // A copy is needed for a CR, and for the LF of a CRLF split before this chunk.
        let copy = chunk.contains(&b'\r') || (self.after_cr && chunk.first() == Some(&b'\n'));
        let mut normalized = copy.then(|| Vec::with_capacity(chunk.len()));
        for &byte in chunk.iter() {
            match byte {
                b'\n' if self.after_cr => {
                    self.after_cr = false;
                    continue; // the LF of a CRLF, already ended the line
                }
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    if self.line == 0 {
                        self.event = 0; // a blank line: the event is complete
                    }
                    self.line = 0;
                }
                _ => {
                    self.after_cr = false;
                    self.line += 1;
                    self.event += 1;
                    if self.event > self.limit {
                        return Err(u64::try_from(self.event).unwrap_or(u64::MAX));
                    }
                }
            }
            if let Some(normalized) = &mut normalized {
                normalized.push(if byte == b'\r' { b'\n' } else { byte });
            }
        }
        Ok(normalized.map_or(chunk, Bytes::from))
    }
}

/// The log entries of an SSE response, each yielded as soon as its event is complete. A
/// malformed entry is an error item and the stream goes on; a failed connection, an event over
/// `max_event_bytes` or a stream that is not UTF-8 is a last error item.
pub(crate) fn log_stream(
    response: reqwest::Response,
    url: String,
    max_event_bytes: usize,
) -> LogStream {
    let mut size = EventSize::new(max_event_bytes);
    let bytes = response.bytes_stream().map(move |chunk| {
        let chunk: Bytes = chunk.map_err(Cut::Transport)?;
        size.check(chunk).map_err(Cut::TooLarge)
    });
    EventStream::new(bytes)
        .scan(false, move |ended, item| {
            if *ended {
                return std::future::ready(None);
            }
            let item = match item {
                Ok(event) => serde_json::from_str::<LogEntry>(&event.data).map_err(|err| {
                    ClientError::Decode {
                        method: Method::GET,
                        url: url.clone(),
                        expected: "a log entry in an SSE data field",
                        reason: err.to_string(),
                    }
                }),
                Err(err) => {
                    *ended = true;
                    Err(stream_error(err, &url, max_event_bytes))
                }
            };
            std::future::ready(Some(item))
        })
        .boxed()
}

fn stream_error(err: EventStreamError<Cut>, url: &str, limit: usize) -> ClientError {
    match err {
        EventStreamError::Transport(Cut::TooLarge(size)) => ClientError::TooLarge {
            method: Method::GET,
            url: url.to_owned(),
            what: "log stream event",
            size,
            limit,
            setting: "CONVEYOR_API_MAX_EVENT_BYTES",
        },
        EventStreamError::Transport(Cut::Transport(err)) => ClientError::Connect {
            method: Method::GET,
            url: url.to_owned(),
            reason: format!("log stream interrupted: {}", crate::error::chain(&err)),
        },
        EventStreamError::Utf8(_) | EventStreamError::Parser(_) => ClientError::Decode {
            method: Method::GET,
            url: url.to_owned(),
            expected: "a UTF-8 event stream",
            reason: err.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures_util::StreamExt as _;

    use super::EventSize;

    /// The `data` of each event `chunks` make, as the log stream parses them.
    fn parse(chunks: &[&'static str]) -> Vec<String> {
        let mut size = EventSize::new(1024);
        let stream = futures_util::stream::iter(
            chunks
                .iter()
                .map(move |chunk| size.check(Bytes::from_static(chunk.as_bytes()))),
        );
        let events = eventsource_stream::EventStream::new(stream)
            .map(|event| event.expect("valid stream").data)
            .collect::<Vec<_>>();
        futures_util::FutureExt::now_or_never(events).expect("a ready stream")
    }

    #[test]
    fn events_split_across_chunks_and_multiline_data() {
        assert_eq!(
            parse(&[
                ": keep-alive\n\ndata: {\"a\"",
                ":1}\r\n\r\nevent: log\ndata: x\ndata:y\n",
                "\n"
            ]),
            ["{\"a\":1}", "x\ny"]
        );
    }

    #[test]
    fn bare_cr_ends_lines_and_events_at_once_even_across_chunks() {
        // The last event ends with the last byte received: it is not held back.
        assert_eq!(
            parse(&["data: a\r\rdata: b\r", "\ndata: c\r", "\r"]),
            ["a", "b\nc"]
        );
    }

    #[test]
    fn the_event_size_counts_since_the_last_blank_line() {
        let mut size = EventSize::new(10);
        let mut check =
            |chunk: &'static [u8]| size.check(Bytes::from_static(chunk)).map(|b| b.to_vec());
        // Many small events and keep-alives in one chunk: each is counted on its own.
        assert_eq!(
            check(b"data: 12\n\n: ping\r\n\r\ndata: 1234\r\r"),
            Ok(b"data: 12\n\n: ping\n\ndata: 1234\n\n".to_vec())
        );
        // An event growing over chunks, with a CRLF split between them, passes the limit.
        assert_eq!(check(b"data: 1\r"), Ok(b"data: 1\n".to_vec()));
        assert_eq!(check(b"\ndat"), Ok(b"dat".to_vec()));
        assert_eq!(check(b"ax"), Err(11));
    }
}
