import Testing
@testable import StarlingCore

/// A node and its clock: every `tick()` moves time by `step`, runs the node's timers, and answers
/// the node's pings to the members in `answering` with their ack (a live member that hears it).
/// Members outside `answering` never answer: neither their pings nor the ping-reqs sent to them.
struct DrivenNode {
    var m: Membership
    var now = Instant.zero
    var step: Duration = .milliseconds(100)
    var answering: Set<String>

    init(_ m: Membership, answering: Set<String>) {
        self.m = m
        self.answering = answering
    }

    /// One step of time; returns what the node did, the answers to the acks included.
    mutating func tick() -> [MembershipDirective] {
        now = now + step
        var out = m.tick(now: now)
        for message in out.messages {
            if case .ping(let seq, let target, _, _) = message, answering.contains(target),
               let address = m.members[target]?.address {
                out += m.receive(Packet([.ack(seq: seq, source: target)]), from: address, now: now)
            }
        }
        return out
    }

    /// Ticks until the node starts its next probe; returns the probe's target.
    mutating func nextProbe() -> String {
        for _ in 0..<200 {
            for message in tick().messages {
                if case .ping(_, let target, "me", _) = message { return target }
            }
        }
        Issue.record("no probe started within 200 steps")
        return ""
    }
}

/// Peers p1 ... pN, all answering.
func everyPeer(_ n: Int) -> Set<String> { Set((1...n).map { "p\($0)" }) }

extension Array where Element == MembershipDirective {
    /// The messages sent to `address`.
    func messages(to address: NodeAddress) -> [MembershipMessage] {
        sends.filter { $0.to == address }.flatMap(\.packet.messages)
    }

    /// The packets to `address` that lead with the node's own `alive` (its direct answer to an
    /// accusation; gossip may carry the same refutation behind it), with their incarnations.
    func ownAlives(to address: NodeAddress) -> [UInt64] {
        sends.filter { $0.to == address }.compactMap {
            if case .alive(let a)? = $0.packet.messages.first, a.name == "me" { a.incarnation } else { nil }
        }
    }
}

/// Ticks a bare node every 10 ms until it starts a probe; returns the ping's target and the time.
func awaitFirstProbe(_ m: inout Membership) -> (target: String, at: Instant) {
    var t = Instant.zero
    for _ in 0..<300 {
        t = t + .milliseconds(10)
        for message in m.tick(now: t).messages {
            if case .ping(_, let target, "me", _) = message { return (target, t) }
        }
    }
    Issue.record("no probe started")
    return ("", t)
}

@Suite("Failure detection: telling the accused")
struct TellAccusedTests {
    @Test func aPingFromAMemberHeldDeadGetsTheAckAndTheAccusationOncePerInterval() {
        var m = nodeWithPeers(3)
        _ = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        #expect(m.status(of: "p1") == .dead)
        let accusation = MembershipMessage.dead(name: "p1", incarnation: 1, from: "me")
        let ping = { (seq: UInt32) in Packet([.ping(seq: seq, target: "me", source: "p1", replyTo: addr(1001))]) }

        let first = m.receive(ping(5), from: addr(1001), now: at(ms: 100))
        #expect(first.sends.count == 1)
        #expect(first.sends.first?.to == addr(1001))
        #expect(Array(first.messages.prefix(2)) == [.ack(seq: 5, source: "me"), accusation], "the accusation rides on the ack")
        #expect(m.stats.accusationsTold == 1)

        let again = m.receive(ping(6), from: addr(1001), now: at(ms: 1099))
        #expect(again.messages.first == .ack(seq: 6, source: "me"))
        #expect(!again.messages.contains(accusation), "not twice within a probe interval")

        let later = m.receive(ping(7), from: addr(1001), now: at(ms: 1100))
        #expect(Array(later.messages.prefix(2)) == [.ack(seq: 7, source: "me"), accusation], "again once the interval is over")
        #expect(m.stats.accusationsTold == 2)
        #expect(m.status(of: "p1") == .dead, "hearing from a dead member does not revive it")
    }

