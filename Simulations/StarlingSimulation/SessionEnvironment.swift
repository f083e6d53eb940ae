import Foundation
import StarlingCore

/// The simulated world of the `Sessions` protocol: a per-node store (surviving crashes, restored
/// at a restart as the runtime's SQLite store is), effects that take virtual time, a workload of
/// sessions checkpointed every period and effects with keys (each key sent twice, the second
/// time later, so replays happen after faults), and the invariants of issue #11:
/// - no acknowledged checkpoint is lost: every acknowledged (seq, hash) is in the final chain;
/// - no effect key is executed twice (unknown outcomes included, counted separately);
/// - at most one epoch records at a time: never two acknowledged records with one seq and
///   different hashes.
///
/// Signatures are a deterministic stand-in (the simulator has no libsodium): a keyed hash, so
/// records still fail to verify under another node's key. It is not security; the real
/// Ed25519 is exercised by the core and runtime tests.
final class SessionEnvironment: ProtocolEnvironment {
    typealias P = Sessions

    let sessions: Int
    let period: Duration
    let firstPeriod = 3
    let lastWorkPeriod: Int
    let deadlinePeriod: Int
    private(set) var stores: [[String: SessionImage]]
    /// Each node's stored releases (`SessionChange.forget`), oldest first, restored with its store.
    private var releases: [[SessionRelease]]
    /// Each node's stored fence promises (`SessionChange.fencePromise`), by session.
    private var fences: [[String: SessionFencePromise]]
    private var commands: [UInt64: (session: String, key: String?)] = [:]
    private var acknowledged: [String: [UInt64: [UInt8]]] = [:]
    private var executed: [String: Int] = [:]
    private var unknownKeys: Set<String> = []
    private var replays = 0
    private var checkpointsAcked = 0
    /// Base records written by their owner (compactions).
    private var compactions = 0
    private(set) var violations: [String] = []

    init(nodes: Int, sessions count: Int? = nil, lastFaultPeriod: Double, convergencePeriods: Int, period: Duration) {
        sessions = count ?? max(2, min(10, nodes / 2))
        self.period = period
        lastWorkPeriod = Int(lastFaultPeriod.rounded(.up)) + convergencePeriods + 10
        deadlinePeriod = lastWorkPeriod + 15
        stores = Array(repeating: [:], count: nodes)
        releases = Array(repeating: [], count: nodes)
        fences = Array(repeating: [:], count: nodes)
    }

    /// STARLING_SIM_SESSION_DEBUG set: who leads which session when, and every holder at the end.
    static let debug = !(ProcessInfo.processInfo.environment["STARLING_SIM_SESSION_DEBUG"] ?? "").isEmpty
    /// STARLING_SIM_SESSION_COMPACT_AFTER=N (2 to 2,048): sessions compact after a checkpoint
    /// once they hold N records (default 1,024, which the scenarios' workloads never reach), so
    /// compaction runs under the scenario's faults.
    static let compactAfter: Int? = ProcessInfo.processInfo.environment["STARLING_SIM_SESSION_COMPACT_AFTER"]
        .flatMap { Int($0) }.flatMap { (2...SessionLimits.maxRecords).contains($0) ? $0 : nil }
    /// The same for a test, in process (`$compactAfterInTest.withValue(16) { … }`).
    @TaskLocal static var compactAfterInTest: Int?

    func violation(_ text: String) {
        if violations.count < 20 { violations.append(text) }
    }

