//! A TCP stream shared between a WebSocket's task, which reads it and writes its replies,
//! and the hub, which writes events straight to it while the task has nothing to write
//! (see [`super::mailbox`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The task's end: reads and writes through the shared stream.
#[derive(Debug, Clone)]
pub struct SharedTcp(pub Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // `try_read` clears the readiness on WouldBlock: polling again waits for the
            // socket's next event.
            // Into the buffer's spare capacity as it is: zeroing it first (`try_read` on
            // `initialize_unfilled`) cost every read of a REST connection up to 16 KiB of
            // writes, since hyper hands over fresh capacity each time.
            match self.0.try_read_buf(buf) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // As tokio's own stream does: shut down the writing side only.
        let socket = socket2::SockRef::from(&*self.0);
        Poll::Ready(socket.shutdown(std::net::Shutdown::Write))
    }
}

/// Caps the kernel's send buffer of a live stream's socket at `bytes` (`None`: leaves it to
/// the kernel).
///
/// Why: left alone, Linux grows the buffer of a busy socket up to `net.ipv4.tcp_wmem`'s
/// maximum (4 MiB by default), and a client that stops reading then holds that much on
/// top of its queue before the queue overflows: megabytes, and many seconds of events,
/// before it is counted as a slow consumer. Set, the buffer stays at twice `bytes` (Linux
/// doubles the figure for its bookkeeping, and stops autotuning it).
///
/// The default, 128 KiB (256 KiB held), costs event traffic nothing: a connection takes
/// events at kilobytes a second, and the buffer only holds what the client has not
/// acknowledged. It bounds one connection's bulk rate (a long replay) to about 256 KiB per
/// round trip, 2.5 MB/s at 100 ms; on loopback, several hundred MB/s. Much smaller is not
/// safe: set to 32 KiB, a loopback connection (a proxy on the same host), whose segments
/// are 64 KiB, stalled on delayed acknowledgements at about 2 MB/s. It is also under
/// Linux's usual cap (`net.core.wmem_max`, 208 KiB), above which a value is cut down.
pub fn bound_send_buffer(stream: &TcpStream, bytes: Option<usize>) {
    if let Some(bytes) = bytes
        && let Err(e) = socket2::SockRef::from(stream).set_send_buffer_size(bytes)
    {
        tracing::debug!(error = %e, "the send buffer of a live stream could not be bounded");
    }
}

/// `send` (or `sendmsg` for several slices) on the stream's socket, which is non-blocking.
///
/// Not tokio's `try_write_vectored`: that goes through `writev` and the VFS (a tenth of the
/// hub's time at 100,000 deliveries/s, with tokio's readiness bookkeeping). The socket's
/// readiness in tokio is left as it was; if this meets a full buffer, the task's own write
/// meets it too, and then waits for the socket the usual way.
fn send(stream: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let socket = socket2::SockRef::from(stream);
    // A peer that went away is an error here, not a SIGPIPE.
    let flags = libc::MSG_NOSIGNAL;
    match slices {
        [one] => socket.send_with_flags(one, flags),
        _ => socket.send_vectored_with_flags(slices, flags),
    }
}

/// Chunks written by one system call at most.
const AT_ONCE: usize = 64;

/// Where a write of chunks stands: what is left unwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unwritten {
    /// The first chunk not written whole…
    pub index: usize,
    /// …and how many of its bytes were.
    pub offset: usize,
}

impl Unwritten {
    /// Puts what is left of the next (up to) [`AT_ONCE`] chunks into `slices`; how many
    /// slices, and their bytes.
    fn slices<'a, T>(
        self,
        chunks: &'a [T],
        bytes: &impl Fn(&T) -> &[u8],
        slices: &mut [IoSlice<'a>; AT_ONCE],
    ) -> (usize, usize) {
        let batch = &chunks[self.index..chunks.len().min(self.index + AT_ONCE)];
        let mut total = 0;
        for (i, chunk) in batch.iter().enumerate() {
            let slice = &bytes(chunk)[if i == 0 { self.offset } else { 0 }..];
            total += slice.len();
            slices[i] = IoSlice::new(slice);
        }
        (batch.len(), total)
    }

    /// Moves past `written` bytes, and past empty chunks after them; whether all is written.
    fn advance<T>(&mut self, chunks: &[T], bytes: &impl Fn(&T) -> &[u8], written: usize) -> bool {
        let mut left = written;
        while left > 0 {
            let remaining = bytes(&chunks[self.index]).len() - self.offset;
            if left < remaining {
                self.offset += left;
                break;
            }
            left -= remaining;
            self.index += 1;
            self.offset = 0;
        }
        // Skip empty chunks, which the loop above cannot step past.
        while self.index < chunks.len() && bytes(&chunks[self.index]).len() == self.offset {
            self.index += 1;
            self.offset = 0;
        }
        self.index == chunks.len()
    }
}

