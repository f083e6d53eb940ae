/// The session protocol (issue #11 items 3–5): each session's journal of signed, hash-chained
/// records, kept by an owner and replicated to a replica set of R = 3, fenced by epochs, and
/// resumed by the next holder when the owner dies.
///
/// - **Placement.** A session is created on the first alive member of the swarm ring's
///   preference list for its id; the replica set is that list's first R members (the creator
///   first). From then on the session's replica set travels with it (in every image), so its
///   holders know it without a global list of sessions; the routes find the holders through
///   the same ring (NOTES says why not `SessionPlacement`).
/// - **Writes.** The owner appends a record (seq, hash of the previous, epoch, kind, content,
///   signature), stores it, and sends it to the other replicas; the command is answered once a
///   majority of the replica set, owner included, stored it durably. One write per session is
///   in flight; later commands wait in a bounded queue.
/// - **Fencing.** A replica promises an epoch to one owner (`prepare`) and refuses records and
///   images of any older epoch. An owner records only after a majority of the replica set
///   promised it its epoch, so during a partition at most one side gets its writes stored.
/// - **Resume.** When a session's owner is no longer alive, its first alive replica (in the
///   order of the replica set) prepares a higher epoch at the old replica set, adopts the
///   greatest image of a majority (it holds every record a majority stored), installs it on
///   the new replica set and only then serves.
/// - **Effects.** An effect runs only after its start is recorded at a majority, and its result
///   is recorded before the answer. A recorded result is returned again (`replayed`); a start
///   without a result is never run again: its key answers "unknown".
///
/// Pure and deterministic: signing, hashing, storage and sandboxes are the shell's.
public struct Sessions: HostedProtocol {
    public typealias Message = SessionMessage
    public typealias Command = SessionCommand
    public typealias Reply = SessionReply
    public typealias Action = SessionAction
    public typealias ActionOutcome = SessionActionOutcome

    public static let channel = Channel.session
    public static let maxMessageBytes = SessionLimits.maxMessageBytes
    public static func encode(_ message: SessionMessage) -> [UInt8] { SessionMessage.encode(message) }
    public static func decode(_ bytes: [UInt8]) throws -> SessionMessage { try SessionMessage.decode(bytes) }

    public struct Settings: Sendable {
        public var replicas: Int
        public var requestTimeout: Duration
        /// How often sessions without a live owner are looked at again.
        public var retryInterval: Duration
        /// Placement's load bound: an owner may serve up to (1 + ε) × its weighted share.
        public var epsilon: Double
        /// A served session idle this long moves to a member before this node in its preference
        /// list that has room (migration on join: the newcomer took the front of its list).
        public var moveAfterIdle: Duration
        /// A served session idle this long leaves this node when the node is over its bound.
        public var rebalanceAfterIdle: Duration
        /// Handoffs this node leads at once, at most (a join must not stall the node).
        public var movesPerTick: Int
        /// How often a holder asks the owner it defers to whether it leads the session
        /// (`checkLeads`): the longest a session stays unled while every holder defers to a node
        /// that does not lead it.
        public var leadCheckInterval: Duration = .seconds(10)
        /// A session holding this many records is compacted after its next checkpoint
        /// (SessionCompaction.swift). Lowered only by the simulator, to compact under faults.
        public var compactAfterRecords = SessionLimits.compactAfterRecords {
            didSet { precondition(compactAfterRecords >= 2 && compactAfterRecords <= SessionLimits.maxRecords) }
        }
        public init(replicas: Int = SessionLimits.replicas, requestTimeout: Duration = .seconds(5), retryInterval: Duration = .seconds(1),
                    epsilon: Double = 0.25, moveAfterIdle: Duration = .seconds(2), rebalanceAfterIdle: Duration = .seconds(30),
                    movesPerTick: Int = 4) {
            precondition(replicas >= 1 && replicas <= SessionLimits.replicas)
            precondition(epsilon > 0 && epsilon <= 10 && epsilon.isFinite, "epsilon must be in (0, 10]")
            precondition(movesPerTick >= 0 && movesPerTick <= 1_024, "movesPerTick must be 0...1024")
            self.replicas = replicas
            self.requestTimeout = requestTimeout
            self.retryInterval = retryInterval
            self.epsilon = epsilon
            self.moveAfterIdle = moveAfterIdle
            self.rebalanceAfterIdle = rebalanceAfterIdle
            self.movesPerTick = movesPerTick
        }
    }

    public let myName: PeerName
    public let settings: Settings
    let crypto: SessionCrypto
    public private(set) var nextDeadline: Instant
    /// Set inside the module: the chunk path (SessionChunks.swift) counts forged chunks too.
    public internal(set) var counters = SessionCounters()
    /// Every session held here, as owner or replica.
    var held: [String: Held] = [:]
    /// What membership says of each member (the source of `expectedKey`).
    var members: [PeerName: PeerView] = [:]
    var alive: Set<PeerName> = []
    /// Members alive or suspect: an owner counts as gone only once dead or left, so a false
    /// suspicion does not move a session (placement uses `alive`).
    var present: Set<PeerName> = []
    /// The ring of `alive`, rebuilt when next used after `alive` changed (`currentRing`): a burst
    /// of 3,000 joins rebuilt a 192,000-point ring 3,000 times and kept the loop busy for
    /// seconds (`underChurnTheSnapshotIsPublishedAtABoundedRateAndStaysFresh` in a CI run).
    var ring = SwarmRing(members: [])
    var ringIsStale = false

    mutating func currentRing() -> SwarmRing {
        if ringIsStale {
            ring = SwarmRing(members: alive)
            ringIsStale = false
        }
        return ring
    }
    var outstanding: [RequestID: Outstanding] = [:]
    var nextRequest: UInt64 = 1
    /// Effect keys answered "unknown" once (so each is counted once).
    var unknownKeys: Set<String> = []
    /// Sessions handed to this node, stored, waiting for their old owner's commit (SessionHandoff.swift).
    var incoming: [String: Incoming] = [:]
    /// When each session served here was last asked to write (moves wait until it is idle).
    var lastActivity: [String: Instant] = [:]
    /// A session that arrived here by handoff stays until then (`rebalanceAfterIdle` after it
    /// came): loads gossiped a round late must not bounce it between two nodes.
    var stayUntil: [String: Instant] = [:]
    /// The highest epoch a refused handoff's target said it holds: the next offer goes above it.
    var offerAbove: [String: UInt64] = [:]
    /// Sessions whose handoff this node gave up after promising the next owner (the fence
    /// failed): this node takes them back with a higher epoch unless someone names a live owner
    /// (SessionHandoff.swift, `advanceHandoff`).
    var retakeAfterAbortedHandoff: Set<String> = []
    /// Sessions this node released (a handoff moved them to a set without it), with the epoch
    /// and owner they went to: a prepare for one is answered with that owner, never with an
    /// empty promise (`promise`). Bounded (`SessionLimits.maxReleasesRemembered`), oldest first
    /// out (`releaseOrder` from `releaseHead`, each slot live while its stamp is the session's
    /// latest: a session released again moves to the back, as the store's rows do);
    /// `releasesForgotten` once one was dropped.
    public private(set) var releases: [String: SessionRelease] = [:]
    var releaseStamp: [String: UInt64] = [:]
    var releaseOrder: [(session: String, stamp: UInt64)] = []
    var releaseHead = 0
    var nextReleaseStamp: UInt64 = 0
    public private(set) var releasesForgotten = false
    /// The epoch and next owner this member promised at a handoff's fence (`transfer`). Only
    /// such a promise lets a preparer outside the held replica set be promised (`promise`): an
    /// owner merely named by an `ownedBy` hint is not one. The old owner's own promise only once
    /// its fence held (`advanceHandoff`): on a failed fence it retakes the session
    /// (`retakeAfterAbortedHandoff`, which needs a majority with it), and the next owner's
    /// takeover must then meet that retake in a member that answers for the next owner (review4
    /// F1). Stored with the promise
    /// (`SessionChange.fencePromise`) and restored, so a member restarted after the fence still
    /// answers for the next owner.
    var transferPromise: [String: Takeover.Promise] = [:]
    /// The fence promises held, for the store's restore and for tests.
    public var fencePromises: [SessionFencePromise] {
        transferPromise.keys.sorted().compactMap { sid in
            transferPromise[sid].map { SessionFencePromise(session: sid, epoch: $0.epoch, owner: $0.owner) }
        }
    }
    /// Sessions whose owner, asked by this holder, said it does not lead them, with the promise
    /// held here when it said so (`checkLeads`). Valid while this node still holds that very
    /// promise: any later promise (a higher epoch, another owner) makes it void. While valid,
    /// the owner counts as gone (`considerTakeovers`) and does not keep a preparer away
    /// (`promise`). A request from that owner about the session ends it (`heardFromOwner`), as
    /// does its session's end here (`forgetMoves`); the next check drops any whose promise
    /// changed, so it holds at most one entry per session held.
    var ownerDenied: [String: Takeover.Promise] = [:]
    var nextLeadCheck: Instant?
    /// Spreads retries (`backoff`): seeded from this node's name, so runs repeat in the simulator
    /// and two nodes draw different delays.
    var rng: DeterministicRNG
    /// The weighted ring of `alive` for live placement, rebuilt when next used after `alive`
    /// changed (`livePlacement`).
    var liveRing: (shape: [String], ring: SessionPlacement)?

