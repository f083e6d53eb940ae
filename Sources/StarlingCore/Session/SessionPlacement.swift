/// Where sessions live: consistent hashing with bounded loads (Mirrokni, Thorup and
/// Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2017), weighted by each member's slots.
///
/// Each member puts `pointsPerSlot × min(slots, maxWeightSlots)` points on a ring (the swarm
/// ring's hash, `SwarmRing.hash`). Sessions are taken in ring order of their own hash; each one's
/// owner is the first member clockwise from it that still has room, where a member's room is
///
///     ownerCapacity(member) = ⌈(1 + ε) · sessions · weight(member) / totalWeight⌉
///
/// Its replicas are the next distinct members clockwise whose holdings (owned plus replicated)
/// are under `⌈(1 + ε) · sessions · R · weight / totalWeight⌉`. So no member owns more than
/// ⌈(1 + ε)⌉ times its weighted share, nor holds more than that of the copies.
///
/// Pure and deterministic: the same members and sessions give the same placement on every node
/// and in every process (no `Hasher`, no dictionary order reaches the result). It is a function
/// of the whole set of sessions, as bounded loads must be: a member's room depends on how many
/// sessions there are. When a member joins or leaves, a session moves only if its owner changes
/// (`moves`); the ring keeps that to about the ideal 1/N, and the bound adds a little.
public struct SessionPlacement: Sendable, Equatable {
    public struct Settings: Sendable, Equatable {
        /// Copies of each session: the owner and R − 1 replicas (fewer when there are fewer members).
        public var replicas: Int
        /// How far above its weighted average share a member may go (0.25: at most 1.25 ×).
        public var epsilon: Double
        /// Ring points per slot of weight. More points: shares closer to the weights before the
        /// bound applies, so fewer sessions cascade past a full member, at the cost of a larger ring.
        public var pointsPerSlot: Int
        /// Slots past this count as this many for the ring (the ring stays at most
        /// `pointsPerSlot × maxWeightSlots` points a member).
        public var maxWeightSlots: Int

        public init(replicas: Int = 3, epsilon: Double = 0.25, pointsPerSlot: Int = 64, maxWeightSlots: Int = 64) {
            precondition(replicas >= 1 && replicas <= 16, "replicas must be 1...16")
            precondition(epsilon > 0 && epsilon <= 10 && epsilon.isFinite, "epsilon must be in (0, 10]")
            precondition(pointsPerSlot >= 1 && pointsPerSlot <= 1024, "pointsPerSlot must be 1...1024")
            precondition(maxWeightSlots >= 1 && maxWeightSlots <= 4096, "maxWeightSlots must be 1...4096")
            self.replicas = replicas
            self.epsilon = epsilon
            self.pointsPerSlot = pointsPerSlot
            self.maxWeightSlots = maxWeightSlots
        }
    }

    /// A member that takes sessions, and its weight.
    public struct Member: Sendable, Equatable {
        public var name: PeerName
        public var slots: Int
        public init(name: PeerName, slots: Int) {
            self.name = name
            self.slots = slots
        }
    }

    public let settings: Settings
    /// Members by name, each once (a repeated name keeps its largest weight); members with no
    /// slots take no sessions.
    public let members: [Member]
    private let ring: [Point]

    struct Point: Sendable, Equatable {
        var hash: UInt64
        var member: Int  // index into `members`
    }

    public init(members: [Member], settings: Settings = Settings()) {
        self.settings = settings
        var byName: [PeerName: Int] = [:]
        for m in members where m.slots > 0 { byName[m.name] = max(byName[m.name] ?? 0, m.slots) }
        let sorted = byName.keys.sorted().map { Member(name: $0, slots: byName[$0]!) }
        self.members = sorted
        var points: [Point] = []
        for (index, member) in sorted.enumerated() {
            let count = settings.pointsPerSlot * min(member.slots, settings.maxWeightSlots)
            points.reserveCapacity(points.count + count)
            for v in 0..<count { points.append(Point(hash: SwarmRing.hash("\(member.name)#\(v)"), member: index)) }
        }
        // Ties (astronomically rare) break by name, so every node orders the ring the same way.
        points.sort { $0.hash != $1.hash ? $0.hash < $1.hash : sorted[$0.member].name < sorted[$1.member].name }
        ring = points
    }

    /// A member's weight on the ring and in its capacity.
    func weight(_ index: Int) -> Int { min(members[index].slots, settings.maxWeightSlots) }

    /// The most sessions `member` may own when `sessions` are placed (its bound).
    public func ownerCapacity(of member: PeerName, sessions: Int) -> Int {
        guard let i = members.firstIndex(where: { $0.name == member }) else { return 0 }
        return capacity(i, copies: sessions)
    }

    private func capacity(_ index: Int, copies: Int) -> Int {
        let total = members.indices.reduce(0) { $0 + weight($1) }
        guard total > 0 else { return 0 }
        let share = (1 + settings.epsilon) * Double(copies) * Double(weight(index)) / Double(total)
        return Int(share.rounded(.up))
    }

