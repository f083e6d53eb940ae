import Foundation
import Glibc
import StarlingCore
import Synchronization
import Testing

/// Sessions across a 2|3 partition and its heal, on the fault rig (real `starling node`s in
/// network namespaces, nftables drops; root only, like `SwarmPartitionTests`).
///
/// The split is {n1, n2} | {n3, n4, n5}. Three sessions are picked by their ring placement so
/// that each one's replica set is split by it:
/// - `ownerOnMinority`: the owner and no other replica on the 2-side; the 3-side holds two
///   replicas, takes the session over under a higher epoch and records;
/// - `ownerOnMajority`: the owner and one replica on the 3-side, which goes on recording; one
///   replica on the 2-side;
/// - `replicaMajorityOnMinority`: the owner and a second replica on the 2-side: the smaller side
///   holds the replica majority, so it records and the 3-side must not.
///
/// Clients checkpoint and run effects through nodes of both sides for the whole split. What must
/// hold: only the side holding a majority of a session's replica set acknowledges writes to it
/// (the other side's are refused); after the heal every acknowledged checkpoint is in the chain
/// of the node that serves the session; and no effect key reached the external service twice
/// (the service is a server in the rig's hub namespace, reached by the tasks at 10.77.0.254).
@Suite("Fault rig: sessions across a 2|3 partition and its heal", .serialized,
       .enabled(if: FaultRig.unavailableReason == nil || FaultRig.mustRun,
                Comment(rawValue: FaultRig.unavailableReason ?? "")))
struct SessionPartitionTests {
    static let minority = ["n1", "n2"]
    static let majority = ["n3", "n4", "n5"]
    /// How long the split holds after each side lists the other dead.
    static let heldAfterDeath: Double = 10
    /// Effect keys each client sends during the split (2 clients a session, plus one before: 2 × 16 + 1 ≤ 64).
    static let effectsPerClient = 16

    enum Placement: String, CaseIterable {
        case ownerOnMinority, ownerOnMajority, replicaMajorityOnMinority
    }

    /// One request a client made, and what it got.
    struct Outcome: Sendable {
        var session: String
        var side: String        // "minority" or "majority": the side of the node it went through
        var via: String
        var kind: String        // "checkpoint" or "effect"
        var status: Int         // 0: no answer within the client's deadline
        var seq: Int?
        var hash: String?
        var key: String?
        var replayed: Bool?
        var during: Bool        // sent between the partition and the heal
    }

