/// SWIM failure detection with Lifeguard, as a deterministic state machine with no I/O.
///
/// Inputs are method calls that carry the current `Instant`; outputs are `MembershipDirective`s
/// for the shell to carry out. The shell calls `tick(now:)` at `nextDeadline` (or later).
/// Nothing here reads a clock, touches a socket, or draws unseeded randomness, so the simulator
/// drives exactly this code.
///
/// References: Das, Gupta, Motivala, "SWIM" (2002); Dadgar, Phillips, Currey, "Lifeguard" (2018);
/// hashicorp/memberlist.
public struct Membership: Sendable {
    public let settings: MembershipSettings
    public let myName: String
    public internal(set) var myAddress: NodeAddress
    public internal(set) var incarnation: UInt64 = 0
    public internal(set) var metadata: MemberMetadata
    public internal(set) var isLeaving = false
    public internal(set) var stats = MembershipStats()
    public internal(set) var awareness: Awareness

    /// The member table, this node included (in slot 0).
    public internal(set) var members: MemberTable
    public internal(set) var suspicions: [String: Suspicion] = [:]
    /// Every suspicion's deadline, earliest first. A deadline that moved (a confirmation) or
    /// whose suspicion ended stays until it comes due and is then skipped: with thousands of
    /// suspicions in flight (a large cluster on a lossy network) a scan per event would be
    /// O(N) per event.
    var suspicionTimers = MinHeap<SuspicionTimer>()
    public internal(set) var broadcasts: BroadcastQueue
    public internal(set) var seeds: [NodeAddress] = []

    var rng: DeterministicRNG
    var schedule = ProbeSchedule()
    /// Members that others began to suspect since we last probed them, oldest first
    /// (`ProbeOrder.suspectsFirst`); at most `maxUrgentProbes`, the oldest dropped first.
    var urgentProbes: [String] = []
    static let maxUrgentProbes = 4
    /// Ten probe intervals: a member suspected over and over draws at most a tenth of a node's
    /// probes out of turn.
    static func urgentProbeCooldown(_ settings: MembershipSettings) -> Duration { settings.probeInterval * 10 }
    var lastProbeWasUrgent = false
    /// When this node last probed each member out of turn: a member that is suspected again and
    /// again (a slow node) gets an urgent probe at most once per `urgentProbeCooldown`, so that
    /// it cannot hold back the round robin that finds crashed members. Members in the table only.
    var urgentProbedAt: [String: Instant] = [:]
    /// When we last told a dead or suspect member of its accusation (`tellAccused`). Only
    /// members in the table: an entry goes when the member is alive again or reaped.
    var told: [String: Instant] = [:]
    /// Deaths this node declared itself (its own suspicion ran out) (`tellAccused`): it tells
    /// the member at once and again after 1, 2, 4, 8 ... probe intervals within
    /// `gossipToTheDead`, until the member refutes, so that a lost tell does not leave a live
    /// member dead here. The gaps double because after a mass crash every member that declared
    /// a death retells it (a review measured +80% packets for 30 s with a retell every interval
    /// at N = 300 with 60 crashes); five tells in 30 s. Only members in the table.
    var declaredDeaths: [String: DeclaredDeath] = [:]
    /// The earliest `nextTellAt` among `declaredDeaths` (a tick before it skips them all).
    var nextRetellAt: Instant?
    /// When this node last asked a member for a catch-up push-pull (see CatchUp.swift).
    var lastCatchUpAskedAt: Instant?
    /// The latest `alive` refused because it named a member under another identity key than
    /// the one this node holds (Identity.swift), for the shell's log line; the count is
    /// `stats.identityConflicts`.
    public internal(set) var lastIdentityConflict: IdentityConflict?

    struct DeclaredDeath: Sendable, Equatable {
        var at: Instant
        var nextTellAt: Instant
        var gap: Duration
    }
    /// Accusations (`tellAccused`) the packet being received may still draw: one, so that a
    /// packet naming many accused members (acks under forged source names, say) costs one
    /// packet out, not one per name. nil outside `receive`: timers tell without this limit.
    var tellsLeftInPacket: Int?
    var probe: Probe?
    var relays: [UInt32: Relay] = [:]
    var sequence: UInt32 = 0

