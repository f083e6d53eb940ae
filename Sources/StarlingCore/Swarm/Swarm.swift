/// Swarm scheduling as a deterministic state machine (see SwarmContract.swift for its inputs
/// and effects, SwarmMessages.swift for what nodes say to each other).
///
/// Every node plays three parts at once, each in its own file:
/// - *entry* (Entry.swift): takes a client's submit or cancel and finds the swarm's owner;
/// - *owner* (Owner.swift, Placement.swift, Replication.swift, Takeover.swift): the acting
///   owner of a swarm records its task states, places its tasks Sparrow-style and replicates
///   every change to the swarm's replica set; a replica takes over when the owner dies;
/// - *worker* (Worker.swift): holds reservations, pulls a task when it has room (late
///   binding), runs it through the host, and delivers the result until the owner acknowledges it.
public struct Swarm: HostedProtocol {
    public typealias Message = SwarmMessage
    public typealias Command = SwarmCommand
    public typealias Reply = SwarmReply
    public typealias Action = SwarmAction
    public typealias ActionOutcome = SwarmActionOutcome
    public typealias Effects = [ProtocolEffect<Swarm>]

    public static let channel = Channel.swarm
    public static let maxMessageBytes = SwarmLimits.maxMessageBytes

    /// Bounds of this node's memory (each documented where it is enforced).
    public enum Bounds {
        /// Reservations a worker queues (more are dropped; the owner re-places after `retryInterval`).
        public static let maxReservations = 4096
        /// Results a worker holds until their owner acknowledges them; at the cap it stops
        /// fetching new tasks (results are never dropped for room).
        public static let maxHeldResults = 4096
        /// Rounds of sending one result before the worker gives it up (about 30 minutes at the
        /// default 500 ms): only a result no replica of its swarm answers for so long.
        public static let maxResultSends = 3600
        /// Swarms this node owns or replicates that are not finished; a create over it is refused.
        public static let maxActiveSwarms = 10_000
        /// Finished swarms kept in memory (the oldest are dropped first; the store keeps them).
        public static let maxFinishedSwarms = 1024
        /// How long a finished swarm stays in memory.
        public static let finishedRetention = Duration.seconds(60)
        /// Ids of dropped finished swarms remembered, so a late result for one is answered stale.
        public static let maxTombstones = 65_536
        /// Submits, cancels and child notices this node is routing at once.
        public static let maxPendingCommands = 4096
        /// Tasks one placement round reserves for, per swarm (times `probeRatio` reservations).
        public static let maxPlacedPerRound = 1024
        /// Owner epochs a worker remembers (for swarms it has nothing of any more).
        public static let maxKnownEpochs = 10_000
        /// The owner asks the nodes running its tasks whether they still run them (lost assigns)
        /// every this many retry intervals.
        public static let auditEvery = 10
        /// How long a restarted node waits to see a majority of a restored swarm's replica set
        /// before it takes the swarm over alone.
        public static let restoreGrace = Duration.seconds(30)
        /// How long a node defers to an owner it heard from but does not yet see up.
        public static let ownerHeardGrace = Duration.seconds(5)
        /// Least time between two advertisements of free capacity.
        public static let advertiseInterval = Duration.seconds(1)
    }

    public let settings: SwarmSettings
    public let myName: PeerName
    /// How this node, as a parent swarm's owner, admits a child swarm. The default admits every
    /// child at the cost of its tasks (hosts without spawn budgets: the simulator, tests).
    public var childRule: ChildRule = { .admit(cost: UInt64($0.childTasks)) }

    var rng: DeterministicRNG
    var nextRequestID: UInt64 = 1
    var nextTickAt: Instant
    var tickCount: UInt64 = 0

    /// The membership view, as the host reports it.
    var peers: [PeerName: PeerView] = [:]
    /// Largest free memory each peer ever advertised: its total when it does not advertise one.
    var seenMemory: [PeerName: UInt32] = [:]
    var ring = SwarmRing(members: [])
    /// When each member last went from up to down in this view (bounded by the membership).
    var downSince: [PeerName: Instant] = [:]
    var ringMembers: Set<PeerName> = []
    /// `ringMembers` changed since `ring` was built.
    var ringIsStale = false

    /// The ring of the members that take work now, rebuilt if they changed since its last use.
    mutating func currentRing() -> SwarmRing {
        if ringIsStale {
            ring = SwarmRing(members: ringMembers)
            ringIsStale = false
        }
        return ring
    }

