import StarlingCore

/// The simulated world of the `Swarm` protocol: runs as virtual durations, a per-node store,
/// capacity advertised through membership metadata, the scenario's submissions, and the
/// invariants (each result recorded once, within slots and memory, no task on two nodes at
/// once without a partition, every swarm done by the deadline, attempts within maxAttempts).
///
/// Crashes: a crashed node's runs stop and never complete. Its store survives, and a restarted
/// node's protocol is rebuilt from it (`Swarm.restore`), as the runtime's SQLite store would be.
final class SwarmEnvironment: ProtocolEnvironment {
    typealias P = Swarm

    struct TaskKey: Hashable, Comparable {
        var swarm: SwarmID
        var index: UInt32
        static func < (a: TaskKey, b: TaskKey) -> Bool { (a.swarm, a.index) < (b.swarm, b.index) }
    }

    struct RunKey: Hashable {
        var task: TaskKey
        var attempt: UInt16
    }

    struct Running {
        var tag: UInt64
        var started: Instant
        var memoryMB: UInt32
    }

    struct StoredSwarm {
        var definition: SwarmDefinition
        var epoch: UInt32
        var state: SwarmState
        var tasks: [TaskRecord]
        var children: [ChildLink] = []
        /// The events stream's mark (`StoreChange.visible`): finished tasks numbered up to it
        /// are shown.
        var visible: UInt32 = 0
        /// Which task holds each finish number in this store.
        var bySeq: [UInt32: UInt32] = [:]
        /// The reigns that numbered the finishes (`StoreChange.lineage`).
        var lineage = FinishLineage()
    }

    /// A client that reads one node's events stream of a swarm from its start, as the runtime's
    /// stream serves it (cursor rebased onto the stored lineage, then every visible finish
    /// numbered above it, in order), and could resume on any other node with its cursor.
    struct Follower {
        var cursor = EventCursor.start
        var seen: Set<UInt32> = []
    }

    let options: SwarmOptions
    let submissions: [SwarmSubmission]
    let period: Duration
    /// Every swarm must be done by this period.
    let deadlinePeriod: Int
    let idealMakespan: Duration

    private var running: [[RunKey: Running]]
    private var liveTags: Set<UInt64> = []
    private var nextTag: UInt64 = 0
    /// Nodes running each task right now (more than one: a double run).
    private var runningOn: [TaskKey: [Int]] = [:]
    private(set) var stores: [[SwarmID: StoredSwarm]]
    /// Distinct final results recorded per task, over every node's store writes.
    private var recorded: [TaskKey: [[UInt8]]] = [:]
    private var startedTasks: Set<TaskKey> = []
    private var submittedIDs: [Int: (id: SwarmID, owner: PeerName)] = [:]
    private var commandSubmission: [UInt64: Int] = [:]
    private var doneAt: [SwarmID: Instant] = [:]
    private var refusals: [String] = []
    private var partitionSeen = false
    private(set) var violations: [String] = []

    private var runs = 0
    private var runTwice = 0
    private var runOnBothSides = 0
    private var recordedTwice = 0
    private var recordedOnBothSides = 0
    private var maxRunning = 0
    private var maxMemory: UInt32 = 0
    private var attemptsOverMax = 0
    private var busy: Duration = .zero
    private var orphanWrites = 0
    /// Per swarm, the task each event id (reign and number) named when a node's stream first
    /// showed it, and the number each task was first shown under in each reign (over every node
    /// and all time).
    private var shownTask: [SwarmID: [EventCursor: UInt32]] = [:]
    private var shownSeq: [TaskKey: [Reign?: UInt32]] = [:]
    /// Tasks involved in an event-id conflict (counted once each), without and with a partition.
    private var eventIdConflicts: Set<TaskKey> = []
    private var eventIdConflictsOnBothSides: Set<TaskKey> = []
    /// Per node, a client following each swarm's stream there since the node first stored it.
    private var followers: [[SwarmID: Follower]] = []
    /// Finished tasks a client would never be shown: on its own node's stream, or resuming with
    /// its last id on another holder of the swarm (counted at the end of the run).
    private var eventsMissed = 0
    /// Tasks a follower's stream showed a second time (after a rebase onto another side's
    /// numbering: its side's numbers above the fork point are replayed).
    private var eventsShownAgain = 0
    /// The swarm whose owner crashes at its next recorded finish (`crashSwarmOwnerAtAFinish`).
    private var armedOwnerCrash: Int?

