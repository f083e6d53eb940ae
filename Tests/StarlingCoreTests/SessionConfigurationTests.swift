import Foundation
@testable import StarlingCore
import Testing

struct SessionMeshError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension SessionMesh {
    /// Cuts the mesh into `sides`: messages between sides are lost, and each node sees the nodes
    /// of other sides dead (as a partition looks once membership decided). `split([all])` heals.
    mutating func split(_ sides: [Set<PeerName>]) {
        partition = sides
        for a in nodes.keys.sorted() where !down.contains(a) {
            for b in nodes.keys.sorted() where b != a && !down.contains(b) {
                let together = sides.contains { $0.contains(a) && $0.contains(b) }
                var n = nodes[a]!
                let effects = n.membershipChanged(.updated(view(b, together ? .alive : .dead)), now: now)
                nodes[a] = n
                deliver(a, effects)
            }
        }
        run()
    }

    /// A crashed node starts again on its store (`images`), and every live node sees it alive.
    mutating func revive(_ name: PeerName, from images: [SessionImage]) {
        down.remove(name)
        restart(name, from: images)
        for other in nodes.keys.sorted() where other != name && !reachable(name, other) {
            var n = nodes[name]!
            let effects = n.membershipChanged(.updated(view(other, .dead)), now: now)
            nodes[name] = n
            deliver(name, effects)
        }
        for other in nodes.keys.sorted() where other != name && !down.contains(other) {
            var n = nodes[other]!
            let effects = n.membershipChanged(.updated(view(name, reachable(name, other) ? .alive : .dead)), now: now)
            nodes[other] = n
            deliver(other, effects)
        }
        run()
    }

    /// A mesh of `names` (loads gossiped) with "s1" created where placement puts it and `state`
    /// recorded: the mesh and the session's owner.
    static func withSession(_ names: [PeerName], state: String) throws -> (SessionMesh, PeerName) {
        var mesh = try SessionMesh(names)
        mesh.gossipLoads()
        guard let owner = mesh.create("s1") else { throw SessionMeshError("s1 was not created") }
        guard case .recorded? = mesh.command(owner, .checkpoint(id: "s1", state: Array(state.utf8))) else {
            throw SessionMeshError("the first checkpoint was not recorded")
        }
        return (mesh, owner)
    }

    /// `rounds` times: 5 s of ticks and gossip, then every lost answer times out.
    mutating func settleExpiring(rounds: Int) {
        for _ in 0..<rounds {
            settle(seconds: 5)
            expireLost()
        }
    }

    /// Each live node's copy of `sid`, one line each (for failure messages).
    func describe(_ sid: String) -> String {
        nodes.keys.sorted().compactMap { name -> String? in
            guard let i = nodes[name]!.image(of: sid) else { return nil }
            return "\(name)\(down.contains(name) ? " (down)" : "")\(nodes[name]!.served.contains(sid) ? " serves" : ""): e\(i.epoch) \(i.owner) "
                + "\(i.replicas) c\(i.configEpoch) joint \(i.jointOld) seqs \(i.records.map { "\($0.seq)@\($0.epoch)" })"
        }.joined(separator: "\n")
    }

    /// Whether the copies of the serving node's replica set agree with its chain, record by record.
    func setAgrees(_ sid: String) -> Bool {
        guard let server = servers(of: sid).first, let image = nodes[server]!.image(of: sid) else { return false }
        return image.replicas.filter { !down.contains($0) }.allSatisfy { member in
            guard let copy = nodes[member]!.image(of: sid) else { return false }
            return zip(copy.records, image.records).allSatisfy { $0.signature == $1.signature }
        }
    }

    /// The sides of the current partition on which some node records a checkpoint of `sid`.
    mutating func sidesThatRecord(_ sid: String, _ sides: [Set<PeerName>]) -> [Set<PeerName>] {
        sides.filter { side in
            side.sorted().contains { name in
                !down.contains(name) && { if case .recorded? = command(name, .checkpoint(id: sid, state: Array("\"\(name)\"".utf8))) { true } else { false } }()
            }
        }
    }
}

