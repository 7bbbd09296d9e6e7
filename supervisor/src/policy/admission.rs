//! Whether a request may join a model's queue.

/// What a model looks like to admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Requests holding a slot in the worker.
    pub in_flight: usize,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Slots of the worker.
    pub slots: usize,
    /// Bound on `queued`.
    pub max_queue: usize,
}

/// The decision for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send it to the worker now.
    Run,
    /// Send it; the worker queues it until a slot frees.
    Queue,
    /// Refuse with 429 and `Retry-After`.
    Reject,
}

/// Admits while a slot is free, queues up to `max_queue`, then rejects.
pub fn admit(load: Load) -> Admission {
    if load.in_flight < load.slots {
        Admission::Run
    } else if load.queued < load.max_queue {
        Admission::Queue
    } else {
        Admission::Reject
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_table() {
        let l = |in_flight, queued| Load {
            in_flight,
            queued,
            slots: 4,
            max_queue: 2,
        };
        let table = [
            (l(0, 0), Admission::Run),
            (l(3, 0), Admission::Run),
            (l(4, 0), Admission::Queue),
            (l(4, 1), Admission::Queue),
            (l(4, 2), Admission::Reject),
        ];
        for (load, want) in table {
            assert_eq!(admit(load), want, "{load:?}");
        }
        assert_eq!(
            admit(Load {
                in_flight: 1,
                queued: 0,
                slots: 1,
                max_queue: 0
            }),
            Admission::Reject
        );
    }
}
