/// The acting owner's side: it creates swarms, hands tasks to workers that ask for them,
/// records results exactly once (the attempt fence), moves the tasks of dead workers, and
/// cancels.
extension Swarm {
    // MARK: Create

    mutating func ownerCreate(_ d: SwarmDefinition, responder: Responder, now: Instant, into out: inout Effects) {
        if let e = swarms[d.id] {
            // A retry of a create whose answer was lost reaches us (as owner or replica): the
            // swarm exists; say who owns it rather than create a second copy.
            if e.definition.draft == d.draft {
                let owner = actingOwner(of: e.definition) ?? myName
                if owner == myName && e.role == .owner {
                    whenStored(d.id, .respond(.created(d.id, owner: myName), to: responder), fallback: .refused("owner changed"))
                } else {
                    respond(.created(d.id, owner: owner), to: responder, now: now, into: &out)
                }
            } else {
                respond(.refused("swarm id \(d.id) is taken"), to: responder, now: now, into: &out)
            }
            return
        }
        if let reason = Self.refusal(for: d.draft) {
            respond(.refused(reason), to: responder, now: now, into: &out)
            return
        }
        guard d.replicas.first == myName else {
            respond(.refused("\(myName) is not the first of the swarm's replica set"), to: responder, now: now, into: &out)
            return
        }
        // No more copies than this mesh keeps (the decoder already refused a name given twice).
        // Fewer is allowed, and so are names this node does not know: an entry whose view lags
        // sees fewer members, or members not yet heard of here. Those count as down, as a
        // replica that is down at create does: the swarm starts on the copies that are up.
        guard d.replicas.count <= settings.replicationFactor else {
            respond(.refused("a replica set of \(d.replicas.count), over this mesh's \(settings.replicationFactor)"), to: responder,
                    now: now, into: &out)
            return
        }
        let active = swarms.values.reduce(0) { $0 + ($1.isFinished ? 0 : 1) }
        guard active < Bounds.maxActiveSwarms else {
            respond(.refused("\(myName) holds \(active) unfinished swarms, its limit"), to: responder, now: now, into: &out)
            return
        }
        var entry = SwarmEntry(definition: d, epoch: 1, state: .running,
                               tasks: Array(repeating: TaskRecord(), count: d.draft.tasks.count), now: now)
        entry.role = .owner
        entry.lineage = .created
        entry.recount()
        for peer in d.replicas where peer != myName && isUp(peer) { entry.needsFull.insert(peer) }
        swarms[d.id] = entry
        out.append(.perform(.store(.swarm(d, epoch: 1, state: .running))))
        out.append(.perform(.store(.lineage(d.id, .created))))
        dirtySwarms.insert(d.id)
        let local = assignLocallyAtCreate(d.id, now: now, into: &out)
        whenStored(d.id, .respond(.created(d.id, owner: myName), to: responder), fallback: .refused("owner changed during create"))
        // Placement first, while the slots held for the local tasks still count as free here
        // (`placementCandidates`): the owner then gets its share of reservations, which wait in
        // its queue until those tasks end, as on any busy worker. Placing after they started
        // would see this node full and send it nothing, and it would idle once they ended.
        whenStored(d.id, .startPlacement, fallback: nil)
        for run in local { whenStored(d.id, .startLocal(run), fallback: nil) }
    }

