//! An incremental Server-Sent Events parser: fed the upstream's chunks as they pass
//! (split anywhere, even inside a `\r\n`), it returns each complete event with its
//! raw bytes, so the proxy can read usage without buffering the stream and, where it
//! must drop an event, forward the others byte for byte.

use bytes::{Bytes, BytesMut};

/// One dispatched block: everything up to and including the blank line that ends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`; `None` for blocks without data (comments).
    pub data: Option<String>,
    /// The exact bytes of the block as received.
    pub raw: Bytes,
}

/// Parser state carried between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes not yet split into lines.
    pending: BytesMut,
    /// Raw bytes of the lines of the current block.
    block: BytesMut,
    event: Option<String>,
    data: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n' || b == b'\r') {
            let terminator_len = if self.pending[end] == b'\r' {
                match self.pending.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A `\r` ending the chunk may be the first half of `\r\n`: wait for
                    // the next chunk (or the end of the stream) to know.
                    None => break,
                }
            } else {
                1
            };
            let line_with_end = self.pending.split_to(end + terminator_len).freeze();
            self.block.extend_from_slice(&line_with_end);
            if let Some(event) = self.line(&line_with_end[..end]) {
                events.push(event);
            }
        }
        events
    }

    /// The stream ended: returns a final event left without its blank line (if it
    /// carried data) and any unterminated bytes, so nothing received is lost.
    pub fn finish(&mut self) -> (Option<SseEvent>, Bytes) {
        if !self.pending.is_empty() {
            // Unterminated bytes, or a line whose `\r` ending was held back in `feed`.
            let raw = self.pending.split().freeze();
            self.block.extend_from_slice(&raw);
            let line = raw.strip_suffix(b"\r").unwrap_or(&raw);
            if line.is_empty() {
                return (self.dispatch(), Bytes::new());
            }
            self.field(line);
        }
        if self.data.is_some() || self.event.is_some() {
            (self.dispatch(), Bytes::new())
        } else {
            (None, self.block.split().freeze())
        }
    }

    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            return self.dispatch();
        }
        self.field(line);
        None
    }

    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return; // comment
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.event = Some(value.into_owned()),
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let raw = self.block.split().freeze();
        Some(SseEvent { event: self.event.take(), data: self.data.take(), raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(parser.feed(chunk));
        }
        (events, parser)
    }

    #[test]
    fn events_split_across_chunks_are_reassembled() {
        let (events, _) = feed_all(&[b"event: response.cre", b"ated\ndata: {\"a\"", b":1}\n", b"\ndata: x\n\n"]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event.as_deref(), Some("response.created"));
        assert_eq!(events[0].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(&events[0].raw[..], b"event: response.created\ndata: {\"a\":1}\n\n");
        assert_eq!(events[1].data.as_deref(), Some("x"));
    }

    #[test]
    fn crlf_line_endings_work_even_when_split_between_chunks() {
        let (events, _) = feed_all(&[b"data: one\r", b"\n\r", b"\ndata: two\r\n\r\n"]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data.as_deref(), Some("one"));
        assert_eq!(events[1].data.as_deref(), Some("two"));
        assert_eq!(&events[0].raw[..], b"data: one\r\n\r\n");
        let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(joined, b"data: one\r\n\r\ndata: two\r\n\r\n");
        let (mut cr_only, mut parser) = feed_all(&[b"data: a\r\rdata: b\r\r"]);
        // The final `\r` might still become `\r\n`: the last event waits for the end.
        assert_eq!(cr_only.len(), 1);
        let (last, rest) = parser.finish();
        cr_only.extend(last);
        assert!(rest.is_empty());
        assert_eq!(cr_only.iter().map(|e| e.data.clone().unwrap()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(&cr_only[1].raw[..], b"data: b\r\r");
    }

    #[test]
    fn multi_line_data_is_joined_and_comments_are_kept_raw() {
        let (events, _) = feed_all(&[b": keep-alive\n\ndata: line1\ndata:line2\n\n"]);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data, None);
        assert_eq!(&events[0].raw[..], b": keep-alive\n\n");
        assert_eq!(events[1].data.as_deref(), Some("line1\nline2"));
    }

    #[test]
    fn a_trailing_event_without_blank_line_is_returned_at_finish() {
        let (events, mut parser) = feed_all(&[b"data: [DONE]"]);
        assert!(events.is_empty());
        let (last, rest) = parser.finish();
        let last = last.unwrap();
        assert_eq!(last.data.as_deref(), Some("[DONE]"));
        assert_eq!(&last.raw[..], b"data: [DONE]");
        assert!(rest.is_empty());
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_events() {
        let stream = b"event: a\r\ndata: 1\r\n\r\nevent: b\ndata: 2\n\n";
        let whole = feed_all(&[stream]).0;
        let singles: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_all(&singles).0, whole);
        assert_eq!(whole.iter().map(|e| e.raw.len()).sum::<usize>(), stream.len());
    }
}
