//! A connection's queue of outgoing frames, bounded in bytes.
//!
//! The hub pushes shared, already encoded frames without waiting; the connection's writer
//! takes everything queued at once and writes it in as few socket writes as it can. A push
//! that would take the queue past its limit marks the connection a slow consumer instead:
//! the queue is dropped and the writer closes the connection, and the client resumes from
//! its last seq.
//!
//! A connection on a TCP stream of its own (a WebSocket, or an event stream, whose events
//! are then whole HTTP chunks) goes further: while its writer waits with nothing queued
//! (and is not writing anything of its own), the hub writes the frames to the socket
//! itself, and queues (and wakes the writer) only for what the socket does not take at
//! once. That saves waking and running a task per connection per event, which was most of
//! the server's own work per delivery, and so most of the latency of a fan-out to
//! thousands of connections.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::Transport;
use super::frames::Frame;
use crate::events::Topic;
use crate::net::tcp::write_now;

/// What became of pushed frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written to the socket (of this transport), whole.
    Written(Transport),
    /// The first of them written whole (this many, to a socket of this transport), the
    /// rest queued: the socket filled up.
    Partly(Transport, usize),
    Queued,
    /// It would have passed the limit: the mailbox is now closed as a slow consumer.
    Overflowed,
    /// The mailbox was already closed.
    Closed,
}

/// Why a mailbox stopped taking frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Its queue overflowed.
    SlowConsumer,
    /// The user's sessions were revoked (password change, logout-all, disabled).
    Revoked,
    /// The server is shutting down.
    Shutdown,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    /// Bytes of the first queued frame the hub already wrote (the socket took part of it),
    /// of what the connection's transport is sent.
    written: usize,
    bytes: usize,
    closed: Option<Closed>,
    /// The writer waits with nothing queued and writes nothing: the hub may write.
    idle: bool,
    /// Per subscribable topic: events up to this seq were already sent by a replay.
    skip_through: [i64; Topic::SUBSCRIBABLE.len()],
}

impl State {
    /// Drops the queue, but not the rest of a frame already begun on the wire.
    fn drop_queue(&mut self) {
        let begun = usize::from(self.written > 0);
        self.frames.truncate(begun);
        self.bytes = self.frames.front().map_or(0, |f| f.len());
    }

    fn skips(&self, frame: &Frame) -> bool {
        frame
            .topic
            .index()
            .is_some_and(|slot| frame.seq <= self.skip_through[slot])
    }
}

/// Frames taken by the writer, in order.
#[derive(Debug)]
pub struct Batch {
    pub frames: VecDeque<Frame>,
    /// Bytes of the first frame the hub already wrote (of what the transport is sent).
    pub written: usize,
}

/// The queue between the hub and one connection's writer.
#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<State>,
    ready: Notify,
    limit: usize,
    /// The connection's TCP stream, which the hub writes to while the writer is idle.
    direct: OnceLock<(Arc<TcpStream>, Transport)>,
}

