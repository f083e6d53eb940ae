import Foundation
import StarlingCore
import StarlingCrypto
import Testing

/// Compaction (SessionCompaction.swift): a session past 2,048 records and 64 effects keeps
/// recording; a base record stands for the records before its cut; a key is never forgotten.
@Suite struct SessionCompactionTests {
    static func task(_ i: Int) -> [UInt8] { Array("{\"argv\":[\"true\"],\"i\":\(i)}".utf8) }

    /// Every holder's copy of `sid` (node, image).
    static func copies(_ mesh: SessionMesh, _ sid: String) -> [(PeerName, SessionImage)] {
        mesh.nodes.keys.sorted().compactMap { name in mesh.nodes[name]!.image(of: sid).map { (name, $0) } }
    }

    /// Writes `rounds` × (an effect under a new key, a checkpoint) through the owner; every
    /// write must be answered as done.
    static func record(_ mesh: inout SessionMesh, _ sid: String, rounds: Range<Int>) throws {
        for i in rounds {
            let owner = try #require(mesh.owner(of: sid))
            guard case .acted(_, false, _)? = mesh.command(owner, .act(id: sid, key: "k\(i)", task: task(i))) else {
                Issue.record("effect \(i) not done: \(String(describing: mesh.command(owner, .show(id: sid, since: UInt64.max))))")
                throw CancellationError()
            }
            guard case .recorded? = mesh.command(owner, .checkpoint(id: sid, state: Array("{\"step\":\(i)}".utf8))) else {
                Issue.record("checkpoint \(i) not recorded")
                throw CancellationError()
            }
        }
    }