    /// The owner's own free slots take the first tasks of a swarm it creates, in the create's
    /// own write: they start as soon as the replica set stores the swarm, one replication round
    /// instead of two (the create's, then an assignment's after a reservation and a fetch). The
    /// assignment is stored with the swarm before the task starts, exactly as a fetched one is,
    /// so a new owner adopts it rather than start it again.
    ///
    /// Only within the room a fetch would need (a reservation of another swarm queued here
    /// does not stop it: when a slot is free beside queued reservations, none of them fits the
    /// free memory, and a fetch would pass over them the same way), never for a child swarm (its
    /// parent's owner has not admitted it yet: a refused child must not have started anything),
    /// and only for a swarm small enough that its create is expected stored well within the hold
    /// (`smallEnoughToStartAtCreate`). Each slot is held (`WorkerState.heldAtCreate`) until the task starts,
    /// the swarm is cancelled, this node steps down, or `Swarm.holdLimit` passes with the create
    /// still not stored (the task then goes back to pending, first in the queue, its attempt not
    /// spent).
    mutating func assignLocallyAtCreate(_ id: SwarmID, now: Instant, into out: inout Effects) -> [TaskRun] {
        guard takesWork(myName), settings.slots > 0, swarms[id]!.definition.draft.parent == nil,
              smallEnoughToStartAtCreate(tasks: swarms[id]!.tasks.count) else { return [] }
        var runs: [TaskRun] = []
        while workerFreeSlots > 0, worker.held.count < Bounds.maxHeldResults, workerFreeMemory > 0,
              let index = swarms[id]!.takePending(maxMemoryMB: UInt32(clamping: workerFreeMemory)) {
            let run = assignAttempt(id, index, to: myName, now: now, into: &out)
            worker.heldAtCreate[TaskKey(swarm: id, index: index)] =
                .init(attempt: run.attempt, memoryMB: run.task.needs.memoryMB, since: now)
            noteEpoch(id, swarms[id]!.epoch)
            runs.append(run)
        }
        return runs
    }

    /// How long a slot stays held for a task taken at create whose create is not stored yet. The
    /// owner's tick releases it, so a hold ends between one and two retry intervals after it
    /// was taken.
    var holdLimit: Duration { settings.retryInterval }

    /// Whether a create of `tasks` tasks is expected stored well within `holdLimit` (its store
    /// allowance, as in its own timeout, a quarter of the limit at most: 125 tasks with the
    /// default 500 ms). A larger swarm's create takes longer to reach the replicas; holding
    /// slots for it would keep them from other swarms, and the hold would often lapse into an
    /// extra write before the create is stored. One replication round saved matters to a small
    /// swarm's latency, not to a large swarm's.
    func smallEnoughToStartAtCreate(tasks: Int) -> Bool { Self.storeAllowance(tasks: tasks) * 4 <= holdLimit }

    /// A task the owner assigned to itself at create (`assignLocallyAtCreate`), now stored by the
    /// replica set: its held slot becomes the run, if it is still held (not released by a cancel,
    /// a step-down or the hold's limit) and the record still says it runs here.
    mutating func startLocal(_ run: TaskRun, now: Instant, into out: inout Effects) {
        // A hold already released (a cancel, a step-down, its limit) took its `assigning` mark
        // with it, and the task may have been assigned again since: this waiter touches nothing.
        guard releaseHold(TaskKey(swarm: run.swarm, index: run.index), attempt: run.attempt) else { return }
        swarms[run.swarm]?.assigning.remove(run.index)
        guard let e = swarms[run.swarm], e.role == .owner, Int(run.index) < e.tasks.count else { return }
        let record = e.tasks[Int(run.index)]
        guard record.state == .running, record.node == myName, record.attempt == run.attempt else { return }
        // Defence only: a cancel releases the holds first (`cancelSwarm`), so a cancelled swarm's
        // task does not get here. Were it to, the attempt never starts and is recorded cancelled.
        guard e.state == .running else { return requeue(run.swarm, run.index, now: now, into: &out) }
        // The room shrank while the create was stored (the host's other work took slots or
        // memory): back to pending, the attempt not spent, rather than a failed run, and placed
        // at once (the create's placement ran before this, while the task still counted as
        // running, and nothing else would place it before the owner's quiet tick).
        guard workerFreeSlots > 0, Int64(run.task.needs.memoryMB) <= workerFreeMemory else {
            unassign(run.swarm, run.index, attempt: run.attempt, now: now, into: &out)
            if swarms[run.swarm]?.placing == true { place(run.swarm, now: now, into: &out) }
            return
        }
        workerStart(run, epoch: e.epoch, owners: e.definition.replicas, now: now, into: &out)
    }

    /// Ends the hold of `key` at `attempt`; false if it was not held (already released).
    mutating func releaseHold(_ key: TaskKey, attempt: UInt16) -> Bool {
        guard worker.heldAtCreate[key]?.attempt == attempt else { return false }
        worker.heldAtCreate[key] = nil
        return true
    }

