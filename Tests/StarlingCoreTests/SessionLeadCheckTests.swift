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
        for name in mesh.nodes.keys.sorted() {
            var image = try #require(mesh.nodes[name]!.image(of: "s1"))
            image.owner = owners[name] ?? image.owner
            var fresh = Sessions(myName: name, crypto: mesh.crypto[name]!, settings: .init(requestTimeout: .seconds(1)), now: mesh.now)
            fresh.restore([image])
            mesh.nodes[name] = fresh
        }
        for name in mesh.nodes.keys.sorted() {
            for other in mesh.nodes.keys.sorted() {
                var n = mesh.nodes[name]!
                let effects = n.membershipChanged(.updated(mesh.view(other, .alive)), now: mesh.now)
                mesh.nodes[name] = n
                mesh.deliver(name, effects)
            }
        }
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
        for id in asked { _ = asker.response(.notLeading(sessions: ["other"]), to: id, now: mesh.now + .seconds(60)) }
        #expect(asker.counters.ownersDenied == 0)
        mesh.nodes[set[1]] = asker
    }

    /// A copy whose named owner says it does not lead the session prepares; refused by members
    /// that promised another node that very epoch, it defers to that node rather than preparing
    /// again every second (a stale copy left by a handoff did, in the migration test).
    @Test func aRefusedTakeoverDefersToTheOwnerNamedAtTheEpochItKnew() throws {
        var (mesh, _) = try Self.restarted(owners: [:])
        let set = try #require(mesh.nodes["n1"]!.image(of: "s1")).replicas
        let (me, owner, other) = (set[1], set[0], set[2])
        var image = try #require(mesh.nodes[me]!.image(of: "s1"))
        image.replicas = [me, owner, other]
        var node = Sessions(myName: me, crypto: mesh.crypto[me]!, settings: .init(requestTimeout: .seconds(1)), now: mesh.now)
        node.restore([image])
        for name in ["n1", "n2", "n3", "n4"] { _ = node.membershipChanged(.updated(mesh.view(name, .alive)), now: mesh.now) }
        var now = mesh.now + .seconds(1)
        let epoch = image.epoch
        func requests(_ effects: [ProtocolEffect<Sessions>]) -> [(SessionMessage, PeerName, RequestID)] {
            effects.compactMap { if case .request(let m, let to, let id, _) = $0 { return (m, to, id) } else { return nil } }
        }
        // The lead check: the owner named says it does not lead s1.
        let checks = requests(node.tick(now: now)).filter { if case .leads = $0.0 { return true } else { return false } }
        #expect(checks.map(\.1) == [owner])
        for (_, _, id) in checks { _ = node.response(.notLeading(sessions: ["s1"]), to: id, now: now) }
        #expect(node.counters.ownersDenied == 1)
        // So this node, first in its set, prepares; both members name n4, promised this epoch.
        now = now + .seconds(1)
        let prepares = requests(node.tick(now: now)).filter { if case .prepare = $0.0 { return true } else { return false } }
        #expect(prepares.count == 2)
        for (_, _, id) in prepares { _ = node.response(.ownedBy(session: "s1", epoch: epoch, owner: "n4"), to: id, now: now) }
        #expect(node.describe("s1")?.contains("owner n4") == true)
        // It defers to n4 (present): no prepare on the following ticks.
        for _ in 0..<3 {
            now = now + .seconds(1)
            #expect(!requests(node.tick(now: now)).contains { if case .prepare = $0.0 { return true } else { return false } })
        }
        _ = other
    }
}
