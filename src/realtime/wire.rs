//! The WebSocket protocol (RFC 6455) as Tidings speaks it, over the upgraded connection.
//!
//! Why not tungstenite: a live connection spends its life idle or writing shared frames.
//! tungstenite keeps a zero-filled read buffer and a write buffer per connection and
//! copies every payload into it; here the read buffer is small and the write path builds
//! one buffer per batch (all the queued events, one system call) and frees it. Client
//! messages are small JSON texts, so the reader only needs: masking, fragmentation, the
//! control frames, a size limit and UTF-8 checking. No extensions are negotiated.

use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The `Sec-WebSocket-Accept` value for a client's key.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    STANDARD.encode(sha.finalize())
}

mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// A message larger than the limit (close with 1009).
    TooBig,
    /// A broken frame or an unmasked client frame (close with 1002).
    Protocol(&'static str),
    /// A text message that is not UTF-8 (close with 1007).
    NotUtf8,
    /// The connection ended or failed.
    Gone,
}

/// A server-side WebSocket over `S`.
pub struct Socket<S> {
    io: S,
    read: BytesMut,
    /// A fragmented message being assembled: its opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
    max_message: usize,
    /// The longest a write may wait for the peer to take its bytes (see [`Socket::write`]).
    write_limit: Duration,
}

/// How long a closed connection waits for the client to close its side.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a write waits for a peer that takes no bytes, unless [`Socket::write_limit`]
/// says otherwise.
const WRITE_LIMIT: Duration = Duration::from_secs(60);

