/// Round-robin probe order over a shuffled list (SWIM paper section 4.3).
///
/// Every member is probed once per pass, so a failed member is probed within `2N − 1` periods
/// at worst; the list is reshuffled at the end of each pass, and a new member is inserted at a
/// random position. Members are `MemberTable` slots (4 bytes each, plus a presence flag), and
/// each appears at most once.
public struct ProbeSchedule: Sendable {
    public typealias Slot = MemberTable.Slot

    private var order: [Slot] = []
    private var present: [Bool] = []
    private var index = 0

    public init() {}

    public var count: Int { order.count }

    public func contains(_ slot: Slot) -> Bool { Int(slot) < present.count && present[Int(slot)] }

    private mutating func mark(_ slot: Slot) -> Bool {
        precondition(slot >= 0, "slots are non-negative")
        if Int(slot) >= present.count {
            present.append(contentsOf: repeatElement(false, count: Int(slot) + 1 - present.count))
        }
        guard !present[Int(slot)] else { return false }
        present[Int(slot)] = true
        return true
    }

    /// Adds many members at once in a random order (O(n), unlike n single inserts).
    public mutating func insert(contentsOf slots: [Slot], using rng: inout DeterministicRNG) {
        let fresh = slots.filter { mark($0) }
        order.append(contentsOf: fresh)
        order[index...].shuffle(using: &rng)
    }

    public mutating func insert(_ slot: Slot, using rng: inout DeterministicRNG) {
        guard mark(slot) else { return }
        let at = order.isEmpty ? 0 : Int.random(in: 0...order.count, using: &rng)
        order.insert(slot, at: at)
        if at < index { index += 1 }
    }

    /// The next member to probe for which `eligible` holds, or nil if there is none.
    public mutating func next(using rng: inout DeterministicRNG, eligible: (Slot) -> Bool) -> Slot? {
        var scanned = 0
        while scanned < order.count * 2 + 1 {
            if index >= order.count {
                order.removeAll { slot in
                    if eligible(slot) { return false }
                    present[Int(slot)] = false
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

    /// Drops a member (before its slot is reused for another). O(n): only reaping calls it.
    public mutating func remove(_ slot: Slot) {
        guard contains(slot), let at = order.firstIndex(of: slot) else { return }
        present[Int(slot)] = false
        order.remove(at: at)
        if at < index { index -= 1 }
    }
}