    /// Test hook (negative controls only): called after each store write is applied; returns
    /// extra writes to apply as if the protocol had asked for them.
    var afterStore: ((Int, StoreChange) -> [StoreChange])?

    init(options: SwarmOptions, nodes: Int, bounds: Bounds, lastFaultPeriod: Double, period: Duration, rng: inout DeterministicRNG) {
        self.options = options
        self.period = period
        submissions = SwarmWorkload.submissions(nodes: nodes, options: options, rng: &rng)
        var work: Duration = .zero
        for s in submissions { for t in s.draft.tasks { work += SwarmWorkload.decode(t.payload).duration } }
        let slots = max(1, Int(options.slots) * nodes)
        idealMakespan = work / slots
        let p = Double(period.nanoseconds)
        let ideal = Double(idealMakespan.nanoseconds) / p
        let longest = Double(options.taskMilliseconds.upperBound) / 1_000 / (p / 1e9)
        // After the last fault (or the submission): detection of any death, three times the ideal
        // makespan (the work redone after faults and the partition's double work included), every
        // attempt of the longest task in a row, and slack for placement and replication rounds.
        let start = max(lastFaultPeriod, options.submitPeriod)
        deadlinePeriod = Int((start + Double(bounds.convergencePeriods) + 3 * ideal + Double(options.maxAttempts) * longest + 20).rounded(.up))
        running = Array(repeating: [:], count: nodes)
        stores = Array(repeating: [:], count: nodes)
        followers = Array(repeating: [:], count: nodes)
    }

    func violation(_ text: String) {
        if violations.count < 20 { violations.append(text) }
    }

    // MARK: ProtocolEnvironment

    func makeProtocol(node: Int, restarted: Bool, sim: Simulator) -> (Swarm, [ProtocolEffect<Swarm>]) {
        var swarm = Swarm(settings: SwarmSettings(slots: options.slots, memoryMB: options.memoryMB),
                          myName: Simulator.name(node), seed: sim.rng.next(), now: sim.now)
        guard restarted else { return (swarm, []) }
        let rows = stores[node].keys.sorted().compactMap { id -> (SwarmDefinition, epoch: UInt32, state: SwarmState, tasks: [TaskRecord])? in
            guard let s = stores[node][id] else { return nil }
            return (s.definition, epoch: s.epoch, state: s.state, tasks: s.tasks)
        }
        let links = stores[node].compactMapValues { $0.children.isEmpty ? nil : $0.children }
        let lineages = stores[node].compactMapValues { $0.lineage.marks.isEmpty ? nil : $0.lineage }
        let effects = swarm.restore(rows, children: links, lineages: lineages, now: sim.now)
        return (swarm, effects)
    }

    func started(host: ProtocolHost<SwarmEnvironment>, sim: Simulator) {
        for (k, s) in submissions.enumerated() {
            let id = host.scheduleCommand(.submit(s.draft), node: s.via, at: .zero + period.scaled(by: s.period), sim)
            commandSubmission[id.rawValue] = k
        }
    }

    func perform(_ action: SwarmAction, node: Int, host: ProtocolHost<SwarmEnvironment>, sim: Simulator) {
        switch action {
        case .run(let r):
            start(r, node: node, host: host, sim: sim)
        case .kill(let swarm, let index, let attempt):
            let key = RunKey(task: TaskKey(swarm: swarm, index: index), attempt: attempt)
            sim.mixTrace(9, node, Int(index), Int(attempt))
            guard running[node][key] != nil else { return }
            end(key, node: node, sim: sim)
            nextTag += 1
            liveTags.insert(nextTag)
            let result = Array("killed n\(node) attempt \(attempt)".utf8)
            host.schedulePerformed(.finished(swarm: swarm, index: index, attempt: attempt, outcome: .failed, result: result),
                                   node: node, tag: nextTag, at: sim.now, sim)
        case .store(let change):
            store(change, node: node, sim: sim)
            if let hook = afterStore {
                for extra in hook(node, change) { store(extra, node: node, sim: sim) }
            }
        case .advertise(let freeSlots, let freeMemoryMB):
            sim.mixTrace(11, node, Int(freeSlots), Int(freeMemoryMB))
            sim.updateMetadata(node) {
                $0.free = min(freeSlots, $0.slots)
                $0.freeMemoryMB = min(freeMemoryMB, $0.memoryMB)
            }
        }
    }

