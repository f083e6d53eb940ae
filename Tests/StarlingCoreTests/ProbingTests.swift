import Testing
@testable import StarlingCore

@Suite("SWIM probing and Lifeguard")
struct ProbingTests {
    /// Ticks until the node starts a probe; returns the ping's (seq, target) and the time.
    func firstProbe(_ m: inout Membership) -> (seq: UInt32, target: String, at: Instant) {
        var t = Instant.zero
        for _ in 0..<100 {
            t = t + .milliseconds(10)
            for message in m.tick(now: t).messages {
                if case .ping(let seq, let target, _, _) = message { return (seq, target, t) }
            }
        }
        Issue.record("no probe started")
        return (0, "", t)
    }

    @Test func anAckedProbeRaisesNoSuspicionAndImprovesHealth() {
        var m = nodeWithPeers(4)
        _ = m.receive(Packet([.suspect(name: "me", incarnation: 0, from: "p1")]), from: addr(1001), now: .zero)
        #expect(m.awareness.score == 1)
        let p = firstProbe(&m)
        _ = m.receive(Packet([.ack(seq: p.seq, source: p.target)]), from: addr(1001), now: p.at + .milliseconds(5))
        #expect(m.awareness.score == 0)
        _ = m.tick(now: p.at + .seconds(1))
        #expect(m.status(of: p.target) == .alive)
        #expect(m.stats.acksReceived == 1)
    }

    /// The probe timing memberlist uses (`.memberlist`; `.lan` fails the probe earlier, see
    /// IndirectProbeTimeoutTests).
    @Test func anUnansweredProbeGoesIndirectThenSuspects() {
        var m = nodeWithPeers(5, settings: .memberlist)
        let p = firstProbe(&m)
        // Direct timeout (500 ms on .memberlist): k = 3 ping-reqs to other members.
        let indirect = m.tick(now: p.at + .milliseconds(500))
        let reqs = indirect.messages.filter { if case .pingReq(p.seq, p.target, _, "me", _) = $0 { true } else { false } }
        #expect(reqs.count == 3)
        #expect(!indirect.sends.contains { $0.to == m.members[p.target]!.address })
        // Protocol period over with no ack and no nacks.
        let end = m.tick(now: p.at + .seconds(1))
        #expect(m.status(of: p.target) == .suspect)
        #expect(end.changes.contains { $0.name == p.target && $0.to == .suspect })
        #expect(m.awareness.score == 3, "Lifeguard: three missing nacks add three")
    }

    @Test func nacksTellTheProberThatTheTargetNotItselfIsAtFault() {
        // `.memberlist`: the probe waits for the nacks until the end of its interval.
        var m = nodeWithPeers(5, settings: .memberlist)
        let p = firstProbe(&m)
        _ = m.tick(now: p.at + .milliseconds(500))
        for helper in ["x", "y", "z"] {
            _ = m.receive(Packet([.nack(seq: p.seq, source: helper)]), from: addr(1009), now: p.at + .milliseconds(900))
        }
        _ = m.tick(now: p.at + .seconds(1))
        #expect(m.status(of: p.target) == .suspect)
        #expect(m.awareness.score == 0)
        #expect(m.stats.nacksReceived == 3)
    }

    @Test func withoutLifeguardHealthNeverMoves() {
        var s = MembershipSettings.lan
        s.lifeguard = false
        var m = nodeWithPeers(5, settings: s)
        let p = firstProbe(&m)
        _ = m.tick(now: p.at + .milliseconds(500))
        _ = m.tick(now: p.at + .seconds(1))
        #expect(m.status(of: p.target) == .suspect)
        #expect(m.awareness.score == 0)
    }

    @Test func localHealthScalesTheProbeTimeout() {
        var m = nodeWithPeers(5)
        for i in 0..<3 { _ = m.receive(Packet([.suspect(name: "me", incarnation: UInt64(i), from: "p1")]), from: addr(1001), now: .zero) }
        #expect(m.awareness.score == 3)
        let p = firstProbe(&m)
        // Timeout is now 4 × 500 ms: nothing indirect at 500 ms.
        let early = m.tick(now: p.at + .milliseconds(500)).messages
        #expect(early.allSatisfy { if case .pingReq = $0 { false } else { true } })
        let late = m.tick(now: p.at + .milliseconds(2000)).messages
        #expect(late.contains { if case .pingReq = $0 { true } else { false } })
    }

