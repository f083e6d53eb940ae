/// Migration (issue #11 item 6): an owner hands an idle session to the member that should own
/// it (`SessionLivePlacement`), without a gap in which two epochs record or none serves.
///
/// The steps, old owner O (epoch e, replica set S) to new owner P (epoch e + 1, set S'):
///
/// 1. **Transfer.** O stops taking writes (they wait in the session's queue; reads are still
///    answered) and sends P the image (`handoff`). P verifies it as any image (chain,
///    signatures under gossiped keys, contents), stores it durably and answers `stored`.
///    P holds it as a copy led by O; it remembers the offer (`incoming`).
/// 2. **Fence.** O promises e + 1 to P itself and asks each member of S to do the same
///    (`transfer`). A replica takes it only from the owner of the epoch it promised, for a
///    higher epoch: the owner's consent, which stickiness (`ownedBy`) would refuse to anyone
///    else while O lives. A replica that promised e + 1 to P refuses e + 1 to anyone else
///    (`promise`), and refuses O's records of e (`stale`), so once a majority of S promised,
///    no one but P can record: at most one epoch records at a time.
/// 3. **Commit.** With a majority of S promised, O tells P (`commit`). P takes epoch e + 1,
///    installs the image on S' and serves once a majority of S' stored it; only then does it
///    answer the commit. O then stops leading: its waiting writes hear `moved`, and the
///    routes forward them to P (the owner recorded here), or answer 503 to a request another
///    node forwarded here. A member of S that S' leaves out is
///    told to drop its copy (`release`) once S' stored the session.
///
/// Crashes: before step 2, nothing changed (O serves on, or O's replicas take over as after
/// any owner's death; P's copy is not in a replica set and is released or ignored). From step
/// 2 on, P is the owner some replicas promised: if O dies or the commit does not come in time,
/// P takes the session over itself (`prepare` of a higher epoch at S, as any successor, with
/// the image it verified). If P dies, its promised owner is gone and S's first live member
/// takes over as usual. Every path goes through a majority promise, so fencing holds.
extension Sessions {
    /// A handoff this node (the session's owner) leads.
    struct Handoff: Sendable, Equatable {
        enum Step: Sendable, Equatable {
            case sending
            case fencing
            case committing
        }
        var to: PeerName
        /// The epoch the next owner takes.
        var epoch: UInt64
        var oldSet: [PeerName]
        var newSet: [PeerName]
        var step: Step
        var promised: Set<PeerName> = []
        var failed: Set<PeerName> = []
        /// When it began (for `describe`).
        var began: Instant
    }

    /// A session handed to this node, stored and verified, waiting for its old owner's commit.
    struct Incoming: Sendable, Equatable {
        var from: PeerName
        /// The epoch of the image (the old owner's) and the one offered.
        var fromEpoch: UInt64
        var epoch: UInt64
        var replicas: [PeerName]
        /// Past it without a commit, this node takes the session over (a majority may have
        /// promised it the session, and nobody else would).
        var deadline: Instant
    }

    // MARK: Placement on the live mesh

    /// Live placement over the members alive here (plus `extra`, when this node is not yet
    /// alive in its own view), with the loads they gossip and this node's own count.
    mutating func livePlacement(including extra: PeerName? = nil) -> SessionLivePlacement {
        var names = alive
        if let extra { names.insert(extra) }
        let candidates = names.sorted().map { name in
            SessionLivePlacement.Candidate(name: name, slots: Int(members[name]?.metadata.slots ?? 0),
                                           owned: name == myName ? ownedHere : Int(members[name]?.metadata.sessions ?? 0))
        }
        // The ring depends on the names and slots only; loads change every gossip round.
        let shape = candidates.map { "\($0.name)/\($0.slots)" }
        if liveRing?.shape != shape { liveRing = (shape, SessionLivePlacement.ring(for: candidates)) }
        return SessionLivePlacement(ring: liveRing!.ring, candidates: candidates, epsilon: settings.epsilon)
    }

    /// Sessions this node leads now (serving, resuming or handing off): its load.
    var ownedHere: Int { held.values.reduce(0) { $0 + ($1.lead != nil ? 1 : 0) } }

