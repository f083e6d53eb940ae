import Foundation
import Logging
import Metrics
import StarlingCore
import StarlingCrypto
import StarlingSandbox
import StarlingStore
import Synchronization

/// What the session routes need of the mesh: commands to the `Sessions` protocol, and the other
/// nodes that may serve a session.
public protocol SessionGateway: Sendable {
    func command(_ command: SessionCommand) async throws -> SessionReply
    /// API addresses (HOST:PORT) of the other nodes (alive, and suspects that may hold it) that
    /// may serve session `id`, best first; `recordedOwner` is `recordedOwner(of: id)`, read once
    /// by the caller.
    func holders(of id: String, recordedOwner: String?) -> [String]
    /// The owner recorded in this node's copy of session `id`; nil when it holds none. A
    /// request forwarded here about a session held here is answered 503, never 404
    /// (`SessionForwarder`).
    func recordedOwner(of id: String) -> String?
    /// The API addresses of the members this node suspects: a forwarded request probes them
    /// before it is sent to them (`HolderForwarding.Probe`).
    func suspectAddresses() -> Set<String>
    var nodeName: String { get }
}

extension SessionGateway {
    public func recordedOwner(of id: String) -> String? { nil }
    public func suspectAddresses() -> Set<String> { [] }
}

/// Sessions on a running node: the `Sessions` protocol on the mesh loop (channel 3), its
/// records signed with the node's Ed25519 key, stored in the node's SQLite store, its effects
/// run in sandboxes under the node's policy.
public final class SessionService: SessionGateway {
    public let nodeName: String
    let node: MeshNode
    let handle: ProtocolHandle<Sessions>
    let store: SessionStore
    let effects: SessionEffectRunner
    private let ownershipObservers = OwnershipObservers()
    /// The weighted rings `holders` uses, keyed by their members' names and slots: a ring is 64
    /// points a slot (a 100-member mesh of 16-slot nodes: 102,400 points to sort), too much to
    /// build for every forwarded request; it changes only when members or their slots do. Two
    /// are kept, the alive members' and the present ones' (alive and suspect), most recently
    /// used first.
    private let ringCache = Mutex<[(key: [String: Int], ring: SessionPlacement)]>([])

    /// The weighted ring of `candidates`, from the cache when their names and slots are those of
    /// a ring built before.
    private func cachedRing(for candidates: [SessionLivePlacement.Candidate]) -> SessionPlacement {
        let key = Dictionary(candidates.map { ($0.name, $0.slots) }, uniquingKeysWith: { a, _ in a })
        return ringCache.withLock { cache in
            if let i = cache.firstIndex(where: { $0.key == key }) {
                let hit = cache.remove(at: i)
                cache.insert(hit, at: 0)
                return hit.ring
            }
            let ring = SessionLivePlacement.ring(for: candidates)
            cache.insert((key, ring), at: 0)
            if cache.count > 2 { cache.removeLast(cache.count - 2) }
            return ring
        }
    }

    /// Domain of a record signature: a session signature is never valid as anything else's.
    static let signatureDomain = Array("starling-session-sig-v1".utf8) + [0]

    /// The hashing and signing the protocol is handed: BLAKE2b-256 and Ed25519 (libsodium).
    public static func crypto(_ identity: NodeIdentity) -> SessionCrypto {
        SessionCrypto(publicKey: identity.publicKey,
                      hash: { blake2b($0) },
                      sign: { identity.sign(signatureDomain + $0) },
                      verify: { signature, message, key in NodeIdentity.verify(signature: signature, message: signatureDomain + message, publicKey: key) })
    }

    /// How sessions are placed and moved (`Sessions.Settings`; the node's `--session-*` flags).
    public struct Placement: Sendable {
        public var epsilon: Double
        public var moveAfterIdle: Duration
        public var rebalanceAfterIdle: Duration
        public var movesPerTick: Int
        public init(epsilon: Double = 0.25, moveAfterIdle: Duration = .seconds(2), rebalanceAfterIdle: Duration = .seconds(30),
                    movesPerTick: Int = 4) {
            self.epsilon = epsilon
            self.moveAfterIdle = moveAfterIdle
            self.rebalanceAfterIdle = rebalanceAfterIdle
            self.movesPerTick = movesPerTick
        }
    }

    let epsilon: Double