    @Test func buddySystemTellsASuspectItIsSuspected() {
        var m = nodeWithPeers(1)
        _ = m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        var t = Instant.zero
        var ping: Packet?
        while ping == nil, t < at(ms: 2000) {
            t = t + .milliseconds(10)
            ping = m.tick(now: t).sends.first { $0.packet.messages.contains { if case .ping = $0 { true } else { false } } }?.packet
        }
        #expect(ping?.messages.count ?? 0 >= 2)
        #expect(ping?.messages[1] == .suspect(name: "p1", incarnation: 1, from: "me"))
    }

    @Test func anIntermediaryRelaysTheAckOrSendsANack() {
        var m = nodeWithPeers(2)
        let out = m.receive(Packet([.pingReq(seq: 77, target: "p1", targetAddress: addr(1001), source: "p2", replyTo: addr(1002))]),
                            from: addr(1002), now: .zero)
        guard case .ping(let local, "p1", "me", _)? = out.sends.first(where: { $0.to == addr(1001) })?.packet.messages.first else {
            Issue.record("no relayed ping")
            return
        }
        let relayed = m.receive(Packet([.ack(seq: local, source: "p1")]), from: addr(1001), now: at(ms: 100))
        #expect(relayed.sends.first { $0.to == addr(1002) }?.packet.messages.first == .ack(seq: 77, source: "p1"))
        // Second request: no answer from the target, so a nack at `nackDelay`: on .lan half the
        // prober's 300 ms indirect timeout (150 ms), sooner than Lifeguard's 80% of the probe
        // timeout (240 ms), so that the nack's round trip has 150 ms (see NackMarginTests).
        #expect(m.settings.nackDelay == .milliseconds(150))
        #expect(MembershipSettings.memberlist.nackDelay == .milliseconds(400))
        _ = m.receive(Packet([.pingReq(seq: 78, target: "p1", targetAddress: addr(1001), source: "p2", replyTo: addr(1002))]),
                      from: addr(1002), now: at(ms: 1000))
        let before = m.tick(now: at(ms: 1140)).messages
        #expect(!before.contains(.nack(seq: 78, source: "me")))
        let after = m.tick(now: at(ms: 1150)).messages
        #expect(after.contains(.nack(seq: 78, source: "me")))
    }

    @Test func aPingForAnotherNameIsIgnored() {
        var m = nodeWithPeers(1)
        let out = m.receive(Packet([.ping(seq: 1, target: "someone-else", source: "p1", replyTo: addr(1001))]), from: addr(1001), now: .zero)
        #expect(out.messages.isEmpty)
        let ok = m.receive(Packet([.ping(seq: 2, target: "me", source: "p1", replyTo: addr(1001))]), from: addr(1001), now: .zero)
        #expect(ok.sends.first?.to == addr(1001))
        #expect(ok.sends.first?.packet.messages.first == .ack(seq: 2, source: "me"))
    }

    @Test func probesVisitEveryMemberOncePerRoundRobinPass() {
        var m = nodeWithPeers(6)
        var targets: [String] = []
        var t = Instant.zero
        while targets.count < 12 {
            t = t + .milliseconds(50)
            for message in m.tick(now: t).messages {
                if case .ping(let seq, let target, _, _) = message {
                    targets.append(target)
                    _ = m.receive(Packet([.ack(seq: seq, source: target)]), from: addr(1001), now: t)
                }
            }
        }
        #expect(Set(targets.prefix(6)).count == 6)
        #expect(Set(targets.suffix(6)).count == 6)
    }
}

