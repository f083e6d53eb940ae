/// The entry side: a client's submit or cancel arrives at any node, which routes it to the
/// swarm's owner and answers the client once the owner has done it.
extension Swarm {
    /// How many hops a cancel or child notice follows redirects before giving up.
    static let maxRedirects = 8

    // MARK: Submit

    mutating func submit(_ draft: SwarmDraft, command: CommandID, now: Instant, into out: inout Effects) {
        if let reason = Self.refusal(for: draft) ?? capacityRefusal(for: draft) {
            out.append(.reply(.rejected(reason), to: command))
            return
        }
        guard pendingCommands < Bounds.maxPendingCommands else {
            out.append(.reply(.refused("\(myName) is routing \(pendingCommands) requests, its limit; retry"), to: command))
            return
        }
        let id = newSwarmID()
        let candidates = currentRing().preferenceList(id, count: settings.replicationFactor + 2)
        guard !candidates.isEmpty else {
            out.append(.reply(.refused("no member takes work"), to: command))
            return
        }
        pendingCommands += 1
        let definition = SwarmDefinition(id: id, draft: draft, replicas: [])
        tryCreate(SubmitRouting(command: command, definition: definition, candidates: candidates, next: 0),
                  now: now, into: &out)
    }

    /// Why a draft cannot be taken, whatever the mesh: the protocol's bounds. Public so that an
    /// HTTP layer refuses such a draft as the client's error before it reaches the mesh.
    public static func refusal(for draft: SwarmDraft) -> String? {
        if draft.tasks.isEmpty { return "a swarm needs at least one task" }
        if draft.tasks.count > SwarmLimits.maxTasks { return "\(draft.tasks.count) tasks, over the limit of \(SwarmLimits.maxTasks)" }
        if !(1...10).contains(draft.maxAttempts) { return "maxAttempts \(draft.maxAttempts) is not within 1...10" }
        if draft.options.count > SwarmLimits.maxOptionsBytes { return "swarm options over \(SwarmLimits.maxOptionsBytes) bytes" }
        if let parent = draft.parent, !isSwarmID(parent.swarm) { return "parent \(parent.swarm) is not a swarm id" }
        var bytes = draft.options.count + 256
        for t in draft.tasks {
            if t.id.utf8.count > SwarmLimits.maxTaskIDBytes || !WireLimits.isPrintable(t.id) {
                return "task id \(t.id.prefix(40)) is longer than \(SwarmLimits.maxTaskIDBytes) bytes or unprintable"
            }
            if t.payload.count > SwarmLimits.maxPayloadBytes { return "task \(t.id) is over \(SwarmLimits.maxPayloadBytes) bytes" }
            bytes += t.payload.count + t.id.utf8.count + 16
        }
        // The definition travels whole in one message, with room for a chunk of records.
        let limit = SwarmLimits.maxMessageBytes - SwarmLimits.pageBytes - SwarmLimits.maxResultBytes
        if bytes > limit { return "the swarm is \(bytes) bytes encoded, over \(limit)" }
        return nil
    }

    /// A swarm that no member could ever run is refused now rather than left pending forever.
    func capacityRefusal(for draft: SwarmDraft) -> String? {
        var workers: [PeerName] = peers.values.filter { $0.status.isActive && $0.metadata.slots > 0 }.map(\.name)
        if settings.slots > 0 && !workers.contains(myName) { workers.append(myName) }
        if settings.slots == 0 { workers.removeAll { $0 == myName } }
        guard !workers.isEmpty else { return "no member offers task slots" }
        // A member that advertises no memory at all is not limited here (its host enforces).
        let unlimited = workers.contains { $0 != myName && totalMemory(of: $0) == 0 && (peers[$0]?.metadata.freeMemoryMB ?? 0) == 0 }
        guard !unlimited else { return nil }
        let largest = workers.map { totalMemory(of: $0) }.max() ?? 0
        if let t = draft.tasks.first(where: { $0.needs.memoryMB > largest }) {
            return "task \(t.id) needs \(t.needs.memoryMB) MiB; the largest member offers \(largest) MiB"
        }
        return nil
    }

    mutating func tryCreate(_ s: SubmitRouting, now: Instant, into out: inout Effects) {
        var s = s
        while s.next < s.candidates.count && !isUp(s.candidates[s.next]) { s.next += 1 }
        guard s.next < s.candidates.count else {
            finishCommand(.refused("no owner reachable for the swarm (tried \(s.candidates.joined(separator: ", ")))"),
                          to: s.command, into: &out)
            return
        }
        let replicas = Array(s.candidates[s.next...].prefix(settings.replicationFactor))
        s.definition.replicas = replicas
        sendRequest(.create(s.definition), to: replicas[0], context: .submit(s), now: now, into: &out)
    }

    mutating func entrySubmitAnswered(_ s: SubmitRouting, _ message: SwarmMessage?, now: Instant, into out: inout Effects) {
        switch message {
        case .created(let id, let owner) where id == s.definition.id:
            if let parent = s.definition.draft.parent {
                let notice = ChildNotice(command: s.command, parent: parent,
                                         link: ChildLink(child: id, replicas: s.definition.replicas), owner: owner,
                                         options: s.definition.draft.options, tasks: UInt32(s.definition.draft.tasks.count),
                                         candidates: parentCandidates(parent), next: 0, hops: 0)
                routeChildNotice(notice, now: now, into: &out)
            } else {
                finishCommand(.submitted(id, owner: owner), to: s.command, into: &out)
            }
        case .refused(let reason):
            finishCommand(.refused(reason), to: s.command, into: &out)
        default:
            var next = s
            next.next += 1
            tryCreate(next, now: now, into: &out)
        }
    }