    /// Releases the holds of `id`'s tasks (a cancel, or their limit passed): each goes back to
    /// pending with its attempt not spent (never started, never handed to anyone), or, in a
    /// cancelled swarm, becomes cancelled.
    mutating func releaseHolds(of id: SwarmID, heldFor limit: Duration? = nil, now: Instant, into out: inout Effects) {
        let keys = worker.heldAtCreate.filter { key, hold in key.swarm == id && (limit.map { now - hold.since >= $0 } ?? true) }
        // Last first: each task given back goes to the head of the queue, so they end there in
        // their order.
        for (key, hold) in keys.sorted(by: { $0.key > $1.key }) {
            _ = releaseHold(key, attempt: hold.attempt)
            // Holds are the owner's alone (`stepDown` releases them); a copy this node no longer
            // owns is never written from here.
            guard swarms[id]?.role == .owner else { continue }
            if swarms[id]?.state == .cancelled {
                requeue(id, key.index, now: now, into: &out)
            } else {
                unassign(id, key.index, attempt: hold.attempt, now: now, into: &out)
            }
        }
    }

    /// An attempt that never started and was never handed to another node goes back to
    /// pending, its number given back: no result of it can exist, so the fence loses nothing.
    /// It goes first in the pending queue, where it was when it was taken.
    mutating func unassign(_ id: SwarmID, _ index: UInt32, attempt: UInt16, now: Instant, into out: inout Effects) {
        guard swarms[id]?.role == .owner, Int(index) < swarms[id]!.tasks.count else { return }
        var record = swarms[id]!.tasks[Int(index)]
        guard record.state == .running, record.node == myName, record.attempt == attempt, attempt > 0 else { return }
        record.state = .pending
        record.node = nil
        record.attempt = attempt - 1
        swarms[id]!.assigning.remove(index)
        setTask(id, index, record, first: true, now: now, into: &out)
    }

    // MARK: Late binding: a worker with room asks for a task

    mutating func ownerFetch(_ id: SwarmID, from worker: PeerName, maxMemoryMB: UInt32, responder: Responder,
                             now: Instant, into out: inout Effects) {
        // No copy of the entry is kept alive across the mutations below: with one alive, each
        // change to the records would copy all of them (copy-on-write).
        guard swarms[id]?.role == .owner else {
            respond(.noTask(id), to: responder, now: now, into: &out)
            return
        }
        if swarms[id]!.outstandingReservations > 0 { swarms[id]!.outstandingReservations -= 1 }
        guard swarms[id]!.state == .running, swarms[id]!.placing, takesWork(worker),
              let index = swarms[id]!.takePending(maxMemoryMB: maxMemoryMB) else {
            respond(.noTask(id), to: responder, now: now, into: &out)
            return
        }
        let run = assignAttempt(id, index, to: worker, now: now, into: &out)
        // The worker starts only once a majority stores that this attempt runs there: a new
        // owner then knows to adopt it rather than start it a second time.
        whenStored(id, .respond(.assign(run, epoch: swarms[id]!.epoch, replicas: swarms[id]!.definition.replicas), to: responder),
                   fallback: .noTask(id))
        whenStored(id, .assigned(index), fallback: nil)
    }

    /// The next attempt of a pending task, recorded as running on `node` (a write, replicated
    /// like any other), and the run to hand that node once the replica set stores it.
    mutating func assignAttempt(_ id: SwarmID, _ index: UInt32, to node: PeerName, now: Instant,
                                into out: inout Effects) -> TaskRun {
        var record = swarms[id]!.tasks[Int(index)]
        // Attempts are bounded by maxAttempts (at most 10): never near UInt16.max.
        record.attempt = record.attempt < UInt16.max ? record.attempt + 1 : record.attempt
        record.state = .running
        record.node = node
        record.result = nil
        setTask(id, index, record, now: now, into: &out)
        swarms[id]!.assigning.insert(index)
        swarms[id]!.lastProgress = now
        let definition = swarms[id]!.definition
        return TaskRun(swarm: id, index: index, attempt: record.attempt, task: definition.draft.tasks[Int(index)],
                       options: definition.draft.options, maxAttempts: definition.draft.maxAttempts)
    }