thread_local! {
    /// Where [`Socket::send_built`] builds what it writes.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A scratch buffer grown past this (by a large replay page) is let go after use.
const MAX_SCRATCH: usize = 1 << 20;

/// The largest frame header: 2 bytes, a 64-bit length (servers do not mask).
const MAX_HEADER: usize = 10;

impl<S: AsyncRead + AsyncWrite + Unpin> Socket<S> {
    pub fn new(io: S, max_message: usize) -> Self {
        Self::with_read(io, max_message, BytesMut::new())
    }

    /// A socket whose client already sent `read` (bytes that came after its request head).
    pub fn with_read(io: S, max_message: usize, read: BytesMut) -> Self {
        Socket {
            io,
            read,
            partial: None,
            max_message,
            write_limit: WRITE_LIMIT,
        }
    }

    /// Bounds every write: one the peer does not take within `limit` fails as timed out.
    pub fn write_limit(mut self, limit: Duration) -> Self {
        self.write_limit = limit;
        self
    }

    /// The next complete message. Cancel-safe: what was read stays buffered for the next
    /// call.
    pub async fn recv(&mut self) -> Result<Incoming, ReadError> {
        loop {
            if let Some(message) = self.parse()? {
                return Ok(message);
            }
            // Client messages are small: grow in small steps, and only when bytes come.
            if self.read.capacity() - self.read.len() < 256 {
                self.read.reserve(512);
            }
            match self.io.read_buf(&mut self.read).await {
                Ok(0) | Err(_) => return Err(ReadError::Gone),
                Ok(_) => {}
            }
        }
    }

    /// One message out of the buffer, if a whole frame (and message) is there.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            let Some((header, len)) = frame_header(&self.read, self.max_message)? else {
                return Ok(None);
            };
            if self.read.len() < header + len {
                return Ok(None);
            }
            let first = self.read[0];
            let fin = first & 0x80 != 0;
            let op = first & 0x0F;
            let mask: [u8; 4] = self.read[header - 4..header].try_into().expect("4 bytes");
            self.read.advance(header);
            let mut payload = self.read.split_to(len);
            for (i, byte) in payload.iter_mut().enumerate() {
                *byte ^= mask[i % 4];
            }
            if self.read.is_empty() {
                // Idle most of its life: hold no read buffer between messages.
                self.read = BytesMut::new();
            }
            match op {
                opcode::PING => return Ok(Some(Incoming::Ping(payload.to_vec()))),
                opcode::PONG => return Ok(Some(Incoming::Pong)),
                opcode::CLOSE => return check_close(&payload).map(|()| Some(Incoming::Close)),
                opcode::TEXT | opcode::BINARY if self.partial.is_none() => {
                    if fin {
                        return finish(op, payload.to_vec()).map(Some);
                    }
                    self.partial = Some((op, payload.to_vec()));
                }
                opcode::CONTINUATION => {
                    let Some((op, mut so_far)) = self.partial.take() else {
                        return Err(ReadError::Protocol(
                            "a continuation frame with nothing to continue",
                        ));
                    };
                    if so_far.len() + payload.len() > self.max_message {
                        return Err(ReadError::TooBig);
                    }
                    so_far.extend_from_slice(&payload);
                    if fin {
                        return finish(op, so_far).map(Some);
                    }
                    self.partial = Some((op, so_far));
                }
                opcode::TEXT | opcode::BINARY => {
                    return Err(ReadError::Protocol("a new message inside a fragmented one"));
                }
                _ => return Err(ReadError::Protocol("an unknown opcode")),
            }
        }
    }

    /// Writes text frames, all in one buffer and (usually) one system call.
    pub async fn send_texts<'a>(
        &mut self,
        payloads: impl Iterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        self.send_built(|buffer| {
            for payload in payloads {
                put_frame(buffer, opcode::TEXT, payload);
            }
        })
        .await
    }

    /// Writes frames built beforehand (see [`text_frame`]), in one system call.
    pub async fn send_frames<'a>(
        &mut self,
        frames: impl Iterator<Item = &'a [u8]>,
    ) -> io::Result<()> {
        self.send_built(|buffer| frames.for_each(|frame| buffer.extend_from_slice(frame)))
            .await
    }

    /// Writes what `build` puts into the thread's scratch buffer.
    ///
    /// The bytes are written at once if the socket takes them, which it nearly always
    /// does; only what it does not take is copied into a buffer of its own to wait. So a
    /// write allocates nothing: allocating and freeing a buffer per connection per event
    /// had the allocator handing pages back to the kernel and faulting them in again after
    /// every event (a fifth of the server's CPU).
    async fn send_built(&mut self, build: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        let mut build = Some(build);
        let mut rest = None;
        std::future::poll_fn(|cx| {
            let Some(build) = build.take() else {
                return Poll::Ready(Ok(()));
            };
            SCRATCH.with_borrow_mut(|buffer| {
                buffer.clear();
                build(buffer);
                let mut written = 0;
                let result = loop {
                    if written == buffer.len() {
                        break Ok(());
                    }
                    match Pin::new(&mut self.io).poll_write(cx, &buffer[written..]) {
                        Poll::Ready(Ok(0)) => break Err(io::ErrorKind::WriteZero.into()),
                        Poll::Ready(Ok(n)) => written += n,
                        Poll::Ready(Err(e)) => break Err(e),
                        Poll::Pending => {
                            rest = Some(buffer[written..].to_vec());
                            break Ok(());
                        }
                    }
                };
                if buffer.capacity() > MAX_SCRATCH {
                    *buffer = Vec::new();
                }
                Poll::Ready(result)
            })
        })
        .await?;
        match rest {
            Some(rest) => self.write(&rest).await,
            None => self.io.flush().await,
        }
    }

    pub async fn send_text(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_texts(std::iter::once(payload)).await
    }

    pub async fn send_ping(&mut self) -> io::Result<()> {
        self.write(&[0x80 | opcode::PING, 0]).await
    }

    pub async fn send_pong(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut buffer = Vec::with_capacity(payload.len() + MAX_HEADER);
        put_frame(
            &mut buffer,
            opcode::PONG,
            &payload[..payload.len().min(125)],
        );
        self.write(&buffer).await
    }

    /// Sends a close frame and ends the connection.
    pub async fn close(mut self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
        let mut buffer = Vec::with_capacity(payload.len() + MAX_HEADER);
        put_frame(&mut buffer, opcode::CLOSE, &payload);
        if self.write(&buffer).await.is_err() {
            return;
        }
        // The client's close frame is among what is read (and dropped) meanwhile.
        super::tcp::close_gracefully(&mut self.io, CLOSE_GRACE).await;
    }

    /// Writes bytes as they are (the rest of a frame the hub began). Every write that has
    /// to wait for the peer comes here, and waits at most the write limit: a client that
    /// stops reading but keeps its connection open (a zero window, which TCP never times
    /// out) would otherwise hold this connection's task, socket and registration forever.
    pub async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        };
        tokio::time::timeout(self.write_limit, write)
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }
}