    /// Registers the protocol on `node` (before it starts) with the sessions stored in `store`.
    public init(node: MeshNode, store: SwarmStore, identity: NodeIdentity, runner: SandboxRunner, audit: AuditLog?,
                requestTimeout: Duration = .seconds(5), placement: Placement = Placement(), logger: Logger) throws {
        nodeName = node.configuration.name
        self.node = node
        self.store = SessionStore(store: store)
        epsilon = placement.epsilon
        var sessions = Sessions(myName: nodeName, crypto: Self.crypto(identity),
                                settings: Sessions.Settings(requestTimeout: requestTimeout, epsilon: placement.epsilon,
                                                            moveAfterIdle: placement.moveAfterIdle,
                                                            rebalanceAfterIdle: placement.rebalanceAfterIdle,
                                                            movesPerTick: placement.movesPerTick),
                                now: node.now)
        let images = try self.store.loadAll()
        let releases = try self.store.loadReleases()
        sessions.restore(images, released: releases.releases, releasesForgotten: releases.forgotten,
                         fencePromises: try self.store.loadFencePromises())
        if !images.isEmpty { logger.info("sessions restored from the store", metadata: ["sessions": "\(images.count)"]) }
        let effects = SessionEffectRunner(runner: runner, nodeName: nodeName, slots: node.configuration.slots, audit: audit, logger: logger)
        self.effects = effects
        handle = node.register(sessions, performer: SessionPerformer(store: self.store, audit: audit, effects: effects, node: node,
                                                                     myName: nodeName, logger: logger, ownership: ownershipObservers))
        SessionMetrics.follow(handle)
        Self.advertiseLoad(handle, node: node)
    }

    /// Gossips how many sessions this node serves (`MemberMetadata.sessions`, the load live
    /// placement bounds) whenever it changes, looked at every 500 ms.
    static func advertiseLoad(_ handle: ProtocolHandle<Sessions>, node: MeshNode) {
        Task.detached {
            var advertised: UInt32 = 0
            while true {
                try? await Task.sleep(for: .milliseconds(500))
                guard let reply = try? await handle.command(.stats) else { return }
                guard case .stats(_, _, let served) = reply else { continue }
                let load = UInt32(clamping: served)
                if load != advertised {
                    advertised = load
                    node.post(.updateMetadata { $0.sessions = load })
                }
            }
        }
    }

    public func command(_ command: SessionCommand) async throws -> SessionReply { try await handle.command(command) }

    /// Runs `observer` whenever this node may have come to own, or stopped owning, some session:
    /// after each durable write of a promise, an image or a forget (takeovers, handoffs, lagging
    /// replicas caught up), and on `ownershipMayHaveChanged()`. Hosted agents start and stop
    /// brains there. Observers must return quickly; they are called on the caller's thread.
    public func observeOwnership(_ observer: @escaping @Sendable () -> Void) {
        ownershipObservers.add(observer)
    }

    /// Tells the observers that this node may have come to own, or stopped owning, sessions.
    /// Cheap to call too often: observers re-check.
    public func ownershipMayHaveChanged() {
        ownershipObservers.notify()
    }

    /// Hands the effects that are not sandboxed tasks (an agent's model calls, say) to `builtins`.
    public func handOver(builtinEffects builtins: any BuiltinEffects) {
        effects.builtins.withLock { $0 = builtins }
    }

    public func recordedOwner(of id: String) -> String? { store.owner(of: id) }

    public func suspectAddresses() -> Set<String> {
        Set(node.snapshot().members.filter { $0.status == .suspect && !$0.metadata.api.isEmpty }.map(\.metadata.api))
    }

    /// Where to forward a request for session `id` (`holders(of:present:...)` has the order).
    public func holders(of id: String, recordedOwner: String?) -> [String] {
        let present = node.snapshot().members.compactMap { m -> HolderCandidate? in
            guard m.status == .alive || m.status == .suspect else { return nil }
            return HolderCandidate(name: m.name, alive: m.status == .alive, api: m.metadata.api, slots: Int(m.metadata.slots),
                                   sessions: Int(m.metadata.sessions))
        }
        return Self.holders(of: id, present: present, recordedOwner: recordedOwner, nodeName: nodeName, epsilon: epsilon,
                            ring: cachedRing(for:))
    }

    /// A member alive or suspect, as `holders` weighs it.
    struct HolderCandidate: Sendable {
        var name: String
        /// Alive; else suspect.
        var alive: Bool
        var api: String
        var slots: Int
        var sessions: Int

        var placement: SessionLivePlacement.Candidate { .init(name: name, slots: slots, owned: sessions) }
    }