    var nextProbeAt: Instant
    var nextGossipAt: Instant
    var nextPushPullAt: Instant
    /// Periodic push-pulls still to come at `reconnectInterval` instead of the scaled
    /// `pushPullInterval(members:)`, and when they were last armed (see `memberCameBack`).
    var quickPushPullsLeft = 0
    var quickPushPullsArmedAt: Instant?
    var nextReconnectAt: Instant
    var nextReapAt: Instant

    struct Probe: Sendable {
        var target: String
        var address: NodeAddress
        var seq: UInt32
        var indirectAt: Instant
        var endsAt: Instant
        var indirectSent = false
        var expectedNacks = 0
        var nacks = 0
    }

    struct Relay: Sendable {
        var originalSeq: UInt32
        var target: String
        var replyTo: NodeAddress
        var nackAt: Instant?
        var expiresAt: Instant
    }

    public init(settings: MembershipSettings, name: String, address: NodeAddress, metadata: MemberMetadata,
                seed: UInt64, now: Instant) {
        self.init(settings: settings, name: name, address: address, metadata: metadata, seed: seed, now: now, knownMembers: [])
    }

    /// Starts from a known member table (restored from disk, or a simulation that begins
    /// converged) without gossiping it: these members are taken as already known to all.
    public init(settings: MembershipSettings, name: String, address: NodeAddress, metadata: MemberMetadata,
                seed: UInt64, now: Instant, knownMembers: [Member]) {
        precondition(!name.isEmpty && name.utf8.count <= WireLimits.maxNameBytes, "member name must be 1-64 bytes")
        precondition(metadata.encodedSize <= MemberMetadata.maxEncodedBytes, "metadata over its bound")
        precondition(settings.probeTimeout < settings.probeInterval, "probe timeout must be shorter than the interval")
        self.settings = settings
        myName = name
        myAddress = address
        self.metadata = metadata
        rng = DeterministicRNG(seed: seed)
        awareness = Awareness(max: settings.maxLocalHealth)
        broadcasts = BroadcastQueue(capacity: settings.maxQueuedBroadcasts)
        // Stagger the timers so that nodes started together do not probe in lockstep.
        func jitter(_ d: Duration, _ rng: inout DeterministicRNG) -> Duration {
            .nanoseconds(Int64.random(in: 0...max(1, d.nanoseconds), using: &rng))
        }
        nextProbeAt = now + jitter(settings.probeInterval, &rng)
        nextGossipAt = now + jitter(settings.gossipInterval, &rng)
        nextReconnectAt = now + jitter(settings.reconnectInterval, &rng)
        nextReapAt = now + settings.probeInterval

        members = MemberTable(owner: Member(name: name, address: address, incarnation: 0, status: .alive,
                                            metadata: metadata, statusSince: now),
                              capacity: min(knownMembers.count + 1, WireLimits.maxMembers))
        var probed: [MemberTable.Slot] = []
        probed.reserveCapacity(knownMembers.count)
        for m in knownMembers where members.count < WireLimits.maxMembers {
            if let slot = members.insertIfAbsent(m), m.status.isActive { probed.append(slot) }
        }
        schedule.insert(contentsOf: probed, using: &rng)
        // The first periodic push-pull comes at the interval for the table's size, staggered
        // over it, not at the small-cluster interval: a large cluster restored at once would
        // otherwise exchange every full table within the first minute.
        let pushPull = settings.pushPullInterval(members: members.count)
        nextPushPullAt = now + pushPull + jitter(pushPull, &rng)
    }

    // MARK: Queries

    /// Members other than this node that are alive or suspect.
    public var activeCount: Int { members.active.count }

    /// The member table sorted by name, this node included.
    public var memberList: [Member] { members.sorted { $0.name < $1.name } }

    public func status(of name: String) -> MemberStatus? { members[name]?.status }

    var selfAlive: MembershipMessage.Alive {
        .init(name: myName, address: myAddress, incarnation: incarnation, metadata: metadata)
    }