    public init(myName: PeerName, crypto: SessionCrypto, settings: Settings = Settings(), now: Instant) {
        self.myName = myName
        self.crypto = crypto
        self.settings = settings
        nextDeadline = now + settings.retryInterval
        rng = DeterministicRNG(seed: myName.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 })
    }

    /// `base` plus up to as much again, at random. Two nodes that each fence the other's takeover
    /// (both first in their own copy's replica set, preparing the same epoch) retried on the same
    /// tick for ever with a fixed quiet time: `starling-sim --scenario session-churn --nodes 20
    /// --sessions 40 --seed 7` took sess-23 over every 6 s from t+60 s to the end, long after the
    /// churn. Random delays end such duels within a few rounds, as Raft's election timeouts do.
    mutating func backoff(_ base: Duration) -> Duration {
        let ms = max(1, Int64(base / .milliseconds(1)))
        return base + .milliseconds(Int64(rng.next() % UInt64(ms)))
    }

    /// Restores the sessions held in the store. Each is led by nobody until a takeover (this
    /// node's own sessions included: a restarted owner takes a new epoch before serving again).
    /// `released`: the releases the store remembers (`releases`), oldest first; `releasesForgotten`: whether
    /// it dropped one to stay in bound. `fencePromises`: the promises this node made at handoffs'
    /// fences (`transferPromise`).
    public mutating func restore(_ images: [SessionImage], released releases: [SessionRelease] = [], releasesForgotten forgotten: Bool = false,
                                 fencePromises: [SessionFencePromise] = []) {
        for image in images where image.records.first != nil {
            var h = Held(id: image.id, epoch: image.epoch, owner: image.owner, replicas: image.replicas, records: [], hashes: [])
            h.takeConfig(of: image)
            h.replace(with: image.records, crypto: crypto)
            held[image.id] = h
            // A copy led by another node, in a set without this node: a handoff offered here
            // (`acceptHandoff` stores it so). The offer itself was in memory; it comes back, so
            // that a next owner restarted after the fence still takes the session over if no
            // commit comes (the old set's members that promised it wait on it: review4 F7). A
            // copy that was no offer (an install of a set that left this node out) costs one
            // takeover round, refused with the live owner's name, which ends the offer.
            if !image.replicas.contains(myName), image.owner != myName {
                incoming[image.id] = Incoming(from: image.owner, fromEpoch: image.epoch, epoch: min(image.epoch, .max - 1) + 1, replicas: [],
                                              deadline: nextDeadline + settings.requestTimeout * 3)
            }
        }
        releasesForgotten = releasesForgotten || forgotten
        counters.releasesForgotten = releasesForgotten
        for release in releases { remember(release) }
        for promise in fencePromises where held[promise.session] != nil {
            transferPromise[promise.session] = Takeover.Promise(epoch: promise.epoch, owner: promise.owner)
        }
    }

    /// Remembers a release, forgetting the oldest past the bound.
    mutating func remember(_ release: SessionRelease) {
        nextReleaseStamp += 1
        releases[release.session] = release
        releaseStamp[release.session] = nextReleaseStamp
        releaseOrder.append((release.session, nextReleaseStamp))
        while releases.count > SessionLimits.maxReleasesRemembered, releaseHead < releaseOrder.count {
            let slot = releaseOrder[releaseHead]
            releaseHead += 1
            guard releaseStamp[slot.session] == slot.stamp else { continue }  // released again since: a later slot
            releases[slot.session] = nil
            releaseStamp[slot.session] = nil
            releasesForgotten = true
        }
        // Slots of sessions released again, and those evicted, are dropped now and then: the
        // order stays within twice the bound.
        if releaseOrder.count - releaseHead > 2 * SessionLimits.maxReleasesRemembered || (releaseHead > 4_096 && releaseHead * 2 > releaseOrder.count) {
            releaseOrder = releaseOrder[releaseHead...].filter { releaseStamp[$0.session] == $0.stamp }
            releaseHead = 0
        }
        assert(releases.count <= SessionLimits.maxReleasesRemembered && releaseStamp.count == releases.count)
        counters.releasesRemembered = releases.count
        counters.releasesForgotten = releasesForgotten
    }

    /// Whether `epoch`, from a peer, is further above `h`'s progress than any honest peer gets
    /// (`SessionLimits.maxEpochStep`): refused, and counted as forged. The bound is measured from
    /// the epoch of the last record or configuration held (moved by records and installs, each
    /// within the bound), not from the promise held, which `stale` answers and lead checks
    /// raise: measured from the promise, two hostile answers ratcheted it past the bound and
    /// honest peers then refused each other for good (review7 F5).
    func farAhead(_ epoch: UInt64, of h: Held) -> Bool {
        let base = max(h.records.last?.epoch ?? 0, h.configEpoch)
        return epoch > base && epoch - base > SessionLimits.maxEpochStep
    }

    /// The highest epoch a peer's word raises this node's promise to: half the bound, so that
    /// the prepares this node then sends stay within its peers' bound.
    func raiseLimit(of h: Held) -> UInt64 {
        let base = max(h.records.last?.epoch ?? 0, h.configEpoch)
        return base > UInt64.max - SessionLimits.maxEpochStep / 2 ? UInt64.max : base + SessionLimits.maxEpochStep / 2
    }

    /// Forgets the release of `sid`: this node stores the session again (an install, a handoff,
    /// a create), so its copy answers for it. The store drops the row with the image.
    mutating func dropRelease(_ sid: String) {
        releases[sid] = nil
        releaseStamp[sid] = nil
        counters.releasesRemembered = releases.count
    }

    /// The release remembered here that an offer of `sid` at `epoch` from `owner` is older than
    /// (an install or a handoff of a copy this node released to a newer set), or nil.
    func releasedLater(_ sid: String, epoch: UInt64, owner: PeerName) -> SessionRelease? {
        guard held[sid] == nil, let r = releases[sid] else { return nil }
        return epoch < r.epoch || (epoch == r.epoch && owner != r.owner) ? r : nil
    }

    // MARK: The membership view

    /// The key a record of `signer` must verify under: the identity key membership gossips for
    /// it (`expectedIdentityKey`, the rule `SignerKeys` states), whatever key the record carries.
    ///
    /// A signer membership does not know: nil (refused, fail closed) for a record that arrives on
    /// its own (an append comes from the epoch's owner, a live member whose key is gossiped).
    /// Inside an image (`historical`), a record may be older than its signer's table entry: an
    /// owner dead and reaped (`reapAfter`) signed it. Its carried key is taken then; the chain
    /// binds it (each record's hash covers its signer's key and the one before it), but only a
    /// later record whose signer membership knows anchors it. What that leaves open is in NOTES.
    func expectedKey(of signer: PeerName, carried: [UInt8], historical: Bool) -> [UInt8]? {
        if let view = members[signer] { return expectedIdentityKey(of: view) }
        return historical ? carried : nil
    }

    public mutating func membershipChanged(_ event: MembershipEvent, now: Instant) -> [ProtocolEffect<Sessions>] {
        // Changes are told member by member: compare that member's standing, not whole sets (a
        // copy of each set per event made a burst of joins quadratic).
        let name: PeerName
        switch event {
        case .updated(let view): name = view.name
        case .removed(let removed): name = removed
        }
        let was = (alive: alive.contains(name), present: present.contains(name))
        switch event {
        case .updated(let view):
            members[view.name] = view
            if view.takesWork { alive.insert(view.name) } else { alive.remove(view.name) }
            if view.status == .alive || view.status == .suspect { present.insert(view.name) } else { present.remove(view.name) }
        case .removed:
            members[name] = nil
            alive.remove(name)
            present.remove(name)
        }
        let aliveChanged = was.alive != alive.contains(name)
        guard aliveChanged || was.present != present.contains(name) else { return [] }
        if aliveChanged { ringIsStale = true }
        return considerTakeovers(now: now)
    }

    public mutating func tick(now: Instant) -> [ProtocolEffect<Sessions>] {
        guard now >= nextDeadline else { return [] }
        nextDeadline = now + settings.retryInterval
        return considerTakeovers(now: now) + considerMoves(now: now) + checkLeads(now: now)
    }

    // MARK: Commands

    public mutating func command(_ command: SessionCommand, id: CommandID, now: Instant) -> [ProtocolEffect<Sessions>] {
        switch command {
        case .create(let sid, let options, let forwarded):
            return create(sid, options: options, forwarded: forwarded, command: id, now: now)
        case .stats:
            return [.reply(.stats(counters, held: held.count, served: held.values.filter { $0.lead?.phase == .serving }.count), to: id)]
        case .checkpoint(let sid, _), .act(let sid, _, _), .delete(let sid), .show(let sid, _):
            guard var h = held[sid] else { return [.reply(.notHere, to: id)] }
            // A deleted session is gone wherever its tombstone is held, led or not.
            if h.deleted { return [.reply(.notFound, to: id)] }
            if case .show = command {} else { lastActivity[sid] = now }
            guard var lead = h.lead else {
                // Held here but led elsewhere, or nobody leads it yet.
                // (Even when that owner said it does not lead the session: this copy may be a stale
                // one, and the request forwarded finds the node that does.)
                if h.owner != myName && present.contains(h.owner) { return [.reply(.notHere, to: id)] }
                // "Resuming" only where this node is the one to resume it (`isSuccessor`). Any
                // other copy may be one that a takeover elsewhere left behind, and nobody ever
                // tells it: the new owner's set leaves it out. Two ways seen: a node that prepared
                // while cut off and was fenced by a `stale` answer (which names no owner) kept
                // itself as the owner (now it gives that promise back, below in `response`); a
                // node cut off while the owner died holds "owner: the dead node". Answering
                // "resuming" there, its routes never forwarded, and a session served elsewhere
                // read 503 through it for good (the fault rig's 2|3 partition in CI;
                // `copiesUnavailableAtEnd` in the simulator). "Not here": the routes forward,
                // and answer 503 themselves when nobody serves it, because a copy is held here
                // (`SessionForwarder`, session and agent routes alike). In an ordinary takeover
                // the other replicas now forward too, and the successor's 503 is the answer.
                if !isSuccessor(h) { return [.reply(.notHere, to: id)] }
                return [.reply(.unavailable("the session's owner changes; resuming"), to: id)]
            }
            if case .handingOff = lead.phase { return commandDuringHandoff(command, id: id, session: sid) }
            guard lead.phase == .serving else { return [.reply(.unavailable("the session is resuming on this node"), to: id)] }
            if case .show(_, let since) = command {
                if h.deleted { return [.reply(.notFound, to: id)] }
                return [.reply(.view(h.view(since: since, acknowledged: lead.acknowledged, running: lead.running)), to: id)]
            }
            if lead.write != nil {
                guard lead.queue.count < SessionLimits.maxQueuedPerSession else {
                    return [.reply(.unavailable("too many requests wait on this session"), to: id)]
                }
                lead.queue.append(.command(command, id))
                h.lead = lead
                held[sid] = h
                return []
            }
            return serve(command, id: id, session: sid)
        }
    }

    mutating func create(_ sid: String, options: [UInt8], forwarded: Bool, command: CommandID, now: Instant) -> [ProtocolEffect<Sessions>] {
        guard SessionLimits.validID(sid) else { return [.reply(.rejected("a session id is 1 to 64 of [A-Za-z0-9._-]"), to: command)] }
        guard options.count <= SessionLimits.maxEffectBytes else { return [.reply(.rejected("the session's options are too large"), to: command)] }
        if held[sid] != nil { return [.reply(.conflict("session \(sid) exists"), to: command)] }
        // Released here to a newer set: it lives on there (a create here would start a second
        // session under the same id).
        if let r = releases[sid] { return [.reply(.conflict("session \(sid) exists (moved to \(r.owner))"), to: command)] }
        // The first member of the id's weighted preference list with room under the load bound
        // (SessionLivePlacement); the routes try members in the same order.
        let placement = livePlacement(including: myName)
        if !forwarded, placement.owners(for: sid).first != myName { return [.reply(.notHere, to: command)] }
        guard held.values.filter({ $0.owner == myName }).count < SessionLimits.maxOwnedSessions,
              held.count < SessionLimits.maxHeldSessions else {
            return [.reply(.unavailable("this node holds as many sessions as it may"), to: command)]
        }
        let replicas = placement.replicas(for: sid, owner: myName, count: settings.replicas)
        lastActivity[sid] = now
        var h = Held(id: sid, epoch: 1, owner: myName, replicas: replicas, configEpoch: 1, records: [], hashes: [])
        h.lead = Lead(phase: .serving, acknowledged: 0)
        held[sid] = h
        return beginWrite(sid, kind: .create, key: "", content: options, then: .reply(command, .created(id: sid, owner: myName)))
    }

    /// A command for a session this node serves, with no write in flight.
    mutating func serve(_ command: SessionCommand, id: CommandID, session sid: String) -> [ProtocolEffect<Sessions>] {
        guard let h = held[sid], let lead = h.lead, lead.phase == .serving, lead.write == nil else {
            return [.reply(.unavailable("the session is not served here"), to: id)]
        }
        if h.deleted { return [.reply(.notFound, to: id)] }
        if h.records.count >= SessionLimits.maxRecords {
            return [.reply(.rejected("the session holds \(SessionLimits.maxRecords) records since its latest compaction, as many as it may: checkpoint it (a checkpoint compacts a long session)"), to: id)]
        }
        switch command {
        case .checkpoint(_, let state):
            guard state.count <= SessionLimits.maxStateBytes else { return [.reply(.rejected("a state is at most 1 MiB"), to: id)] }
            if let problem = fitsAFrame(h, adding: 1_024 + state.count, replacingState: true, newEffect: false) {
                return [.reply(.rejected(problem), to: id)]
            }
            return beginWrite(sid, kind: .checkpoint, key: "", content: state, then: .replyRecorded(id))
        case .act(_, let key, let task):
            guard SessionLimits.validKey(key) else { return [.reply(.rejected("an effect key is 1 to 128 printable ASCII characters"), to: id)] }
            guard task.count <= SessionLimits.maxEffectBytes else { return [.reply(.rejected("an effect's task is at most 16 KiB"), to: id)] }
            if let effect = h.effect(key) {
                if let result = effect.result { return [.reply(.acted(key: key, replayed: true, result: result), to: id)] }
                if lead.running.contains(key) { return [.reply(.running(key: key), to: id)] }
                if let resultSeq = effect.resultSeq {
                    // Recorded, and its result dropped by compaction: never run again.
                    return [.reply(.outcomeExpired(key: key, startedSeq: effect.startedSeq, resultSeq: resultSeq), to: id)]
                }
                if unknownKeys.insert("\(sid)/\(key)").inserted { counters.unknownOutcomes += 1 }
                return [.reply(.outcomeUnknown(key: key, startedSeq: effect.startedSeq), to: id)]
            }
            let keyLimit = SessionLimits.maxEffectKeys - (key.hasPrefix(SessionLimits.hostKeyPrefix) ? 0 : SessionLimits.hostKeyReserve)
            guard h.keyCount < keyLimit else {
                return [.reply(.rejected("the session has started \(keyLimit) effect keys, as many as it may (a key is never forgotten, so that its effect never runs twice)"), to: id)]
            }
            if let problem = fitsAFrame(h, adding: 1_024 + task.count, replacingState: false, newEffect: true) {
                return [.reply(.rejected(problem), to: id)]
            }
            return beginWrite(sid, kind: .effectStarted, key: key, content: task, then: .startEffect(id, key: key, task: task))
        case .delete:
            return beginWrite(sid, kind: .delete, key: "", content: [], then: .reply(id, .deleted))
        case .create, .show, .stats:
            return [.reply(.unavailable("not a write"), to: id)]
        }
    }

    // MARK: The write path (owner)

    /// Appends a record in the lead's epoch, stores it and sends it to the other replicas.
    mutating func beginWrite(_ sid: String, kind: SessionRecord.Kind, key: String, content: [UInt8], then: AfterWrite) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead else { return [] }
        // A checkpoint's state is cut into chunks: its digest is the manifest's (SessionChunks).
        let prepared = kind == .checkpoint ? prepareState(content, in: &h) : nil
        let record = crypto.seal(session: sid, seq: h.lastSeq + 1, previousHash: h.lastHash, epoch: h.epoch, kind: kind, key: key,
                                 content: content, contentDigest: prepared?.digest ?? crypto.contentDigest(kind: kind, content: content),
                                 signer: myName)
        let dropped = h.append(record, hash: crypto.hash(of: record))
        if let prepared { h.stateIndex = StateIndex(seq: record.seq, contentDigest: prepared.digest, manifest: prepared.manifest) }
        // The bound every write keeps (serve checks it before): the whole image fits one frame.
        assert(h.imageBytes <= SessionLimits.maxImageBytes, "a session's image over one link frame")
        lead.write = Write(seq: record.seq, then: then)
        h.lead = lead
        held[sid] = h
        var effects: [ProtocolEffect<Sessions>] = [
            .perform(.persist(.record(record, epoch: h.epoch, owner: myName, replicas: h.replicas, dropContentOf: dropped, jointOld: h.jointOld),
                              then: .own(session: sid, seq: record.seq))),
        ]
        for peer in h.replicas where peer != myName {
            // A replica that has nothing yet (the create) gets the whole image at once.
            // A checkpoint goes as its manifest and the chunks the previous state lacks.
            var message: SessionMessage = record.seq == 1 ? .install(h.image) : .append(record)
            if let prepared, record.seq > 1 {
                var header = record
                header.content = nil
                message = .appendChunks(header, manifest: prepared.manifestBytes, chunks: prepared.newChunks)
            }
            effects.append(request(message, to: peer, session: sid, purpose: .write(epoch: h.epoch)))
        }
        return effects + failUnreachable(sid)
    }

    /// Replicas not alive in this node's view count as failures of the write at once.
    mutating func failUnreachable(_ sid: String) -> [ProtocolEffect<Sessions>] {
        guard let h = held[sid] else { return [] }
        var effects: [ProtocolEffect<Sessions>] = []
        for peer in Set(h.replicas + (h.lead?.jointSets.flatMap { $0 } ?? [])) where peer != myName && !alive.contains(peer) {
            effects += writeFailed(sid, peer: peer)
        }
        return effects
    }

    mutating func request(_ message: SessionMessage, to peer: PeerName, session sid: String, purpose: Outstanding.Purpose) -> ProtocolEffect<Sessions> {
        let rid = RequestID(rawValue: nextRequest)
        nextRequest += 1
        outstanding[rid] = Outstanding(session: sid, peer: peer, purpose: purpose)
        return .request(message, to: peer, id: rid, timeout: settings.requestTimeout)
    }

    mutating func writeAcked(_ sid: String, peer: PeerName, seq: UInt64) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead, var write = lead.write, seq >= write.seq else { return [] }
        write.acks.insert(peer)
        lead.write = write
        h.lead = lead
        held[sid] = h
        return finishWriteIfMajority(sid)
    }

    mutating func writeFailed(_ sid: String, peer: PeerName) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead, var write = lead.write else { return [] }
        write.failed.insert(peer)
        lead.write = write
        h.lead = lead
        held[sid] = h
        let possible = ([h.replicas] + lead.jointSets).allSatisfy { set in
            set.count - write.failed.intersection(set).count >= set.count / 2 + 1
        }
        guard !possible else { return [] }
        // A majority cannot store this record now. It stays in this node's chain (a later owner
        // may adopt it, so an effect start that failed here is "unknown", never run twice); the
        // client hears "try again", and the session stops being served here until a new epoch
        // is prepared (the replicas may have moved on).
        return stepDown(sid, reason: "the record was not stored by a majority of the replica set")
    }

    mutating func finishWriteIfMajority(_ sid: String) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead, let write = lead.write else { return [] }
        let majority = h.replicas.count / 2 + 1
        guard write.acks.intersection(h.replicas).count >= majority, write.acks.contains(myName) else { return [] }
        var effects: [ProtocolEffect<Sessions>] = []
        if !lead.jointSets.isEmpty {
            guard lead.jointSets.allSatisfy({ write.acks.intersection($0).count >= $0.count / 2 + 1 }) else { return [] }
            lead.jointSets = []
            // A majority of each set stored the new configuration: it is established, here and
            // at the new set's members (a record of this epoch tells them too: `replicate`).
            h.jointOld = []
            effects.append(.perform(.persist(.established(session: sid), then: .nothing)))
            for peer in h.replicas where peer != myName {
                effects.append(request(.established(session: sid, epoch: h.epoch), to: peer, session: sid, purpose: .established))
            }
        }
        lead.write = nil
        lead.acknowledged = max(lead.acknowledged, write.seq)
        switch write.then {
        case .reply(let cmd, let reply):
            effects.append(.reply(reply, to: cmd))
        case .replyRecorded(let cmd):
            effects.append(.reply(.recorded(seq: write.seq, hash: h.hash(at: write.seq) ?? SessionRecord.zeroHash), to: cmd))
        case .startEffect(let cmd, let key, let task):
            lead.running.insert(key)
            lead.waiting[key] = cmd
            effects.append(.perform(.runEffect(session: sid, key: key, effectKey: "\(sid)/\(key)", task: task,
                                               options: h.options)))
        case .effectDone(let cmd, let key, let result):
            lead.running.remove(key)
            lead.recording.remove(key)
            if let cmd { effects.append(.reply(.acted(key: key, replayed: false, result: result), to: cmd)) }
        case .compacted:
            break
        case .resumed:
            lead.phase = .serving
            // A handoff's commit is answered once the new replica set stored this epoch.
            if let token = lead.answerWhenServing {
                lead.answerWhenServing = nil
                effects.append(.respond(.stored(session: sid, seq: write.seq), to: token))
            }
            for peer in lead.releaseAfterServing where !h.replicas.contains(peer) && peer != myName {
                effects.append(request(.release(session: sid, epoch: h.epoch), to: peer, session: sid, purpose: .release(epoch: h.epoch)))
            }
            lead.releaseAfterServing = []
        }
        if h.deleted { h.dropContents() }
        h.lead = lead
        held[sid] = h
        if case .replyRecorded = write.then { effects += compactIfDue(sid, checkpointSeq: write.seq) }
        return effects + drainQueue(sid)
    }

    /// Serves the next waiting command or effect result, if no write is in flight.
    mutating func drainQueue(_ sid: String) -> [ProtocolEffect<Sessions>] {
        var effects: [ProtocolEffect<Sessions>] = []
        while var h = held[sid], var lead = h.lead, lead.phase == .serving, lead.write == nil, !lead.queue.isEmpty {
            let next = lead.queue.removeFirst()
            h.lead = lead
            held[sid] = h
            switch next {
            case .command(let command, let cmd):
                if case .show(_, let since) = command {
                    effects.append(.reply(h.deleted ? .notFound : .view(h.view(since: since, acknowledged: lead.acknowledged, running: lead.running)), to: cmd))
                } else {
                    effects += serve(command, id: cmd, session: sid)
                }
            case .effectResult(let key, let result, let cmd):
                if h.deleted {
                    effects += dropResultOfDeleted(sid, key: key, cmd: cmd)
                } else {
                    effects += beginWrite(sid, kind: .effectResult, key: key, content: result, then: .effectDone(cmd, key: key, result: result))
                }
            }
        }
        return effects
    }

    /// Stops leading `sid`: every waiting command hears "try again".
    mutating func stepDown(_ sid: String, reason: String) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], let lead = h.lead else { return [] }
        h.lead = nil
        var effects: [ProtocolEffect<Sessions>] = []
        // A configuration change that did not complete stays joint in the copy (`Held.jointOld`,
        // stored with it): the next takeover needs a majority of both sets. Going back to the
        // old set instead, as this did before, split the session when the old set's majority
        // had missed the change but the new one's had stored it (review6 F1).
        held[sid] = h
        switch lead.write?.then {
        case .reply(let cmd, _)?, .replyRecorded(let cmd)?, .startEffect(let cmd, _, _)?:
            effects.append(.reply(.unavailable(reason), to: cmd))
        case .effectDone(let cmd?, _, _)?:
            effects.append(.reply(.unavailable(reason), to: cmd))
        case .effectDone(nil, _, _)?, .compacted?, .resumed?, nil:
            break
        }
        for item in lead.queue {
            switch item {
            case .command(_, let cmd), .effectResult(_, _, let cmd?): effects.append(.reply(.unavailable(reason), to: cmd))
            case .effectResult(_, _, nil): break
            }
        }
        for cmd in lead.waiting.values { effects.append(.reply(.unavailable(reason), to: cmd)) }
        return effects
    }

    // MARK: Takeover (breakpoint resume)

    mutating func considerTakeovers(now: Instant) -> [ProtocolEffect<Sessions>] {
        var effects: [ProtocolEffect<Sessions>] = []
        for sid in held.keys.sorted() {
            guard let h = held[sid], h.lead == nil, !h.deleted, h.quietUntil.map({ now >= $0 }) ?? true else { continue }
            let ownerGone = h.owner == myName || !present.contains(h.owner) || retakeAfterAbortedHandoff.contains(sid) || ownerSaidItDoesNotLead(sid, h)
            guard ownerGone, h.replicas.contains(myName) else { continue }
            guard isSuccessor(h) else { continue }
            effects += prepare(sid, now: now)
        }
        return effects
    }

    /// Whether this node is the one to take `h` over when its owner is gone: the successor is
    /// the first member of the copy's replica set, in its order, that is alive in this node's
    /// view. Views differ for a moment, so two nodes (or none) may each count themselves the
    /// successor; a takeover settles it (it may fail, back off, and defer to an owner named).
    func isSuccessor(_ h: Held) -> Bool {
        h.replicas.first(where: { $0 == myName || alive.contains($0) }) == myName
    }

    /// `refill`: the set a serving owner moves its session to (`refillReplicas`); nil for a
    /// takeover, whose new set is this node, then the old set's live members, then the ring's.
    mutating func prepare(_ sid: String, now: Instant, refill: [PeerName]? = nil) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid] else { return [] }
        // An epoch comes from the wire (a prepare, an install, a `stale` answer): one at its
        // limit leaves the session unled here rather than trapping the node.
        guard h.epoch < UInt64.max else {
            h.quietUntil = now + settings.retryInterval * 60
            held[sid] = h
            return []
        }
        if refill == nil { counters.takeovers += 1 }  // a refill counts in `refills`
        let epoch = h.epoch + 1
        let oldSet = h.replicas
        let preferred = currentRing().preferenceList(sid, count: alive.count)
        // This node, then the live members of the old set in its order, then the ring's: R at
        // most (a handoff's next owner is outside the old set, so all of that set may be alive).
        let newSet = refill ?? successorSet(sid, from: oldSet, preferred: preferred)
        assert(newSet.count <= SessionLimits.replicas && newSet.first == myName, "a replica set over R, or not led by its first member")
        var takeover = Takeover(epoch: epoch, oldSet: oldSet, newSet: newSet, promised: [myName], images: [h.image])
        takeover.quorums = h.image.quorums
        takeover.configEpoch = h.configEpoch
        takeover.before = Takeover.Promise(epoch: h.epoch, owner: h.owner)
        h.epoch = epoch
        h.owner = myName
        h.lead = Lead(phase: .preparing(takeover), acknowledged: 0)
        held[sid] = h
        let effects: [ProtocolEffect<Sessions>] = [.perform(.persist(.promise(session: sid, epoch: epoch, owner: myName), then: .nothing))]
        return effects + askMembers(sid, Set(oldSet + newSet)) + advanceTakeover(sid, now: now)
    }

    /// This node, then the live members of `oldSet` in its order, then the ring's: R at most (a
    /// handoff's next owner is outside the old set, so all of that set may be alive).
    func successorSet(_ sid: String, from oldSet: [PeerName], preferred: [PeerName]) -> [PeerName] {
        var newSet = [myName]
        for peer in oldSet + preferred where newSet.count < settings.replicas && !newSet.contains(peer) && alive.contains(peer) { newSet.append(peer) }
        return newSet
    }

    /// Asks `peers` not asked yet to promise the takeover's epoch. One not alive is counted
    /// failed: counted as "open" once it came alive, it kept the takeover waiting for ever (a
    /// node restarted and learning its members one by one prepared before it knew them all:
    /// SessionHandoffAbortTests, memberRestarted).
    mutating func askMembers(_ sid: String, _ peers: Set<PeerName>) -> [ProtocolEffect<Sessions>] {
        guard var lead = held[sid]?.lead, case .preparing(var t) = lead.phase else { return [] }
        var effects: [ProtocolEffect<Sessions>] = []
        for peer in peers.subtracting(t.asked).sorted() where peer != myName {
            t.asked.insert(peer)
            if alive.contains(peer) {
                effects.append(request(.prepare(session: sid, epoch: t.epoch), to: peer, session: sid, purpose: .prepare(epoch: t.epoch)))
            } else {
                t.failed.insert(peer)
            }
        }
        lead.phase = .preparing(t)
        held[sid]?.lead = lead
        return effects
    }

    mutating func advanceTakeover(_ sid: String, now: Instant) -> [ProtocolEffect<Sessions>] {
        // A promise carried a newer configuration: its members are asked too.
        var asked: [ProtocolEffect<Sessions>] = []
        if case .preparing(let t)? = held[sid]?.lead?.phase { asked = askMembers(sid, Set(t.quorums.joined())) }
        guard var h = held[sid], var lead = h.lead, case .preparing(let t) = lead.phase else { return asked }
        let bareCreation = t.images.allSatisfy { ($0.records.last?.seq ?? 0) <= 1 }
        func promisedIn(_ set: [PeerName]) -> Int {
            set.filter { t.promised.contains($0) || (bareCreation && t.emptyPromises.contains($0)) }.count
        }
        // A joint configuration that leaves this node out: its new set's members refuse it, and
        // its new set could not be kept with this node first (review7 F3).
        let leftOut = t.quorums.count > 1 && !t.quorums[0].contains(myName)
        guard !leftOut, t.quorums.allSatisfy({ promisedIn($0) >= $0.count / 2 + 1 }) else {
            // Not yet; and if the members of a set still to answer cannot make its majority, give
            // up (the tick tries again with a higher epoch).
            // A set out of reach is final only once every member asked answered: an answer may
            // still replace the sets (a newer configuration, or this one established).
            let alive = alive
            let open = { (set: [PeerName]) in
                set.filter { !t.promised.contains($0) && !t.failed.contains($0) && !t.emptyPromises.contains($0) && alive.contains($0) }.count
            }
            let outOfReach = t.quorums.contains { promisedIn($0) + open($0) < $0.count / 2 + 1 }
            let lost = leftOut || (outOfReach && !t.quorums.contains { open($0) > 0 })
            if lost {
                h.lead = nil
                h.quietUntil = now + backoff(settings.retryInterval)
                // Nothing was recorded in this epoch: give back the promise made to itself, so a
                // node cut off from the others does not come back from a partition holding the
                // session as its own at a higher epoch (answering 503 instead of forwarding, and
                // fencing the live owner's next record). Promises other nodes made stay.
                var effects: [ProtocolEffect<Sessions>] = []
                if let before = t.before, h.epoch == t.epoch, h.owner == myName {
                    h.epoch = before.epoch
                    h.owner = before.owner
                    effects.append(.perform(.persist(.promise(session: sid, epoch: before.epoch, owner: before.owner), then: .nothing)))
                }
                // Only an owner of a newer epoch than the one this node knew (or that very one):
                // a hint of an older one (a member's release of long ago) would leave the session
                // unled while that node lives. Never another owner at the epoch this node promised:
                // it would then promise that epoch a second time (review5 F2). A node that held
                // itself the owner (restarted, or fenced by a `stale` answer, which raises its epoch
                // without naming anyone) defers to any live owner named, unless it led that very
                // epoch: a serving owner whose refill (a takeover, `refillReplicas`) failed
                // deferred to the owner a member's release of two moves ago named, and nobody led
                // the session again (session-churn, 20 nodes × 40 sessions, seed 17).
                // (A node that led that epoch, having installed its configuration, knows no older
                // owner is live.)
                let before = t.before ?? Takeover.Promise(epoch: 0, owner: "")
                let ledBefore = before.owner == myName && h.configEpoch == before.epoch
                if let hint = t.ownerHint, hint.epoch > before.epoch || hint == before || (before.owner == myName && !ledBefore) {
                    // Stored, and at the hint's epoch when that is newer, as the lead check stores
                    // a raise: the routes read the owner from the store (`recordedOwner`), and an
                    // old owner that learned the live one in memory only still read "owner: this
                    // node" there, its best holder left out (review17 F1: 13 of 120 copies left
                    // behind at 5 × 20, 25 of 70 at 100 × 200; 0 with this).
                    h.owner = hint.owner
                    if hint.epoch > h.epoch { h.epoch = max(h.epoch, min(hint.epoch, raiseLimit(of: h))) }
                    effects.append(.perform(.persist(.promise(session: sid, epoch: h.epoch, owner: h.owner), then: .nothing)))
                    if hint.owner != myName { incoming[sid] = nil }  // another node leads it: an offer here is over
                    retakeAfterAbortedHandoff.remove(sid)  // a live owner was named: it serves
                }
                held[sid] = h
                return asked + effects
            }
            return asked
        }
        retakeAfterAbortedHandoff.remove(sid)
        // The greatest image of a majority holds every record a majority stored.
        let best = t.images.max { $0.headRank < $1.headRank } ?? h.image
        if best.records != h.records { h.replace(with: best.records, crypto: crypto) }
        // The new set comes from the newest configuration (a promise may have carried one newer
        // than this node's copy). A joint one may not have completed: its new set stays (this
        // node first), and the set it replaces stays joint, so a copy holds one joint set at
        // most. (Moving on to a third set would need majorities of all three in every copy
        // later: storing two of them let a takeover from the oldest set, which never saw the
        // change, and one from the third win apart.)
        let newest = t.quorums.first ?? t.oldSet
        let newestJoint = t.quorums.count > 1 ? t.quorums[1] : []
        let newSet: [PeerName]
        if !newestJoint.isEmpty {
            newSet = [myName] + newest.filter { $0 != myName }
        } else if t.configEpoch > h.configEpoch {
            newSet = successorSet(sid, from: newest, preferred: currentRing().preferenceList(sid, count: alive.count))
        } else {
            newSet = t.newSet
        }
        // The new configuration is joint until a majority of every set the takeover needed
        // stored it (`Lead.jointSets`); the copies hold the set it replaces meanwhile, so that a
        // takeover after a crash or a lost answer needs that set's majority too (review6 F1). A
        // set equal to the new one (only reordered) changes nothing.
        let changed = { (set: [PeerName]) in Set(set) != Set(newSet) }
        h.replicas = newSet
        h.configEpoch = t.epoch
        h.jointOld = !newestJoint.isEmpty ? newestJoint : changed(newest) ? newest : []
        lead.jointSets = t.quorums.filter(changed)
        // Every image from the wire has distinct names and at most R (`readImage`), and the new
        // set comes from one of them or from the ring: a set over R here is a defect. Fail
        // closed (no lead) rather than store a set no peer could decode.
        guard lead.jointSets.count <= 1, newSet.count <= SessionLimits.replicas, Set(newSet).count == newSet.count else {
            assertionFailure("a new set over R, with a name twice, or two joint sets: \(newSet) \(lead.jointSets)")
            return asked + stepDown(sid, reason: "the session's new replica set is malformed")
        }
        // Members of the old sets that promised this epoch and that the new set leaves out (it is
        // capped at R) drop their copies once it serves, as after a handoff: a copy left there
        // would answer later takeovers with an old image (review4 F8).
        let former = Set(t.oldSet + t.quorums.flatMap { $0 })
        lead.releaseAfterServing = former.filter { !newSet.contains($0) && t.promised.contains($0) && $0 != myName }.sorted()
        lead.phase = .installing
        let seq = h.lastSeq
        lead.write = Write(seq: seq, then: .resumed)
        h.lead = lead
        held[sid] = h
        let image = h.image
        var effects: [ProtocolEffect<Sessions>] = [.perform(.persist(.image(image), then: .own(session: sid, seq: seq)))]
        // To the new set, and to the sets it replaces: the install counts when a majority of each
        // stored it.
        for peer in Set(newSet + lead.jointSets.flatMap { $0 }).sorted() where peer != myName {
            effects.append(request(.install(image), to: peer, session: sid, purpose: .write(epoch: h.epoch)))
        }
        return asked + effects + failUnreachable(sid)
    }

    // MARK: Peers' requests (replica)

    public mutating func request(_ message: SessionMessage, from peer: PeerName, token: RequestToken, now: Instant) -> [ProtocolEffect<Sessions>] {
        heardFromOwner(message, peer)
        switch message {
        case .append(let record): return replicate(record, from: peer, token: token)
        case .appendChunks(let record, let manifest, let chunks):
            return replicateChunks(record, manifest: manifest, chunks: chunks, from: peer, token: token)
        case .install(let image): return install(image, from: peer, token: token)
        case .prepare(let sid, let epoch): return promise(sid, epoch: epoch, to: peer, token: token)
        case .handoff(let image, let epoch, let replicas):
            return acceptHandoff(image, epoch: epoch, replicas: replicas, from: peer, token: token, now: now)
        case .transfer(let sid, let epoch, let to): return transfer(sid, epoch: epoch, to: to, from: peer, token: token)
        case .commit(let sid, let epoch, let replicas): return commitHandoff(sid, epoch: epoch, replicas: replicas, from: peer, token: token, now: now)
        case .release(let sid, let epoch): return release(sid, epoch: epoch, from: peer, token: token)
        case .leads(let sids): return [.respond(.notLeading(sessions: sids.filter { !leadsOrTakes($0, now: now) }.map(leadAnswer)), to: token)]
        case .established(let sid, let epoch): return established(sid, epoch: epoch, from: peer, token: token)
        default: return [.respond(.invalid(reason: "not a request"), to: token)]
        }
    }

    /// The owner of `epoch` says its configuration is established: the copy drops its joint set.
    mutating func established(_ sid: String, epoch: UInt64, from peer: PeerName, token: RequestToken) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], h.owner == peer, h.epoch == epoch, h.configEpoch == epoch else {
            return [.respond(.invalid(reason: "no copy of epoch \(epoch)'s configuration of \(sid) from \(peer) is held here"), to: token)]
        }
        guard !h.jointOld.isEmpty else { return [.respond(.stored(session: sid, seq: h.lastSeq), to: token)] }
        h.jointOld = []
        held[sid] = h
        return [.perform(.persist(.established(session: sid), then: .respond(token, .stored(session: sid, seq: h.lastSeq))))]
    }

    /// `verifiedContent`: the state of a chunked checkpoint, assembled from chunks already
    /// checked against the record's manifest (`replicateChunks`).
    mutating func replicate(_ record: SessionRecord, from peer: PeerName, token: RequestToken,
                            verifiedContent: [UInt8]? = nil) -> [ProtocolEffect<Sessions>] {
        let sid = record.session
        guard var h = held[sid] else { return [.respond(.behind(session: sid, seq: 0), to: token)] }
        if record.epoch < h.epoch {
            counters.stale += 1
            return [.respond(.stale(session: sid, epoch: h.epoch), to: token)]
        }
        // A record of a newer epoch than promised here comes with an install, never alone.
        if record.epoch > h.epoch { return [.respond(.behind(session: sid, seq: h.lastSeq), to: token)] }
        guard record.signer == h.owner, peer == h.owner else {
            counters.forged += 1
            return [.respond(.invalid(reason: "\(peer) does not own epoch \(h.epoch) of \(sid)"), to: token)]
        }
        guard let key = expectedKey(of: record.signer, carried: record.signerKey, historical: false) else {
            counters.forged += 1
            return [.respond(.invalid(reason: "membership gossips no identity key for \(record.signer)"), to: token)]
        }
        if let problem = crypto.check(record, expectedKey: key) {
            counters.forged += 1
            return [.respond(.invalid(reason: problem), to: token)]
        }
        var record = record
        if let verifiedContent { record.content = verifiedContent }
        let hash = crypto.hash(of: record)
        if let held = h.hash(at: record.seq), held == hash {
            return [.respond(.stored(session: sid, seq: record.seq), to: token)]
        }
        guard record.seq == h.lastSeq + 1, record.previousHash == h.lastHash, !h.deleted,
              (record.kind == .create) == (record.seq == 1), record.content != nil || record.kind == .delete else {
            counters.outOfChain += 1
            return [.respond(.behind(session: sid, seq: h.lastSeq), to: token)]
        }
        if record.kind == .base, let problem = checkBase(record, in: h) {
            counters.forged += 1
            return [.respond(.invalid(reason: problem), to: token)]
        }
        let dropped = h.append(record, hash: hash)
        if h.deleted { h.dropContents() }
        // The owner that installed this configuration records on it only once a majority of
        // each set stored it (`finishWriteIfMajority`): it is established.
        if record.epoch == h.configEpoch { h.jointOld = [] }
        held[sid] = h
        return [.perform(.persist(.record(record, epoch: h.epoch, owner: h.owner, replicas: h.replicas, dropContentOf: dropped, jointOld: h.jointOld),
                                  then: .respond(token, .stored(session: sid, seq: record.seq))))]
    }

    mutating func install(_ image: SessionImage, from peer: PeerName, token: RequestToken) -> [ProtocolEffect<Sessions>] {
        let sid = image.id
        // A member of the old set a handoff left out takes the new owner's install too (the joint
        // configuration, `Lead.jointSets`): it promised that owner this epoch, or is the old
        // owner handing the session to it. Holding an image whose set leaves it out, it neither
        // takes the session over nor promises anyone outside the new set.
        let promisedHere = held[sid].map { $0.owner == peer && $0.epoch == image.epoch } ?? false
        var ownHandoff = false
        if case .handingOff(let handoff)? = held[sid]?.lead?.phase, handoff.to == peer, handoff.epoch == image.epoch { ownHandoff = true }
        guard image.owner == peer, image.replicas.contains(myName) || promisedHere || ownHandoff, image.replicas.first == peer else {
            counters.forged += 1
            return [.respond(.invalid(reason: "an image must come from its owner, to a member of its replica set"), to: token)]
        }
        if let h = held[sid], image.epoch < h.epoch || (image.epoch == h.epoch && h.owner != peer) {
            counters.stale += 1
            return [.respond(.stale(session: sid, epoch: h.epoch), to: token)]
        }
        if let h = held[sid], farAhead(image.epoch, of: h) {
            counters.forged += 1
            return [.respond(.invalid(reason: "epoch \(image.epoch) is too far above the \(h.epoch) held here"), to: token)]
        }
        if let r = releasedLater(sid, epoch: image.epoch, owner: peer) {
            counters.stale += 1
            return [.respond(.stale(session: sid, epoch: r.epoch), to: token)]
        }
        if held[sid] == nil, held.count >= SessionLimits.maxHeldSessions {
            return [.respond(.invalid(reason: "this node holds as many sessions as it may"), to: token)]
        }
        if let problem = verify(image) {
            counters.forged += 1
            return [.respond(.invalid(reason: problem), to: token)]
        }
        dropRelease(sid)
        var effects: [ProtocolEffect<Sessions>] = []
        if case .handingOff(let handoff)? = held[sid]?.lead?.phase, handoff.to == peer, handoff.epoch == image.epoch {
            // This node's own handoff: the commit's answer ends its lead (SessionHandoff.swift).
        } else if held[sid]?.lead != nil {
            counters.fenced += 1
            effects += stepDown(sid, reason: "a newer owner took the session")
        }
        var h = held[sid] ?? Held(id: sid, epoch: image.epoch, owner: peer, replicas: image.replicas, records: [], hashes: [])
        h.epoch = image.epoch
        h.owner = peer
        h.takeConfig(of: image)
        h.replace(with: image.records, crypto: crypto)
        held[sid] = h
        return effects + [.perform(.persist(.image(h.image), then: .respond(token, .stored(session: sid, seq: h.lastSeq))))]
    }

    mutating func promise(_ sid: String, epoch: UInt64, to peer: PeerName, token: RequestToken) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid] else {
            // Released here: this node held it and a newer set took it; an empty promise would
            // count as "never stored" toward a stale member's takeover (`Takeover.emptyPromises`:
            // with the members that released it, a member back with only the create became a
            // second owner). It names the owner it released the session to instead.
            if let r = releases[sid] {
                counters.stale += 1
                return [.respond(.ownedBy(session: sid, epoch: r.epoch, owner: r.owner), to: token)]
            }
            // Having forgotten releases, it cannot tell "never stored": fail closed.
            if releasesForgotten {
                return [.respond(.invalid(reason: "this node holds nothing of \(sid) and has forgotten releases: no empty promise"), to: token)]
            }
            // Nothing held: the promise is implicit (an install of this epoch or later is taken).
            return [.respond(.promised(session: sid, image: nil), to: token)]
        }
        if epoch < h.epoch || (epoch == h.epoch && h.owner != peer) {
            counters.stale += 1
            return [.respond(.stale(session: sid, epoch: h.epoch), to: token)]
        }
        if farAhead(epoch, of: h) {
            counters.forged += 1
            return [.respond(.invalid(reason: "epoch \(epoch) is too far above the \(h.epoch) held here"), to: token)]
        }
        // Stickiness: while the owner is alive here (this node itself, leading it), nobody else
        // takes the session over; a node back from a partition learns who owns it instead.
        if h.owner != peer, h.owner == myName ? h.lead != nil : present.contains(h.owner) && !ownerSaidItDoesNotLead(sid, h) {
            return [.respond(.ownedBy(session: sid, epoch: h.epoch, owner: h.owner), to: token)]
        }
        // A preparer outside the replica set held here counts this node in a set that is not
        // this node's: one of them holds a stale image (a deposed owner restarted on its store
        // prepared with the set of two takeovers ago, and a stale holder promised it, so a
        // majority of an old set overrode the live owner: session-churn, 20 nodes, seed 13).
        // No promise: the preparer counts one vote fewer. (After stickiness: a live owner is
        // still named, so a node back from a partition learns it.)
        // Except the next owner this member promised the epoch to at a handoff's fence
        // (`transferPromise`; never the old owner itself): it is outside the set until it
        // installs, and when the old owner gave the handoff up (the fence's answers were lost,
        // though the old set's others promised) only it can lead.
        // (At the fence's epoch or above: the next owner may have promised the old owner's
        // retake a higher epoch meanwhile, and then prepares above it.)
        let promisedAtFence = transferPromise[sid].map { $0.owner == peer && epoch >= $0.epoch } == true && h.owner == peer
        guard h.replicas.contains(peer) || promisedAtFence else {
            return [.respond(.invalid(reason: "\(peer) is not in the replica set of \(sid) held here"), to: token)]
        }
        var effects: [ProtocolEffect<Sessions>] = []
        if h.lead != nil, h.owner != peer { counters.fenced += 1; effects += stepDown(sid, reason: "another node takes the session over") }
        h = held[sid] ?? h
        h.epoch = epoch
        h.owner = peer
        held[sid] = h
        return effects + [.perform(.persist(.promise(session: sid, epoch: epoch, owner: peer),
                                            then: .respond(token, .promised(session: sid, image: h.image))))]
    }

    /// One answer to this node's takeover of `sid` (a promise, a refusal, a failure): applies
    /// `change` to the takeover if one is still preparing, then moves it on.
    mutating func takeoverAnswered(_ sid: String, now: Instant, _ change: (inout Takeover) -> Void) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead, case .preparing(var t) = lead.phase else { return [] }
        change(&t)
        lead.phase = .preparing(t)
        h.lead = lead
        held[sid] = h
        return advanceTakeover(sid, now: now)
    }

    /// Why an image does not hold (nil when it does): a chain from a create, every record's
    /// signature and content, epochs that never go back, nothing after a delete, and the
    /// contents a holder must have (the create, every effect, the latest checkpoint).
    public func verify(_ image: SessionImage) -> String? {
        guard let first = image.records.first else { return "the image holds no record" }
        if first.seq == 1 {
            guard first.kind == .create, first.previousHash == SessionRecord.zeroHash else { return "the image does not start with its creation" }
        } else {
            // A compacted image: it starts at the checkpoint its base (the next record) names.
            guard first.kind == .checkpoint, image.records.count >= 2, image.records[1].kind == .base,
                  let content = image.records[1].content, let base = try? SessionBase.decode(content), base.cutSeq == first.seq else {
                return "the image starts at record \(first.seq) without a base that names that cut"
            }
        }
        // The chain is verified from the first record on: its signature anchors it.
        var previousHash = first.previousHash
        var previousEpoch: UInt64 = 0
        var lastCheckpoint: Int?
        var prefix = Held(id: image.id, epoch: image.epoch, owner: image.owner, replicas: image.replicas, records: [], hashes: [])
        var resultsWithContent = 0
        var resultsTotal = 0
        var hashes: [[UInt8]] = []
        // Seqs from the wire are bounded at decoding; an image built otherwise is checked here too,
        // so that `first.seq + i` (and a later `lastSeq + 1`) cannot overflow.
        guard first.seq <= SessionLimits.maxSeq, image.records.count <= SessionLimits.maxRecords else {
            return "the image's seqs or its record count are over their bounds"
        }
        for (i, record) in image.records.enumerated() {
            guard record.seq == first.seq + UInt64(i), record.previousHash == previousHash else { return "record \(record.seq) is off the chain" }
            guard record.epoch >= previousEpoch, record.epoch <= image.epoch else { return "record \(record.seq) has an epoch out of order" }
            guard record.kind != .create || record.seq == 1, i == image.records.count - 1 || record.kind != .delete else {
                return "record \(record.seq) is of a kind out of place"
            }
            if record.kind == .base {
                // The first base of a compacted image only anchors it; any other must say what
                // the records before it say (they are all here).
                guard i >= 1, image.records[i - 1].kind == .checkpoint else { return "record \(record.seq): a base after no checkpoint" }
                if i >= 2, let problem = checkBase(record, in: prefix, exact: false) { return problem }
            }
            guard let key = expectedKey(of: record.signer, carried: record.signerKey, historical: true) else {
                return "membership gossips no identity key for \(record.signer)"
            }
            if let problem = crypto.check(record, expectedKey: key) { return problem }
            switch record.kind {
            case .create, .base:
                if record.content == nil { return "record \(record.seq) lost its content" }
            case .effectResult:
                resultsTotal += 1
                if record.content != nil { resultsWithContent += 1 }
            case .checkpoint: lastCheckpoint = i
            case .effectStarted, .delete: break
            }
            previousHash = crypto.hash(of: record)
            previousEpoch = record.epoch
            hashes.append(previousHash)
            if i + 1 < image.records.count, image.records[i + 1].kind == .base {
                prefix.records = Array(image.records[...i])
                prefix.hashes = hashes
                prefix.compact()
            }
        }
        // The most recent results are kept by every holder (`applyContentRules`): an image
        // without them would turn replayable keys into "expired".
        if resultsWithContent < min(resultsTotal, SessionLimits.maxResultsKept) { return "the image lost the results of recent effects" }
        if let i = lastCheckpoint, image.records[i].content == nil, image.records.last?.kind != .delete {
            return "the latest checkpoint lost its state"
        }
        return nil
    }

    // MARK: Answers to our requests

    public mutating func response(_ message: SessionMessage?, to rid: RequestID, now: Instant) -> [ProtocolEffect<Sessions>] {
        guard let o = outstanding.removeValue(forKey: rid) else { return [] }
        if case .leadCheck(let asked) = o.purpose { return leadCheckAnswered(asked, by: o.peer, message) }  // SessionLeadCheck.swift
        if case .established = o.purpose { return [] }
        guard let h = held[o.session], h.lead != nil else { return [] }
        if o.purpose.isHandoff { return handoffAnswered(o, message, now: now) }
        switch (o.purpose, message) {
        case (.write(let epoch), .stored(let sid, let seq)?) where sid == o.session && epoch == h.epoch:
            return writeAcked(o.session, peer: o.peer, seq: seq)
        case (.write(let epoch), .behind(let sid, _)?) where sid == o.session && epoch == h.epoch:
            // The replica missed records or holds another branch: it gets the whole image.
            return [request(.install(h.image), to: o.peer, session: o.session, purpose: o.purpose)]
        case (_, .stale(let sid, let epoch)?) where sid == o.session:
            // A takeover fenced while it prepared gives back the promise it made itself, as a
            // lost one does (`advanceTakeover`): nothing was recorded in its epoch. The copy names
            // the owner it named before, so its routes ask that node first and its reads are
            // forwarded. Kept as "owner: this node", a copy outside the set that then led the
            // session was never told otherwise (review16 F2). A node that owned the session
            // before keeps itself as owner: it prepares again above the raised epoch, and learns
            // the live owner from an `ownedBy`, stored (`advanceTakeover`, a lost takeover).
            // The raise below then pairs an epoch above `before.epoch` with that owner, in
            // memory: a promise to it this node never made. Safe: the only promise this node held
            // above `before.epoch` was its own, at the takeover's epoch (`h.epoch == t.epoch`,
            // owner itself: a `promise`, `install` or transfer since would have changed the
            // owner or ended the lead), and that takeover is over, so this is the first promise
            // it makes at that epoch (review17 F3). It makes the copy refuse other preparers
            // there in favour of that owner while it is present, as any promise does.
            var givenBack: Takeover.Promise?
            if case .preparing(let t)? = h.lead?.phase, h.epoch == t.epoch, h.owner == myName, let before = t.before, before.owner != myName {
                givenBack = before
            }
            var effects = stepDown(o.session, reason: "a newer epoch of the session exists")
            if var h = held[o.session] {
                if let before = givenBack {
                    h.epoch = before.epoch
                    h.owner = before.owner
                    effects.append(.perform(.persist(.promise(session: sid, epoch: before.epoch, owner: before.owner), then: .nothing)))
                }
                // Fenced: some node holds a newer epoch. Not knowing which, this node waits before
                // it prepares again, so it does not depose a live owner it cannot see.
                if epoch > h.epoch { h.epoch = max(h.epoch, min(epoch, raiseLimit(of: h))) }
                h.quietUntil = now + backoff(settings.retryInterval * 5)
                held[o.session] = h
            }
            counters.fenced += 1
            return effects
        case (.prepare(let attempt), .ownedBy(let sid, let hintEpoch, let owner)?) where sid == o.session && attempt == h.epoch:
            // A refusal is one vote fewer, not the end: the others may still make a majority
            // (the simulator found two nodes each deferring to the other when this gave up at
            // once). If the takeover fails, this node defers to the owner named.
            return takeoverAnswered(o.session, now: now) { t in
                t.failed.insert(o.peer)
                t.ownerHint = Takeover.Promise(epoch: hintEpoch, owner: owner)
            }
        case (.prepare(let epoch), .promised(let sid, let image)?) where sid == o.session && epoch == h.epoch:
            // A member promises the epoch asked and answers with its copy at that epoch, whose
            // records are all older: nothing can be recorded in an epoch before its owner takes
            // it. A copy claiming a later epoch, or holding records of this epoch or a later one,
            // is forged (adopted, it would put records of a later epoch under this node's
            // earlier one: a chain no peer accepts; found by the `sessions` fuzz target).
            let usable = image.map {
                $0.id == sid && $0.epoch <= epoch && ($0.records.last?.epoch ?? 0) < epoch && $0.configEpoch < epoch && verify($0) == nil
            }
            if usable == false { counters.forged += 1 }
            return takeoverAnswered(o.session, now: now) { t in
                // Only a promise that carries a copy counts toward the old set's majority: a
                // member that holds nothing may have held records and forgotten them (released
                // by a move, or removed by a refill and dropped), and its empty promise let two
                // stale members outvote the live owner's set (starling-sim session-churn, 20
                // nodes, seed 9: n5 held nothing, promised, and with n15 made "a majority" of a
                // set two refills old; both sides recorded).
                // (It counts while the greatest image is the bare creation: a create that never
                // reached a majority has nothing acknowledged to lose, and its creator must be
                // able to resume it with members that never stored it: session-join, seed 12.)
                if let image, usable == true {
                    t.promised.insert(o.peer)
                    t.images.append(image)
                    t.copies[o.peer] = image
                    t.learnConfigurations()
                } else if image == nil {
                    t.emptyPromises.insert(o.peer)
                } else {
                    t.failed.insert(o.peer)
                }
            }
        case (.prepare(let epoch), _) where epoch == h.epoch:
            return takeoverAnswered(o.session, now: now) { t in t.failed.insert(o.peer) }
        case (.write(let epoch), _) where epoch == h.epoch:
            return writeFailed(o.session, peer: o.peer)
        default:
            return []
        }
    }

    public mutating func receive(_ message: SessionMessage, from peer: PeerName, now: Instant) -> [ProtocolEffect<Sessions>] { [] }

    // MARK: Local work done

    public mutating func performed(_ outcome: SessionActionOutcome, now: Instant) -> [ProtocolEffect<Sessions>] {
        switch outcome {
        case .persisted(.own(let sid, let seq)):
            return writeAcked(sid, peer: myName, seq: seq)
        case .persisted(.respond(let token, let message)):
            return [.respond(message, to: token)]
        case .persisted(.nothing):
            return []
        case .effectFinished(let sid, let key, let result):
            guard var h = held[sid], var lead = h.lead, lead.running.contains(key), lead.recording.insert(key).inserted else { return [] }
            let cmd = lead.waiting.removeValue(forKey: key)
            let bounded = result.count <= SessionLimits.maxEffectBytes ? result : Array("{\"reason\":\"denied\",\"warnings\":[\"result over its bound\"]}".utf8)
            if h.deleted {
                h.lead = lead
                held[sid] = h
                return dropResultOfDeleted(sid, key: key, cmd: cmd)
            }
            if lead.write != nil || lead.phase != .serving {
                lead.queue.append(.effectResult(key: key, result: bounded, cmd))
                h.lead = lead
                held[sid] = h
                return []
            }
            h.lead = lead
            held[sid] = h
            return beginWrite(sid, kind: .effectResult, key: key, content: bounded, then: .effectDone(cmd, key: key, result: bounded))
        }
    }

    /// An effect that ended after its session was deleted: nothing follows a delete record (a
    /// record after it would undelete the session on the owner while its replicas refuse the
    /// chain, and the owner would retry takeovers for ever), so its result is dropped and its
    /// waiting client hears the session is gone.
    mutating func dropResultOfDeleted(_ sid: String, key: String, cmd: CommandID?) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead else { return [] }
        lead.running.remove(key)
        lead.recording.remove(key)
        h.lead = lead
        held[sid] = h
        return cmd.map { [.reply(.notFound, to: $0)] } ?? []
    }

    // MARK: Inspection (tests, metrics)

    /// The sessions this node serves now.
    public var served: [String] { held.values.filter { $0.lead?.phase == .serving }.map(\.id).sorted() }
    /// The sessions this node is handing off now (reads answered, writes waiting).
    public var moving: [String] {
        held.values.filter { if case .handingOff? = $0.lead?.phase { true } else { false } }.map(\.id).sorted()
    }
    /// The image of a held session.
    public func image(of sid: String) -> SessionImage? { held[sid]?.image }
    public var heldCount: Int { held.count }
}

