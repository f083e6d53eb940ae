/// Owner failover. The acting owner of a swarm is the first member of its replica set that is
/// up (alive or suspect) in this node's view. A replica that finds itself acting owner:
/// 1. asks the other replicas that are up for what they hold (`sync`), and copies the state of
///    the one with the highest (epoch, version) if it is ahead of its own;
/// 2. takes an owner epoch one above every epoch it saw, stores it, and sends the whole swarm
///    to the other replicas under that epoch (replicas and workers refuse lower epochs from
///    then on, so the deposed owner is fenced);
/// 3. asks each live node the state says runs a task whether it still runs that attempt
///    (`adopt`) and keeps those running; tasks of nodes that are down, or that deny, move back
///    to pending (or fail when out of attempts).
/// A node that stops being the acting owner in its view steps down.
extension Swarm {
    mutating func reviewOwnership(now: Instant, into out: inout Effects) {
        for id in swarms.keys.sorted() {
            guard let definition = swarms[id]?.definition else { continue }
            let role = swarms[id]!.role
            if actingOwner(of: definition) == myName {
                guard role == .replica && (!swarms[id]!.isFinished || swarms[id]!.cancelRequested) else { continue }
                // An owner heard from after this view last saw it go down is alive: the view lags.
                if let heard = swarms[id]!.heardOwner, heard.peer != myName, now - heard.at < Bounds.ownerHeardGrace,
                   downSince[heard.peer].map({ heard.at > $0 }) ?? true { continue }
                if let restored = swarms[id]!.restoredAt {
                    let up = definition.replicas.filter(isUp).count
                    let majority = definition.replicas.count / 2 + 1
                    if up < majority && now - restored < Bounds.restoreGrace { continue }
                }
                beginTakeover(id, now: now, into: &out)
            } else if role != .replica {
                stepDown(id, now: now, into: &out)
            }
        }
    }

    mutating func beginTakeover(_ id: SwarmID, now: Instant, into out: inout Effects) {
        guard let epoch = swarms[id]?.epoch else { return }
        swarms[id]!.role = .takingOver
        swarms[id]!.placing = false
        let others = swarms[id]!.definition.replicas.filter { $0 != myName && isUp($0) }
        guard !others.isEmpty else {
            completeTakeover(id, maxEpoch: epoch, now: now, into: &out)
            return
        }
        takeoverRounds &+= 1
        let round = takeoverRounds
        takeovers[id] = Takeover(round: round, waiting: Set(others), maxEpoch: epoch)
        for peer in others {
            sendRequest(.sync(id, from: 0), to: peer, context: .sync(id, peer: peer, paging: false, round: round), now: now, into: &out)
        }
    }

    /// A replica that is taking over asks what this node holds. If this node owns the swarm:
    /// an asker that comes first in the replica set is the rightful owner (it came back), so this
    /// node steps down *before* answering, and assigns nothing more on a state the asker would
    /// not see; an asker that comes after it thinks it is dead and is told it is not (redirect).
    mutating func answerSync(_ id: SwarmID, from: UInt32, asker: PeerName, responder: Responder, now: Instant,
                             into out: inout Effects) {
        if let e = swarms[id], e.role != .replica, from == 0 {
            if precedes(asker, myName, in: e.definition) {
                stepDown(id, now: now, into: &out)
                swarms[id]!.heardOwner = (asker, now)
            } else {
                respond(.cancelAnswer(id, .redirect(myName)), to: responder, now: now, into: &out)
                return
            }
        }
        respond(syncPage(id, from: from), to: responder, now: now, into: &out)
    }

