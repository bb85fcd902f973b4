//! The WebSocket protocol (RFC 6455) as Tidings speaks it, over the upgraded connection.
//!
//! Why not tungstenite: a live connection spends its life idle or writing shared frames.
//! tungstenite keeps a zero-filled read buffer and a write buffer per connection and
//! copies every payload into it; here the read buffer is small and the write path builds
//! one buffer per batch (all the queued events, one system call) and frees it. Client
//! messages are small JSON texts, so the reader only needs: masking, fragmentation, the
//! control frames, a size limit and UTF-8 checking (as the bytes arrive, so that a bad
//! message fails at its first bad byte). No extensions are negotiated. The
//! Autobahn|Testsuite run of `.ci/autobahn/` checks all of it against RFC 6455.

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
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    /// The client's Close, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// A message larger than the limit, or in more frames than it allows (close with 1009).
    TooBig(&'static str),
    /// A broken frame or an unmasked client frame (close with 1002).
    Protocol(&'static str),
    /// A text message or a close reason that is not UTF-8 (close with 1007).
    NotUtf8(&'static str),
    /// The connection ended or failed.
    Gone,
}

impl ReadError {
    /// The status code and reason of the Close that answers the error (RFC 6455, 7.4.1);
    /// `None` when there is no one left to tell.
    pub fn close_frame(&self) -> Option<(u16, &'static str)> {
        match *self {
            ReadError::TooBig(why) => Some((status::TOO_BIG, why)),
            ReadError::Protocol(why) => Some((status::PROTOCOL_ERROR, why)),
            ReadError::NotUtf8(why) => Some((status::NOT_UTF8, why)),
            ReadError::Gone => None,
        }
    }
}

/// The status codes of a Close (RFC 6455, 7.4.1) this layer sends itself; the live
/// protocol's own (`realtime::protocol::CloseCode`) use the same numbers.
pub mod status {
    /// The server is going away.
    pub const GOING_AWAY: u16 = 1001;
    /// A frame that breaks the protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message or close reason that is not UTF-8.
    pub const NOT_UTF8: u16 = 1007;
    /// A message too big to take.
    pub const TOO_BIG: u16 = 1009;
}

const TEXT_NOT_UTF8: ReadError = ReadError::NotUtf8("a text message that is not UTF-8");

/// How a closing handshake begun by the server ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closing {
    /// The client answered with a valid Close.
    Clean,
    /// The client answered with a broken frame or Close: the connection ended without a
    /// proper closing handshake, and nothing more was sent.
    Broken(ReadError),
    /// The client did not answer in time, or the connection ended first.
    Unanswered,
}

/// A server-side WebSocket over `S`.
pub struct Socket<S> {
    io: S,
    read: BytesMut,
    /// A message whose frames (or a frame whose bytes) are still coming. Boxed: most
    /// connections spend their life between messages.
    partial: Option<Box<Partial>>,
    max_message: usize,
    /// The longest a write may wait for the peer to take its bytes (see [`Socket::write`]).
    write_limit: Duration,
}

/// A data message being received.
struct Partial {
    /// [`opcode::TEXT`] or [`opcode::BINARY`].
    op: u8,
    /// The unmasked payload so far.
    payload: Vec<u8>,
    /// How much of a text payload is known to be UTF-8; the bytes after it (at most 3)
    /// begin a character whose end has not come yet.
    checked: usize,
    /// The message's frames so far.
    frames: usize,
    /// The frame whose payload is coming, if one is.
    frame: Option<DataFrame>,
}

/// A data frame whose header is read and whose payload is still coming.
struct DataFrame {
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes read so far (where the mask stands)…
    read: usize,
    /// …and still to come.
    left: usize,
}

impl Partial {
    /// Checks what came of a text message since the last check, so that a message fails
    /// at its first byte that cannot be UTF-8 rather than once it is whole.
    fn check_utf8(&mut self) -> Result<(), ReadError> {
        if self.op != opcode::TEXT {
            return Ok(());
        }
        match std::str::from_utf8(&self.payload[self.checked..]) {
            Ok(_) => self.checked = self.payload.len(),
            // Incomplete, not invalid: the rest of the character may come.
            Err(e) if e.error_len().is_none() => self.checked += e.valid_up_to(),
            Err(_) => return Err(TEXT_NOT_UTF8),
        }
        Ok(())
    }
}

/// How long a closed connection waits for the client's Close and then for the client to
/// close its side.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How long a write waits for a peer that takes no bytes, unless [`Socket::write_limit`]
/// says otherwise.
const WRITE_LIMIT: Duration = Duration::from_secs(60);

/// A message may come in at most one frame per this many bytes of the message limit (64
/// frames at the default 4096): empty continuation frames cost a header each to parse
/// but add nothing to the message, and would otherwise go on without end.
const BYTES_PER_FRAME: usize = 64;

/// The longest close reason: a control frame's payload is at most 125 bytes, two of them
/// the status code.
const MAX_REASON: usize = 123;

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
                if self.read.is_empty() && self.partial.is_none() {
                    // Idle most of its life: hold no read buffer between messages.
                    self.read = BytesMut::new();
                }
                return Ok(message);
            }
            // Client messages are small: grow in small steps, and only when bytes come. A
            // large frame (which only a raised message limit lets in) is read in larger ones.
            let coming = self
                .partial
                .as_ref()
                .and_then(|p| p.frame.as_ref())
                .map_or(0, |frame| frame.left);
            let step = coming.clamp(512, 64 * 1024);
            if self.read.capacity() - self.read.len() < step / 2 {
                self.read.reserve(step);
            }
            match self.io.read_buf(&mut self.read).await {
                Ok(0) | Err(_) => return Err(ReadError::Gone),
                Ok(_) => {}
            }
        }
    }

    /// One message out of the buffer, if a whole one is there. A data frame's payload is
    /// taken as it comes (and a text message's checked), not once the frame is whole.
    fn parse(&mut self) -> Result<Option<Incoming>, ReadError> {
        loop {
            if let Some(partial) = self.partial.as_deref_mut()
                && let Some(frame) = partial.frame.as_mut()
            {
                let n = frame.left.min(self.read.len());
                unmask(&mut self.read[..n], frame.mask, frame.read);
                partial.payload.extend_from_slice(&self.read[..n]);
                self.read.advance(n);
                frame.read += n;
                frame.left -= n;
                let (left, fin) = (frame.left, frame.fin);
                partial.check_utf8()?;
                if left > 0 {
                    return Ok(None);
                }
                partial.frame = None;
                if fin {
                    let Partial { op, payload, .. } = *self.partial.take().expect("a message");
                    return finish(op, payload).map(Some);
                }
                continue;
            }
            let Some(head) = frame_header(&self.read)? else {
                return Ok(None);
            };
            if head.op & 0x08 != 0 {
                return self.control(head);
            }
            let so_far = match (&self.partial, head.op) {
                (None, opcode::TEXT | opcode::BINARY) => 0,
                (Some(partial), opcode::CONTINUATION) => partial.payload.len(),
                (None, opcode::CONTINUATION) => {
                    return Err(ReadError::Protocol(
                        "a continuation frame with nothing to continue",
                    ));
                }
                (Some(_), opcode::TEXT | opcode::BINARY) => {
                    return Err(ReadError::Protocol("a new message inside a fragmented one"));
                }
                _ => return Err(ReadError::Protocol("an unknown opcode")),
            };
            if head.len > (self.max_message - so_far) as u64 {
                return Err(ReadError::TooBig("message too big"));
            }
            let len = head.len as usize;
            self.read.advance(head.size);
            // A whole message in one frame, all here: the usual case, read as it is.
            if self.partial.is_none() && head.fin && self.read.len() >= len {
                let mut payload = self.read.split_to(len);
                unmask(&mut payload, head.mask, 0);
                return finish(head.op, payload.to_vec()).map(Some);
            }
            let partial = self.partial.get_or_insert_with(|| {
                Box::new(Partial {
                    op: head.op,
                    payload: Vec::new(),
                    checked: 0,
                    frames: 0,
                    frame: None,
                })
            });
            partial.frames += 1;
            if partial.frames > self.max_message / BYTES_PER_FRAME {
                return Err(ReadError::TooBig("a message in too many frames"));
            }
            partial.frame = Some(DataFrame {
                fin: head.fin,
                mask: head.mask,
                read: 0,
                left: len,
            });
        }
    }

    /// A control frame, once all of it is here (it is at most 131 bytes).
    fn control(&mut self, head: Head) -> Result<Option<Incoming>, ReadError> {
        let len = head.len as usize;
        if self.read.len() < head.size + len {
            return Ok(None);
        }
        self.read.advance(head.size);
        let mut payload = self.read.split_to(len);
        unmask(&mut payload, head.mask, 0);
        match head.op {
            opcode::PING => Ok(Some(Incoming::Ping(payload.to_vec()))),
            opcode::PONG => Ok(Some(Incoming::Pong)),
            opcode::CLOSE => check_close(&payload).map(|code| Some(Incoming::Close(code))),
            _ => Err(ReadError::Protocol("an unknown opcode")),
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

    pub async fn send_binary(&mut self, payload: &[u8]) -> io::Result<()> {
        self.send_built(|buffer| put_frame(buffer, opcode::BINARY, payload))
            .await
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

    /// Begins the closing handshake: sends a Close, waits for the client's (reading and
    /// dropping what it sent before it), checks it, and ends the connection; all within
    /// [`CLOSE_GRACE`].
    pub async fn close(mut self, code: u16, reason: &str) -> Closing {
        let deadline = tokio::time::Instant::now() + CLOSE_GRACE;
        if self.write(&close_frame(Some(code), reason)).await.is_err() {
            return Closing::Unanswered;
        }
        let reply = tokio::time::timeout_at(deadline, async {
            loop {
                match self.recv().await {
                    // After its Close, a client's data and pings go unanswered.
                    Ok(Incoming::Close(_)) => return Ok(()),
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        let closing = match reply {
            Ok(Ok(())) => Closing::Clean,
            Ok(Err(ReadError::Gone)) | Err(_) => Closing::Unanswered,
            // Nothing more is sent: the Close is already out.
            Ok(Err(broken)) => Closing::Broken(broken),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        super::tcp::close_gracefully(&mut self.io, left).await;
        closing
    }

    /// Answers the client's Close with the status code it sent (RFC 6455, 5.5.1), or with
    /// none if it sent none (1005, "no status", must not be sent), and ends the
    /// connection.
    pub async fn reply_close(mut self, code: Option<u16>) {
        if self.write(&close_frame(code, "")).await.is_ok() {
            super::tcp::close_gracefully(&mut self.io, CLOSE_GRACE).await;
        }
    }

    /// Fails the connection for what the client sent (RFC 6455, 7.1.7): a Close saying
    /// why, then the end of the connection, without reading anything more from the client
    /// (its bytes are broken, or a message the limit refuses).
    pub async fn fail(mut self, error: ReadError) {
        let Some((code, reason)) = error.close_frame() else {
            return;
        };
        if self.write(&close_frame(Some(code), reason)).await.is_ok() {
            // What the client still sends, its Close among it, is read and dropped.
            super::tcp::close_gracefully(&mut self.io, CLOSE_GRACE).await;
        }
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

/// A Close frame; its reason cut to [`MAX_REASON`] bytes, between two characters.
fn close_frame(code: Option<u16>, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + MAX_REASON);
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..reason.floor_char_boundary(MAX_REASON)]);
    }
    let mut frame = Vec::with_capacity(payload.len() + MAX_HEADER);
    put_frame(&mut frame, opcode::CLOSE, &payload);
    frame
}

/// A client's close frame: empty, or a code a peer may send and a UTF-8 reason
/// (RFC 6455, 5.5.1 and 7.4). Its status code, if it has one.
fn check_close(payload: &[u8]) -> Result<Option<u16>, ReadError> {
    let [high, low, reason @ ..] = payload else {
        return match payload.len() {
            0 => Ok(None),
            _ => Err(ReadError::Protocol("a close frame with a one-byte payload")),
        };
    };
    let code = u16::from_be_bytes([*high, *low]);
    if !matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        return Err(ReadError::Protocol("a close code a peer may not send"));
    }
    std::str::from_utf8(reason)
        .map_err(|_| ReadError::NotUtf8("a close reason that is not UTF-8"))?;
    Ok(Some(code))
}

/// A whole message's payload, checked.
fn finish(op: u8, payload: Vec<u8>) -> Result<Incoming, ReadError> {
    if op == opcode::BINARY {
        return Ok(Incoming::Binary(payload));
    }
    String::from_utf8(payload)
        .map(Incoming::Text)
        .map_err(|_| TEXT_NOT_UTF8)
}

/// Unmasks `bytes`, which start `at` bytes into their frame's payload.
fn unmask(bytes: &mut [u8], mask: [u8; 4], at: usize) {
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte ^= mask[(at + i) % 4];
    }
}

/// A client frame's header.
struct Head {
    fin: bool,
    op: u8,
    mask: [u8; 4],
    /// The payload's length…
    len: u64,
    /// …and the header's.
    size: usize,
}

/// The header of the client frame at the start of `buf`, once all of it is there.
fn frame_header(buf: &[u8]) -> Result<Option<Head>, ReadError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(ReadError::Protocol(
            "reserved bits set without an extension",
        ));
    }
    if second & 0x80 == 0 {
        return Err(ReadError::Protocol("client frames must be masked"));
    }
    let (length_bytes, len) = match second & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (2, u64::from(u16::from_be_bytes([bytes[0], bytes[1]])))
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            (8, u64::from_be_bytes(bytes.try_into().expect("8 bytes")))
        }
        short => (0, u64::from(short)),
    };
    // RFC 6455, 5.2: the most significant bit of a 64-bit length is 0, and a length is
    // written in as few bytes as it fits.
    if len >> 63 != 0 {
        return Err(ReadError::Protocol("a 64-bit length with its top bit set"));
    }
    if (length_bytes == 2 && len < 126) || (length_bytes == 8 && len <= 0xFFFF) {
        return Err(ReadError::Protocol("a length not in its shortest form"));
    }
    let control = first & 0x08 != 0;
    if control && (len > 125 || first & 0x80 == 0) {
        return Err(ReadError::Protocol(
            "a control frame must be whole and at most 125 bytes",
        ));
    }
    let size = 2 + length_bytes + 4;
    let Some(mask) = buf.get(size - 4..size) else {
        return Ok(None);
    };
    Ok(Some(Head {
        fin: first & 0x80 != 0,
        op: first & 0x0F,
        mask: mask.try_into().expect("4 bytes"),
        len,
        size,
    }))
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
    use futures::FutureExt;

    use super::*;

    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame's header, for a payload of `len` bytes.
    fn client_header(first: u8, len: usize) -> Vec<u8> {
        let mut header = vec![first];
        match len {
            0..=125 => header.push(0x80 | len as u8),
            126..=0xFFFF => {
                header.push(0x80 | 126);
                header.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        header.extend_from_slice(&MASK);
        header
    }

    /// `payload` masked, as its bytes from `at` on in their frame.
    fn masked(payload: &[u8], at: usize) -> Vec<u8> {
        let mut bytes = payload.to_vec();
        unmask(&mut bytes, MASK, at);
        bytes
    }

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        [client_header(first, payload.len()), masked(payload, 0)].concat()
    }

    /// What a socket reads from `bytes`, up to its first error.
    async fn read_all(bytes: Vec<u8>, max: usize) -> Vec<Result<Incoming, ReadError>> {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut socket = Socket::new(server, max);
        // Written as it is read: more than the pipe holds may be sent.
        tokio::spawn(async move {
            let _ = client.write_all(&bytes).await;
        });
        let mut out = Vec::new();
        loop {
            match socket.recv().await {
                Ok(message) => out.push(Ok(message)),
                Err(ReadError::Gone) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    /// Everything the client end receives until the server closes its side.
    async fn received(client: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut bytes = Vec::new();
        client.read_to_end(&mut bytes).await.unwrap();
        bytes
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
                Ok(Incoming::Binary(vec![1, 2])),
                Ok(Incoming::Text("a".repeat(300))),
                Ok(Incoming::Close(Some(1000))),
            ]
        );
    }

    #[tokio::test]
    async fn oversized_unmasked_and_invalid_frames_are_refused() {
        let too_big = read_all(client_frame(0x81, &[b'x'; 200]), 100).await;
        assert_eq!(too_big, [Err(ReadError::TooBig("message too big"))]);
        let fragments_too_big = read_all(
            [
                client_frame(0x01, &[b'x'; 60]),
                client_frame(0x80, &[b'x'; 60]),
            ]
            .concat(),
            100,
        )
        .await;
        assert_eq!(
            fragments_too_big,
            [Err(ReadError::TooBig("message too big"))]
        );
        let unmasked = read_all(vec![0x81, 0x01, b'x'], 100).await;
        assert!(matches!(&unmasked[..], [Err(ReadError::Protocol(e))] if e.contains("masked")));
        let not_utf8 = read_all(client_frame(0x81, &[0xff, 0xfe]), 100).await;
        assert_eq!(not_utf8, [Err(TEXT_NOT_UTF8)]);
        let orphan = read_all(client_frame(0x80, b"x"), 100).await;
        assert!(matches!(&orphan[..], [Err(ReadError::Protocol(e))] if e.contains("continuation")));
    }

    #[tokio::test]
    async fn a_length_must_be_in_its_shortest_form_and_below_2_to_the_63() {
        let shortest = ReadError::Protocol("a length not in its shortest form");
        // 5 bytes in a 16-bit length; 300 in a 64-bit one.
        let mut five_in_16 = vec![0x81, 0x80 | 126, 0, 5];
        five_in_16.extend_from_slice(&MASK);
        five_in_16.extend(masked(b"hello", 0));
        assert_eq!(read_all(five_in_16, 1 << 20).await, [Err(shortest.clone())]);
        let mut three_hundred_in_64 = vec![0x82, 0x80 | 127];
        three_hundred_in_64.extend_from_slice(&300u64.to_be_bytes());
        three_hundred_in_64.extend_from_slice(&MASK);
        three_hundred_in_64.extend(masked(&[0; 300], 0));
        assert_eq!(
            read_all(three_hundred_in_64, 1 << 20).await,
            [Err(shortest)]
        );
        // The top bit set: a protocol error (1002), not a message too big (1009).
        let mut top_bit = vec![0x82, 0x80 | 127];
        top_bit.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
        top_bit.extend_from_slice(&MASK);
        let read = read_all(top_bit, 1 << 20).await;
        assert_eq!(
            read,
            [Err(ReadError::Protocol(
                "a 64-bit length with its top bit set"
            ))]
        );
        assert_eq!(
            read[0].as_ref().unwrap_err().close_frame().unwrap().0,
            status::PROTOCOL_ERROR
        );
        // Each length in its shortest form is read.
        let lengths = [125, 126, 0xFFFF, 0x10000];
        let bytes = lengths
            .iter()
            .flat_map(|&n| client_frame(0x82, &vec![7; n]));
        let read = read_all(bytes.collect(), 1 << 20).await;
        let sizes: Vec<_> = read
            .iter()
            .map(|m| match m {
                Ok(Incoming::Binary(payload)) => payload.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, lengths);
    }

    #[tokio::test]
    async fn text_fails_at_its_first_bad_fragment_without_waiting_for_the_rest() {
        // 6.4.2 of Autobahn|Testsuite: valid, then the byte that makes it invalid, then
        // more, each its own fragment. The reader fails on the second; the third never
        // comes, and the client keeps its connection open.
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = Socket::new(server, 4096);
        client
            .write_all(&client_frame(
                0x01,
                b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4",
            ))
            .await
            .unwrap();
        assert!(socket.recv().now_or_never().is_none(), "valid so far");

        client
            .write_all(&client_frame(0x00, b"\x90"))
            .await
            .unwrap();

        assert_eq!(socket.recv().now_or_never(), Some(Err(TEXT_NOT_UTF8)));
    }

    #[tokio::test]
    async fn text_fails_at_its_first_bad_byte_while_its_frame_is_still_coming() {
        // 6.4.4: the same bytes, as chops of one frame.
        let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited";
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = Socket::new(server, 4096);
        let mut first = client_header(0x81, payload.len());
        first.extend(masked(&payload[..12], 0));
        client.write_all(&first).await.unwrap();
        assert!(socket.recv().now_or_never().is_none(), "valid so far");

        client
            .write_all(&masked(&payload[12..13], 12))
            .await
            .unwrap();

        assert_eq!(socket.recv().now_or_never(), Some(Err(TEXT_NOT_UTF8)));
    }

    #[tokio::test]
    async fn characters_and_masks_carry_across_fragments_and_chops() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut socket = Socket::new(server, 4096);
        // "κό" split inside each character, over three fragments…
        client
            .write_all(&client_frame(0x01, b"\xce"))
            .await
            .unwrap();
        client
            .write_all(&client_frame(0x00, b"\xba\xe1"))
            .await
            .unwrap();
        client
            .write_all(&client_frame(0x80, b"\xbd\xb9"))
            .await
            .unwrap();
        assert_eq!(socket.recv().await, Ok(Incoming::Text("κ\u{1f79}".into())));
        // …and a frame whose bytes come in odd-sized chops.
        let text = "αβγ".repeat(50);
        let frame = client_frame(0x81, text.as_bytes());
        for chop in frame.chunks(7) {
            assert!(socket.recv().now_or_never().is_none());
            client.write_all(chop).await.unwrap();
        }
        assert_eq!(socket.recv().await, Ok(Incoming::Text(text)));
        // A message that ends inside a character is not UTF-8.
        let cut = [client_frame(0x01, b"ok"), client_frame(0x80, b"\xce")].concat();
        assert_eq!(read_all(cut, 4096).await, [Err(TEXT_NOT_UTF8)]);
    }

    #[tokio::test]
    async fn a_message_may_come_in_one_frame_per_64_bytes_of_the_limit() {
        // 4096 bytes allow 64 frames: a text frame, 62 empty continuations, the last one.
        let message = |continuations: usize| {
            let mut bytes = client_frame(0x01, b"");
            for _ in 0..continuations {
                bytes.extend(client_frame(0x00, b""));
            }
            bytes.extend(client_frame(0x80, b"x"));
            bytes
        };
        assert_eq!(
            read_all(message(62), 4096).await,
            [Ok(Incoming::Text("x".into()))]
        );

        let flood = read_all(message(10_000), 4096).await;

        assert_eq!(
            flood,
            [Err(ReadError::TooBig("a message in too many frames"))]
        );
        assert_eq!(
            flood[0].as_ref().unwrap_err().close_frame().unwrap().0,
            status::TOO_BIG
        );
    }

    #[tokio::test]
    async fn close_frames_are_checked() {
        for (good, code) in [
            (&b""[..], None),
            (b"\x03\xe8", Some(1000)),
            (b"\x03\xe8bye", Some(1000)),
            (b"\x0f\xa0app", Some(4000)),
        ] {
            assert_eq!(
                read_all(client_frame(0x88, good), 100).await,
                [Ok(Incoming::Close(code))],
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
                matches!(&read[..], [Err(ReadError::Protocol(e))] if e.contains("close")),
                "{bad:?}: {read:?}"
            );
        }
        let not_utf8 = read_all(client_frame(0x88, b"\x03\xe8\xff"), 100).await;
        assert_eq!(
            not_utf8,
            [Err(ReadError::NotUtf8("a close reason that is not UTF-8"))]
        );
    }

    #[tokio::test]
    async fn a_clients_close_is_answered_with_its_own_status_code() {
        for (close, reply) in [
            (&b"\x0f\xa0bye"[..], &[0x88, 2, 0x0f, 0xa0][..]),
            (b"\x03\xe9", &[0x88, 2, 0x03, 0xe9]),
            // No code: none in reply either (1005 is never sent).
            (b"", &[0x88, 0]),
        ] {
            let (mut client, server) = tokio::io::duplex(1024);
            let mut socket = Socket::new(server, 100);
            client.write_all(&client_frame(0x88, close)).await.unwrap();
            let Ok(Incoming::Close(code)) = socket.recv().await else {
                panic!("a close");
            };

            let (_, bytes) = tokio::join!(socket.reply_close(code), async {
                let bytes = received(&mut client).await;
                drop(client);
                bytes
            });

            assert_eq!(bytes, reply, "{close:?}");
        }
    }

    #[tokio::test]
    async fn a_close_the_server_begins_waits_for_the_clients_and_checks_it() {
        let answers: [(Vec<u8>, Closing); 4] = [
            // Data it sent before it saw the server's Close, then its own.
            (
                [client_frame(0x81, b"late"), client_frame(0x88, b"\x03\xe9")].concat(),
                Closing::Clean,
            ),
            (client_frame(0x88, b""), Closing::Clean),
            (
                client_frame(0x88, b"\x03\xed"),
                Closing::Broken(ReadError::Protocol("a close code a peer may not send")),
            ),
            (
                vec![0x88, 0x00],
                Closing::Broken(ReadError::Protocol("client frames must be masked")),
            ),
        ];
        for (answer, expected) in answers {
            let (mut client, server) = tokio::io::duplex(1024);
            let socket = Socket::new(server, 100);

            let (closing, bytes) =
                tokio::join!(socket.close(status::GOING_AWAY, "going away"), async {
                    let mut close = [0u8; 14];
                    client.read_exact(&mut close).await.unwrap();
                    client.write_all(&answer).await.unwrap();
                    let rest = received(&mut client).await;
                    drop(client);
                    [&close[..], &rest].concat()
                });

            assert_eq!(closing, expected, "{answer:?}");
            assert_eq!(
                bytes, b"\x88\x0c\x03\xe9going away",
                "nothing after the Close"
            );
        }
        // A client that closes its connection without a word.
        let (mut client, server) = tokio::io::duplex(1024);
        client.shutdown().await.unwrap();
        assert_eq!(
            Socket::new(server, 100).close(status::GOING_AWAY, "").await,
            Closing::Unanswered
        );
    }

    #[tokio::test]
    async fn a_failed_connection_is_told_why_and_read_no_further() {
        let (mut client, server) = tokio::io::duplex(1024);
        let socket = Socket::new(server, 100);
        // A Close after the error is not answered: nothing more is parsed.
        client.write_all(&client_frame(0x88, b"")).await.unwrap();

        let (_, bytes) = tokio::join!(socket.fail(TEXT_NOT_UTF8), async {
            let bytes = received(&mut client).await;
            drop(client);
            bytes
        });

        assert_eq!(bytes, b"\x88\x22\x03\xefa text message that is not UTF-8");
    }

    #[test]
    fn a_close_reason_is_cut_between_characters() {
        // 2-byte characters: 61 of them fill 122 bytes, and half of the 62nd would be 123.
        let frame = close_frame(Some(1000), &"é".repeat(100));
        let payload = &frame[2..];
        assert_eq!(frame[1] as usize, payload.len());
        assert_eq!(&payload[..2], &[0x03, 0xe8]);
        assert_eq!(
            std::str::from_utf8(&payload[2..]),
            Ok("é".repeat(61).as_str())
        );
        let ascii = close_frame(Some(1000), &"a".repeat(200));
        assert_eq!(
            ascii.len(),
            2 + 125,
            "a control frame's payload is at most 125 bytes"
        );
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
        socket.send_binary(&[1, 2, 3]).await.unwrap();
        // The client has nothing more to say, so the close does not wait for it.
        client.shutdown().await.unwrap();
        assert_eq!(
            socket.close(status::GOING_AWAY, "bye").await,
            Closing::Unanswered
        );
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
        let binary_at = long_at + 10 + 70_000;
        assert_eq!(&bytes[binary_at..binary_at + 5], &[0x82, 3, 1, 2, 3]);
        let close_at = binary_at + 5;
        assert_eq!(&bytes[close_at..], &[0x88, 5, 0x03, 0xE9, b'b', b'y', b'e']);
    }
}