    /// The earliest instant at which `tick` has work to do.
    public var nextDeadline: Instant {
        var d = min(nextProbeAt, nextGossipAt, nextPushPullAt, nextReconnectAt, nextReapAt)
        if let p = probe { d = min(d, p.indirectSent ? p.endsAt : p.indirectAt) }
        for r in relays.values { d = min(d, r.nackAt ?? r.expiresAt) }
        if let t = suspicionTimers.min { d = min(d, t.deadline) }
        return d
    }

    // MARK: Inputs

    /// Contacts `seeds` with a join push-pull. Keeps re-contacting them while this node knows
    /// no other live member (see `reconnectInterval`).
    public mutating func join(seeds: [NodeAddress], now: Instant) -> [MembershipDirective] {
        self.seeds = Array(seeds.filter { $0 != myAddress }.prefix(64))
        var out: [MembershipDirective] = []
        for seed in self.seeds.prefix(8) {
            stats.pushPullsStarted += 1
            out.append(.pushPull(localState(join: true), to: seed))
        }
        return out
    }

    /// Handles one decoded packet that arrived from `source`.
    ///
    /// Nothing is ever sent to `source`: it is the datagram's unauthenticated UDP source, which
    /// anyone who replays a captured packet (no key needed, within the replay window) chooses.
    /// Replies go to addresses the packet's sealed content names or the member table holds.
    public mutating func receive(_ packet: Packet, from source: NodeAddress, now: Instant) -> [MembershipDirective] {
        var out: [MembershipDirective] = []
        var accuser: String?
        tellsLeftInPacket = 1
        defer { tellsLeftInPacket = nil }
        for message in packet.messages {
            stats.messagesReceived += 1
            switch message {
            case .dead(let name, _, let from), .suspect(let name, _, let from):
                if accuser == nil, name == myName, from != myName, members[from] != nil { accuser = from }
            default: break
            }
            handle(message, now: now, into: &out)
        }
        // `tellAccused`: the member that accused us hears our alive straight back (one per
        // packet), besides the gossip: a member that tells us of its accusation is the first to
        // take the refutation, and one that holds an accusation from before our last
        // refutation (it missed that refutation's gossip) learns of it now. The answer goes to
        // the accuser's address in our table, never to the packet's source (see above): a
        // replayed accusation with a forged source would otherwise make us send our alive and
        // a full packet of gossip to any address on the internet, once per copy.
        if settings.tellAccused, let accuser, !isLeaving, let m = members[accuser] {
            send([.alive(selfAlive)], to: m.address, into: &out)
        }
        return out
    }

    /// Serves a push-pull: merges the remote state and returns ours for the reply.
    ///
    /// The reply is taken after the merge, so that it carries what the merge changed here, above
    /// all this node's refutation when the remote state held it dead (two sides of a healed
    /// partition): the initiator takes that alive at once, where a reply from before the merge
    /// carried the incarnation it already held dead, and the pair needed a second exchange the
    /// other way round (a reconnection interval or more) to find each other.
    public mutating func servePushPull(_ remote: PushPullState, now: Instant) -> (reply: PushPullState, directives: [MembershipDirective]) {
        stats.pushPullsServed += 1
        var out: [MembershipDirective] = []
        merge(remote, newMembers: WireLimits.maxNewMembersPerInboundPushPull, now: now, into: &out)
        return (localState(join: false), out)
    }

    /// Completes a push-pull this node started; `remote` is nil if the exchange failed.
    public mutating func completePushPull(_ remote: PushPullState?, now: Instant) -> [MembershipDirective] {
        guard let remote else {
            stats.pushPullsFailed += 1
            return []
        }
        var out: [MembershipDirective] = []
        merge(remote, newMembers: WireLimits.maxMembers, now: now, into: &out)
        return out
    }

