//! A mail server for the tests: a stand-in that speaks real SMTP (RFC 5321) on a port of its
//! own, over plain TCP: the 220 greeting, EHLO with its 250 lines (AUTH among them when it
//! was given credentials), AUTH PLAIN and LOGIN (RFC 4954) checked against those
//! credentials, MAIL FROM, RCPT TO, DATA with its dot-stuffing undone, RSET, NOOP and QUIT.
//! It keeps every message it accepts, for the test to read with `mail-parser`.

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::clients::PATIENCE;

/// A message as the stand-in accepted it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope's sender (`MAIL FROM`).
    pub from: String,
    /// The envelope's recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message itself, dot-stuffing undone, lines ending in CRLF.
    pub data: Vec<u8>,
}

impl Received {
    /// The message, parsed.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.data)
            .expect("a message mail-parser reads")
    }
}

/// A running stand-in; it stops when dropped.
pub struct SmtpServer {
    pub addr: SocketAddr,
    credentials: Option<(String, String)>,
    received: mpsc::UnboundedReceiver<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    /// A stand-in that takes mail from anyone, without AUTH.
    pub async fn open() -> SmtpServer {
        Self::start(None).await
    }

    /// A stand-in that advertises AUTH PLAIN and LOGIN and takes mail only from a client
    /// that authenticated with `user` and `password`.
    pub async fn with_credentials(user: &str, password: &str) -> SmtpServer {
        Self::start(Some((user.to_owned(), password.to_owned()))).await
    }

    async fn start(credentials: Option<(String, String)>) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sender, received) = mpsc::unbounded_channel();
        let expected = credentials.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (sender, expected) = (sender.clone(), expected.clone());
                tokio::spawn(async move {
                    // A client that goes away mid-session is no failure of the stand-in.
                    let _ = session(socket, expected, sender).await;
                });
            }
        });
        SmtpServer {
            addr,
            credentials,
            received,
            task,
        }
    }

    /// `smtp://user:password@127.0.0.1:port`, as `TIDINGS_SMTP_URL` takes it (the
    /// credentials percent-encoded).
    pub fn url(&self) -> String {
        match &self.credentials {
            Some((user, password)) => {
                format!("smtp://{}:{}@{}", encode(user), encode(password), self.addr)
            }
            None => format!("smtp://{}", self.addr),
        }
    }

    /// The next message accepted; fails the test if none comes in time.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .expect("a message reaches the SMTP stand-in in time")
            .expect("the SMTP stand-in is running")
    }

    /// A message accepted already, if any (after `Mailer::settled`, every one sent).
    pub fn try_next(&mut self) -> Option<Received> {
        self.received.try_recv().ok()
    }
}

/// Percent-encodes every byte but letters and digits, for a URL's user information.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One client's session, until QUIT or the connection ends.
async fn session(
    socket: TcpStream,
    credentials: Option<(String, String)>,
    received: mpsc::UnboundedSender<Received>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    // Reads one command line without its CRLF; `None` once the client has gone.
    macro_rules! read_line {
        () => {{
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }};
    }
    write
        .write_all(b"220 stand-in.test ESMTP ready\r\n")
        .await?;
    let mut authenticated = credentials.is_none();
    let mut from: Option<String> = None;
    let mut to = Vec::new();
    loop {
        let command = read_line!();
        let upper = command.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or_default().to_owned();
        let reply: String = match verb.as_str() {
            "EHLO" => {
                let mut reply = String::from("250-stand-in.test greets you\r\n250-8BITMIME\r\n");
                if credentials.is_some() {
                    reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                reply.push_str("250 SIZE 10485760\r\n");
                reply
            }
            "HELO" => "250 stand-in.test\r\n".into(),
            "AUTH" => {
                let words: Vec<&str> = command.split(' ').collect();
                let given = match words.get(1).map(|m| m.to_ascii_uppercase()).as_deref() {
                    Some("PLAIN") => {
                        let response = match words.get(2) {
                            Some(initial) => initial.to_string(),
                            None => {
                                write.write_all(b"334 \r\n").await?;
                                read_line!()
                            }
                        };
                        let decoded = STANDARD.decode(response.trim()).unwrap_or_default();
                        // authzid NUL authcid NUL password
                        let parts: Vec<String> = decoded
                            .split(|b| *b == 0)
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect();
                        (parts.len() == 3).then(|| (parts[1].clone(), parts[2].clone()))
                    }
                    Some("LOGIN") => {
                        write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                        let user = STANDARD.decode(read_line!().trim()).unwrap_or_default();
                        write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                        let password = STANDARD.decode(read_line!().trim()).unwrap_or_default();
                        Some((
                            String::from_utf8_lossy(&user).into_owned(),
                            String::from_utf8_lossy(&password).into_owned(),
                        ))
                    }
                    _ => None,
                };
                if given.is_some() && given == credentials {
                    authenticated = true;
                    "235 2.7.0 Authentication successful\r\n".into()
                } else {
                    "535 5.7.8 Authentication credentials invalid\r\n".into()
                }
            }
            "MAIL" if !authenticated => "530 5.7.0 Authentication required\r\n".into(),
            "MAIL" => {
                from = Some(angle_address(&command));
                to.clear();
                "250 2.1.0 OK\r\n".into()
            }
            "RCPT" if from.is_none() => "503 5.5.1 MAIL first\r\n".into(),
            "RCPT" => {
                to.push(angle_address(&command));
                "250 2.1.5 OK\r\n".into()
            }
            "DATA" if to.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
            "DATA" => {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = Vec::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    let text = line.trim_end_matches(['\r', '\n']);
                    if text == "." {
                        break;
                    }
                    // A line the client began with a dot had one added (RFC 5321 4.5.2).
                    let text = text.strip_prefix('.').unwrap_or(text);
                    data.extend_from_slice(text.as_bytes());
                    data.extend_from_slice(b"\r\n");
                }
                let message = Received {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                };
                // Kept before the 250, so that a sender that saw it finds it here.
                let _ = received.send(message);
                "250 2.0.0 OK queued\r\n".into()
            }
            "RSET" => {
                from = None;
                to.clear();
                "250 2.0.0 OK\r\n".into()
            }
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 Command not recognized\r\n".into(),
        };
        write.write_all(reply.as_bytes()).await?;
    }
}

/// The address between `<` and `>` of `MAIL FROM:<a@b> BODY=8BITMIME`.
fn angle_address(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..]
        .find('>')
        .map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}
