//! What fits in one NATS message, and the `Nats-Msg-Id`s that let JetStream drop repeats.
//!
//! The server refuses any message whose headers and payload together exceed its
//! `max_payload` (1 MiB by default), and the client refuses it before sending. So the runtime
//! measures what it publishes: a result that does not fit becomes a failed result saying so
//! (see `Pipeline::too_large`), a log line that does not fit is split into lines that do.
//!
//! The ids, one per publish that must happen at most once:
//!
//! - a result: `<run_id>.<driver>.<message id>`, the message id being the DriverMessage's
//!   `id`. Every publish of that run's result by that driver for that message carries it, so a
//!   retry after a lost PubAck, or the result of a redelivery, is dropped by JetStream within
//!   the stream's duplicate window.
//! - a log line: `<run_id>.<driver>.<message id>.<attempt>.<line>`, `attempt` being the
//!   delivery attempt and `line` the line's number in that delivery's log (from 1; each piece
//!   of a split line counts as a line). A redelivery logs new lines, so they get new ids.

use async_nats::header::NATS_MESSAGE_ID;
use async_nats::HeaderMap;

/// The largest message (headers plus payload) the connected server accepts, as its `INFO`
/// announced it.
pub(crate) fn max_payload(client: &async_nats::Client) -> usize {
    client.max_payload()
}

/// The `Nats-Msg-Id` of the result of run `run_id` by `driver` for message `message_id`.
pub(crate) fn result_msg_id(run_id: &str, driver: &str, message_id: &str) -> String {
    token(&format!("{run_id}.{driver}.{message_id}"))
}

/// The `Nats-Msg-Id` of line number `line` of delivery `attempt` of a run's log.
pub(crate) fn log_msg_id(
    run_id: &str,
    driver: &str,
    message_id: &str,
    attempt: u64,
    line: u64,
) -> String {
    token(&format!("{run_id}.{driver}.{message_id}.{attempt}.{line}"))
}