    @Test func theIntervalIsPerMemberWhateverTheMessage() {
        var m = nodeWithPeers(3)
        _ = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p3"), .dead(name: "p2", incarnation: 1, from: "p3")]),
                      from: addr(1003), now: .zero)
        _ = m.receive(Packet([.ping(seq: 5, target: "me", source: "p1", replyTo: addr(1001))]), from: addr(1001), now: at(ms: 100))
        // p1 again within the interval, through an ack and a ping-req: not told again.
        let ack = m.receive(Packet([.ack(seq: 999, source: "p1")]), from: addr(1001), now: at(ms: 200))
        let req = m.receive(Packet([.pingReq(seq: 9, target: "p3", targetAddress: addr(1003), source: "p1", replyTo: addr(1001))]),
                            from: addr(1001), now: at(ms: 300))
        #expect(!(ack + req).messages(to: addr(1001)).contains(.dead(name: "p1", incarnation: 1, from: "me")))
        // p2 has its own interval.
        let p2 = m.receive(Packet([.nack(seq: 999, source: "p2")]), from: addr(1002), now: at(ms: 300))
        #expect(p2.messages(to: addr(1002)).contains(.dead(name: "p2", incarnation: 1, from: "me")))
        #expect(m.stats.accusationsTold == 2)
    }

    @Test func aPingFromAMemberHeldSuspectGetsTheSuspicion() {
        var m = nodeWithPeers(3)
        _ = m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        let out = m.receive(Packet([.ping(seq: 5, target: "me", source: "p1", replyTo: addr(1001))]), from: addr(1001), now: at(ms: 10))
        #expect(Array(out.messages(to: addr(1001)).prefix(2)) == [.ack(seq: 5, source: "me"), .suspect(name: "p1", incarnation: 1, from: "me")])
    }

    @Test func aPingFromALiveMemberGetsOnlyTheAck() {
        var m = nodeWithPeers(3)
        let out = m.receive(Packet([.ping(seq: 5, target: "me", source: "p1", replyTo: addr(1001))]), from: addr(1001), now: at(ms: 10))
        #expect(out.sends.count == 1)
        #expect(out.messages.first == .ack(seq: 5, source: "me"))
        #expect(!out.messages.contains { if case .dead(_, _, "me") = $0 { true } else if case .suspect(_, _, "me") = $0 { true } else { false } })
        #expect(m.stats.accusationsTold == 0)
    }

    /// An ack, a nack or a ping-req is not answered: the accusation goes in a packet of its own
    /// to the address the member table holds for the sender.
    @Test("an ack, nack or ping-req from a member held dead is answered with the accusation", arguments: ["ack", "nack", "ping-req"])
    func otherContactFromTheDeadIsToldTheAccusation(kind: String) {
        for preset in ["lan", "memberlist"] {
            var m = nodeWithPeers(3, settings: MembershipSettings.preset(named: preset)!)
            _ = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
            let message: MembershipMessage = switch kind {
            case "ack": .ack(seq: 999, source: "p1")
            case "nack": .nack(seq: 999, source: "p1")
            default: .pingReq(seq: 9, target: "p3", targetAddress: addr(1003), source: "p1", replyTo: addr(1001))
            }
            // Through a NAT or a relay: the packet's source is not the member's address.
            let out = m.receive(Packet([message]), from: addr(1999), now: at(ms: 10))
            let told = out.messages(to: addr(1001)).filter { $0 == .dead(name: "p1", incarnation: 1, from: "me") }
            #expect(told.count == (preset == "lan" ? 1 : 0), "\(preset)")
            #expect(out.messages(to: addr(1999)).isEmpty)
            #expect(m.stats.accusationsTold == (preset == "lan" ? 1 : 0))
        }
    }

    @Test func aNodeToldItIsDeadRefutesAndAnswersTheAccuserWithItsAlive() {
        var m = nodeWithPeers(3)
        #expect(m.incarnation == 0)
        // The accuser named in the message is p1, the packet comes from p2's address (p2 relays
        // p1's accusation): the answer goes to the accuser, at its address in our table.
        let out = m.receive(Packet([.dead(name: "me", incarnation: 0, from: "p1")]), from: addr(1002), now: at(ms: 10))
        #expect(m.incarnation == 1)
        #expect(out.ownAlives(to: addr(1001)) == [1])
        #expect(out.ownAlives(to: addr(1002)).isEmpty)
    }

    /// A captured packet that accuses us, replayed within the replay window (no key needed)
    /// from a forged UDP source: answering the packet's source made us a reflector, sending our
    /// alive and a packet's worth of gossip to any address, once per copy.
    @Test func theAnswerNeverGoesToAPacketSourceOutsideTheTable() {
        var m = nodeWithPeers(3)
        let victim = NodeAddress(host: "192.0.2.7", port: 53)
        for copy in 0..<5 {
            let out = m.receive(Packet([.suspect(name: "me", incarnation: 0, from: "p1")]), from: victim, now: at(ms: 10 + Int64(copy)))
            #expect(out.messages(to: victim).isEmpty, "copy \(copy)")
        }
        // An accuser we do not know gets no answer either: its refutation goes by gossip.
        let unknown = m.receive(Packet([.dead(name: "me", incarnation: 1, from: "stranger")]), from: victim, now: at(ms: 20))
        #expect(unknown.messages(to: victim).isEmpty)
        #expect(m.incarnation == 2, "it still refutes")
    }

    @Test func twoAccusationsInOnePacketGetOneAnswer() {
        var m = nodeWithPeers(3)
        let out = m.receive(Packet([.dead(name: "me", incarnation: 0, from: "p1"), .suspect(name: "me", incarnation: 0, from: "p2")]),
                            from: addr(1002), now: at(ms: 10))
        #expect(m.incarnation == 1, "the suspicion at 0 is stale once the death at 0 was refuted")
        #expect(out.ownAlives(to: addr(1001)) == [1])
        #expect(out.ownAlives(to: addr(1002)).isEmpty)
    }

    /// Acks, nacks or ping-reqs under the names of many members we hold dead, in one packet
    /// (a key holder's forgery): one accusation goes out, not one packet per name.
    @Test func aPacketNamingManyAccusedMembersDrawsOneTell() {
        var m = nodeWithPeers(6)
        _ = m.receive(Packet((1...6).map { .dead(name: "p\($0)", incarnation: 1, from: "stranger") }), from: addr(1999), now: .zero)
        let forged = Packet((1...6).map { .ack(seq: 999, source: "p\($0)") })
        let out = m.receive(forged, from: addr(1999), now: at(ms: 10))
        #expect(out.sends.count == 1)
        #expect(m.stats.accusationsTold == 1)
        // Pings: each is acked (as before), but only one ack carries an accusation.
        let pings = Packet((1...6).map { .ping(seq: UInt32($0), target: "me", source: "p\($0)", replyTo: addr(1999)) })
        let acks = m.receive(pings, from: addr(1999), now: at(ms: 20))
        #expect(acks.messages.filter { if case .dead(_, _, "me") = $0 { true } else { false } }.count == 1)
        #expect(m.stats.accusationsTold == 2, "p1 was told a moment ago; one other member is told now")
    }

    @Test func aStaleAccusationIsAnsweredButDoesNotRaiseTheIncarnation() {
        var m = nodeWithPeers(3)
        _ = m.receive(Packet([.suspect(name: "me", incarnation: 0, from: "p1")]), from: addr(1001), now: at(ms: 10))
        _ = m.receive(Packet([.dead(name: "me", incarnation: 1, from: "p1")]), from: addr(1001), now: at(ms: 20))
        #expect(m.incarnation == 2)
        // p3 missed both refutations: it still holds us dead at 0.
        let out = m.receive(Packet([.dead(name: "me", incarnation: 0, from: "p3")]), from: addr(1003), now: at(ms: 30))
        #expect(m.incarnation == 2)
        #expect(out.ownAlives(to: addr(1003)) == [2], "the stale accuser learns the current incarnation at once")
        let suspected = m.receive(Packet([.suspect(name: "me", incarnation: 1, from: "p3")]), from: addr(1003), now: at(ms: 40))
        #expect(m.incarnation == 2)
        #expect(suspected.ownAlives(to: addr(1003)) == [2])
    }

    @Test func aLeaveEchoAndALeavingNodeAreNotAnswered() {
        var m = nodeWithPeers(3)
        // Our own leave, gossiped back to us, is no accusation.
        let echo = m.receive(Packet([.dead(name: "me", incarnation: 0, from: "me")]), from: addr(1001), now: at(ms: 10))
        #expect(echo.ownAlives(to: addr(1001)).isEmpty)
        _ = m.leave(now: at(ms: 20))
        let out = m.receive(Packet([.dead(name: "me", incarnation: 0, from: "p1")]), from: addr(1001), now: at(ms: 30))
        #expect(out.ownAlives(to: addr(1001)).isEmpty, "a leaving node does not come back to life")
    }

    @Test func withoutTellAccusedARefutationGoesOnlyByGossip() {
        var m = nodeWithPeers(3, settings: .memberlist)
        let out = m.receive(Packet([.dead(name: "me", incarnation: 0, from: "p1")]), from: addr(1002), now: at(ms: 10))
        #expect(m.incarnation == 1, "it still refutes")
        #expect(out.sends.isEmpty, "but sends nothing straight back")
        let ping = m.receive(Packet([.ping(seq: 5, target: "me", source: "p1", replyTo: addr(1001))]), from: addr(1001), now: at(ms: 20))
        #expect(ping.messages.first == .ack(seq: 5, source: "me"))
    }
}

