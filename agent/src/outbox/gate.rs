//! The in-process write gate of the outbox.
//!
//! Capture chunks and acks are the outbox's writers, on different connections. Left to SQLite's
//! busy handler (which sleeps and polls), a capture that commits chunk after chunk re-takes the
//! write lock before a sleeping ack wakes up, so acks starve, the outbox grows, and end-to-end
//! throughput collapses. Writers therefore queue here first: whoever holds the gate holds the
//! only write transaction, and a waiting ack goes before the next capture chunk (acks are short
//! and free space). The gate is per process; an agent has one outbox.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

static BUSY: Mutex<bool> = Mutex::new(false);
static FREED: Condvar = Condvar::new();
static ACKS_WAITING: AtomicUsize = AtomicUsize::new(0);

/// Holding this is holding the gate; dropping it releases the gate.
#[derive(Debug)]
pub(crate) struct Pass(());

impl Drop for Pass {
    fn drop(&mut self) {
        let mut busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
        *busy = false;
        FREED.notify_all();
    }
}

/// Waits for the gate as a capture chunk: after every waiting ack.
pub(crate) fn enter_capture() -> Pass {
    let mut busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
    while *busy || ACKS_WAITING.load(Ordering::SeqCst) > 0 {
        busy = FREED.wait(busy).unwrap_or_else(|p| p.into_inner());
    }
    *busy = true;
    Pass(())
}

/// Waits for the gate as an ack (ahead of capture chunks).
pub(crate) fn enter_ack() -> Pass {
    ACKS_WAITING.fetch_add(1, Ordering::SeqCst);
    let mut busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
    while *busy {
        busy = FREED.wait(busy).unwrap_or_else(|p| p.into_inner());
    }
    *busy = true;
    ACKS_WAITING.fetch_sub(1, Ordering::SeqCst);
    Pass(())
}