    /// Every session's owner and replicas (owner first). Ids are taken once each; an empty ring
    /// places nothing.
    public func assign(_ sessions: some Sequence<String>) -> [String: [PeerName]] {
        guard !ring.isEmpty else { return [:] }
        // Ring order of the sessions' own hashes, ties by id: the order bounded loads fills in,
        // the same on every node.
        let ordered = Set(sessions).map { (hash: SwarmRing.hash($0), id: $0) }
            .sorted { $0.hash != $1.hash ? $0.hash < $1.hash : $0.id < $1.id }
        let copies = min(settings.replicas, members.count)
        let ownerRoom = members.indices.map { capacity($0, copies: ordered.count) }
        let holdRoom = members.indices.map { capacity($0, copies: ordered.count * copies) }
        var owned = [Int](repeating: 0, count: members.count)
        var held = [Int](repeating: 0, count: members.count)
        var owners: [Int] = []
        owners.reserveCapacity(ordered.count)

        // Owners first, for every session, so that replicas never take an owner's room.
        for session in ordered {
            var owner: Int? = nil
            walk(from: session.hash) { m in
                guard owned[m] < ownerRoom[m] else { return true }
                owner = m
                return false
            }
            // The rooms add up to at least (1 + ε) × sessions, so someone always has room.
            guard let o = owner else { preconditionFailure("bounded loads found no member with room") }
            owned[o] += 1
            held[o] += 1
            owners.append(o)
        }
        var placement: [String: [PeerName]] = [:]
        placement.reserveCapacity(ordered.count)
        for (session, owner) in zip(ordered, owners) {
            var chosen = [owner]
            walk(from: session.hash) { m in
                if !chosen.contains(m), held[m] < holdRoom[m] { chosen.append(m) }
                return chosen.count < copies
            }
            // Distinct members with room can run out in corner cases (a few heavy members):
            // then the nearest distinct members, over their bound, rather than fewer copies.
            if chosen.count < copies {
                walk(from: session.hash) { m in
                    if !chosen.contains(m) { chosen.append(m) }
                    return chosen.count < copies
                }
            }
            for m in chosen.dropFirst() { held[m] += 1 }
            placement[session.id] = chosen.map { members[$0].name }
        }
        return placement
    }

    /// Distinct members clockwise from the hash of `id`, at most `count`: the order a live node
    /// tries owners in (`SessionLivePlacement`), weighted by slots like `assign`.
    public func preferenceList(_ id: String, count: Int) -> [PeerName] {
        var chosen: [PeerName] = []
        let wanted = min(max(count, 0), members.count)
        guard wanted > 0 else { return [] }
        forEachPreferred(id) { name in
            chosen.append(name)
            return chosen.count < wanted
        }
        return chosen
    }

    /// Calls `visit` with each distinct member in preference order for `id` until it returns
    /// false or every member was visited (so a caller that decides early walks little).
    public func forEachPreferred(_ id: String, _ visit: (PeerName) -> Bool) {
        var seen = [Bool](repeating: false, count: members.count)
        var left = members.count
        walk(from: SwarmRing.hash(id)) { m in
            guard !seen[m] else { return true }
            seen[m] = true
            left -= 1
            return visit(members[m].name) && left > 0
        }
    }

    /// Calls `visit` with members clockwise from `hash`, once per ring point, until it returns
    /// false or the ring has gone round once.
    private func walk(from hash: UInt64, _ visit: (Int) -> Bool) {
        var lo = 0, hi = ring.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ring[mid].hash < hash { lo = mid + 1 } else { hi = mid }
        }
        for step in 0..<ring.count where !visit(ring[(lo + step) % ring.count].member) { return }
    }

    /// The sessions whose owner differs between two placements (new, gone or moved), sorted:
    /// the only ones that move when membership changes.
    public static func moves(from old: [String: [PeerName]], to new: [String: [PeerName]]) -> [String] {
        Set(old.keys).union(new.keys).filter { old[$0]?.first != new[$0]?.first }.sorted()
    }

    /// Sessions owned per member in `placement` (members of this placement that own none: 0).
    public func ownerLoads(_ placement: [String: [PeerName]]) -> [PeerName: Int] {
        var loads = Dictionary(uniqueKeysWithValues: members.map { ($0.name, 0) })
        for copies in placement.values { if let o = copies.first { loads[o, default: 0] += 1 } }
        return loads
    }

    /// Copies held per member (owned plus replicated).
    public func heldLoads(_ placement: [String: [PeerName]]) -> [PeerName: Int] {
        var loads = Dictionary(uniqueKeysWithValues: members.map { ($0.name, 0) })
        for copies in placement.values { for m in copies { loads[m, default: 0] += 1 } }
        return loads
    }
}