    /// A session compacts after the first checkpoint acknowledged while it holds ≥ 1,024
    /// records, and records on past the old walls.
    @Test func aSessionPastTwoThousandRecordsAndSixtyFourEffectsKeepsRecording() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        // 1,100 effects and 1,100 checkpoints: 3,301 records and the bases, 1,100 keys (the old
        // bounds were 2,048 records and 64 effects, refused with 400 past them). Round i writes
        // the start 2 + 3i, the result 3 + 3i and the checkpoint 4 + 3i (before any base).
        try Self.record(&mesh, "s1", rounds: 0..<1_100)
        #expect(mesh.effectsRun.count == 1_100)
        let copies = Self.copies(mesh, "s1")
        #expect(copies.count == 3)
        for (name, image) in copies {
            // Compacted (each time it held 1,024 records after a checkpoint): it starts at a
            // checkpoint followed by its base, and every holder has the same chain.
            #expect(image.records.count < SessionLimits.compactAfterRecords + 2, "\(name)")
            #expect(image.records.first?.kind == .checkpoint && image.records.dropFirst().first?.kind == .base, "\(name)")
            #expect(image.records.map(\.signature) == copies[0].1.records.map(\.signature), "\(name)")
            #expect(Sessions.encode(.install(image)).count <= SessionLimits.maxMessageBytes)
        }
        #expect((copies[0].1.records.last?.seq ?? 0) > 3_301)
        // A recent key replays its result; a key whose result compaction dropped answers
        // "expired"; neither runs again.
        guard case .acted(_, true, let result)? = mesh.command(owner, .act(id: "s1", key: "k1099", task: Self.task(1_099))) else {
            Issue.record("a recent key did not replay"); return
        }
        #expect(result == Array("{\"ran\":\"s1/k1099\"}".utf8))
        guard case .outcomeExpired(let key, let startedSeq, let resultSeq)? = mesh.command(owner, .act(id: "s1", key: "k3", task: Self.task(3))) else {
            Issue.record("an old key was not answered expired"); return
        }
        #expect(key == "k3" && startedSeq == 11 && resultSeq == 12)
        #expect(mesh.effectsRun.count == 1_100)
        // The journal pages over every key, old ones included.
        var since: UInt64 = 0
        var seen: [String] = []
        while true {
            guard case .view(let view)? = mesh.command(owner, .show(id: "s1", since: since)) else { Issue.record("show"); return }
            seen += view.journal.map(\.key)
            #expect(view.state == Array("{\"step\":1099}".utf8))
            guard view.journalMore, let last = view.journal.last else { break }
            since = last.seq
        }
        #expect(seen == (0..<1_100).map { "k\($0)" })
        guard case .view(let old)? = mesh.command(owner, .show(id: "s1", since: 0)) else { Issue.record("show"); return }
        #expect(old.journal.first?.outcome == .expired)
    }

    /// A compacted session resumes on another node: the new owner verifies an image that
    /// starts at the cut, serves the latest state and replays a key recorded before the cut.
    @Test func aTakeoverAfterACompactionServesTheStateAndReplaysAPreCutEffect() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3", "n4"])
        let owner = try SessionsTests.created(&mesh, "s1")
        try Self.record(&mesh, "s1", rounds: 0..<520)
        let before = try #require(mesh.nodes[owner]!.image(of: "s1"))
        #expect(before.records.first!.seq > 1, "not compacted")
        mesh.crash(owner)
        let next = try #require(mesh.owner(of: "s1"))
        #expect(next != owner)
        let image = try #require(mesh.nodes[next]!.image(of: "s1"))
        #expect(image.records.first?.seq == before.records.first?.seq)
        guard case .view(let view)? = mesh.command(next, .show(id: "s1", since: UInt64.max)) else { Issue.record("show"); return }
        #expect(view.state == Array("{\"step\":519}".utf8) && view.epoch == 2)
        // k330's result is record 3 + 3 × 330 = 993, before the cut (the checkpoint at 1,024):
        // it is in the base's table, among its most recent results.
        #expect(image.records.first!.seq > 993 && image.records[1].kind == .base)
        guard case .acted(_, true, let result)? = mesh.command(next, .act(id: "s1", key: "k330", task: Self.task(330))) else {
            Issue.record("a pre-cut key did not replay after the takeover"); return
        }
        #expect(result == Array("{\"ran\":\"s1/k330\"}".utf8))
        // k5's result was dropped (only the most recent are kept): answered, never run again.
        guard case .outcomeExpired? = mesh.command(next, .act(id: "s1", key: "k5", task: Self.task(5))) else {
            Issue.record("an old key was not expired after the takeover"); return
        }
        #expect(mesh.effectsRun.count == 520)
        // And it records on.
        try Self.record(&mesh, "s1", rounds: 520..<530)
        #expect(mesh.effectsRun.count == 530)
    }

    /// A replica cut off while the session compacted catches up: it answers `behind` to the
    /// next record and gets the compacted image, which it verifies from the cut on.
    @Test func aReplicaDownAcrossTheCutGetsTheCompactedImage() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        try Self.record(&mesh, "s1", rounds: 0..<10)
        let lagging = try #require(mesh.replica(of: "s1"))
        let others = Set(mesh.nodes.keys).subtracting([lagging])
        mesh.partition = [others, [lagging]]
        try Self.record(&mesh, "s1", rounds: 10..<520)
        #expect(mesh.nodes[owner]!.image(of: "s1")!.records.first!.seq > 1, "not compacted")
        #expect(mesh.nodes[lagging]!.image(of: "s1")!.records.first!.seq == 1)
        mesh.partition = nil
        try Self.record(&mesh, "s1", rounds: 520..<521)
        let caughtUp = try #require(mesh.nodes[lagging]!.image(of: "s1"))
        #expect(caughtUp.records.map(\.signature) == mesh.nodes[owner]!.image(of: "s1")!.records.map(\.signature))
        #expect(caughtUp.records.first!.seq > 1)
        #expect(mesh.nodes[lagging]!.counters.forged == 0)
    }

    /// The owner crashes after it wrote its base and before any replica stored it: the next
    /// owner resumes from the uncompacted chain with nothing lost; and a store that kept the
    /// records before a base's cut (dropped later) restores to the compacted image.
    @Test func aCrashBetweenTheBaseAndTheDropLosesNothing() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3", "n4"])
        let owner = try SessionsTests.created(&mesh, "s1")
        try Self.record(&mesh, "s1", rounds: 0..<340)
        // 1 + 3 × 340 + 2 = 1,023 records: the next checkpoint (the 1,024th record) brings the base.
        _ = mesh.command(owner, .act(id: "s1", key: "k340", task: Self.task(340)))
        let full = try #require(mesh.nodes[owner]!.image(of: "s1"))
        #expect(full.records.count == 1_023 && full.records.first!.seq == 1)
        var n = mesh.nodes[owner]!
        let effects = n.command(.checkpoint(id: "s1", state: Array("{\"step\":340}".utf8)), id: CommandID(rawValue: 999_999), now: mesh.now)
        mesh.nodes[owner] = n
        mesh.deliver(owner, effects)
        // Run until the owner holds its base, then crash it before its appends of the base leave.
        while mesh.nodes[owner]!.image(of: "s1")!.records.first!.seq == 1 { mesh.step() }
        let compacted = try #require(mesh.nodes[owner]!.image(of: "s1"))
        #expect(compacted.records.map(\.kind) == [.checkpoint, .base])
        mesh.queue.removeAll { event in
            if case .request(let from, _, _, _) = event { return from == owner }
            return false
        }
        mesh.crash(owner)
        let next = try #require(mesh.owner(of: "s1"))
        guard case .view(let view)? = mesh.command(next, .show(id: "s1", since: 0)) else { Issue.record("show"); return }
        #expect(view.state == Array("{\"step\":340}".utf8))
        #expect(view.journal.count == SessionLimits.maxJournalPage && view.journalMore)
        guard case .acted(_, true, _)? = mesh.command(next, .act(id: "s1", key: "k340", task: Self.task(340))) else {
            Issue.record("no replay after the crash"); return
        }
        guard case .outcomeExpired? = mesh.command(next, .act(id: "s1", key: "k0", task: Self.task(0))) else {
            Issue.record("an old key was not expired after the crash"); return
        }
        #expect(mesh.effectsRun.count == 341)

        // A copy that still holds the records before its base's cut (the drop not done yet)
        // restores compacted.
        // `full` ends at record 1,023; the checkpoint 1,024 and the base 1,025 follow it.
        let prefixHeld = SessionImage(id: "s1", epoch: full.epoch, owner: full.owner, replicas: full.replicas,
                                      records: full.records + compacted.records)
        var fresh = Sessions(myName: "n9", crypto: mesh.crypto["n1"]!, settings: .init(requestTimeout: .seconds(1)), now: mesh.now)
        for name in mesh.nodes.keys.sorted() { _ = fresh.membershipChanged(.updated(mesh.view(name, .alive)), now: mesh.now) }
        fresh.restore([prefixHeld])
        let restored = try #require(fresh.image(of: "s1"))
        #expect(restored.records.map(\.signature) == compacted.records.map(\.signature))
    }

    /// Forged bases are refused: a bad signature, a cut that is not the checkpoint before it,
    /// a table that is not the journal's (even correctly signed), a table altered after signing,
    /// and an image that starts past seq 1 without a base.
    @Test func aForgedBaseIsRefused() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        try Self.record(&mesh, "s1", rounds: 0..<3)
        let replica = try #require(mesh.replica(of: "s1"))
        let image = try #require(mesh.nodes[replica]!.image(of: "s1"))
        let c = mesh.crypto[owner]!
        let last = image.records.last!
        #expect(last.kind == .checkpoint)
        // The genuine base: the options (empty) and k0..k2 with their seqs and results.
        var table: [SessionBase.Effect] = []
        for i in 0..<3 {
            let started = UInt64(2 + 3 * i)
            let result: [UInt8] = Array("{\"ran\":\"s1/k\(i)\"}".utf8)
            table.append(SessionBase.Effect(key: "k\(i)", startedSeq: started, resultSeq: started + 1, result: result))
        }
        let genuine = SessionBase(cutSeq: last.seq, options: [], effects: table)
        func seal(_ base: SessionBase, seq: UInt64? = nil, by crypto: SessionCrypto? = nil) -> SessionRecord {
            (crypto ?? c).seal(session: "s1", seq: seq ?? last.seq + 1, previousHash: c.hash(of: last), epoch: image.epoch, kind: .base, key: "",
                               content: base.encoded, signer: owner)
        }
        func answer(_ record: SessionRecord) -> SessionMessage? {
            var n = mesh.nodes[replica]!
            let effects = n.request(.append(record), from: owner, token: RequestToken(rawValue: 77), now: mesh.now)
            for case .respond(let m, _) in effects { return m }
            for case .perform(.persist(_, .respond(_, let m))) in effects { return m }
            return nil
        }
        func refused(_ m: SessionMessage?) -> Bool { if case .invalid? = m { return true }; return false }

        var badSignature = seal(genuine)
        badSignature.signature[0] ^= 1
        #expect(refused(answer(badSignature)))
        var wrongCut = genuine
        wrongCut.cutSeq = last.seq - 1
        #expect(refused(answer(seal(wrongCut))))
        var forgotten = genuine
        forgotten.effects.removeFirst()  // signed by the owner, and forgets k0
        #expect(refused(answer(seal(forgotten))))
        var otherResult = genuine
        otherResult.effects[1].result = Array("{\"ran\":\"elsewhere\"}".utf8)
        #expect(refused(answer(seal(otherResult))))
        var altered = seal(genuine)
        altered.content = otherResult.encoded  // altered after signing
        #expect(refused(answer(altered)))
        // Signed by another node than the epoch's owner.
        let stranger = mesh.crypto.keys.sorted().first { $0 != owner }!
        #expect(refused(answer(seal(genuine, by: mesh.crypto[stranger]!))))
        let forgedBefore = mesh.nodes[replica]!.counters.forged
        _ = answer(seal(forgotten))
        #expect(mesh.nodes[replica]!.counters.forged == forgedBefore)  // `answer` does not keep the node's state

        // The genuine one is stored, and the replica drops what is before the cut at once.
        guard case .stored? = answer(seal(genuine)) else { Issue.record("the genuine base was refused"); return }
        var n = mesh.nodes[replica]!
        _ = n.request(.append(seal(genuine)), from: owner, token: RequestToken(rawValue: 78), now: mesh.now)
        let compacted = try #require(n.image(of: "s1"))
        #expect(compacted.records.map(\.seq) == [last.seq, last.seq + 1])

        // Images starting at the cut: with the genuine base they hold; without a base, with a
        // base altered after signing, or with a base naming another cut, they do not.
        func installed(_ records: [SessionRecord]) -> Bool {
            var other = mesh.nodes[stranger == replica ? owner : replica]!
            let probe = SessionImage(id: "s1", epoch: image.epoch + 1, owner: owner, replicas: image.replicas, records: records)
            let effects = other.request(.install(probe), from: owner, token: RequestToken(rawValue: 79), now: mesh.now)
            for case .respond(.invalid, _) in effects { return false }
            return true
        }
        #expect(installed(compacted.records))
        #expect(!installed([compacted.records[0]]))
        #expect(!installed([compacted.records[0], altered]))
        #expect(!installed([compacted.records[0], seal(wrongCut)]))
        #expect(!installed(Array(image.records.dropFirst())))  // no base at all: refused
        // A whole chain with a base after it: the base is checked against the records before it.
        #expect(installed(image.records + [seal(genuine)]))
        #expect(!installed(image.records + [seal(forgotten)]))
    }

    /// The base codec is total and bounded.
    @Test func theBaseCodecIsTotal() throws {
        let base = SessionBase(cutSeq: 40, options: Array("{\"agent\":{}}".utf8),
                               effects: [SessionBase.Effect(key: "a", startedSeq: 2, resultSeq: 3, result: Array("{}".utf8)),
                                         SessionBase.Effect(key: "b", startedSeq: 4, resultSeq: 0, result: nil)])
        let bytes = base.encoded
        #expect(try SessionBase.decode(bytes) == base)
        for cut in 0..<bytes.count { #expect(throws: (any Error).self) { try SessionBase.decode(Array(bytes.prefix(cut))) } }
        #expect(throws: (any Error).self) { try SessionBase.decode(bytes + [0]) }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            var mutated = bytes
            for _ in 0..<2 { mutated[Int.random(in: 0..<mutated.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? SessionBase.decode(mutated)
        }
        // A key twice, a result seq before its start, a count larger than the bytes: refused.
        var twice = base
        twice.effects[1].key = "a"
        #expect(throws: (any Error).self) { try SessionBase.decode(twice.encoded) }
        var backwards = base
        backwards.effects[0].resultSeq = 1
        #expect(throws: (any Error).self) { try SessionBase.decode(backwards.encoded) }
        var lying = SessionBase(cutSeq: 5, options: [], effects: []).encoded
        lying.replaceSubrange(lying.count - 4..<lying.count, with: [0, 0, 16, 0])
        #expect(throws: (any Error).self) { try SessionBase.decode(lying) }
    }

    /// A whole image stays within one link frame: with a 1 MiB state, 16 KiB tasks and results
    /// and long keys, an image never passes `maxImageBytes`; a write that would make it pass is
    /// refused with its reason (never sent, never a trap).
    @Test func aWholeImageFitsOneFrame() throws {
        var mesh = try SessionMesh(["n1", "n2", "n3"])
        let owner = try SessionsTests.created(&mesh, "s1")
        let big = [UInt8](repeating: 0x61, count: SessionLimits.maxEffectBytes - 64)
        let key = { (i: Int) in String(repeating: "k", count: 120) + "\(i)" }
        var state = [UInt8](repeating: 0x31, count: SessionLimits.maxStateBytes)
        func check() {
            for (_, image) in Self.copies(mesh, "s1") {
                #expect(Sessions.encode(.install(image)).count <= SessionLimits.maxImageBytes)
            }
        }
        for i in 0..<150 {
            // Results as large as the bound (the mesh's runner answers small ones: use tasks).
            guard case .acted? = mesh.command(owner, .act(id: "s1", key: key(i), task: Array("{\"pad\":\"".utf8) + big + Array("\"}".utf8))) else {
                Issue.record("effect \(i)"); return
            }
            if i % 10 == 9 {
                state[i] = 0x32
                guard case .recorded? = mesh.command(owner, .checkpoint(id: "s1", state: state)) else { Issue.record("checkpoint \(i)"); return }
            }
            check()
        }
        // Effects that never finish keep their 16 KiB task each, and each reserves room for its
        // result: the session refuses new ones before its image could pass a frame.
        mesh.holdEffects = true
        var refusal: String?
        for i in 1_000..<1_200 {
            let reply = mesh.command(owner, .act(id: "s1", key: key(i), task: Array("{\"pad\":\"".utf8) + big + Array("\"}".utf8)))
            if case .rejected(let reason)? = reply { refusal = reason; break }
            check()
        }
        #expect(refusal?.contains("link frame") == true)
        check()
    }
}