    func outcomeIsCurrent(tag: UInt64, node: Int, sim: Simulator) -> Bool {
        guard liveTags.remove(tag) != nil else { return false }
        // A completion (not a kill's outcome, whose run already ended): the run ends now.
        if let key = running[node].first(where: { $0.value.tag == tag })?.key { end(key, node: node, sim: sim) }
        return true
    }

    func replied(_ reply: SwarmReply, to command: CommandID, node: Int, sim: Simulator) {
        guard let k = commandSubmission.removeValue(forKey: command.rawValue) else { return }
        sim.mixTrace(13, node, k)
        switch reply {
        case .submitted(let id, let owner):
            submittedIDs[k] = (id, owner)
        case .refused(let reason), .rejected(let reason), .forbidden(let reason):
            refusals.append("swarm \(k) via n\(node): \(reason)")
            violation("swarm \(k) submitted through n\(node) was refused: \(reason)")
        case .cancelled, .notFound:
            violation("swarm \(k) submitted through n\(node) got an unexpected reply \(reply)")
        }
    }

    func crashed(node: Int, sim: Simulator) {
        for key in running[node].keys.sorted(by: { ($0.task, $0.attempt) < ($1.task, $1.attempt) }) { end(key, node: node, sim: sim) }
    }

    func faultApplied(_ fault: Fault, sim: Simulator) {
        if case .partition = fault { partitionSeen = true }
    }

    var finished: Bool { submittedIDs.count + refusals.count == submissions.count && doneAt.count == submittedIDs.count }

    /// The node that owns the k-th swarm now: its first live replica, in replica order.
    /// Arms `Fault.crashSwarmOwnerAtAFinish`: the owner of the k-th swarm crashes right after
    /// its next write of a finished task (at the same instant, so what it sends after the
    /// write is lost with it).
    func armOwnerCrash(_ k: Int) { armedOwnerCrash = k }

    func currentOwner(of k: Int, _ sim: Simulator) -> Int? {
        guard let (id, owner) = submittedIDs[k] else { return nil }
        let replicas = stores.lazy.compactMap { $0[id]?.definition.replicas }.first ?? [owner]
        return replicas.lazy.compactMap { sim.index[$0] }.first { sim.nodes[$0].up }
    }

    // MARK: Runs

    private func start(_ r: TaskRun, node: Int, host: ProtocolHost<SwarmEnvironment>, sim: Simulator) {
        let task = TaskKey(swarm: r.swarm, index: r.index)
        let key = RunKey(task: task, attempt: r.attempt)
        runs += 1
        sim.mixTrace(8, node, Int(r.index), Int(r.attempt))
        startedTasks.insert(task)
        if Int(r.attempt) > Int(r.maxAttempts) {
            attemptsOverMax += 1
            violation("\(r.swarm)/\(r.index) attempt \(r.attempt) started at n\(node), over maxAttempts \(r.maxAttempts)")
        }
        if running[node][key] != nil {
            violation("\(r.swarm)/\(r.index) attempt \(r.attempt) started twice at n\(node)")
            return
        }
        let others = runningOn[task] ?? []
        if !others.isEmpty {
            if partitionSeen {
                runOnBothSides += 1
            } else {
                runTwice += 1
                let elsewhere = others.map { o in "n\(o) attempt \(running[o].keys.first { $0.task == task }?.attempt ?? 0)" }
                violation("\(r.swarm)/\(r.index) started at n\(node) (attempt \(r.attempt)) while running at \(elsewhere) at \(sim.now)")
            }
        }
        let memory = running[node].values.reduce(UInt32(0)) { $0 + $1.memoryMB } + r.task.needs.memoryMB
        let count = running[node].count + 1
        if count > Int(options.slots) { violation("n\(node) ran \(count) tasks at once with \(options.slots) slots at \(sim.now)") }
        if memory > options.memoryMB { violation("n\(node) ran \(memory) MB of tasks at once with \(options.memoryMB) MB at \(sim.now)") }
        maxRunning = max(maxRunning, count)
        maxMemory = max(maxMemory, memory)
        nextTag += 1
        liveTags.insert(nextTag)
        running[node][key] = Running(tag: nextTag, started: sim.now, memoryMB: r.task.needs.memoryMB)
        runningOn[task, default: []].append(node)
        let (duration, failFirst) = SwarmWorkload.decode(r.task.payload)
        let outcome: RunOutcome = failFirst && r.attempt <= 1 ? .failed : .succeeded
        let result = Array("n\(node) attempt \(r.attempt) \(outcome == .succeeded ? "ok" : "exit 1")".utf8)
            + [UInt8](repeating: UInt8(ascii: "."), count: options.resultPaddingBytes)
        host.schedulePerformed(.finished(swarm: r.swarm, index: r.index, attempt: r.attempt, outcome: outcome, result: result),
                               node: node, tag: nextTag, at: sim.now + duration, sim)
    }