// MARK: State

extension Sessions {
    enum AfterWrite: Sendable, Equatable {
        case reply(CommandID, SessionReply)
        case replyRecorded(CommandID)
        case startEffect(CommandID, key: String, task: [UInt8])
        case effectDone(CommandID?, key: String, result: [UInt8])
        /// A base record (SessionCompaction.swift): nobody waits for it.
        case compacted
        case resumed
    }

    struct Write: Sendable, Equatable {
        var seq: UInt64
        var then: AfterWrite
        var acks: Set<PeerName> = []
        var failed: Set<PeerName> = []
    }

    struct Takeover: Sendable, Equatable {
        var epoch: UInt64
        var oldSet: [PeerName]
        /// The set this takeover means to install (a refill's, or this node and the old set's
        /// live members): replaced at the install when a promise carried a newer configuration
        /// (`advanceTakeover`).
        var newSet: [PeerName]
        var promised: Set<PeerName>
        var images: [SessionImage]
        /// The newest configuration heard of (this node's copy's, then any newer one a promise
        /// carries): the takeover needs a majority of each of its sets (`SessionImage.quorums`).
        /// A copy that missed a change of the set learns it from a member that stored it: every
        /// majority of the old set holds one once the change was established.
        var quorums: [[PeerName]] = []
        var configEpoch: UInt64 = 0
        /// Members asked to promise, or counted failed without being asked (not alive).
        var asked: Set<PeerName> = []
        /// The copy each member promised with (`learnConfigurations`).
        var copies: [PeerName: SessionImage] = [:]

