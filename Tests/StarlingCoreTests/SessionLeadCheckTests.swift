import Foundation
import Testing
@testable import StarlingCore

/// Holders defer to a session's owner while it is present in their view; that alone kept a
/// session unled for good when the node they deferred to did not lead it and deferred in turn
/// (`starling-sim --scenario session-partition --nodes 20 --sessions 40 --seed 2`: n4 deferred to
/// n12, n12 to n4, n1 to n12; nobody served sess-27 and sess-28 for the last 50 s of the run). The
/// lead check asks the owner itself.
@Suite struct SessionLeadCheckTests {
    /// A 3-node mesh whose nodes restart holding `s1` with the owner each names: nobody leads.
    static func restarted(owners: [PeerName: PeerName]) throws -> (SessionMesh, state: [UInt8]) {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        for i in 1...3 { _ = mesh.command(owner, .checkpoint(id: "s1", state: Array("\(i)".utf8))) }
        var images: [PeerName: SessionImage] = [:]
        for name in mesh.nodes.keys.sorted() {
            var image = try #require(mesh.nodes[name]!.image(of: "s1"))
            image.owner = owners[name] ?? image.owner
            images[name] = image
        }
        for name in mesh.nodes.keys.sorted() { mesh.restart(name, from: [images[name]!]) }
        mesh.run()
        return (mesh, Array("3".utf8))
    }

    @Test func membersThatDeferToEachOtherAskTheOwnerAndTheSessionResumes() throws {
        // The first member of the set defers to the second, and the others to the first: each
        // holder's named owner is present, so none takes the session over by presence alone.
        let probe = try Self.restarted(owners: [:]).0
        let set = try #require(probe.nodes["n1"]!.image(of: "s1")).replicas
        var (mesh, state) = try Self.restarted(owners: [set[0]: set[1], set[1]: set[0], set[2]: set[0]])
        #expect(mesh.owner(of: "s1") == nil)
        mesh.tick(seconds: 45)
        let server = mesh.owner(of: "s1")
        #expect(server != nil, "nobody leads the session")
        guard let server else { return }
        #expect(mesh.nodes.keys.filter { mesh.nodes[$0]!.served.contains("s1") }.count == 1)
        guard case .view(let view)? = mesh.command(server, .show(id: "s1", since: 0)) else { Issue.record("not served"); return }
        #expect(view.state == state)
        guard case .recorded? = mesh.command(server, .checkpoint(id: "s1", state: Array("4".utf8))) else { Issue.record("no write"); return }
        #expect(mesh.nodes.values.reduce(0) { $0 + $1.counters.ownersDenied } >= 1)
    }

