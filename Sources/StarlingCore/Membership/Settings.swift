#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Tunables of the membership protocol. Use a named preset and adjust from there.
///
/// Every timeout is a `Duration`; multipliers say what they multiply. `.lan` is memberlist's
/// `DefaultLANConfig` retuned by the failure-detection sweep (`.memberlist` keeps the old values);
/// `.loopback` is ten times faster for tests and demos.
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

    /// After the ping-reqs go out, how long to wait for an indirect ack (or the helpers' nacks)
    /// before the probe fails and the target is suspected. nil: until the end of the probe
    /// interval, as SWIM and memberlist do. Scaled by the local health multiplier like the rest.
    public var indirectProbeTimeout: Duration?
    /// Which member to probe next (see `ProbeOrder`).
    public var probeOrder: ProbeOrder
    /// Lifeguard's K: the independent confirmations that bring a suspicion down to its minimum
    /// timeout, and how K shrinks in a small cluster (see `ConfirmationScaling`).
    public var suspicionConfirmations: Int
    public var confirmationScaling: ConfirmationScaling
    /// Tell a member that we hold dead or suspect, the moment we hear from it (its ping, ack,
    /// nack or ping-req), so that it refutes at once instead of waiting for gossip to reach it.
    /// A member answers an accusation (of death or suspicion) with its `alive` straight back to
    /// the accuser, at the accuser's address in its member table (never the packet's source).
    /// This is what heals a false "dead" in O(log N) periods under standing loss.
    public var tellAccused: Bool

    public init(probeInterval: Duration, probeTimeout: Duration, indirectChecks: Int,
                suspicionMultiplier: Double, suspicionMaxTimeoutMultiplier: Double, maxLocalHealth: Int,
                lifeguard: Bool, gossipInterval: Duration, gossipFanout: Int, gossipToTheDead: Duration,
                retransmitMultiplier: Int, maxQueuedBroadcasts: Int, pushPullInterval: Duration,
                reconnectInterval: Duration, reapAfter: Duration, maxPacketBytes: Int, maxPendingRelays: Int,
                indirectProbeTimeout: Duration? = nil, probeOrder: ProbeOrder = .roundRobin,
                suspicionConfirmations: Int = 2, confirmationScaling: ConfirmationScaling = .memberlist,
                tellAccused: Bool = false) {
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
        self.indirectProbeTimeout = indirectProbeTimeout
        self.probeOrder = probeOrder
        self.suspicionConfirmations = suspicionConfirmations
        self.confirmationScaling = confirmationScaling
        self.tellAccused = tellAccused
    }

    /// Which member a node probes next.
    public enum ProbeOrder: String, Sendable, Equatable, CaseIterable {
        /// SWIM's round robin over a shuffled list: every member once per pass.
        case roundRobin = "round-robin"
        /// Round robin, but a member that others have just started to suspect is probed at this
        /// node's next period (at most every other probe, so the round robin still advances):
        /// its confirmations, or its refutation through the buddy system, come a pass sooner.
        case suspectsFirst = "suspects-first"
    }

    /// How Lifeguard's K shrinks when there are few members to confirm.
    public enum ConfirmationScaling: Sendable, Equatable {
        /// memberlist: K, or none at all when fewer than K members could confirm (N − 2 < K).
        case memberlist
        /// `min(K, floor(fraction × (N − 2)))`: a fixed share of the members that could confirm.
        case fraction(Double)
    }

    /// The confirmations expected for a suspicion in a cluster of `n` members (this node included).
    public func expectedConfirmations(members n: Int) -> Int {
        guard lifeguard, suspicionConfirmations > 0 else { return 0 }
        let others = max(0, n - 2)
        switch confirmationScaling {
        case .memberlist:
            return others < suspicionConfirmations ? 0 : suspicionConfirmations
        case .fraction(let f):
            return min(suspicionConfirmations, Int((f * Double(others)).rounded(.down)))
        }
    }

    /// How long a helper waits for the target's ack before it sends the prober a Lifeguard nack.
    /// Lifeguard's 80% of the probe timeout leaves the nack's round trip what remains of the
    /// prober's wait after the ping-reqs: 100 ms with `.memberlist`, but only 60 ms with a
    /// 300 ms indirect timeout and 10 ms on `.loopback`, and a nack that comes late counts as
    /// missing and raises the prober's local health for nothing (slower detection). So with an
    /// indirect timeout the nack goes at half of it when that is sooner.
    public var nackDelay: Duration {
        let lifeguard = probeTimeout.scaled(by: 0.8)
        guard let indirect = indirectProbeTimeout else { return lifeguard }
        return min(lifeguard, indirect.scaled(by: 0.5))
    }

    /// When a probe started at `start` fails if no ack came: the indirect timeout after the
    /// ping-reqs, or the end of the interval, whichever is first. Durations come already scaled.
    func probeEnd(start: Instant, interval: Duration, indirectAt: Instant, scale: (Duration) -> Duration) -> Instant {
        let end = start + interval
        guard let t = indirectProbeTimeout else { return end }
        return min(end, indirectAt + scale(t))
    }

    /// Chosen by the failure-detection sweep (NOTES.md, "Failure detection"): probe 1 s, direct
    /// timeout 300 ms, indirect 300 ms (a probe fails 600 ms after it starts), suspects probed
    /// first, suspicion ×2.5 (2.5 s under 10 members, 5 s at 100, 7.5 s at 1,000; max ×6),
    /// K = 2, accusations told to the accused; gossip every 200 ms to 3, 3 indirect checks,
    /// push-pull every 30 s, retransmit ×4 as memberlist. Written as its differences from
    /// `.memberlist`.
    public static let lan: MembershipSettings = {
        var s = MembershipSettings.memberlist
        s.probeTimeout = .milliseconds(300)
        s.indirectProbeTimeout = .milliseconds(300)
        s.probeOrder = .suspectsFirst
        s.suspicionMultiplier = 2.5
        s.tellAccused = true
        return s
    }()

    /// `.lan` as it was before the failure-detection sweep: memberlist's `DefaultLANConfig`
    /// exactly (probe timeout 500 ms, the probe failing at the end of the interval, round robin,
    /// K = 2 or none, nobody telling the accused). Kept for comparison; `--preset memberlist`.
    public static let memberlist = MembershipSettings(
        probeInterval: .seconds(1), probeTimeout: .milliseconds(500), indirectChecks: 3,
        suspicionMultiplier: 4, suspicionMaxTimeoutMultiplier: 6, maxLocalHealth: 8, lifeguard: true,
        gossipInterval: .milliseconds(200), gossipFanout: 3, gossipToTheDead: .seconds(30),
        retransmitMultiplier: 4, maxQueuedBroadcasts: 4096, pushPullInterval: .seconds(30),
        reconnectInterval: .seconds(10), reapAfter: .seconds(3600), maxPacketBytes: 1344, maxPendingRelays: 256)

    /// The named presets, as `--preset` spells them.
    public static let presets: [(name: String, settings: MembershipSettings)] = [
        ("lan", .lan), ("loopback", .loopback), ("memberlist", .memberlist),
    ]

    public static func preset(named name: String) -> MembershipSettings? {
        presets.first { $0.name == name }?.settings
    }

    /// For one machine: every period ten times shorter than `.lan`. The probe timeouts are 50 ms
    /// each rather than 30 (the probe still fails at the end of its 100 ms interval): on a
    /// loaded machine a process is often not scheduled for tens of milliseconds.
    public static let loopback = MembershipSettings(
        probeInterval: .milliseconds(100), probeTimeout: .milliseconds(50), indirectChecks: 3,
        suspicionMultiplier: 2.5, suspicionMaxTimeoutMultiplier: 6, maxLocalHealth: 8, lifeguard: true,
        gossipInterval: .milliseconds(20), gossipFanout: 3, gossipToTheDead: .seconds(3),
        retransmitMultiplier: 4, maxQueuedBroadcasts: 4096, pushPullInterval: .seconds(3),
        reconnectInterval: .milliseconds(500), reapAfter: .seconds(120), maxPacketBytes: 1344, maxPendingRelays: 256,
        indirectProbeTimeout: .milliseconds(50), probeOrder: .suspectsFirst,
        suspicionConfirmations: 2, confirmationScaling: .memberlist, tellAccused: true)

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