        /// Takes the newest configuration the copies promised here show, from members of the
        /// sets this takeover needs, until nothing changes:
        /// - a newer one (higher `configEpoch`) replaces the sets, and `advanceTakeover` asks
        ///   their members;
        /// - the same one, established at that member (no joint set: it heard `established`, or
        ///   a record of that epoch), drops the set it replaced. A copy that missed `established`
        ///   otherwise waited on a majority of a set whose members may be gone (review7 F4).
        ///
        /// Only from members: a set is unsigned, and an outsider naming itself and this node a
        /// majority decided the quorum (review7 F2). An established change is always told by a
        /// member (a majority of the old set stored it); one not established has nothing
        /// recorded on it. Run over every copy after each answer, not only the newest: a copy
        /// from a node that becomes a member once another answer showed a newer set counts
        /// then (review8: in the order "outsider first", the newest set was missed).
        mutating func learnConfigurations() {
            var progressed = true
            while progressed {
                progressed = false
                for (peer, image) in copies.sorted(by: { $0.key < $1.key }) where quorums.contains(where: { $0.contains(peer) }) {
                    if image.configEpoch > configEpoch {
                        configEpoch = image.configEpoch
                        quorums = image.quorums
                        progressed = true
                    } else if image.configEpoch == configEpoch, quorums.count > 1, image.jointOld.isEmpty, Set(image.replicas) == Set(quorums[0]) {
                        quorums = [quorums[0]]
                        progressed = true
                    }
                }
            }
        }
        var failed: Set<PeerName> = []
        /// Members that promised holding nothing: counted only while no image holds more than
        /// the creation (`advanceTakeover`).
        var emptyPromises: Set<PeerName> = []
        /// The owner a refusing replica named, deferred to if this takeover fails.
        var ownerHint: Promise?
        /// The epoch and owner held before this node promised itself the new epoch: given
        /// back if the takeover fails.
        var before: Promise?

