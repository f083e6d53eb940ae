import StarlingCore

/// The nonces of stream hellos that opened recently, so that each sealed hello opens once.
///
/// A hello needs no key to replay: anyone who captured one from the network could present it
/// on any number of connections within the replay window and get the authenticated limits on
/// each (a frame of `maxFrameBytes`, no eviction). With this cache a replay is refused.
/// A hello is fresh while the sender's timestamp is within the replay window of our clock
/// either way, so from the first time we see it, it stays fresh for at most twice the window:
/// that is how long a nonce is kept. Bounded: when full, new hellos are refused (fail closed)
/// until old nonces expire; honest hellos come at the push-pull rate, far below the capacity.
struct HelloReplayCache {
    enum Verdict: Equatable { case fresh, replay, full }

    let capacity: Int
    let retention: Duration
    private var seen: Set<[UInt8]> = []
    /// Nonces in the order they were seen; all share one retention, so expiry is in this order.
    private var order: [(nonce: [UInt8], expires: Instant)] = []
    private var head = 0

    init(capacity: Int, retention: Duration) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.retention = retention
    }

    var count: Int { seen.count }

    /// Records `nonce` if it was not seen within the retention and there is room.
    mutating func admit(_ nonce: [UInt8], now: Instant) -> Verdict {
        expire(now: now)
        if seen.contains(nonce) { return .replay }
        guard seen.count < capacity else { return .full }
        seen.insert(nonce)
        order.append((nonce, now + retention))
        return .fresh
    }

    private mutating func expire(now: Instant) {
        while head < order.count, order[head].expires <= now {
            seen.remove(order[head].nonce)
            head += 1
        }
        if head >= 1024, head * 2 >= order.count {
            order.removeFirst(head)
            head = 0
        }
    }
}
