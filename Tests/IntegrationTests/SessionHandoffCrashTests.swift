import Foundation
import Glibc
import StarlingCore
import Testing

/// kill -9 at each step of a session's handoff (migration on join, issue #11), in real
/// processes: three `starling node`s on 127.0.0.1 serve a session (its replica set is all three),
/// a fourth joins and is first in the session's preference list, so the owner hands the session
/// to it. Nothing in the node is changed for the test. Each step is held from outside:
///
/// - **The fence is held** by write locks on the stores of the owner's two other replicas
///   (`StoreWriteLock`): a replica promises the next owner (`transfer`) only once the promise is
///   stored, so with both locked the old owner O waits for its majority with the next owner P
///   holding the stored image (its `session` row), and O's own row showing the promise to P
///   (written in the same step as the transfers it sends).
/// - **(a) P killed after it stored the handoff, before the commit**: kill -9 of P there, then the
///   locks go.
/// - **(b) O killed after the fence, before the commit**: O is stopped (SIGSTOP), the locks go,
///   both replicas store their promise to P (read in their stores) and answer into O's socket;
///   O is killed without having read them, so no commit was ever sent. P must take the session
///   over by itself.
/// - **(c) O killed after the commit was sent**: P's store is locked too, then the replicas'
///   locks go; O commits, P takes the commit and sends the image of its epoch to the sets (seen
///   as a replica's row naming P's new set), but cannot serve until its own store has it; O is
///   killed then, before any answer to its commit could exist. P must serve.
/// - **(d) P killed after it took the commit, before it served**: as (c), but P is killed.
///
/// The handoff is started by the idle timer (`--session-move-after 3`): a session moves only when
/// no effect runs and no write came for that long, so an effect held on a gate keeps it in place
/// while P joins and settles; a checkpoint, then the effect's end, start the 3 s; the locks are
/// taken within them.
///
/// After each, through a survivor and its store: every checkpoint acknowledged to a client is in
/// the chain the session is served from; a client write sent to the session while the handoff was
/// held ends with 200 after internal retries; writes sent one by one from the crash on hear only
/// 503 ("try again") until one is taken, never 404; the session takes a new checkpoint; the effect
/// recorded before the crash replays (`replayed: true`) and the test's service saw its key once.
@Suite("Sessions: kill -9 at each step of a handoff", .serialized)
struct SessionHandoffCrashTests {
    static let firstNames = ["h1", "h2", "h3"]
    static let joinerName = "h4"
    static let moveAfterSeconds = 3.0

    /// A session id whose weighted preference list over the four nodes (2 slots each, as the
    /// harness starts them) puts the joiner first: the session moves to it once it is alive.
    static func sessionID(_ prefix: String) -> String {
        let candidates = (firstNames + [joinerName]).map { SessionLivePlacement.Candidate(name: $0, slots: 2, owned: 0) }
        let ring = SessionLivePlacement.ring(for: candidates)
        for i in 0..<1_000 where ring.preferenceList("\(prefix)-\(i)", count: 4).first == joinerName { return "\(prefix)-\(i)" }
        fatalError("no id of \(prefix) prefers \(joinerName)")
    }

    /// An acknowledged checkpoint: what the client was told.
    struct Ack: CustomStringConvertible {
        var seq: Int
        var hash: String
        var description: String { "\(seq):\(hash.prefix(8))" }
    }

    /// A session's handoff from O to P, held at the fence: P stored the image, O promised P and
    /// sent the transfers, and both other replicas wait on their locked stores.
    final class HeldHandoff {
        let cluster: LocalCluster
        let server: EffectServer
        let id: String
        let owner: NodeProcess
        let replicas: [NodeProcess]
        let joiner: NodeProcess
        let epochBefore: Int
        var acks: [Ack] = []
        var locks: [StoreWriteLock] = []
        var stopped: [NodeProcess] = []

        init(cluster: LocalCluster, server: EffectServer, id: String, owner: NodeProcess, replicas: [NodeProcess], joiner: NodeProcess,
             epochBefore: Int) {
            self.cluster = cluster
            self.server = server
            self.id = id
            self.owner = owner
            self.replicas = replicas
            self.joiner = joiner
            self.epochBefore = epochBefore
        }

        /// Ends what the test holds and every process it started, by PID, whatever the outcome.
        func tearDown() {
            for lock in locks { lock.release() }
            for node in stopped { node.signal(SIGCONT) }
            cluster.shutdown()
            server.stop()
        }

        func releaseLocks(of nodes: [NodeProcess]) {
            for lock in locks where nodes.contains(where: { $0.dataDir == lock.dataDir }) { lock.release() }
        }