        struct Promise: Sendable, Equatable {
            var epoch: UInt64
            var owner: PeerName
        }
    }

    enum Phase: Sendable, Equatable {
        case preparing(Takeover)
        case installing
        case serving
        /// Handing the session to its next owner (SessionHandoff.swift): writes wait.
        case handingOff(Handoff)
    }

    enum Queued: Sendable, Equatable {
        case command(SessionCommand, CommandID)
        case effectResult(key: String, result: [UInt8], CommandID?)
    }

    /// What the owner of a session keeps beside the records.
    struct Lead: Sendable, Equatable {
        var phase: Phase
        /// The highest seq a majority stored in this lead: reads show nothing after it.
        var acknowledged: UInt64
        var write: Write?
        var queue: [Queued] = []
        /// Effects running on this node now, and the command waiting for each. An effect stays
        /// here until its result's record is stored by a majority (`recording` meanwhile): a
        /// reader in between sees it running, never "unknown".
        var running: Set<String> = []
        /// Effects that finished, whose result's record is on its way (in `running` too).
        var recording: Set<String> = []
        var waiting: [String: CommandID] = [:]
        /// A handed-off session's commit, answered once this lead serves (SessionHandoff.swift).
        var answerWhenServing: RequestToken?
        /// Members of the old replica set the new one left out: told to drop their copies once
        /// the new set stored the session.
        var releaseAfterServing: [PeerName] = []
        /// The sets a new configuration replaces, while the owner installs it: the install counts
        /// as stored only when a majority of each of these stored it too (a joint configuration).
        /// Otherwise members of the old set that promised the new owner but missed its install
        /// still held the old set, and after a partition could elect a successor with a majority
        /// of it while the new owner served on the new set: two owners (review). The copies hold
        /// the joint configuration too (`Held.jointOld`, stored), so a lost answer or a crash
        /// never makes an owner forget it (review6 F1).
        var jointSets: [[PeerName]] = []