    /// The API addresses to ask for session `id`, in order, this node left out:
    /// 1. the owner recorded here (`recordedOwner`), alive or suspect;
    /// 2. room-first over the alive members (where a session is placed now), R + 2;
    /// 3. the plain preference list over the alive members, R + 2: an owner that has since
    ///    reached its load bound drops down the room-first order, and the nodes placed there
    ///    hold nothing of it ("not here"), so the list it was placed by is asked too;
    /// 4. the suspect members that may hold it, at most R + 2: the protocol still counts them
    ///    present, so the copies here and on the replicas may answer "not here" while one of
    ///    them is the owner or a fenced old owner. A suspect asked is either reached (and answers)
    ///    or unreachable, and an unreachable holder makes the answer 503, never 404: a live
    ///    session between owners is not called missing (SessionHandoffCrashTests, the old owner
    ///    killed after the fence while the entry already suspected it: both replicas said "not
    ///    here"). Which suspects: those in the session's room-first order and preference list
    ///    over the present members (alive and suspect), R + 2 of each, then, for a session this
    ///    node holds a record of, the other suspects. So a request for a session nobody has
    ///    (deleted, or a made-up id) keeps its quick 404 while a member that cannot hold it is
    ///    suspected; in a mesh of R + 2 members or fewer every member may hold every session,
    ///    and every suspect is asked.
    /// All four fit `SessionForwarder.maxHolders`. Each holder is asked in turn until one
    /// answers with neither a marked "not here" nor 503: a suspect is asked only after every holder before it
    /// said "not here" or "unavailable" or could not be reached. The suspects are probed first,
    /// all at once and briefly (`HolderForwarding.Probe`), so suspects that hang cost a request
    /// one probe deadline together, not a forwarding deadline each.
    static func holders(of id: String, present: [HolderCandidate], recordedOwner: String?, nodeName: String, epsilon: Double,
                        ring: ([SessionLivePlacement.Candidate]) -> SessionPlacement) -> [String] {
        let span = SessionLimits.replicas + 2
        /// The room-first order and the plain preference list of `id` over `members`, R + 2 each.
        func orders(over members: [HolderCandidate]) -> (roomFirst: [String], plain: [String]) {
            let candidates = members.map(\.placement)
            let weighted = ring(candidates)
            let placement = SessionLivePlacement(ring: weighted, candidates: candidates, epsilon: epsilon)
            return (Array(placement.owners(for: id).prefix(span)), weighted.preferenceList(id, count: span))
        }
        let alive = present.filter(\.alive)
        var api = Dictionary(alive.map { ($0.name, $0.api) }, uniquingKeysWith: { a, _ in a })
        var names: [String] = []
        if let owner = recordedOwner, let recorded = present.first(where: { $0.name == owner }) {
            names.append(owner)
            api[owner] = recorded.api
        }
        let aliveOrders = orders(over: alive)
        names += aliveOrders.roomFirst + aliveOrders.plain
        let suspects = present.filter { !$0.alive && !$0.api.isEmpty }
        if !suspects.isEmpty {
            let suspectAPI = Dictionary(suspects.map { ($0.name, $0.api) }, uniquingKeysWith: { a, _ in a })
            let presentOrders = orders(over: present)
            var asked = (presentOrders.roomFirst + presentOrders.plain).filter { suspectAPI[$0] != nil }
            if recordedOwner != nil { asked += suspectAPI.keys.sorted() }
            var added = 0
            for name in asked where api[name] == nil && added < span {
                api[name] = suspectAPI[name]
                names.append(name)
                added += 1
            }
        }
        var seen = Set<String>()
        return names.filter { $0 != nodeName && seen.insert($0).inserted }.compactMap { api[$0] }.filter { !$0.isEmpty }
    }
}

/// Carries out the session protocol's actions. Writes go, in the order asked, to one serial
/// queue off the loop thread (an owner's record is appended to the audit log first, and an
/// audit append blocks); each reports `.persisted` once durable. A write that fails latches:
/// nothing after it is ever reported (so nothing after it is acknowledged), and the node leaves
/// the mesh, as a failed swarm write makes it.
struct SessionPerformer: ProtocolPerformer {
    typealias Hosted = Sessions
    let store: SessionStore
    let audit: AuditLog?
    let effects: SessionEffectRunner
    let node: MeshNode
    let myName: String
    let logger: Logger
    let ownership: OwnershipObservers
    let queue = DispatchQueue(label: "starling-session-store")
    let latch = SessionWriteLatch()