extension MembershipSettings {
    /// `.lan` with the suspicion multiplier at 3 (a 3 s minimum at N = 10), so that these tests'
    /// arithmetic does not follow the preset's tuning; they test the mechanisms.
    static var lanAtMultiplier3: MembershipSettings {
        var s = MembershipSettings.lan
        s.suspicionMultiplier = 3
        return s
    }
}

@Suite("Failure detection: declared deaths and the last word")
struct DeclaredDeathTests {
    /// A node among 9 peers that answer, but p1 that never does; p2, p3 and p4 suspect p1 at
    /// time zero: K = 2 is met, so the suspicion is confirmed and ends at its minimum (3 s on
    /// `.lan` at N = 10).
    func confirmedSuspicionOfP1(_ settings: MembershipSettings) -> DrivenNode {
        var d = DrivenNode(nodeWithPeers(9, settings: settings), answering: everyPeer(9).subtracting(["p1"]))
        _ = d.m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2"), .suspect(name: "p1", incarnation: 1, from: "p3"),
                                .suspect(name: "p1", incarnation: 1, from: "p4")]), from: addr(1002), now: .zero)
        #expect(d.m.suspicions["p1"]?.isConfirmed == true)
        #expect(d.m.suspicions["p1"]?.deadline == .zero + .seconds(3))
        return d
    }

    /// Runs `d` until `end`; returns the times at which the node told p1 it is dead (each one
    /// a count in `accusationsTold`, and each with the accusation in a packet to p1).
    func tells(_ d: inout DrivenNode, until end: Instant, whenever: (Instant, inout DrivenNode) -> Void = { _, _ in }) -> [Instant] {
        var times: [Instant] = []
        while d.now < end {
            let before = d.m.stats.accusationsTold
            let out = d.tick()
            whenever(d.now, &d)
            if d.m.stats.accusationsTold > before {
                #expect(d.m.stats.accusationsTold == before + 1)
                #expect(out.messages(to: addr(1001)).contains(.dead(name: "p1", incarnation: 1, from: "me")), "at \(d.now)")
                times.append(d.now)
            }
        }
        return times
    }

    @Test func aDeclaredDeathIsRetoldWithDoublingGapsForGossipToTheDead() {
        var s = MembershipSettings.lanAtMultiplier3
        s.gossipToTheDead = .seconds(20)
        var d = confirmedSuspicionOfP1(s)
        let times = tells(&d, until: .zero + .seconds(40))
        #expect(d.m.stats.deathsDeclared == 1)
        #expect(d.m.status(of: "p1") == .dead)
        // Declared at 3 s and told at once, then after gaps of 1, 2, 4 and 8 s while under 20 s
        // since (the next, at 3 + 31 s, is past it).
        #expect(times == [3, 4, 6, 10, 18].map { Instant.zero + .seconds($0) })
        #expect(d.m.declaredDeaths.isEmpty)
    }

    @Test func theRetellingStopsWhenTheMemberIsAliveAgain() {
        var d = confirmedSuspicionOfP1(.lanAtMultiplier3)
        let times = tells(&d, until: .zero + .seconds(20)) { now, d in
            if now == .zero + .milliseconds(5_500) {
                _ = d.m.receive(Packet([alive("p1", 1001, inc: 2)]), from: addr(1001), now: now)
                d.answering.insert("p1")
            }
        }
        #expect(times == [3, 4].map { Instant.zero + .seconds($0) }, "the retell due at 6 s is not sent")
        #expect(d.m.status(of: "p1") == .alive)
        #expect(d.m.declaredDeaths.isEmpty && d.m.told.isEmpty)
    }

    @Test func aDeathLearntFromOthersIsNotRetold() {
        var d = DrivenNode(nodeWithPeers(9, settings: .lanAtMultiplier3), answering: everyPeer(9).subtracting(["p1"]))
        _ = d.m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        let times = tells(&d, until: .zero + .seconds(10))
        #expect(times.isEmpty, "only the member that declared the death retells it")
    }

    @Test func withoutTellAccusedADeclaredDeathIsNotTold() {
        var d = DrivenNode(nodeWithPeers(9, settings: .memberlist), answering: everyPeer(9).subtracting(["p1"]))
        _ = d.m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2"), .suspect(name: "p1", incarnation: 1, from: "p3"),
                                .suspect(name: "p1", incarnation: 1, from: "p4")]), from: addr(1002), now: .zero)
        var late: [MembershipMessage] = []
        while d.now < .zero + .seconds(20) {
            let out = d.tick()
            // After the gossip of the death has run out (8 transmissions), nothing reaches p1.
            if d.now > .zero + .seconds(8) { late += out.messages(to: addr(1001)) }
        }
        #expect(d.m.status(of: "p1") == .dead)
        #expect(d.m.stats.accusationsTold == 0)
        #expect(late.isEmpty)
        #expect(d.m.declaredDeaths.isEmpty)
    }

    @Test func aConfirmedSuspicionIsDeclaredAtItsDeadlineWithoutALastWord() {
        var d = confirmedSuspicionOfP1(.lanAtMultiplier3)
        while d.now < .zero + .milliseconds(2_900) { _ = d.tick() }
        #expect(d.m.status(of: "p1") == .suspect)
        #expect(d.m.stats.accusationsTold == 0)
        let out = d.tick()
        #expect(d.now == .zero + .seconds(3))
        #expect(d.m.status(of: "p1") == .dead)
        #expect(out.changes.contains { $0.name == "p1" && $0.to == .dead })
        #expect(!out.messages(to: addr(1001)).contains(.suspect(name: "p1", incarnation: 1, from: "me")))
    }

    /// p2 suspects p1, nobody confirms (the node's own failed probes of p1 add at most one of
    /// the two). Runs until the suspicion's deadline; returns it and the directives of its tick.
    func unconfirmedSuspicionComesDue(_ settings: MembershipSettings) -> (DrivenNode, due: Instant, out: [MembershipDirective]) {
        var d = DrivenNode(nodeWithPeers(9, settings: settings), answering: everyPeer(9).subtracting(["p1"]))
        _ = d.m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        for _ in 0..<1_000 {
            guard let s = d.m.suspicions["p1"] else { break }
            #expect(!s.isConfirmed)
            #expect(!s.lastWordAsked)
            let due = s.deadline
            let told = d.m.stats.accusationsTold
            let out = d.tick()
            #expect(d.m.stats.accusationsTold == told || d.now >= due, "nothing told p1 before its suspicion came due")
            if d.now >= due { return (d, due, out) }
        }
        Issue.record("the suspicion never came due")
        return (d, d.now, [])
    }

    @Test func anUnconfirmedSuspicionAsksTheMemberAndDeclaresOneIntervalLater() {
        var (d, due, out) = unconfirmedSuspicionComesDue(.lanAtMultiplier3)
        #expect(due > .zero + .seconds(3), "unconfirmed: longer than the minimum")
        #expect(d.m.status(of: "p1") == .suspect, "not declared yet")
        #expect(d.m.suspicions["p1"]?.lastWordAsked == true)
        #expect(d.m.stats.accusationsTold == 1)
        #expect(out.sends.contains { $0.to == addr(1001) && $0.packet.messages.first == .suspect(name: "p1", incarnation: 1, from: "me") },
                "the last word: the suspicion sent to the member itself, in a packet of its own")
        #expect(d.m.stats.deathsDeclared == 0)
        while d.now + d.step < due + .seconds(1) { _ = d.tick() }
        #expect(d.m.status(of: "p1") == .suspect, "still waiting one interval after the last word")
        _ = d.tick()
        #expect(d.m.status(of: "p1") == .dead)
        #expect(d.m.stats.deathsDeclared == 1)
    }

    @Test func aMemberThatRefutesAfterTheLastWordIsNotDeclared() {
        var (d, due, _) = unconfirmedSuspicionComesDue(.lanAtMultiplier3)
        #expect(d.m.suspicions["p1"]?.lastWordAsked == true)
        // p1 heard the last word and answers with its alive straight back.
        _ = d.m.receive(Packet([alive("p1", 1001, inc: 2)]), from: addr(1001), now: d.now + .milliseconds(50))
        d.answering.insert("p1")
        while d.now < due + .seconds(5) { _ = d.tick() }
        #expect(d.m.status(of: "p1") == .alive)
        #expect(d.m.stats.deathsDeclared == 0)
        #expect(d.m.suspicions["p1"] == nil)
    }

    /// At N = 3 memberlist's scaling expects no confirmations (K = 0): every suspicion counts as
    /// confirmed, ends at its minimum, and is declared without a last word.
    @Test func withKZeroASuspicionIsDeclaredAtItsMinimumWithoutALastWord() {
        var d = DrivenNode(nodeWithPeers(2, settings: .lanAtMultiplier3), answering: ["p2"])
        _ = d.m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        #expect(d.m.suspicions["p1"]?.expectedConfirmations == 0)
        #expect(d.m.suspicions["p1"]?.deadline == .zero + .seconds(3))
        while d.now < .zero + .seconds(3) { _ = d.tick() }
        #expect(d.m.status(of: "p1") == .dead)
        #expect(d.m.stats.accusationsTold == 1, "only the tell of the declared death")
    }

    @Test func withoutTellAccusedAnUnconfirmedSuspicionIsDeclaredAtItsDeadline() {
        let (d, _, out) = unconfirmedSuspicionComesDue(.memberlist)
        #expect(d.m.status(of: "p1") == .dead)
        #expect(out.changes.contains { $0.name == "p1" && $0.to == .dead })
        #expect(d.m.stats.accusationsTold == 0)
    }
}

