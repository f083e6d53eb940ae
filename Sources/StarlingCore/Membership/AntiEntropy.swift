/// Push-pull anti-entropy over streams: a full state exchange on join, periodically with a
/// random member, and towards dead members (or the seeds, when alone) so that a node cut off by
/// a partition finds its way back after the heal.
extension Membership {
    public func localState(join: Bool) -> PushPullState {
        // Slot order: deterministic, and no O(N log N) sort on every exchange.
        let entries = members.prefix(WireLimits.maxMembers).map {
            PushPullState.Entry(name: $0.name, address: $0.address, incarnation: $0.incarnation,
                                status: $0.status, metadata: $0.metadata)
        }
        return PushPullState(join: join, source: myName, entries: entries)
    }

    /// Merges a remote table. A remote `dead` counts only as a suspicion here (memberlist's rule):
    /// the remote view may be stale, and the member deserves the chance to refute.
    /// At most `newMembers` members this node does not know are added; the others are refused
    /// and counted in `membersRejected` (see `WireLimits.maxNewMembersPerInboundPushPull`).
    mutating func merge(_ remote: PushPullState, newMembers: Int, now: Instant, into out: inout [MembershipDirective]) {
        stats.pushPullEntriesSkipped += remote.skippedEntries
        var added = 0
        var sawMyself = false
        for e in remote.entries {
            if e.name == myName, !sawMyself {
                sawMyself = true
                sendCatchUpChain(to: remote.source, holding: e.incarnation, into: &out)
                // The other side holds us under another identity key (Identity.swift). An alive
                // entry is counted by `handleAlive`; a suspect or dead one is counted here, since
                // its accusation carries no key: a node restarted with a fresh key under an old
                // name usually finds its old life already suspected, and must learn why the
                // cluster refuses its refutations.
                if e.status != .alive, let mine = metadata.identityKey,
                   !Self.identityMatches(held: mine, claimed: e.metadata.identityKey) {
                    noteIdentityConflict(.init(name: e.name, address: e.address, incarnation: e.incarnation, metadata: e.metadata),
                                         held: mine, aboutMe: true)
                }
            }
            switch e.status {
            case .alive:
                if e.name != myName, members.slot(of: e.name) == nil {
                    guard added < newMembers else {
                        stats.membersRejected += 1
                        continue
                    }
                    added += 1
                }
                handleAlive(.init(name: e.name, address: e.address, incarnation: e.incarnation, metadata: e.metadata),
                            now: now, into: &out)
            case .suspect, .dead:
                handleSuspect(name: e.name, incarnation: e.incarnation, from: remote.source, now: now, into: &out)
            case .left:
                handleDead(name: e.name, incarnation: e.incarnation, from: e.name, now: now, into: &out)
            }
        }
    }

    /// How many quick push-pulls one revival arms (see `memberCameBack`).
    static let quickPushPulls = 3

    /// A member this node held dead is alive again: a partition healed, or the member restarted
    /// and refuted. Such a refutation is the one message that clears a false death, and it
    /// spreads by gossip only to the members that held *its sender's side* alive at the time, a
    /// bounded number of times each; a member that missed it holds the death until a push-pull
    /// with someone who has it. At the scaled interval that is 150 s at N = 300 (most members
    /// start one every 150 s), longer than the convergence bound the simulator holds us to:
    /// `partition-heal` at N = 300 left one member dead at one holder past it in 7 of 30 seeds.
    ///
    /// So a revival arms `quickPushPulls` periodic push-pulls, `reconnectInterval` apart, the
    /// first within one (jittered): full exchanges with random live members, which carry every
    /// refutation the rest of the mesh holds. Bounded whatever the revivals (a churning mesh, or
    /// a key holder forging deaths to make members refute): armed at most once per scaled
    /// push-pull interval, and a revival while armed changes nothing, so a node makes at most
    /// `quickPushPulls + 1` push-pulls per scaled interval, and never more than one per
    /// reconnect interval from this rule.
    mutating func memberCameBack(now: Instant) {
        guard quickPushPullsLeft == 0 else { return }
        if let armed = quickPushPullsArmedAt, now - armed < settings.pushPullInterval(members: members.active.count + 1) { return }
        quickPushPullsArmedAt = now
        quickPushPullsLeft = Self.quickPushPulls
        let soon = now + .nanoseconds(Int64.random(in: 0...max(1, settings.reconnectInterval.nanoseconds), using: &rng))
        if soon < nextPushPullAt { nextPushPullAt = soon }
    }

    mutating func startPeriodicPushPull(now: Instant, into out: inout [MembershipDirective]) {
        guard let slot = members.sample(.active, 1, using: &rng).first else { return }
        stats.pushPullsStarted += 1
        out.append(.pushPull(localState(join: false), to: members.member(at: slot).address))
    }

    /// At most one reconnection attempt per interval: to a random seed when this node knows no
    /// live member, else to a random dead one (it may be behind a healed partition).
    ///
    /// As in Serf, a node tries with probability dead / alive, so that the cluster as a whole
    /// makes about one attempt per dead member per interval whatever its size. After a partition
    /// splits the cluster the ratio is near 1 on both sides, and every node keeps trying until
    /// the heal.
    mutating func reconnect(now: Instant, into out: inout [MembershipDirective]) {
        var target: NodeAddress?
        let dead = members.inactive.filter { members.member(at: $0).status == .dead }
        let alone = members.active.isEmpty
        if alone, !seeds.isEmpty, dead.isEmpty || Bool.random(using: &rng) {
            target = seeds.randomElement(using: &rng)
        } else if !dead.isEmpty,
                  alone || Double.random(in: 0..<1, using: &rng) < Double(dead.count) / Double(members.active.count + 1),
                  let slot = dead.randomElement(using: &rng) {
            target = members.member(at: slot).address
        }
        guard let target else { return }
        stats.pushPullsStarted += 1
        out.append(.pushPull(localState(join: alone), to: target))
    }
}
