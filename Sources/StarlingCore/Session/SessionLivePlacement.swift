/// Placement on a running mesh (issue #11 items 2 and 6): which member should own a session,
/// computed by any node from what membership gossips, without a list of every session.
///
/// `SessionPlacement.assign` bounds loads exactly, but needs every session id; no node has
/// them. Here the bound is applied with the loads members gossip instead
/// (`MemberMetadata.sessions`, the sessions each one serves):
///
/// - the **order** is the weighted ring's preference list for the session id (points ∝ slots,
///   the same ring as `SessionPlacement`), so a join moves about 1/N of the sessions;
/// - the **bound** is ⌈(1 + ε) · (L + 1) · w / W⌉ for a member of weight w, with L the total
///   gossiped load and W the total weight: a member at its bound has no room for one more;
/// - a session's **owner** is the first member of its preference list with room (`owners`);
///   a session already served by `current` moves only to a member *before* `current` in the
///   list that has room (`target`), or, when `current` is over its bound, to the first member
///   after it with room. Each move takes a session closer to the front of its list or off an
///   overloaded member, so moves do not cycle while loads hold still.
///
/// Gossiped loads lag (a member's count reaches others a gossip round later), so the bound is
/// approximate while sessions move; the rebalance of idle sessions (`Sessions.considerMoves`)
/// takes a member back under it afterwards. Pure and deterministic.
public struct SessionLivePlacement: Sendable {
    /// A member that takes sessions: its slots (weight; 0 counts as 1) and its load.
    public struct Candidate: Sendable, Equatable {
        public var name: PeerName
        public var slots: Int
        public var owned: Int
        public init(name: PeerName, slots: Int, owned: Int) {
            self.name = name
            self.slots = slots
            self.owned = owned
        }
    }

    public let ring: SessionPlacement
    public let epsilon: Double
    /// Sessions each member owns, as gossiped (or as counted here, for this node).
    public private(set) var owned: [PeerName: Int]
    private var totalOwned: Int
    private let weights: [PeerName: Int]
    private let totalWeight: Int

    /// `ring`: a `SessionPlacement` built over the same candidates (callers cache it; the ring
    /// changes only when members or their slots do, loads change every gossip round).
    public init(ring: SessionPlacement, candidates: [Candidate], epsilon: Double) {
        precondition(epsilon > 0 && epsilon.isFinite, "epsilon must be positive")
        self.ring = ring
        self.epsilon = epsilon
        var owned: [PeerName: Int] = [:]
        var weights: [PeerName: Int] = [:]
        for c in candidates {
            owned[c.name] = max(0, c.owned)
            weights[c.name] = min(max(1, c.slots), ring.settings.maxWeightSlots)
        }
        self.owned = owned
        self.weights = weights
        totalOwned = owned.values.reduce(0, +)
        totalWeight = weights.values.reduce(0, +)
    }

    /// The ring every node builds for these candidates (weights as `init` takes them).
    public static func ring(for candidates: [Candidate], pointsPerSlot: Int = 64) -> SessionPlacement {
        SessionPlacement(members: candidates.map { SessionPlacement.Member(name: $0.name, slots: max(1, $0.slots)) },
                         settings: SessionPlacement.Settings(epsilon: 0.25, pointsPerSlot: pointsPerSlot))
    }

    /// The most sessions `member` may own, with one more session placed than now.
    public func bound(of member: PeerName) -> Int {
        guard let w = weights[member], totalWeight > 0 else { return 0 }
        let share = (1 + epsilon) * Double(totalOwned + 1) * Double(w) / Double(totalWeight)
        return Int(share.rounded(.up))
    }

    /// Whether `member` may take one more session.
    public func hasRoom(_ member: PeerName) -> Bool {
        guard let load = owned[member] else { return false }
        return load + 1 <= bound(of: member)
    }

    /// Whether `member` owns more than its bound allows (it should shed idle sessions).
    public func isOverBound(_ member: PeerName) -> Bool {
        guard let load = owned[member] else { return false }
        return load > bound(of: member)
    }

    /// Every candidate in the order to try as owner of `id`: the preference list, members with
    /// room first (each group in ring order). The first is where a create goes.
    public func owners(for id: String) -> [PeerName] {
        let list = ring.preferenceList(id, count: ring.members.count)
        return list.filter { hasRoom($0) } + list.filter { !hasRoom($0) }
    }

    /// The replica set for a session owned by `owner`: the owner, then the next members of the
    /// preference list (R in all, fewer when there are fewer members).
    public func replicas(for id: String, owner: PeerName, count: Int) -> [PeerName] {
        let list = ring.preferenceList(id, count: ring.members.count)
        return [owner] + list.filter { $0 != owner }.prefix(max(0, count - 1))
    }

    /// Where a session served by `current` should go, or nil to stay: the first member before
    /// `current` in its preference list with room; or, when `leaving` (current is over its
    /// bound), the first member anywhere in the list with room.
    public func target(for id: String, current: PeerName, leaving: Bool) -> PeerName? {
        var chosen: PeerName?
        ring.forEachPreferred(id) { member in
            if member == current { return leaving }
            if hasRoom(member) {
                chosen = member
                return false
            }
            return true
        }
        return chosen
    }

    /// Counts one more session owned by `member` (a create placed here).
    public mutating func add(_ member: PeerName) {
        guard let load = owned[member] else { return }
        owned[member] = load + 1
        totalOwned += 1
    }

    /// Counts a move decided here before gossip reports it, so the moves decided in one round
    /// do not all pick the same member with room.
    public mutating func move(from: PeerName, to: PeerName) {
        if let load = owned[from], load > 0 {
            owned[from] = load - 1
        }
        if let load = owned[to] { owned[to] = load + 1 }
    }
}