@Suite("Failure detection: the indirect probe timeout")
struct IndirectProbeTimeoutTests {
    func pingReqs(_ out: [MembershipDirective]) -> Int {
        out.messages.filter { if case .pingReq = $0 { true } else { false } }.count
    }

    @Test func aProbeFailsAtTheIndirectTimeoutNotAtTheEndOfTheInterval() {
        var m = nodeWithPeers(5)
        let p = awaitFirstProbe(&m)
        #expect(pingReqs(m.tick(now: p.at + .milliseconds(290))) == 0)
        #expect(pingReqs(m.tick(now: p.at + .milliseconds(300))) == 3, "the direct timeout, 300 ms on .lan")
        _ = m.tick(now: p.at + .milliseconds(590))
        #expect(m.status(of: p.target) == .alive)
        let failed = m.tick(now: p.at + .milliseconds(600))
        #expect(m.status(of: p.target) == .suspect, "300 ms direct + 300 ms indirect")
        #expect(failed.changes.contains { $0.name == p.target && $0.to == .suspect })
    }

    @Test func withoutAnIndirectTimeoutTheProbeFailsAtTheEndOfTheInterval() {
        var s = MembershipSettings.lan
        s.indirectProbeTimeout = nil
        var m = nodeWithPeers(5, settings: s)
        let p = awaitFirstProbe(&m)
        #expect(pingReqs(m.tick(now: p.at + .milliseconds(300))) == 3)
        _ = m.tick(now: p.at + .milliseconds(990))
        #expect(m.status(of: p.target) == .alive)
        _ = m.tick(now: p.at + .seconds(1))
        #expect(m.status(of: p.target) == .suspect)
    }

