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
    Ok(stream)
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