        func row(_ node: NodeProcess) -> StoredSessionRow? { storedSessionRow(dataDir: node.dataDir, session: id) }
    }

    static func checkpoint(_ state: [String: Any], session id: String, via node: NodeProcess) throws -> Ack {
        let (status, body) = httpCallRetrying(port: node.apiPort, method: "POST", path: "/v1/sessions/\(id)/checkpoint", json: ["state": state])
        guard status == 200, let seq = body["seq"] as? Int, let hash = body["hash"] as? String else {
            throw StartFailed(description: "checkpoint \(state) of \(id) through \(node.name): \(status) \(body)")
        }
        return Ack(seq: seq, hash: hash)
    }

    static func act(_ server: EffectServer, key: String, gate: String? = nil) -> [String: Any] {
        ["key": key, "argv": ["bash", "-c", server.effectScript(gate: gate)], "net": "host", "timeoutSeconds": 60]
    }

    /// Three nodes serve `prefix`'s session with two checkpoints and one recorded effect (`e1`);
    /// a fourth joins; the handoff starts and is held at the fence (see the suite's comment).
    static func holdHandoffAtTheFence(_ prefix: String) throws -> HeldHandoff {
        let server = try EffectServer()
        let cluster: LocalCluster
        do { cluster = try LocalCluster() } catch {
            server.stop()
            throw error
        }
        var locks: [StoreWriteLock] = []
        do {
            return try holdHandoff(session: sessionID(prefix), cluster: cluster, server: server, locks: &locks)
        } catch {
            for lock in locks { lock.release() }
            cluster.shutdown()
            server.stop()
            throw error
        }
    }

    private static func holdHandoff(session id: String, cluster: LocalCluster, server: EffectServer,
                                    locks: inout [StoreWriteLock]) throws -> HeldHandoff {
        let flags = ["--policy", try cluster.hostNetworkPolicy(), "--session-move-after", "\(moveAfterSeconds)",
                     "--audit-head-interval", "3600"]
        let nodes = try cluster.startAlive(firstNames, extraArguments: flags, seconds: 20)
        let (status, created) = httpCallRetrying(port: nodes[0].apiPort, method: "POST", path: "/v1/sessions", json: ["id": id])
        guard status == 201, let ownerName = created["owner"] as? String, let owner = nodes.first(where: { $0.name == ownerName }) else {
            throw StartFailed(description: "create \(id): \(status) \(created)")
        }
        let replicas = nodes.filter { $0 !== owner }
        var acks = [try checkpoint(["step": 1], session: id, via: owner)]

        // e1 runs, held on its gate: the session cannot move while it runs, however long the
        // joiner takes to start and settle.
        let e1 = RetriedCall(port: owner.apiPort, method: "POST", path: "/v1/sessions/\(id)/actions", json: act(server, key: "e1", gate: "e1"))
        try waitUntil("the task of e1 runs and waits on its gate", seconds: 30) { server.isWaiting("e1") }
        let joiner = try cluster.start(joinerName, join: [nodes[0]], extraArguments: flags)
        let all = nodes + [joiner]
        try waitUntil("4 alive everywhere", seconds: 20) {
            all.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 4 }
        }
        // The joiner sends its audit head once, 0.5 s after its start, and its witnesses store it
        // on their loop: done before any store is locked (see `StoreWriteLock`). A witness that
        // did not see the joiner alive yet drops the head (it is not stored later), hence no throw.
        try? waitUntil("the joiner's audit head is witnessed", seconds: 3) {
            nodes.filter { node in
                let out = try? runTool("/usr/bin/sqlite3", ["-readonly", node.dataDir + "/starling.sqlite",
                                                           "SELECT count(*) FROM audit_witness WHERE node = '\(joinerName)'"])
                return out?.trimmingCharacters(in: .whitespacesAndNewlines) == "1"
            }.count >= 2
        }

