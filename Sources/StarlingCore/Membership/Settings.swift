#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Tunables of the membership protocol. Use a named preset and adjust from there.
///
/// Every timeout is a `Duration`; multipliers say what they multiply. `.lan` follows
/// hashicorp/memberlist's `DefaultLANConfig`; `.loopback` is ten times faster for tests and demos.
public struct MembershipSettings: Sendable, Equatable {
    /// Time between two probes started by this node (SWIM's protocol period). Scaled by the
    /// Lifeguard local health multiplier.
    public var probeInterval: Duration
    /// How long to wait for a direct ack before asking `indirectChecks` members to probe.
    /// Scaled by the local health multiplier.
    public var probeTimeout: Duration
    /// Members asked to probe on our behalf when a direct probe fails (SWIM's k).
    public var indirectChecks: Int

    /// Lifeguard dynamic suspicion: the minimum timeout is
    /// `suspicionMultiplier × max(1, log10(N)) × probeInterval`.
    public var suspicionMultiplier: Double
    /// ... and the maximum is `suspicionMaxTimeoutMultiplier ×` the minimum. A fresh suspicion
    /// starts at the maximum and shrinks towards the minimum as independent confirmations arrive.
    public var suspicionMaxTimeoutMultiplier: Double

    /// Lifeguard local health multiplier: 0 is healthy, `maxLocalHealth` the worst. Timeouts are
    /// multiplied by (score + 1).
    public var maxLocalHealth: Int
    /// Whether the three Lifeguard extensions are on (the simulator compares both).
    public var lifeguard: Bool

    /// Gossip-only rounds between probes, each to `gossipFanout` random members.
    public var gossipInterval: Duration
    public var gossipFanout: Int
    /// Keep gossiping to a member this long after it died, so it can learn and refute.
    public var gossipToTheDead: Duration
    /// Each update is retransmitted `retransmitMultiplier × ceil(log10(N + 1))` times.
    public var retransmitMultiplier: Int
    /// Bound on queued gossip updates; the most-sent are dropped first.
    public var maxQueuedBroadcasts: Int

    /// Periodic push-pull anti-entropy with one random member (scaled up above 32 members).
    public var pushPullInterval: Duration
    /// How often a node tries to re-contact dead members, or its seeds when it is alone, so that
    /// it rejoins by itself after a partition heals.
    public var reconnectInterval: Duration
    /// Dead and left members are dropped from the table this long after their last change.
    /// Must exceed the runtime's replay window, so that a replayed `alive` finds a tombstone.
    public var reapAfter: Duration

    /// Largest encoded packet the core builds; the runtime adds its envelope on top (so that a
    /// sealed packet stays within a 1,400-byte UDP payload).
    public var maxPacketBytes: Int
    /// Ping-req relays in flight at once on an intermediary.
    public var maxPendingRelays: Int

    public init(probeInterval: Duration, probeTimeout: Duration, indirectChecks: Int,
                suspicionMultiplier: Double, suspicionMaxTimeoutMultiplier: Double, maxLocalHealth: Int,
                lifeguard: Bool, gossipInterval: Duration, gossipFanout: Int, gossipToTheDead: Duration,
                retransmitMultiplier: Int, maxQueuedBroadcasts: Int, pushPullInterval: Duration,
                reconnectInterval: Duration, reapAfter: Duration, maxPacketBytes: Int, maxPendingRelays: Int) {
        self.probeInterval = probeInterval
        self.probeTimeout = probeTimeout
        self.indirectChecks = indirectChecks
        self.suspicionMultiplier = suspicionMultiplier
        self.suspicionMaxTimeoutMultiplier = suspicionMaxTimeoutMultiplier
        self.maxLocalHealth = maxLocalHealth
        self.lifeguard = lifeguard
        self.gossipInterval = gossipInterval
        self.gossipFanout = gossipFanout
        self.gossipToTheDead = gossipToTheDead
        self.retransmitMultiplier = retransmitMultiplier
        self.maxQueuedBroadcasts = maxQueuedBroadcasts
        self.pushPullInterval = pushPullInterval
        self.reconnectInterval = reconnectInterval
        self.reapAfter = reapAfter
        self.maxPacketBytes = maxPacketBytes
        self.maxPendingRelays = maxPendingRelays
    }

    /// memberlist's LAN figures: probe 1 s, timeout 500 ms, suspicion ×4 (max ×6), gossip every
    /// 200 ms to 3, 3 indirect checks, push-pull every 30 s, retransmit ×4.
    public static let lan = MembershipSettings(
        probeInterval: .seconds(1), probeTimeout: .milliseconds(500), indirectChecks: 3,
        suspicionMultiplier: 4, suspicionMaxTimeoutMultiplier: 6, maxLocalHealth: 8, lifeguard: true,
        gossipInterval: .milliseconds(200), gossipFanout: 3, gossipToTheDead: .seconds(30),
        retransmitMultiplier: 4, maxQueuedBroadcasts: 4096, pushPullInterval: .seconds(30),
        reconnectInterval: .seconds(10), reapAfter: .seconds(3600), maxPacketBytes: 1344, maxPendingRelays: 256)

    /// For one machine: every period and timeout ten times shorter than `.lan`.
    public static let loopback = MembershipSettings(
        probeInterval: .milliseconds(100), probeTimeout: .milliseconds(50), indirectChecks: 3,
        suspicionMultiplier: 4, suspicionMaxTimeoutMultiplier: 6, maxLocalHealth: 8, lifeguard: true,
        gossipInterval: .milliseconds(20), gossipFanout: 3, gossipToTheDead: .seconds(3),
        retransmitMultiplier: 4, maxQueuedBroadcasts: 4096, pushPullInterval: .seconds(3),
        reconnectInterval: .milliseconds(500), reapAfter: .seconds(120), maxPacketBytes: 1344, maxPendingRelays: 256)

    /// `ceil(log10(n + 1))`, at least 1: the log-N factor of retransmits and suspicion timeouts.
    static func logScale(_ n: Int) -> Double { max(1, ceil(log10(Double(n + 1)))) }

    /// Retransmissions of each gossip update for a cluster of `n` members.
    public func retransmitLimit(members n: Int) -> Int { retransmitMultiplier * Int(Self.logScale(n)) }

    /// Lifeguard's dynamic suspicion bounds for a cluster of `n` members.
    public func suspicionTimeouts(members n: Int) -> (min: Duration, max: Duration) {
        let nodeScale = max(1.0, log10(Double(max(1, n))))
        let minimum = probeInterval.scaled(by: suspicionMultiplier * nodeScale)
        return (minimum, minimum.scaled(by: lifeguard ? suspicionMaxTimeoutMultiplier : 1))
    }

    /// The push-pull interval for `n` members: memberlist doubles it per doubling above 32.
    public func pushPullInterval(members n: Int) -> Duration {
        guard n > 32 else { return pushPullInterval }
        return pushPullInterval.scaled(by: ceil(log2(Double(n)) - log2(32.0)) + 1)
    }
}