    // MARK: Results, fenced by attempt and node

    mutating func ownerResult(_ id: SwarmID, index: UInt32, attempt: UInt16, outcome: RunOutcome, result: [UInt8],
                              from worker: PeerName, responder: Responder, now: Instant, into out: inout Effects) {
        func ack(_ verdict: ResultVerdict) -> SwarmMessage { .resultAck(id, index: index, attempt: attempt, verdict: verdict) }
        guard let role = swarms[id]?.role else {
            respond(ack(tombstones.contains(id) ? .stale : .notOwner), to: responder, now: now, into: &out)
            return
        }
        guard role == .owner else {
            // Every task of a finished swarm is final: nothing more can be recorded anywhere.
            respond(ack(swarms[id]!.isFinished ? .stale : .notOwner), to: responder, now: now, into: &out)
            return
        }
        guard Int(index) < swarms[id]!.tasks.count else {
            respond(ack(.stale), to: responder, now: now, into: &out)
            return
        }
        let current = swarms[id]!.tasks[Int(index)]
        if current.state == .running && current.attempt == attempt && current.node == worker {
            var record = current
            record.result = result
            if swarms[id]!.state == .cancelled {
                record.state = .cancelled
            } else {
                switch outcome {
                case .succeeded: record.state = .succeeded
                case .denied: record.state = .failed
                case .failed:
                    record.state = attempt < UInt16(swarms[id]!.definition.draft.maxAttempts) ? .pending : .failed
                }
            }
            if record.state == .pending {
                record.result = nil  // the node stays: a resend of this result is recognised below
            } else {
                record.finishSeq = swarms[id]!.finishCounter &+ 1
            }
            swarms[id]!.assigning.remove(index)
            swarms[id]!.auditing.remove(index)
            swarms[id]!.lastProgress = now
            setTask(id, index, record, now: now, into: &out)
            whenStored(id, .respond(ack(.recorded), to: responder), fallback: ack(.notOwner))
            if record.state == .pending { place(id, now: now, into: &out) }
        } else if current.attempt == attempt && current.node == worker && current.state != .running {
            // A resend of a result already recorded (its acknowledgement was lost).
            whenStored(id, .respond(ack(.recorded), to: responder), fallback: ack(.notOwner))
        } else {
            respond(ack(.stale), to: responder, now: now, into: &out)
        }
    }

    /// A running task whose node is gone (dead, left, or denies running it): back to pending
    /// while attempts remain, else failed; cancelled if its swarm is.
    mutating func requeue(_ id: SwarmID, _ index: UInt32, now: Instant, into out: inout Effects) {
        guard let count = swarms[id]?.tasks.count, Int(index) < count,
              swarms[id]!.tasks[Int(index)].state == .running else { return }
        var record = swarms[id]!.tasks[Int(index)]
        if swarms[id]!.state == .cancelled {
            record.state = .cancelled
        } else if record.attempt < UInt16(swarms[id]!.definition.draft.maxAttempts) {
            record.state = .pending
            record.node = nil  // a late result from that node is now stale
        } else {
            record.state = .failed
        }
        if record.state.isFinal { record.finishSeq = swarms[id]!.finishCounter &+ 1 }
        swarms[id]!.assigning.remove(index)
        swarms[id]!.auditing.remove(index)
        setTask(id, index, record, now: now, into: &out)
    }

    /// Indices of the tasks whose records match, read without keeping a copy of the entry alive
    /// in the caller (while a copy lives, each change to the records copies all of them).
    func taskIndices(_ id: SwarmID, where matches: (TaskRecord) -> Bool) -> [UInt32] {
        guard let tasks = swarms[id]?.tasks else { return [] }
        return tasks.indices.filter { matches(tasks[$0]) }.map { UInt32($0) }
    }

    // MARK: Membership

