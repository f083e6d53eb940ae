/// Push-pull anti-entropy over streams: a full state exchange on join, periodically with a
/// random member, and towards dead members (or the seeds, when alone) so that a node cut off by
/// a partition finds its way back after the heal.
extension Membership {
    public func localState(join: Bool) -> PushPullState {
        let entries = members.values.sorted { $0.name < $1.name }.prefix(WireLimits.maxMembers).map {
            PushPullState.Entry(name: $0.name, address: $0.address, incarnation: $0.incarnation,
                                status: $0.status, metadata: $0.metadata)
        }
        return PushPullState(join: join, source: myName, entries: entries)
    }

    /// Merges a remote table. A remote `dead` counts only as a suspicion here (memberlist's rule):
    /// the remote view may be stale, and the member deserves the chance to refute.
    mutating func merge(_ remote: PushPullState, now: Instant, into out: inout [MembershipDirective]) {
        for e in remote.entries {
            switch e.status {
            case .alive:
                handleAlive(.init(name: e.name, address: e.address, incarnation: e.incarnation, metadata: e.metadata),
                            now: now, into: &out)
            case .suspect, .dead:
                handleSuspect(name: e.name, incarnation: e.incarnation, from: remote.source, now: now, into: &out)
            case .left:
                handleDead(name: e.name, incarnation: e.incarnation, from: e.name, now: now, into: &out)
            }
        }
    }

    mutating func startPeriodicPushPull(now: Instant, into out: inout [MembershipDirective]) {
        guard let name = active.sample(1, using: &rng).first, let m = members[name] else { return }
        stats.pushPullsStarted += 1
        out.append(.pushPull(localState(join: false), to: m.address))
    }

    /// One bounded reconnection attempt per interval: to a random seed when this node knows no
    /// live member, else to a random dead one (they may be behind a healed partition).
    mutating func reconnect(now: Instant, into out: inout [MembershipDirective]) {
        var target: NodeAddress?
        let deadCandidates = inactive.names.filter { members[$0]?.status == .dead }
        if active.isEmpty, !seeds.isEmpty, deadCandidates.isEmpty || Bool.random(using: &rng) {
            target = seeds.randomElement(using: &rng)
        } else if let name = deadCandidates.randomElement(using: &rng) {
            target = members[name]?.address
        }
        guard let target else { return }
        stats.pushPullsStarted += 1
        out.append(.pushPull(localState(join: active.isEmpty), to: target))
    }
}