    /// A run stops (completed, killed, or its node crashed): it frees its slot.
    private func end(_ key: RunKey, node: Int, sim: Simulator) {
        guard let r = running[node].removeValue(forKey: key) else { return }
        liveTags.remove(r.tag)
        busy += sim.now - r.started
        if var list = runningOn[key.task], let k = list.firstIndex(of: node) {
            list.remove(at: k)
            runningOn[key.task] = list.isEmpty ? nil : list
        }
    }

    // MARK: Store

    private func store(_ change: StoreChange, node: Int, sim: Simulator) {
        switch change {
        case .swarm(let definition, let epoch, let state):
            sim.mixTrace(10, node, 1, Int(epoch), Int(state.rawValue))
            if var s = stores[node][definition.id] {
                s.definition = definition
                s.epoch = epoch
                s.state = state
                stores[node][definition.id] = s
            } else {
                let tasks = Array(repeating: TaskRecord(), count: definition.draft.tasks.count)
                stores[node][definition.id] = StoredSwarm(definition: definition, epoch: epoch, state: state, tasks: tasks)
            }
            if state != .running { swarmEnded(definition.id, sim) }
        case .task(let id, let index, let record):
            sim.mixTrace(10, node, 2, Int(index), Int(record.state.rawValue), Int(record.attempt))
            guard stores[node][id] != nil, Int(index) < stores[node][id]!.tasks.count else {
                orphanWrites += 1
                violation("n\(node) stored task \(index) of swarm \(id), which its store does not hold")
                return
            }
            let old = stores[node][id]!.tasks[Int(index)]
            if old.finishSeq > 0, stores[node][id]!.bySeq[old.finishSeq] == index { stores[node][id]!.bySeq[old.finishSeq] = nil }
            if record.finishSeq > 0 { stores[node][id]!.bySeq[record.finishSeq] = index }
            stores[node][id]!.tasks[Int(index)] = record
            if record.state.isFinal, let result = record.result { noteRecording(TaskKey(swarm: id, index: index), result, node: node, sim) }
            if record.finishSeq > 0 && record.finishSeq <= stores[node][id]!.visible { follow(id, node: node, sim) }
            if let k = armedOwnerCrash, submittedIDs[k]?.id == id, record.finishSeq > 0, currentOwner(of: k, sim) == node {
                armedOwnerCrash = nil
                sim.queue.push(.fault(.crash([node])), at: sim.now)
            }
        case .swarmState(let id, let state, let epoch):
            sim.mixTrace(10, node, 3, Int(epoch), Int(state.rawValue))
            guard stores[node][id] != nil else {
                orphanWrites += 1
                violation("n\(node) stored the state of swarm \(id), which its store does not hold")
                return
            }
            stores[node][id]!.state = state
            stores[node][id]!.epoch = epoch
            if state != .running { swarmEnded(id, sim) }
        case .child(let id, let link):
            guard stores[node][id] != nil else {
                orphanWrites += 1
                violation("n\(node) stored a child of swarm \(id), which its store does not hold")
                return
            }
            if !stores[node][id]!.children.contains(where: { $0.child == link.child }) { stores[node][id]!.children.append(link) }
        case .visible(let id, let upTo):
            guard let s = stores[node][id] else {
                orphanWrites += 1
                violation("n\(node) stored the events mark of swarm \(id), which its store does not hold")
                return
            }
            guard upTo > s.visible else { return }
            stores[node][id]!.visible = upTo
            follow(id, node: node, sim)
        case .lineage(let id, let lineage):
            sim.mixTrace(10, node, 5, Int(lineage.tip?.epoch ?? 0), Int(lineage.tip?.owner ?? 0))
            guard stores[node][id] != nil else {
                orphanWrites += 1
                violation("n\(node) stored the lineage of swarm \(id), which its store does not hold")
                return
            }
            stores[node][id]!.lineage = lineage
            follow(id, node: node, sim)
        case .hideAll(let id):
            guard stores[node][id] != nil else {
                orphanWrites += 1
                violation("n\(node) hid the events of swarm \(id), which its store does not hold")
                return
            }
            stores[node][id]!.visible = 0
        }
    }