    mutating func takeoverSyncAnswered(_ id: SwarmID, peer: PeerName, paging: Bool, round: UInt64, _ message: SwarmMessage?,
                                       now: Instant, into out: inout Effects) {
        // Only this takeover's own questions, each in its phase: the first round's from a
        // replica still awaited, the pages from the best replica.
        guard var t = takeovers[id], swarms[id]?.role == .takingOver, t.round == round,
              paging ? (t.paging && peer == t.best?.peer) : (!t.paging && t.waiting.contains(peer)) else { return }
        let (myEpoch, myVersion, myState, taskCount) = (swarms[id]!.epoch, swarms[id]!.version, swarms[id]!.state,
                                                        swarms[id]!.tasks.count)
        if !paging {
            if case .cancelAnswer(_, .redirect(let owner)) = message, owner == peer {
                // The owner is alive after all (this view is behind): no takeover now; the next
                // review tries again if the view still says so.
                return abandonTakeover(id)
            }
            t.waiting.remove(peer)
            if case .syncPage(let p) = message, p.known, p.id == id {
                t.maxEpoch = max(t.maxEpoch, p.epoch)
                if t.heard.count < SwarmLimits.maxReplicas { t.heard.append(p.lineage) }
                let reference = t.best.map { ($0.epoch, $0.version) } ?? (myEpoch, myVersion)
                if (p.epoch, p.version) > reference { t.best = (peer, p.epoch, p.version) }
            }
            takeovers[id] = t
            guard t.waiting.isEmpty else { return }
            if let best = t.best {
                takeovers[id]!.paging = true
                sendRequest(.sync(id, from: 0), to: best.peer, context: .sync(id, peer: best.peer, paging: true, round: t.round),
                            now: now, into: &out)
            } else {
                completeTakeover(id, maxEpoch: t.maxEpoch, now: now, into: &out)
            }
            return
        }
        // Copying the best replica's state, page by page, into the takeover's stage: nothing
        // of this node's copy changes until the last page, when the whole copy is applied in
        // one input (one store transaction). A copy that breaks off ends this takeover with
        // nothing changed: completing on this node's own, older copy would then overwrite
        // results only the best replica holds (its whole transfer replaces theirs). The next
        // review (a tick later) starts over, asking the replicas that are up then.
        let pageFits = { (p: SyncPage) in
            p.known && p.id == id && Int(p.from) + p.records.count <= taskCount
                && (p.from == 0 ? (p.epoch, p.version) == (t.best?.epoch ?? 0, t.best?.version ?? 0)
                    : (t.staged.map { p.epoch == $0.epoch && p.version == $0.version && p.from == $0.next } ?? false))
        }
        guard case .syncPage(let p) = message, pageFits(p), !p.records.isEmpty || p.next == nil else {
            return abandonTakeover(id)
        }
        if p.from == 0 {
            takeovers[id]!.staged = StagedCopy(epoch: p.epoch, version: p.version, state: p.state, children: p.children,
                                               lineage: p.lineage, records: Array(repeating: TaskRecord(), count: taskCount))
        }
        for (k, record) in p.records.enumerated() { takeovers[id]!.staged!.records[Int(p.from) + k] = record }
        takeovers[id]!.staged!.next = p.from + UInt32(p.records.count)
        if let next = p.next {
            guard next == takeovers[id]!.staged!.next else { return abandonTakeover(id) }
            sendRequest(.sync(id, from: next), to: peer, context: .sync(id, peer: peer, paging: true, round: t.round), now: now, into: &out)
        } else if takeovers[id]!.staged!.next != UInt32(taskCount) {
            // A last page short of the last task: not a whole copy.
            abandonTakeover(id)
        } else {
            applyStagedCopy(id, into: &out)
            completeTakeover(id, maxEpoch: t.maxEpoch, now: now, into: &out)
        }
    }

    /// No takeover now, with nothing of this node's copy changed (a staged copy is dropped); the
    /// next review, a tick later, starts over if this node is still the acting owner.
    mutating func abandonTakeover(_ id: SwarmID) {
        takeovers[id] = nil
        swarms[id]?.role = .replica
    }

    /// The best replica's whole copy replaces this node's, record by record, except results
    /// this node recorded that the copy has unfinished (kept, and numbered after the copy's in
    /// `completeTakeover`).
    mutating func applyStagedCopy(_ id: SwarmID, into out: inout Effects) {
        guard let staged = takeovers[id]?.staged, let (myEpoch, myState) = swarms[id].map({ ($0.epoch, $0.state) }) else { return }
        takeovers[id]!.staged = nil
        takeovers[id]!.bestLineage = staged.lineage
        // The rows now follow the best replica's numbering, not this node's: the events stream
        // here shows nothing until `completeTakeover` (the same input) stored their lineage.
        swarms[id]!.published = 0
        swarms[id]!.unpublished = []
        out.append(.perform(.store(.hideAll(id))))
        swarms[id]!.version = max(swarms[id]!.version, staged.version)
        // A cancel on either side of a healed partition stands.
        if staged.state != myState && myState != .cancelled {
            swarms[id]!.state = staged.state
            out.append(.perform(.store(.swarmState(id, staged.state, epoch: myEpoch))))
        }
        var known = Set(swarms[id]!.children.map(\.child))
        for c in staged.children where swarms[id]!.children.count < SwarmLimits.maxChildren && known.insert(c.child).inserted {
            swarms[id]!.children.append(c)
            out.append(.perform(.store(.child(id, c))))
        }
        for (i, record) in staged.records.enumerated() {
            let index = UInt32(i)
            let mine = swarms[id]!.tasks[i]
            guard mine != record else { continue }
            // A result this node recorded (and acknowledged) is never undone by a copy that
            // has the task unfinished.
            if mine.state.isFinal && !record.state.isFinal {
                takeovers[id]!.keptFinal.append(index)
                continue
            }
            swarms[id]!.set(index, record)
            out.append(.perform(.store(.task(id, index: index, record))))
        }
    }

