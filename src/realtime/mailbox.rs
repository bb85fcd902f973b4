//! A connection's queue of outgoing frames, bounded in bytes.
//!
//! The hub pushes shared, already encoded frames without waiting; the connection's writer
//! takes everything queued at once and writes it in as few socket writes as it can. A push
//! that would take the queue past its limit marks the connection a slow consumer instead:
//! the queue is dropped and the writer closes the connection, and the client resumes from
//! its last seq.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::frames::Frame;

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
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
    bytes: usize,
    closed: Option<Closed>,
}

/// The queue between the hub and one connection's writer.
#[derive(Debug)]
pub struct Mailbox {
    state: Mutex<State>,
    ready: Notify,
    limit: usize,
}

impl Mailbox {
    pub fn new(limit_bytes: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            limit: limit_bytes,
        })
    }

    /// Queues a frame. Never waits.
    pub fn push(&self, frame: Frame) -> Pushed {
        self.push_all(std::slice::from_ref(&frame))
    }

    /// Queues several frames with one lock and one wakeup: the hub's way with a batch of
    /// events for everyone. All of them, or (past the limit) none and the mailbox closes.
    pub fn push_all(&self, frames: &[Frame]) -> Pushed {
        let mut state = self.state.lock().expect("mailbox lock");
        if state.closed.is_some() {
            return Pushed::Closed;
        }
        let size: usize = frames.iter().map(|f| f.len()).sum();
        if state.bytes + size > self.limit {
            state.frames.clear();
            state.bytes = 0;
            state.closed = Some(Closed::SlowConsumer);
            drop(state);
            self.ready.notify_one();
            return Pushed::Overflowed;
        }
        state.bytes += size;
        state.frames.extend(frames.iter().cloned());
        drop(state);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Closes the mailbox for `reason` (the first reason wins); queued frames are dropped.
    pub fn close(&self, reason: Closed) {
        let mut state = self.state.lock().expect("mailbox lock");
        if state.closed.is_none() {
            state.closed = Some(reason);
            state.frames.clear();
            state.bytes = 0;
        }
        drop(state);
        self.ready.notify_one();
    }

    /// Waits until something is queued or the mailbox is closed, then takes all of it.
    pub async fn take(&self) -> Result<VecDeque<Frame>, Closed> {
        loop {
            // Registered before the check, so a push between the check and the wait is seen.
            let notified = self.ready.notified();
            {
                let mut state = self.state.lock().expect("mailbox lock");
                if let Some(reason) = state.closed {
                    return Err(reason);
                }
                if !state.frames.is_empty() {
                    state.bytes = 0;
                    // Hand over the queue itself; the next push starts a fresh one.
                    return Ok(std::mem::take(&mut state.frames));
                }
            }
            notified.await;
        }
    }

    /// Bytes queued now (for metrics).
    pub fn queued_bytes(&self) -> usize {
        self.state.lock().expect("mailbox lock").bytes
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
            ws: axum::extract::ws::Utf8Bytes::from_static(""),
            sse: bytes::Bytes::from(vec![b'x'; n]),
        })
    }

    #[tokio::test]
    async fn frames_are_taken_all_at_once_in_order() {
        let mailbox = Mailbox::new(1000);
        assert_eq!(mailbox.push(frame(10)), Pushed::Queued);
        assert_eq!(mailbox.push(frame(20)), Pushed::Queued);
        let taken = mailbox.take().await.unwrap();
        assert_eq!(taken.iter().map(|f| f.len()).collect::<Vec<_>>(), [10, 20]);
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
            async move { mailbox.take().await.map(|f| f.len()) }
        });
        tokio::task::yield_now().await;
        mailbox.push(frame(5));
        assert_eq!(waiter.await.unwrap(), Ok(1));
        let waiter = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.take().await.map(|f| f.len()) }
        });
        mailbox.close(Closed::Shutdown);
        assert_eq!(waiter.await.unwrap(), Err(Closed::Shutdown));
    }
}