    /// Swarms this node owns or replicates.
    var swarms: [SwarmID: SwarmEntry] = [:]
    /// Swarms with changes to replicate or waiters to check at the end of this input.
    var dirtySwarms: Set<SwarmID> = []
    var takeovers: [SwarmID: Takeover] = [:]
    /// Takeovers begun by this node so far (each one's `Takeover.round`).
    var takeoverRounds: UInt64 = 0
    var tombstones: Set<SwarmID> = []
    var tombstoneOrder: [SwarmID] = []

    /// What each of our requests in flight was for.
    var outstanding: [RequestID: Outstanding] = [:]
    var pendingCommands = 0

    var worker = WorkerState()

    public init(settings: SwarmSettings, myName: PeerName, seed: UInt64, now: Instant) {
        precondition(settings.replicationFactor >= 1 && settings.replicationFactor <= SwarmLimits.maxReplicas,
                     "replication factor out of 1...\(SwarmLimits.maxReplicas)")
        precondition(settings.probeRatio >= 1 && settings.probeRatio <= 16, "probe ratio out of 1...16")
        self.settings = settings
        self.myName = myName
        rng = DeterministicRNG(seed: seed)
        nextTickAt = now + settings.retryInterval
        ringMembers = [myName]
        ring = SwarmRing(members: [myName])
    }

    // MARK: Codec

    public static func encode(_ message: SwarmMessage) -> [UInt8] { message.encoded() }
    public static func decode(_ bytes: [UInt8]) throws -> SwarmMessage { try SwarmMessage.decode(bytes) }

    // MARK: Inputs

    public var nextDeadline: Instant {
        let busy = !swarms.isEmpty || !worker.held.isEmpty || !worker.reservations.isEmpty || !worker.running.isEmpty
        var deadline = busy ? nextTickAt : .distantFuture
        if worker.advertisePending, let last = worker.lastAdvertiseAt {
            deadline = min(deadline, last + Bounds.advertiseInterval)
        }
        return deadline
    }

    public mutating func tick(now: Instant) -> Effects {
        var out: Effects = []
        if now >= nextTickAt {
            nextTickAt = now + settings.retryInterval
            tickCount &+= 1
            workerTick(now: now, into: &out)
            reviewOwnership(now: now, into: &out)
            ownerTick(now: now, into: &out)
            dropFinishedSwarms(now: now)
        }
        finish(now: now, into: &out)
        return out
    }

    public mutating func receive(_ message: SwarmMessage, from peer: PeerName, now: Instant) -> Effects {
        var out: Effects = []
        switch message {
        case .reserve(let id, let epoch, let replicas, let needs):
            workerReserve(id, epoch: epoch, replicas: replicas, needs: needs, owner: peer, now: now)
        case .kill(let id, let index, let attempt, let epoch):
            workerKill(id, index: index, attempt: attempt, epoch: epoch, into: &out)
        default:
            break  // every other message is a request or an answer; one-way copies are ignored
        }
        finish(now: now, into: &out)
        return out
    }

    public mutating func request(_ message: SwarmMessage, from peer: PeerName, token: RequestToken, now: Instant) -> Effects {
        var out: Effects = []
        handleRequest(message, from: peer, responder: .remote(token), now: now, into: &out)
        finish(now: now, into: &out)
        return out
    }

    public mutating func response(_ message: SwarmMessage?, to request: RequestID, now: Instant) -> Effects {
        var out: Effects = []
        handleResponse(message, to: request, now: now, into: &out)
        finish(now: now, into: &out)
        return out
    }

    public mutating func membershipChanged(_ event: MembershipEvent, now: Instant) -> Effects {
        var out: Effects = []
        applyMembership(event, now: now, into: &out)
        finish(now: now, into: &out)
        return out
    }

    public mutating func command(_ command: SwarmCommand, id: CommandID, now: Instant) -> Effects {
        var out: Effects = []
        switch command {
        case .submit(let draft): submit(draft, command: id, now: now, into: &out)
        case .cancel(let swarm): cancelCommand(swarm, command: id, now: now, into: &out)
        }
        finish(now: now, into: &out)
        return out
    }

    public mutating func performed(_ outcome: SwarmActionOutcome, now: Instant) -> Effects {
        var out: Effects = []
        switch outcome {
        case .finished(let swarm, let index, let attempt, let runOutcome, let result):
            workerFinished(swarm, index: index, attempt: attempt, outcome: runOutcome, result: result, now: now, into: &out)
        case .occupied(let slots, let memoryMB):
            worker.occupiedSlots = Int(slots)
            worker.occupiedMemory = Int64(memoryMB)
        }
        finish(now: now, into: &out)
        return out
    }

