import Testing
@testable import StarlingCore

@Suite("Swarm codec and ring")
struct SwarmCodecTests {
    static let id = "00ff00ff00ff00ff"

    static var definition: SwarmDefinition {
        SwarmDefinition(id: id, draft: draft(3, parent: TaskRef(swarm: "0123456789abcdef", task: 7)),
                        replicas: ["n1", "n2", "n3"])
    }

    static var record: TaskRecord {
        TaskRecord(state: .succeeded, attempt: 2, node: "n2", result: Array("{\"exit\":0}".utf8), finishSeq: 9)
    }

    static var run: TaskRun {
        TaskRun(swarm: id, index: 4, attempt: 1, task: SwarmTask(id: "t4", needs: TaskNeeds(memoryMB: 256, milliCPUs: 500),
                                                                 payload: Array("{}".utf8)),
                options: [9, 9], maxAttempts: 3)
    }

    /// One of every message, with every optional both set and unset.
    static var samples: [SwarmMessage] {
        [
            .create(definition),
            .created(id, owner: "n1"),
            .refused("too many swarms"),
            .replicate(ReplicaUpdate(id: id, epoch: 3, baseVersion: 4, version: 5, state: .running, definition: definition,
                                     records: [IndexedRecord(index: 1, record: record), IndexedRecord(index: 2, record: TaskRecord())],
                                     children: [ChildLink(child: "aaaaaaaaaaaaaaaa", replicas: ["n4"])], last: false,
                                     lineage: FinishLineage(marks: [.init(reign: Reign(epoch: 1, owner: 0), from: 0),
                                                                    .init(reign: Reign(epoch: 3, owner: 2), from: 17)],
                                                            aliases: [.init(reign: Reign(epoch: 3, owner: 1), ancestor: Reign(epoch: 1, owner: 0), cap: 9)]))),
            .replicate(ReplicaUpdate(id: id, epoch: 3, baseVersion: 5, version: 6, state: .cancelled, definition: nil,
                                     records: [], children: [], last: true)),
            .replicated(id, version: 6, status: .applied),
            .replicated(id, version: 0, status: .needFull),
            .replicated(id, version: 2, status: .staleEpoch(7)),
            .sync(id, from: 100),
            .syncPage(SyncPage(id: id, known: true, epoch: 2, version: 9, state: .done, children: [], from: 0,
                               records: [record, TaskRecord()], next: 2, lineage: .created)),
            .syncPage(SyncPage(id: id, known: false, epoch: 0, version: 0, state: .running, children: [], from: 0,
                               records: [], next: nil)),
            .reserve(id, epoch: 1, replicas: ["n1", "n2"], needs: [TaskNeeds(memoryMB: 1, milliCPUs: 2)]),
            .fetch(id, epoch: 1, maxMemoryMB: 512),
            .assign(run, epoch: 2, replicas: ["n1"]),
            .noTask(id),
            .result(id, index: 4, attempt: 1, outcome: .denied, result: [0, 1, 2]),
            .resultAck(id, index: 4, attempt: 1, verdict: .stale),
            .kill(id, index: 4, attempt: 1, epoch: 2),
            .adopt(id, epoch: 2, replicas: ["n2", "n3"], runs: [RunRef(index: 1, attempt: 1)]),
            .adopted(id, runs: []),
            .cancel(id),
            .cancelAnswer(id, .cancelled),
            .cancelAnswer(id, .notFound),
            .cancelAnswer(id, .redirect("n3")),
            .childCreated(parent: TaskRef(swarm: id, task: 3), child: "bbbbbbbbbbbbbbbb", replicas: ["n1"], options: Array("{}".utf8), tasks: 2),
            .childAnswer(id, parentCancelled: true),
            .childRefused(id, reason: "spawn budget exceeded"),
        ]
    }

    @Test func everyMessageRoundTrips() throws {
        for m in Self.samples {
            #expect(try Swarm.decode(Swarm.encode(m)) == m)
        }
    }

