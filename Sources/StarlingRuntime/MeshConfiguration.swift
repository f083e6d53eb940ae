import StarlingCore
import StarlingCrypto

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
    /// Memory (MiB) this node offers its tasks in all, gossiped with its free share.
    public var taskMemoryMB: Int
    public var keyFile: String
    public var settings: MembershipSettings
    /// Packets whose timestamp is further than this from our clock are dropped as replays.
    public var replayWindow: Duration
    /// Bound on one stream frame (a push-pull state of 16,384 members fits well within it).
    public var maxFrameBytes: Int
    /// Stream exchanges open at once, each way (memberlist caps concurrent push-pulls at 128).
    /// Separate limits, so that inbound connections (which strangers can open) never use up
    /// the room for this node's own push-pulls, joins and reconnects.
    public var maxInboundStreams: Int
    public var maxOutboundStreams: Int
    /// Bytes buffered at once across all streams for frames not yet complete. A frame may be
    /// `maxFrameBytes`, and many streams may be open: without this bound, authenticated
    /// streams declaring large frames could make the node buffer 128 × 8 MiB.
    /// Inbound streams only: when a chunk would cross it, the inbound stream holding the most
    /// unfinished bytes is closed (not the newcomer; see `StreamExchange.consume`).
    public var maxBufferedStreamBytes: Int
    /// The same bound for this node's own push-pulls (their replies), kept apart so that a key
    /// holder filling the inbound room cannot make our joins and anti-entropy fail.
    public var maxBufferedOutboundStreamBytes: Int
    /// Hello nonces remembered to refuse replays (see `NonceReplayCache`).
    public var maxRememberedHellos: Int
    /// Gossip datagram nonces remembered to refuse replays within the window (see
    /// `NonceReplayCache`). 131,072 over twice the 30 s window is about 2,000 datagrams a second
    /// sustained, several times what a member receives in a 1,000-member mesh at the `loopback`
    /// preset's rates; 32 bytes each plus the set's overhead, about 8 MiB when full.
    public var maxRememberedDatagrams: Int
    /// Inbound streams open at once from one IP address.
    public var maxInboundStreamsPerSource: Int
    /// An inbound stream that has not sent a valid hello by then is closed; after the hello,
    /// the request frame must be complete within the same time again.
    public var authTimeout: Duration
    /// A stream exchange that has not finished by then is closed.
    public var streamTimeout: Duration
    /// Bound on how often the loop publishes its snapshot for the HTTP side (a sort and copy
    /// of the whole table), however fast the membership changes. Commands publish at once.
    public var publishInterval: Duration
    /// Persistent peer links (hosted protocols; see `PeerLink`): bound on one frame on any
    /// channel (each protocol's `maxMessageBytes` is capped by it). A longer frame closes the link.
    public var maxLinkFrameBytes: Int
    /// Bytes one link may hold queued for sending (sealed frames not yet written, and written
    /// to libuv but not yet to the kernel). A send past it fails at once and is counted.
    public var maxLinkQueueBytes: Int
    /// Links open at once, both ways together; a newcomer past it is refused.
    public var maxLinks: Int
    /// A peer's requests this node may owe answers to on one link; more are dropped and counted.
    public var maxOwedRequestsPerLink: Int
    /// A link with nothing sent or received for this long, and nothing in flight, is closed.
    public var linkIdleTimeout: Duration
    /// A dial that has not connected by then fails.
    public var linkConnectTimeout: Duration
    /// A link whose sent data stays unacknowledged this long is closed (TCP_USER_TIMEOUT), and
    /// an idle one is probed by keepalives from then on.
    public var linkStallTimeout: Duration
    /// After a failed dial, sends to that peer fail at once for this long, doubling per failure
    /// up to `maxLinkBackoff`.
    public var linkBackoff: Duration
    public var maxLinkBackoff: Duration
    /// Bound on commands from other threads waiting for the loop (`ProtocolHandle.command`).
    public var maxInboxCommands: Int
    /// Periodic push-pull with live members goes over the peer links (see `MembershipChannel`);
    /// joins and reconnects use a connection per exchange in any case.
    public var pushPullOverLinks: Bool
    /// This node's Ed25519 public key (`NodeIdentity`), gossiped in its metadata so that peers
    /// pin its name to it and check what it signs (issue #11 item 1). nil: none (tests).
    public var identityKey: [UInt8]?
    /// The identity that signs this node's link hellos, so that a peer holding only the cluster
    /// key cannot open a link under this node's name. nil: unsigned hellos, which a node with an
    /// identity refuses from any member whose key membership gossips (tests without identities).
    public var identity: NodeIdentity?

    public init(name: String, bind: NodeAddress, advertise: NodeAddress? = nil, api: String, seeds: [NodeAddress],
                slots: Int, taskMemoryMB: Int = 0, keyFile: String, settings: MembershipSettings) {
        self.name = name
        self.bind = bind
        self.advertise = advertise ?? bind
        self.api = api
        self.seeds = seeds
        self.slots = slots
        self.taskMemoryMB = taskMemoryMB
        self.keyFile = keyFile
        self.settings = settings
        replayWindow = .seconds(30)
        maxFrameBytes = 8 << 20
        maxInboundStreams = 128
        maxOutboundStreams = 128
        maxInboundStreamsPerSource = 16
        maxBufferedStreamBytes = 32 << 20
        maxBufferedOutboundStreamBytes = 32 << 20
        maxRememberedHellos = 65_536
        maxRememberedDatagrams = 131_072
        authTimeout = .seconds(3)
        streamTimeout = .seconds(5)
        publishInterval = .milliseconds(50)
        // The swarm channel's largest message (SwarmLimits.maxMessageBytes) must fit.
        maxLinkFrameBytes = 24 << 20
        maxLinkQueueBytes = 48 << 20  // two of the largest frames
        maxLinks = 4096
        maxOwedRequestsPerLink = 4096
        linkIdleTimeout = .seconds(60)
        linkConnectTimeout = .seconds(3)
        linkStallTimeout = .seconds(10)
        linkBackoff = .milliseconds(100)
        maxLinkBackoff = .seconds(5)
        maxInboxCommands = 16_384
        // On: membership's periodic push-pull shares the one link per peer pair with the hosted
        // protocols. (It was off while #8's two-step self-claim test failed with it; the cause
        // was in the core and timing-dependent, see CatchUp.swift.)
        pushPullOverLinks = true
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