    // MARK: Deciding moves (each tick)

    /// Takes over offered sessions whose commit did not come, then starts handoffs of idle
    /// sessions that should be elsewhere, at most `movesPerTick` in flight.
    mutating func considerMoves(now: Instant) -> [ProtocolEffect<Sessions>] {
        var effects: [ProtocolEffect<Sessions>] = []
        for sid in incoming.keys.sorted() {
            guard let offer = incoming[sid] else { continue }
            // This node's own takeover of the offer is in flight: keep the offer (if it fails, the
            // copy goes back to the old owner's epoch and the offer is tried again).
            if case .preparing? = held[sid]?.lead?.phase, held[sid]?.owner == myName { continue }
            // The copy is still the old owner's here (at its epoch, or at a higher one this node
            // promised its retake), or this node's own: the offer stands.
            guard let h = held[sid], h.lead == nil, h.owner == offer.from || h.owner == myName else {
                // This node leads it now, or someone else moved the session on (a takeover, a
                // newer install): the offer is over.
                incoming[sid] = nil
                continue
            }
            guard now >= offer.deadline || !present.contains(offer.from) else { continue }
            // The offer stays until someone leads the session (the guard above drops it then):
            // a takeover that fails (answers lost, members cut off for a moment) is tried again
            // once its quiet time passed, else the members that promised this node would wait on
            // it for ever (they name it as owner to anyone else).
            guard h.quietUntil.map({ now >= $0 }) ?? true else { continue }
            effects += prepare(sid, now: now)
        }

        effects += considerRefills(now: now)

        var inFlight = held.values.reduce(0) { n, h in
            if case .handingOff? = h.lead?.phase { return n + 1 }
            return n
        }
        // Nothing served here, nothing to move: no ring is built (a burst of joins would
        // rebuild it every tick for nothing).
        guard inFlight < settings.movesPerTick, held.values.contains(where: { $0.lead?.phase == .serving }) else { return effects }
        var placement = livePlacement(including: myName)
        let overBound = placement.isOverBound(myName)
        for sid in held.keys.sorted() {
            guard inFlight < settings.movesPerTick else { break }
            guard let h = held[sid], let lead = h.lead, lead.phase == .serving, lead.write == nil, lead.running.isEmpty,
                  lead.queue.isEmpty, lead.waiting.isEmpty, !h.deleted, h.owner == myName else { continue }
            let idle = now - (lastActivity[sid] ?? Instant(nanoseconds: 0))
            guard idle >= settings.moveAfterIdle else { continue }
            if let stay = stayUntil[sid] {
                guard now >= stay else { continue }
                stayUntil[sid] = nil
            }
            // A replica set that lost a member is refilled (`considerRefills`) before it moves.
            if h.replicas.contains(where: { $0 != myName && !present.contains($0) }) { continue }
            let leaving = overBound && idle >= settings.rebalanceAfterIdle
            guard let to = placement.target(for: sid, current: myName, leaving: leaving), to != myName, alive.contains(to) else { continue }
            placement.move(from: myName, to: to)
            inFlight += 1
            effects += beginHandoff(sid, to: to, replicas: placement.replicas(for: sid, owner: to, count: settings.replicas), now: now)
        }
        return effects
    }

    /// Refills the replica sets that lost a member, between two writes of their sessions, at
    /// most `max(1, movesPerTick)` a tick. Not a move (the owner stays), so neither idle time,
    /// `stayUntil` nor `--session-moves 0` holds it back: before, it sat in the move loop, and a
    /// session written every second or two (an agent) ran on two copies for ever (review).
    mutating func considerRefills(now: Instant) -> [ProtocolEffect<Sessions>] {
        var effects: [ProtocolEffect<Sessions>] = []
        var refills = 0
        var placement: SessionLivePlacement?
        for sid in held.keys.sorted() where refills < max(1, settings.movesPerTick) {
            guard let h = held[sid], let lead = h.lead, lead.phase == .serving, lead.write == nil, lead.running.isEmpty,
                  lead.queue.isEmpty, lead.waiting.isEmpty, !h.deleted, h.owner == myName,
                  h.replicas.contains(where: { $0 != myName && !present.contains($0) }) else { continue }
            if placement == nil { placement = livePlacement(including: myName) }
            let refill = refillReplicas(sid, placement: placement!, now: now)
            if !refill.isEmpty { refills += 1 }
            effects += refill
        }
        return effects
    }

