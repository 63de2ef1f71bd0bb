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
    /// The largest message queued.
    largest: usize,
    /// Drained by the writer and not yet written: bytes, and its largest message.
    in_flight: usize,
    in_flight_largest: usize,
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
                largest: 0,
                in_flight: 0,
                in_flight_largest: 0,
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
        self.enqueue(message)
    }

    /// Queue a reply, under the same bound as pushes: a client that keeps asking for snapshots
    /// and never reads them is closed as slow like any other.
    pub fn push_reply(&self, message: Bytes) -> Result<(), PushError> {
        self.enqueue(message)
    }

    /// What is bounded is what piles up unread: every byte not yet written (queued, or drained
    /// by the writer and still being written) except the single largest message. So one message
    /// larger than the bound (a subscribe reply with the `offers:all` snapshot) still reaches a
    /// client that reads, while a second one behind it closes a client that does not.
    fn enqueue(&self, message: Bytes) -> Result<(), PushError> {
        let mut inner = self.lock();
        if inner.close.is_some() {
            return Err(PushError::Closed);
        }
        let total = inner.in_flight + inner.bytes + message.len();
        let largest = inner.largest.max(inner.in_flight_largest).max(message.len());
        let over_bytes = total - largest > self.max_bytes;
        if inner.queue.len() >= self.max_messages || over_bytes {
            inner.queue.clear();
            inner.bytes = 0;
            inner.largest = 0;
            inner.close = Some(Disconnect::SLOW);
            drop(inner);
            self.notify.notify_one();
            return Err(PushError::Overflow);
        }
        let was_empty = inner.queue.is_empty();
        inner.bytes += message.len();
        inner.largest = inner.largest.max(message.len());
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

    /// Move everything queued into `batch` (in flight until [`Outbox::written`]); returns the
    /// pending close, if any.
    pub fn drain(&self, batch: &mut Vec<Bytes>) -> Option<Disconnect> {
        let mut inner = self.lock();
        batch.extend(inner.queue.drain(..));
        inner.in_flight += inner.bytes;
        inner.in_flight_largest = inner.in_flight_largest.max(inner.largest);
        inner.bytes = 0;
        inner.largest = 0;
        inner.close
    }

    /// The writer wrote (and flushed) everything it drained.
    pub fn written(&self) {
        let mut inner = self.lock();
        inner.in_flight = 0;
        inner.in_flight_largest = 0;
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
        o.push(Bytes::from_static(b"123456")).unwrap();
        // Behind the head (5 bytes, next to be written): 6 + 7 > 10.
        assert_eq!(o.push(Bytes::from_static(b"1234567")), Err(PushError::Overflow));
        let mut batch = Vec::new();
        assert_eq!(o.drain(&mut batch), Some(Disconnect::SLOW));
        assert!(batch.is_empty());
        assert_eq!(o.push(Bytes::from_static(b"1")), Err(PushError::Closed));
    }

    #[test]
    fn one_message_over_the_bound_reaches_a_reader_but_a_second_one_unread_closes() {
        let o = Outbox::new(10, 100);
        let snapshot = Bytes::from(vec![b'x'; 25]);
        o.push_reply(snapshot.clone()).unwrap();
        // Pushes behind it within the bound are fine: it is being written.
        o.push(Bytes::from_static(b"12345")).unwrap();
        let mut batch = Vec::new();
        assert_eq!(o.drain(&mut batch), None);
        assert_eq!(batch.len(), 2);
        // Written: the next snapshot is fine.
        o.written();
        o.push_reply(snapshot.clone()).unwrap();
        assert_eq!(o.drain(&mut batch), None);
        // A client that asks again while the last one is still being written (it does not
        // read): the second snapshot would pile up behind the first.
        assert_eq!(o.push_reply(snapshot), Err(PushError::Overflow));
        assert_eq!(o.closing(), Some(Disconnect::SLOW));
    }

    #[test]
    fn message_count_is_bounded_too() {
        let o = Outbox::new(1 << 20, 2);
        o.push(Bytes::from_static(b"a")).unwrap();
        o.push(Bytes::from_static(b"b")).unwrap();
        assert_eq!(o.push(Bytes::from_static(b"c")), Err(PushError::Overflow));
    }
}
