/// The bounded queue of gossip updates waiting to be piggybacked (memberlist's queue.go).
///
/// At most one update per member is queued: a newer one replaces it. Updates sent the fewest
/// times go first, and each is dropped after `limit` transmissions.
public struct BroadcastQueue: Sendable {
    struct Item: Sendable {
        var message: MembershipMessage
        var transmits: Int
        var order: UInt64  // newer updates first among equals
    }

    private var items: [String: Item] = [:]
    private var nextOrder: UInt64 = 0
    public let capacity: Int
    public private(set) var dropped: Int = 0

    public init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    public var count: Int { items.count }
    public var isEmpty: Bool { items.isEmpty }

    public mutating func enqueue(_ message: MembershipMessage) {
        guard let subject = message.subject else { preconditionFailure("only gossip is broadcast") }
        nextOrder += 1
        items[subject] = Item(message: message, transmits: 0, order: nextOrder)
        if items.count > capacity {
            // Drop the update that has been sent the most (the oldest among equals).
            if let worst = items.max(by: { ($0.value.transmits, -Int64($0.value.order)) < ($1.value.transmits, -Int64($1.value.order)) }) {
                items[worst.key] = nil
                dropped += 1
            }
        }
        assert(items.count <= capacity)
    }

    /// Takes updates that fit in `budget` bytes, counting one transmission for each.
    public mutating func take(budget: Int, limit: Int) -> [MembershipMessage] {
        guard !items.isEmpty, budget > 0 else { return [] }
        let ordered = items.sorted { a, b in
            a.value.transmits != b.value.transmits ? a.value.transmits < b.value.transmits : a.value.order > b.value.order
        }
        var out: [MembershipMessage] = []
        var used = 0
        for (key, item) in ordered {
            let size = item.message.encodedSize
            if used + size > budget { continue }
            used += size
            out.append(item.message)
            if item.transmits + 1 >= limit {
                items[key] = nil
            } else {
                items[key]!.transmits += 1
            }
            if out.count == WireLimits.maxMessagesPerPacket - 8 { break }
        }
        return out
    }

    /// Whether an update about `subject` is still queued (for tests).
    public func contains(subject: String) -> Bool { items[subject] != nil }
}
