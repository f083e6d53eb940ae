import Foundation
import StarlingCore
import Testing

/// A handoff whose fence fails (the old replica set cannot be reached to promise the next
/// owner) must not leave the session unserved. Found by `starling-sim --scenario
/// session-partition --nodes 20 --seed 10`: the old owner had promised the next owner the new
/// epoch and stepped down; the replicas, seeing the old owner alive, refused the next owner's
/// takeover (`ownedBy`); the old owner, seeing the next owner alive, never took the session back.
@Suite struct SessionHandoffAbortTests {
    /// A node joins, and the first handoff to a node outside the session's replica set (the
    /// joiner) is stopped before its transfers are delivered: (session, old owner, next owner).
    static func stoppedBeforeItsTransfers(_ mesh: inout SessionMesh) throws -> (String, PeerName, PeerName) {
        try mesh.join("n5")
        for _ in 0..<3 { mesh.tickWithoutRunning() }
        var found: (sid: String, old: PeerName, next: PeerName)?
        let stopped = mesh.runUntilRequest { m, from, to in
            if found == nil, case .handoff(let image, _, _) = m, !image.replicas.contains(to) { found = (image.id, from, to) }
            if let found, case .transfer(let s, _, _) = m, s == found.sid { return true }
            return false
        }
        return try #require(stopped ? found : nil, "no handoff outside the replica set")
    }

    @Test func aHandoffWhoseFenceFailsLeavesTheSessionServedByOneNode() throws {
        var mesh = try SessionHandoffTests.running()
        let (sid, old, next) = try Self.stoppedBeforeItsTransfers(&mesh)
        let image = try #require(mesh.nodes[old]!.image(of: sid))
        let others = image.replicas.filter { $0 != old }
        #expect(!others.contains(next))
        // The transfers find the rest of the old set unreachable (cut off, not dead: membership
        // still shows them alive), so the old owner cannot fence the handoff and gives it up.
        for name in others { mesh.down.insert(name) }
        mesh.run()
        #expect(mesh.servers(of: sid).isEmpty, "old \(old) next \(next) set \(image.replicas)")
        for name in others { mesh.down.remove(name) }
        mesh.settle(seconds: 20)
        SessionHandoffTests.servedOnceWithItsLastState(&mesh, sid, next: "5", after: "the failed handoff", chainsBefore: false)
    }

    /// How the next owner's first takeover goes: through; with the old set cut off (answered
    /// nil at once); with its answers lost for two ticks (the offer must outlive the takeover:
    /// review4 F2); the next owner restarted from its store before it (the offer was in
    /// memory only: review4 F7); or a member of the old set restarted from its store before it
    /// (its fence promise was in memory only, so it refused the next owner, outside the set it
    /// holds, and the next owner's majority, which needs every other member of the old set,
    /// could not form).
    enum FirstTry: CaseIterable { case through, cutOff, answersLost, restarted, memberRestarted }

    /// The same give-up reached through lost answers (review of the compaction merge, finding
    /// 5): the old set's members did promise the next owner, but their answers to the transfers
    /// were lost, so the old owner gave the handoff up. Its retake then hears "owned by the next
    /// owner" from those members and defers; the next owner, outside the old set, was refused
    /// by every member ("not in the replica set held here") although each had promised it the
    /// epoch. Nobody led the session while both lived.
    @Test(arguments: FirstTry.allCases)
    func aHandoffWhoseFenceAnswersAreLostLeavesTheSessionServedByOneNode(firstTry: FirstTry) throws {
        var mesh = try SessionHandoffTests.running()
        let (sid, old, next) = try Self.stoppedBeforeItsTransfers(&mesh)
        let image = try #require(mesh.nodes[old]!.image(of: sid))
        mesh.loseAnswers = { m in if case .transfer(let s, _, _) = m { s == sid } else { false } }
        mesh.run()
        // Every member of the old set promised the next owner; the old owner heard none of it.
        for member in image.replicas where member != old {
            #expect(mesh.nodes[member]!.describe(sid)?.contains("owner \(next)") == true, "\(member): \(mesh.nodes[member]!.describe(sid) ?? "-")")
        }
        // The old owner's own fence promise does not count for the next owner (only the other
        // members' do), so the next owner's majority and the old owner's retake meet in a
        // member that answers for the next owner (review4 F1).
        let fenceEpoch = try #require(mesh.nodes[image.replicas.first { $0 != old }!]!.image(of: sid)?.epoch)
        var probe = mesh.nodes[old]!
        guard case .respond(.invalid, _)? = probe.request(.prepare(session: sid, epoch: fenceEpoch), from: next, token: RequestToken(rawValue: 990),
                                                          now: mesh.now).first else {
            Issue.record("the old owner promised the next owner's takeover"); return
        }
        mesh.expireLost()  // the old owner's transfers time out: it gives the handoff up
        if firstTry == .answersLost {
            // The next owner's takeover (once its offer timed out) asks, and no answer comes
            // back for two ticks; then they time out.
            mesh.loseAnswers = { m in if case .prepare(let s, _) = m { s == sid } else { false } }
            for _ in 0..<6 { mesh.tick(seconds: 1) }
            #expect(mesh.servers(of: sid).isEmpty)
            mesh.loseAnswers = nil
            mesh.expireLost()
        }
        mesh.loseAnswers = nil
        if firstTry == .restarted {
            // kill -9 and start again on its store (its copy of the offered session).
            let stored = try #require(mesh.nodes[next]!.image(of: sid))
            mesh.restart(next, from: [stored], withLoads: true)
            mesh.run()
        }
        if firstTry == .memberRestarted {
            // kill -9 of a member that promised at the fence, started again on its store.
            let member = try #require(image.replicas.first { $0 != old })
            let stored = try #require(mesh.nodes[member]!.image(of: sid))
            let fences = mesh.nodes[member]!.fencePromises
            #expect(fences.contains { $0.session == sid })
            mesh.restart(member, from: [stored], fencePromises: fences, withLoads: true)
            mesh.run()
        }
        if firstTry == .cutOff {
            // The next owner's first takeover (once its offer timed out) finds the old set cut
            // off; it must try again, or the members that promised it wait on it for ever.
            let others = image.replicas.filter { $0 != old }
            for name in others { mesh.down.insert(name) }
            mesh.settle(seconds: 6)
            #expect(mesh.servers(of: sid).isEmpty)
            for name in others { mesh.down.remove(name) }
        }
        mesh.settle(seconds: 20)
        SessionHandoffTests.servedOnceWithItsLastState(&mesh, sid, next: "5", after: "the handoff whose fence answers were lost", chainsBefore: false)
        // The old member the capped new set left out dropped its copy (review4 F8).
        let set = try #require(mesh.servers(of: sid).first.flatMap { mesh.nodes[$0]!.image(of: sid) }?.replicas)
        let leftOver = mesh.nodes.keys.sorted().filter { !set.contains($0) && mesh.nodes[$0]!.image(of: sid) != nil }
        #expect(leftOver.isEmpty, "copies outside the set \(set): \(leftOver)")
    }
}