/// `id` usable as a header value: ids come from received JSON, and a line break or another
/// control character would corrupt the protocol line.
fn token(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

/// Headers being built, with the size they take on the wire.
#[derive(Clone)]
pub(crate) struct Headers {
    map: HeaderMap,
    wire_len: usize,
}

impl Headers {
    /// No headers yet (the block's framing still counts).
    pub(crate) fn new() -> Self {
        Self {
            map: HeaderMap::new(),
            wire_len: FRAMING.len() + 2,
        }
    }

    /// Adds `key: value`.
    pub(crate) fn insert(&mut self, key: &str, value: &str) {
        self.wire_len += header_len(key, value);
        self.map.insert(key, value);
    }

    /// Adds the `Nats-Msg-Id`.
    pub(crate) fn msg_id(mut self, id: &str) -> Self {
        self.insert(NATS_MESSAGE_ID.as_ref(), id);
        self
    }

    /// Adds the W3C trace context `trace` (`traceparent`, `tracestate`; nothing without the
    /// `otel` feature), so that the reader of the message continues the run's trace.
    pub(crate) fn trace(mut self, trace: &crate::otel::TraceHeaders) -> Self {
        for (key, value) in trace.iter() {
            self.insert(key, value);
        }
        self
    }

    /// What the headers add to a message's size. Never less than the real size: a key given
    /// twice is counted twice.
    pub(crate) fn wire_len(&self) -> usize {
        self.wire_len
    }

    pub(crate) fn into_map(self) -> HeaderMap {
        self.map
    }
}

/// The first line of a header block; an empty line ends it.
const FRAMING: &str = "NATS/1.0\r\n";

/// The wire size of one `key: value\r\n` header line.
pub(crate) fn header_len(key: &str, value: &str) -> usize {
    key.len() + 2 + value.len() + 2
}

/// The smallest room for a message that splitting works with: a piece holds at least one
/// character, and one escapes to at most six bytes.
pub(crate) const MIN_BUDGET: usize = 16;

/// `message` cut, on character boundaries, into consecutive pieces each of which takes at
/// most `budget` bytes inside a JSON string (escapes counted). The pieces concatenate to
/// `message`; an empty message is one empty piece. A piece holds at least one character even
/// when that character does not fit, so that this always ends.
pub(crate) fn split(message: &str, budget: usize) -> Vec<&str> {
    // No character takes more than 6 bytes escaped: most lines need no counting.
    if message.len().saturating_mul(6) <= budget {
        return vec![message];
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (at, c) in message.char_indices() {
        let len = escaped_len(c);
        if used + len > budget && at > start {
            pieces.push(&message[start..at]);
            start = at;
            used = 0;
        }
        used += len;
    }
    pieces.push(&message[start..]);
    pieces
}

/// The bytes `c` takes inside a JSON string as `serde_json` writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped_str_len(text: &str) -> usize {
        text.chars().map(escaped_len).sum()
    }

    fn json_len(text: &str) -> usize {
        serde_json::to_string(text).unwrap().len() - 2
    }

    #[test]
    fn escaped_length_is_what_serde_json_writes() {
        for text in [
            "plain",
            "quote \" back \\ slash",
            "\n\r\t\u{08}\u{0c}",
            "\u{01}\u{1f}\u{7f}",
            "é ü 日本 🦀",
            "",
        ] {
            assert_eq!(escaped_str_len(text), json_len(text), "{text:?}");
        }
    }

    #[test]
    fn pieces_fit_the_budget_and_concatenate_to_the_message() {
        let message = "ab\"c日本語🦀\n\u{01}xyz".repeat(50);
        for budget in [MIN_BUDGET, 17, 31, 100, 1000] {
            let pieces = split(&message, budget);
            assert_eq!(pieces.concat(), message, "budget {budget}");
            for piece in &pieces {
                assert!(!piece.is_empty());
                assert!(json_len(piece) <= budget, "{piece:?} over {budget}");
            }
            // Greedy: each piece but the last is full up to the next character.
            for pair in pieces.windows(2) {
                let next = pair[1].chars().next().unwrap().to_string();
                assert!(json_len(pair[0]) + json_len(&next) > budget);
            }
        }
    }

    #[test]
    fn a_message_that_fits_is_one_piece() {
        assert_eq!(split("hello", 5), ["hello"]);
        assert_eq!(split("", 16), [""]);
    }

    #[test]
    fn a_three_megabyte_line_splits_into_megabyte_pieces() {
        let line = format!("echo line 0 {}", "x".repeat(3_000_000 - 12));
        let pieces = split(&line, 1_048_000);
        assert_eq!(pieces.len(), 3);
        assert!(pieces.iter().all(|p| p.len() <= 1_048_000));
        assert_eq!(pieces.concat(), line);
    }

    #[test]
    fn a_character_wider_than_the_budget_still_makes_progress() {
        assert_eq!(split("🦀🦀", 2), ["🦀", "🦀"]);
    }

    #[test]
    fn ids_are_stable_for_the_same_run_driver_and_message() {
        let first = result_msg_id("run-1", "echo", "msg-1");
        assert_eq!(first, "run-1.echo.msg-1");
        assert_eq!(first, result_msg_id("run-1", "echo", "msg-1"));
        assert_ne!(first, result_msg_id("run-1", "echo", "msg-2"));
        assert_ne!(first, result_msg_id("run-1", "other", "msg-1"));
        assert_eq!(log_msg_id("r", "d", "m", 2, 7), "r.d.m.2.7");
        assert_ne!(
            log_msg_id("r", "d", "m", 1, 7),
            log_msg_id("r", "d", "m", 2, 7)
        );
        assert_eq!(result_msg_id("r\r\n", "d", "m"), "r__.d.m");
    }

    #[test]
    fn header_length_matches_the_wire_block() {
        let headers = Headers::new().msg_id("abc");
        // "NATS/1.0\r\n" + "Nats-Msg-Id: abc\r\n" + "\r\n"
        assert_eq!(headers.wire_len(), 10 + 18 + 2);
    }
}
