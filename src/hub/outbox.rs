//! A connection's bounded outbound queue, shared by the fan-out (producers) and the connection's
//! writer (the one consumer).
//!
//! Bounded in bytes and messages: a consumer that falls behind is closed with 3008 and its queue
//! dropped, so one slow client never holds memory or time that others need.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::protocol::Disconnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is over its bound: the connection is being closed as slow.
    Overflow,
    /// The connection is already closing.
    Closed,
}

struct Inner {
    queue: VecDeque<Bytes>,
    bytes: usize,
    close: Option<Disconnect>,
}

pub struct Outbox {
    /// Std mutex: held for a push or a drain, never across `.await`.
    inner: Mutex<Inner>,
    notify: Notify,
    max_bytes: usize,
    max_messages: usize,
}

impl Outbox {
    pub fn new(max_bytes: usize, max_messages: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                bytes: 0,
                close: None,
            }),
            notify: Notify::new(),
            max_bytes,
            max_messages,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue one push for the writer; over the bound, the connection is closed as slow.
    pub fn push(&self, message: Bytes) -> Result<(), PushError> {
        self.enqueue(message, false)
    }

    /// Queue a reply. Replies answer the client's own commands (whose rate is limited), and a
    /// subscribe reply may carry a large snapshot, so only the message count bounds them.
    pub fn push_reply(&self, message: Bytes) -> Result<(), PushError> {
        self.enqueue(message, true)
    }

    fn enqueue(&self, message: Bytes, reply: bool) -> Result<(), PushError> {
        let mut inner = self.lock();
        if inner.close.is_some() {
            return Err(PushError::Closed);
        }
        let over_bytes = !reply && inner.bytes + message.len() > self.max_bytes;
        if inner.queue.len() >= self.max_messages || over_bytes {
            inner.queue.clear();
            inner.bytes = 0;
            inner.close = Some(Disconnect::SLOW);
            drop(inner);
            self.notify.notify_one();
            return Err(PushError::Overflow);
        }
        let was_empty = inner.queue.is_empty();
        inner.bytes += message.len();
        inner.queue.push_back(message);
        drop(inner);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Ask the writer to close the connection with `disconnect` after what is queued.
    /// The first close wins.
    pub fn close(&self, disconnect: Disconnect) {
        let mut inner = self.lock();
        if inner.close.is_none() {
            inner.close = Some(disconnect);
        }
        drop(inner);
        self.notify.notify_one();
    }

    pub fn closing(&self) -> Option<Disconnect> {
        self.lock().close
    }

    /// Move everything queued into `batch`; returns the pending close, if any.
    pub fn drain(&self, batch: &mut Vec<Bytes>) -> Option<Disconnect> {
        let mut inner = self.lock();
        batch.extend(inner.queue.drain(..));
        inner.bytes = 0;
        inner.close
    }

    /// Wait until something is queued or a close is requested.
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_closes_as_slow_and_drops_the_queue() {
        let o = Outbox::new(10, 100);
        o.push(Bytes::from_static(b"12345")).unwrap();
        assert_eq!(o.push(Bytes::from_static(b"1234567")), Err(PushError::Overflow));
        let mut batch = Vec::new();
        assert_eq!(o.drain(&mut batch), Some(Disconnect::SLOW));
        assert!(batch.is_empty());
        assert_eq!(o.push(Bytes::from_static(b"1")), Err(PushError::Closed));
    }

    #[test]
    fn message_count_is_bounded_too() {
        let o = Outbox::new(1 << 20, 2);
        o.push(Bytes::from_static(b"a")).unwrap();
        o.push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(o.push(Bytes::from_static(b"c")), Err(PushError::Overflow));
    }
}
