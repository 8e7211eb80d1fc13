//! Timer names, per-transaction deadlines and the shared deadline heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

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

type Entry = (Time, TxnId, Timer);

/// Timers whose duration is fixed for the layer (64*T1, Timer D, T4): armed
/// at non-decreasing times, they expire in the order they were armed.
const QUEUED: [Timer; 9] = [
    Timer::B,
    Timer::D,
    Timer::F,
    Timer::H,
    Timer::I,
    Timer::J,
    Timer::K,
    Timer::L,
    Timer::M,
];

fn queue_of(timer: Timer) -> Option<usize> {
    QUEUED.iter().position(|&t| t == timer)
}

/// All pending deadlines of the layer. Entries are never removed when a
/// timer is cancelled: an entry is live only while its transaction still
/// exists and still has that timer armed at that deadline, which keeps
/// cancellation O(1).
///
/// Timers of fixed duration go to a first-in first-out queue per timer,
/// the retransmission timers (A, E, G) and anything armed out of order to
/// a heap. Under load nearly every entry is a Timer J waiting 32 s, so
/// millions of them are pending: taking one off a heap that size walks
/// ~21 levels of cache misses (about 1.5 µs), taking it off a queue touches
/// one cache line. The earliest entry overall is the least of the heap's
/// top and the queues' fronts, in the heap's order, so the order in which
/// timers fire does not depend on where they were kept.
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<Entry>>,
    queues: [VecDeque<Entry>; QUEUED.len()],
}

/// Where the earliest entry is.
#[derive(Clone, Copy)]
enum Source {
    Heap,
    Queue(usize),
}

impl TimerHeap {
    pub(crate) fn arm(&mut self, deadlines: &mut Deadlines, id: TxnId, timer: Timer, at: Time) {
        deadlines.0[timer.slot()] = at;
        let entry = (at, id, timer);
        if let Some(q) = queue_of(timer) {
            let queue = &mut self.queues[q];
            // In order behind the last one (the caller's clock did not go
            // back): the queue stays sorted.
            if queue.back().is_none_or(|last| *last <= entry) {
                queue.push_back(entry);
                return;
            }
        }
        self.heap.push(Reverse(entry));
    }

    fn earliest(&self) -> Option<(Entry, Source)> {
        let mut best = self.heap.peek().map(|Reverse(e)| (*e, Source::Heap));
        for (q, queue) in self.queues.iter().enumerate() {
            if let Some(front) = queue.front() {
                if best.is_none_or(|(b, _)| *front < b) {
                    best = Some((*front, Source::Queue(q)));
                }
            }
        }
        best
    }

    pub(crate) fn peek(&self) -> Option<Entry> {
        self.earliest().map(|(e, _)| e)
    }

    pub(crate) fn pop(&mut self) -> Option<Entry> {
        match self.earliest()?.1 {
            Source::Heap => self.heap.pop().map(|Reverse(e)| e),
            Source::Queue(q) => self.queues[q].pop_front(),
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    /// Entries come out in (deadline, id, timer) order wherever they were
    /// kept, including queued timers armed out of order.
    #[test]
    fn pops_in_heap_order() {
        let mut timers = TimerHeap::default();
        let mut d = Deadlines::new();
        let armed = [
            (32_000, 1, Timer::J),
            (500, 2, Timer::E),
            (32_000, 3, Timer::J),
            (5_000, 4, Timer::K),
            (32_000, 2, Timer::J), // same deadline, lower id: out of order
            (10, 5, Timer::J),     // earlier than the queue's last: out of order
            (32_000, 6, Timer::F),
            (1_000, 2, Timer::E),
        ];
        for (at, id, timer) in armed {
            timers.arm(&mut d, TxnId(id), timer, at);
        }
        let mut expected: Vec<Entry> = armed.iter().map(|&(a, i, t)| (a, TxnId(i), t)).collect();
        expected.sort();
        let mut popped = Vec::new();
        while let Some(e) = timers.peek() {
            assert_eq!(timers.pop(), Some(e));
            popped.push(e);
        }
        assert_eq!(popped, expected);
        assert_eq!(timers.pop(), None);
    }
}
