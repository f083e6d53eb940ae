/// The member table, compact: one slot per member, this node always in slot 0.
///
/// A simulated cluster holds N tables of N members, so the cost of an entry decides how large a
/// cluster the simulator can run (N = 10,000 is 10⁸ entries). A `[String: Member]` plus the
/// name-keyed indexes it needed cost about 350 bytes an entry; this table costs about 105:
/// - `entries`: the members by slot (88 bytes; a reaped slot is nil and reused).
/// - `buckets`: an open-addressing index from name to slot with linear probing, at most half
///   full (4–16 bytes an entry), and `hashes` (4 bytes) so that probing compares a string only
///   when its hash matches.
/// - `active` and `inactive`: the other members partitioned by status, as slot lists that allow
///   O(1) insert, remove and uniform choice, with each slot's `position` in its list (8 bytes).
///
/// Iteration is in slot order, which depends only on the order of inserts and removals, never on
/// the process's hash seed, so a simulation stays deterministic. The index hashes names with the
/// standard library's seeded `Hasher`, so names chosen by a peer cannot force collisions.
public struct MemberTable: Sendable, Sequence {
    public typealias Slot = Int32

    private var entries: [Member?] = []
    private var hashes: [UInt32] = []
    private var freeSlots: [Slot] = []
    /// 0: empty; otherwise slot + 1. The capacity is a power of two.
    private var buckets: [Slot] = []
    /// Index of the slot in `active` or `inactive`; -1 for slot 0 and free slots.
    private var position: [Slot] = []
    /// Alive or suspect members other than slot 0.
    private(set) var active: [Slot] = []
    /// Dead or left members other than slot 0.
    private(set) var inactive: [Slot] = []

    public private(set) var count = 0

    /// A table holding `owner` in slot 0, with room for `capacity` members.
    init(owner: Member, capacity: Int = 8) {
        reserveCapacity(capacity)
        insert(owner)
    }

    mutating func reserveCapacity(_ n: Int) {
        entries.reserveCapacity(n)
        hashes.reserveCapacity(n)
        position.reserveCapacity(n)
        var size = 16
        while size < 2 * n { size *= 2 }
        if size > buckets.count { rebuildIndex(size: size) }
    }

    // MARK: Lookup

    public subscript(name: String) -> Member? {
        slot(of: name).map { entries[Int($0)]! }
    }

    public func slot(of name: String) -> Slot? {
        find(name, hash: Self.hash(name)).slot
    }

    func member(at slot: Slot) -> Member { entries[Int(slot)]! }

    func name(at slot: Slot) -> String { entries[Int(slot)]!.name }

    func isActive(slot: Slot) -> Bool {
        Int(slot) < entries.count && entries[Int(slot)]?.status.isActive == true
    }

    public func makeIterator() -> some IteratorProtocol<Member> {
        entries.lazy.compactMap { $0 }.makeIterator()
    }

    // MARK: Changes

    /// Adds a member that is not in the table yet; returns its slot.
    @discardableResult
    mutating func insert(_ member: Member) -> Slot {
        guard let slot = insertIfAbsent(member) else { preconditionFailure("member \(member.name) is already in the table") }
        return slot
    }

    /// Adds a member unless one of that name is present; returns the new slot, or nil.
    mutating func insertIfAbsent(_ member: Member) -> Slot? {
        if 2 * (count + 1) > buckets.count { rebuildIndex(size: Swift.max(16, buckets.count * 2)) }
        let h = Self.hash(member.name)
        let (bucket, existing) = find(member.name, hash: h)
        guard existing == nil else { return nil }
        let slot: Slot
        if let reused = freeSlots.popLast() {
            slot = reused
            entries[Int(slot)] = member
            hashes[Int(slot)] = h
        } else {
            precondition(entries.count < Int(Slot.max), "member table full")
            slot = Slot(entries.count)
            entries.append(member)
            hashes.append(h)
            position.append(-1)
        }
        buckets[bucket] = slot + 1
        count += 1
        place(slot, status: member.status)
        return slot
    }

    /// Replaces the member in `slot`; the name must stay the same.
    mutating func update(_ slot: Slot, _ change: (inout Member) -> Void) {
        var m = entries[Int(slot)]!
        let (name, status) = (m.name, m.status)
        change(&m)
        precondition(m.name == name, "a member's name is its key")
        entries[Int(slot)] = m
        if m.status.isActive != status.isActive {
            unplace(slot, wasActive: status.isActive)
            place(slot, status: m.status)
        }
    }