    /// An idle session whose replica set lost members: the live ones stay, the next live
    /// members of its preference list replace the lost. Only when someone can be added, and only
    /// while a majority of the current set is alive: a reconfiguration needs a majority of the
    /// old configuration.
    ///
    /// A refill is a takeover of the owner's own session at the next epoch (`prepare` with the
    /// new set), not an install in the same epoch:
    /// - the old set's majority promises the new epoch, so the install is fenced like any other
    ///   owner's, and the new configuration has an epoch of its own (`SessionImage.configEpoch`)
    ///   by which a copy that missed it learns it from one that stored it;
    /// - the install is joint (`Lead.jointSets`) and the copies keep the joint set until the
    ///   owner records on the new set, so a lost answer or a crash leaves no copy that counts on
    ///   the new set alone (review6 F1).
    ///
    /// History: without the majority rule an owner cut off on a partition's minority side
    /// refilled its set with the members of its own side and went on recording, while the other
    /// side took the session over (`SessionPartitionTests`; `SessionHandoffTests.aRefill…`). With
    /// it, "kept" still counted suspect members, and an owner with one replica dead and the other
    /// only suspect did the same (`anOwnerCutOffWhileOneReplicaIsOnlySuspect…`).
    mutating func refillReplicas(_ sid: String, placement: SessionLivePlacement, now: Instant) -> [ProtocolEffect<Sessions>] {
        guard let h = held[sid], let lead = h.lead, lead.phase == .serving, lead.write == nil, h.replicas.first == myName else { return [] }
        let kept = h.replicas.filter { $0 == myName || present.contains($0) }
        guard kept.count * 2 > h.replicas.count else { return [] }
        // The old set's majority must promise and store the new configuration: with a member of
        // that majority only suspect, it would fail and cost the lead (review6 F4).
        guard h.replicas.filter({ $0 == myName || alive.contains($0) }).count * 2 > h.replicas.count else { return [] }
        var set = kept
        placement.ring.forEachPreferred(sid) { member in
            if !set.contains(member), alive.contains(member) { set.append(member) }
            return set.count < settings.replicas
        }
        guard set.count > kept.count else { return [] }
        counters.refills += 1
        return prepare(sid, now: now, refill: set)
    }

    // MARK: Old owner

    /// Step 1: stop writing and send the image to `to`.
    mutating func beginHandoff(_ sid: String, to: PeerName, replicas newSet: [PeerName], now: Instant) -> [ProtocolEffect<Sessions>] {
        // Above anything the target said it holds (a stale copy there with a higher promise).
        let floor = max(held[sid]?.epoch ?? 0, offerAbove[sid] ?? 0)
        guard var h = held[sid], var lead = h.lead, lead.phase == .serving, floor < UInt64.max - 1 else { return [] }
        let epoch = floor + 1
        lead.phase = .handingOff(Handoff(to: to, epoch: epoch, oldSet: h.replicas, newSet: newSet, step: .sending, began: now))
        h.lead = lead
        held[sid] = h
        counters.handoffsStarted += 1
        return [request(.handoff(h.image, epoch: epoch, replicas: newSet), to: to, session: sid, purpose: .handoff(epoch: epoch))]
    }