/// A client's close frame: empty, or a code a peer may send and a UTF-8 reason
/// (RFC 6455, 5.5.1 and 7.4).
fn check_close(payload: &[u8]) -> Result<(), ReadError> {
    let [high, low, reason @ ..] = payload else {
        return match payload.len() {
            0 => Ok(()),
            _ => Err(ReadError::Protocol("a close frame with a one-byte payload")),
        };
    };
    let code = u16::from_be_bytes([*high, *low]);
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(ReadError::Protocol("a close code a peer may not send"));
    }
    std::str::from_utf8(reason).map_err(|_| ReadError::NotUtf8)?;
    Ok(())
}

/// A whole message's payload, checked.
fn finish(op: u8, payload: Vec<u8>) -> Result<Incoming, ReadError> {
    if op == opcode::BINARY {
        return Ok(Incoming::Binary);
    }
    String::from_utf8(payload)
        .map(Incoming::Text)
        .map_err(|_| ReadError::NotUtf8)
}

/// The header length and payload length of the client frame at the start of `buf`, once
/// enough of it is there.
fn frame_header(buf: &[u8], max_message: usize) -> Result<Option<(usize, usize)>, ReadError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (first, second) = (buf[0], buf[1]);
    if first & 0x70 != 0 {
        return Err(ReadError::Protocol(
            "reserved bits set without an extension",
        ));
    }
    if second & 0x80 == 0 {
        return Err(ReadError::Protocol("client frames must be masked"));
    }
    let control = first & 0x08 != 0;
    let (length_bytes, len) = match second & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (2, u64::from(u16::from_be_bytes([buf[2], buf[3]])))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            (
                8,
                u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
            )
        }
        short => (0, u64::from(short)),
    };
    if control && (len > 125 || first & 0x80 == 0) {
        return Err(ReadError::Protocol(
            "a control frame must be whole and at most 125 bytes",
        ));
    }
    if len > max_message as u64 {
        return Err(ReadError::TooBig);
    }
    let header = 2 + length_bytes + 4;
    if buf.len() < header {
        return Ok(None);
    }
    Ok(Some((header, len as usize)))
}

/// An unmasked, final text frame: what a server sends.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + MAX_HEADER);
    put_frame(&mut frame, opcode::TEXT, payload);
    frame
}

