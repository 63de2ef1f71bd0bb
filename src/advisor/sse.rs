//! Server-sent events over a streamed HTTP body: the one reader every provider uses.
//!
//! [`SseParser`] is the incremental parser of the `text/event-stream` format (WHATWG HTML §9.2):
//! lines end with LF, CRLF or CR; `event:` names are optional (default `message`); `data:` lines
//! of one event are joined with `\n`; comments (`:`) and unknown fields are ignored; a blank line
//! dispatches. Unlike the browser's parser it also dispatches a final event that the server did not
//! end with a blank line (some real streams end right after their last `data:` line).
//!
//! [`SseReader`] feeds it from reqwest's `bytes_stream()` and enforces the silence timeout between
//! events. What an event means is the provider's business.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::ProviderError;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, `message` when the event had none.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// Incremental `text/event-stream` parser: feed bytes as they come, take events as they complete.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the line being received (a line is decoded once complete, so a UTF-8 character
    /// split across chunks is whole by then).
    line: Vec<u8>,
    /// The previous chunk ended with CR: a LF starting the next one belongs to that line end.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    /// The stream's first line may start with a byte order mark.
    started: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed a chunk; complete events are appended to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut VecDeque<SseEvent>) {
        if chunk.is_empty() {
            return;
        }
        let mut start = 0;
        let mut i = 0;
        if self.after_cr && chunk.first() == Some(&b'\n') {
            start = 1;
            i = 1;
        }
        self.after_cr = false;
        while i < chunk.len() {
            match chunk[i] {
                b'\n' | b'\r' => {
                    self.line.extend_from_slice(&chunk[start..i]);
                    self.end_line(out);
                    if chunk[i] == b'\r' {
                        if i + 1 == chunk.len() {
                            self.after_cr = true;
                        } else if chunk[i + 1] == b'\n' {
                            i += 1;
                        }
                    }
                    i += 1;
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.line.extend_from_slice(&chunk[start..]);
    }

    /// The body ended: a last line without its line end counts, and a last event without its blank
    /// line is dispatched.
    pub fn finish(&mut self, out: &mut VecDeque<SseEvent>) {
        if !self.line.is_empty() {
            self.end_line(out);
        }
        self.dispatch(out);
    }

    fn end_line(&mut self, out: &mut VecDeque<SseEvent>) {
        let bytes = std::mem::take(&mut self.line);
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if !self.started {
            self.started = true;
            if let Some(rest) = line.strip_prefix('\u{feff}') {
                line = rest.to_owned();
            }
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` and `retry` matter to reconnecting browsers, not to one request.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut VecDeque<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        out.push_back(SseEvent {
            event: if event.is_empty() { "message".into() } else { event },
            data: std::mem::take(&mut self.data),
        });
    }
}

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// Events of one streamed response, each within `idle_timeout` of the one before.
pub struct SseReader {
    body: Body,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    ended: bool,
    idle_timeout: Duration,
}

impl SseReader {
    pub fn new(response: reqwest::Response, idle_timeout: Duration) -> Self {
        Self::from_stream(Box::pin(response.bytes_stream()), idle_timeout)
    }

    pub fn from_stream(body: Body, idle_timeout: Duration) -> Self {
        Self {
            body,
            parser: SseParser::new(),
            ready: VecDeque::new(),
            ended: false,
            idle_timeout,
        }
    }

    /// The body has ended: events returned from now on were completed by its end, not by a blank
    /// line (a last one may be cut short).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The next event; `None` when the body ended.
    pub async fn next_event(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        let deadline = tokio::time::Instant::now() + self.idle_timeout;
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => {
                    return Err(ProviderError::Timeout(format!(
                        "no event for {} ms",
                        self.idle_timeout.as_millis()
                    )));
                }
                Ok(Some(Ok(chunk))) => self.parser.push(&chunk, &mut self.ready),
                Ok(Some(Err(e))) => return Err(ProviderError::from_reqwest(e)),
                Ok(None) => {
                    self.ended = true;
                    self.parser.finish(&mut self.ready);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = VecDeque::new();
        for c in chunks {
            parser.push(c, &mut out);
        }
        parser.finish(&mut out);
        out.into_iter().collect()
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    /// Every split of `input` into two chunks gives the same events as the whole.
    fn same_at_every_split(input: &[u8], expected: &[SseEvent]) {
        assert_eq!(parse_chunks(&[input]), expected, "whole");
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(parse_chunks(&[a, b]), expected, "split at {cut}");
        }
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(
                parse_chunks(&[a, b"", b]),
                expected,
                "split at {cut} with an empty chunk"
            );
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(parse_chunks(&bytes), expected, "byte by byte");
    }

    #[test]
    fn lf_line_endings_with_event_names() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\nevent: ping\ndata: {}\n\n";
        same_at_every_split(input, &[ev("message_start", "{\"a\":1}"), ev("ping", "{}")]);
    }

    #[test]
    fn crlf_line_endings_without_event_names() {
        let input = b"data: {\"x\":\"1\"}\r\n\r\ndata: {\"x\":\"2\"}\r\n\r\n";
        same_at_every_split(input, &[ev("message", "{\"x\":\"1\"}"), ev("message", "{\"x\":\"2\"}")]);
    }

    #[test]
    fn lone_cr_line_endings() {
        same_at_every_split(b"data: a\r\rdata: b\r\r", &[ev("message", "a"), ev("message", "b")]);
    }

    #[test]
    fn a_final_event_without_a_trailing_newline_is_dispatched() {
        let input =
            b"event: content_block_delta\ndata: {\"t\":1}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}";
        same_at_every_split(
            input,
            &[
                ev("content_block_delta", "{\"t\":1}"),
                ev("message_stop", "{\"type\":\"message_stop\"}"),
            ],
        );
        // Ended after the line but before the blank line.
        same_at_every_split(b"data: last\n", &[ev("message", "last")]);
    }

    #[test]
    fn done_marker_comments_multiline_data_and_unknown_fields() {
        let input = b": keep-alive\nid: 7\nretry: 100\ndata: line one\ndata:line two\nfoo: bar\n\ndata: [DONE]\n\n";
        same_at_every_split(input, &[ev("message", "line one\nline two"), ev("message", "[DONE]")]);
    }

    #[test]
    fn an_error_event_mid_stream_keeps_its_name() {
        let input = b"data: {\"n\":1}\n\nevent: error\ndata: {\"error\":{\"message\":\"boom\"}}\n\n";
        same_at_every_split(
            input,
            &[
                ev("message", "{\"n\":1}"),
                ev("error", "{\"error\":{\"message\":\"boom\"}}"),
            ],
        );
    }

    #[test]
    fn utf8_split_across_chunks_and_a_byte_order_mark() {
        let input = "\u{feff}data: prix 0,38 € — ok\n\n".as_bytes();
        same_at_every_split(input, &[ev("message", "prix 0,38 € — ok")]);
    }

    #[test]
    fn events_without_data_are_not_dispatched() {
        assert_eq!(parse_chunks(&[b"event: ping\n\n\n\ndata\n\n"]), vec![ev("message", "")]);
        assert!(parse_chunks(&[b"event: only\n\n"]).is_empty());
        assert!(parse_chunks(&[b""]).is_empty());
    }

    #[tokio::test]
    async fn the_reader_ends_times_out_and_reports_body_errors() {
        let chunks: Vec<Result<Bytes, reqwest::Error>> = vec![
            Ok(Bytes::from_static(b"data: one\n")),
            Ok(Bytes::from_static(b"\ndata: tw")),
            Ok(Bytes::from_static(b"o")),
        ];
        let mut reader = SseReader::from_stream(Box::pin(futures_util::stream::iter(chunks)), Duration::from_secs(1));
        assert_eq!(reader.next_event().await.unwrap(), Some(ev("message", "one")));
        assert_eq!(reader.next_event().await.unwrap(), Some(ev("message", "two")));
        assert_eq!(reader.next_event().await.unwrap(), None);

        // A body that goes silent.
        let silent = futures_util::stream::pending::<Result<Bytes, reqwest::Error>>();
        let mut reader = SseReader::from_stream(Box::pin(silent), Duration::from_millis(30));
        let err = reader.next_event().await.unwrap_err();
        assert!(matches!(err, ProviderError::Timeout(_)), "{err}");
    }
}
