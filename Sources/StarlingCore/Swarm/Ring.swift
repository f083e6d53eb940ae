/// A consistent-hash ring over member names, with virtual nodes.
///
/// Every node builds its ring from its own membership view, so two nodes agree on a key's
/// successors exactly when they agree on who takes work. The hash is FNV-1a 64 followed by a
/// SplitMix64 finaliser (FNV alone spreads short, similar names such as "n1#3", "n1#4" poorly);
/// Swift's `Hasher` is seeded per process and would give every node a different ring.
public struct SwarmRing: Sendable, Equatable {
    /// Points per member: with 64 the share of keys a member owns stays within about ±25% of
    /// 1/N for the mesh sizes we run (checked by the ring tests), and a ring of 1,000 members is
    /// 64,000 points, rebuilt only when the set of members changes.
    public static let virtualNodes = 64

    private var points: [Point] = []
    public private(set) var members: [PeerName] = []

    private struct Point: Sendable, Equatable {
        var hash: UInt64
        var member: PeerName
    }

    public init(members: some Sequence<PeerName>) {
        self.members = Array(Set(members)).sorted()
        points.reserveCapacity(self.members.count * Self.virtualNodes)
        for name in self.members {
            for v in 0..<Self.virtualNodes { points.append(Point(hash: Self.hash("\(name)#\(v)"), member: name)) }
        }
        // Ties (astronomically rare) break by name, so every node orders the ring the same way.
        points.sort { $0.hash != $1.hash ? $0.hash < $1.hash : $0.member < $1.member }
    }

    public var isEmpty: Bool { members.isEmpty }

    /// The first `count` distinct members clockwise from the key's position (fewer when the ring
    /// has fewer members).
    public func preferenceList(_ key: String, count: Int) -> [PeerName] {
        guard !points.isEmpty, count > 0 else { return [] }
        let wanted = min(count, members.count)
        let h = Self.hash(key)
        // First point at or after h (binary search), wrapping round to 0.
        var lo = 0, hi = points.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if points[mid].hash < h { lo = mid + 1 } else { hi = mid }
        }
        var list: [PeerName] = []
        list.reserveCapacity(wanted)
        for step in 0..<points.count {
            let member = points[(lo + step) % points.count].member
            if !list.contains(member) {
                list.append(member)
                if list.count == wanted { break }
            }
        }
        return list
    }

    /// The owner of a key: the first of its preference list.
    public func owner(of key: String) -> PeerName? { preferenceList(key, count: 1).first }

    /// FNV-1a 64 over the UTF-8 bytes, then the SplitMix64 finaliser for avalanche.
    public static func hash(_ key: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01b3
        }
        h = (h ^ (h >> 30)) &* 0xBF58_476D_1CE4_E5B9
        h = (h ^ (h >> 27)) &* 0x94D0_49BB_1331_11EB
        return h ^ (h >> 31)
    }
}