    /// Swarms loaded from the node's store after a restart, before any other input. Each comes
    /// back as a replica; the membership events that follow make this node take over the ones
    /// it is the acting owner of (syncing from the other replicas first). Tasks without a stored
    /// record are pending. `children` are the child links stored for each swarm (a cancel of a
    /// parent must still reach them when every holder of the parent restarted).
    public mutating func restore(_ stored: [(SwarmDefinition, epoch: UInt32, state: SwarmState, tasks: [TaskRecord])],
                                 children: [SwarmID: [ChildLink]] = [:], lineages: [SwarmID: FinishLineage] = [:],
                                 now: Instant) -> [ProtocolEffect<Swarm>] {
        for (definition, epoch, state, tasks) in stored where swarms[definition.id] == nil {
            var records = Array(tasks.prefix(definition.draft.tasks.count))
            if records.count < definition.draft.tasks.count {
                records += Array(repeating: TaskRecord(), count: definition.draft.tasks.count - records.count)
            }
            var entry = SwarmEntry(definition: definition, epoch: epoch, state: state, tasks: records, now: now)
            entry.version = 0
            entry.restoredAt = now
            entry.children = Array((children[definition.id] ?? []).prefix(SwarmLimits.maxChildren))
            entry.lineage = lineages[definition.id] ?? FinishLineage()
            swarms[definition.id] = entry
        }
        var out: Effects = []
        finish(now: now, into: &out)
        return out
    }

    // MARK: Inspection (hosts, the simulator's invariants, tests)

    /// What this node holds of a swarm, owner or replica.
    public func snapshot(of id: SwarmID) -> SwarmSnapshot? {
        guard let e = swarms[id] else { return nil }
        return SwarmSnapshot(definition: e.definition, epoch: e.epoch, state: e.state, tasks: e.tasks,
                             isOwner: e.role == .owner, children: e.children.map(\.child))
    }

    /// The swarms this node holds, owner or replica, sorted.
    public var heldSwarms: [SwarmID] { swarms.keys.sorted() }

    /// Attempts this node's host is running now.
    public var runningAttempts: Int { worker.running.count }

    // MARK: Dispatch

    mutating func handleRequest(_ message: SwarmMessage, from peer: PeerName, responder: Responder, now: Instant,
                                into out: inout Effects) {
        switch message {
        case .create(let definition):
            ownerCreate(definition, responder: responder, now: now, into: &out)
        case .replicate(let update):
            replicaApply(update, from: peer, responder: responder, now: now, into: &out)
        case .sync(let id, let from):
            answerSync(id, from: from, asker: peer, responder: responder, now: now, into: &out)
        case .fetch(let id, _, let maxMemoryMB):
            ownerFetch(id, from: peer, maxMemoryMB: maxMemoryMB, responder: responder, now: now, into: &out)
        case .result(let id, let index, let attempt, let outcome, let result):
            ownerResult(id, index: index, attempt: attempt, outcome: outcome, result: result, from: peer,
                        responder: responder, now: now, into: &out)
        case .adopt(let id, let epoch, let replicas, let runs):
            respond(workerAdopt(id, epoch: epoch, replicas: replicas, runs: runs), to: responder, now: now, into: &out)
        case .cancel(let id):
            ownerCancel(id, responder: responder, now: now, into: &out)
        case .childCreated(let parent, let child, let replicas, let options, let tasks):
            ownerChildCreated(parent: parent, child: child, replicas: replicas, options: options, tasks: tasks,
                              responder: responder, now: now, into: &out)
        case .reserve, .kill, .created, .refused, .replicated, .syncPage, .assign, .noTask, .resultAck, .adopted,
             .cancelAnswer, .childAnswer, .childRefused:
            // A one-way message or an answer sent as a request: ignored, but the requester is
            // owed one answer.
            respond(.refused("not a request"), to: responder, now: now, into: &out)
        }
    }

    mutating func handleResponse(_ message: SwarmMessage?, to request: RequestID, now: Instant, into out: inout Effects) {
        guard let context = outstanding.removeValue(forKey: request) else { return }
        switch context {
        case .submit(let s): entrySubmitAnswered(s, message, now: now, into: &out)
        case .cancel(let c): entryCancelAnswered(c, message, now: now, into: &out)
        case .childNotice(let c): entryChildAnswered(c, message, now: now, into: &out)
        case .replicate(let id, let peer, let version, let completesFull):
            replicationAnswered(id, peer: peer, version: version, completesFull: completesFull, message, now: now, into: &out)
        case .sync(let id, let peer, let paging, let round):
            takeoverSyncAnswered(id, peer: peer, paging: paging, round: round, message, now: now, into: &out)
        case .fetch(let f): workerFetchAnswered(f, message, now: now, into: &out)
        case .result(let key, let attempt): workerResultAnswered(key, attempt: attempt, message, now: now, into: &out)
        case .adopt(let id, let peer, let epoch, let runs):
            adoptAnswered(id, peer: peer, epoch: epoch, runs: runs, message, now: now, into: &out)
        case .childCancel(let c): childCancelAnswered(c, message, now: now, into: &out)
        }
    }