    static func toyHash(_ bytes: [UInt8]) -> [UInt8] {
        var lanes: [UInt64] = [0x9E37_79B9_7F4A_7C15, 0xBF58_476D_1CE4_E5B9, 0x94D0_49BB_1331_11EB, 0xCBF2_9CE4_8422_2325]
        for (i, b) in bytes.enumerated() {
            let l = i & 3
            lanes[l] = (lanes[l] ^ UInt64(b)) &* 0x0000_0100_0000_01B3
            lanes[l] ^= lanes[l] >> 29
        }
        var out: [UInt8] = []
        for var v in lanes {
            v = (v ^ (v >> 30)) &* 0xBF58_476D_1CE4_E5B9
            v ^= v >> 31
            for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) }
        }
        return out
    }

    static func crypto(node: Int) -> SessionCrypto {
        let key = Simulator.identityKey(node)  // the key membership gossips for node `node`
        return SessionCrypto(publicKey: key, hash: { toyHash($0) },
                             sign: { toyHash(key + $0) + toyHash($0 + key) },
                             verify: { signature, message, publicKey in signature == toyHash(publicKey + message) + toyHash(message + publicKey) })
    }

    // MARK: ProtocolEnvironment

    func makeProtocol(node: Int, restarted: Bool, sim: Simulator) -> (Sessions, [ProtocolEffect<Sessions>]) {
        // Sessions are checkpointed every period: a session idle for half of one may move, so
        // handoffs run in the middle of the workload (writes arrive while sessions move).
        var settings = Sessions.Settings(moveAfterIdle: period / 2, rebalanceAfterIdle: period * 5)
        if let after = Self.compactAfterInTest ?? Self.compactAfter { settings.compactAfterRecords = after }
        var p = Sessions(myName: Simulator.name(node), crypto: Self.crypto(node: node), settings: settings, now: sim.now)
        if restarted {
            p.restore(stores[node].keys.sorted().compactMap { stores[node][$0] }, released: releases[node],
                      fencePromises: fences[node].keys.sorted().compactMap { fences[node][$0] })
        }
        return (p, [])
    }

    func started(host: ProtocolHost<SessionEnvironment>, sim: Simulator) {
        let n = sim.nodes.count
        // Creates go through nodes 1 ... `creators` (`session-join` keeps its joiners, down at the
        // creates, out of that range): with more sessions than creators, each takes several.
        let creators = min(10, max(2, n / 2))
        for s in 0..<sessions {
            let sid = "sess-\(s)"
            let id = host.scheduleCommand(.create(id: sid, options: [], forwarded: true), node: (s % creators + 1) % n,
                                          at: .zero + period * firstPeriod, sim)
            commands[id.rawValue] = (sid, nil)
            // Every period: a checkpoint, sent to every node (only the one serving it acts).
            for p in (firstPeriod + 1)...lastWorkPeriod {
                for node in 0..<n {
                    let state = Array("{\"s\":\(s),\"p\":\(p)}".utf8)
                    let c = host.scheduleCommand(.checkpoint(id: sid, state: state), node: node,
                                                 at: .zero + period * p + .milliseconds(Int64(10 * s)), sim)
                    commands[c.rawValue] = (sid, nil)
                }
                // Every third period an effect, and the same key again ten periods later.
                if p % 3 == 0 {
                    for again in [0, 10] where p + again <= lastWorkPeriod {
                        for node in 0..<n {
                            let key = "e\(p)"
                            let c = host.scheduleCommand(.act(id: sid, key: key, task: Array("{}".utf8)), node: node,
                                                         at: .zero + period * (p + again) + .milliseconds(Int64(10 * s + 5)), sim)
                            commands[c.rawValue] = (sid, key)
                        }
                    }
                }
            }
        }
    }

    func perform(_ action: SessionAction, node: Int, host: ProtocolHost<SessionEnvironment>, sim: Simulator) {
        // The load live placement bounds, gossiped as the runtime's SessionService does
        // (`MemberMetadata.sessions`), looked at whenever the node acts.
        let load = UInt32(host.instances[node]?.served.count ?? 0)
        sim.updateMetadata(node) { $0.sessions = load }
        switch action {
        case .persist(let change, let tag):
            if Self.debug, case .image(let image) = change, image.owner == Simulator.name(node) {
                print("\(sim.now) n\(node) leads \(image.id) e\(image.epoch) set \(image.replicas)")
            }
            apply(change, node: node)
            sim.mixTrace(20, node, stores[node].count)
            host.schedulePerformed(.persisted(tag), node: node, tag: 0, at: sim.now + .milliseconds(1), sim)
        case .runEffect(let session, let key, let effectKey, _, _):
            executed[effectKey, default: 0] += 1
            if executed[effectKey]! > 1 { violation("effect \(effectKey) executed \(executed[effectKey]!) times (last at n\(node), \(sim.now))") }
            sim.mixTrace(21, node, executed.count)
            host.schedulePerformed(.effectFinished(session: session, key: key, result: Array("{\"exitCode\":0}".utf8)),
                                   node: node, tag: 0, at: sim.now + .milliseconds(300), sim)
        }
    }

    private func apply(_ change: SessionChange, node: Int) {
        switch change {
        case .record(let record, let epoch, let owner, let replicas, let dropped, let jointOld):
            var image = stores[node][record.session] ?? SessionImage(id: record.session, epoch: epoch, owner: owner, replicas: replicas, records: [])
            image.epoch = epoch
            image.owner = owner
            image.replicas = replicas
            image.jointOld = jointOld
            if let dropped, let i = image.records.firstIndex(where: { $0.seq == dropped }) { image.records[i].content = nil }
            image.records.append(record)
            if record.kind == .base, record.signer == Simulator.name(node) { compactions += 1 }
            if record.kind == .base, let cut = image.records.firstIndex(where: { $0.seq &+ 1 == record.seq }) {
                image.records.removeFirst(cut)  // compaction: the store drops what is before the cut
            }
            stores[node][record.session] = image
        case .image(let image):
            stores[node][image.id] = image
        case .promise(let sid, let epoch, let owner):
            stores[node][sid]?.epoch = epoch
            stores[node][sid]?.owner = owner
        case .established(let sid):
            stores[node][sid]?.jointOld = []
        case .fencePromise(let p):
            stores[node][p.session]?.epoch = p.epoch
            stores[node][p.session]?.owner = p.owner
            if stores[node][p.session] != nil { fences[node][p.session] = p }
        case .forget(let release):
            stores[node][release.session] = nil
            fences[node][release.session] = nil
            releases[node].append(release)
        }
    }

    func outcomeIsCurrent(tag: UInt64, node: Int, sim: Simulator) -> Bool { true }

    func replied(_ reply: SessionReply, to command: CommandID, node: Int, sim: Simulator) {
        guard let (sid, key) = commands.removeValue(forKey: command.rawValue) else { return }
        switch reply {
        case .recorded(let seq, let hash):
            checkpointsAcked += 1
            if let earlier = acknowledged[sid]?[seq], earlier != hash {
                violation("\(sid): two records acknowledged at seq \(seq) (two epochs recorded at once; the second at n\(node), \(sim.now))")
            }
            acknowledged[sid, default: [:]][seq] = hash
        case .acted(_, let replayed, _):
            if replayed { replays += 1 }
        case .outcomeUnknown(let k, _):
            unknownKeys.insert("\(sid)/\(key ?? k)")
        default:
            break
        }
    }

    func crashed(node: Int, sim: Simulator) {}
    /// Nodes restarted with an empty store: joiners (`session-join`).
    private var joined: Set<Int> = []

    func faultApplied(_ fault: Fault, sim: Simulator) {
        if case .restart(let nodes) = fault {
            for node in nodes where stores[node].isEmpty { joined.insert(node) }
        }
    }

    var finished: Bool { false }

    func addReport(to report: inout SimulationReport, host: ProtocolHost<SessionEnvironment>, sim: Simulator) {
        for s in 0..<sessions {
            let sid = "sess-\(s)"
            // The chain clients read: the store of a node that serves the session. With none
            // serving (every holder down, or a majority of the replica set down: `session-crash`
            // at N = 100 crashes a third of the nodes for good), the greatest image on any disk,
            // as disks survive a crash (design.md's failure model): such a session is
            // unavailable (`withoutMajorityAtEnd`), not lost. Lost is an acknowledged record
            // missing from the served chain, or from every store.
            let servers = (0..<sim.nodes.count).filter { sim.nodes[$0].up && host.instances[$0]?.served.contains(sid) == true }
            let candidates = servers.isEmpty ? Array(0..<sim.nodes.count) : servers
            let best = candidates.compactMap { stores[$0][sid] }.max { $0.headRank < $1.headRank }
            guard let best else {
                if acknowledged[sid] != nil { violation("\(sid): acknowledged, and held by no node's store") }
                continue
            }
            let crypto = Self.crypto(node: 0)
            let firstSeq = best.records.first?.seq ?? 1
            for (seq, hash) in acknowledged[sid] ?? [:] {
                // A record before a compacted copy's cut is represented by its base (its state
                // was superseded, its effects are in the base's table): not lost.
                if seq < firstSeq { continue }
                let i = Int(seq - firstSeq)
                guard i < best.records.count, crypto.hash(of: best.records[i]) == hash else {
                    violation("\(sid): the acknowledged record \(seq) is lost (the best copy ends at \(best.records.last?.seq ?? 0))")
                    continue
                }
            }
        }
        // Sessions nobody serves at the end because a majority of their replica set is down
        // (R = 3 survives one crash, not two): unavailable by design, counted, not a violation.
        // Those nobody serves although a majority of their latest replica set is up: a liveness
        // gap, counted (each listed with every holder's view with STARLING_SIM_SESSION_DEBUG).
        // A session in a handoff at the last instant (begun by the final tick: its old owner still
        // answers reads) is counted as moving, not as a gap.
        var withoutMajority = 0
        var unservedWithMajority: [String] = []
        var moving = 0
        for s in 0..<sessions {
            let sid = "sess-\(s)"
            guard !(0..<sim.nodes.count).contains(where: { host.instances[$0]?.served.contains(sid) == true }) else { continue }
            if (0..<sim.nodes.count).contains(where: { sim.nodes[$0].up && host.instances[$0]?.moving.contains(sid) == true }) {
                moving += 1
                continue
            }
            // The newest configuration stored (a joint one needs a majority of both its sets).
            let quorums = (0..<sim.nodes.count).compactMap { stores[$0][sid] }.max { ($0.configEpoch, $0.epoch) < ($1.configEpoch, $1.epoch) }?.quorums ?? []
            let hasMajority = !quorums.isEmpty && quorums.allSatisfy { set in
                set.filter { sim.index[$0].map { sim.nodes[$0].up } ?? false }.count >= set.count / 2 + 1
            }
            if hasMajority { unservedWithMajority.append(sid) } else { withoutMajority += 1 }
        }
        // Copies that would keep a client away from a session served elsewhere: an up node
        // whose protocol answers a read of it "unavailable" (its routes then answer 503 and do
        // not forward) while another up node serves it. A copy naming a present owner, or one
        // this node is not the successor of, answers "not here" and its routes forward. Counted
        // (`copiesUnavailableAtEnd`), listed with STARLING_SIM_SESSION_DEBUG. It counts a lead
        // preparing or installing at the last instant too (a takeover or a duel then), and it
        // models the protocol's answer only, not the routes' list of holders.
        // Also counted: copies whose stored owner is their own node while another serves the
        // session (`copiesStoredAsOwnAtEnd`): the routes read the owner from the store and ask
        // it first, so such a copy's node forwards without its best holder (review17 F1).
        var copiesUnavailable: [(sid: String, node: Int)] = []
        var storedAsOwn = 0
        for s in 0..<sessions {
            let sid = "sess-\(s)"
            let served = (0..<sim.nodes.count).filter { sim.nodes[$0].up && host.instances[$0]?.served.contains(sid) == true }
            guard !served.isEmpty else { continue }
            for node in 0..<sim.nodes.count where sim.nodes[node].up && !served.contains(node) {
                guard var copy = host.instances[node], copy.image(of: sid) != nil else { continue }
                if !copy.moving.contains(sid), stores[node][sid]?.owner == Simulator.name(node) { storedAsOwn += 1 }
                let answer = copy.command(.show(id: sid, since: .max), id: CommandID(rawValue: .max), now: sim.now)
                if answer.contains(where: { if case .reply(.unavailable, _) = $0 { true } else { false } }) {
                    copiesUnavailable.append((sid, node))
                }
            }
        }
        if Self.debug {
            for (sid, node) in copiesUnavailable.prefix(20) {
                print("unavailable copy \(sid) n\(node):")
                for other in 0..<sim.nodes.count {
                    if let d = host.instances[other]?.describe(sid, now: sim.now) { print("  n\(other)\(sim.nodes[other].up ? "" : " DOWN"): \(d)") }
                }
            }
            for sid in unservedWithMajority {
                for node in 0..<sim.nodes.count {
                    if let d = host.instances[node]?.describe(sid, now: sim.now) { print("unserved \(sid) n\(node)\(sim.nodes[node].up ? "" : " DOWN"): \(d)") }
                }
            }
        }
        report.sessions = ["sessions": sessions, "checkpointsAcknowledged": checkpointsAcked, "compactions": compactions,
                           "effectsExecuted": executed.values.reduce(0, +), "effectKeys": executed.count,
                           "effectsReplayed": replays, "unknownOutcomes": unknownKeys.count,
                           "withoutMajorityAtEnd": withoutMajority, "unservedWithMajorityAtEnd": unservedWithMajority.count,
                           "copiesUnavailableAtEnd": copiesUnavailable.count, "copiesStoredAsOwnAtEnd": storedAsOwn,
                           "movingAtEnd": moving,
                           "servedAtEnd": (0..<sim.nodes.count).reduce(0) { $0 + (host.instances[$1]?.served.count ?? 0) },
                           "handoffsStarted": (0..<sim.nodes.count).reduce(0) { $0 + (host.instances[$1]?.counters.handoffsStarted ?? 0) },
                           "handoffsDone": (0..<sim.nodes.count).reduce(0) { $0 + (host.instances[$1]?.counters.handoffsDone ?? 0) },
                           "handoffsAborted": (0..<sim.nodes.count).reduce(0) { $0 + (host.instances[$1]?.counters.handoffsAborted ?? 0) },
                           "takeovers": (0..<sim.nodes.count).reduce(0) { $0 + (host.instances[$1]?.counters.takeovers ?? 0) },
                           "ownersDenied": (0..<sim.nodes.count).reduce(0) { $0 + (host.instances[$1]?.counters.ownersDenied ?? 0) }]
        if !joined.isEmpty {
            // Migration on join: the fraction of sessions served by a joiner at the end, against
            // the ideal (joiners / nodes).
            let onJoiners = joined.reduce(0) { $0 + (host.instances[$1]?.served.count ?? 0) }
            report.sessions?["joiners"] = joined.count
            report.sessions?["servedByJoinersAtEnd"] = onJoiners
            report.sessions?["permilleOnJoiners"] = onJoiners * 1_000 / sessions
            report.sessions?["idealPermilleOnJoiners"] = joined.count * 1_000 / sim.nodes.count
        }
        for v in violations where report.violations.count < 40 { report.violations.append(v) }
    }
}