        // The idle time starts at this checkpoint (e1 still runs); the replicas are locked within
        // it, once they stored everything up to e1's result.
        acks.append(try checkpoint(["step": 2], session: id, via: owner))
        let idleFrom = Date()
        server.open("e1")
        let e1Answer = try e1.wait(seconds: 60)
        guard e1Answer.status == 200, e1Answer.body["replayed"] as? Bool == false else {
            throw StartFailed(description: "e1: \(e1Answer.status) \(e1Answer.body)")
        }
        let (viewStatus, view) = httpCallRetrying(port: owner.apiPort, method: "GET", path: "/v1/sessions/\(id)")
        guard viewStatus == 200, let lastSeq = view["seq"] as? Int, let epoch = view["epoch"] as? Int else {
            throw StartFailed(description: "view of \(id): \(viewStatus) \(view)")
        }
        for replica in replicas {
            try waitUntil("\(replica.name) stored \(id) up to seq \(lastSeq)", seconds: 10) {
                ((try? storedRecords(dataDir: replica.dataDir, session: id)) ?? []).last?.seq ?? 0 >= lastSeq
            }
        }
        for replica in replicas { locks.append(try StoreWriteLock(dataDir: replica.dataDir)) }
        let lockedAfter = Date().timeIntervalSince(idleFrom)
        let row = { (node: NodeProcess) in storedSessionRow(dataDir: node.dataDir, session: id) }
        guard row(joiner) == nil, row(owner)?.epoch == epoch else {
            throw StartFailed(description: "the handoff began before the replicas were locked (\(lockedAfter) s after the last write; "
                              + "--session-move-after \(moveAfterSeconds)): the machine was too slow for this test's timing")
        }