    // MARK: Requests and answers, to peers or to this node itself

    /// Sends a request, or handles it here at once when it is addressed to this node (the
    /// owner is a worker too: its own fetches and results take no network trip).
    mutating func sendRequest(_ message: SwarmMessage, to peer: PeerName, context: Outstanding, now: Instant,
                              into out: inout Effects) {
        let id = RequestID(rawValue: nextRequestID)
        nextRequestID &+= 1
        outstanding[id] = context
        if peer == myName {
            handleRequest(message, from: myName, responder: .local(id), now: now, into: &out)
        } else {
            out.append(.request(message, to: peer, id: id, timeout: timeout(for: message)))
        }
    }

    /// How long a request waits for its answer. A create makes its receiver store every task and
    /// get the whole definition to a majority of the replica set before it answers, and a
    /// whole-swarm transfer makes a replica store every task: with the base timeout alone, a
    /// 10,000-task swarm on a loaded machine timed out, and the entry tried the next candidate
    /// (a second copy) and then refused the client. Their wait grows with the swarm's size.
    func timeout(for message: SwarmMessage) -> Duration {
        switch message {
        case .create(let d):
            // Stored by the owner, then sent to and stored by the replicas.
            return settings.requestTimeout + Self.storeAllowance(tasks: d.draft.tasks.count) * 2
        case .replicate(let u):
            guard let d = u.definition else { return settings.requestTimeout }
            return settings.requestTimeout + Self.storeAllowance(tasks: d.draft.tasks.count)
        case .cancel(let id):
            // The owner cancels every pending task and stores and replicates that before it
            // answers. Known only when this node holds the swarm (else the base timeout).
            guard let e = swarms[id] else { return settings.requestTimeout }
            return settings.requestTimeout + Self.storeAllowance(tasks: e.tasks.count)
        default:
            return settings.requestTimeout
        }
    }

    /// Time allowed to encode, send, decode and durably store the tasks of one swarm: 1 ms a
    /// task (10 s for 10,000, 100 s at the 100,000 limit), well above what it takes here idle
    /// (see NOTES), so that a loaded machine still answers in time.
    static func storeAllowance(tasks: Int) -> Duration { .milliseconds(max(0, tasks)) }

    mutating func send(_ message: SwarmMessage, to peer: PeerName, now: Instant, into out: inout Effects) {
        if peer == myName {
            switch message {
            case .reserve(let id, let epoch, let replicas, let needs):
                workerReserve(id, epoch: epoch, replicas: replicas, needs: needs, owner: myName, now: now)
            case .kill(let id, let index, let attempt, let epoch):
                workerKill(id, index: index, attempt: attempt, epoch: epoch, into: &out)
            default: break
            }
        } else {
            out.append(.send(message, to: peer))
        }
    }

    mutating func respond(_ message: SwarmMessage, to responder: Responder, now: Instant, into out: inout Effects) {
        switch responder {
        case .remote(let token): out.append(.respond(message, to: token))
        case .local(let id): handleResponse(message, to: id, now: now, into: &out)
        }
    }

    /// Work every input ends with: replicate what changed, pull tasks into free slots, and
    /// advertise capacity when it changed.
    mutating func finish(now: Instant, into out: inout Effects) {
        // A fetch this node sends itself can be answered within the same input (when the owner
        // needs no replica's copy), which frees or fills room for the next: repeat until quiet.
        // Bounded: each round consumes reservations, at most `maxReservations` in all.
        flushReplication(now: now, into: &out)
        var rounds = 0
        while workerFetchIfRoom(now: now, into: &out) && rounds <= Bounds.maxReservations {
            flushReplication(now: now, into: &out)
            rounds += 1
        }
        flushReplication(now: now, into: &out)
        workerAdvertise(now: now, into: &out)
        if nextTickAt <= now { nextTickAt = now + settings.retryInterval }
    }

    // MARK: Membership view

    /// Whether a peer counts as up for ownership and result delivery: alive or suspect (a
    /// suspicion alone never moves a swarm or a task). This node is always up to itself.
    func isUp(_ peer: PeerName) -> Bool {
        if peer == myName { return true }
        return peers[peer]?.status.isActive ?? false
    }

