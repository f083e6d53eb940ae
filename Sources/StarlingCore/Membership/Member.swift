/// A member's liveness as one node sees it.
public enum MemberStatus: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    case alive = 0, suspect = 1, dead = 2, left = 3

    public var description: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        case .left: "left"
        }
    }

    /// Alive or suspect: still probed, still gossiped to.
    public var isActive: Bool { self == .alive || self == .suspect }
}

/// What a member tells the others about itself besides liveness.
///
/// Versioned apart from the incarnation: a change of capacity bumps `version` only, and the
/// higher version wins. Liveness rules never look at it.
public struct MemberMetadata: Equatable, Hashable, Sendable {
    /// Upper bound on `api` in UTF-8 bytes. The one limit for both sides: decoders refuse a
    /// longer field, and a node refuses to start (or to update) with a longer one of its own, so
    /// a node can never gossip metadata that its peers would drop.
    public static let maxApiBytes = 128
    /// Size of an Ed25519 public key, the only size `identityKey` may have.
    public static let identityKeyBytes = 32
    /// Upper bound on the encoded size (version, api, slots, free, memoryMB, freeMemoryMB,
    /// identity key length and key, sessions).
    public static let maxEncodedBytes = 8 + 2 + maxApiBytes + 4 + 4 + 4 + 4 + 1 + identityKeyBytes + 4

    public var version: UInt64
    /// The member's HTTP API address (`HOST:PORT`), empty if it serves none.
    public var api: String
    /// Task slots in total and free right now.
    public var slots: UInt32
    public var free: UInt32
    /// Memory tasks may use on this member in total, in MiB (0: not advertised), and how much
    /// of it no running task has asked for. Swarm placement reads them; liveness never does.
    public var memoryMB: UInt32
    public var freeMemoryMB: UInt32
    /// The member's Ed25519 public key (`NodeIdentity`), exactly 32 bytes, or nil for a member
    /// that has none (the simulator's nodes, tests). It is part of the member's identity, not of
    /// its capacity: once a node holds a member with a key, an `alive` for that name under
    /// another key (or none) is refused, whatever its version or incarnation (StateRules.swift,
    /// "identity"). Records a member signs are accepted only under this key (`SignerKeys`).
    public var identityKey: [UInt8]?
    /// Sessions this member owns (serves) now: the load that session placement bounds
    /// (`SessionLivePlacement`). Liveness never reads it.
    public var sessions: UInt32

    public init(version: UInt64 = 0, api: String = "", slots: UInt32 = 0, free: UInt32 = 0,
                memoryMB: UInt32 = 0, freeMemoryMB: UInt32 = 0, identityKey: [UInt8]? = nil, sessions: UInt32 = 0) {
        self.version = version
        self.api = api
        self.slots = slots
        self.free = free
        self.memoryMB = memoryMB
        self.freeMemoryMB = freeMemoryMB
        self.identityKey = identityKey
        self.sessions = sessions
    }

    public var encodedSize: Int { 8 + 2 + api.utf8.count + 4 + 4 + 4 + 4 + 1 + (identityKey?.count ?? 0) + 4 }

    /// Why this metadata could not go on the wire, or nil if it can: the same checks as the decoder.
    public var invalidReason: String? {
        if api.utf8.count > Self.maxApiBytes { return "api address is \(api.utf8.count) bytes, over \(Self.maxApiBytes)" }
        if !WireLimits.isPrintable(api) { return "api address has an unprintable character" }
        if free > slots { return "free \(free) > slots \(slots)" }
        if let key = identityKey, key.count != Self.identityKeyBytes {
            return "identity key is \(key.count) bytes, not \(Self.identityKeyBytes)"
        }
        return nil
    }
}

/// One entry of the member table.
public struct Member: Equatable, Sendable {
    // Declared in this order so that `status` packs into the padding after `address`: 104 bytes
    // instead of 112, which is 0.8 GB over the 10⁸ entries of a 10,000-node simulation. (96
    // before `MemberMetadata.identityKey`: the key is one shared, reference-counted array per
    // member, so a table pays 8 bytes an entry for it, not 32.)
    public var name: String
    public var address: NodeAddress
    public var status: MemberStatus
    public var incarnation: UInt64
    public var metadata: MemberMetadata
    /// When `status` last changed (drives reaping of dead and left members).
    public var statusSince: Instant

    public init(name: String, address: NodeAddress, incarnation: UInt64, status: MemberStatus,
                metadata: MemberMetadata, statusSince: Instant) {
        self.name = name
        self.address = address
        self.incarnation = incarnation
        self.status = status
        self.metadata = metadata
        self.statusSince = statusSince
    }
}

/// A change in a member's status, as reported to the shells.
public struct MemberChange: Equatable, Sendable, CustomStringConvertible {
    public var name: String
    public var address: NodeAddress
    public var from: MemberStatus?
    public var to: MemberStatus?   // nil: reaped from the table
    public var incarnation: UInt64

    public var description: String {
        "\(name)@\(address) \(from.map(\.description) ?? "new") -> \(to.map(\.description) ?? "reaped") inc=\(incarnation)"
    }
}
