//! Email over SMTP: the [`Mailer`] the account operations hand their messages to, and the
//! [`templates`] of those messages.
//!
//! Sending never fails a request: it happens after the change it reports has committed
//! (usually in the background, after the answer), and a failure is a warning in the log
//! and `tidings_mail_sent_total{outcome="failed"}`, never an error to the client. Without
//! `TIDINGS_SMTP_URL` nothing is sent, and the operations skip the work whose only use is
//! a mail (a reset token nobody would receive).
//!
//! Like the layers below `http`, this one knows nothing of axum: its SMTP is `lettre`'s
//! client over tokio, TLS by rustls.

pub mod templates;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::{Config, SmtpTls};
pub use templates::Email;

/// How long one SMTP exchange (connecting, each command) may take before the mail is
/// given up as failed: long enough for a slow relay, short enough that a hung one does not
/// pile up tasks.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// A message ready to go: what it is (for the metric), to whom, and its content.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// `password_reset`, `verify_email`, `event`: the metric's `kind` label.
    pub kind: &'static str,
    /// The recipient's address.
    pub to: String,
    pub email: Email,
}

/// Why a message was not sent.
#[derive(Debug, Clone)]
pub struct MailFailure {
    /// The server refused it for good (a 5xx reply), or it could not be made.
    pub permanent: bool,
    pub reason: String,
}

/// Sends email, or, without a mail server, nothing. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<Inner>,
}

struct Inner {
    /// With its sender; `None` when mail is off.
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
    /// The base of the links in emails, without a trailing slash.
    public_url: String,
    /// Mail work started and not yet finished (see [`Mailer::settled`]).
    in_flight: watch::Sender<usize>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("enabled", &self.is_enabled())
            .field("public_url", &self.inner.public_url)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer the settings describe: SMTP with `TIDINGS_SMTP_URL`, or off (said once
    /// in the log). Connects to nothing yet: a mail server that is down at start is a
    /// warning at the first mail, not a server that cannot start.
    pub fn new(config: &Config) -> anyhow::Result<Mailer> {
        let smtp = match (&config.smtp_url, &config.mail_from) {
            (Some(url), Some(from)) => {
                let tls = |host: &str| {
                    TlsParameters::new(host.to_owned()).context("could not set up TLS for SMTP")
                };
                let tls = match url.tls {
                    SmtpTls::Plain => Tls::None,
                    SmtpTls::StartTls => Tls::Required(tls(&url.host)?),
                    SmtpTls::Opportunistic => Tls::Opportunistic(tls(&url.host)?),
                    SmtpTls::Implicit => Tls::Wrapper(tls(&url.host)?),
                };
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&url.host)
                        .port(url.port)
                        .tls(tls)
                        .timeout(Some(SMTP_TIMEOUT))
                        // A connection is kept a little for the next mail, not for long: mail
                        // comes in bursts, and servers drop idle clients anyway.
                        .pool_config(
                            PoolConfig::new()
                                .max_size(4)
                                .idle_timeout(Duration::from_secs(30)),
                        );
                if let Some((user, password)) = &url.credentials {
                    builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
                }
                tracing::info!(host = %url.host, port = url.port, tls = ?url.tls, "email is sent through SMTP");
                Some((builder.build(), from.clone()))
            }
            _ => {
                tracing::info!(
                    "email is off (no TIDINGS_SMTP_URL): password reset and verification links are not sent"
                );
                None
            }
        };
        Ok(Mailer {
            inner: Arc::new(Inner {
                smtp,
                public_url: config.public_url.clone().unwrap_or_default(),
                in_flight: watch::Sender::new(0),
            }),
        })
    }

    /// Whether mail is sent at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.smtp.is_some()
    }

    /// A link to the dashboard's `route` (`reset`, `verify`) with a token, under
    /// `TIDINGS_PUBLIC_URL`. The token rides in the fragment, which browsers send to no
    /// server and put in no `Referer`: it stays out of access logs, the dashboard's
    /// included.
    pub fn link(&self, route: &str, token: &str) -> String {
        format!("{}/app/#/{route}?token={token}", self.inner.public_url)
    }

    /// A link to the dashboard's `route` (`notifications`), under `TIDINGS_PUBLIC_URL`.
    pub fn page(&self, route: &str) -> String {
        format!("{}/app/#/{route}", self.inner.public_url)
    }

    /// Sends one message; a failure is logged (without the message, which may hold a
    /// token) and counted, never returned: the change it reports has happened.
    pub async fn send(&self, outgoing: Outgoing) {
        let _ = self.try_send(outgoing).await;
    }

    /// Sends one message and says how it went, for a caller that retries (the delivery
    /// worker); logged and counted as [`Mailer::send`] does. Without a mail server, a
    /// permanent failure.
    pub async fn try_send(&self, outgoing: Outgoing) -> Result<(), MailFailure> {
        let Some((transport, from)) = &self.inner.smtp else {
            return Err(MailFailure {
                permanent: true,
                reason: "email is off".to_owned(),
            });
        };
        let kind = outgoing.kind;
        let result = match build(from, &outgoing) {
            Ok(message) => transport
                .send(message)
                .await
                .map(drop)
                .map_err(|e| MailFailure {
                    permanent: e.is_permanent(),
                    reason: e.to_string(),
                }),
            Err(e) => Err(MailFailure {
                permanent: true,
                reason: e.to_string(),
            }),
        };
        let outcome = match &result {
            Ok(()) => "sent",
            Err(e) => {
                tracing::warn!(kind, error = %e.reason, "an email could not be sent");
                "failed"
            }
        };
        metrics::counter!("tidings_mail_sent_total", "kind" => kind, "outcome" => outcome)
            .increment(1);
        result
    }

    /// Runs `work` (a change, then its mail) in the background, so that the request that
    /// asked for it is answered without waiting for either: for a password reset this
    /// also keeps the answer's timing the same whether or not the address has an account.
    pub fn background<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.in_flight.send_modify(|n| *n += 1);
        let in_flight = self.inner.in_flight.clone();
        // In the request's span: its log lines carry the request id.
        tokio::spawn(
            async move {
                // Counted down however the work ends, a panic included.
                struct Done(watch::Sender<usize>);
                impl Drop for Done {
                    fn drop(&mut self) {
                        self.0.send_modify(|n| *n -= 1);
                    }
                }
                let _done = Done(in_flight);
                work.await;
            }
            .in_current_span(),
        );
    }

    /// Waits until no background mail work is left: for tests, and for a shutdown that
    /// wants the mails of requests already answered to go out.
    pub async fn settled(&self) {
        let mut in_flight = self.inner.in_flight.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = in_flight.wait_for(|n| *n == 0).await;
    }
}

/// The message of `outgoing`: from the sender, plain text and HTML alternatives.
fn build(from: &Mailbox, outgoing: &Outgoing) -> anyhow::Result<Message> {
    let to: Mailbox = outgoing
        .to
        .parse()
        .context("the recipient's address is not one lettre takes")?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(outgoing.email.subject.clone())
        .multipart(MultiPart::alternative_plain_html(
            outgoing.email.text.clone(),
            outgoing.email.html.clone(),
        ))
        .context("the email could not be built")
}
