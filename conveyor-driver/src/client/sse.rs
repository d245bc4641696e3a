//! Server-Sent Events: turns a `text/event-stream` body into log entries.

use std::collections::VecDeque;

use futures_util::StreamExt as _;
use reqwest::Method;

use super::{ClientError, LogStream};
use crate::wire::LogEntry;

/// Incremental SSE parser: feed bytes, take complete events' `data`.
#[derive(Default)]
pub(crate) struct SseParser {
    buffer: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Adds received bytes and returns the data of every event they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    events.push(data);
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // comment, e.g. a keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line.as_ref(), ""),
            };
            if field == "data" {
                match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_owned()),
                }
            }
        }
        events
    }
}

struct State {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    parser: SseParser,
    ready: VecDeque<Result<LogEntry, ClientError>>,
    url: String,
    done: bool,
}

/// The log entries of an SSE response, each yielded as soon as its event is complete.
pub(crate) fn log_stream(response: reqwest::Response, url: String) -> LogStream {
    let state = State {
        body: response.bytes_stream().boxed(),
        parser: SseParser::default(),
        ready: VecDeque::new(),
        url,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.ready.pop_front() {
                return Some((item, state));
            }
            if state.done {
                return None;
            }
            match state.body.next().await {
                Some(Ok(bytes)) => {
                    for data in state.parser.feed(&bytes) {
                        let item = serde_json::from_str::<LogEntry>(&data).map_err(|err| {
                            ClientError::Decode {
                                method: Method::GET,
                                url: state.url.clone(),
                                expected: "a log entry in an SSE data field",
                                reason: err.to_string(),
                            }
                        });
                        state.ready.push_back(item);
                    }
                }
                Some(Err(err)) => {
                    state.done = true;
                    let error = ClientError::Connect {
                        method: Method::GET,
                        url: state.url.clone(),
                        reason: format!("log stream interrupted: {}", crate::error::chain(&err)),
                    };
                    return Some((Err(error), state));
                }
                None => state.done = true,
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::SseParser;

    #[test]
    fn events_split_across_chunks_and_multiline_data() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b": keep-alive\n\ndata: {\"a\"").is_empty());
        assert_eq!(
            parser.feed(b":1}\r\n\r\nevent: log\ndata: x\ndata:y\n"),
            vec!["{\"a\":1}"]
        );
        assert_eq!(parser.feed(b"\n"), vec!["x\ny"]);
    }
}
