/// Round-robin probe order over a shuffled list (SWIM paper section 4.3).
///
/// Every member is probed once per pass, so a failed member is probed within `2N − 1` periods
/// at worst; the list is reshuffled at the end of each pass, and a new member is inserted at a
/// random position. Each name appears at most once.
public struct ProbeSchedule: Sendable {
    private var order: [String] = []
    private var present: Set<String> = []
    private var index = 0

    public init() {}

    public var count: Int { order.count }

    public func contains(_ name: String) -> Bool { present.contains(name) }

    /// Adds many members at once in a random order (O(n), unlike n single inserts).
    public mutating func insert(contentsOf names: [String], using rng: inout DeterministicRNG) {
        let fresh = names.filter { present.insert($0).inserted }
        order.append(contentsOf: fresh)
        order[index...].shuffle(using: &rng)
        assert(order.count == present.count)
    }

    public mutating func insert(_ name: String, using rng: inout DeterministicRNG) {
        guard present.insert(name).inserted else { return }
        let at = order.isEmpty ? 0 : Int.random(in: 0...order.count, using: &rng)
        order.insert(name, at: at)
        if at < index { index += 1 }
        assert(order.count == present.count)
    }

    /// The next member to probe for which `eligible` holds, or nil if there is none.
    public mutating func next(using rng: inout DeterministicRNG, eligible: (String) -> Bool) -> String? {
        var scanned = 0
        while scanned < order.count * 2 + 1 {
            if index >= order.count {
                order.removeAll { name in
                    if eligible(name) { return false }
                    present.remove(name)
                    return true
                }
                order.shuffle(using: &rng)
                index = 0
                if order.isEmpty { return nil }
            }
            let candidate = order[index]
            index += 1
            scanned += 1
            if eligible(candidate) { return candidate }
        }
        return nil
    }

    public mutating func remove(_ name: String) {
        guard present.remove(name) != nil, let at = order.firstIndex(of: name) else { return }
        order.remove(at: at)
        if at < index { index -= 1 }
    }
}