/// A change of a session's replica set (a refill, a takeover's new set, a handoff) is a joint
/// configuration held in the copies: a lost answer, a crash or a copy that missed the change
/// never lets two sets each elect an owner (review6 F1).
@Suite struct SessionConfigurationTests {
    static func isInstall(_ m: SessionMessage) -> Bool { if case .install = m { true } else { false } }
    static func isAppend(_ m: SessionMessage) -> Bool {
        switch m {
        case .append, .appendChunks: true
        default: false
        }
    }

    /// Owner O refills [O, A, B] (B dead) to [O, A, C]. A and C store the new set, but A's answer
    /// is lost, so O steps down. Before, O went back to [O, A, B]; after a split {O, B} | {A, C, D}
    /// each side elected an owner on its own set, and both recorded.
    @Test func aRefillWhoseAnswerIsLostSplitsNoSession() throws {
        var (mesh, o) = try SessionMesh.withSession(["n1", "n2", "n3", "n4", "n5"], state: "\"s1-last\"")
        let set = mesh.nodes[o]!.image(of: "s1")!.replicas
        let (a, b) = (set[1], set[2])
        let stored = mesh.nodes[b]!.image(of: "s1")!
        mesh.loseAnswersAt = { to, m in to == a && Self.isInstall(m) }
        mesh.crash(b)
        mesh.settle(seconds: 3)
        mesh.expireLost()
        mesh.loseAnswersAt = nil
        let c = try #require(mesh.nodes.keys.sorted().first { mesh.nodes[$0]!.image(of: "s1")?.replicas.contains($0) == true && !set.contains($0) },
                             "no refill reached a new member")
        #expect(mesh.servers(of: "s1").isEmpty, "the refill's joint install did not complete, yet \(mesh.servers(of: "s1")) serves")
        // B comes back on its store, on O's side of a split.
        let sides: [Set<PeerName>] = [[o, b], Set(mesh.nodes.keys).subtracting([o, b])]
        mesh.split(sides)
        mesh.revive(b, from: [stored])
        mesh.settleExpiring(rounds: 6)
        let recording = mesh.sidesThatRecord("s1", sides)
        #expect(recording.count <= 1, "both sides recorded (c \(c)): \(recording)\n\(mesh.describe("s1"))")
        mesh.split([Set(mesh.nodes.keys)])
        mesh.partition = nil
        mesh.settleExpiring(rounds: 6)
        #expect(mesh.servers(of: "s1").count == 1, "served by \(mesh.servers(of: "s1"))")
        let agree = mesh.setAgrees("s1")
        #expect(agree, "\(mesh.describe("s1"))")
    }

    /// The joint configuration is in the copy, so it outlives a step-down and a restart: an owner
    /// whose refill did not complete, restarted and cut off with the new member only, does not
    /// serve (before, its copy held the new set alone, and it won with that member's vote).
    @Test func anIncompleteRefillStaysJointAcrossARestart() throws {
        var (mesh, o) = try SessionMesh.withSession(["n1", "n2", "n3", "n4", "n5"], state: "1")
        let set = mesh.nodes[o]!.image(of: "s1")!.replicas
        let a = set[1]
        // A promises the refill's epoch; its install never arrives.
        mesh.dropRequests = { to, m in to == a && Self.isInstall(m) }
        mesh.crash(set[2])
        mesh.settle(seconds: 3)
        mesh.dropRequests = nil
        let image = try #require(mesh.nodes[o]!.image(of: "s1"))
        #expect(image.jointOld == set && image.configEpoch == image.epoch, "\(mesh.describe("s1"))")
        let c = try #require(image.replicas.first { !set.contains($0) })
        #expect(mesh.nodes[c]!.image(of: "s1")?.jointOld == set)
        // kill -9 and a start on the same store, then cut off with C only.
        mesh.crash(o)
        mesh.revive(o, from: [image])
        #expect(mesh.nodes[o]!.image(of: "s1")?.jointOld == set)
        let sides: [Set<PeerName>] = [[o, c], Set(mesh.nodes.keys).subtracting([o, c])]
        mesh.split(sides)
        mesh.settleExpiring(rounds: 4)
        #expect(!mesh.servers(of: "s1").contains(o) && !mesh.servers(of: "s1").contains(c), "served by \(mesh.servers(of: "s1")) on the cut-off side")
    }

    /// X's set [X, O, A] loses X; O takes over with A's promise and moves to [O, A, C]. A misses
    /// the new set's records, which O and C acknowledge. Then O dies and X comes back on its old
    /// copy. Before, X won [X, O, A] with A and served without the acknowledged record. Now O
    /// serves only once a majority of the old set stored the new set, and X, learning that set
    /// from A's promise, needs its majority: C refuses it, so A leads, with C's records.
    @Test func aStaleCopyLearnsTheNewerSetFromAPromiseAndNoAcknowledgedRecordIsLost() throws {
        var (mesh, x) = try SessionMesh.withSession(["n1", "n2", "n3", "n4", "n5"], state: "1")
        let old = mesh.nodes[x]!.image(of: "s1")!
        let (o, a) = (old.replicas[1], old.replicas[2])
        mesh.dropRequests = { to, m in to == a && (Self.isInstall(m) || Self.isAppend(m)) }
        mesh.crash(x)
        mesh.settle(seconds: 4)
        mesh.expireLost()
        // Installs reach A again; its records do not.
        mesh.dropRequests = { to, m in to == a && Self.isAppend(m) }
        for _ in 0..<6 where mesh.servers(of: "s1") != [o] {
            mesh.settle(seconds: 5)
            mesh.expireLost()
        }
        #expect(mesh.servers(of: "s1") == [o])
        guard case .recorded(let seq, _)? = mesh.command(o, .checkpoint(id: "s1", state: Array("\"s1-last\"".utf8))) else {
            Issue.record("the new owner records nothing"); return
        }
        let acknowledged = try #require(mesh.nodes[o]!.image(of: "s1")?.records.last)
        #expect(acknowledged.seq == seq)
        mesh.dropRequests = nil
        mesh.crash(o)
        mesh.revive(x, from: [old])
        mesh.settleExpiring(rounds: 8)
        let servers = mesh.servers(of: "s1")
        // (X may serve by now: once A led the session with the records, a handoff may move it
        // back to X, the front of its preference list.)
        #expect(servers.count == 1, "served by \(servers)\n\(mesh.describe("s1"))")
        if let server = servers.first {
            #expect(mesh.nodes[server]!.image(of: "s1")?.records.contains { $0.signature == acknowledged.signature } == true,
                    "\(server) serves without the acknowledged record \(seq)")
        }
        let agree = mesh.setAgrees("s1")
        #expect(agree, "\(mesh.describe("s1"))")
    }

    /// A member naming an epoch far above the one held (review6 F2: `UInt64.max` left the
    /// session unled at that holder for good) is refused and counted; the session goes on.
    @Test func anEpochFarAboveTheOneHeldIsRefused() throws {
        var (mesh, owner) = try SessionMesh.withSession(["n1", "n2", "n3"], state: "1")
        let image = mesh.nodes[owner]!.image(of: "s1")!
        let (r, other) = (image.replicas[1], image.replicas[2])
        var node = mesh.nodes[r]!
        let forgedBefore = node.counters.forged
        var far = image
        far.epoch = .max
        far.configEpoch = .max
        let attempts: [(SessionMessage, PeerName)] = [
            (.prepare(session: "s1", epoch: .max), other),
            (.prepare(session: "s1", epoch: image.epoch + SessionLimits.maxEpochStep + 1), other),
            (.transfer(session: "s1", epoch: .max, to: other), owner),
            (.install(far), owner),
        ]
        for (i, (message, from)) in attempts.enumerated() {
            let effects = node.request(message, from: from, token: RequestToken(rawValue: 900 + UInt64(i)), now: mesh.now)
            guard case .respond(.invalid, _)? = effects.first else { Issue.record("\(message): \(effects)"); continue }
        }
        #expect(node.image(of: "s1")?.epoch == image.epoch && node.counters.forged == forgedBefore + attempts.count)
        // Within the step, a higher epoch is an ordinary promise.
        let near = node.request(.prepare(session: "s1", epoch: image.epoch + SessionLimits.maxEpochStep), from: owner,
                                token: RequestToken(rawValue: 999), now: mesh.now)
        guard case .perform(.persist(.promise, _))? = near.last else { Issue.record("a near epoch: \(near)"); return }
        // The bound is measured from the records and configuration held, not from the promise
        // just raised: promises cannot ratchet past it (review7 F5).
        let ratchet = node.request(.prepare(session: "s1", epoch: image.epoch + SessionLimits.maxEpochStep + 2), from: owner,
                                   token: RequestToken(rawValue: 1_000), now: mesh.now)
        guard case .respond(.invalid, _)? = ratchet.first else { Issue.record("a ratcheted epoch: \(ratchet)"); return }
        mesh.nodes[r] = node
    }

    /// A session idle after a refill: the new set is established at its members without a
    /// record (`SessionMessage.established`), so when the owner dies too, the new set's majority
    /// resumes it without the old set's lost member. Before, the copies stayed joint, and the
    /// takeover waited for ever on a majority of [O, A, B] with O and B dead.
    @Test func anIdleSessionResumesOnItsRefilledSetAlone() throws {
        var (mesh, o) = try SessionMesh.withSession(["n1", "n2", "n3", "n4", "n5"], state: "\"s1-last\"")
        let set = mesh.nodes[o]!.image(of: "s1")!.replicas
        mesh.crash(set[2])
        mesh.settle(seconds: 3)
        let refilled = try #require(mesh.nodes[o]!.image(of: "s1"))
        #expect(refilled.replicas != set && refilled.jointOld.isEmpty, "\(mesh.describe("s1"))")
        mesh.crash(o)
        mesh.settleExpiring(rounds: 4)
        SessionHandoffTests.servedOnceWithItsLastState(&mesh, "s1", next: "after", after: "the owner's death after a refill", chainsBefore: false)
    }

    /// Review7 F1: the next owner of a handoff whose own takeover at the commit's epoch reached
    /// its install (a joint set) refuses the old owner's commit at that epoch: taking it replaced
    /// that joint set with the handoff's, and the old set's majority that never saw it could
    /// elect a second owner.
    @Test func aCommitIsRefusedWhereATakeoverInstalledAConfigurationOfItsEpoch() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3", "n4", "n5", "n6"])
        mesh.gossipLoads()
        guard let o = mesh.create("s1") else { Issue.record("create"); return }
        let image = mesh.nodes[o]!.image(of: "s1")!
        let p = try #require(mesh.nodes.keys.sorted().first { !image.replicas.contains($0) })
        var mine = image
        mine.epoch += 1
        mine.owner = p
        mine.configEpoch = mine.epoch
        mine.replicas = [p, image.replicas[0], image.replicas[1]]
        mine.jointOld = image.replicas
        mesh.restart(p, from: [mine])
        var node = mesh.nodes[p]!
        let effects = node.request(.commit(session: "s1", epoch: mine.epoch, replicas: [p] + image.replicas.prefix(2)), from: o,
                                   token: RequestToken(rawValue: 77), now: mesh.now)
        guard case .respond(.stale, _)? = effects.first else { Issue.record("the commit was taken: \(effects)"); return }
        #expect(node.image(of: "s1")?.jointOld == image.replicas)
    }

    /// Review7 F2: a configuration is unsigned, so a newer one is learned only from a member of
    /// a set the takeover needs. An outsider H (asked as a member of the new set) answering with
    /// a forged set where it and the preparer are a majority let the preparer win without its
    /// set's live member A, whose answer had not come back (a partition, in the real network).
    @Test func aNewerSetIsLearnedOnlyFromAMemberOfTheSetsNeeded() throws {
        var (mesh, x) = try SessionMesh.withSession(["n1", "n2", "n3", "n4", "n5", "n6"], state: "1")
        let image = mesh.nodes[x]!.image(of: "s1")!
        let (p, a) = (image.replicas[1], image.replicas[2])
        // P promised epoch 5 to X (so the forged set, of epoch 4, is newer than P's and older
        // than P's next epoch); every outsider holds a copy naming itself and P a majority.
        var atFive = image
        atFive.epoch = 5
        mesh.restart(p, from: [atFive])
        for h in mesh.nodes.keys.sorted() where !image.replicas.contains(h) {
            var forged = atFive
            forged.configEpoch = 4
            forged.replicas = [p, h, "ghost"]
            mesh.restart(h, from: [forged])
        }
        mesh.loseAnswersAt = { to, m in
            if to == a, case .prepare = m { return true }
            return false
        }
        mesh.crash(x)
        mesh.settle(seconds: 3)
        #expect(!mesh.servers(of: "s1").contains(p), "P won without A: \(mesh.describe("s1"))")
    }

    /// Review7 F4: a copy that missed `established` learns it from a member of the new set that
    /// stored it (same configuration, no joint set), so it needs no majority of the set the
    /// change replaced, whose lost member may be gone for good.
    @Test func aCopyThatMissedEstablishedLearnsItFromAPromise() throws {
        var (mesh, o) = try SessionMesh.withSession(["n1", "n2", "n3", "n4", "n5"], state: "\"s1-last\"")
        let set = mesh.nodes[o]!.image(of: "s1")!.replicas
        let b = set[1]
        mesh.dropRequests = { to, m in
            if to == b, case .established = m { return true }
            return false
        }
        mesh.crash(set[2])
        mesh.settle(seconds: 3)
        mesh.dropRequests = nil
        #expect(mesh.nodes[b]!.image(of: "s1")?.jointOld == set, "\(mesh.describe("s1"))")
        mesh.crash(o)
        mesh.settleExpiring(rounds: 4)
        #expect(mesh.servers(of: "s1").count == 1, "\(mesh.describe("s1"))")
        SessionHandoffTests.servedOnceWithItsLastState(&mesh, "s1", next: "after", after: "a lost 'established'", chainsBefore: false)
    }

    /// Review8: a promise from a node outside the sets needed is kept, and counts once another
    /// answer shows a set it is in: in the order "outsider first", the newest set was missed.
    @Test func aTakeoverLearnsTheNewestSetWhateverTheOrderOfItsAnswers() throws {
        func copy(_ set: [PeerName], config: UInt64, joint: [PeerName] = []) -> SessionImage {
            SessionImage(id: "s1", epoch: 9, owner: "p", replicas: set, configEpoch: config, jointOld: joint, records: [])
        }
        for outsiderFirst in [true, false] {
            var t = Sessions.Takeover(epoch: 10, oldSet: ["p", "m", "q"], newSet: ["p", "m", "q"], promised: ["p"], images: [])
            t.quorums = [["p", "m", "q"]]
            t.configEpoch = 1
            let answers: [(PeerName, SessionImage)] = [("x", copy(["x", "m", "w"], config: 3)), ("m", copy(["p", "m", "x"], config: 2))]
            for (peer, image) in outsiderFirst ? answers : answers.reversed() {
                t.copies[peer] = image
                t.learnConfigurations()
            }
            #expect(t.configEpoch == 3 && t.quorums == [["x", "m", "w"]], "outsider first: \(outsiderFirst)")
        }
        // A copy of the same configuration with no joint set drops the set it replaced.
        var t = Sessions.Takeover(epoch: 10, oldSet: ["p", "m", "d"], newSet: ["p", "m", "d"], promised: ["p"], images: [])
        t.quorums = [["p", "m", "d"], ["p", "m", "c"]]
        t.configEpoch = 4
        t.copies["d"] = copy(["p", "m", "d"], config: 4)
        t.learnConfigurations()
        #expect(t.quorums == [["p", "m", "d"]])
    }

    /// Review8: a handoff's commit that is never delivered, to a next owner outside the old set,
    /// with a member of the old set dead. The old owner promised the next owner at the fence and
    /// never promises that owner's takeover (outside its set), so the next owner cannot form a
    /// majority, and the members defer to it. The lead check ends it: the next owner says it
    /// leads nothing, with a copy of the same set, and the old set's first live member resumes
    /// the session (within two checks).
    /// A mesh stopped at a handoff's commit (not delivered yet) to a next owner outside the old
    /// set: the mesh, the session, the old owner, the next owner and the fence's epoch.
    static func stoppedAtACommitToAnOutsider() throws -> (SessionMesh, sid: String, old: PeerName, next: PeerName, epoch: UInt64) {
        var mesh = try SessionHandoffTests.running()
        try mesh.join("n5")
        for _ in 0..<3 { mesh.tickWithoutRunning() }
        var found: (sid: String, old: PeerName, next: PeerName, epoch: UInt64)?
        let before = mesh.nodes  // the old sets (a handoff changes none before its commit)
        let stopped = mesh.runUntilRequest { m, from, to in
            guard case .commit(let s, let epoch, _) = m, before[from]?.image(of: s)?.replicas.contains(to) == false else { return false }
            found = (s, from, to, epoch)
            return true
        }
        let (sid, old, next, epoch) = try #require(stopped ? found : nil, "no handoff to a node outside the old set")
        return (mesh, sid, old, next, epoch)
    }

    /// Review9 F1: once its fence held, the old owner answers for the next owner as the members
    /// that promised it do: if the commit is lost and the next owner's takeover reached its
    /// install before a member died, that takeover needs the old owner's vote.
    @Test func theOldOwnerAnswersForTheNextOwnerOnceItsFenceHeld() throws {
        var (mesh, sid, old, next, epoch) = try Self.stoppedAtACommitToAnOutsider()
        var node = mesh.nodes[old]!
        let effects = node.request(.prepare(session: sid, epoch: epoch), from: next, token: RequestToken(rawValue: 55), now: mesh.now)
        guard case .perform(.persist(.promise(sid, epoch, next), _))? = effects.last else { Issue.record("refused: \(effects)"); return }
        mesh.nodes[old] = node
        #expect(node.fencePromises.contains(SessionFencePromise(session: sid, epoch: epoch, owner: next)))
    }

    @Test func aSessionWhoseCommitWasLostResumes() throws {
        var (mesh, sid, old, next, _) = try Self.stoppedAtACommitToAnOutsider()
        let oldSet = try #require(mesh.nodes[old]!.image(of: sid)).replicas
        mesh.dropRequests = { to, m in
            if to == next, case .commit = m { return true }
            return false
        }
        mesh.run()
        mesh.dropRequests = nil
        let dead = try #require(oldSet.first { $0 != old })
        mesh.crash(dead)
        mesh.settleExpiring(rounds: 6)
        #expect(mesh.servers(of: sid).count == 1, "\(mesh.describe(sid))")
        SessionHandoffTests.servedOnceWithItsLastState(&mesh, sid, next: "after", after: "a failed commit", chainsBefore: false)
    }
}