    func perform(_ action: SessionAction, host: ProtocolHandle<Sessions>) {
        switch action {
        case .persist(let change, let tag):
            queue.async { [self] in
                guard !latch.failed.withLock({ $0 }) else { return }
                do {
                    if case .own = tag, let audit, case .record(let record, _, _, _, _, _) = change, record.signer == myName {
                        try audit.append(Self.auditKind(record.kind), Self.auditBody(record))
                    }
                    try store.apply([change])
                    host.complete(.persisted(tag))
                    // After the outcome is queued: an observer's command to the protocol reaches
                    // it behind the outcome, so it sees the sessions this write let it serve.
                    if OwnershipObservers.mayMove(change) { ownership.notify() }
                } catch {
                    latch.failed.withLock { $0 = true }
                    logger.critical("a session write failed; leaving the mesh", metadata: ["error": "\(error)"])
                    node.requestLeave()
                }
            }
        case .runEffect(let session, let key, let effectKey, let task, let options):
            effects.start(session: session, key: key, effectKey: effectKey, task: task, options: options) { result in
                host.complete(.effectFinished(session: session, key: key, result: result))
            }
        }
    }

    static func auditKind(_ kind: SessionRecord.Kind) -> String {
        switch kind {
        case .create: "session.create"
        case .checkpoint: "session.checkpoint"
        case .effectStarted: "session.effect.start"
        case .effectResult: "session.effect.result"
        case .delete: "session.delete"
        case .base: "session.compact"
        }
    }

    /// Ids, numbers and the record's digest: never the state or the task's content.
    static func auditBody(_ r: SessionRecord) -> JSONValue {
        var body: [String: JSONValue] = ["session": .string(r.session), "seq": .integer(Int64(clamping: r.seq)),
                                         "epoch": .integer(Int64(clamping: r.epoch)),
                                         "contentDigest": .string(r.contentDigest.map { String(format: "%02x", $0) }.joined()),
                                         "bytes": .integer(Int64(r.content?.count ?? 0))]
        if !r.key.isEmpty { body["key"] = .string(TaskAudit.bounded(r.key)) }
        return .object(body)
    }
}

/// Set once a session write failed: nothing written after it is ever reported durable.
final class SessionWriteLatch: Sendable {
    let failed = Mutex(false)
}

/// The protocol's counters as Prometheus gauges, read every 2 s through a `stats` command (the
/// counters live in the protocol's value on the loop thread): records refused as forged, stale
/// (fencing) or off the chain, effect keys answered "unknown", takeovers led, times fenced, and
/// the sessions held and served. Stops when the node stops.
enum SessionMetrics {
    static func follow(_ handle: ProtocolHandle<Sessions>) {
        let refusedForged = Gauge(label: "starling_session_records_refused", dimensions: [("reason", "forged")])
        let refusedStale = Gauge(label: "starling_session_records_refused", dimensions: [("reason", "stale_epoch")])
        let refusedChain = Gauge(label: "starling_session_records_refused", dimensions: [("reason", "out_of_chain")])
        let unknown = Gauge(label: "starling_session_unknown_outcomes")
        let takeovers = Gauge(label: "starling_session_takeovers")
        let fenced = Gauge(label: "starling_session_fenced")
        let held = Gauge(label: "starling_sessions_held")
        let served = Gauge(label: "starling_sessions_served")
        let handoffs = [("started", \SessionCounters.handoffsStarted), ("done", \SessionCounters.handoffsDone), ("aborted", \SessionCounters.handoffsAborted)]
            .map { (Gauge(label: "starling_session_handoffs", dimensions: [("outcome", $0.0)]), $0.1) }
        let releases = Gauge(label: "starling_session_releases_remembered")
        let forgotten = Gauge(label: "starling_session_releases_forgotten")
        let denied = Gauge(label: "starling_session_owners_denied")
        Task.detached {
            while true {
                try? await Task.sleep(for: .seconds(2))
                guard case .stats(let c, let h, let s)? = try? await handle.command(.stats) else {
                    if (try? await handle.command(.stats)) == nil { return }
                    continue
                }
                refusedForged.record(c.forged)
                refusedStale.record(c.stale)
                refusedChain.record(c.outOfChain)
                unknown.record(c.unknownOutcomes)
                takeovers.record(c.takeovers)
                fenced.record(c.fenced)
                held.record(h)
                served.record(s)
                for (gauge, path) in handoffs { gauge.record(c[keyPath: path]) }
                releases.record(c.releasesRemembered)
                forgotten.record(c.releasesForgotten ? 1 : 0)
                denied.record(c.ownersDenied)
            }
        }
    }
}