    @Test func anIndirectTimeoutBeyondTheIntervalEndsWithTheInterval() {
        var s = MembershipSettings.lan
        s.indirectProbeTimeout = .seconds(5)
        var m = nodeWithPeers(5, settings: s)
        let p = awaitFirstProbe(&m)
        _ = m.tick(now: p.at + .milliseconds(990))
        #expect(m.status(of: p.target) == .alive)
        _ = m.tick(now: p.at + .seconds(1))
        #expect(m.status(of: p.target) == .suspect)
    }

    @Test func theIndirectTimeoutIsScaledByLocalHealth() {
        var m = nodeWithPeers(5)
        _ = m.receive(Packet([.suspect(name: "me", incarnation: 0, from: "p1")]), from: addr(1001), now: .zero)
        #expect(m.awareness.score == 1)
        let p = awaitFirstProbe(&m)
        // Both timeouts doubled: ping-reqs at 600 ms, failure at 1,200 ms (the interval is 2 s).
        #expect(pingReqs(m.tick(now: p.at + .milliseconds(590))) == 0)
        #expect(pingReqs(m.tick(now: p.at + .milliseconds(600))) == 3)
        _ = m.tick(now: p.at + .milliseconds(1_190))
        #expect(m.status(of: p.target) == .alive)
        _ = m.tick(now: p.at + .milliseconds(1_200))
        #expect(m.status(of: p.target) == .suspect)
    }
}

