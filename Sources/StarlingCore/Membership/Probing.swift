/// SWIM failure detection: direct probe, indirect probe through k members, Lifeguard nacks and
/// the buddy system.
extension Membership {
    mutating func startProbe(now: Instant, into out: inout [MembershipDirective]) {
        if probe != nil { finishFailedProbe(now: now, into: &out) }
        guard let slot = nextProbeTarget(now: now) else { return }
        let member = members.member(at: slot)
        let target = member.name
        let seq = nextSequence()
        let indirectAt = now + awareness.scale(settings.probeTimeout)
        probe = Probe(target: target, address: member.address, seq: seq, indirectAt: indirectAt,
                      endsAt: settings.probeEnd(start: now, interval: awareness.scale(settings.probeInterval),
                                                indirectAt: indirectAt, scale: { [awareness] in awareness.scale($0) }))
        var messages: [MembershipMessage] = [.ping(seq: seq, target: target, source: myName, replyTo: myAddress)]
        // Lifeguard buddy system: tell a suspect that it is suspected, first thing, so that it
        // can refute at once instead of waiting for gossip to reach it.
        if settings.lifeguard, member.status == .suspect {
            messages.append(.suspect(name: target, incarnation: member.incarnation, from: myName))
        }
        stats.probesSent += 1
        send(messages, to: member.address, into: &out)
    }

    /// The round robin's next member, or (`ProbeOrder.suspectsFirst`, every other probe at
    /// most) a member that others began to suspect since this node last probed.
    mutating func nextProbeTarget(now: Instant) -> MemberTable.Slot? {
        if settings.probeOrder == .suspectsFirst, !lastProbeWasUrgent {
            while !urgentProbes.isEmpty {
                let name = urgentProbes.removeFirst()
                if let slot = members.slot(of: name), members.member(at: slot).status == .suspect {
                    lastProbeWasUrgent = true
                    urgentProbedAt[name] = now
                    stats.urgentProbes += 1
                    return slot
                }
            }
        }
        lastProbeWasUrgent = false
        return schedule.next(using: &rng, eligible: { [members] in members.isActive(slot: $0) })
    }

    mutating func advanceProbe(now: Instant, into out: inout [MembershipDirective]) {
        guard var p = probe else { return }
        if !p.indirectSent, now >= p.indirectAt {
            p.indirectSent = true
            let helpers = members.sample(.active, settings.indirectChecks, excluding: p.target, using: &rng)
            for slot in helpers {
                let helper = members.member(at: slot)
                stats.pingReqsSent += 1
                send([.pingReq(seq: p.seq, target: p.target, targetAddress: p.address, source: myName, replyTo: myAddress)],
                     to: helper.address, into: &out)
            }
            p.expectedNacks = settings.lifeguard ? helpers.count : 0
            probe = p
        }
        if now >= p.endsAt { finishFailedProbe(now: now, into: &out) }
    }

    /// No ack came within the period: adjust local health and suspect the target.
    mutating func finishFailedProbe(now: Instant, into out: inout [MembershipDirective]) {
        guard let p = probe else { return }
        probe = nil
        stats.probesFailed += 1
        if settings.lifeguard {
            // Missing nacks mean our own links or process are the problem, not the target.
            let delta = p.expectedNacks > 0 ? max(0, p.expectedNacks - p.nacks) : 1
            awareness.apply(delta: delta)
        }
        guard let m = members[p.target], m.status == .alive || m.status == .suspect else { return }
        if m.status == .alive { stats.suspicionsRaised += 1 }
        handleSuspect(name: p.target, incarnation: m.incarnation, from: myName, now: now, into: &out)
    }

    mutating func advanceRelays(now: Instant, into out: inout [MembershipDirective]) {
        guard !relays.isEmpty else { return }
        for seq in relays.keys.sorted() {
            let relay = relays[seq]!
            if let nackAt = relay.nackAt, now >= nackAt {
                relays[seq]!.nackAt = nil
                stats.nacksSent += 1
                send([.nack(seq: relay.originalSeq, source: myName)], to: relay.replyTo, into: &out)
            }
            if now >= relay.expiresAt { relays[seq] = nil }
        }
    }

    mutating func handlePing(seq: UInt32, target: String, source: String, replyTo: NodeAddress, now: Instant,
                             into out: inout [MembershipDirective]) {
        guard target == myName else {
            stats.messagesIgnored += 1  // meant for whoever had this address before
            return
        }
        var reply: [MembershipMessage] = [.ack(seq: seq, source: myName)]
        if let accusation = accusation(toTell: source, now: now) { reply.append(accusation.message) }
        send(reply, to: replyTo, into: &out)
    }