        init(phase: Phase, acknowledged: UInt64) {
            self.phase = phase
            self.acknowledged = acknowledged
        }
    }

    struct Outstanding: Sendable {
        enum Purpose: Sendable, Equatable {
            case write(epoch: UInt64)
            case prepare(epoch: UInt64)
            /// Migration (SessionHandoff.swift): the image to the next owner, the old set's
            /// promises to it, the commit, and a release of a left-out member's copy.
            case handoff(epoch: UInt64)
            case transfer(epoch: UInt64)
            case commit(epoch: UInt64)
            case release(epoch: UInt64)
            /// A lead check (`checkLeads`): the sessions asked about, with the promise held for
            /// each when asked.
            case leadCheck([String: Takeover.Promise])
            /// A new configuration established (`SessionMessage.established`): the answer is not
            /// waited for.
            case established

            var isHandoff: Bool {
                switch self {
                case .write, .prepare, .leadCheck, .established: false
                case .handoff, .transfer, .commit, .release: true
                }
            }
        }
        var session: String
        var peer: PeerName
        var purpose: Purpose
    }

    /// One session as this node holds it.
    struct Held: Sendable {
        var id: String
        /// The highest epoch promised here, and to whom.
        var epoch: UInt64
        var owner: PeerName
        var replicas: [PeerName]
        /// The configuration's epoch and, while joint, the set it replaced (`SessionImage`).
        var configEpoch: UInt64 = 0
        var jointOld: [PeerName] = []
        var records: [SessionRecord]
        var hashes: [[UInt8]]
        var lead: Lead?
        /// Where the chunks of the latest state lie (SessionChunks); recomputed when stale.
        var stateIndex: StateIndex?
        /// No takeover before this (after this node was fenced, or a takeover failed).
        var quietUntil: Instant?
        /// The base the held records start after (SessionCompaction.swift), parsed once.
        var base: SessionBase?