    /// The node's stream of the swarm moves on: its follower's cursor is rebased onto the stored
    /// lineage, then shown every visible finish numbered above it, in order, as the runtime's
    /// stream reads them (a number not held is passed over when a higher one is shown).
    private func follow(_ id: SwarmID, node: Int, _ sim: Simulator) {
        guard let s = stores[node][id] else { return }
        var f = followers[node][id] ?? Follower()
        guard let rebased = f.cursor.rebased(onto: s.lineage) else { return }
        f.cursor = rebased
        if f.cursor.seq < s.visible {
            for seq in (f.cursor.seq + 1)...s.visible {
                guard let index = s.bySeq[seq] else { continue }
                if !f.seen.insert(index).inserted { eventsShownAgain += 1 }
                f.cursor.seq = seq
                noteShown(id, at: EventCursor(reign: s.lineage.tip, seq: seq), index: index, node: node, sim)
            }
        }
        followers[node][id] = f
    }

    /// At the end: each follower has been shown every finished task its node numbers up to its
    /// cursor, and would be shown every other one resuming with its cursor on any other holder.
    private func checkFollowers() {
        for (node, byID) in followers.enumerated() {
            for (id, f) in byID.sorted(by: { $0.key < $1.key }) {
                for other in stores.indices {
                    guard let y = stores[other][id] else { continue }
                    // A holder behind the client's copy shows nothing to it yet: nothing to check.
                    guard let resumed = f.cursor.rebased(onto: y.lineage) else { continue }
                    var missed: [UInt32] = []
                    for (index, record) in y.tasks.enumerated() where record.finishSeq > 0 {
                        if record.finishSeq <= resumed.seq && !f.seen.contains(UInt32(index)) { missed.append(UInt32(index)) }
                    }
                    eventsMissed += missed.count
                    if !missed.isEmpty {
                        violation("a client of n\(node)'s events of swarm \(id) at \(f.cursor), resuming on n\(other) (as \(resumed)), would never see tasks \(missed.prefix(8))\(missed.count > 8 ? "…" : "") (\(missed.count))")
                    }
                }
            }
        }
    }

    /// A node's events stream now shows task `index` under id `seq`: it must be the id every
    /// stream showed that task under, and no stream may have shown another task under it.
    private func noteShown(_ id: SwarmID, at event: EventCursor, index: UInt32, node: Int, _ sim: Simulator) {
        let key = TaskKey(swarm: id, index: index)
        let seq = event.seq
        let named = shownTask[id]?[event]
        let earlier = shownSeq[key]?[event.reign]
        if named == nil { shownTask[id, default: [:]][event] = index }
        if earlier == nil { shownSeq[key, default: [:]][event.reign] = seq }
        guard (named != nil && named != index) || (earlier != nil && earlier != seq) else { return }
        // An id names one reign's number: unique on both sides of a partition too.
        if partitionSeen { eventIdConflictsOnBothSides.insert(key) }
        if eventIdConflicts.insert(key).inserted {
            violation("event id \(event) of swarm \(id) shown by n\(node) for task \(index), shown before for task \(named.map(String.init) ?? "-"), task first shown as \(earlier.map(String.init) ?? "-") (\(sim.now))")
        }
    }

    private func swarmEnded(_ id: SwarmID, _ sim: Simulator) {
        if doneAt[id] == nil { doneAt[id] = sim.now }
    }

    /// A final record with a result: the same result stored again (a replica's copy, a re-sent
    /// write) is one recording; a different one for the same task is a second recording.
    private func noteRecording(_ task: TaskKey, _ result: [UInt8], node: Int, _ sim: Simulator) {
        var list = recorded[task] ?? []
        guard !list.contains(result) else { return }
        list.append(result)
        recorded[task] = list
        guard list.count == 2 else { return }
        if partitionSeen {
            recordedOnBothSides += 1
        } else {
            recordedTwice += 1
            violation("\(task.swarm)/\(task.index) recorded twice: \(list.map { String(decoding: $0, as: UTF8.self) }) (last at n\(node), \(sim.now))")
        }
    }

    // MARK: Report