    /// `tellAccused`: what to tell `name`, a member we just heard from, if we hold it dead or
    /// suspect: the accusation at the incarnation we hold, so that it refutes at once. At most
    /// once per probe interval per member (`told` holds the last time; entries go once the
    /// member is active again, or when it is reaped).
    mutating func accusation(toTell name: String, now: Instant) -> (message: MembershipMessage, to: NodeAddress)? {
        // Every ping, ack, nack and ping-req comes here: with nobody suspected or down, which is
        // most of the time, there is nothing to tell and no lookup to make.
        guard settings.tellAccused, !suspicions.isEmpty || !members.inactive.isEmpty,
              name != myName, let m = members[name] else { return nil }
        let message: MembershipMessage
        switch m.status {
        case .dead: message = .dead(name: name, incarnation: m.incarnation, from: myName)
        case .suspect: message = .suspect(name: name, incarnation: m.incarnation, from: myName)
        case .alive, .left: return nil
        }
        if let last = told[name], now - last < settings.probeInterval { return nil }
        guard told.count < WireLimits.maxMembers || told[name] != nil else { return nil }
        if let left = tellsLeftInPacket {
            guard left > 0 else { return nil }
            tellsLeftInPacket = left - 1
        }
        told[name] = now
        stats.accusationsTold += 1
        return (message, m.address)
    }

    /// Sends the accusation (if any) to a member we heard from without answering it.
    mutating func tellIfAccused(_ name: String, now: Instant, into out: inout [MembershipDirective]) {
        guard let accusation = accusation(toTell: name, now: now) else { return }
        send([accusation.message], to: accusation.to, into: &out)
    }

    mutating func handleAck(seq: UInt32, source: String, now: Instant, into out: inout [MembershipDirective]) {
        tellIfAccused(source, now: now, into: &out)
        if let p = probe, p.seq == seq {
            probe = nil
            stats.acksReceived += 1
            if settings.lifeguard { awareness.apply(delta: -1) }
            return
        }
        if let relay = relays.removeValue(forKey: seq) {
            send([.ack(seq: relay.originalSeq, source: relay.target)], to: relay.replyTo, into: &out)
            return
        }
        stats.messagesIgnored += 1  // late: the probe already ended
    }

    mutating func handleNack(seq: UInt32) {
        if let p = probe, p.seq == seq, p.nacks < p.expectedNacks {
            probe!.nacks += 1
            stats.nacksReceived += 1
        } else {
            stats.messagesIgnored += 1
        }
    }

    mutating func handlePingReq(seq: UInt32, target: String, targetAddress: NodeAddress, source: String, replyTo: NodeAddress,
                                now: Instant, into out: inout [MembershipDirective]) {
        tellIfAccused(source, now: now, into: &out)
        guard relays.count < settings.maxPendingRelays else {
            stats.relaysDropped += 1
            return
        }
        stats.pingReqsServed += 1
        let local = nextSequence()
        relays[local] = Relay(originalSeq: seq, target: target, replyTo: replyTo,
                              nackAt: settings.lifeguard ? now + settings.nackDelay : nil,
                              expiresAt: now + settings.probeInterval)
        send([.ping(seq: local, target: target, source: myName, replyTo: myAddress)], to: targetAddress, into: &out)
    }

    mutating func handle(_ message: MembershipMessage, now: Instant, into out: inout [MembershipDirective]) {
        switch message {
        case .ping(let seq, let target, let source, let replyTo):
            handlePing(seq: seq, target: target, source: source, replyTo: replyTo, now: now, into: &out)
        case .ack(let seq, let source):
            handleAck(seq: seq, source: source, now: now, into: &out)
        case .nack(let seq, let source):
            tellIfAccused(source, now: now, into: &out)
            handleNack(seq: seq)
        case .pingReq(let seq, let target, let targetAddress, let source, let replyTo):
            handlePingReq(seq: seq, target: target, targetAddress: targetAddress, source: source, replyTo: replyTo,
                          now: now, into: &out)
        case .alive(let a):
            handleAlive(a, now: now, into: &out)
        case .suspect(let name, let inc, let from):
            handleSuspect(name: name, incarnation: inc, from: from, now: now, into: &out)
        case .dead(let name, let inc, let from):
            handleDead(name: name, incarnation: inc, from: from, now: now, into: &out)
        }
    }
}