        var lastSeq: UInt64 { records.last?.seq ?? 0 }
        var lastHash: [UInt8] { hashes.last ?? SessionRecord.zeroHash }
        var deleted: Bool { records.last?.kind == .delete }
        var image: SessionImage {
            SessionImage(id: id, epoch: epoch, owner: owner, replicas: replicas, configEpoch: configEpoch, jointOld: jointOld, records: records)
        }
        /// Takes the configuration an image carries.
        mutating func takeConfig(of image: SessionImage) {
            replicas = image.replicas
            configEpoch = image.configEpoch
            jointOld = image.jointOld
        }

        /// Appends the next record; returns the seq of the checkpoint whose state it supersedes.
        mutating func append(_ record: SessionRecord, hash: [UInt8]) -> UInt64? {
            var dropped: UInt64?
            if record.kind == .checkpoint, let i = records.lastIndex(where: { $0.kind == .checkpoint }) {
                records[i].content = nil
                dropped = records[i].seq
            }
            records.append(record)
            hashes.append(hash)
            switch record.kind {
            case .base: compact()  // every record before its cut goes (SessionCompaction.swift)
            case .effectResult: applyContentRules()
            default: break
            }
            return dropped
        }

        mutating func replace(with newRecords: [SessionRecord], crypto: SessionCrypto) {
            records = newRecords
            hashes = newRecords.map { crypto.hash(of: $0) }
            // Only the latest checkpoint keeps its state; a base drops what is before its cut.
            compact()
        }