@Suite("Failure detection: suspects first")
struct SuspectsFirstTests {
    @Test func aMemberOthersBeganToSuspectIsProbedNext() {
        var d = DrivenNode(nodeWithPeers(8), answering: everyPeer(8))
        let first = d.nextProbe()
        // A member other than the one just probed (p1 or p2), suspected by p8.
        let suspect = first == "p1" ? "p2" : "p1"
        _ = d.m.receive(Packet([.suspect(name: suspect, incarnation: 1, from: "p8")]), from: addr(1008), now: d.now)
        #expect(d.m.urgentProbes == [suspect])
        #expect(d.nextProbe() == suspect)
        #expect(d.m.stats.urgentProbes == 1)
        #expect(d.m.urgentProbes.isEmpty)
    }

    @Test func neverTwoUrgentProbesInARowAndTheQueueKeepsTheNewestFour() {
        var d = DrivenNode(nodeWithPeers(8), answering: everyPeer(8))
        _ = d.nextProbe()
        for i in 1...6 {
            _ = d.m.receive(Packet([.suspect(name: "p\(i)", incarnation: 1, from: "p8")]), from: addr(1008), now: d.now)
        }
        #expect(d.m.urgentProbes == ["p3", "p4", "p5", "p6"], "at most 4, the oldest dropped")
        var urgent: [(probe: Int, target: String)] = []
        for k in 0..<8 {
            let before = d.m.stats.urgentProbes
            let target = d.nextProbe()
            if d.m.stats.urgentProbes > before { urgent.append((k, target)) }
        }
        #expect(urgent.map(\.target) == ["p3", "p4", "p5", "p6"])
        #expect(urgent.map(\.probe) == [0, 2, 4, 6], "every other probe: the round robin goes on in between")
    }

