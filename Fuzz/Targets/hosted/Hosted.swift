import FuzzSupport
import StarlingCore

/// The decoders of the hosted protocols' messages (the swarm channel, the audit witness and
/// sessions),
/// which read whatever a peer with the cluster key puts in a link frame. The input's first byte
/// picks the decoder, the rest is the message. Arbitrary bytes either decode or throw; what
/// decodes fits its channel's bound once encoded again, and round-trips.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHosted(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let input = bytes(data, size)
    guard let selector = input.first else { return 0 }
    let message = Array(input.dropFirst())
    switch selector % 3 {
    case 0:
        guard let decoded = try? Swarm.decode(message) else { return 0 }
        let again = Swarm.encode(decoded)
        invariant(again.count <= Swarm.maxMessageBytes, "a decoded swarm message encodes over its bound")
        invariant((try? Swarm.decode(again)) == decoded, "a decoded swarm message does not round-trip")
    case 2:
        guard let decoded = try? Sessions.decode(message) else { return 0 }
        let again = Sessions.encode(decoded)
        invariant(again.count <= Sessions.maxMessageBytes, "a decoded session message encodes over its bound")
        invariant((try? Sessions.decode(again)) == decoded, "a decoded session message does not round-trip")
    default:
        guard let decoded = try? AuditWitness.decode(message) else { return 0 }
        let again = AuditWitness.encode(decoded)
        invariant(again.count <= AuditWitness.maxMessageBytes, "a decoded audit message encodes over its bound")
        invariant((try? AuditWitness.decode(again)) == decoded, "a decoded audit message does not round-trip")
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    writeSeedsIfAsked(HostedSeeds.all)
    return 0
}

/// Real encoded messages of every channel, each prefixed with its selector byte.
enum HostedSeeds {
    static let swarmID = "0011223344556677"

    static var swarmMessages: [String: SwarmMessage] {
        let needs = TaskNeeds(memoryMB: 128, milliCPUs: 1000)
        let task = SwarmTask(id: "echo-1", needs: needs, payload: Array("{\"argv\":[\"/bin/true\"]}".utf8))
        let run = TaskRun(swarm: swarmID, index: 0, attempt: 1, task: task, options: [], maxAttempts: 2)
        let record = TaskRecord(state: .running, attempt: 1, node: "node-b", result: [], finishSeq: 0)
        var lineage = FinishLineage.created
        lineage.begin(Reign(epoch: 3, owner: 1), from: 7)
        lineage.learn(FinishLineage(marks: [.init(reign: Reign(epoch: 1, owner: 0), from: 0), .init(reign: Reign(epoch: 2, owner: 2), from: 4)]))
        return [
            "swarm-created": .created(swarmID, owner: "node-a"),
            "swarm-replicated": .replicated(swarmID, version: 3, status: .applied),
            "swarm-sync-page": .syncPage(SyncPage(id: swarmID, known: true, epoch: 1, version: 3, state: .running,
                                                  children: [], from: 0, records: [record], next: nil, lineage: lineage)),
            "swarm-replicate-whole": .replicate(ReplicaUpdate(id: swarmID, epoch: 3, baseVersion: 3, version: 3, state: .running,
                                                              definition: nil, records: [IndexedRecord(index: 0, record: record)],
                                                              children: [], last: true, lineage: lineage)),
            "swarm-reserve": .reserve(swarmID, epoch: 1, replicas: ["node-a", "node-b"], needs: [needs]),
            "swarm-assign": .assign(run, epoch: 1, replicas: ["node-a"]),
            "swarm-result": .result(swarmID, index: 0, attempt: 1, outcome: .denied, result: Array("{}".utf8)),
            "swarm-adopt": .adopt(swarmID, epoch: 2, replicas: ["node-c"], runs: [RunRef(index: 0, attempt: 1)]),
            "swarm-child-created": .childCreated(parent: TaskRef(swarm: swarmID, task: 0), child: "8899aabbccddeeff",
                                                 replicas: ["node-a"], options: Array("{}".utf8), tasks: 5),
            "swarm-child-refused": .childRefused("8899aabbccddeeff", reason: "the parent's spawn budget is spent"),
        ]
    }

