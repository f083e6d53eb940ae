import Foundation
import StarlingCore
import StarlingCrypto
import Testing

/// Defects the adversarial review of the session protocol found, each shown on `SessionMesh`
/// (real Ed25519 and BLAKE2b, every message through the codec).
@Suite struct SessionReviewTests {
    /// An epoch is a number from the wire. A peer holding the cluster key that dials under the
    /// owner's name (or a replica answering `stale`) can make a node hold epoch `UInt64.max`;
    /// the next takeover that node leads computed `epoch + 1` and trapped: every replica of the
    /// session went down with it. Now such a session is left unled (and said so), never trapped.
    @Test func anEpochAtItsLimitFromAPeerNeverTrapsATakeover() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        _ = mesh.command(owner, .checkpoint(id: "s1", state: Array("1".utf8)))
        let replica = try #require(mesh.replica(of: "s1"))
        // A prepare at the largest epoch, under the owner's name, is refused now: it is further
        // above the epoch held than any honest peer gets (`SessionLimits.maxEpochStep`, review6 F2).
        var n = mesh.nodes[replica]!
        let effects = n.request(.prepare(session: "s1", epoch: .max), from: owner, token: RequestToken(rawValue: 999_999), now: mesh.now)
        mesh.nodes[replica] = n
        guard case .respond(.invalid, _)? = effects.first else { Issue.record("the replica promised: \(effects)"); return }
        // A store holding the largest epoch (reached 2^32 steps at a time) still never traps.
        var atLimit = try #require(n.image(of: "s1"))
        atLimit.epoch = .max
        mesh.restart(replica, from: [atLimit])
        // The owner dies: the replicas consider a takeover of a session at epoch UInt64.max.
        mesh.crash(owner)
        mesh.tick(seconds: 3)
        #expect(mesh.owner(of: "s1") == nil, "a session at the last epoch cannot be taken over, and is not")
        // The nodes still answer.
        for name in ["n1", "n2", "n3"] where name != owner {
            guard case .stats? = mesh.command(name, .stats) else { Issue.record("\(name) does not answer"); return }
        }
    }

    /// What the protocol alone would accept from a sender under the owner's name: an install, at
    /// the current epoch, of a genuine prefix of the session's chain (every record really signed
    /// by the owner) is taken by the replicas, and when the owner dies the acknowledged records
    /// after the prefix are gone. The protocol trusts the sender's name; the runtime makes that
    /// name authentic: a peer link opens only under the identity key membership gossips for the
    /// name in its hello (`LinkIdentity.swift`, `PeerLinkTests.aLinkOpensOnlyUnderTheIdentity…`),
    /// so a cluster-key holder can no longer speak as the owner. Kept as a known issue of the
    /// core on its own: it would pass if installs themselves were authenticated.
    @Test func aPeerUnderTheOwnersNameCanRollReplicasBackWithAGenuinePrefix() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        for i in 1...5 { _ = mesh.command(owner, .checkpoint(id: "s1", state: Array("\(i)".utf8))) }
        let image = try #require(mesh.nodes[owner]!.image(of: "s1"))
        #expect(image.records.count == 6)
        // The first two records as the owner sent them (create and checkpoint 1, content kept).
        var prefix = image
        prefix.records = Array(image.records.prefix(2))
        prefix.records[1].content = Array("1".utf8)
        for replica in image.replicas where replica != owner {
            var n = mesh.nodes[replica]!
            let effects = n.request(.install(prefix), from: owner, token: RequestToken(rawValue: 900_000), now: mesh.now)
            mesh.nodes[replica] = n
            mesh.deliver(replica, effects)
            mesh.run()
        }
        mesh.crash(owner)
        mesh.tick(seconds: 3)
        let next = try #require(mesh.owner(of: "s1"))
        guard case .view(let view)? = mesh.command(next, .show(id: "s1", since: 0)) else { Issue.record("show"); return }
        withKnownIssue("the core trusts the sender's name; the runtime authenticates it at the link") {
            #expect(view.seq == 6, "acknowledged checkpoints 2...5 were lost: the session resumed at seq \(view.seq)")
            #expect(view.state == Array("5".utf8))
        }
    }

    /// Found by `SessionPartitionTests` on the fault rig: a replica cut off from its owner and
    /// the other replica tried to take the session over every second and failed (no majority);
    /// each failed attempt left it holding the session as its own, at its own higher epoch.
    /// After the heal it answered every request for the session with 503 ("the owner changes")
    /// instead of forwarding to the live owner, and it refused the owner's next record as
    /// stale, so the owner stepped down and the client got a 503. Now a failed takeover gives
    /// back the promise it made itself (the owner and epoch held before it): after the heal the
    /// replica forwards, and the owner's next write is stored there.
    @Test func aFailedTakeoverOnTheMinorityLeavesTheOwnerAloneAfterTheHeal() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3", "n4", "n5"])
        var owner = try SessionsTests.created(&mesh, "s1")
        _ = mesh.command(owner, .checkpoint(id: "s1", state: Array("1".utf8)))
        let replicas = mesh.nodes[owner]!.image(of: "s1")!.replicas
        // One replica alone on one side; the owner, the other replica and the rest on the other.
        let cutOff = replicas[1]
        mesh.partition = [[cutOff], Set(mesh.nodes.keys).subtracting([cutOff])]
        func tell(_ status: MemberStatus, across: Bool) {
            for a in mesh.nodes.keys.sorted() {
                for b in mesh.nodes.keys.sorted() where a != b && (!across || (a == cutOff) != (b == cutOff)) {
                    var n = mesh.nodes[a]!
                    let effects = n.membershipChanged(.updated(mesh.view(b, status)), now: mesh.now)
                    mesh.nodes[a] = n
                    mesh.deliver(a, effects)
                }
            }
            mesh.run()
        }
        tell(.dead, across: true)
        mesh.tick(seconds: 5)  // the cut-off replica tries (and fails) to take the session over
        // The owner's side may have moved the session meanwhile (a replica set that lost a
        // member is refilled, and placement may hand the idle session to another member of the
        // majority side): follow it there.
        owner = try #require(mesh.owner(of: "s1"))
        #expect(owner != cutOff)
        guard case .recorded? = mesh.command(owner, .checkpoint(id: "s1", state: Array("2".utf8))) else {
            Issue.record("the owner's side stopped recording"); return
        }
        mesh.partition = nil
        tell(.alive, across: false)
        // The cut-off replica sends readers on (notHere: the route forwards to the owner).
        let read = mesh.command(cutOff, .show(id: "s1", since: 0))
        guard case .notHere? = read else { Issue.record("the healed replica answered \(String(describing: read))"); return }
        // The owner's next write is stored by every replica, the healed one included, without a step down.
        let fencedBefore = mesh.nodes[owner]!.counters.fenced
        guard case .recorded(let seq, _)? = mesh.command(owner, .checkpoint(id: "s1", state: Array("3".utf8))) else {
            Issue.record("the owner's write after the heal was refused"); return
        }
        #expect(mesh.nodes[owner]!.counters.fenced == fencedBefore)
        // Every member of the replica set stores it: the healed replica if it is still one (the
        // owner's side may have refilled the set without it while it was cut off).
        for replica in mesh.nodes[owner]!.image(of: "s1")!.replicas {
            #expect(mesh.nodes[replica]!.image(of: "s1")?.records.count == Int(seq), "\(replica)")
        }
        #expect(mesh.owner(of: "s1") == owner)
    }
}

