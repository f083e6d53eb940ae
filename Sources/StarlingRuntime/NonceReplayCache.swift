import StarlingCore

/// The nonces of sealed envelopes that opened recently, so that each one opens once.
///
/// Two instances per node: stream hellos and gossip datagrams. Neither needs the key to replay:
/// anyone who captured one from the network could present it again within the replay window.
/// A replayed hello would get the authenticated limits on a new connection (a frame of
/// `maxFrameBytes`, no eviction); a replayed datagram would draw the replies it drew the first
/// time (an ack, an alive or a tell, each a packet towards a member or the packet's reply
/// address), and re-apply old gossip. With this cache a replay is dropped and counted.
///
/// An envelope is fresh while the sender's timestamp is within the replay window of our clock
/// either way, so from the first time we see it, it stays fresh for at most twice the window:
/// that is how long a nonce is kept. Only envelopes that opened are admitted (nobody without
/// the key can invent nonces), and the nonce is authenticated (altering it fails the open).
///
/// Bounded, and what happens when full depends on what the envelope is (`WhenFull`):
/// - Hellos are addressed to one node, so a captured hello opens at most once anywhere, and only
///   honest hellos fill the cache: when full, new hellos are refused until old nonces expire.
/// - Datagrams are not addressed: one captured from the network opens once *at every node*, so
///   someone on the path who replays captured traffic towards other nodes fills their caches
///   without the key. Refusing when full would make such a node deaf (acks and refutations
///   dropped: declared dead within seconds), so the oldest nonce is forgotten instead (counted
///   in `starling_replay_cache_evictions_total`): a flood can at worst re-open the door to
///   replays of the oldest packets, which is where things stood before this cache.
struct NonceReplayCache {
    enum Verdict: Equatable {
        case fresh
        case replay
        /// Refused: full (`WhenFull.refuse`).
        case full
        /// Admitted after the oldest nonce was forgotten to make room (`WhenFull.evictOldest`).
        case freshEvicting
    }

    enum WhenFull { case refuse, evictOldest }

    /// A nonce of up to 24 bytes (an envelope's is exactly 24) held inline: no allocation per
    /// remembered packet, 32 bytes each.
    struct Key: Hashable {
        var words: (UInt64, UInt64, UInt64)
        var count: UInt8

        init(_ bytes: [UInt8]) {
            precondition(bytes.count <= 24, "a nonce is at most 24 bytes")
            var w: [UInt64] = [0, 0, 0]
            for (i, b) in bytes.enumerated() { w[i / 8] |= UInt64(b) << UInt64(8 * (i % 8)) }
            words = (w[0], w[1], w[2])
            count = UInt8(bytes.count)
        }

        static func == (a: Key, b: Key) -> Bool {
            a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.count == b.count
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(words.0)
            hasher.combine(words.1)
            hasher.combine(words.2)
            hasher.combine(count)
        }
    }

    let capacity: Int
    let retention: Duration
    let whenFull: WhenFull
    private var seen: Set<Key> = []
    /// Nonces in the order they were seen; all share one retention, so expiry is in this order.
    private var order: [(nonce: Key, expires: Instant)] = []
    private var head = 0

    init(capacity: Int, retention: Duration, whenFull: WhenFull = .refuse) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.retention = retention
        self.whenFull = whenFull
    }

    var count: Int { seen.count }

    /// Records `nonce` if it was not seen within the retention and there is room.
    mutating func admit(_ bytes: [UInt8], now: Instant) -> Verdict {
        let nonce = Key(bytes)
        expire(now: now)
        if seen.contains(nonce) { return .replay }
        var verdict = Verdict.fresh
        if seen.count >= capacity {
            guard whenFull == .evictOldest else { return .full }
            // Every remembered nonce is in `order` from `head` on (expiry removes from the front).
            seen.remove(order[head].nonce)
            head += 1
            compact()
            verdict = .freshEvicting
        }
        seen.insert(nonce)
        order.append((nonce, now + retention))
        assert(seen.count <= capacity && seen.count == order.count - head, "replay cache out of step")
        return verdict
    }

    private mutating func expire(now: Instant) {
        while head < order.count, order[head].expires <= now {
            seen.remove(order[head].nonce)
            head += 1
        }
        compact()
    }

    private mutating func compact() {
        if head >= 1024, head * 2 >= order.count {
            order.removeFirst(head)
            head = 0
        }
    }
}