    /// A member went from up to dead, left or forgotten: its running tasks move (never on
    /// suspicion alone: suspect members stay up).
    mutating func ownerPeerDown(_ peer: PeerName, now: Instant, into out: inout Effects) {
        for id in swarms.keys.sorted() {
            guard let role = swarms[id]?.role else { continue }
            if swarms[id]!.definition.replicas.contains(peer) { dirtySwarms.insert(id) }  // the majority needed shrinks
            guard role == .owner else { continue }
            for index in taskIndices(id, where: { $0.state == .running && $0.node == peer }) {
                requeue(id, index, now: now, into: &out)
            }
            place(id, now: now, into: &out)
        }
    }

    /// A member came (back) up: replicas that missed changes get the whole swarm.
    mutating func ownerPeerUp(_ peer: PeerName, now: Instant, into out: inout Effects) {
        for id in swarms.keys.sorted() {
            guard let e = swarms[id], e.role == .owner, e.definition.replicas.contains(peer), peer != myName else { continue }
            swarms[id]!.needsFull.insert(peer)
            swarms[id]!.replicaVersion[peer] = nil
            dirtySwarms.insert(id)
        }
    }

    // MARK: Cancel

    mutating func ownerCancel(_ id: SwarmID, responder: Responder, now: Instant, into out: inout Effects) {
        guard let e = swarms[id] else {
            respond(.cancelAnswer(id, .notFound), to: responder, now: now, into: &out)
            return
        }
        switch e.role {
        case .owner:
            cancelSwarm(id, now: now, into: &out)
            whenStored(id, .respond(.cancelAnswer(id, .cancelled), to: responder),
                       fallback: .cancelAnswer(id, .redirect(actingOwner(of: e.definition) ?? myName)))
        case .takingOver:
            swarms[id]!.cancelRequested = true
            respond(.cancelAnswer(id, .cancelled), to: responder, now: now, into: &out)
        case .replica:
            if e.isFinished {
                respond(.cancelAnswer(id, .cancelled), to: responder, now: now, into: &out)
            } else if let owner = actingOwner(of: e.definition), owner != myName {
                respond(.cancelAnswer(id, .redirect(owner)), to: responder, now: now, into: &out)
            } else {
                swarms[id]!.cancelRequested = true
                respond(.cancelAnswer(id, .cancelled), to: responder, now: now, into: &out)
            }
        }
    }

    /// Pending tasks become cancelled and never start; running ones are killed (their results
    /// come back and are recorded as cancelled); child swarms are cancelled too.
    mutating func cancelSwarm(_ id: SwarmID, now: Instant, into out: inout Effects) {
        guard let state = swarms[id]?.state, swarms[id]!.role == .owner else { return }
        swarms[id]!.cancelRequested = false
        if state == .running { setSwarmState(id, .cancelled, now: now, into: &out) } else if state == .done { return }
        for index in taskIndices(id, where: { $0.state == .pending }) {
            var record = swarms[id]!.tasks[Int(index)]
            record.state = .cancelled
            record.finishSeq = swarms[id]!.finishCounter &+ 1
            setTask(id, index, record, now: now, into: &out)
        }
        // Tasks this node took at create and has not started: cancelled now, not at the store.
        releaseHolds(of: id, now: now, into: &out)
        sendKills(id, now: now, into: &out)
        for child in swarms[id]!.children { cancelChild(child, now: now, into: &out) }
        markFinishedIfDone(id, now: now, into: &out)
    }

    mutating func sendKills(_ id: SwarmID, now: Instant, into out: inout Effects) {
        guard let e = swarms[id] else { return }
        for i in e.tasks.indices where e.tasks[i].state == .running {
            guard let node = e.tasks[i].node else { continue }
            send(.kill(id, index: UInt32(i), attempt: e.tasks[i].attempt, epoch: e.epoch), to: node, now: now, into: &out)
        }
    }