    /// A member suspected over and over (a slow node) is probed out of turn at most once per
    /// ten probe intervals, so that it cannot hold back the round robin.
    @Test func aMemberSuspectedAgainWithinTheCooldownIsNotProbedOutOfTurnAgain() {
        var d = DrivenNode(nodeWithPeers(8), answering: everyPeer(8))
        let first = d.nextProbe()
        let suspect = first == "p1" ? "p2" : "p1"
        let port: UInt16 = suspect == "p1" ? 1001 : 1002
        _ = d.m.receive(Packet([.suspect(name: suspect, incarnation: 1, from: "p8")]), from: addr(1008), now: d.now)
        #expect(d.nextProbe() == suspect)
        // It refutes, and is suspected again three intervals later: no urgent probe.
        _ = d.m.receive(Packet([alive(suspect, port, inc: 2)]), from: addr(1008), now: d.now)
        let urgentAt = d.now
        while d.now < urgentAt + .seconds(3) { _ = d.tick() }
        _ = d.m.receive(Packet([.suspect(name: suspect, incarnation: 2, from: "p8")]), from: addr(1008), now: d.now)
        #expect(d.m.urgentProbes.isEmpty, "within the cooldown")
        // Alive again, and suspected once more after the cooldown: probed out of turn again.
        _ = d.m.receive(Packet([alive(suspect, port, inc: 3)]), from: addr(1008), now: d.now)
        while d.now < urgentAt + Membership.urgentProbeCooldown(d.m.settings) { _ = d.tick() }
        _ = d.m.receive(Packet([.suspect(name: suspect, incarnation: 3, from: "p8")]), from: addr(1008), now: d.now)
        #expect(d.m.urgentProbes == [suspect])
    }

    @Test func aSuspectThatRefutedBeforeItsTurnIsNotProbedUrgently() {
        var d = DrivenNode(nodeWithPeers(8), answering: everyPeer(8))
        let first = d.nextProbe()
        let suspect = first == "p3" ? "p4" : "p3"
        _ = d.m.receive(Packet([.suspect(name: suspect, incarnation: 1, from: "p8")]), from: addr(1008), now: d.now)
        _ = d.m.receive(Packet([alive(suspect, suspect == "p3" ? 1003 : 1004, inc: 2)]), from: addr(1008), now: d.now)
        _ = d.nextProbe()
        #expect(d.m.stats.urgentProbes == 0)
    }

    @Test func ourOwnSuspicionDoesNotQueueAnUrgentProbe() {
        var d = DrivenNode(nodeWithPeers(8), answering: [])
        let target = d.nextProbe()
        while d.m.status(of: target) == .alive, d.now < .zero + .seconds(5) { _ = d.tick() }
        #expect(d.m.status(of: target) == .suspect)
        #expect(d.m.urgentProbes.isEmpty)
    }

