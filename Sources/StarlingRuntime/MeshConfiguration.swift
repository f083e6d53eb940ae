import StarlingCore

/// Everything a mesh node needs to start.
public struct MeshConfiguration: Sendable {
    public var name: String
    /// Where the UDP gossip socket and the TCP stream listener bind.
    public var bind: NodeAddress
    /// What other nodes are told to use (defaults to `bind`); for NAT and containers.
    public var advertise: NodeAddress
    /// The HTTP API address, gossiped in metadata.
    public var api: String
    public var seeds: [NodeAddress]
    public var slots: Int
    public var keyFile: String
    public var settings: MembershipSettings
    /// Packets whose timestamp is further than this from our clock are dropped as replays.
    public var replayWindow: Duration
    /// Bound on one stream frame (a push-pull state of 16,384 members fits well within it).
    public var maxFrameBytes: Int
    /// Stream exchanges open at once (memberlist caps concurrent push-pulls at 128).
    public var maxOpenStreams: Int
    /// A stream exchange that has not finished by then is closed.
    public var streamTimeout: Duration

    public init(name: String, bind: NodeAddress, advertise: NodeAddress? = nil, api: String, seeds: [NodeAddress],
                slots: Int, keyFile: String, settings: MembershipSettings) {
        self.name = name
        self.bind = bind
        self.advertise = advertise ?? bind
        self.api = api
        self.seeds = seeds
        self.slots = slots
        self.keyFile = keyFile
        self.settings = settings
        replayWindow = .seconds(30)
        maxFrameBytes = 8 << 20
        maxOpenStreams = 128
        streamTimeout = .seconds(5)
    }
}

/// What the HTTP side reads: a copy published by the loop thread.
public struct MeshSnapshot: Sendable {
    public var name: String
    public var members: [Member]
    public var stats: MembershipStats
    public var localHealth: Int
    public var incarnation: UInt64

    public init(name: String, members: [Member], stats: MembershipStats, localHealth: Int, incarnation: UInt64) {
        self.name = name
        self.members = members
        self.stats = stats
        self.localHealth = localHealth
        self.incarnation = incarnation
    }
}
