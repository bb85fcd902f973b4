//! Plain TCP for the subscribers: where to connect, from which local address, and the
//! HTTP/1.1 response head that opens a WebSocket or an event stream.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A parsed `http://` or `ws://` URL (no TLS: the tester talks to a server or its local
/// load balancer, not across the internet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` for the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
    pub addr: SocketAddr,
}

impl Endpoint {
    /// Parses and resolves `url`, replacing its path with `path` when one is given.
    pub async fn resolve(url: &str) -> anyhow::Result<Endpoint> {
        let rest = ["http://", "ws://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme))
            .with_context(|| format!("{url}: only http:// and ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .with_context(|| format!("{authority} has no address"))?;
        Ok(Endpoint {
            authority: authority.to_owned(),
            path: path.to_owned(),
            addr,
        })
    }
}

/// Connects to `addr`, from `source` when given (so that many connections can share a
/// destination without running out of ephemeral ports on one source address).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    // Without stamps, receipt is timed when the bytes are read.
    let _ = stamp_receipts(&stream);
    Ok(stream)
}

/// Asks the kernel to stamp what the socket receives with the time it arrived
/// (`SO_TIMESTAMP`), which [`recv_stamped`] reads. The kernel turns stamping on a moment
/// after the first socket of the machine asks: the first reads may have no stamp.
fn stamp_receipts(stream: &TcpStream) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket this stream owns, with an int that outlives it.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMP,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads into `buf` (at least 1 byte of room), as `read_buf` does, and returns with the
/// byte count when the kernel received the last of them (microseconds since the Unix
/// epoch), if it said.
pub async fn recv_stamped(
    stream: &TcpStream,
    buf: &mut bytes::BytesMut,
) -> std::io::Result<(usize, Option<i64>)> {
    use bytes::BufMut;
    use std::os::fd::AsRawFd;
    loop {
        stream.readable().await?;
        let spare = buf.chunk_mut();
        let result = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = libc::iovec {
                iov_base: spare.as_mut_ptr().cast(),
                iov_len: spare.len(),
            };
            // Room for one control message with a timeval.
            let mut control = [0u64; 8];
            // SAFETY: msghdr is plain data; every pointer in it points into locals that
            // outlive the call, with the lengths given.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: as above.
            let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut stamp = None;
            // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
            // msg_controllen.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET
                        && (*cmsg).cmsg_type == libc::SCM_TIMESTAMP
                    {
                        let tv: libc::timeval =
                            std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                        stamp = Some(tv.tv_sec * 1_000_000 + tv.tv_usec);
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
            }
            Ok((n as usize, stamp))
        });
        match result {
            Ok((n, stamp)) => {
                // SAFETY: the kernel wrote `n` bytes into the spare capacity.
                unsafe { buf.advance_mut(n) };
                return Ok((n, stamp));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The head of an HTTP response.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
}

/// Reads a response head into `buf` and removes it, leaving any body bytes after it.
pub async fn read_head(stream: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<Head> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(len) = response.parse(buf)? {
            let head = Head {
                status: response.code.unwrap_or(0),
                chunked: response.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("transfer-encoding")
                        && h.value.eq_ignore_ascii_case(b"chunked")
                }),
            };
            let _ = buf.split_to(len);
            return Ok(head);
        }
        anyhow::ensure!(buf.len() < 64 * 1024, "response head too large");
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            anyhow::bail!("the server closed the connection before answering");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_says_when_the_kernel_received_its_bytes() {
        use tokio::io::AsyncWriteExt;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (client, accepted) = tokio::join!(
            connect(listener.local_addr().unwrap(), None),
            listener.accept()
        );
        let (client, mut server) = (client.unwrap(), accepted.unwrap().0);
        // The kernel turns stamping on a moment after the first socket asks for it (a
        // deferred work item), so the first reads may come without: write until one has it.
        let mut buf = bytes::BytesMut::with_capacity(64);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let before = crate::envelope::now_micros();
            server.write_all(b"hello").await.unwrap();
            buf.clear();
            let (n, stamp) = recv_stamped(&client, &mut buf).await.unwrap();
            let after = crate::envelope::now_micros();
            assert_eq!((n, &buf[..]), (5, &b"hello"[..]));
            if let Some(stamp) = stamp {
                assert!(
                    before <= stamp && stamp <= after,
                    "{before} <= {stamp} <= {after}"
                );
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no receive timestamp");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        drop(server);
        assert_eq!(
            recv_stamped(&client, &mut buf).await.unwrap().0,
            0,
            "the end"
        );
    }

    #[tokio::test]
    async fn urls_give_authority_path_and_address() {
        let e = Endpoint::resolve("ws://127.0.0.1:9000/stream?x=1")
            .await
            .unwrap();
        assert_eq!(e.authority, "127.0.0.1:9000");
        assert_eq!(e.path, "/stream?x=1");
        assert_eq!(e.addr, "127.0.0.1:9000".parse().unwrap());
        let e = Endpoint::resolve("http://127.0.0.1").await.unwrap();
        assert_eq!(e.path, "/");
        assert_eq!(e.addr.port(), 80);
        assert!(Endpoint::resolve("https://example.com").await.is_err());
    }
}
