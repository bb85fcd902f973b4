//! The client side of Server-Sent Events over raw HTTP/1.1: the request, the chunked body
//! decoded into one reusable buffer, and events read from it in place.

use bytes::{Buf, BytesMut};

/// Longest chunk-size line or event the tester accepts.
const MAX_EVENT: usize = 16 << 20;

/// The stream request; `last_event_id` resumes after that seq.
pub fn request(
    authority: &str,
    path: &str,
    token: Option<&str>,
    last_event_id: Option<i64>,
) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n{auth}{resume}\r\n"
    )
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of chunk data remain.
    Data(usize),
    /// Expecting the CRLF after a chunk's data.
    End,
    /// The body is not chunked: everything is data.
    Identity,
    /// The last chunk came: the stream is over.
    Done,
}

/// One event's fields, borrowed from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub id: Option<&'a [u8]>,
    pub event: Option<&'a [u8]>,
    pub data: &'a [u8],
}

/// Decodes a response body into events.
#[derive(Debug)]
pub struct Reader {
    state: Chunk,
    /// The decoded body not yet consumed as events.
    body: BytesMut,
    /// Data lines joined, for the rare event that has several.
    joined: Vec<u8>,
}

impl Reader {
    pub fn new(chunked: bool) -> Reader {
        Reader {
            state: if chunked {
                Chunk::Size
            } else {
                Chunk::Identity
            },
            body: BytesMut::with_capacity(16 * 1024),
            joined: Vec::new(),
        }
    }

    /// Whether the server ended the body.
    pub fn done(&self) -> bool {
        self.state == Chunk::Done
    }

    /// Moves the body bytes in `raw` into the decoded buffer, taking them out of `raw`; a
    /// partial chunk-size line stays in `raw`.
    pub fn decode(&mut self, raw: &mut BytesMut) -> anyhow::Result<()> {
        loop {
            match self.state {
                Chunk::Identity => {
                    self.body.extend_from_slice(raw);
                    raw.clear();
                    return Ok(());
                }
                Chunk::Size => {
                    let Some(eol) = memchr::memchr(b'\n', raw) else {
                        anyhow::ensure!(raw.len() < 1024, "a chunk-size line too long");
                        return Ok(());
                    };
                    let line = &raw[..eol];
                    let hex_len = line
                        .iter()
                        .position(|b| !b.is_ascii_hexdigit())
                        .unwrap_or(line.len());
                    anyhow::ensure!(hex_len > 0 && hex_len <= 8, "a bad chunk size");
                    let size = line[..hex_len].iter().fold(0usize, |n, &b| {
                        n * 16 + (b as char).to_digit(16).unwrap_or(0) as usize
                    });
                    anyhow::ensure!(size <= MAX_EVENT, "a chunk of {size} bytes");
                    raw.advance(eol + 1);
                    self.state = if size == 0 {
                        Chunk::Done
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(remaining) => {
                    if raw.is_empty() {
                        return Ok(());
                    }
                    let n = remaining.min(raw.len());
                    self.body.extend_from_slice(&raw[..n]);
                    raw.advance(n);
                    self.state = if n == remaining {
                        Chunk::End
                    } else {
                        Chunk::Data(remaining - n)
                    };
                }
                Chunk::End => {
                    let Some(eol) = memchr::memchr(b'\n', raw) else {
                        return Ok(());
                    };
                    raw.advance(eol + 1);
                    self.state = Chunk::Size;
                }
                Chunk::Done => {
                    raw.clear();
                    return Ok(());
                }
            }
        }
    }

    /// Hands every complete event in the decoded body to `on_event` and removes it; a
    /// partial event stays for the next read. Comments and `retry:` are skipped.
    pub fn events(&mut self, mut on_event: impl FnMut(Event<'_>)) -> anyhow::Result<()> {
        let mut pos = 0;
        let mut event_start = 0;
        while let Some(eol) = memchr::memchr(b'\n', &self.body[pos..]) {
            let line_end = pos + eol;
            let line = trim_cr(&self.body[pos..line_end]);
            pos = line_end + 1;
            if line.is_empty() {
                dispatch(
                    &self.body[event_start..pos],
                    &mut self.joined,
                    &mut on_event,
                );
                event_start = pos;
            }
        }
        anyhow::ensure!(
            self.body.len() - event_start <= MAX_EVENT,
            "an event too large"
        );
        self.body.advance(event_start);
        Ok(())
    }
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses one event's lines (ending with the blank line) and hands it over if it has data.
fn dispatch(block: &[u8], joined: &mut Vec<u8>, on_event: &mut impl FnMut(Event<'_>)) {
    let mut id = None;
    let mut event = None;
    let mut data: Option<&[u8]> = None;
    let mut data_lines = 0;
    for line in block.split(|&b| b == b'\n').map(trim_cr) {
        let (field, value) = match memchr::memchr(b':', line) {
            Some(0) | None => continue,
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
        };
        match field {
            b"id" => id = Some(value),
            b"event" => event = Some(value),
            b"data" => {
                data_lines += 1;
                if data_lines == 2 {
                    joined.clear();
                    joined.extend_from_slice(data.unwrap_or_default());
                }
                if data_lines >= 2 {
                    joined.push(b'\n');
                    joined.extend_from_slice(value);
                }
                data = Some(value);
            }
            _ => {}
        }
    }
    if let Some(data) = data {
        let data = if data_lines > 1 { &joined[..] } else { data };
        on_event(Event { id, event, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(reader: &mut Reader) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        let mut events = Vec::new();
        reader
            .events(|e| events.push((e.id.map(<[u8]>::to_vec), e.data.to_vec())))
            .unwrap();
        events
    }

    #[test]
    fn chunked_events_split_anywhere_are_read_whole() {
        let body = "retry: 2000\n\n: heartbeat\n\nid: 7\nevent: inventory.stock_changed\ndata: {\"seq\":7}\n\nid: 8\ndata: {\"seq\":8}\n\n";
        // Two chunks, the second split in the middle of an event.
        let (a, b) = body.split_at(40);
        let wire = format!("{:x}\r\n{a}\r\n{:X}\r\n{b}\r\n", a.len(), b.len());
        for split in 1..wire.len() {
            let mut reader = Reader::new(true);
            let mut raw = BytesMut::from(&wire.as_bytes()[..split]);
            reader.decode(&mut raw).unwrap();
            let mut events = collect(&mut reader);
            raw.extend_from_slice(&wire.as_bytes()[split..]);
            reader.decode(&mut raw).unwrap();
            events.extend(collect(&mut reader));
            assert_eq!(
                events,
                vec![
                    (Some(b"7".to_vec()), b"{\"seq\":7}".to_vec()),
                    (Some(b"8".to_vec()), b"{\"seq\":8}".to_vec())
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn the_last_chunk_ends_the_stream() {
        let mut reader = Reader::new(true);
        let mut raw = BytesMut::from(&b"0\r\n\r\n"[..]);
        reader.decode(&mut raw).unwrap();
        assert!(reader.done());
    }

    #[test]
    fn several_data_lines_join_and_crlf_lines_work() {
        let mut reader = Reader::new(false);
        let mut raw = BytesMut::from(&b"data: a\r\ndata:b\r\n\r\ndata: c\n"[..]);
        reader.decode(&mut raw).unwrap();
        assert_eq!(collect(&mut reader), vec![(None, b"a\nb".to_vec())]);
        let mut raw = BytesMut::from(&b"\n"[..]);
        reader.decode(&mut raw).unwrap();
        assert_eq!(collect(&mut reader), vec![(None, b"c".to_vec())]);
    }
}
