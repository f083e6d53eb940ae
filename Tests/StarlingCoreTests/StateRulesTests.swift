import Testing
@testable import StarlingCore

@Suite("SWIM state rules")
struct StateRulesTests {
    @Test func aNewAliveMemberIsAddedAndGossiped() {
        var m = nodeWithPeers(0)
        let d = m.receive(Packet([alive("p1", 1001, inc: 1)]), from: addr(1001), now: .zero)
        #expect(m.status(of: "p1") == .alive)
        #expect(d.changes == [MemberChange(name: "p1", address: addr(1001), from: nil, to: .alive, incarnation: 1)])
        #expect(m.broadcasts.contains(subject: "p1"))
        #expect(m.activeCount == 1)
    }

    @Test func aliveWithALowerIncarnationIsIgnored() {
        var m = nodeWithPeers(1)
        _ = m.receive(Packet([alive("p1", 1001, inc: 5)]), from: addr(1001), now: .zero)
        _ = m.receive(Packet([alive("p1", 2001, inc: 4)]), from: addr(1001), now: .zero)
        #expect(m.members["p1"]?.incarnation == 5)
        #expect(m.members["p1"]?.address == addr(1001))
    }

    @Test func suspectOverridesAliveAtTheSameIncarnationButNotAfterARefutation() {
        var m = nodeWithPeers(3)
        let d = m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        #expect(m.status(of: "p1") == .suspect)
        #expect(d.changes.first?.to == .suspect)
        _ = m.receive(Packet([alive("p1", 1001, inc: 1)]), from: addr(1001), now: .zero)
        #expect(m.status(of: "p1") == .suspect, "alive at the same incarnation must not clear a suspicion")
        _ = m.receive(Packet([alive("p1", 1001, inc: 2)]), from: addr(1001), now: .zero)
        #expect(m.status(of: "p1") == .alive)
        #expect(m.suspicions["p1"] == nil)
        _ = m.receive(Packet([.suspect(name: "p1", incarnation: 1, from: "p3")]), from: addr(1003), now: .zero)
        #expect(m.status(of: "p1") == .alive, "a stale suspicion must not apply")
    }

    @Test func deadNeedsAHigherIncarnationToBeRevived() {
        var m = nodeWithPeers(2)
        _ = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        #expect(m.status(of: "p1") == .dead)
        // A replayed old alive cannot bring it back.
        _ = m.receive(Packet([alive("p1", 1001, inc: 1)]), from: addr(1001), now: .zero)
        #expect(m.status(of: "p1") == .dead)
        _ = m.receive(Packet([alive("p1", 1001, inc: 2)]), from: addr(1001), now: .zero)
        #expect(m.status(of: "p1") == .alive)
        #expect(m.members["p1"]?.incarnation == 2)
    }

    @Test func aDeadMessageFromTheMemberItselfMeansLeft() {
        var m = nodeWithPeers(2)
        let d = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p1")]), from: addr(1001), now: .zero)
        #expect(m.status(of: "p1") == .left)
        #expect(d.changes.first?.to == .left)
        #expect(m.activeCount == 1)
    }

