import StarlingCore

/// The simulator's services to hosted protocols: the stream links, membership events derived
/// from each node's table, metadata updates, and the trace.
extension Simulator {
    func mixTrace(_ values: Int...) {
        for v in values { trace.mix(v) }
    }

    /// Sends one frame from `i` to `j` on their stream connection: its connection and arrival
    /// time, or nil when no connection can be made now (the peer is down or unreachable).
    /// Frames are not subject to datagram loss or duplication; they arrive in order.
    func streamSend(from i: Int, to j: Int) -> (ConnectionID, Instant)? {
        guard nodes[j].up, network.canDeliver(from: i, to: j), network.canDeliver(from: j, to: i) else { return nil }
        let latency: Duration = i == j ? .zero : network.latency(using: &rng) + slowness(i, j)
        return (links.connection(i, j), links.arrival(from: i, to: j, earliest: now + latency))
    }

    /// After a partition or cut: every connection whose two ends can no longer reach each other
    /// is broken (what was in flight on it is lost), and requests open on it fail.
    func breakConnectionsThatCannotDeliver() {
        for a in 0..<nodes.count {
            for b in (a + 1)..<max(a + 1, nodes.count) where !network.canDeliver(from: a, to: b) || !network.canDeliver(from: b, to: a) {
                links.breakConnection(a, b)
            }
        }
        for h in hosts { h.connectionsBroke(self) }
    }

    /// Changes a node's gossiped metadata, as the runtime does for free slots; its protocols
    /// hear of it as a membership event like any other change.
    func updateMetadata(_ i: Int, _ change: (inout MemberMetadata) -> Void) {
        guard nodes[i].up else { return }
        var updated = nodes[i].membership.metadata
        change(&updated)
        guard updated != nodes[i].membership.metadata else { return }
        nodes[i].membership.updateMetadata(now: now, change)
        markDirty(i, i)
    }

    // MARK: Membership events

    func markDirty(_ i: Int, _ subject: Int) {
        if dirtySubjects[i].isEmpty && !dirtyAll[i] { membershipDirty.append(i) }
        dirtySubjects[i].append(subject)
    }

    func markAllDirty(_ i: Int) {
        if dirtySubjects[i].isEmpty && !dirtyAll[i] { membershipDirty.append(i) }
        dirtyAll[i] = true
    }

    /// Members whose metadata a packet may have changed: the subjects of its `alive` gossip.
    func markGossipedMembers(_ i: Int, _ packet: Packet) {
        for m in packet.messages {
            if case .alive(let a) = m, let s = index[a.name] { markDirty(i, s) }
        }
    }

    /// Tells each dirty node's protocols how its table changed since they were last told. The
    /// protocols' effects may dirty nodes again (an advertisement); this goes on until none is.
    func flushMembershipEvents() {
        var rounds = 0
        while !membershipDirty.isEmpty {
            rounds += 1
            precondition(rounds < 1_000_000, "membership events never settle")
            let i = membershipDirty.removeFirst()
            let subjects = dirtyAll[i] ? Array(0..<nodes.count) : dirtySubjects[i]
            dirtyAll[i] = false
            dirtySubjects[i] = []
            guard nodes[i].up else { continue }
            var events: [MembershipEvent] = []
            for s in subjects {
                let name = Self.name(s)
                let current = nodes[i].membership.members[name].map {
                    PeerView(name: $0.name, address: $0.address, status: $0.status, metadata: $0.metadata)
                }
                guard current != toldViews[i][s] else { continue }
                toldViews[i][s] = current
                events.append(current.map { .updated($0) } ?? .removed(name))
                trace.mix(12); trace.mix(i); trace.mix(s); trace.mix(Int(current?.status.rawValue ?? 9)); trace.mix(Int(current?.metadata.free ?? 0))
            }
            if events.isEmpty { continue }
            for h in hosts { h.membershipChanged(node: i, events, self) }
        }
    }
}