    mutating func completeTakeover(_ id: SwarmID, maxEpoch: UInt32, now: Instant, into out: inout Effects) {
        let keptFinal = takeovers[id]?.keptFinal ?? []
        let bestLineage = takeovers[id]?.bestLineage
        let heard = takeovers[id]?.heard ?? []
        takeovers[id] = nil
        guard let previousEpoch = swarms[id]?.epoch else { return }
        let state = swarms[id]!.state
        let replicas = swarms[id]!.definition.replicas
        let highest = max(maxEpoch, previousEpoch)
        let epoch = highest < UInt32.max ? highest + 1 : highest
        swarms[id]!.epoch = epoch
        swarms[id]!.role = .owner
        swarms[id]!.restoredAt = nil
        swarms[id]!.recount()
        swarms[id]!.version += 1
        swarms[id]!.replicaVersion = [:]
        swarms[id]!.fullInFlight = []
        swarms[id]!.needsFull = Set(replicas.filter { $0 != myName && isUp($0) })
        swarms[id]!.lastPlacement = now
        swarms[id]!.lastProgress = now
        dirtySwarms.insert(id)
        out.append(.perform(.store(.swarmState(id, state, epoch: epoch))))
        // The numbering continues the copy taken (the best replica's, or this node's own), from
        // the counter now: every number up to it names what it named in that copy's reigns.
        var lineage = bestLineage ?? swarms[id]!.lineage
        // Reigns of the copies not taken (this node's own among them) stay resumable from where
        // their numbering and the taken one's agree.
        for other in heard + [swarms[id]!.lineage] where other != lineage { lineage.learn(other) }
        let me = replicas.firstIndex(of: myName) ?? 0
        lineage.begin(Reign(epoch: epoch, owner: UInt8(clamping: me)), from: swarms[id]!.finishCounter)
        swarms[id]!.lineage = lineage
        out.append(.perform(.store(.lineage(id, lineage))))
        // The counter now covers the copy's numbers (and the kept finishes' old ones, which are
        // renumbered above it just below): shown up to here is the copy's numbering only.
        let copiedUpTo = swarms[id]!.finishCounter
        // Completions kept from this side of a partition get numbers after the other side's,
        // so finishSeq stays unique.
        for index in keptFinal {
            var record = swarms[id]!.tasks[Int(index)]
            record.finishSeq = swarms[id]!.finishCounter &+ 1
            setTask(id, index, record, now: now, into: &out)
        }
        if bestLineage != nil && replicas.count / 2 + 1 <= 2 {
            // What was copied is on the best replica and here: a majority of a set of up to 3
            // (the rule a replica shows a whole transfer by, `replicaApply`). Not the kept
            // finishes just renumbered above it: those wait for the replica set as new ones do.
            publish(id, upTo: copiedUpTo, into: &out)
        }

        var byNode: [PeerName: [RunRef]] = [:]
        for index in taskIndices(id, where: { $0.state == .running }) {
            let record = swarms[id]!.tasks[Int(index)]
            guard let node = record.node, isUp(node) else {
                requeue(id, index, now: now, into: &out)
                continue
            }
            if node == myName {
                if !workerHolds(TaskKey(swarm: id, index: index), attempt: record.attempt) {
                    requeue(id, index, now: now, into: &out)
                }
            } else {
                byNode[node, default: []].append(RunRef(index: index, attempt: record.attempt))
            }
        }
        for node in byNode.keys.sorted() {
            let runs = byNode[node]!
            for r in runs { swarms[id]!.auditing.insert(r.index) }
            sendRequest(.adopt(id, epoch: epoch, replicas: replicas, runs: runs), to: node,
                        context: .adopt(id, peer: node, epoch: epoch, runs: runs), now: now, into: &out)
        }
        if swarms[id]?.role == .owner {
            if swarms[id]!.cancelRequested || swarms[id]!.state == .cancelled { cancelSwarm(id, now: now, into: &out) }
            swarms[id]?.placing = true
            place(id, now: now, into: &out)
            markFinishedIfDone(id, now: now, into: &out)
        }
    }
}