    /// Whether a peer may be given new work: alive, not suspect, dead or left.
    func takesWork(_ peer: PeerName) -> Bool {
        if peer == myName { return peers[peer].map { $0.takesWork } ?? true }
        return peers[peer]?.takesWork ?? false
    }

    /// The acting owner of a swarm in this node's view: the first of its replica set that is up.
    func actingOwner(of definition: SwarmDefinition) -> PeerName? {
        definition.replicas.first(where: isUp)
    }

    mutating func applyMembership(_ event: MembershipEvent, now: Instant, into out: inout Effects) {
        let name: PeerName
        let wasUp: Bool
        switch event {
        case .updated(let view):
            name = view.name
            wasUp = isUp(name)
            peers[name] = view
            if view.metadata.freeMemoryMB > seenMemory[name] ?? 0 { seenMemory[name] = view.metadata.freeMemoryMB }
        case .removed(let peer):
            name = peer
            wasUp = isUp(name)
            peers[peer] = nil
            seenMemory[peer] = nil
            downSince[peer] = nil
        }
        // Only a change of who takes work moves the ring, and only a change of who is up moves
        // swarms and tasks: capacity updates (most events) cost a lookup.
        // The ring itself is rebuilt when next used (`currentRing`): a node learning of
        // thousands of members at once (a join into a large mesh) would otherwise sort the whole
        // ring once per member.
        let changed = takesWork(name) ? ringMembers.insert(name).inserted : ringMembers.remove(name) != nil
        if peers[myName] == nil && ringMembers.insert(myName).inserted { ringIsStale = true }
        if changed { ringIsStale = true }
        let up = isUp(name)
        if wasUp && !up {
            // Reservations from an owner that is gone would each hold a slot until a fetch to
            // it times out.
            worker.reservations.removeAll { $0.owner == name }
            downSince[name] = now
            ownerPeerDown(name, now: now, into: &out)
            reviewOwnership(now: now, into: &out)
        } else if !wasUp && up {
            downSince[name] = nil
            ownerPeerUp(name, now: now, into: &out)
            reviewOwnership(now: now, into: &out)
        }
    }

    /// Total task memory of a member: advertised, or the most it ever advertised free.
    func totalMemory(of peer: PeerName) -> UInt32 {
        if peer == myName { return settings.memoryMB }
        let advertised = peers[peer]?.metadata.memoryMB ?? 0
        return advertised > 0 ? advertised : seenMemory[peer] ?? 0
    }

    mutating func newSwarmID() -> SwarmID {
        while true {
            let n = rng.next()
            var s = String(n, radix: 16)
            if s.count < 16 { s = String(repeating: "0", count: 16 - s.count) + s }
            if swarms[s] == nil && !tombstones.contains(s) { return s }
        }
    }

    mutating func remember(tombstone id: SwarmID) {
        guard tombstones.insert(id).inserted else { return }
        tombstoneOrder.append(id)
        if tombstoneOrder.count > Bounds.maxTombstones {
            let drop = tombstoneOrder.count - Bounds.maxTombstones
            for old in tombstoneOrder.prefix(drop) { tombstones.remove(old) }
            tombstoneOrder.removeFirst(drop)
        }
    }
}

/// A read-only copy of one swarm as a node holds it.
public struct SwarmSnapshot: Sendable, Equatable {
    public var definition: SwarmDefinition
    public var epoch: UInt32
    public var state: SwarmState
    public var tasks: [TaskRecord]
    /// Whether this node is the swarm's acting owner (its records are the authoritative ones).
    public var isOwner: Bool
    public var children: [SwarmID]
}

/// Who is waiting for an answer to a request this node handles.
enum Responder: Sendable {
    case remote(RequestToken)
    /// A request this node sent to itself.
    case local(RequestID)
}

/// What one of our requests in flight was for.
enum Outstanding: Sendable {
    case submit(SubmitRouting)
    case cancel(CancelRouting)
    case childNotice(ChildNotice)
    case replicate(SwarmID, peer: PeerName, version: UInt64, completesFull: Bool)
    /// A takeover's question to a replica; `round` names the takeover (`Takeover.round`), so an
    /// answer to an earlier one that stepped down is not taken for this one's.
    case sync(SwarmID, peer: PeerName, paging: Bool, round: UInt64)
    case fetch(FetchInFlight)
    case result(TaskKey, attempt: UInt16)
    case adopt(SwarmID, peer: PeerName, epoch: UInt32, runs: [RunRef])
    case childCancel(ChildCancel)
}

/// A task of a swarm, across attempts.
struct TaskKey: Hashable, Sendable {
    var swarm: SwarmID
    var index: UInt32
}
