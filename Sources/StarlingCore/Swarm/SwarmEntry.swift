/// One swarm as this node holds it, owner or replica.
struct SwarmEntry: Sendable {
    enum Role: Sendable, Equatable {
        case replica
        /// This node is the acting owner and has synced from the other replicas.
        case owner
        /// This node is the acting owner in its view and is syncing before it acts.
        case takingOver
    }

    // Replicated state.
    var definition: SwarmDefinition
    var epoch: UInt32
    var state: SwarmState
    var tasks: [TaskRecord]
    var children: [ChildLink] = []
    /// Changes the owner has made, counted: a replica applies an update only on top of the
    /// version it builds on.
    var version: UInt64 = 1
    /// The reigns that numbered the finishes (what the events stream's ids are relative to).
    var lineage = FinishLineage()

    var role: Role = .replica
    /// Set when loaded from the store after a restart and cleared once this node has heard
    /// from the swarm's other replicas: a restarted node that does not yet see its peers must
    /// not take over alone on its stale copy (see `Swarm.restoreGrace`).
    var restoredAt: Instant?
    /// Another node acting as owner that this node heard from (a replicate, or a sync that made
    /// this node step down), and when: while recent, this node does not take over even if its
    /// view has not caught up with that node yet (see `Swarm.Bounds.ownerHeardGrace`).
    var heardOwner: (peer: PeerName, at: Instant)?
    /// Tasks not final.
    var unfinished: Int
    var finishCounter: UInt32
    /// Replica: a whole transfer's first chunk came and its last has not: changes made after
    /// it are refused (`needFull`) and nothing is shown until the last chunk.
    var awaitingChunks = false
    /// The highest `finishSeq` this node wrote as `StoreChange.visible`: the events stream
    /// shows finished tasks up to it.
    var published: UInt32 = 0
    /// Owner: versions sent to the replica set, each with the finish counter it covers, oldest
    /// first; published once a majority stores the version (`Swarm.publishCommitted`).
    var unpublished: [(version: UInt64, seq: UInt32)] = []
    var finishedAt: Instant?

    // Owner bookkeeping.
    /// Pending task indices in placement order; entries that stopped being pending are skipped.
    var pendingQueue: [UInt32] = []
    var queueHead = 0
    var pendingCount = 0
    /// Whether tasks may be placed (after the create or the takeover is committed).
    var placing = false
    var outstandingReservations = 0
    var lastPlacement: Instant
    var lastProgress: Instant
    /// Tasks whose assignment is waiting for the replica set (the audit leaves them alone).
    var assigning: Set<UInt32> = []
    /// Tasks whose node the owner is asking whether it still runs them.
    var auditing: Set<UInt32> = []
    /// A cancel arrived during a takeover; applied when the takeover completes.
    var cancelRequested = false

    // Replication bookkeeping (owner).
    var replicaVersion: [PeerName: UInt64] = [:]
    var needsFull: Set<PeerName> = []
    var fullInFlight: Set<PeerName> = []
    var dirty: Set<UInt32> = []
    var metaDirty = false
    var newChildren: [ChildLink] = []
    var waiters: [Waiter] = []

    init(definition: SwarmDefinition, epoch: UInt32, state: SwarmState, tasks: [TaskRecord], now: Instant) {
        self.definition = definition
        self.epoch = epoch
        self.state = state
        self.tasks = tasks
        unfinished = tasks.reduce(0) { $0 + ($1.state.isFinal ? 0 : 1) }
        finishCounter = tasks.reduce(0) { max($0, $1.finishSeq) }
        lastPlacement = now
        lastProgress = now
        if unfinished == 0 { finishedAt = now }
    }

    var id: SwarmID { definition.id }
    var isFinished: Bool { unfinished == 0 && state != .running }
    var hasUnsentChanges: Bool { !dirty.isEmpty || metaDirty || !newChildren.isEmpty }
    /// The version this node's changes so far will have once replicated.
    var targetVersion: UInt64 { hasUnsentChanges ? version + 1 : version }