    /// A command for a session being handed off: reads are answered (nothing is written
    /// meanwhile); writes wait in the session's bounded queue and are answered when the
    /// handoff ends (served here again, or `notHere`: the routes forward them to the new owner).
    mutating func commandDuringHandoff(_ command: SessionCommand, id: CommandID, session sid: String) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead else { return [.reply(.unavailable("the session moves"), to: id)] }
        if case .show(_, let since) = command {
            return [.reply(.view(h.view(since: since, acknowledged: lead.acknowledged, running: lead.running)), to: id)]
        }
        guard lead.queue.count < SessionLimits.maxQueuedPerSession else {
            return [.reply(.unavailable("too many requests wait on this session while it moves"), to: id)]
        }
        lead.queue.append(.command(command, id))
        h.lead = lead
        held[sid] = h
        return []
    }

    /// The answers to this node's handoff requests (and to a new owner's releases).
    mutating func handoffAnswered(_ o: Outstanding, _ message: SessionMessage?, now: Instant) -> [ProtocolEffect<Sessions>] {
        let sid = o.session
        if case .release = o.purpose { return [] }
        guard var h = held[sid], var lead = h.lead, case .handingOff(var handoff) = lead.phase else { return [] }
        switch (o.purpose, handoff.step) {
        case (.handoff(let epoch), .sending) where epoch == handoff.epoch:
            guard case .stored(let s, let seq)? = message, s == sid, seq == h.lastSeq else {
                // The next owner did not take it: nothing was promised to it; serve on. If it
                // holds a higher epoch, the next offer goes above it.
                if case .stale(let s, let epoch)? = message, s == sid, epoch >= handoff.epoch, let h = held[sid] {
                    offerAbove[sid] = min(epoch, raiseLimit(of: h))
                }
                return abortHandoff(sid, now: now)
            }
            offerAbove[sid] = nil
            // Step 2: promise the epoch to the next owner here, and ask the old set to.
            handoff.step = .fencing
            handoff.promised = [myName]
            h.epoch = handoff.epoch
            h.owner = handoff.to
            var effects: [ProtocolEffect<Sessions>] = [
                .perform(.persist(.promise(session: sid, epoch: handoff.epoch, owner: handoff.to), then: .nothing)),
            ]
            for peer in handoff.oldSet where peer != myName {
                if peer == handoff.to || alive.contains(peer) {
                    effects.append(request(.transfer(session: sid, epoch: handoff.epoch, to: handoff.to), to: peer, session: sid,
                                           purpose: .transfer(epoch: handoff.epoch)))
                } else {
                    handoff.failed.insert(peer)
                }
            }
            lead.phase = .handingOff(handoff)
            h.lead = lead
            held[sid] = h
            return effects + advanceHandoff(sid, now: now)
        case (.transfer(let epoch), .fencing) where epoch == handoff.epoch:
            if case .promised(let s, _)? = message, s == sid { handoff.promised.insert(o.peer) } else { handoff.failed.insert(o.peer) }
            lead.phase = .handingOff(handoff)
            h.lead = lead
            held[sid] = h
            return advanceHandoff(sid, now: now)
        case (.commit(let epoch), .committing) where epoch == handoff.epoch:
            let served = { if case .stored(let s, _)? = message, s == sid { return true } else { return false } }()
            return finishHandoff(sid, servedThere: served)
        default:
            return []
        }
    }

    /// Step 3 once a majority of the old set promised the next owner; gives up when it cannot.
    mutating func advanceHandoff(_ sid: String, now: Instant) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead, case .handingOff(var handoff) = lead.phase, handoff.step == .fencing else { return [] }
        let majority = handoff.oldSet.count / 2 + 1
        let promised = handoff.oldSet.filter { handoff.promised.contains($0) }.count
        if promised >= majority {
            handoff.step = .committing
            lead.phase = .handingOff(handoff)
            h.lead = lead
            held[sid] = h
            // The fence holds: this node answers for the next owner as its members do
            // (`transferPromise`), so that if the commit is lost or refused the next owner's own
            // takeover can count this node. Without it, with a member of the old set dead, the
            // next owner never formed a majority and nobody led the session (review9 F1). Not on
            // a failed fence: this node retakes the session then (`retakeAfterAbortedHandoff`,
            // review4 F1), and its retake and the next owner's takeover must meet in a member
            // that answers for the next owner.
            let fence = SessionFencePromise(session: sid, epoch: handoff.epoch, owner: handoff.to)
            transferPromise[sid] = Takeover.Promise(epoch: fence.epoch, owner: fence.owner)
            return [.perform(.persist(.fencePromise(fence), then: .nothing)),
                    request(.commit(session: sid, epoch: handoff.epoch, replicas: handoff.newSet), to: handoff.to, session: sid,
                            purpose: .commit(epoch: handoff.epoch))]
        }
        let open = handoff.oldSet.filter { !handoff.promised.contains($0) && !handoff.failed.contains($0) }.count
        guard promised + open < majority else { return [] }
        // Some of the old set may have promised the next owner: this node cannot serve its
        // old epoch again. It steps down; the next owner takes the session over when its
        // offer times out (or the set's next live member does, if it is gone).
        counters.handoffsAborted += 1
        let effects = stepDown(sid, reason: "the session's handoff could not be fenced; it resumes shortly")
        if var after = held[sid] {
            after.quietUntil = now + settings.retryInterval * 5
            held[sid] = after
        }
        // This node promised the epoch to the next owner, so it looks led by a live member; and
        // the replicas that did not promise still see this node as the owner, so they refuse the
        // next owner's takeover (`ownedBy`). Nobody would lead it (starling-sim session-partition,
        // 20 nodes, seed 10). After the quiet time this node prepares a higher epoch itself: the
        // old set promises it (it is their owner), or names the next owner if it did take over.
        retakeAfterAbortedHandoff.insert(sid)
        return effects
    }

    /// Nothing was promised to the next owner: serve again, and answer what waited.
    mutating func abortHandoff(_ sid: String, now: Instant) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], var lead = h.lead else { return [] }
        counters.handoffsAborted += 1
        lead.phase = .serving
        h.lead = lead
        held[sid] = h
        // Not tried again for a while (`rebalanceAfterIdle`): a refusing target is not asked
        // every tick.
        stayUntil[sid] = now + settings.rebalanceAfterIdle
        return drainQueue(sid)
    }

    /// The next owner answered the commit (it serves: `servedThere`) or did not (it takes the
    /// session over when its offer times out). Either way this node leads no more; waiting
    /// writes hear `moved` (the routes forward them to the owner recorded here, the new one).
    mutating func finishHandoff(_ sid: String, servedThere: Bool) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], let lead = h.lead, case .handingOff(let handoff) = lead.phase else { return [] }
        h.lead = nil
        lastActivity[sid] = nil
        stayUntil[sid] = nil
        var effects: [ProtocolEffect<Sessions>] = []
        for item in lead.queue {
            switch item {
            case .command(_, let cmd), .effectResult(_, _, let cmd?): effects.append(.reply(servedThere ? .moved(to: handoff.to) : .unavailable("the session moves; try again"), to: cmd))
            case .effectResult(_, _, nil): break
            }
        }
        if servedThere {
            counters.handoffsDone += 1
            if !handoff.newSet.contains(myName) {
                // The new set stored the session: this copy is no longer needed.
                held[sid] = nil
                forgetMoves(of: sid)
                counters.released += 1
                let release = SessionRelease(session: sid, epoch: handoff.epoch, owner: handoff.to)
                remember(release)
                return effects + [.perform(.persist(.forget(release), then: .nothing))]
            }
            // Still a replica: the new owner's install gave this node the new set already.
        } else {
            counters.handoffsAborted += 1
        }
        held[sid] = h
        return effects
    }

    /// Drops what this node remembers about moving `sid` (it holds the session no more).
    mutating func forgetMoves(of sid: String) {
        incoming[sid] = nil
        transferPromise[sid] = nil
        ownerDenied[sid] = nil
        retakeAfterAbortedHandoff.remove(sid)
        lastActivity[sid] = nil
        stayUntil[sid] = nil
        offerAbove[sid] = nil
    }

    // MARK: Next owner and replicas

    /// Step 1 at the next owner: verify and store the offered image.
    mutating func acceptHandoff(_ image: SessionImage, epoch: UInt64, replicas: [PeerName], from peer: PeerName, token: RequestToken,
                                now: Instant) -> [ProtocolEffect<Sessions>] {
        let sid = image.id
        guard image.owner == peer, replicas.first == myName, image.epoch < epoch, epoch - image.epoch <= SessionLimits.maxEpochStep else {
            counters.forged += 1
            return [.respond(.invalid(reason: "a handoff comes from the session's owner, to the first of its new replica set, for a later epoch"), to: token)]
        }
        if let h = held[sid] {
            if h.lead != nil { return [.respond(.invalid(reason: "this node leads the session"), to: token)] }
            // A promise made here to another node, at the image's epoch or later, stands; one
            // made to the offering owner itself does not stand in its way. The offered epoch
            // must be above every promise held here.
            if (h.owner != peer && h.epoch >= image.epoch) || epoch <= h.epoch {
                counters.stale += 1
                return [.respond(.stale(session: sid, epoch: h.epoch), to: token)]
            }
            if farAhead(epoch, of: h) {
                counters.forged += 1
                return [.respond(.invalid(reason: "epoch \(epoch) is too far above the \(h.epoch) held here"), to: token)]
            }
        } else if held.count >= SessionLimits.maxHeldSessions || ownedHere >= SessionLimits.maxOwnedSessions {
            return [.respond(.invalid(reason: "this node holds as many sessions as it may"), to: token)]
        } else if let r = releasedLater(sid, epoch: image.epoch, owner: peer) {
            counters.stale += 1
            return [.respond(.stale(session: sid, epoch: r.epoch), to: token)]
        }
        if let problem = verify(image) {
            counters.forged += 1
            return [.respond(.invalid(reason: problem), to: token)]
        }
        dropRelease(sid)
        var h = held[sid] ?? Held(id: sid, epoch: image.epoch, owner: peer, replicas: image.replicas, records: [], hashes: [])
        h.epoch = max(h.epoch, image.epoch)
        h.owner = peer
        h.takeConfig(of: image)
        h.replace(with: image.records, crypto: crypto)
        held[sid] = h
        incoming[sid] = Incoming(from: peer, fromEpoch: h.epoch, epoch: epoch, replicas: replicas,
                                 deadline: now + settings.requestTimeout * 3)
        return [.perform(.persist(.image(h.image), then: .respond(token, .stored(session: sid, seq: h.lastSeq))))]
    }

    /// Step 2 at a replica: promise `epoch` to `to`, if the owner of the epoch promised here asks.
    mutating func transfer(_ sid: String, epoch: UInt64, to: PeerName, from peer: PeerName, token: RequestToken) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid] else { return [.respond(.invalid(reason: "the session is not held here"), to: token)] }
        guard peer == h.owner, epoch > h.epoch, h.lead == nil else {
            counters.stale += 1
            return [.respond(.stale(session: sid, epoch: h.epoch), to: token)]
        }
        if farAhead(epoch, of: h) {
            counters.forged += 1
            return [.respond(.invalid(reason: "epoch \(epoch) is too far above the \(h.epoch) held here"), to: token)]
        }
        h.epoch = epoch
        h.owner = to
        held[sid] = h
        transferPromise[sid] = Takeover.Promise(epoch: epoch, owner: to)
        return [.perform(.persist(.fencePromise(SessionFencePromise(session: sid, epoch: epoch, owner: to)),
                                  then: .respond(token, .promised(session: sid, image: nil))))]
    }

    /// Step 3 at the next owner: take the epoch a majority promised, install the image on the
    /// new set, and answer once it serves.
    mutating func commitHandoff(_ sid: String, epoch: UInt64, replicas: [PeerName], from peer: PeerName,
                                token: RequestToken, now: Instant) -> [ProtocolEffect<Sessions>] {
        guard var h = held[sid], replicas.first == myName else {
            return [.respond(.invalid(reason: "no handoff of the session was stored here"), to: token)]
        }
        // Already leading it (this node took it over itself meanwhile): "stored" only while it
        // serves the very set the commit names, since the old owner drops its copy if that set
        // leaves it out. "Stored" while this node only prepared let the old owner drop its copy
        // for a takeover that could still fail (review7 F1), and for another set it dropped a
        // copy the set served needed (review8). Otherwise the old owner gives the handoff up,
        // keeps its copy and defers to this node (it promised it at the fence).
        if h.lead != nil, h.owner == myName {
            if h.lead?.phase == .serving, Set(h.replicas) == Set(replicas) { return [.respond(.stored(session: sid, seq: h.lastSeq), to: token)] }
            counters.stale += 1
            return [.respond(.stale(session: sid, epoch: h.epoch), to: token)]
        }
        // Not when this node installed a configuration of that epoch itself (its own takeover,
        // through the fence's promises, reached its install and stepped down): taking the commit
        // would replace that joint set, whose old set's majority may not know it, with the
        // handoff's at the same epoch (review7 F1). The old owner then gives the handoff up and
        // answers for this node's takeover (`transferPromise`), which completes the change.
        let offered = ((h.owner == peer && h.epoch < epoch && !farAhead(epoch, of: h)) || (h.owner == myName && h.epoch == epoch))
            && h.configEpoch < epoch
        guard offered, h.lead == nil, !h.records.isEmpty else {
            counters.stale += 1
            return [.respond(.stale(session: sid, epoch: h.epoch), to: token)]
        }
        let oldSet = h.replicas
        incoming[sid] = nil
        stayUntil[sid] = now + settings.rebalanceAfterIdle
        h.epoch = epoch
        h.owner = myName
        h.replicas = replicas
        h.configEpoch = epoch
        let changed = Set(oldSet) != Set(replicas)
        h.jointOld = changed ? oldSet : []
        var lead = Lead(phase: .installing, acknowledged: 0)
        lead.write = Write(seq: h.lastSeq, then: .resumed)
        lead.answerWhenServing = token
        lead.releaseAfterServing = oldSet.filter { !replicas.contains($0) }
        lead.jointSets = changed ? [oldSet] : []
        h.lead = lead
        held[sid] = h
        let image = h.image
        var effects: [ProtocolEffect<Sessions>] = [.perform(.persist(.image(image), then: .own(session: sid, seq: h.lastSeq)))]
        // To the new set and the old one: the install counts when a majority of each stored it.
        var seen = Set<PeerName>()
        for member in replicas + oldSet where member != myName && seen.insert(member).inserted {
            effects.append(request(.install(image), to: member, session: sid, purpose: .write(epoch: epoch)))
        }
        return effects + failUnreachable(sid)
    }

    /// A left-out member drops its copy once the new owner's set stored the session. Only the
    /// owner this node promised the epoch to may say so (a member that never heard of the new
    /// epoch keeps its copy: a peer cannot wipe copies by naming a higher epoch).
    mutating func release(_ sid: String, epoch: UInt64, from peer: PeerName, token: RequestToken) -> [ProtocolEffect<Sessions>] {
        guard let h = held[sid] else { return [.respond(.stored(session: sid, seq: 0), to: token)] }
        guard h.lead == nil, epoch == h.epoch, h.owner == peer else {
            return [.respond(.stale(session: sid, epoch: h.epoch), to: token)]
        }
        held[sid] = nil
        forgetMoves(of: sid)
        counters.released += 1
        let release = SessionRelease(session: sid, epoch: epoch, owner: peer)
        remember(release)
        return [.perform(.persist(.forget(release), then: .respond(token, .stored(session: sid, seq: 0))))]
    }
}

extension Sessions {
    /// How this node holds `sid`, for reports and debugging: epoch, owner, replicas, and the
    /// phase of its lead ("-" when not leading).
    public func describe(_ sid: String, now: Instant? = nil) -> String? {
        guard let h = held[sid] else { return nil }
        let phase: String
        switch h.lead?.phase {
        case nil: phase = "-"
        case .preparing?: phase = "preparing"
        case .installing?: phase = "installing"
        case .serving?: phase = "serving"
        case .handingOff(let handoff)?:
            phase = "handingOff(\(handoff.step) to \(handoff.to)\(now.map { ", for \($0 - handoff.began)" } ?? ""))"
        }
        let asking = outstanding.values.filter { $0.session == sid }.count
        return "e\(h.epoch) owner \(h.owner) set \(h.replicas) seq \(h.lastSeq) \(phase)\(incoming[sid] != nil ? " incoming" : "")"
            + (asking > 0 ? " asking \(asking)" : "")
            + (ownerSaidItDoesNotLead(sid, h) ? " owner-denied" : "")
    }
}