@Suite("Lifeguard suspicion and dissemination")
struct SuspicionTests {
    @Test func theTimeoutShrinksWithIndependentConfirmations() {
        var s = Suspicion(incarnation: 1, from: "a", startedAt: .zero, minimum: .seconds(4), maximum: .seconds(24), expectedConfirmations: 2)
        #expect(s.timeout == .seconds(24))
        let selfConfirm = s.confirm(from: "a")
        #expect(selfConfirm == false, "the first suspector does not confirm itself")
        let b = s.confirm(from: "b")
        #expect(b)
        #expect(s.timeout > .seconds(4) && s.timeout < .seconds(24))
        let c = s.confirm(from: "c")
        #expect(c)
        #expect(s.timeout == .seconds(4))
        let d = s.confirm(from: "d")
        #expect(d == false, "confirmations beyond k change nothing")
    }

    /// `.memberlist` (no last word, suspicion ×4): `.lan` asks the member first, see DeclaredDeathTests.
    @Test func aSuspectIsDeclaredDeadAtTheMaximumTimeoutWithoutConfirmations() {
        var m = nodeWithPeers(9, settings: .memberlist)
        _ = m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        let bounds = m.settings.suspicionTimeouts(members: 10)
        #expect(bounds.min == .seconds(4) && bounds.max == .seconds(24))
        _ = m.tick(now: Instant.zero + .milliseconds(23_900))
        #expect(m.status(of: "p1") == .suspect)
        let d = m.tick(now: Instant.zero + .seconds(24))
        #expect(m.status(of: "p1") == .dead)
        #expect(d.changes.contains { $0.name == "p1" && $0.to == .dead })
        #expect(m.stats.deathsDeclared == 1)
    }

    @Test func confirmationsBringDeathSooner() {
        var m = nodeWithPeers(9)
        _ = m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        _ = m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p3"), .suspect(name: "p1", incarnation: 1, from: "p4")]),
                      from: addr(1003), now: .zero)
        _ = m.tick(now: Instant.zero + .seconds(4))
        #expect(m.status(of: "p1") == .dead)
    }

    @Test func retransmitsGrowWithLogNAndThenStop() {
        #expect(MembershipSettings.lan.retransmitLimit(members: 5) == 4)
        #expect(MembershipSettings.lan.retransmitLimit(members: 50) == 8)
        #expect(MembershipSettings.lan.retransmitLimit(members: 500) == 12)
        var q = BroadcastQueue(capacity: 10)
        q.enqueue(.suspect(name: "a", incarnation: 1, from: "b"))
        for _ in 0..<3 {
            let taken = q.take(budget: 1000, limit: 3)
            #expect(taken.count == 1)
        }
        let none = q.take(budget: 1000, limit: 3)
        #expect(none.isEmpty)
    }

    @Test func theBroadcastQueueKeepsOneUpdatePerMemberAndIsBounded() {
        var q = BroadcastQueue(capacity: 3)
        q.enqueue(.suspect(name: "a", incarnation: 1, from: "b"))
        q.enqueue(.dead(name: "a", incarnation: 1, from: "b"))
        #expect(q.count == 1)
        let taken = q.take(budget: 1000, limit: 5)
        #expect(taken == [.dead(name: "a", incarnation: 1, from: "b")])
        for n in ["b", "c", "d", "e"] { q.enqueue(.suspect(name: n, incarnation: 1, from: "x")) }
        #expect(q.count == 3)
        #expect(q.dropped >= 1)
        let tiny = q.take(budget: 10, limit: 5)
        #expect(tiny.isEmpty, "nothing fits a tiny budget")
    }

    /// The plain definition of the queue's order: sort everything on every take; give up after
    /// `maxSkips` updates that do not fit.
    struct ReferenceQueue {
        var items: [String: (message: MembershipMessage, transmits: Int, order: Int)] = [:]
        var order = 0
        let capacity: Int

        mutating func enqueue(_ m: MembershipMessage) {
            order += 1
            items[m.subject!] = (m, 0, order)
            if items.count > capacity {
                let worst = items.max { ($0.value.transmits, -$0.value.order) < ($1.value.transmits, -$1.value.order) }!
                items[worst.key] = nil
            }
        }

        mutating func take(budget: Int, limit: Int) -> [MembershipMessage] {
            let sorted = items.sorted { ($0.value.transmits, -$0.value.order) < ($1.value.transmits, -$1.value.order) }
            var out: [MembershipMessage] = []
            var used = 0
            var skipped = 0
            for (key, item) in sorted {
                guard used + item.message.encodedSize <= budget else {
                    skipped += 1
                    if skipped == BroadcastQueue.maxSkips { break }
                    continue
                }
                used += item.message.encodedSize
                out.append(item.message)
                if item.transmits + 1 >= limit { items[key] = nil } else { items[key]!.transmits += 1 }
            }
            return out
        }
    }

    @Test func theBroadcastQueueTakesInTheSameOrderAsAFullSort() {
        var rng = DeterministicRNG(seed: 11)
        var q = BroadcastQueue(capacity: 50)
        var reference = ReferenceQueue(capacity: 50)
        for _ in 0..<5_000 {
            if Int.random(in: 0..<3, using: &rng) > 0 {
                let name = String(repeating: "m", count: Int.random(in: 1...20, using: &rng)) + "\(Int.random(in: 0..<80, using: &rng))"
                let m: MembershipMessage = Bool.random(using: &rng)
                    ? .suspect(name: name, incarnation: 1, from: "x") : .dead(name: name, incarnation: 2, from: "yy")
                q.enqueue(m)
                reference.enqueue(m)
            } else {
                let budget = Int.random(in: 0..<400, using: &rng)
                #expect(q.take(budget: budget, limit: 6) == reference.take(budget: budget, limit: 6))
            }
            #expect(q.count == reference.items.count)
        }
    }

    @Test func packetsStayWithinTheirByteBudget() {
        var m = nodeWithPeers(0)
        for i in 0..<200 {
            _ = m.receive(Packet([alive("member-with-a-long-name-\(i)", UInt16(2000 + i), inc: 1,
                                        meta: MemberMetadata(version: 1, api: "127.0.0.1:\(9000 + i)", slots: 8, free: 8))]),
                          from: addr(2000), now: .zero)
        }
        var t = Instant.zero
        for _ in 0..<50 {
            t = t + .milliseconds(100)
            for s in m.tick(now: t).sends { #expect(s.packet.encodedSize <= m.settings.maxPacketBytes) }
        }
    }
}