    /// Rebuilds the derived counters and the pending queue from the records (after a restore,
    /// a sync or a whole-swarm transfer).
    mutating func recount() {
        unfinished = tasks.reduce(0) { $0 + ($1.state.isFinal ? 0 : 1) }
        finishCounter = tasks.reduce(0) { max($0, $1.finishSeq) }
        pendingQueue = tasks.indices.filter { tasks[$0].state == .pending }.map { UInt32($0) }
        queueHead = 0
        pendingCount = pendingQueue.count
    }

    /// Appends a task to the pending queue (compacting the consumed head now and then).
    mutating func enqueue(_ index: UInt32) {
        if queueHead > 1024 && queueHead * 2 > pendingQueue.count {
            pendingQueue.removeFirst(queueHead)
            queueHead = 0
        }
        pendingQueue.append(index)
    }

    /// Puts a task at the head of the pending queue (into the consumed head's room when there is
    /// some, so this is O(1) but for a queue never taken from).
    mutating func enqueueFirst(_ index: UInt32) {
        if queueHead > 0 {
            queueHead -= 1
            pendingQueue[queueHead] = index
        } else {
            pendingQueue.insert(index, at: 0)
        }
    }

    /// The first pending task whose needs fit within `maxMemoryMB`, taken off the queue.
    mutating func takePending(maxMemoryMB: UInt32) -> UInt32? {
        // Skip entries at the head that are no longer pending.
        while queueHead < pendingQueue.count && tasks[Int(pendingQueue[queueHead])].state != .pending { queueHead += 1 }
        var i = queueHead
        while i < pendingQueue.count {
            let index = pendingQueue[i]
            let t = Int(index)
            if tasks[t].state == .pending && definition.draft.tasks[t].needs.memoryMB <= maxMemoryMB {
                if i == queueHead { queueHead += 1 } else { pendingQueue.remove(at: i) }
                return index
            }
            i += 1
        }
        return nil
    }
}

/// Something to do once the replica set stored a version (or never, if this node is deposed).
struct Waiter: Sendable {
    enum Action: Sendable {
        case respond(SwarmMessage, to: Responder)
        case startPlacement
        case assigned(UInt32)
        /// A task the owner took for itself at create (`Swarm.assignLocallyAtCreate`).
        case startLocal(TaskRun)
    }
    var version: UInt64
    var action: Action
    /// What to answer instead when this node stops being the owner before the version is stored.
    var fallback: SwarmMessage?
}

/// The best replica's copy, page by page: every page must be of the same (epoch, version) and
/// follow the one before.
struct StagedCopy: Sendable {
    var epoch: UInt32
    var version: UInt64
    var state: SwarmState
    var children: [ChildLink]
    var lineage: FinishLineage
    var records: [TaskRecord]
    /// Where the next page must start.
    var next: UInt32 = 0
}

/// A takeover in progress: the replicas asked, the best state found so far.
struct Takeover: Sendable {
    /// Which of this node's takeovers (`Swarm.takeoverRounds`): answers name it.
    var round: UInt64 = 0
    var waiting: Set<PeerName>
    var maxEpoch: UInt32
    var best: (peer: PeerName, epoch: UInt32, version: UInt64)?
    var paging = false
    /// Tasks this node holds as final where the best replica does not (recorded on this side
    /// of a healed partition): kept, and numbered after the others' completions.
    var keptFinal: [UInt32] = []
    /// The best replica's lineage, once its whole copy is applied: this node's numbering
    /// continues it.
    var bestLineage: FinishLineage?
    /// The best replica's copy as its pages arrive (`Swarm.applyStagedCopy` at the last one).
    var staged: StagedCopy?
    /// The lineages of the replicas that answered (`FinishLineage.learn`).
    var heard: [FinishLineage] = []
}