        mutating func dropContents() {
            for i in records.indices where records[i].kind == .checkpoint { records[i].content = nil }
        }

        struct Effect {
            var startedSeq: UInt64
            /// Set when a result was recorded; `result` is nil then only if it was dropped.
            var resultSeq: UInt64?
            var result: [UInt8]?
        }

        func effect(_ key: String) -> Effect? {
            var found: Effect?
            if let entry = base?.effects.first(where: { $0.key == key }) {
                found = Effect(startedSeq: entry.startedSeq, resultSeq: entry.resultSeq == 0 ? nil : entry.resultSeq, result: entry.result)
            }
            for record in records where record.key == key {
                if record.kind == .effectStarted { found = Effect(startedSeq: record.seq) }
                if record.kind == .effectResult, found != nil {
                    found?.resultSeq = record.seq
                    found?.result = record.content
                }
            }
            return found
        }

        func view(since: UInt64, acknowledged: UInt64, running: Set<String>) -> SessionView {
            let visible = records.prefix { $0.seq <= acknowledged }
            let head = visible.last
            let checkpoint = visible.last { $0.kind == .checkpoint }
            var entries: [SessionJournalEntry] = []
            var started: [String: UInt64] = [:]
            var finished: Set<String> = []
            // Effects before the cut: the base's table (a result recorded after the cut comes
            // as a record below).
            for entry in base?.effects ?? [] {
                started[entry.key] = entry.startedSeq
                guard entry.resultSeq != 0 else { continue }
                finished.insert(entry.key)
                if entry.resultSeq > since {
                    entries.append(SessionJournalEntry(seq: entry.resultSeq, key: entry.key, startedSeq: entry.startedSeq,
                                                       outcome: entry.result.map { .done(result: $0) } ?? .expired))
                }
            }
            for record in visible {
                if record.kind == .effectStarted { started[record.key] = record.seq }
                if record.kind == .effectResult, let s = started[record.key], !finished.contains(record.key) {
                    finished.insert(record.key)
                    if record.seq > since {
                        entries.append(SessionJournalEntry(seq: record.seq, key: record.key, startedSeq: s,
                                                           outcome: record.content.map { .done(result: $0) } ?? .expired))
                    }
                }
            }
            for (key, s) in started where !finished.contains(key) && s > since {
                entries.append(SessionJournalEntry(seq: s, key: key, startedSeq: s, outcome: running.contains(key) ? .running : .unknown))
            }
            entries.sort { $0.seq < $1.seq }
            let more = entries.count > SessionLimits.maxJournalPage
            return SessionView(id: id, owner: owner, replicas: replicas, epoch: epoch, seq: head?.seq ?? 0,
                               hash: head.flatMap { hash(at: $0.seq) } ?? SessionRecord.zeroHash, signer: head?.signer ?? owner,
                               state: checkpoint?.content, stateSeq: checkpoint?.seq ?? 0,
                               journal: Array(entries.prefix(SessionLimits.maxJournalPage)), journalMore: more)
        }
    }
}
