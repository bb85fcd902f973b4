//! A TCP stream shared between a WebSocket's task, which reads it and writes its replies,
//! and the hub, which writes events straight to it while the task has nothing to write
//! (see [`super::mailbox`]).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
            let unfilled = buf.initialize_unfilled();
            match self.0.try_read(unfilled) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
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

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // As tokio's own stream does: shut down the writing side only.
        let socket = socket2::SockRef::from(&*self.0);
        Poll::Ready(socket.shutdown(std::net::Shutdown::Write))
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

/// What a write that must not wait left unwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unwritten {
    /// The first chunk not written whole…
    pub index: usize,
    /// …and how many of its bytes were.
    pub offset: usize,
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
    const AT_ONCE: usize = 64;
    let mut at = Unwritten {
        index: 0,
        offset: 0,
    };
    while at.index < chunks.len() {
        let batch = &chunks[at.index..chunks.len().min(at.index + AT_ONCE)];
        let mut slices = [IoSlice::new(&[]); AT_ONCE];
        let mut total = 0;
        for (i, chunk) in batch.iter().enumerate() {
            let slice = &bytes(chunk)[if i == 0 { at.offset } else { 0 }..];
            total += slice.len();
            slices[i] = IoSlice::new(slice);
        }
        let written = match send(stream, &slices[..batch.len()]) {
            Ok(n) => n,
            Err(_) => return Some(at),
        };
        let mut left = written;
        while left > 0 {
            let remaining = bytes(&chunks[at.index]).len() - at.offset;
            if left < remaining {
                at.offset += left;
                break;
            }
            left -= remaining;
            at.index += 1;
            at.offset = 0;
        }
        // Skip empty chunks, which the loop above cannot step past.
        while at.index < chunks.len() && bytes(&chunks[at.index]).len() == at.offset {
            at.index += 1;
            at.offset = 0;
        }
        if written < total {
            return (at.index < chunks.len()).then_some(at);
        }
    }
    None
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
}
