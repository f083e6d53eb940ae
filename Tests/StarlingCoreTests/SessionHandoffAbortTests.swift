import Foundation
import StarlingCore
import Testing

/// A handoff whose fence fails (the old replica set cannot be reached to promise the next
/// owner) must not leave the session unserved. Found by `starling-sim --scenario
/// session-partition --nodes 20 --seed 10`: the old owner had promised the next owner the new
/// epoch and stepped down; the replicas, seeing the old owner alive, refused the next owner's
/// takeover (`ownedBy`); the old owner, seeing the next owner alive, never took the session back.
@Suite struct SessionHandoffAbortTests {
    @Test func aHandoffWhoseFenceFailsLeavesTheSessionServedByOneNode() throws {
        var mesh = try SessionHandoffTests.running()
        try mesh.join("n5")
        for _ in 0..<3 { mesh.tickWithoutRunning() }
        // The first handoff to a node outside the session's replica set (the joiner), stopped
        // before its transfers are delivered.
        var found: (sid: String, old: PeerName, next: PeerName)?
        let stopped = mesh.runUntilRequest { m, from, to in
            if found == nil, case .handoff(let image, _, _) = m, !image.replicas.contains(to) { found = (image.id, from, to) }
            if let found, case .transfer(let s, _, _) = m, s == found.sid { return true }
            return false
        }
        guard stopped, let (sid, old, next) = found else { Issue.record("no handoff outside the replica set"); return }
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
}