    /// Runs every timer that is due.
    public mutating func tick(now: Instant) -> [MembershipDirective] {
        var out: [MembershipDirective] = []
        if !isLeaving {
            advanceProbe(now: now, into: &out)
            advanceRelays(now: now, into: &out)
            expireSuspicions(now: now, into: &out)
            retellDeclaredDeaths(now: now, into: &out)
            if now >= nextProbeAt {
                startProbe(now: now, into: &out)
                nextProbeAt = now + awareness.scale(settings.probeInterval)
            }
            if now >= nextPushPullAt {
                if quickPushPullsLeft > 0 { quickPushPullsLeft -= 1 }
                nextPushPullAt = now + (quickPushPullsLeft > 0 ? settings.reconnectInterval
                                                               : settings.pushPullInterval(members: members.active.count + 1))
                startPeriodicPushPull(now: now, into: &out)
            }
            if now >= nextReconnectAt {
                nextReconnectAt = now + settings.reconnectInterval
                reconnect(now: now, into: &out)
            }
        }
        if now >= nextGossipAt {
            nextGossipAt = now + settings.gossipInterval
            gossip(now: now, into: &out)
        }
        if now >= nextReapAt {
            nextReapAt = now + settings.probeInterval
            reap(now: now, into: &out)
        }
        return out
    }

    /// Leaves gracefully: tells members directly and by gossip. After this the node stops
    /// probing and never refutes; the shell should keep ticking for a few gossip intervals, then stop.
    public mutating func leave(now: Instant) -> [MembershipDirective] {
        guard !isLeaving else { return [] }
        isLeaving = true
        probe = nil
        members.update(0) {
            $0.status = .left
            $0.statusSince = now
        }
        let message = MembershipMessage.dead(name: myName, incarnation: incarnation, from: myName)
        broadcasts.enqueue(message)
        var out: [MembershipDirective] = []
        for slot in members.sample(.active, min(members.active.count, 64), using: &rng) {
            send([message], to: members.member(at: slot).address, into: &out)
        }
        return out
    }

    /// Changes this node's metadata (for example, free slots). The new version is gossiped.
    public mutating func updateMetadata(now: Instant, _ change: (inout MemberMetadata) -> Void) {
        var updated = metadata
        change(&updated)
        precondition(updated.encodedSize <= MemberMetadata.maxEncodedBytes, "metadata over its bound")
        precondition(updated.free <= updated.slots, "free slots exceed total")
        precondition(updated.identityKey == metadata.identityKey, "a node's identity key is fixed for its life")
        // Our own counter; saturating all the same, so that no path can trap.
        updated.version = metadata.version < .max ? metadata.version + 1 : .max
        metadata = updated
        members.update(0) { $0.metadata = updated }
        broadcasts.enqueue(.alive(selfAlive))
    }

    // MARK: Sending

    mutating func nextSequence() -> UInt32 {
        sequence &+= 1
        return sequence
    }

    /// Sends `messages` plus as much queued gossip as fits in one packet.
    mutating func send(_ messages: [MembershipMessage], to address: NodeAddress, into out: inout [MembershipDirective]) {
        var all = messages
        let used = 2 + messages.reduce(0) { $0 + $1.encodedSize }
        all += broadcasts.take(budget: settings.maxPacketBytes - used, limit: retransmitLimit)
        guard !all.isEmpty else { return }
        let packet = Packet(all)
        assert(packet.encodedSize <= settings.maxPacketBytes, "packet over budget")
        stats.packetsSent += 1
        stats.messagesSent += all.count
        out.append(.send(packet, to: address))
    }

    var retransmitLimit: Int { settings.retransmitLimit(members: members.active.count + 1) }

    mutating func gossip(now: Instant, into out: inout [MembershipDirective]) {
        guard !broadcasts.isEmpty else { return }
        // Recently dead members are gossiped to as well, so they learn and can refute.
        var targets = members.sample(.active, settings.gossipFanout, using: &rng)
        if let dead = members.sample(.inactive, 1, using: &rng).first,
           case let m = members.member(at: dead), m.status == .dead, now - m.statusSince < settings.gossipToTheDead {
            targets.append(dead)
        }
        for slot in targets {
            guard !broadcasts.isEmpty else { break }
            send([], to: members.member(at: slot).address, into: &out)
        }
    }
}

/// What the membership core asks its shell to do.
public enum MembershipDirective: Equatable, Sendable {
    /// Send one datagram.
    case send(Packet, to: NodeAddress)
    /// Open a stream to the address, send this state, and hand the reply to `completePushPull`.
    case pushPull(PushPullState, to: NodeAddress)
    /// A member changed status (for logs, metrics and the layers above).
    case changed(MemberChange)
}