/// Writes as much of `chunks` (each as `bytes` gives it) as the socket takes now, in one
/// system call per 64 chunks, never waiting. `None` when all was written. An error leaves
/// everything after the last byte written unwritten; the connection's task meets the
/// error on its own next write.
pub fn write_now<T>(
    stream: &TcpStream,
    chunks: &[T],
    bytes: impl Fn(&T) -> &[u8],
) -> Option<Unwritten> {
    let mut at = Unwritten::default();
    if at.advance(chunks, &bytes, 0) {
        return None;
    }
    loop {
        let mut slices = [IoSlice::new(&[]); AT_ONCE];
        let (count, total) = at.slices(chunks, &bytes, &mut slices);
        let written = match send(stream, &slices[..count]) {
            Ok(n) => n,
            Err(_) => return Some(at),
        };
        if at.advance(chunks, &bytes, written) {
            return None;
        }
        if written < total {
            return Some(at);
        }
    }
}

/// Writes all of `chunks` (each as `bytes` gives it) from `at`, in one system call per 64
/// chunks, waiting whenever the socket is full: a connection's task writing what the hub
/// left it.
pub async fn write_all<T>(
    stream: &TcpStream,
    chunks: &[T],
    bytes: impl Fn(&T) -> &[u8],
    mut at: Unwritten,
) -> io::Result<()> {
    if at.advance(chunks, &bytes, 0) {
        return Ok(());
    }
    loop {
        stream.writable().await?;
        let mut slices = [IoSlice::new(&[]); AT_ONCE];
        let (count, _) = at.slices(chunks, &bytes, &mut slices);
        // Through `try_io`, so that a full socket clears tokio's readiness and the next
        // `writable` waits for room.
        match stream.try_io(Interest::WRITABLE, || send(stream, &slices[..count])) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                if at.advance(chunks, &bytes, written) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// Shuts down the writing side of a connection, then reads (and drops) what the client
/// still sends until it closes too, for at most `limit`: closing a socket with unread bytes
/// makes the kernel send a reset, which can destroy what the client has not read yet.
pub async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, limit: Duration) {
    let _ = io.shutdown().await;
    let _ = tokio::time::timeout(limit, async {
        let mut scratch = [0u8; 1024];
        while matches!(io.read(&mut scratch).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Resolves when the peer sent something: `true` if it closed the connection (or it
/// failed). What a client sends on an event stream is otherwise ignored.
pub async fn peer_closed(stream: &TcpStream) -> bool {
    if stream.readable().await.is_err() {
        return true;
    }
    let mut scratch = [0u8; 64];
    match stream.try_read(&mut scratch) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    /// A connected pair on loopback, the server's end and the client's; the server's has a
    /// small send buffer, so that it fills after a few frames.
    pub(crate) async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let server = accepted.unwrap().0;
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .unwrap();
        (server, client.unwrap())
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_is_told_exactly() {
        let (server, mut client) = pair().await;
        // Many chunks, more than one system call's worth, some empty, more than fits.
        let chunks: Vec<Vec<u8>> = (0..500u32)
            .map(|i| vec![i as u8; if i % 7 == 0 { 0 } else { 1000 + i as usize }])
            .collect();
        let all: Vec<u8> = chunks.concat();
        let unwritten = write_now(&server, &chunks, |c| c).expect("more than the socket takes");
        let sent: usize = chunks[..unwritten.index]
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            + unwritten.offset;
        assert!(sent > 0 && sent < all.len());
        assert!(unwritten.offset < chunks[unwritten.index].len());
        drop(server);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        assert!(
            received == all[..sent],
            "exactly the bytes it said it wrote"
        );
        // All of a small write is taken.
        let (a, b) = (vec![1u8; 10], vec![2u8; 20]);
        let (server, _client) = pair().await;
        assert_eq!(write_now(&server, &[a, b], |c| c), None);
    }

    #[tokio::test]
    async fn write_all_waits_for_room_and_writes_the_rest_exactly() {
        let (server, mut client) = pair().await;
        let chunks: Vec<Vec<u8>> = (0..300u32)
            .map(|i| vec![i as u8; if i % 5 == 0 { 0 } else { 2000 + i as usize }])
            .collect();
        let all: Vec<u8> = chunks.concat();
        // From the middle of the second chunk, as after a write the hub began.
        let at = Unwritten {
            index: 1,
            offset: 700,
        };
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        write_all(&server, &chunks, |c| c, at).await.unwrap();
        drop(server);
        assert!(
            reader.await.unwrap() == all[700..],
            "every byte after `at`, once"
        );
    }
}