    /// A child of one of our swarms was created. Recorded (stored, replicated) so that a cancel
    /// of the parent reaches it, after the host's rule (`childRule`) checked it against the
    /// parent's spawn budget and depth, counting every child recorded here. The parent's acting
    /// owner is one node handling one input at a time, so two tasks spawning at once on two
    /// nodes are checked one after the other: the second sees the first's cost.
    mutating func ownerChildCreated(parent: TaskRef, child: SwarmID, replicas: [PeerName], options: [UInt8], tasks: UInt32,
                                    responder: Responder, now: Instant, into out: inout Effects) {
        guard let e = swarms[parent.swarm] else {
            respond(.cancelAnswer(parent.swarm, .notFound), to: responder, now: now, into: &out)
            return
        }
        guard e.role == .owner else {
            let owner = actingOwner(of: e.definition) ?? myName
            respond(.cancelAnswer(parent.swarm, owner == myName ? .notFound : .redirect(owner)), to: responder, now: now, into: &out)
            return
        }
        if e.state == .cancelled {
            respond(.childAnswer(child, parentCancelled: true), to: responder, now: now, into: &out)
            return
        }
        if e.children.count >= SwarmLimits.maxChildren, !e.children.contains(where: { $0.child == child }) {
            respond(.childRefused(child, reason: "the parent swarm has \(SwarmLimits.maxChildren) child swarms, the limit"),
                    to: responder, now: now, into: &out)
            return
        }
        // A retried notice (its answer was lost) finds the child recorded: admitted already.
        if !e.children.contains(where: { $0.child == child }) {
            let used = e.children.reduce(UInt64(0)) { total, link in
                let (sum, overflow) = total.addingReportingOverflow(link.cost)
                return overflow ? .max : sum
            }
            let request = ChildAdmissionRequest(parentOptions: e.definition.draft.options, childOptions: options,
                                                childTasks: Int(tasks), used: used)
            switch childRule(request) {
            case .refuse(let reason):
                respond(.childRefused(child, reason: String(reason.utf8.prefix(SwarmLimits.maxReasonBytes)) ?? "refused by the parent swarm"),
                        to: responder, now: now, into: &out)
                return
            case .admit(let cost):
                let link = ChildLink(child: child, replicas: replicas, cost: cost)
                swarms[parent.swarm]!.children.append(link)
                swarms[parent.swarm]!.newChildren.append(link)
                out.append(.perform(.store(.child(parent.swarm, link))))
                dirtySwarms.insert(parent.swarm)
            }
        }
        whenStored(parent.swarm, .respond(.childAnswer(child, parentCancelled: false), to: responder),
                   fallback: .cancelAnswer(parent.swarm, .notFound))
    }

    mutating func cancelChild(_ link: ChildLink, now: Instant, into out: inout Effects) {
        routeChildCancel(ChildCancel(link: link, next: 0, hops: 0), now: now, into: &out)
    }

    mutating func routeChildCancel(_ c: ChildCancel, now: Instant, into out: inout Effects) {
        var c = c
        while c.next < c.link.replicas.count && !isUp(c.link.replicas[c.next]) { c.next += 1 }
        guard c.next < c.link.replicas.count, c.hops < 8 else { return }
        let target = c.redirect ?? c.link.replicas[c.next]
        sendRequest(.cancel(c.link.child), to: target, context: .childCancel(c), now: now, into: &out)
    }

    mutating func childCancelAnswered(_ c: ChildCancel, _ message: SwarmMessage?, now: Instant, into out: inout Effects) {
        var c = c
        c.hops += 1
        switch message {
        case .cancelAnswer(_, .cancelled):
            return
        case .cancelAnswer(_, .redirect(let owner)):
            c.redirect = owner
        default:
            c.redirect = nil
            c.next += 1
        }
        routeChildCancel(c, now: now, into: &out)
    }

    // MARK: Timer

    mutating func ownerTick(now: Instant, into out: inout Effects) {
        let audit = tickCount % UInt64(Bounds.auditEvery) == 0
        if let oldest = worker.heldAtCreate.values.map(\.since).min(), now - oldest >= holdLimit {
            // A create its replica set has not stored in time: its slots go back to the mesh.
            for id in Set(worker.heldAtCreate.keys.map(\.swarm)).sorted() {
                releaseHolds(of: id, heldFor: holdLimit, now: now, into: &out)
            }
        }
        for id in swarms.keys.sorted() {
            guard swarms[id]?.role == .owner else { continue }
            if !swarms[id]!.needsFull.isEmpty { dirtySwarms.insert(id) }
            // Reservations lost (dropped by full queues, or their workers died): place again,
            // at most one round per retry interval.
            let quiet = now - max(swarms[id]!.lastPlacement, swarms[id]!.lastProgress) >= settings.retryInterval
            if swarms[id]!.placing && swarms[id]!.state == .running && swarms[id]!.pendingCount > 0 && quiet {
                swarms[id]!.outstandingReservations = 0
                place(id, now: now, into: &out)
            }
            if audit {
                if swarms[id]!.state == .cancelled { sendKills(id, now: now, into: &out) }
                auditRunning(id, now: now, into: &out)
            }
        }
    }