@Suite("Push-pull anti-entropy")
struct AntiEntropyTests {
    @Test func aRemoteDeadCountsOnlyAsASuspicion() {
        var m = nodeWithPeers(2)
        let remote = PushPullState(join: false, source: "p2", entries: [
            .init(name: "p1", address: addr(1001), incarnation: 1, status: .dead, metadata: MemberMetadata()),
        ])
        _ = m.completePushPull(remote, now: .zero)
        #expect(m.status(of: "p1") == .suspect)
    }

    @Test func aRemoteLeftIsLeftAndARemoteViewOfMeDeadIsRefuted() {
        var m = nodeWithPeers(2)
        let remote = PushPullState(join: false, source: "p2", entries: [
            .init(name: "p1", address: addr(1001), incarnation: 1, status: .left, metadata: MemberMetadata()),
            .init(name: "me", address: addr(1000), incarnation: 5, status: .dead, metadata: MemberMetadata()),
            .init(name: "new", address: addr(1003), incarnation: 2, status: .alive, metadata: MemberMetadata()),
        ])
        let (reply, _) = m.servePushPull(remote, now: .zero)
        // The reply is our state after the merge: it carries our refutation, so that an
        // initiator that held us dead (the other side of a healed partition) takes it at once.
        #expect(reply.entries.contains { $0.name == "me" && $0.status == .alive && $0.incarnation == 6 })
        #expect(reply.entries.contains { $0.name == "p1" && $0.status == .left })
        #expect(m.status(of: "p1") == .left)
        #expect(m.incarnation == 6)
        #expect(m.status(of: "new") == .alive)
    }