/// Appends an unmasked, final server frame.
fn put_frame(buffer: &mut Vec<u8>, op: u8, payload: &[u8]) {
    buffer.push(0x80 | op);
    match payload.len() {
        len @ 0..=125 => buffer.push(len as u8),
        len @ 126..=0xFFFF => {
            buffer.push(126);
            buffer.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            buffer.push(127);
            buffer.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    buffer.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![first];
        match payload.len() {
            len @ 0..=125 => frame.push(0x80 | len as u8),
            len => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, String>> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut socket = Socket::new(server, max);
        let mut client = client;
        client.write_all(&bytes).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        loop {
            match socket.recv().await {
                Ok(message) => out.push(Ok(message)),
                Err(ReadError::Gone) => return out,
                Err(e) => {
                    out.push(Err(format!("{e:?}")));
                    return out;
                }
            }
        }
    }

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn masked_texts_fragments_and_control_frames_are_read() {
        let mut bytes = client_frame(0x81, br#"{"type":"ping"}"#);
        bytes.extend(client_frame(0x01, b"hel"));
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, b"lo"));
        bytes.extend(client_frame(0x82, &[1, 2]));
        bytes.extend(client_frame(0x81, &vec![b'a'; 300]));
        bytes.extend(client_frame(0x88, &1000u16.to_be_bytes()));
        let messages = read_all(bytes, 1024).await;
        assert_eq!(
            messages,
            [
                Ok(Incoming::Text(r#"{"type":"ping"}"#.into())),
                Ok(Incoming::Ping(b"p".to_vec())),
                Ok(Incoming::Text("hello".into())),
                Ok(Incoming::Binary),
                Ok(Incoming::Text("a".repeat(300))),
                Ok(Incoming::Close),
            ]
        );
    }

    #[tokio::test]
    async fn oversized_unmasked_and_invalid_frames_are_refused() {
        let too_big = read_all(client_frame(0x81, &[b'x'; 200]), 100).await;
        assert_eq!(too_big, [Err("TooBig".into())]);
        let fragments_too_big = read_all(
            [
                client_frame(0x01, &[b'x'; 60]),
                client_frame(0x80, &[b'x'; 60]),
            ]
            .concat(),
            100,
        )
        .await;
        assert_eq!(fragments_too_big, [Err("TooBig".into())]);
        let unmasked = read_all(vec![0x81, 0x01, b'x'], 100).await;
        assert!(matches!(&unmasked[..], [Err(e)] if e.contains("masked")));
        let not_utf8 = read_all(client_frame(0x81, &[0xff, 0xfe]), 100).await;
        assert_eq!(not_utf8, [Err("NotUtf8".into())]);
        let orphan = read_all(client_frame(0x80, b"x"), 100).await;
        assert!(matches!(&orphan[..], [Err(e)] if e.contains("continuation")));
    }

    #[tokio::test]
    async fn close_frames_are_checked() {
        for good in [&b""[..], b"\x03\xe8", b"\x03\xe8bye", b"\x0f\xa0app"] {
            assert_eq!(
                read_all(client_frame(0x88, good), 100).await,
                [Ok(Incoming::Close)],
                "{good:?}"
            );
        }
        // One byte; codes 0, 999, 1005 (no status), 1006 (abnormal), 5000.
        for bad in [
            &b"\x03"[..],
            b"\x00\x00",
            b"\x03\xe7",
            b"\x03\xed",
            b"\x03\xee",
            b"\x13\x88",
        ] {
            let read = read_all(client_frame(0x88, bad), 100).await;
            assert!(
                matches!(&read[..], [Err(e)] if e.contains("close")),
                "{bad:?}: {read:?}"
            );
        }
        let not_utf8 = read_all(client_frame(0x88, b"\x03\xe8\xff"), 100).await;
        assert_eq!(not_utf8, [Err("NotUtf8".into())]);
    }

    #[tokio::test]
    async fn server_frames_are_unmasked_and_sized() {
        // Larger than everything written, so the writer never waits for the reader.
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut socket = Socket::new(server, 100);
        let long = vec![b'z'; 70_000];
        socket
            .send_texts([&b"hi"[..], &[b'y'; 200][..], &long[..]].into_iter())
            .await
            .unwrap();
        // The client has nothing more to say, so the close does not wait for it.
        client.shutdown().await.unwrap();
        socket.close(1001, "bye").await;
        let mut bytes = Vec::new();
        client.read_to_end(&mut bytes).await.unwrap();
        assert_eq!(&bytes[..4], &[0x81, 2, b'h', b'i']);
        assert_eq!(&bytes[4..8], &[0x81, 126, 0, 200]);
        let long_at = 8 + 200;
        assert_eq!(bytes[long_at..long_at + 2], [0x81, 127]);
        assert_eq!(
            u64::from_be_bytes(bytes[long_at + 2..long_at + 10].try_into().unwrap()),
            70_000
        );
        let close_at = long_at + 10 + 70_000;
        assert_eq!(&bytes[close_at..], &[0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);
    }
}