    @Test func roundRobinOrderQueuesNothing() {
        var s = MembershipSettings.lan
        s.probeOrder = .roundRobin
        var d = DrivenNode(nodeWithPeers(8, settings: s), answering: everyPeer(8))
        _ = d.nextProbe()
        for i in 1...6 {
            _ = d.m.receive(Packet([.suspect(name: "p\(i)", incarnation: 1, from: "p8")]), from: addr(1008), now: d.now)
        }
        #expect(d.m.urgentProbes.isEmpty)
        for _ in 0..<8 { _ = d.nextProbe() }
        #expect(d.m.stats.urgentProbes == 0)
    }
}

@Suite("Failure detection: Lifeguard's K")
struct ConfirmationScalingTests {
    func expected(_ scaling: MembershipSettings.ConfirmationScaling, k: Int = 2, lifeguard: Bool = true, _ sizes: [Int]) -> [Int] {
        var s = MembershipSettings.lan
        s.suspicionConfirmations = k
        s.confirmationScaling = scaling
        s.lifeguard = lifeguard
        return sizes.map { s.expectedConfirmations(members: $0) }
    }

    @Test func memberlistScalingIsKOrNothing() {
        #expect(expected(.memberlist, [1, 2, 3, 4, 5, 6, 7, 8, 1_000, 20_000]) == [0, 0, 0, 2, 2, 2, 2, 2, 2, 2])
        #expect(expected(.memberlist, k: 3, [2, 3, 4, 5, 6, 7, 8, 1_000]) == [0, 0, 0, 3, 3, 3, 3, 3])
    }

    @Test func fractionScalingTakesAShareOfTheMembersThatCouldConfirm() {
        #expect(expected(.fraction(0.5), [1, 2, 3, 4, 5, 6, 7, 8, 1_000]) == [0, 0, 0, 1, 1, 2, 2, 2, 2])
        #expect(expected(.fraction(1), k: 3, [2, 3, 4, 5, 6, 7, 8, 1_000]) == [0, 1, 2, 3, 3, 3, 3, 3])
        #expect(expected(.fraction(0.25), k: 4, [2, 5, 6, 9, 10, 18, 1_000]) == [0, 0, 1, 1, 2, 4, 4])
    }

    @Test func withoutLifeguardOrWithKZeroNothingIsExpected() {
        #expect(expected(.memberlist, lifeguard: false, [4, 8, 1_000]) == [0, 0, 0])
        #expect(expected(.fraction(1), k: 0, [4, 8, 1_000]) == [0, 0, 0])
    }

    @Test func theDefaultKIsTheOldMultiplierRule() {
        // Before the settings, K was `suspicionMultiplier − 2` = 2 on the memberlist figures.
        #expect(MembershipSettings.memberlist.suspicionConfirmations == Int(MembershipSettings.memberlist.suspicionMultiplier) - 2)
        #expect(MembershipSettings.lan.suspicionConfirmations == 2)
    }

    @Test func aSuspicionExpectsTheScaledK() {
        for (scaling, n, k) in [(MembershipSettings.ConfirmationScaling.memberlist, 3, 0), (.memberlist, 4, 2),
                                (.fraction(0.5), 4, 1), (.fraction(0.5), 6, 2)] {
            var s = MembershipSettings.lan
            s.confirmationScaling = scaling
            var m = nodeWithPeers(n - 1, settings: s)
            _ = m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
            #expect(m.suspicions["p1"]?.expectedConfirmations == k, "\(scaling) at N = \(n)")
        }
    }
}

@Suite("Failure detection: presets")
struct PresetTests {
    @Test func presetsAreNamedAndTheMemberlistPresetIsTheOldLan() {
        #expect(MembershipSettings.presets.map(\.name) == ["lan", "loopback", "memberlist"])
        #expect(MembershipSettings.preset(named: "lan") == .lan)
        #expect(MembershipSettings.preset(named: "memberlist") == .memberlist)
        #expect(MembershipSettings.preset(named: "wan") == nil)
        let old = MembershipSettings.memberlist
        #expect(old.probeTimeout == .milliseconds(500) && old.suspicionMultiplier == 4)
        #expect(old.indirectProbeTimeout == nil && old.probeOrder == .roundRobin && !old.tellAccused)
        let new = MembershipSettings.lan
        #expect(new.probeTimeout == .milliseconds(300) && new.indirectProbeTimeout == .milliseconds(300))
        #expect(new.probeOrder == .suspectsFirst && new.tellAccused && new.suspicionMultiplier == 2.5)
        for (name, s) in MembershipSettings.presets {
            #expect(s.probeTimeout < s.probeInterval, "\(name)")
            if let t = s.indirectProbeTimeout { #expect(s.probeTimeout + t <= s.probeInterval, "\(name): the probe fails within its interval") }
        }
    }
}