    @Test func joinContactsSeedsAndALonelyNodeKeepsRetryingThem() {
        var m = nodeWithPeers(0, settings: .loopback)
        let first = m.join(seeds: [addr(2000), addr(1000)], now: .zero)
        #expect(first.pushPulls.map(\.1) == [addr(2000)], "never our own address")
        #expect(first.pushPulls.first?.0.join == true)
        _ = m.completePushPull(nil, now: at(ms: 10))
        var retries = 0
        var t = Instant.zero
        for _ in 0..<40 {
            t = t + .milliseconds(100)
            retries += m.tick(now: t).pushPulls.filter { $0.1 == addr(2000) }.count
        }
        #expect(retries >= 4)
    }

    @Test func deadMembersAreRecontactedSoAPartitionHeals() {
        var m = nodeWithPeers(3, settings: .loopback)
        _ = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        var contacted = false
        var t = Instant.zero
        // One dead of three: an attempt with probability 1/3 every 500 ms (Serf's rule).
        for _ in 0..<100 {
            t = t + .milliseconds(100)
            if m.tick(now: t).pushPulls.contains(where: { $0.1 == addr(1001) }) { contacted = true }
        }
        #expect(contacted)
    }

    /// Attempts towards dead members over `intervals` reconnect intervals, for a node that knows
    /// `alive` live and `dead` dead peers.
    func reconnectAttempts(alive: Int, dead: Int, intervals: Int) -> Int {
        // Nobody answers this node's probes: suspicions long enough that no peer dies of them,
        // so that the share of dead members stays as set up.
        var settings = MembershipSettings.loopback
        settings.suspicionMultiplier = 1_000
        var m = nodeWithPeers(alive + dead, settings: settings)
        for i in 1...dead {
            _ = m.receive(Packet([.dead(name: "p\(i)", incarnation: 1, from: "p\(dead + 1)")]), from: addr(2000), now: .zero)
        }
        var attempts = 0
        var t = Instant.zero
        for _ in 0..<intervals {
            t = t + m.settings.reconnectInterval
            attempts += m.tick(now: t).pushPulls.filter { m.status(of: "p\($0.1.port - 1000)") == .dead }.count
        }
        return attempts
    }

    @Test func reconnectionsScaleWithTheShareOfDeadMembers() {
        // One dead among 200: the node tries about once in 200 intervals, so that the cluster as
        // a whole makes about one attempt per dead member per interval.
        #expect(reconnectAttempts(alive: 199, dead: 1, intervals: 100) <= 5)
        // Half the table dead, as on one side of a partition: nearly every interval.
        #expect(reconnectAttempts(alive: 50, dead: 50, intervals: 100) >= 90)
    }

    @Test func aRestoredLargeTableDoesNotPushPullAtTheSmallClusterInterval() {
        let known = (0..<1_000).map {
            Member(name: "k\($0)", address: addr(UInt16(3000 + $0)), incarnation: 0, status: .alive,
                   metadata: MemberMetadata(), statusSince: .zero)
        }
        var m = Membership(settings: .lan, name: "me", address: addr(1000), metadata: MemberMetadata(),
                           seed: 5, now: .zero, knownMembers: known)
        // 1,001 members: memberlist's scaling gives 30 s × 6 = 180 s, staggered over the next 180 s.
        var pushPulls = 0
        for second in 1...170 { pushPulls += m.tick(now: .zero + .seconds(second)).pushPulls.count }
        #expect(pushPulls == 0)
        #expect(m.settings.pushPullInterval(members: 1_001) == .seconds(180))
    }
}

@Suite("Probe schedule")
struct ProbeScheduleTests {
    @Test func aMemberThatFlapsIsStillProbedOncePerPass() {
        var s = ProbeSchedule()
        var rng = DeterministicRNG(seed: 3)
        for n: ProbeSchedule.Slot in [1, 2, 3] { s.insert(n, using: &rng) }
        s.insert(1, using: &rng)
        s.insert(contentsOf: [2, 4], using: &rng)
        #expect(s.count == 4)
        var seen: [ProbeSchedule.Slot] = []
        for _ in 0..<4 { if let n = s.next(using: &rng, eligible: { _ in true }) { seen.append(n) } }
        #expect(Set(seen) == [1, 2, 3, 4])
    }
}