    /// Asks each node the owner believes runs its tasks whether it still does (an assignment
    /// whose answer was lost leaves a task "running" nowhere); tasks it denies move.
    mutating func auditRunning(_ id: SwarmID, now: Instant, into out: inout Effects) {
        guard swarms[id]?.role == .owner else { return }
        var byNode: [PeerName: [RunRef]] = [:]
        for index in taskIndices(id, where: { $0.state == .running }) {
            let record = swarms[id]!.tasks[Int(index)]
            guard !swarms[id]!.assigning.contains(index), !swarms[id]!.auditing.contains(index),
                  let node = record.node else { continue }
            if node == myName {
                if !workerHolds(TaskKey(swarm: id, index: index), attempt: record.attempt) {
                    requeue(id, index, now: now, into: &out)
                }
                continue
            }
            guard isUp(node) else { continue }
            byNode[node, default: []].append(RunRef(index: index, attempt: record.attempt))
        }
        let epoch = swarms[id]!.epoch
        let replicas = swarms[id]!.definition.replicas
        for node in byNode.keys.sorted() {
            let runs = byNode[node]!
            for r in runs { swarms[id]!.auditing.insert(r.index) }
            sendRequest(.adopt(id, epoch: epoch, replicas: replicas, runs: runs), to: node,
                        context: .adopt(id, peer: node, epoch: epoch, runs: runs), now: now, into: &out)
        }
        if !byNode.isEmpty || swarms[id]!.pendingCount > 0 { place(id, now: now, into: &out) }
    }

    mutating func adoptAnswered(_ id: SwarmID, peer: PeerName, epoch: UInt32, runs: [RunRef], _ message: SwarmMessage?,
                                now: Instant, into out: inout Effects) {
        guard swarms[id]?.role == .owner, swarms[id]!.epoch == epoch else { return }
        for r in runs { swarms[id]!.auditing.remove(r.index) }
        // Unreachable: leave the tasks running; if the node is dead, SWIM will say so.
        guard case .adopted(_, let confirmed) = message else { return }
        let still = Set(confirmed)
        for r in runs where !still.contains(r) && Int(r.index) < swarms[id]!.tasks.count {
            let t = swarms[id]!.tasks[Int(r.index)]
            if t.state == .running && t.attempt == r.attempt && t.node == peer { requeue(id, r.index, now: now, into: &out) }
        }
        place(id, now: now, into: &out)
    }

    /// Forgets finished swarms after `finishedRetention`, or the oldest beyond
    /// `maxFinishedSwarms` (the store keeps them; a late result for one is answered stale).
    mutating func dropFinishedSwarms(now: Instant) {
        var finished: [(Instant, SwarmID)] = []
        for (id, e) in swarms where e.isFinished && e.waiters.isEmpty && takeovers[id] == nil {
            if e.role == .owner && (e.hasUnsentChanges || !e.fullInFlight.isEmpty || committedVersion(e) < e.version) { continue }
            finished.append((e.finishedAt ?? now, id))
        }
        finished.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        let excess = max(0, finished.count - Bounds.maxFinishedSwarms)
        for (k, (at, id)) in finished.enumerated() where k < excess || now - at >= Bounds.finishedRetention {
            swarms[id] = nil
            remember(tombstone: id)
        }
    }
}

/// Routing of a cancel from a parent's owner to one child swarm.
struct ChildCancel: Sendable {
    var link: ChildLink
    var next: Int
    var hops: Int
    var redirect: PeerName? = nil
}