    /// Removes the member in `slot` (never slot 0); the slot is reused by a later insert.
    mutating func remove(_ slot: Slot) {
        precondition(slot > 0, "this node never leaves its own table")
        let m = entries[Int(slot)]!
        unplace(slot, wasActive: m.status.isActive)
        removeFromIndex(slot)
        entries[Int(slot)] = nil
        freeSlots.append(slot)
        count -= 1
        assert(active.count + inactive.count + 1 == count, "member partition out of step")
    }

    // MARK: Choice

    /// Up to `k` distinct members of `list` chosen uniformly, none named `excluding`.
    func sample(_ list: KeyPath<MemberTable, [Slot]>, _ k: Int, excluding: String? = nil,
                using rng: inout DeterministicRNG) -> [Slot] {
        let from = self[keyPath: list]
        guard k > 0, !from.isEmpty else { return [] }
        var picked: [Slot] = []
        var seen = Set<Int>()
        var attempts = 0
        // Rejection sampling is O(k) when k is small next to the list, the usual case here;
        // the bound on attempts keeps it bounded when it is not.
        while picked.count < k, attempts < 4 * k + 16 {
            attempts += 1
            let i = Int.random(in: 0..<from.count, using: &rng)
            if seen.insert(i).inserted, name(at: from[i]) != excluding { picked.append(from[i]) }
        }
        if picked.count < k, from.count <= 4 * k + 16 {
            for (i, s) in from.enumerated() where picked.count < k && !seen.contains(i) && name(at: s) != excluding {
                picked.append(s)
            }
        }
        return picked
    }

    // MARK: Internals

    static func hash(_ name: String) -> UInt32 { UInt32(truncatingIfNeeded: name.hashValue) }

    private func find(_ name: String, hash h: UInt32) -> (bucket: Int, slot: Slot?) {
        let mask = buckets.count - 1
        var b = Int(h) & mask
        while true {
            let v = buckets[b]
            if v == 0 { return (b, nil) }
            if hashes[Int(v - 1)] == h, entries[Int(v - 1)]!.name == name { return (b, v - 1) }
            b = (b + 1) & mask
        }
    }

    private mutating func rebuildIndex(size: Int) {
        assert(size & (size - 1) == 0 && size >= 2 * count)
        buckets = Array(repeating: 0, count: size)
        let mask = size - 1
        for (slot, entry) in entries.enumerated() where entry != nil {
            var b = Int(hashes[slot]) & mask
            while buckets[b] != 0 { b = (b + 1) & mask }
            buckets[b] = Slot(slot) + 1
        }
    }

    /// Backward-shift deletion: keeps every probe sequence unbroken without tombstones.
    private mutating func removeFromIndex(_ slot: Slot) {
        let mask = buckets.count - 1
        var hole = Int(hashes[Int(slot)]) & mask
        while buckets[hole] != slot + 1 { hole = (hole + 1) & mask }
        buckets[hole] = 0
        var j = hole
        while true {
            j = (j + 1) & mask
            let v = buckets[j]
            if v == 0 { return }
            let home = Int(hashes[Int(v - 1)]) & mask
            // The entry at j may move into the hole unless its home lies cyclically in (hole, j].
            let stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j)
            if !stays {
                buckets[hole] = v
                buckets[j] = 0
                hole = j
            }
        }
    }

    private mutating func place(_ slot: Slot, status: MemberStatus) {
        guard slot != 0 else { return }
        if status.isActive {
            Self.append(slot, to: &active, position: &position)
        } else {
            Self.append(slot, to: &inactive, position: &position)
        }
    }

    private mutating func unplace(_ slot: Slot, wasActive: Bool) {
        guard slot != 0 else { return }
        if wasActive {
            Self.remove(slot, from: &active, position: &position)
        } else {
            Self.remove(slot, from: &inactive, position: &position)
        }
    }

    private static func append(_ slot: Slot, to list: inout [Slot], position: inout [Slot]) {
        position[Int(slot)] = Slot(list.count)
        list.append(slot)
    }

    /// O(1): the last slot of the list takes the removed one's place.
    private static func remove(_ slot: Slot, from list: inout [Slot], position: inout [Slot]) {
        let at = Int(position[Int(slot)])
        assert(list[at] == slot, "position index out of step")
        position[Int(slot)] = -1
        let last = list.removeLast()
        if at < list.count {
            list[at] = last
            position[Int(last)] = Slot(at)
        }
    }
}
