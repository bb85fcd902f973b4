//! The client side of WebSocket (RFC 6455), as little as a subscriber needs: the upgrade
//! request, server frames parsed straight out of the read buffer, masked control frames
//! back.

use bytes::{Buf, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Most a message may hold; more is a broken or hostile server.
const MAX_MESSAGE: usize = 16 << 20;

/// The upgrade request. The key is fixed: the tester trusts the server it tests, and the
/// answer's `101` is what it checks.
pub fn upgrade_request(authority: &str, path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
    )
}

/// A frame's header: whether it ends its message, its opcode, and where its payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    pub header_len: usize,
    pub payload_len: usize,
}

/// The header of the frame at the start of `buf`, once all of it has arrived.
pub fn parse_header(buf: &[u8]) -> anyhow::Result<Option<Header>> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    anyhow::ensure!(b1 & 0x80 == 0, "the server masked a frame");
    anyhow::ensure!(
        b0 & 0x70 == 0,
        "a frame with reserved bits (no extension was agreed)"
    );
    let (header_len, payload_len) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([buf[2], buf[3]]))),
        127 if buf.len() >= 10 => {
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            (10, usize::try_from(len).unwrap_or(usize::MAX))
        }
        126 | 127 => return Ok(None),
        len => (2, usize::from(len)),
    };
    anyhow::ensure!(payload_len <= MAX_MESSAGE, "a frame of {payload_len} bytes");
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0f,
        header_len,
        payload_len,
    }))
}

/// A masked client frame (clients must mask every frame they send).
pub fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(0x80 | opcode);
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// What the server asked for besides messages.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// The payload of the last ping, to answer with a pong.
    pub ping: Option<Vec<u8>>,
    /// The server closed: its code (1005 when it gave none) and reason.
    pub close: Option<(u16, String)>,
}

/// Reassembles messages from the frames in a read buffer.
#[derive(Debug, Default)]
pub struct Reader {
    /// The message being assembled from fragments, if any.
    fragments: Vec<u8>,
    in_fragmented: bool,
}

impl Reader {
    /// Hands every complete text or binary message in `buf` to `on_message`, removes the
    /// frames it read, and says what control frames asked for. A partial frame stays in
    /// `buf` for the next read.
    pub fn drain(
        &mut self,
        buf: &mut BytesMut,
        mut on_message: impl FnMut(&[u8]),
    ) -> anyhow::Result<Control> {
        let mut control = Control::default();
        let mut pos = 0;
        while let Some(header) = parse_header(&buf[pos..])? {
            let start = pos + header.header_len;
            let end = start + header.payload_len;
            if end > buf.len() {
                // Let one read bring the rest of a large frame.
                buf.reserve(end - pos);
                break;
            }
            let payload = &buf[start..end];
            match header.opcode {
                OP_TEXT | OP_BINARY if header.fin && !self.in_fragmented => on_message(payload),
                OP_TEXT | OP_BINARY => {
                    anyhow::ensure!(!self.in_fragmented, "a new message inside a fragmented one");
                    self.in_fragmented = true;
                    self.fragments.clear();
                    self.fragments.extend_from_slice(payload);
                }
                OP_CONTINUATION => {
                    anyhow::ensure!(
                        self.in_fragmented,
                        "a continuation with nothing to continue"
                    );
                    anyhow::ensure!(
                        self.fragments.len() + payload.len() <= MAX_MESSAGE,
                        "a message too large"
                    );
                    self.fragments.extend_from_slice(payload);
                    if header.fin {
                        self.in_fragmented = false;
                        on_message(&self.fragments);
                    }
                }
                OP_PING => control.ping = Some(payload.to_vec()),
                OP_PONG => {}
                OP_CLOSE => {
                    let code = payload
                        .get(..2)
                        .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    control.close = Some((code, reason.into_owned()));
                    pos = end;
                    break;
                }
                other => anyhow::bail!("unknown opcode {other:#x}"),
            }
            pos = end;
        }
        buf.advance(pos);
        Ok(control)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame (unmasked).
    fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            len @ 0..=125 => frame.push(len as u8),
            len @ 126..=0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                frame.push(127);
                frame.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    fn drain_all(reader: &mut Reader, buf: &mut BytesMut) -> (Vec<Vec<u8>>, Control) {
        let mut messages = Vec::new();
        let control = reader.drain(buf, |m| messages.push(m.to_vec())).unwrap();
        (messages, control)
    }

    #[test]
    fn frames_of_every_length_encoding_are_read() {
        let long = vec![b'x'; 70_000];
        let medium = vec![b'y'; 300];
        let mut buf = BytesMut::new();
        for payload in [&b"short"[..], &medium, &long] {
            buf.extend_from_slice(&server_frame(true, OP_TEXT, payload));
        }
        let (messages, control) = drain_all(&mut Reader::default(), &mut buf);
        assert_eq!(messages, vec![b"short".to_vec(), medium, long]);
        assert_eq!(control, Control::default());
        assert!(buf.is_empty());
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let frame = server_frame(true, OP_TEXT, &[b'z'; 200]);
        let mut reader = Reader::default();
        let mut buf = BytesMut::from(&frame[..3]);
        assert!(drain_all(&mut reader, &mut buf).0.is_empty());
        buf.extend_from_slice(&frame[3..150]);
        assert!(drain_all(&mut reader, &mut buf).0.is_empty());
        buf.extend_from_slice(&frame[150..]);
        assert_eq!(drain_all(&mut reader, &mut buf).0, vec![vec![b'z'; 200]]);
    }

    #[test]
    fn fragments_make_one_message_with_control_frames_between() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&server_frame(false, OP_TEXT, b"hel"));
        buf.extend_from_slice(&server_frame(true, OP_PING, b"p"));
        buf.extend_from_slice(&server_frame(true, OP_CONTINUATION, b"lo"));
        let (messages, control) = drain_all(&mut Reader::default(), &mut buf);
        assert_eq!(messages, vec![b"hello".to_vec()]);
        assert_eq!(control.ping, Some(b"p".to_vec()));
    }

    #[test]
    fn a_close_frame_gives_its_code_and_reason() {
        let mut payload = 4008u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"slow consumer");
        let mut buf = BytesMut::from(&server_frame(true, OP_CLOSE, &payload)[..]);
        let (_, control) = drain_all(&mut Reader::default(), &mut buf);
        assert_eq!(control.close, Some((4008, "slow consumer".into())));
    }

    #[test]
    fn a_masked_server_frame_is_an_error() {
        let mut buf = BytesMut::from(&[0x81u8, 0x81, 1, 2, 3, 4, b'a'][..]);
        assert!(Reader::default().drain(&mut buf, |_| {}).is_err());
    }

    #[test]
    fn client_frames_are_masked() {
        let frame = client_frame(OP_PONG, b"abc", [1, 2, 3, 4]);
        assert_eq!(frame[..2], [0x8a, 0x83]);
        assert_eq!(frame[2..6], [1, 2, 3, 4]);
        assert_eq!(frame[6..], [b'a' ^ 1, b'b' ^ 2, b'c' ^ 3]);
        let long = client_frame(OP_TEXT, &[0; 300], [0; 4]);
        assert_eq!(long[..4], [0x81, 0x80 | 126, 1, 44]);
    }
}