    @Test(.timeLimit(.minutes(10)))
    func onlyTheReplicaMajoritySideRecordsAndNothingAcknowledgedIsLostOrRunTwice() throws {
        let rig = try FaultRig(nodes: 5)
        defer { rig.down() }
        let work = try rig.status().work
        let policy = work + "/policy.json"
        try Data(#"{"net": "host"}"#.utf8).write(to: URL(fileURLWithPath: policy))
        let server = try EffectServer(namespace: "/run/netns/st-\(rig.name)-hub", address: "10.77.0.254", port: 18_080)
        defer { server.stop() }
        try rig.startAll(seconds: 60, extraArguments: ["--policy", policy])
        let client = HubClient(rig: rig)
        let all = rig.nodeNames

        // Sessions whose replica sets the split cuts the three ways, placed as live placement
        // places them (the rig's nodes have 2 slots each), each on an owner of its own (so
        // that no load bound moves one before the split).
        let candidates = all.map { SessionLivePlacement.Candidate(name: $0, slots: 2, owned: 0) }
        let placement = SessionLivePlacement(ring: SessionLivePlacement.ring(for: candidates), candidates: candidates, epsilon: 0.25)
        let tag = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        var chosen: [Placement: (id: String, replicas: [String])] = [:]
        for i in 0..<2_000 where chosen.count < Placement.allCases.count {
            let id = "ps-\(tag)-\(i)"
            guard let owner = placement.owners(for: id).first, !chosen.values.contains(where: { $0.replicas[0] == owner }) else { continue }
            let replicas = placement.replicas(for: id, owner: owner, count: 3)
            let onMinority = replicas.filter { Self.minority.contains($0) }.count
            let placement: Placement
            switch (Self.minority.contains(replicas[0]), onMinority) {
            case (true, 1): placement = .ownerOnMinority
            case (false, 1): placement = .ownerOnMajority
            case (true, 2): placement = .replicaMajorityOnMinority
            default: continue
            }
            if chosen[placement] == nil { chosen[placement] = (id, replicas) }
        }
        try #require(chosen.count == Placement.allCases.count, "no id for every placement: \(chosen)")
        let sessions = Placement.allCases.map { chosen[$0]! }
        // The side that holds a majority of each session's replica set: the only one that may record.
        var recordingSide: [String: String] = [:]
        for (id, replicas) in sessions {
            recordingSide[id] = replicas.filter { Self.minority.contains($0) }.count >= 2 ? "minority" : "majority"
        }

        let writer = Writer(client: client, server: server)
        func checkpoint(_ id: String, via node: String, during: Bool) { writer.checkpoint(id, via: node, during: during) }
        func effect(_ id: String, key: String, via node: String, during: Bool) { writer.effect(id, key: key, via: node, during: during) }

        // Before the split: each session created where the ring places it, with some history.
        for (id, replicas) in sessions {
            let (status, created) = client.call("POST", "/v1/sessions", on: "n3", json: ["id": id], seconds: 30)
            #expect(status == 201, "create \(id): \(status) \(created)")
            #expect(created["owner"] as? String == replicas[0], "\(id) placed on \(String(describing: created["owner"])), ring says \(replicas)")
            for _ in 0..<3 { checkpoint(id, via: replicas[0], during: false) }
            effect(id, key: "before", via: replicas[0], during: false)
        }
        let before = writer.outcomes.withLock { $0 }
        #expect(before.allSatisfy { $0.status == 200 }, "writes before the split: \(before.filter { $0.status != 200 })")

        // The split, with one client per session and side writing until the split ends.
        let partitionedAt = Date()
        try rig.partition(Self.minority, Self.majority)
        let clientsDone = DispatchGroup()
        for (id, _) in sessions {
            for side in [Self.minority, Self.majority] {
                clientsDone.enter()
                let thread = Thread {
                    defer { clientsDone.leave() }
                    var round = 0
                    while !writer.stopped.load(ordering: .relaxed) {
                        let via = side[round % side.count]
                        writer.checkpoint(id, via: via, during: true)
                        // A session holds at most 64 effects (SessionLimits.maxEffects): each
                        // client sends at most `effectsPerClient` keys.
                        if round % 2 == 1, round / 2 < Self.effectsPerClient {
                            writer.effect(id, key: "p\(round)-\(Self.side(of: via))", via: via, during: true)
                        }
                        round += 1
                    }
                }
                thread.start()
            }
        }
        var detectedAfter = -1.0
        do {
            try rig.waitUntil("each side lists the other dead", seconds: 60) {
                rig.allSee(Self.majority, as: "dead", by: Self.minority) && rig.allSee(Self.minority, as: "dead", by: Self.majority)
            }
            detectedAfter = Date().timeIntervalSince(partitionedAt)
            Thread.sleep(forTimeInterval: Self.heldAfterDeath)
        } catch {
            writer.stopped.store(true, ordering: .relaxed)
            clientsDone.wait()
            throw error
        }
        writer.stopped.store(true, ordering: .relaxed)
        clientsDone.wait()
        let healedAt = Date()
        try rig.heal()

        try rig.waitUntil("all five list all five alive after the heal", seconds: 120) { rig.allSee(all, as: "alive", by: all) }
        // Every session is served again, through every node.
        var views: [String: [String: Any]] = [:]
        for (id, _) in sessions {
            for node in all {
                var last = (0, [String: Any]())
                do {
                    try IntegrationTests.waitUntil("\(id) is served through \(node) after the heal", seconds: 90) {
                        last = client.call("GET", "/v1/sessions/\(id)", on: node, seconds: 10)
                        if last.0 == 200 { views[id] = last.1 }
                        return last.0 == 200
                    }
                } catch let timeout as TimedOut {
                    // What every node answers for itself now (the hop header: it does not forward),
                    // and the tails of the logs: enough to tell a node that never learned of the
                    // new owner from one that cannot reach it.
                    let answers = all.map { n in
                        let (status, body) = client.call("GET", "/v1/sessions/\(id)?since=\(Int64.max)", on: n, seconds: 10,
                                                         headers: ["X-Starling-Forwarded: diagnostics"])
                        return "\(n): \(status) \(body.filter { ["owner", "epoch", "seq", "error", "replicas"].contains($0.key) })"
                    }
                    throw TimedOut(description: "\(timeout.description); last answer \(last.0) \(last.1)\nnow:\n"
                                   + answers.joined(separator: "\n") + "\nviews:\n\(rig.describeViews())\n"
                                   + all.map { "\($0)'s log:\n\(rig.log(of: $0))" }.joined(separator: "\n"))
                }
            }
        }
        let servedAfterHeal = Date().timeIntervalSince(healedAt)

        // After the heal, every key ever sent is sent again: a recorded result replays, an
        // unknown outcome stays unknown, a key that never started runs now (once).
        let sentKeys = writer.outcomes.withLock { $0 }.filter { $0.kind == "effect" }.map { ($0.session, $0.key!) }
        var resent: [String: Int] = [:]
        for (id, key) in Set(sentKeys.map { "\($0.0)\t\($0.1)" }).sorted().map({ $0.split(separator: "\t").map(String.init) }).map({ ($0[0], $0[1]) }) {
            effect(id, key: key, via: all[(resent.values.reduce(0, +)) % all.count], during: false)
            let last = writer.outcomes.withLock { $0.last! }
            resent[last.status == 200 ? (last.replayed == true ? "replayed" : "ranNow") : "\(last.status)", default: 0] += 1
            #expect(last.status == 200 || last.status == 409, "\(id) key \(key) after the heal: \(last.status)")
        }

        // The views again, now that the resends wrote their records.
        for (id, _) in sessions {
            let (status, body) = client.call("GET", "/v1/sessions/\(id)", on: "n3", seconds: 10)
            #expect(status == 200, "\(id) after the resends: \(status)")
            views[id] = body
        }

        // Checks.
        let all_ = writer.outcomes.withLock { $0 }
        let during = all_.filter(\.during)
        var report: [String: Any] = ["detectedDeadAfterSeconds": Self.rounded(detectedAfter),
                                     "partitionSeconds": Self.rounded(healedAt.timeIntervalSince(partitionedAt)),
                                     "servedEverywhereAfterHealSeconds": Self.rounded(servedAfterHeal), "resentKeys": resent]
        var perSession: [String: Any] = [:]
        for (placement, (id, replicas)) in zip(Placement.allCases, sessions) {
            let mine = during.filter { $0.session == id }
            let recorder = recordingSide[id]!
            let acked = mine.filter { (200..<300).contains($0.status) }
            let refused = mine.filter { !(200..<300).contains($0.status) && $0.side != recorder }
            // At most one side records, and it is the side with the replica majority.
            let sidesThatRecorded = Set(acked.map(\.side))
            #expect(sidesThatRecorded.isSubset(of: [recorder]), "\(placement) \(id): writes acknowledged on \(sidesThatRecorded), only \(recorder) holds a replica majority of \(replicas)")
            #expect(acked.contains { $0.side == recorder }, "\(placement) \(id): the \(recorder) side recorded nothing during the split")
            let otherSideStatuses = Dictionary(mine.filter { $0.side != recorder }.map { ("\($0.status)", 1) }, uniquingKeysWith: +)
            // Refused: 503, or no answer within the client's deadline (a forward to a holder
            // behind the cut waits for its timeout), or 404 from a node that forwarded, during
            // the detection window, only to a node holding no copy (a finding in NOTES).
            #expect(mine.filter { $0.side != recorder }.allSatisfy { [503, 0, 404].contains($0.status) },
                    "\(placement) \(id): the side without a replica majority answered \(otherSideStatuses)")
            #expect(mine.contains { $0.side != recorder && $0.status == 503 },
                    "\(placement) \(id): the side without a replica majority never answered 503: \(otherSideStatuses)")

            // No acknowledged checkpoint is lost: each is in the chain of the node serving it now.
            let view = views[id] ?? [:]
            let owner = view["owner"] as? String ?? "?"
            let headSeq = view["seq"] as? Int ?? -1
            let headHash = view["hash"] as? String ?? ""
            let chain = try storedRecords(dataDir: "\(work)/\(owner)", session: id)
            let ackedCheckpoints = all_.filter { $0.session == id && $0.kind == "checkpoint" && $0.status == 200 }
            for c in ackedCheckpoints {
                #expect(chainHolds(seq: c.seq ?? -1, hash: c.hash ?? "", chain: chain, headSeq: headSeq, headHash: headHash),
                        "\(placement) \(id): checkpoint seq \(c.seq ?? -1) acknowledged through \(c.via) is not in \(owner)'s chain")
                #expect(chain.first { $0.seq == c.seq }?.kind == 2, "\(placement) \(id): seq \(c.seq ?? -1) is not a checkpoint in \(owner)'s chain")
            }
            // The chain is whole (1...head, each record named by the next) in the owner's store.
            #expect(chain.map(\.seq) == Array(1...max(1, headSeq)), "\(placement) \(id): \(owner)'s chain is \(chain.map(\.seq))")
            let epochs = chain.map(\.epoch)
            #expect(epochs == epochs.sorted(), "\(placement) \(id): epochs go back in the chain: \(epochs)")
            perSession[placement.rawValue] = [
                "id": id, "replicas": replicas, "recordingSide": recorder, "ownerAfterHeal": owner,
                "epochAfterHeal": view["epoch"] ?? NSNull(), "seqAfterHeal": headSeq,
                "writesDuringSplit": mine.count, "acknowledgedDuringSplit": acked.count,
                "refusedOnOtherSide": refused.count, "otherSideStatuses": otherSideStatuses,
                "checkpointsAcknowledgedInAll": ackedCheckpoints.count,
                "signersInChain": Dictionary(chain.map { ("\($0.signer)@\($0.epoch)", 1) }, uniquingKeysWith: +),
            ]
        }
        report["sessions"] = perSession

        // No effect key reached the service twice; every key answered 200 reached it exactly once.
        let counts = server.effectCounts()
        let twice = counts.filter { $0.value > 1 }
        #expect(twice.isEmpty, "effect keys run more than once: \(twice)")
        let done = Set(all_.filter { $0.kind == "effect" && $0.status == 200 }.map { "\($0.session)/\($0.key!)" })
        for key in done { #expect(counts[key] == 1, "\(key) was answered 200 and reached the service \(counts[key] ?? 0) times") }
        report["effectKeys"] = Set(sentKeys.map { "\($0.0)/\($0.1)" }).count
        report["effectKeysRunOnce"] = counts.filter { $0.value == 1 }.count
        report["effectKeysRunTwice"] = twice.count
        report["effectKeysNeverRun"] = Set(sentKeys.map { "\($0.0)/\($0.1)" }).subtracting(counts.keys).count
        report["requestsDuringSplit"] = during.count
        let line = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print("session-partition: " + String(decoding: line, as: UTF8.self))
    }

    static func side(of node: String) -> String { minority.contains(node) ? "minority" : "majority" }

    /// The clients' requests and what each got, shared by the client threads.
    final class Writer: Sendable {
        let client: HubClient
        let server: EffectServer
        let outcomes = Mutex<[Outcome]>([])
        let counter = Atomic<Int>(0)
        let stopped = Atomic<Bool>(false)

        init(client: HubClient, server: EffectServer) {
            self.client = client
            self.server = server
        }

        func checkpoint(_ id: String, via node: String, during: Bool) {
            let n = counter.add(1, ordering: .relaxed).newValue
            let (status, body) = client.call("POST", "/v1/sessions/\(id)/checkpoint", on: node,
                                             json: ["state": ["n": n, "via": node]], seconds: 8)
            outcomes.withLock {
                $0.append(Outcome(session: id, side: SessionPartitionTests.side(of: node), via: node, kind: "checkpoint", status: status,
                                  seq: body["seq"] as? Int, hash: body["hash"] as? String, key: nil, replayed: nil, during: during))
            }
        }

        func effect(_ id: String, key: String, via node: String, during: Bool) {
            let (status, body) = client.call("POST", "/v1/sessions/\(id)/actions", on: node,
                                             json: ["key": key, "argv": ["bash", "-c", server.effectScript()], "net": "host",
                                                    "timeoutSeconds": 20], seconds: 25)
            outcomes.withLock {
                $0.append(Outcome(session: id, side: SessionPartitionTests.side(of: node), via: node, kind: "effect", status: status, seq: nil,
                                  hash: nil, key: key, replayed: body["replayed"] as? Bool, during: during))
            }
        }
    }
    static func rounded(_ x: Double) -> Double { (x * 10).rounded() / 10 }
}