impl Mailbox {
    pub fn new(limit_bytes: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            limit: limit_bytes,
            direct: OnceLock::new(),
        })
    }

    /// Lets the hub write frames, as `transport` is sent them, straight to `stream` while
    /// the writer is idle.
    pub fn write_directly_to(&self, stream: Arc<TcpStream>, transport: Transport) {
        let _ = self.direct.set((stream, transport));
    }

    /// Queues a frame, or writes it. Never waits.
    pub fn push(&self, frame: Frame) -> Pushed {
        self.push_all(std::slice::from_ref(&frame))
    }

    /// Queues (or writes) several frames with one lock and at most one wakeup: the hub's
    /// way with a batch of events for everyone. All of them, or (past the limit) none and
    /// the mailbox closes.
    pub fn push_all(&self, frames: &[Frame]) -> Pushed {
        let mut state = self.state.lock();
        if state.closed.is_some() {
            return Pushed::Closed;
        }
        let mut frames = frames;
        let mut partly = None;
        if let Some((stream, transport)) = self.direct.get()
            && state.idle
            && !frames.iter().any(|f| state.skips(f))
        {
            // The writer is idle, so the queue is empty: nothing can come between.
            match write_now(stream, frames, |f| transport.bytes(f)) {
                None => return Pushed::Written(*transport),
                Some(unwritten) => {
                    state.written = unwritten.offset;
                    frames = &frames[unwritten.index..];
                    if unwritten.index > 0 {
                        partly = Some(Pushed::Partly(*transport, unwritten.index));
                    }
                }
            }
        }
        let size: usize = frames.iter().map(|f| f.len()).sum();
        if state.bytes + size > self.limit {
            if state.frames.is_empty() && state.written > 0 {
                // The hub began the first of these frames just now: its rest must still go
                // out before the close frame.
                state.frames.push_back(frames[0].clone());
            }
            state.drop_queue();
            state.closed = Some(Closed::SlowConsumer);
            drop(state);
            self.ready.notify_one();
            return Pushed::Overflowed;
        }
        state.bytes += size;
        state.frames.extend(frames.iter().cloned());
        state.idle = false;
        drop(state);
        self.ready.notify_one();
        partly.unwrap_or(Pushed::Queued)
    }

    /// Closes the mailbox for `reason` (the first reason wins); queued frames are dropped.
    pub fn close(&self, reason: Closed) {
        let mut state = self.state.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
            state.drop_queue();
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Waits until something is queued or the mailbox is closed, then takes all of it.
    /// While it waits with nothing queued, the hub may write to the socket itself; once
    /// it returns (or is dropped) the writer must [`Self::claim`] the socket before writing
    /// anything else.
    pub async fn take(&self) -> Result<Batch, Closed> {
        loop {
            // Registered before the check, so a push between the check and the wait is seen.
            let notified = self.ready.notified();
            {
                let mut state = self.state.lock();
                if let Some(reason) = state.closed {
                    state.idle = false;
                    return Err(reason);
                }
                if !state.frames.is_empty() {
                    state.idle = false;
                    state.bytes = 0;
                    let written = std::mem::take(&mut state.written);
                    // Hand over the queue itself; the next push starts a fresh one.
                    let mut frames = std::mem::take(&mut state.frames);
                    if state.skip_through.iter().any(|s| *s > 0) {
                        let mut i = 0;
                        frames.retain(|f| {
                            i += 1;
                            (i == 1 && written > 0) || !state.skips(f)
                        });
                    }
                    return Ok(Batch { frames, written });
                }
                state.idle = true;
            }
            notified.await;
        }
    }

    /// Takes the socket back from the hub, for a write of the writer's own. Returns the rest
    /// of a frame the hub began, which must go out first.
    pub fn claim(&self) -> Option<Bytes> {
        let mut state = self.state.lock();
        state.idle = false;
        if state.written == 0 {
            return None;
        }
        let frame = state.frames.pop_front()?;
        state.bytes = state.bytes.saturating_sub(frame.len());
        let (_, transport) = self.direct.get()?;
        Some(
            transport
                .bytes(&frame)
                .slice(std::mem::take(&mut state.written)..),
        )
    }

    /// Live events of `topic` up to `seq` were already sent (by a replay that went past
    /// where the hub was): they are not written again.
    pub fn skip_through(&self, topic: Topic, seq: i64) {
        if let Some(slot) = topic.index() {
            self.state.lock().skip_through[slot] = seq;
        }
    }

    /// Bytes queued now (for metrics).
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::frames::PreparedEvent;

    /// A frame of exactly `n` bytes.
    fn frame(n: usize) -> Frame {
        Arc::new(PreparedEvent {
            seq: 1,
            topic: crate::events::Topic::Orders,
            at: chrono::Utc::now(),
            ws_frame: bytes::Bytes::new(),
            sse: bytes::Bytes::from(vec![b'x'; n]),
            sse_chunk: bytes::Bytes::new(),
        })
    }

    #[tokio::test]
    async fn frames_are_taken_all_at_once_in_order() {
        let mailbox = Mailbox::new(1000);
        assert_eq!(mailbox.push(frame(10)), Pushed::Queued);
        assert_eq!(mailbox.push(frame(20)), Pushed::Queued);
        let taken = mailbox.take().await.unwrap();
        assert_eq!(
            taken.frames.iter().map(|f| f.len()).collect::<Vec<_>>(),
            [10, 20]
        );
        assert_eq!(mailbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn overflowing_the_byte_limit_closes_as_a_slow_consumer() {
        let mailbox = Mailbox::new(100);
        assert_eq!(mailbox.push(frame(60)), Pushed::Queued);
        assert_eq!(mailbox.push(frame(60)), Pushed::Overflowed);
        assert_eq!(mailbox.take().await.unwrap_err(), Closed::SlowConsumer);
        assert_eq!(
            mailbox.push(frame(1)),
            Pushed::Closed,
            "a closed mailbox takes nothing"
        );
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_on_push_and_on_close() {
        let mailbox = Mailbox::new(100);
        let waiter = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.take().await.map(|b| b.frames.len()) }
        });
        tokio::task::yield_now().await;
        mailbox.push(frame(5));
        assert_eq!(waiter.await.unwrap(), Ok(1));
        let waiter = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.take().await.map(|b| b.frames.len()) }
        });
        mailbox.close(Closed::Shutdown);
        assert_eq!(waiter.await.unwrap(), Err(Closed::Shutdown));
    }

    /// A WebSocket frame of `n` bytes, all `byte`, of event `seq`.
    fn ws_frame(seq: i64, n: usize, byte: u8) -> Frame {
        Arc::new(PreparedEvent {
            seq,
            topic: crate::events::Topic::Inventory,
            at: chrono::Utc::now(),
            ws_frame: bytes::Bytes::from(vec![byte; n]),
            sse: bytes::Bytes::from(vec![byte; n]),
            sse_chunk: bytes::Bytes::new(),
        })
    }

    /// A connected pair on loopback: the server's end shared as a WebSocket's is, and the
    /// client's.
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let (server, client) = crate::net::tcp::tests::pair().await;
        (Arc::new(server), client)
    }

    #[tokio::test]
    async fn an_event_streams_socket_is_written_each_event_as_one_http_chunk() {
        use tokio::io::AsyncReadExt;

        let (server, mut client) = pair().await;
        let mailbox = Mailbox::new(1 << 20);
        mailbox.write_directly_to(server, Transport::EventStream);
        let waiting = mailbox.take();
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        let events: Vec<Frame> = (1..=2)
            .map(|seq| {
                PreparedEvent::encode(&crate::events::Event {
                    seq,
                    topic: crate::events::Topic::Inventory,
                    kind: "inventory.stock_changed".into(),
                    audience: crate::events::Audience::Everyone,
                    at: chrono::Utc::now(),
                    data: serde_json::json!({"stock": seq}),
                })
            })
            .collect();
        for event in &events {
            assert_eq!(
                mailbox.push(event.clone()),
                Pushed::Written(Transport::EventStream)
            );
        }
        let mut got = vec![0; events.iter().map(|e| e.sse_chunk.len()).sum()];
        client.read_exact(&mut got).await.unwrap();
        let expected: String = events
            .iter()
            .map(|e| {
                format!(
                    "{:x}\r\n{}\r\n",
                    e.sse.len(),
                    std::str::from_utf8(&e.sse).unwrap()
                )
            })
            .collect();
        assert_eq!(String::from_utf8(got).unwrap(), expected);
    }

    #[tokio::test]
    async fn the_hub_writes_to_an_idle_socket_and_leaves_the_writer_what_it_cannot() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (server, mut client) = pair().await;
        let mailbox = Mailbox::new(1 << 20);
        mailbox.write_directly_to(server.clone(), Transport::WebSocket);
        // Not idle before the writer waits: the frame is queued.
        let first = ws_frame(1, 100, 1);
        assert_eq!(mailbox.push(first.clone()), Pushed::Queued);
        let batch = mailbox.take().await.unwrap();
        assert_eq!((batch.frames.len(), batch.written), (1, 0));
        let mut expected = first.ws_frame.to_vec();
        let mut writer = crate::net::tcp::SharedTcp(server.clone());
        writer.write_all(&first.ws_frame).await.unwrap();

        // The writer waits: pushes go straight to the socket until it is full.
        let waiting = mailbox.take();
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        let mut seq = 1;
        let queued = loop {
            seq += 1;
            let frame = ws_frame(seq, 1000, seq as u8);
            match mailbox.push(frame.clone()) {
                Pushed::Written(Transport::WebSocket) => {
                    expected.extend_from_slice(&frame.ws_frame)
                }
                Pushed::Queued => break frame,
                other => panic!("unexpected {other:?}"),
            }
            assert!(seq < 100_000, "the socket never filled");
        };
        assert!(seq > 2, "the idle socket was written to directly");
        // Queued once full, behind the part of the frame the socket took.
        let later = ws_frame(seq + 1, 10, 0xEE);
        assert_eq!(mailbox.push(later.clone()), Pushed::Queued);
        let batch = waiting.await.unwrap();
        assert_eq!(batch.frames.len(), 2);
        assert!(Arc::ptr_eq(&batch.frames[0], &queued));
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        writer
            .write_all(&queued.ws_frame[batch.written..])
            .await
            .unwrap();
        writer.write_all(&later.ws_frame).await.unwrap();
        expected.extend_from_slice(&queued.ws_frame);
        expected.extend_from_slice(&later.ws_frame);
        writer.shutdown().await.unwrap();
        assert!(
            reader.await.unwrap() == expected,
            "every byte once, in order"
        );
    }

    #[tokio::test]
    async fn a_claim_returns_the_rest_of_a_begun_frame_even_after_a_close() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (server, mut client) = pair().await;
        let mailbox = Mailbox::new(1 << 20);
        mailbox.write_directly_to(server.clone(), Transport::WebSocket);
        // One frame larger than the socket takes at once, pushed while the writer waits.
        let big = ws_frame(1, 1 << 20, 7);
        {
            let waiting = mailbox.take();
            tokio::pin!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            assert_eq!(mailbox.push(big.clone()), Pushed::Queued);
        }
        mailbox.close(Closed::Shutdown);
        assert_eq!(mailbox.take().await.unwrap_err(), Closed::Shutdown);
        let rest = mailbox.claim().expect("the rest of the begun frame");
        assert!(!rest.is_empty() && rest.len() < big.ws_frame.len());
        assert_eq!(mailbox.claim(), None, "claimed once");
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            client.read_to_end(&mut received).await.unwrap();
            received
        });
        let mut writer = crate::net::tcp::SharedTcp(server);
        writer.write_all(&rest).await.unwrap();
        writer.shutdown().await.unwrap();
        assert!(reader.await.unwrap() == big.ws_frame, "the frame whole");
    }

    #[tokio::test]
    async fn frames_a_replay_already_sent_are_not_written_again() {
        let (server, _client) = pair().await;
        let mailbox = Mailbox::new(1 << 20);
        mailbox.write_directly_to(server, Transport::WebSocket);
        mailbox.skip_through(crate::events::Topic::Inventory, 5);
        let waiting = mailbox.take();
        tokio::pin!(waiting);
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        // Seq 5 was replayed: queued, and dropped when taken; seq 6 is new.
        assert_eq!(mailbox.push(ws_frame(5, 10, 5)), Pushed::Queued);
        assert_eq!(mailbox.push(ws_frame(6, 10, 6)), Pushed::Queued);
        let batch = waiting.await.unwrap();
        assert_eq!(batch.frames.iter().map(|f| f.seq).collect::<Vec<_>>(), [6]);
    }
}