    /// The most advanced copy of a swarm among the live nodes' stores (then any node's): done
    /// first, then the highest epoch, then the most final tasks.
    func bestCopy(of id: SwarmID, _ sim: Simulator) -> StoredSwarm? {
        var best: (StoredSwarm, (Int, Int, UInt32, Int))?
        for i in 0..<stores.count {
            guard let s = stores[i][id] else { continue }
            let rank = (sim.nodes[i].up ? 1 : 0, s.state != .running ? 1 : 0, s.epoch, s.tasks.lazy.filter { $0.state.isFinal }.count)
            if let b = best, !(rank > b.1) { continue }
            best = (s, rank)
        }
        return best?.0
    }

    func addReport(to report: inout SimulationReport, host: ProtocolHost<SwarmEnvironment>, sim: Simulator) {
        var succeeded = 0, failed = 0, cancelled = 0, unfinished = 0, done = 0
        let endPeriod = Double(sim.now.nanoseconds) / Double(period.nanoseconds)
        for (k, s) in submissions.enumerated() {
            guard let (id, _) = submittedIDs[k] else {
                if !refusals.contains(where: { $0.hasPrefix("swarm \(k) ") }) { violation("swarm \(k) (through n\(s.via)) was never acknowledged") }
                unfinished += s.draft.tasks.count
                continue
            }
            guard let copy = bestCopy(of: id, sim) else {
                violation("swarm \(k) (\(id)) is in no node's store")
                unfinished += s.draft.tasks.count
                continue
            }
            var notFinal = 0
            for t in copy.tasks {
                switch t.state {
                case .succeeded: succeeded += 1
                case .failed: failed += 1
                case .cancelled: cancelled += 1
                case .pending, .running: notFinal += 1
                }
            }
            unfinished += notFinal
            if copy.state == .done, notFinal == 0 {
                done += 1
            } else {
                violation("swarm \(k) (\(id)) was \(copy.state.name) with \(notFinal) of \(copy.tasks.count) tasks not final at period \(Int(endPeriod)) (deadline \(deadlinePeriod))")
            }
            if copy.state == .done, notFinal > 0 { violation("swarm \(k) (\(id)) is done with \(notFinal) tasks not final") }
        }
        let first = Instant.zero + period.scaled(by: options.submitPeriod)
        let makespan = doneAt.count == submissions.count && !submissions.isEmpty ? (doneAt.values.max()! - first) : .zero
        let slots = Int(options.slots) * sim.nodes.count
        let seconds = Double(makespan.nanoseconds) / 1e9
        let stats = host.stats
        report.swarm = SwarmReport(
            swarms: submissions.count, swarmsDone: done, tasks: submissions.reduce(0) { $0 + $1.draft.tasks.count },
            succeeded: succeeded, failed: failed, cancelled: cancelled, unfinished: unfinished,
            runs: runs, retries: runs - startedTasks.count, recordedTwice: recordedTwice, runTwice: runTwice,
            tasksRecordedOnBothSides: recordedOnBothSides, tasksRunOnBothSides: runOnBothSides,
            maxRunning: maxRunning, slots: Int(options.slots), maxMemoryMB: Int(maxMemory), memoryMB: Int(options.memoryMB),
            attemptsOverMax: attemptsOverMax, makespanSeconds: seconds,
            makespanPeriods: Double(makespan.nanoseconds) / Double(period.nanoseconds),
            idealMakespanSeconds: Double(idealMakespan.nanoseconds) / 1e9,
            utilisation: seconds > 0 ? Double(busy.nanoseconds) / 1e9 / (Double(slots) * seconds) : 0,
            deadlinePeriod: deadlinePeriod, submitted: submittedIDs.count, refused: refusals,
            hosted: ["messages": stats.messages, "messagesLost": stats.messagesLost, "requests": stats.requests,
                     "responses": stats.responses, "nilResponses": stats.nilResponses, "commands": stats.commands,
                     "membershipEvents": stats.membershipEvents, "reusedRequestIDs": stats.reusedRequestIDs,
                     "unknownTokens": stats.unknownTokens, "orphanStoreWrites": orphanWrites])
        checkFollowers()
        report.swarm?.eventsMissed = eventsMissed
        report.swarm?.eventsShownAgain = eventsShownAgain
        report.swarm?.eventIdConflicts = eventIdConflicts.count
        report.swarm?.eventIdConflictsOnBothSides = eventIdConflictsOnBothSides.count
        for v in violations where report.violations.count < 40 { report.violations.append(v) }
    }
}