    @Test func anOwnerThatLeadsKeepsItsSessionAndItsEpoch() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3", "n4"])
        let owner = try SessionsTests.created(&mesh, "s1")
        mesh.tick(seconds: 5)
        let server = try #require(mesh.owner(of: "s1"))
        let epoch = try #require(mesh.nodes[server]!.image(of: "s1")).epoch
        let takeovers = mesh.nodes.values.reduce(0) { $0 + $1.counters.takeovers }
        mesh.tick(seconds: 120)
        #expect(mesh.owner(of: "s1") == server)
        #expect(mesh.nodes[server]!.image(of: "s1")?.epoch == epoch)
        #expect(mesh.nodes.values.reduce(0) { $0 + $1.counters.takeovers } == takeovers)
        #expect(mesh.nodes.values.reduce(0) { $0 + $1.counters.ownersDenied } == 0)
        // The holders did ask (one batched question per owner and interval).
        #expect(mesh.sent.contains { $0.kind == 19 })
        _ = owner
    }

    @Test func aLeadCheckIsBoundedOnTheWireAndAnsweredOnlyForWhatWasAsked() throws {
        let ids = (0..<SessionLimits.maxLeadCheck).map { "s\($0)" }
        let bytes = Sessions.encode(.leads(sessions: ids))
        #expect(try Sessions.decode(bytes) == .leads(sessions: ids))
        // One id more than the bound, written by hand: refused at decoding.
        var over = ByteWriter(capacity: 64)
        over.write(UInt8(19))
        over.write(UInt16(SessionLimits.maxLeadCheck + 1))
        for i in 0...SessionLimits.maxLeadCheck { over.write("s\(i)") }
        #expect(throws: SessionDecodingError.self) { try Sessions.decode(over.bytes) }
        #expect(throws: SessionDecodingError.self) { try Sessions.decode([20, 0, 1, 0, 2] + Array("!!".utf8)) }
        let answers = [LeadAnswer(session: "s1", epoch: 7, owner: "n2", replicas: ["n2", "n1", "n3"], headEpoch: 6, seq: 12), LeadAnswer(session: "s2", epoch: 3, owner: "n4"), LeadAnswer(session: "s3")]
        #expect(try Sessions.decode(Sessions.encode(.notLeading(sessions: answers))) == .notLeading(sessions: answers))
        // A set of more than R, or naming a member twice, is refused.
        var four = ByteWriter(capacity: 64)
        four.write(UInt8(20)); four.write(UInt16(1)); four.write("s1"); four.write(UInt64(1)); four.write("n1"); four.write(UInt64(2)); four.write(UInt64(3)); four.write(UInt64(0)); four.write(UInt8(4))
        for name in ["a", "b", "c", "d"] { four.write(name) }
        #expect(throws: SessionDecodingError.self) { try Sessions.decode(four.bytes) }
        var twice = ByteWriter(capacity: 64)
        twice.write(UInt8(20)); twice.write(UInt16(1)); twice.write("s1"); twice.write(UInt64(1)); twice.write("n1"); twice.write(UInt64(2)); twice.write(UInt64(3)); twice.write(UInt64(0)); twice.write(UInt8(2))
        for name in ["a", "a"] { twice.write(name) }
        #expect(throws: SessionDecodingError.self) { try Sessions.decode(twice.bytes) }

        // A holder counts a denial only for a session it asked about.
        var (mesh, _) = try Self.restarted(owners: [:])
        let set = try #require(mesh.nodes["n1"]!.image(of: "s1")).replicas
        var asker = mesh.nodes[set[1]]!
        let effects = asker.tick(now: mesh.now + .seconds(60))
        let asked = effects.compactMap { effect -> RequestID? in
            if case .request(.leads, _, let id, _) = effect { return id }
            return nil
        }
        #expect(!asked.isEmpty)
        for id in asked { _ = asker.response(.notLeading(sessions: [LeadAnswer(session: "other", epoch: 1, owner: set[0], replicas: set)]), to: id, now: mesh.now + .seconds(60)) }
        #expect(asker.counters.ownersDenied == 0)
        mesh.nodes[set[1]] = asker
    }

    /// One holder of `s1` (second in the set, deferring to the first), with the others alive,
    /// and its lead check's request to the owner.
    static func asking() throws -> (node: Sessions, image: SessionImage, check: RequestID, now: Instant, set: [PeerName]) {
        let (mesh, _) = try Self.restarted(owners: [:])
        let set = try #require(mesh.nodes["n1"]!.image(of: "s1")).replicas
        let image = try #require(mesh.nodes[set[1]]!.image(of: "s1"))
        var node = Sessions(myName: set[1], crypto: mesh.crypto[set[1]]!, settings: .init(requestTimeout: .seconds(1)), now: mesh.now)
        node.restore([image])
        for name in ["n1", "n2", "n3", "n4"] { _ = node.membershipChanged(.updated(mesh.view(name, .alive)), now: mesh.now) }
        let now = mesh.now + .seconds(1)
        let checks = node.tick(now: now).compactMap { effect -> (PeerName, RequestID)? in
            if case .request(.leads(let sids), let to, let id, _) = effect, sids == ["s1"] { return (to, id) }
            return nil
        }
        #expect(checks.map(\.0) == [set[0]])
        return (node, image, try #require(checks.first).1, now, set)
    }

    /// review5 F1: a copy that missed a move learns from the owner it asks where the session
    /// went (a newer promise), raises its own promise to it, and then turns away a stale member
    /// of its old set instead of voting for it.
    @Test func aCopyRaisesItsPromiseToTheNewerOneItsOwnerNames() throws {
        var (node, image, check, now, set) = try Self.asking()
        let effects = node.response(.notLeading(sessions: [LeadAnswer(session: "s1", epoch: image.epoch + 3, owner: "n4")]), to: check, now: now)
        #expect(effects.contains { if case .perform(.persist(.promise("s1", image.epoch + 3, "n4"), _)) = $0 { true } else { false } })
        #expect(node.counters.promisesRaised == 1 && node.counters.ownersDenied == 0)
        #expect(node.describe("s1")?.hasPrefix("e\(image.epoch + 3) owner n4") == true)
        // The stale member's prepare, below and above the raised epoch.
        for (epoch, stale) in [(image.epoch + 1, true), (image.epoch + 4, false)] {
            let answer = node.request(.prepare(session: "s1", epoch: epoch), from: set[2], token: RequestToken(rawValue: epoch), now: now).first
            if stale {
                guard case .respond(.stale, _)? = answer else { Issue.record("prepare \(epoch): \(String(describing: answer))"); continue }
            } else {
                guard case .respond(.ownedBy(_, _, "n4"), _)? = answer else { Issue.record("prepare \(epoch): \(String(describing: answer))"); continue }
            }
        }
    }

    /// review5 F1: an owner whose copy names another replica set made a change this holder
    /// missed: its "not leading" is no denial, and the holder stays sticky to it.
    @Test func aDenialCountsOnlyWhereTheOwnerConfirmsTheSet() throws {
        var (node, image, check, now, set) = try Self.asking()
        _ = node.response(.notLeading(sessions: [LeadAnswer(session: "s1", epoch: image.epoch, owner: set[0], replicas: [set[0], set[1], "n4"],
                                                             headEpoch: image.records.last!.epoch, seq: image.records.last!.seq,
                                                             configEpoch: image.configEpoch + 1)]),
                          to: check, now: now)
        #expect(node.counters.ownersDenied == 0)
        guard case .respond(.ownedBy(_, _, set[0]), _)? = node.request(.prepare(session: "s1", epoch: image.epoch + 1), from: set[2],
                                                                         token: RequestToken(rawValue: 1), now: now).first else {
            Issue.record("a stale member of the old set was promised"); return
        }
        // The same other set on a copy behind this one (it knows less: an older set): a denial.
        var (behind, behindImage, behindCheck, behindNow, behindSet) = try Self.asking()
        _ = behind.response(.notLeading(sessions: [LeadAnswer(session: "s1", epoch: behindImage.epoch, owner: behindSet[0],
                                                               replicas: [behindSet[0], behindSet[1], "n4"], headEpoch: 1, seq: 1,
                                                               configEpoch: behindImage.configEpoch)]),
                            to: behindCheck, now: behindNow)
        #expect(behind.counters.ownersDenied == 1)
        // A release at this node's epoch says the session went elsewhere: no denial (review6 F3).
        var (released, releasedImage, releasedCheck, releasedNow, _) = try Self.asking()
        _ = released.response(.notLeading(sessions: [LeadAnswer(session: "s1", epoch: releasedImage.epoch, owner: "n4")]),
                              to: releasedCheck, now: releasedNow)
        #expect(released.counters.ownersDenied == 0)
        #expect(released.describe("s1")?.contains("owner-denied") == false)
        // A copy of an older configuration than this node's knows less of the set: a denial,
        // whatever its set (review8: a next owner whose copy missed a takeover's set change).
        var (older, olderImage, olderCheck, olderNow, olderSet) = try Self.asking()
        #expect(olderImage.configEpoch >= 1)
        _ = older.response(.notLeading(sessions: [LeadAnswer(session: "s1", epoch: olderImage.epoch, owner: olderSet[0],
                                                              replicas: [olderSet[0], olderSet[1], "n4"], headEpoch: olderImage.records.last!.epoch,
                                                              seq: olderImage.records.last!.seq, configEpoch: olderImage.configEpoch - 1)]),
                           to: olderCheck, now: olderNow)
        #expect(older.counters.ownersDenied == 1)
    }

    /// review5 F3: a denial ends when the owner shows it leads (a prepare from it), and when a
    /// later check leaves the session out.
    @Test func aDenialEndsWhenTheOwnerLeadsAgain() throws {
        var (node, image, check, now, set) = try Self.asking()
        _ = node.response(.notLeading(sessions: [LeadAnswer(session: "s1", epoch: image.epoch, owner: set[0], replicas: image.replicas)]),
                          to: check, now: now)
        #expect(node.counters.ownersDenied == 1)
        #expect(node.describe("s1")?.contains("owner-denied") == true)
        _ = node.request(.prepare(session: "s1", epoch: image.epoch + 1), from: set[0], token: RequestToken(rawValue: 1), now: now)
        #expect(node.describe("s1")?.contains("owner-denied") == false)

        var (other, otherImage, otherCheck, otherNow, otherSet) = try Self.asking()
        _ = other.response(.notLeading(sessions: [LeadAnswer(session: "s1", epoch: otherImage.epoch, owner: otherSet[0], replicas: otherImage.replicas)]),
                           to: otherCheck, now: otherNow)
        #expect(other.describe("s1")?.contains("owner-denied") == true)
        let later = otherNow + .seconds(11)
        let next = other.tick(now: later).compactMap { effect -> RequestID? in
            if case .request(.leads, _, let id, _) = effect { return id }
            return nil
        }
        #expect(next.count == 1)
        for id in next { _ = other.response(.notLeading(sessions: []), to: id, now: later) }
        #expect(other.describe("s1")?.contains("owner-denied") == false)
    }

    /// review5 F2: a failed takeover's hint never rewrites the owner of the epoch this node
    /// promised, so it never promises that epoch twice.
    @Test func aHintNeverRelabelsAnEpochPromisedHere() throws {
        let base = try Self.asking().image
        var image = base
        image.replicas = ["x", "b", "h"]
        image.owner = "b"
        image.epoch = 7
        var x = SessionsTests.alone("x", holding: image, members: ["x", "h"], now: Instant(nanoseconds: 1_000_000_000))
        let now = Instant(nanoseconds: 3_000_000_000)
        let prepares = x.tick(now: now).compactMap { effect -> RequestID? in
            if case .request(.prepare("s1", 8), "h", let id, _) = effect { return id }
            return nil
        }
        #expect(prepares.count == 1)
        for id in prepares { _ = x.response(.ownedBy(session: "s1", epoch: 7, owner: "h"), to: id, now: now) }
        guard case .respond(.stale("s1", 7), _)? = x.request(.prepare(session: "s1", epoch: 7), from: "h", token: RequestToken(rawValue: 1), now: now).first else {
            Issue.record("epoch 7, promised to b, was promised to h too"); return
        }
    }
}