        // Step 1 done: P verified and stored the image (a row of O's epoch, led by O).
        try waitUntil("\(joinerName) stored the handoff of \(id)", seconds: moveAfterSeconds + 4) { row(joiner) != nil }
        // Step 2 begun: O promised P the next epoch and, in the same step, sent the transfers.
        try waitUntil("\(owner.name) promised \(id) to \(joinerName)", seconds: 3) {
            guard let r = row(owner) else { return false }
            return r.epoch > epoch && r.owner == joinerName
        }
        // The replicas cannot have promised: their stores are locked.
        for replica in replicas {
            #expect(row(replica)?.epoch == epoch, "\(replica.name) promised through its lock: \(String(describing: row(replica)))")
        }
        print("session-handoff-crash \(id): owner \(owner.name), replicas \(replicas.map(\.name)), locked \(String(format: "%.2f", lockedAfter)) s "
              + "after the last write; joiner row \(row(joiner).map(\.description) ?? "-"), owner row \(row(owner).map(\.description) ?? "-")")
        let held = HeldHandoff(cluster: cluster, server: server, id: id, owner: owner, replicas: replicas, joiner: joiner, epochBefore: epoch)
        held.acks = acks
        held.locks = locks
        return held
    }

    /// The invariants after a crash, through `survivor`: the session is served (by `expectedOwner`
    /// when given, never by `dead`), every acknowledged checkpoint is in the chain it is served
    /// from, a new checkpoint is taken, e1 replays, and the service saw e1 exactly once.
    static func checkServed(_ held: HeldHandoff, through survivor: NodeProcess, dead: [NodeProcess], expectedOwner: NodeProcess? = nil,
                            pending: RetriedCall) throws {
        let id = held.id
        let deadNames = Set(dead.map(\.name))
        // A client writing from the crash on, one request at a time, until one is taken: while
        // the session is between owners it hears "try again" (503), never "no such session".
        var statuses: [Int] = []
        let probeDeadline = Date().addingTimeInterval(60)
        while Date() < probeDeadline {
            let (status, body) = httpCall(port: survivor.apiPort, method: "POST", path: "/v1/sessions/\(id)/checkpoint",
                                          json: ["state": ["probe": statuses.count]], timeout: 20)
            statuses.append(status)
            if status == 200 {
                let answer = jsonObject(body)
                if let seq = answer["seq"] as? Int, let hash = answer["hash"] as? String { held.acks.append(Ack(seq: seq, hash: hash)) }
                break
            }
            usleep(50_000)
        }
        #expect(statuses.last == 200 && statuses.allSatisfy { $0 == 200 || $0 == 503 },
                "writes through \(survivor.name) from the crash on answered \(statuses)")
        if statuses.contains(404) { printLogs(held) }
        var view: [String: Any] = [:]
        try waitUntil("\(id) is served by \(expectedOwner?.name ?? "a survivor") (read through \(survivor.name))", seconds: 60) {
            let (status, body) = httpCall(port: survivor.apiPort, method: "GET", path: "/v1/sessions/\(id)", timeout: 10)
            view = jsonObject(body)
            guard status == 200, let owner = view["owner"] as? String, !deadNames.contains(owner) else { return false }
            return expectedOwner.map { owner == $0.name } ?? true
        }

        // The write sent while the handoff was held: retried inside the mesh and answered.
        let written = try pending.wait(seconds: 90)
        #expect(written.status == 200, "the write sent during the handoff: \(written.status) \(written.body) after \(written.tries) requests")
        if written.status != 200 { printLogs(held) }
        if written.status == 200, let seq = written.body["seq"] as? Int, let hash = written.body["hash"] as? String {
            held.acks.append(Ack(seq: seq, hash: hash))
        }
        let after = try checkpoint(["step": "after"], session: id, via: survivor)
        held.acks.append(after)

        let (status, final) = httpCallRetrying(port: survivor.apiPort, method: "GET", path: "/v1/sessions/\(id)")
        #expect(status == 200, "\(id): \(status) \(final)")
        let ownerName = final["owner"] as? String ?? ""
        #expect(!deadNames.contains(ownerName), "\(id) is led by a killed node: \(final)")
        if let expectedOwner { #expect(ownerName == expectedOwner.name, "\(id): \(final)") }
        #expect(final["seq"] as? Int == after.seq && final["hash"] as? String == after.hash, "the last acknowledged write is the head: \(final)")
        #expect((final["state"] as? [String: Any])?["step"] as? String == "after", "state: \(String(describing: final["state"]))")
        let journal = final["journal"] as? [[String: Any]] ?? []
        #expect(journal.contains { $0["key"] as? String == "e1" && $0["outcome"] as? String == "done" }, "journal: \(journal)")

        // Every acknowledged checkpoint is in the chain the owner serves from (its store).
        guard let ownerNode = held.cluster.nodes.last(where: { $0.name == ownerName && $0.isRunning }) else {
            Issue.record("no running node named \(ownerName)")
            return
        }
        let chain = try storedRecords(dataDir: ownerNode.dataDir, session: id)
        for ack in held.acks {
            #expect(chainHolds(seq: ack.seq, hash: ack.hash, chain: chain, headSeq: after.seq, headHash: after.hash),
                    "acknowledged \(ack) is not in \(ownerName)'s chain \(chain.map { "\($0.seq)/e\($0.epoch)/\($0.kind)" })")
        }

        // e1, recorded before the crash, replays with the run's result and never runs again.
        for attempt in 1...2 {
            let (s, body) = httpCallRetrying(port: survivor.apiPort, method: "POST", path: "/v1/sessions/\(id)/actions", json: act(held.server, key: "e1"))
            #expect(s == 200 && body["replayed"] as? Bool == true, "e1 again (\(attempt)): \(s) \(body)")
            let stdout = (body["result"] as? [String: Any])?["stdout"] as? String ?? ""
            #expect(stdout.hasSuffix("go"), "the replayed result is the run's: \(stdout.debugDescription)")
        }
        let counts = held.server.effectCounts()
        #expect(counts["\(id)/e1"] == 1, "the service saw e1 \(counts["\(id)/e1"] ?? 0) times: \(held.server.paths)")
        #expect(counts.values.allSatisfy { $0 <= 1 }, "a key reached the service twice: \(counts)")
        print("session-handoff-crash \(id): served by \(ownerName) at e\(final["epoch"] as? Int ?? -1) (was e\(held.epochBefore)), "
              + "write during the handoff \(written.status) after \(written.tries) requests in \(String(format: "%.1f", written.seconds)) s, "
              + "writes from the crash on \(Dictionary(statuses.map { ($0, 1) }, uniquingKeysWith: +)), "
              + "acks \(held.acks), service saw \(counts)")
    }

    /// Each node's log lines about the session (what a failure is read from).
    static func printLogs(_ held: HeldHandoff) {
        for node in held.cluster.nodes {
            let lines = held.cluster.log(of: node).split(separator: "\n").filter { $0.contains(held.id) || $0.contains("critical") }
            print("--- \(node.name) (\(lines.count) lines about \(held.id))\n" + lines.suffix(40).joined(separator: "\n"))
        }
    }

    static func kill9(_ node: NodeProcess) {
        node.signal(SIGKILL)
        _ = node.waitForExit(seconds: 10)
    }

    @Test(.timeLimit(.minutes(3)))
    func theNextOwnerKilledAfterItStoredTheHandoffLeavesTheOldSetServing() throws {
        let held = try Self.holdHandoffAtTheFence("fk-a")
        defer { held.tearDown() }
        let (a, b) = (held.replicas[0], held.replicas[1])
        // A client writes while the handoff is held: the owner queues it.
        let pending = RetriedCall(port: a.apiPort, method: "POST", path: "/v1/sessions/\(held.id)/checkpoint", json: ["state": ["step": 3]])
        Self.kill9(held.joiner)
        held.releaseLocks(of: [a, b])
        // The replicas promise the dead P; O's commit finds no one; P's promised owner is gone, so
        // the old set's first live member takes the session over.
        try Self.checkServed(held, through: a, dead: [held.joiner], pending: pending)
        #expect(b.isRunning && a.isRunning && held.owner.isRunning)
    }

    @Test(.timeLimit(.minutes(3)))
    func theOldOwnerKilledAfterTheFenceAndBeforeTheCommitLeavesTheNextOwnerTakingOver() throws {
        let held = try Self.holdHandoffAtTheFence("fk-b")
        defer { held.tearDown() }
        let (a, b) = (held.replicas[0], held.replicas[1])
        let pending = RetriedCall(port: a.apiPort, method: "POST", path: "/v1/sessions/\(held.id)/checkpoint", json: ["state": ["step": 3]])
        held.owner.signal(SIGSTOP)
        held.stopped.append(held.owner)
        held.releaseLocks(of: [a, b])
        // The fence: both replicas store their promise of the next epoch to P (and answer into
        // the stopped O's socket, unread).
        for replica in [a, b] {
            try waitUntil("\(replica.name) promised \(held.id) to \(held.joiner.name)", seconds: 10) {
                guard let row = held.row(replica) else { return false }
                return row.epoch > held.epochBefore && row.owner == held.joiner.name
            }
        }
        Self.kill9(held.owner)
        // No commit was ever sent: P must take the session over by itself.
        try Self.checkServed(held, through: a, dead: [held.owner], expectedOwner: held.joiner, pending: pending)
        // Its own takeover (the gauge is refreshed every 2 s).
        try waitUntil("\(held.joiner.name) counts a takeover", seconds: 10) { held.joiner.metric("starling_session_takeovers") >= 1 }
    }

    @Test(.timeLimit(.minutes(3)))
    func theOldOwnerKilledAfterTheCommitWasSentLeavesTheNextOwnerServing() throws {
        let held = try Self.holdHandoffAtTheFence("fk-c")
        defer { held.tearDown() }
        let (a, b) = (held.replicas[0], held.replicas[1])
        let pending = RetriedCall(port: a.apiPort, method: "POST", path: "/v1/sessions/\(held.id)/checkpoint", json: ["state": ["step": 3]])
        held.locks.append(try StoreWriteLock(dataDir: held.joiner.dataDir))
        held.releaseLocks(of: [a, b])
        // O heard its majority and sent the commit; P took it and sent its epoch's image to the
        // sets (a replica's row names P's new set), but cannot serve before its own store has it.
        var installed: StoredSessionRow?
        try waitUntil("a replica stored \(held.joiner.name)'s image of \(held.id)", seconds: 10) {
            installed = [a, b].lazy.compactMap { held.row($0) }.first { $0.replicas.first == held.joiner.name }
            return installed != nil
        }
        Self.kill9(held.owner)
        held.releaseLocks(of: [held.joiner])
        print("session-handoff-crash \(held.id): commit taken by \(held.joiner.name) (a replica holds \(installed!)); \(held.owner.name) killed")
        try Self.checkServed(held, through: a, dead: [held.owner], expectedOwner: held.joiner, pending: pending)
        // Served by the commit it took, not by a takeover of its own (the gauges are refreshed
        // every 2 s: once they show it serving, they show its takeovers too).
        try waitUntil("\(held.joiner.name)'s metrics show it serving", seconds: 10) { held.joiner.metric("starling_sessions_served") >= 1 }
        #expect(held.joiner.metric("starling_session_takeovers") == 0)
    }

    @Test(.timeLimit(.minutes(3)))
    func theNextOwnerKilledAfterItTookTheCommitAndBeforeItServedLeavesASurvivorServing() throws {
        let held = try Self.holdHandoffAtTheFence("fk-d")
        defer { held.tearDown() }
        let (a, b) = (held.replicas[0], held.replicas[1])
        let pending = RetriedCall(port: a.apiPort, method: "POST", path: "/v1/sessions/\(held.id)/checkpoint", json: ["state": ["step": 3]])
        held.locks.append(try StoreWriteLock(dataDir: held.joiner.dataDir))
        held.releaseLocks(of: [a, b])
        // As in (c), P took the commit and sent its epoch's image, and cannot serve yet; this time
        // P dies there. Its promised owner gone, the sets' live members take the session over.
        try waitUntil("a replica stored \(held.joiner.name)'s image of \(held.id)", seconds: 10) {
            [a, b].contains { held.row($0)?.replicas.first == held.joiner.name }
        }
        Self.kill9(held.joiner)
        held.releaseLocks(of: [held.joiner])
        try Self.checkServed(held, through: a, dead: [held.joiner], pending: pending)
    }
}