    mutating func finishCommand(_ reply: SwarmReply, to command: CommandID, into out: inout Effects) {
        pendingCommands = max(0, pendingCommands - 1)
        out.append(.reply(reply, to: command))
    }

    // MARK: Child swarms

    /// Where the parent's owner may be: the replica set this node knows for it (it usually
    /// runs the spawning task), else the parent id's successors on this node's ring.
    mutating func parentCandidates(_ parent: TaskRef) -> [PeerName] {
        if let r = worker.running[TaskKey(swarm: parent.swarm, index: parent.task)] { return r.replicas }
        if let e = swarms[parent.swarm] { return e.definition.replicas }
        return currentRing().preferenceList(parent.swarm, count: settings.replicationFactor + 2)
    }

    mutating func routeChildNotice(_ c: ChildNotice, now: Instant, into out: inout Effects) {
        var c = c
        if c.redirect == nil { while c.next < c.candidates.count && !isUp(c.candidates[c.next]) { c.next += 1 } }
        guard c.hops < Self.maxRedirects, let target = c.redirect ?? (c.next < c.candidates.count ? c.candidates[c.next] : nil) else {
            // The parent's owner could not be told, so the child's budget and depth were not
            // checked and a cancel of the parent would not reach it: fail closed.
            cancelChild(c.link, now: now, into: &out)
            finishCommand(.refused("the owner of parent swarm \(c.parent.swarm) could not be reached to admit the child"),
                          to: c.command, into: &out)
            return
        }
        sendRequest(.childCreated(parent: c.parent, child: c.link.child, replicas: c.link.replicas, options: c.options, tasks: c.tasks),
                    to: target, context: .childNotice(c), now: now, into: &out)
    }

    mutating func entryChildAnswered(_ c: ChildNotice, _ message: SwarmMessage?, now: Instant, into out: inout Effects) {
        var c = c
        c.hops += 1
        switch message {
        case .childAnswer(_, parentCancelled: false):
            finishCommand(.submitted(c.link.child, owner: c.owner), to: c.command, into: &out)
        case .childAnswer(_, parentCancelled: true):
            cancelChild(c.link, now: now, into: &out)
            finishCommand(.refused("parent swarm \(c.parent.swarm) is cancelled"), to: c.command, into: &out)
        case .childRefused(_, let reason):
            cancelChild(c.link, now: now, into: &out)
            finishCommand(.forbidden(reason), to: c.command, into: &out)
        case .cancelAnswer(_, .redirect(let owner)):
            c.redirect = owner
            routeChildNotice(c, now: now, into: &out)
        default:
            c.redirect = nil
            c.next += 1
            routeChildNotice(c, now: now, into: &out)
        }
    }

    // MARK: Cancel

    mutating func cancelCommand(_ id: SwarmID, command: CommandID, now: Instant, into out: inout Effects) {
        guard isSwarmID(id) else {
            out.append(.reply(.notFound(id), to: command))
            return
        }
        guard pendingCommands < Bounds.maxPendingCommands else {
            out.append(.reply(.refused("\(myName) is routing \(pendingCommands) requests, its limit; retry"), to: command))
            return
        }
        var candidates: [PeerName]
        if let e = swarms[id] {
            candidates = e.definition.replicas
        } else {
            candidates = currentRing().preferenceList(id, count: settings.replicationFactor + 2)
        }
        if !candidates.contains(myName) && swarms[id] != nil { candidates.append(myName) }
        pendingCommands += 1
        routeCancel(CancelRouting(command: command, id: id, candidates: candidates, next: 0, hops: 0), now: now, into: &out)
    }

    mutating func routeCancel(_ c: CancelRouting, now: Instant, into out: inout Effects) {
        var c = c
        if c.redirect == nil { while c.next < c.candidates.count && !isUp(c.candidates[c.next]) { c.next += 1 } }
        guard c.hops < Self.maxRedirects, let target = c.redirect ?? (c.next < c.candidates.count ? c.candidates[c.next] : nil) else {
            finishCommand(c.unreachable ? .refused("the swarm's owner could not be reached") : .notFound(c.id),
                          to: c.command, into: &out)
            return
        }
        sendRequest(.cancel(c.id), to: target, context: .cancel(c), now: now, into: &out)
    }

    mutating func entryCancelAnswered(_ c: CancelRouting, _ message: SwarmMessage?, now: Instant, into out: inout Effects) {
        var c = c
        c.hops += 1
        switch message {
        case .cancelAnswer(_, .cancelled):
            finishCommand(.cancelled(c.id), to: c.command, into: &out)
            return
        case .cancelAnswer(_, .redirect(let owner)):
            c.redirect = owner
        case .cancelAnswer(_, .notFound):
            c.redirect = nil
            c.next += 1
        default:
            c.unreachable = true
            c.redirect = nil
            c.next += 1
        }
        routeCancel(c, now: now, into: &out)
    }
}

struct SubmitRouting: Sendable {
    var command: CommandID
    var definition: SwarmDefinition
    /// The id's successors on the ring; the owner is tried first, then the next ones.
    var candidates: [PeerName]
    var next: Int
}

struct CancelRouting: Sendable {
    var command: CommandID
    var id: SwarmID
    var candidates: [PeerName]
    var next: Int
    var hops: Int
    var redirect: PeerName? = nil
    var unreachable = false
}

struct ChildNotice: Sendable {
    var command: CommandID
    var parent: TaskRef
    var link: ChildLink
    var owner: PeerName
    /// The child's options and task count, for the parent owner's check.
    var options: [UInt8]
    var tasks: UInt32
    var candidates: [PeerName]
    var next: Int
    var hops: Int
    var redirect: PeerName? = nil
}
