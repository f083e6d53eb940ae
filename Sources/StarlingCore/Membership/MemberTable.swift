/// The member table, compact: one slot per member, this node always in slot 0.
///
/// A simulated cluster holds N tables of N members, so the cost of an entry decides how large a
/// cluster the simulator can run (N = 10,000 is 10⁸ entries). A `[String: Member]` plus the
/// name-keyed indexes it needed cost about 350 bytes an entry; this table costs 100–110, and
/// the simulator measures 118 per entry with the probe order and the rest of each node:
/// - `entries`: the members by slot (88 bytes; a reaped slot is nil and reused).
/// - `buckets`: an open-addressing index from name to slot with linear probing, at most half
///   full (8–16 bytes an entry). A bucket packs the slot with 17 bits of the name's hash, so
///   that probing reads a member's name only when those bits match, and so that the index can
///   be rebuilt and shifted without rehashing a name.
/// - `active` and `inactive`: the other members partitioned by status, as slot lists that allow
///   O(1) insert, remove and uniform choice, with each slot's `position` in its list (8 bytes).
///
/// Iteration is in slot order, which depends only on the order of inserts and removals, never on
/// the process's hash seed, so a simulation stays deterministic. The index hashes names with the
/// standard library's seeded `Hasher`, so names chosen by a peer cannot force collisions.
public struct MemberTable: Sendable, Sequence {
    public typealias Slot = Int32

    private var entries: [Member?] = []
    private var freeSlots: [Slot] = []
    /// 0: empty; otherwise `tag << 15 | (slot + 1)`, where the tag is the low 17 bits of the
    /// name's hash. The capacity is a power of two, at most 2¹⁷, so a bucket's home is
    /// `tag & mask`.
    private var buckets: [UInt32] = []
    static let slotBits: UInt32 = 15
    /// Slots fit in 15 bits beside the tag: twice `WireLimits.maxMembers`.
    static let maxSlots = (1 << 15) - 2
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
        find(name, tag: Self.tag(name)).slot
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
        let tag = Self.tag(member.name)
        let (bucket, existing) = find(member.name, tag: tag)
        guard existing == nil else { return nil }
        let slot: Slot
        if let reused = freeSlots.popLast() {
            slot = reused
            entries[Int(slot)] = member
        } else {
            precondition(entries.count < Self.maxSlots, "member table full")
            slot = Slot(entries.count)
            entries.append(member)
            position.append(-1)
        }
        buckets[bucket] = tag << Self.slotBits | UInt32(slot + 1)
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

    enum Partition { case active, inactive }

    /// Up to `k` distinct members of a partition chosen uniformly, none named `excluding`.
    func sample(_ partition: Partition, _ k: Int, excluding: String? = nil,
                using rng: inout DeterministicRNG) -> [Slot] {
        let from = partition == .active ? active : inactive
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

    static func tag(_ name: String) -> UInt32 { UInt32(truncatingIfNeeded: name.hashValue) & 0x1FFFF }

    private static func slot(in bucket: UInt32) -> Slot { Slot(bucket & (1 << slotBits - 1)) - 1 }

    private static func home(of bucket: UInt32, mask: Int) -> Int { Int(bucket >> slotBits) & mask }

    private func find(_ name: String, tag: UInt32) -> (bucket: Int, slot: Slot?) {
        let mask = buckets.count - 1
        var b = Int(tag) & mask
        while true {
            let v = buckets[b]
            if v == 0 { return (b, nil) }
            if v >> Self.slotBits == tag, case let slot = Self.slot(in: v), entries[Int(slot)]!.name == name { return (b, slot) }
            b = (b + 1) & mask
        }
    }

    private mutating func rebuildIndex(size: Int) {
        precondition(size & (size - 1) == 0 && size >= 2 * count && size <= 1 << 17, "index size out of range")
        let old = buckets
        buckets = Array(repeating: 0, count: size)
        let mask = size - 1
        for v in old where v != 0 {
            var b = Self.home(of: v, mask: mask)
            while buckets[b] != 0 { b = (b + 1) & mask }
            buckets[b] = v
        }
    }

    /// Backward-shift deletion: keeps every probe sequence unbroken without tombstones.
    private mutating func removeFromIndex(_ slot: Slot) {
        let mask = buckets.count - 1
        var hole = Int(Self.tag(entries[Int(slot)]!.name)) & mask
        while Self.slot(in: buckets[hole]) != slot { hole = (hole + 1) & mask }
        buckets[hole] = 0
        var j = hole
        while true {
            j = (j + 1) & mask
            let v = buckets[j]
            if v == 0 { return }
            let home = Self.home(of: v, mask: mask)
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