    @Test func aLeaveUpgradesDeadToLeftAndNothingButANewIncarnationUndoesLeft() {
        var m = nodeWithPeers(3)
        _ = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        #expect(m.status(of: "p1") == .dead)
        let d = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p1")]), from: addr(1001), now: .zero)
        #expect(m.status(of: "p1") == .left)
        #expect(d.changes == [MemberChange(name: "p1", address: addr(1001), from: .dead, to: .left, incarnation: 1)])
        // Neither a death notice nor a suspicion nor an old alive moves a member that left.
        _ = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p3"), .suspect(name: "p1", incarnation: 1, from: "p3"),
                              alive("p1", 1001, inc: 1)]), from: addr(1003), now: .zero)
        #expect(m.status(of: "p1") == .left)
        // Rejoining after a leave takes a higher incarnation.
        _ = m.receive(Packet([alive("p1", 1001, inc: 2)]), from: addr(1001), now: .zero)
        #expect(m.status(of: "p1") == .alive)
        #expect(m.activeCount == 3)
    }

    @Test func suspicionAboutMyselfIsRefutedWithAHigherIncarnation() {
        var m = nodeWithPeers(2)
        _ = m.receive(Packet([.suspect(name: "me", incarnation: 0, from: "p1")]), from: addr(1001), now: .zero)
        #expect(m.incarnation == 1)
        #expect(m.stats.refutations == 1)
        #expect(m.awareness.score == 1, "Lifeguard: refuting raises the local health multiplier")
        let out = m.tick(now: at(ms: 5_000)).messages
        #expect(out.contains(alive("me", 1000, inc: 1, meta: m.metadata)))
        // A death notice about us is refuted too, above its incarnation.
        _ = m.receive(Packet([.dead(name: "me", incarnation: 7, from: "p2")]), from: addr(1002), now: .zero)
        #expect(m.incarnation == 8)
    }

    @Test func aStaleAliveAboutMyselfFromAPreviousLifeIsRefuted() {
        var m = nodeWithPeers(1)
        _ = m.receive(Packet([alive("me", 1000, inc: 3)]), from: addr(1001), now: .zero)
        #expect(m.incarnation == 4)
    }

    @Test func anOlderCopyOfMyOwnMetadataIsNotRefutedButANewerOrDifferentOneIs() {
        var m = nodeWithPeers(1)
        for free in [3, 2, 1] as [UInt32] { m.updateMetadata(now: .zero) { $0.free = free } }
        let mine = m.metadata
        #expect(mine.version >= 3)
        // A capacity advert overtaken by the next comes back: nothing to refute.
        var older = mine
        older.version -= 1
        older.free = 2
        _ = m.receive(Packet([alive("me", 1000, inc: m.incarnation, meta: older)]), from: addr(1001), now: .zero)
        #expect(m.stats.refutations == 0)
        // Other metadata at my own version, or a newer version, or another address: refuted.
        var forged = mine
        forged.free = 0
        _ = m.receive(Packet([alive("me", 1000, inc: m.incarnation, meta: forged)]), from: addr(1001), now: .zero)
        #expect(m.stats.refutations == 1)
        var newer = m.metadata
        newer.version += 5
        _ = m.receive(Packet([alive("me", 1000, inc: m.incarnation, meta: newer)]), from: addr(1001), now: .zero)
        #expect(m.stats.refutations == 2)
        _ = m.receive(Packet([alive("me", 1009, inc: m.incarnation, meta: m.metadata)]), from: addr(1001), now: .zero)
        #expect(m.stats.refutations == 3)
    }

    @Test func metadataVersionsOrderWithinAnIncarnation() {
        var m = nodeWithPeers(1)
        let v2 = MemberMetadata(version: 2, api: "a:1", slots: 4, free: 1)
        let v1 = MemberMetadata(version: 1, api: "a:1", slots: 4, free: 4)
        _ = m.receive(Packet([alive("p1", 1001, inc: 1, meta: v2)]), from: addr(1001), now: .zero)
        _ = m.receive(Packet([alive("p1", 1001, inc: 1, meta: v1)]), from: addr(1001), now: .zero)
        #expect(m.members["p1"]?.metadata == v2)
        // A new incarnation (a restart) carries the current metadata whatever its version.
        let fresh = MemberMetadata(version: 0, api: "a:2", slots: 2, free: 2)
        _ = m.receive(Packet([alive("p1", 1001, inc: 2, meta: fresh)]), from: addr(1001), now: .zero)
        #expect(m.members["p1"]?.metadata == fresh)
    }

    @Test func updatingMyMetadataBumpsItsVersionAndGossipsIt() {
        var m = nodeWithPeers(1)
        m.updateMetadata(now: .zero) { $0.free = 1 }
        #expect(m.metadata.version == 1)
        #expect(m.metadata.free == 1)
        #expect(m.broadcasts.contains(subject: "me"))
        #expect(m.incarnation == 0)
    }

    @Test func deadAndLeftMembersAreReapedAfterTheConfiguredTime() {
        var s = MembershipSettings.lan
        s.reapAfter = .seconds(60)
        var m = nodeWithPeers(2, settings: s)
        _ = m.receive(Packet([.dead(name: "p1", incarnation: 1, from: "p2")]), from: addr(1002), now: .zero)
        _ = m.tick(now: at(ms: 59_000))
        #expect(m.members["p1"] != nil)
        let d = m.tick(now: at(ms: 61_000))
        #expect(m.members["p1"] == nil)
        #expect(d.changes.contains { $0.name == "p1" && $0.to == nil })
        #expect(m.stats.reaped == 1)
    }

    @Test func leavingGossipsALeaveAndStopsProbingAndRefuting() {
        var m = nodeWithPeers(3)
        let d = m.leave(now: .zero)
        #expect(d.sends.count == 3)
        #expect(d.messages.contains(.dead(name: "me", incarnation: 0, from: "me")))
        #expect(m.members["me"]?.status == .left)
        _ = m.receive(Packet([.suspect(name: "me", incarnation: 0, from: "p1")]), from: addr(1001), now: .zero)
        #expect(m.incarnation == 0)
        let later = m.tick(now: at(ms: 5_000))
        #expect(!later.messages.contains { if case .ping = $0 { true } else { false } })
    }
}
