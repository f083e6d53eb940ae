/// The bounded queue of gossip updates waiting to be piggybacked (memberlist's queue.go).
///
/// At most one update per member is queued: a newer one replaces it. Updates sent the fewest
/// times go first, newest first among equals, and each is dropped after `limit` transmissions.
///
/// Every outgoing packet takes from this queue, so `take` must not cost O(n log n) in the queue's
/// length (up to `capacity`, under churn). Updates are kept in one level per transmit count,
/// each level sorted by age; a take walks the levels from the least sent and stops when the
/// packet is full, so it touches about as many updates as it sends (plus at most `maxSkips`).
public struct BroadcastQueue: Sendable {
    struct Item: Sendable {
        var message: MembershipMessage
        var transmits: Int
        var order: UInt64  // newer updates first among equals
    }

    struct Key: Sendable, Comparable {
        var order: UInt64
        var subject: String
        static func < (a: Key, b: Key) -> Bool { a.order < b.order }
    }

    private var items: [String: Item] = [:]
    /// `levels[t]`: the keys of the items sent `t` times, oldest first.
    private var levels: [[Key]] = []
    private var nextOrder: UInt64 = 0
    public let capacity: Int
    public private(set) var dropped: Int = 0
    /// The smallest gossip update: a suspect or dead with one-byte names (3 + 3 + 8 + 3 bytes).
    /// A packet with less room left is full.
    static let smallestUpdate = 17
    /// A take gives up after this many updates that do not fit the room left: with thousands
    /// queued (a large cluster on a lossy network), looking for one small enough to fill the last
    /// few bytes would scan the whole queue for every packet.
    static let maxSkips = 16

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    public var count: Int { items.count }
    public var isEmpty: Bool { items.isEmpty }

    public mutating func enqueue(_ message: MembershipMessage) {
        guard let subject = message.subject else { preconditionFailure("only gossip is broadcast") }
        if let old = items[subject] { unlink(Key(order: old.order, subject: subject), level: old.transmits) }
        nextOrder += 1
        items[subject] = Item(message: message, transmits: 0, order: nextOrder)
        link(Key(order: nextOrder, subject: subject), level: 0)
        if items.count > capacity, let worst = levels.lastIndex(where: { !$0.isEmpty }) {
            // Drop the update that has been sent the most (the oldest among equals).
            let key = levels[worst].removeFirst()
            items[key.subject] = nil
            dropped += 1
        }
        assert(items.count <= capacity)
        assert(items.count == levels.reduce(0) { $0 + $1.count }, "levels out of step with the items")
    }

    /// Takes updates that fit in `budget` bytes, counting one transmission for each.
    public mutating func take(budget: Int, limit: Int) -> [MembershipMessage] {
        guard !items.isEmpty, budget > 0 else { return [] }
        var out: [MembershipMessage] = []
        var used = 0
        var sent: [(key: Key, level: Int)] = []
        var skipped = 0
        walk: for level in levels.indices {
            for key in levels[level].reversed() {
                let message = items[key.subject]!.message
                let size = message.encodedSize
                if used + size > budget {
                    skipped += 1
                    if skipped == Self.maxSkips { break walk }
                    continue
                }
                used += size
                out.append(message)
                sent.append((key, level))
                if out.count == WireLimits.maxMessagesPerPacket - 8 { break walk }
            }
            if budget - used < Self.smallestUpdate { break }
        }
        for (key, level) in sent {
            unlink(key, level: level)
            if level + 1 >= limit {
                items[key.subject] = nil
            } else {
                items[key.subject]!.transmits = level + 1
                link(key, level: level + 1)
            }
        }
        return out
    }

    /// Whether an update about `subject` is still queued (for tests).
    public func contains(subject: String) -> Bool { items[subject] != nil }

    private mutating func link(_ key: Key, level: Int) {
        while levels.count <= level { levels.append([]) }
        let at = levels[level].partitioningIndex { $0.order > key.order }
        levels[level].insert(key, at: at)
    }

    private mutating func unlink(_ key: Key, level: Int) {
        let at = levels[level].partitioningIndex { $0.order >= key.order }
        precondition(at < levels[level].count && levels[level][at].order == key.order, "queued update not in its level")
        levels[level].remove(at: at)
    }
}

extension Array {
    /// The first index whose element satisfies `belongs`, which must be false then true along
    /// the array (binary search).
    func partitioningIndex(where belongs: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let mid = (low + high) / 2
            if belongs(self[mid]) { high = mid } else { low = mid + 1 }
        }
        return low
    }
}
