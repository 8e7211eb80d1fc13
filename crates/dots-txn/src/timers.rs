//! Timer names, per-transaction deadlines and the shared deadline heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::{Time, TxnId};

/// RFC 3261 timer names (plus L and M from RFC 6026).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Client INVITE retransmission (unreliable transports), doubling.
    A,
    /// Client INVITE timeout in Calling, 64*T1.
    B,
    /// Client INVITE wait for final response retransmissions, 32 s / 0.
    D,
    /// Client non-INVITE retransmission, doubling up to T2.
    E,
    /// Client non-INVITE timeout, 64*T1.
    F,
    /// Server INVITE final response retransmission, doubling up to T2.
    G,
    /// Server INVITE wait for ACK, 64*T1.
    H,
    /// Server INVITE wait for ACK retransmissions, T4 / 0.
    I,
    /// Server non-INVITE wait for request retransmissions, 64*T1 / 0.
    J,
    /// Client non-INVITE wait for response retransmissions, T4 / 0.
    K,
    /// Server INVITE in Accepted (RFC 6026), 64*T1.
    L,
    /// Client INVITE in Accepted (RFC 6026), 64*T1.
    M,
}

/// "Not armed": no deadline can be this late.
pub(crate) const UNARMED: Time = Time::MAX;

impl Timer {
    /// Client timers live on client transactions, the others on server ones.
    pub(crate) fn is_client(self) -> bool {
        matches!(
            self,
            Timer::A | Timer::B | Timer::D | Timer::E | Timer::F | Timer::K | Timer::M
        )
    }

    /// Each transaction kind uses at most four timers, so a four-slot array
    /// per transaction holds all its deadlines; timers of one kind never
    /// share a slot.
    pub(crate) fn slot(self) -> usize {
        match self {
            Timer::A | Timer::E | Timer::G | Timer::J => 0,
            Timer::B | Timer::F | Timer::H => 1,
            Timer::D | Timer::K | Timer::I => 2,
            Timer::M | Timer::L => 3,
        }
    }
}

/// The deadlines of one transaction, indexed by [`Timer::slot`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines([Time; 4]);

impl Deadlines {
    pub(crate) fn new() -> Deadlines {
        Deadlines([UNARMED; 4])
    }

    pub(crate) fn get(&self, timer: Timer) -> Time {
        self.0[timer.slot()]
    }

    pub(crate) fn clear(&mut self, timer: Timer) {
        self.0[timer.slot()] = UNARMED;
    }
}

/// All pending deadlines of the layer. Entries are never removed when a
/// timer is cancelled: an entry is live only while its transaction still
/// exists and still has that timer armed at that deadline, which keeps
/// cancellation O(1) and firing O(log n).
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<(Time, TxnId, Timer)>>,
}

impl TimerHeap {
    pub(crate) fn arm(&mut self, deadlines: &mut Deadlines, id: TxnId, timer: Timer, at: Time) {
        deadlines.0[timer.slot()] = at;
        self.heap.push(Reverse((at, id, timer)));
    }

    pub(crate) fn peek(&self) -> Option<(Time, TxnId, Timer)> {
        self.heap.peek().map(|Reverse(e)| *e)
    }

    pub(crate) fn pop(&mut self) -> Option<(Time, TxnId, Timer)> {
        self.heap.pop().map(|Reverse(e)| e)
    }
}