/// JSON requests to the rig's nodes from its hub namespace (curl under `nsenter --net`, so
/// every node's API is reachable whatever faults are set), safe to call from many threads.
struct HubClient: Sendable {
    let hub: String

    init(rig: FaultRig) { hub = "/run/netns/st-\(rig.name)-hub" }

    /// Status and JSON body (status 0 when the node did not answer within `seconds`).
    func call(_ method: String, _ path: String, on node: String, json: Any? = nil, seconds: Int, headers: [String] = []) -> (Int, [String: Any]) {
        var args = ["--net=\(hub)", "curl", "-s", "--max-time", "\(seconds)", "-X", method, "-w", "\n%{http_code}"]
        for header in headers { args += ["-H", header] }
        if let json, let data = try? JSONSerialization.data(withJSONObject: json) {
            args += ["-H", "content-type: application/json", "--data-binary", String(decoding: data, as: UTF8.self)]
        }
        args.append("http://10.77.0.\(node.dropFirst()):8400\(path)")
        guard let out = try? runToolAnyStatus("/usr/bin/nsenter", args), let cut = out.lastIndex(of: "\n"),
              let status = Int(out[out.index(after: cut)...]) else { return (0, [:]) }
        return (status, jsonObject(Data(out[..<cut].utf8)))
    }
}

/// Runs a tool and returns its stdout whatever its exit status (curl exits non-zero on a timeout
/// and still prints its `-w` line).
func runToolAnyStatus(_ path: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self)
}
