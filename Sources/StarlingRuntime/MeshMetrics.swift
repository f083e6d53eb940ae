import Metrics
import StarlingCore

/// The node's Prometheus metrics, fed from the membership core's counters and the transport.
/// Only the loop thread touches this object.
final class MeshMetrics {
    private var last = MembershipStats()
    private let counters: [(KeyPath<MembershipStats, Int>, Counter)]
    private var dropped: [String: Counter] = [:]
    private let bytesIn = Counter(label: "starling_gossip_bytes_in_total", dimensions: [("transport", "udp")])
    private let bytesOut = Counter(label: "starling_gossip_bytes_out_total", dimensions: [("transport", "udp")])
    private let streamBytesIn = Counter(label: "starling_gossip_bytes_in_total", dimensions: [("transport", "tcp")])
    private let streamBytesOut = Counter(label: "starling_gossip_bytes_out_total", dimensions: [("transport", "tcp")])
    private let packetsIn = Counter(label: "starling_gossip_packets_in_total")
    private let membersByStatus: [MemberStatus: Gauge]
    private let localHealth = Gauge(label: "starling_local_health")
    private let incarnation = Gauge(label: "starling_incarnation")
    private let snapshots = Counter(label: "starling_snapshot_publishes_total")
    private let hellos = Counter(label: "starling_stream_hellos_total")
    private let replayEvictions = Counter(label: "starling_replay_cache_evictions_total")

    init() {
        func c(_ name: String) -> Counter { Counter(label: "starling_\(name)_total") }
        counters = [
            (\.probesSent, c("probes")), (\.acksReceived, c("acks")), (\.probesFailed, c("probes_failed")),
            (\.pingReqsSent, c("ping_reqs")), (\.pingReqsServed, c("ping_reqs_served")),
            (\.nacksSent, c("nacks_sent")), (\.nacksReceived, c("nacks_received")),
            (\.suspicionsRaised, c("suspicions")), (\.refutations, c("refutations")),
            (\.deathsDeclared, c("deaths")), (\.pushPullsStarted, c("push_pulls")),
            (\.pushPullsServed, c("push_pulls_served")), (\.pushPullsFailed, c("push_pulls_failed")),
            (\.packetsSent, c("gossip_packets_out")), (\.messagesReceived, c("gossip_messages_in")),
            (\.messagesIgnored, c("gossip_messages_ignored")), (\.reaped, c("members_reaped")),
            (\.messagesRejected, c("gossip_messages_rejected")),
            (\.pushPullEntriesSkipped, c("push_pull_entries_skipped")),
            (\.membersRejected, c("members_rejected")),
            (\.accusationsTold, c("accusations_told")), (\.urgentProbes, c("urgent_probes")),
            (\.catchUpsAsked, c("catch_ups_asked")), (\.catchUpChainsSent, c("catch_up_chains_sent")),
            (\.identityConflicts, c("identity_conflicts")),
        ]
        var gauges: [MemberStatus: Gauge] = [:]
        for s in MemberStatus.allCases { gauges[s] = Gauge(label: "starling_members", dimensions: [("status", s.description)]) }
        membersByStatus = gauges
    }

    /// A UInt64 as a gauge's Int64, clamped: `Int64(x)` traps above Int64.max, and an
    /// incarnation is a number a peer can push up (bounded by `WireLimits.maxIncarnation` today,
    /// but the gauge must not depend on that).
    static func gaugeValue(_ x: UInt64) -> Int64 { Int64(clamping: x) }

    func drop(reason: String) {
        if dropped[reason] == nil {
            dropped[reason] = Counter(label: "starling_packets_dropped_total", dimensions: [("reason", reason)])
        }
        dropped[reason]!.increment()
    }

    func snapshotPublished() { snapshots.increment() }

    /// A datagram nonce forgotten before its time to make room (`NonceReplayCache.WhenFull`).
    func replayCacheEvicted() { replayEvictions.increment() }

    func streamAuthenticated() { hellos.increment() }

    func received(bytes: Int, stream: Bool) {
        if stream { streamBytesIn.increment(by: bytes) } else { bytesIn.increment(by: bytes); packetsIn.increment() }
    }

    func sent(bytes: Int, stream: Bool) {
        if stream { streamBytesOut.increment(by: bytes) } else { bytesOut.increment(by: bytes) }
    }

    func publish(_ m: Membership) {
        let now = m.stats
        for (path, counter) in counters {
            let delta = now[keyPath: path] - last[keyPath: path]
            if delta > 0 { counter.increment(by: delta) }
        }
        last = now
        var counts: [MemberStatus: Int] = [:]
        for member in m.members { counts[member.status, default: 0] += 1 }
        for (status, gauge) in membersByStatus { gauge.record(counts[status] ?? 0) }
        localHealth.record(m.awareness.score)
        incarnation.record(Self.gaugeValue(m.incarnation))
    }
}