    static var all: [String: [UInt8]] {
        var seeds: [String: [UInt8]] = [:]
        for (name, message) in swarmMessages { seeds[name] = [0] + Swarm.encode(message) }
        let head = AuditWitness.Head(seq: 42, hash: Array(repeating: 7, count: 32),
                                     signature: Array(repeating: 8, count: 64), publicKey: Array(repeating: 9, count: 32))
        seeds["audit-head"] = [1] + AuditWitness.encode(.head(head))
        seeds["audit-ask"] = [1] + AuditWitness.encode(.ask)
        seeds["audit-witnessed"] = [1] + AuditWitness.encode(.witnessed(head))
        seeds["audit-witnessed-none"] = [1] + AuditWitness.encode(.witnessed(nil))
        let record = SessionRecord(session: "agent-1", seq: 2, previousHash: Array(repeating: 1, count: 32), epoch: 1,
                                   kind: .checkpoint, key: "", contentDigest: Array(repeating: 2, count: 32),
                                   content: Array("{\"step\":2}".utf8), signer: "node-a", signerKey: Array(repeating: 3, count: 32),
                                   signature: Array(repeating: 4, count: 64))
        var bare = record
        bare.content = nil
        let (manifest, chunks) = StateManifest.of(record.content ?? [], hash: { _ in Array(repeating: 6, count: 32) })
        let image = SessionImage(id: "agent-1", epoch: 1, owner: "node-a", replicas: ["node-a", "node-b", "node-c"], records: [record])
        var sessionMessages: [String: SessionMessage] = [
            "session-append": .append(record), "session-install": .install(image),
            "session-prepare": .prepare(session: "agent-1", epoch: 2), "session-promised": .promised(session: "agent-1", image: image),
            "session-promised-none": .promised(session: "agent-1", image: nil), "session-stored": .stored(session: "agent-1", seq: 2),
            "session-stale": .stale(session: "agent-1", epoch: 3),
            "session-owned-by": .ownedBy(session: "agent-1", epoch: 1, owner: "node-a"),
            "session-append-chunks": .appendChunks(bare, manifest: manifest.encoded, chunks: chunks),
            "session-handoff": .handoff(image, epoch: 2, replicas: ["node-d", "node-a", "node-b"]),
            "session-transfer": .transfer(session: "agent-1", epoch: 2, to: "node-d"),
            "session-commit": .commit(session: "agent-1", epoch: 2, replicas: ["node-d", "node-a", "node-b"]),
            "session-release": .release(session: "agent-1", epoch: 2),
            "session-established": .established(session: "agent-1", epoch: 2),
            "session-install-joint": .install(SessionImage(id: "agent-1", epoch: 2, owner: "node-a", replicas: ["node-a", "node-b", "node-d"],
                                                           configEpoch: 2, jointOld: ["node-a", "node-b", "node-c"], records: [record])),
        ]
        // Compaction (SessionCompaction.swift): a base record, and an image that starts at its cut.
        let base = SessionBase(cutSeq: 2, options: Array("{\"agent\":{}}".utf8),
                               effects: [SessionBase.Effect(key: "model/a", startedSeq: 1, resultSeq: 0, result: nil)])
        var baseRecord = record
        baseRecord.seq = 3
        baseRecord.kind = .base
        baseRecord.content = base.encoded
        let compacted = SessionImage(id: "agent-1", epoch: 1, owner: "node-a", replicas: ["node-a"], records: [record, baseRecord])
        sessionMessages["session-append-base"] = .append(baseRecord)
        sessionMessages["session-install-compacted"] = .install(compacted)
        for (name, message) in sessionMessages { seeds[name] = [2] + Sessions.encode(message) }
        return seeds
    }
}