    @Test func everyTruncationAndEveryExtraByteThrows() {
        for m in Self.samples {
            let bytes = Swarm.encode(m)
            for n in 0..<bytes.count {
                #expect(throws: WireError.self, "\(m) cut at \(n)") { try Swarm.decode(Array(bytes[..<n])) }
            }
            #expect(throws: WireError.trailingBytes(1)) { try Swarm.decode(bytes + [0]) }
        }
    }

    @Test func randomAndMutatedBytesNeverTrap() {
        var rng = DeterministicRNG(seed: 42)
        var decoded = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                if bytes.count > 1 { bytes[0] = 1 }  // get past the version byte most of the time
            } else {
                let samples = Self.samples
                bytes = Swarm.encode(samples[Int(rng.next() % UInt64(samples.count))])
                for _ in 0..<(1 + Int(rng.next() % 4)) {
                    bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
            }
            // Either a valid message (that re-encodes to itself) or a WireError: never a trap.
            do {
                let m = try Swarm.decode(bytes)
                #expect(Swarm.encode(m) == bytes)
                decoded += 1
            } catch is WireError {
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        #expect(decoded > 0)
    }

    @Test func liesAboutCountsAndSizesAreRefusedBeforeAllocating() {
        // A reserve claiming 4 billion needs in a few bytes.
        var w = ByteWriter()
        w.write(SwarmMessage.formatVersion); w.write(UInt8(8)); w.write(Self.id); w.write(UInt32(1)); w.write(UInt8(0))
        w.write(UInt32.max)
        #expect(throws: WireError.tooLarge(field: "needs", size: Int(UInt32.max), limit: SwarmLimits.maxRunsPerMessage)) {
            try Swarm.decode(w.bytes)
        }
        // A result claiming a 2 GiB body.
        var r = ByteWriter()
        r.write(SwarmMessage.formatVersion); r.write(UInt8(12)); r.write(Self.id); r.write(UInt32(0)); r.write(UInt16(1)); r.write(UInt8(0))
        r.write(UInt32(1 << 31))
        #expect(throws: WireError.tooLarge(field: "result", size: 1 << 31, limit: SwarmLimits.maxResultBytes)) {
            try Swarm.decode(r.bytes)
        }
        // A swarm id that is not 16 hex digits.
        var bad = Swarm.encode(.noTask(Self.id))
        bad[bad.count - 1] = UInt8(ascii: "G")
        #expect(throws: WireError.invalidValue("swarm id")) { try Swarm.decode(bad) }
        // An unknown type and an unknown version.
        #expect(throws: WireError.unknownMessageType(99)) { try Swarm.decode([SwarmMessage.formatVersion, 99]) }
        #expect(throws: WireError.unsupportedVersion(3)) { try Swarm.decode([3, 1]) }
        // The format before lineages (version 1) is refused, not misread.
        #expect(throws: WireError.unsupportedVersion(1)) { try Swarm.decode([1, 1]) }
    }

    /// Whatever a peer sends, in whatever role, a node answers each request once and never traps.
    @Test func anyMessageFromAPeerIsHandledWithoutTrapping() {
        var mesh = SwarmTestMesh(nodes: 3, slots: 2)
        mesh.runTime = { _ in .seconds(5) }
        let command = mesh.submit(draft(4), at: "n0")
        mesh.run(for: .milliseconds(200)) { $0.replies[command] != nil }
        let id = mesh.swarmID(of: command) ?? Self.id
        // The samples (about an unknown swarm), and the same kinds about the live one.
        var messages = Self.samples
        messages += [
            .fetch(id, epoch: 0, maxMemoryMB: .max), .result(id, index: 0, attempt: 1, outcome: .succeeded, result: [1]),
            .result(id, index: 3, attempt: 0, outcome: .failed, result: []), .kill(id, index: 0, attempt: 1, epoch: .max),
            .adopt(id, epoch: .max, replicas: [], runs: [RunRef(index: 0, attempt: 1), RunRef(index: 70_000, attempt: 9)]),
            .sync(id, from: 0), .sync(id, from: .max), .cancel(id),
            .childCreated(parent: TaskRef(swarm: id, task: .max), child: Self.id, replicas: [], options: [], tasks: 100_000),
            .reserve(id, epoch: 0, replicas: [], needs: [TaskNeeds(memoryMB: .max, milliCPUs: .max)]),
        ]
        messages.append(.result(id, index: 99_999, attempt: .max, outcome: .succeeded, result: []))
        messages.append(.replicate(ReplicaUpdate(id: id, epoch: .max, baseVersion: 0, version: .max, state: .done,
                                                 definition: nil, records: [IndexedRecord(index: 99_999, record: Self.record)],
                                                 children: [], last: true)))
        for name in mesh.order {
            for (k, m) in messages.enumerated() {
                var node = mesh.nodes[name]!.swarm
                let effects = node.request(m, from: "n\(k % 3)", token: RequestToken(rawValue: UInt64(k)), now: mesh.now)
                let answers = effects.filter { if case .respond = $0 { return true } else { return false } }
                #expect(answers.count <= 1, "\(m) answered \(answers.count) times at once")
                _ = node.receive(m, from: "stranger", now: mesh.now)
                _ = node.response(m, to: RequestID(rawValue: UInt64(k + 1)), now: mesh.now)
                _ = node.response(nil, to: RequestID(rawValue: UInt64(k + 1000)), now: mesh.now)
                _ = node.tick(now: mesh.now + .seconds(1))
            }
        }
    }

    // MARK: Ring

    @Test func thePreferenceListIsDistinctDeterministicAndClockwise() {
        let ring = SwarmRing(members: (0..<8).map { "n\($0)" })
        let same = SwarmRing(members: (0..<8).reversed().map { "n\($0)" })
        for k in 0..<200 {
            let key = hex16(UInt64(k) &* 0x9E37_79B9)
            let list = ring.preferenceList(key, count: 3)
            #expect(list.count == 3 && Set(list).count == 3)
            #expect(list == same.preferenceList(key, count: 3))
            #expect(ring.preferenceList(key, count: 20).count == 8)
            #expect(Array(ring.preferenceList(key, count: 5).prefix(3)) == list)
        }
        #expect(SwarmRing(members: []).preferenceList("x", count: 3).isEmpty)
        // FNV-1a 64 of "" is the offset basis; the finaliser is fixed too: pinned across processes.
        #expect(SwarmRing.hash("n1#0") == SwarmRing.hash("n1#0"))
        #expect(SwarmRing.hash("a") != SwarmRing.hash("b"))
    }

    @Test(arguments: [10, 30])
    func aJoiningMemberTakesAboutOneNthOfTheKeys(n: Int) {
        let before = SwarmRing(members: (0..<n).map { "node-\($0)" })
        let after = SwarmRing(members: (0...n).map { "node-\($0)" })
        let keys = 20_000
        var moved = 0
        var toNewcomer = 0
        var share: [PeerName: Int] = [:]
        for k in 0..<keys {
            let key = hex16(UInt64(k) &* 0x9E37_79B9_7F4A_7C15)
            let a = before.owner(of: key)!, b = after.owner(of: key)!
            if a != b { moved += 1 }
            if b == "node-\(n)" { toNewcomer += 1 }
            share[a, default: 0] += 1
        }
        let expected = Double(keys) / Double(n + 1)
        // Only keys the newcomer takes move, and about 1/(N+1) of them do.
        #expect(moved == toNewcomer)
        #expect(Double(moved) > expected * 0.6 && Double(moved) < expected * 1.4, "moved \(moved), expected ≈\(Int(expected))")
        // Balance: every member owns within ±40% of 1/N.
        let fair = Double(keys) / Double(n)
        #expect(share.values.allSatisfy { Double($0) > fair * 0.6 && Double($0) < fair * 1.4 }, "\(share.values.sorted())")
    }
}

func hex16(_ n: UInt64) -> String {
    let s = String(n, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}
