import AsyncHTTPClient
import Foundation
import Logging
import Metrics
import NIOCore
import StarlingCore
import StarlingSandbox
import StarlingStore
import Synchronization

/// Hosted agents on one node: it runs the brain of every agent whose session this node owns,
/// and carries out the effects only the node may (model calls with the key added, swarm spawns,
/// the agent's start and end records).
///
/// **Ownership.** `ownershipChanged()` looks at the agent sessions this node holds (their creation
/// record carries the spec) and asks the sessions protocol which of them it serves. A served
/// session whose agent has not ended gets its brain started here; a brain whose session is no
/// longer served here (it moved, or was deleted) is killed without recording an end, so the new
/// owner restarts it. It runs when the sessions service durably wrote a promise, an image or a
/// forget (a takeover or handoff; `SessionService.observeOwnership`), after a create, and every
/// `interval` as a safety net.
///
/// **Durability.** Everything an agent is lives in its session: the spec in the creation record,
/// each start as the effect `starling.agent.start/EPOCH` (restarts = starts − 1), each model call
/// and spawn as an effect, the end as the effect `starling.agent.end` (first writer wins, so a
/// stop after the end changes nothing and an end after a stop is replayed as the stop).
public final class AgentService: BuiltinEffects {
    let sessions: SessionService
    let runner: SandboxRunner
    let swarms: (any SwarmGateway)?
    let swarmRoutes: SwarmRoutes?
    let nodeName: String
    let logger: Logger
    let interval: Duration

    /// A brain running (or about to run) here.
    struct Brain {
        /// The memory its sandbox may use, held out of the swarm worker's (`reportOccupancy`).
        var memoryMB: Int
        var handle: RunningTask?
        /// Set when the node kills it: `requested` (a stop, already recorded) or `moved` (the
        /// session is not served here any more: nothing is recorded, the new owner restarts it).
        var stop: StopReason?
    }
    enum StopReason { case requested, moved }

    struct State {
        var brains: [String: Brain] = [:]
        /// Bodies of model calls and spawns between their `act` and their run: the journal keeps
        /// only their digest. Keyed by "SESSION\u{0}KEY"; bounded by the calls in flight.
        var payloads: [String: [UInt8]] = [:]
        /// Model calls answered from the journal, per agent, since this node took it over.
        var replayed: [String: Int] = [:]
        /// The stderr of the brain's runs on this node, its last `maxLogBytes`.
        var logs: [String: [UInt8]] = [:]
        /// Agents seen ended here: an end is for good, so their journal is not read again.
        var ended: Set<String> = []
        /// A pushed ownership check runs (`checkOwnershipSoon`), and another was asked for meanwhile.
        var checking = false
        var checkAgain = false
        /// Model calls in flight per agent: while one is, the agent shows `waiting`.
        var modelCallsInFlight: [String: Int] = [:]
    }
    let state = Mutex(State())

    let modelCalls = Counter(label: "starling_agent_model_calls")
    let modelReplays = Counter(label: "starling_agent_model_calls_replayed")
    let tokensSaved = Counter(label: "starling_agent_model_tokens_saved")
    let brainStarts = Counter(label: "starling_agent_brain_starts")

    public init(sessions: SessionService, runner: SandboxRunner, swarms: (any SwarmGateway)?, interval: Duration = .milliseconds(200),
                logger: Logger) {
        self.sessions = sessions
        self.runner = runner
        self.swarms = swarms
        swarmRoutes = swarms.map { SwarmRoutes(gateway: $0, forwarder: SwarmForwarder(logger: logger), events: SwarmEventSettings(), logger: logger) }
        nodeName = sessions.nodeName
        self.logger = logger
        self.interval = interval
    }

    /// Takes over the builtin effects and starts following ownership. Call once, after the node started.
    public func start() {
        sessions.handOver(builtinEffects: self)
        sessions.observeOwnership { [self] in checkOwnershipSoon() }
        Task.detached { [self] in
            while true {
                checkOwnershipSoon()
                // Said again each round: cheap, and it heals a report that reached the protocol
                // after a newer one (they are queued in order, so this is belt and braces).
                reportOccupancy()
                try? await Task.sleep(for: interval)
            }
        }
    }

    // MARK: Ownership

    /// The agents held here, by id, with their spec.
    func heldAgents() -> [String: (options: SessionOptions, spec: AgentSpec)] {
        guard let rows = try? sessions.store.creationOptions(containing: "\"agent\":") else { return [:] }
        var agents: [String: (SessionOptions, AgentSpec)] = [:]
        for row in rows {
            guard let options = try? JSONDecoder().decode(SessionOptions.self, from: Data(row.options)), let spec = options.agent else { continue }
            agents[row.id] = (options, spec)
        }
        return agents
    }

    /// The spec of agent `id` if its session is held here.
    func spec(of id: String) -> (options: SessionOptions, spec: AgentSpec)? {
        guard let image = try? sessions.store.image(id), let content = image.creationOptions, let options = try? JSONDecoder().decode(SessionOptions.self, from: Data(content)),
              let spec = options.agent else { return nil }
        return (options, spec)
    }

    /// Asks for an ownership check. Every check goes through here (the sessions service's pushes,
    /// a create, the poll), and one runner does them one after another: two checks at once could
    /// kill, as an orphan, a brain the other just started from a newer view. Asks while it runs
    /// make one more full check (a member sending prepares by the thousand costs a check per
    /// check's time, not a task each).
    func checkOwnershipSoon() {
        let start = state.withLock { s -> Bool in
            if s.checking {
                s.checkAgain = true
                return false
            }
            s.checking = true
            return true
        }
        if start { Task { [self] in await runChecks() } }
    }

    /// The runner. A takeover's image is written before the new owner serves (a majority must
    /// store it first), so an agent whose session is still settling is looked at again every
    /// `settleInterval`, alone, for at most `settleChecks` rounds; a new ask ends the settling
    /// early with a full check (which looks at the settling ones too).
    func runChecks() async {
        repeat {
            var settling = await ownershipChanged()
            var rounds = 0
            while !settling.isEmpty, rounds < Self.settleChecks, !state.withLock({ $0.checkAgain }) {
                rounds += 1
                try? await Task.sleep(for: Self.settleInterval)
                settling = await ownershipChanged(only: settling)
            }
        } while takeCheckAgain()
    }

    /// Whether another check was asked for (and clears the ask); if not, the runner stops.
    func takeCheckAgain() -> Bool {
        state.withLock { s -> Bool in
            if s.checkAgain {
                s.checkAgain = false
                return true
            }
            s.checking = false
            return false
        }
    }

    static let settleInterval = Duration.milliseconds(50)
    /// 10 s of settle rounds; past them an agent is left to the poll.
    static let settleChecks = 200

    /// Starts the brains of the agents whose session this node serves and that have not ended;
    /// kills those whose session it no longer serves.
    /// Returns the held agents whose session was still settling (a takeover or move under way).
    /// `only`: look at these agents alone (and leave the orphans to a full round).
    @discardableResult
    func ownershipChanged(only: Set<String>? = nil) async -> Set<String> {
        // A settle round reads only its agents' specs, not every held session's.
        let held = only.map { ids in
            Dictionary(uniqueKeysWithValues: ids.compactMap { id in spec(of: id).map { (id, $0) } })
        } ?? heldAgents()
        var unsettled: Set<String> = []
        for (id, agent) in held {
            // Ownership first, without the journal (a page of it can be a megabyte of answers);
            // the journal only when a brain may have to start here.
            let reply = try? await sessions.command(.show(id: id, since: UInt64.max))
            switch reply {
            case .view(let view)? where view.owner == nodeName:
                let skip = state.withLock { $0.brains[id] != nil || $0.ended.contains(id) }
                guard !skip, case .view(let full)? = try? await wholeView(id), full.owner == nodeName else { continue }
                if Self.end(in: full) != nil {
                    state.withLock { _ = $0.ended.insert(id) }
                    continue
                }
                await startBrain(id, agent.options, agent.spec, epoch: full.epoch)
            case .unavailable?, nil:
                unsettled.insert(id)
                continue  // resuming here or there: decide once it settled
            default:
                kill(id, .moved)
            }
        }
        guard only == nil else { return unsettled }
        let orphans = state.withLock { s in
            // What is kept per agent goes with its session: bounded by the sessions held.
            s.logs = s.logs.filter { held[$0.key] != nil }
            s.replayed = s.replayed.filter { held[$0.key] != nil }
            s.ended = s.ended.filter { held[$0] != nil }
            return s.brains.keys.filter { held[$0] == nil }
        }
        for id in orphans { kill(id, .moved) }
        return unsettled
    }

    func kill(_ id: String, _ reason: StopReason) {
        let handle = state.withLock { s -> RunningTask? in
            guard var brain = s.brains[id] else { return nil }
            if brain.stop == nil { brain.stop = reason }
            s.brains[id] = brain
            return brain.handle
        }
        if let handle {
            logger.info("stopping an agent's brain", metadata: ["agent": "\(id)", "why": "\(reason)"])
            handle.cancel()
        }
    }

    func startBrain(_ id: String, _ options: SessionOptions, _ spec: AgentSpec, epoch: UInt64) async {
        // The spec comes from the session's creation record, which a peer may have handed this
        // node (a handoff, an install): checked again here, as `POST /v1/agents` checked it, so
        // no number or URL in it reaches the sandbox or the model proxy unchecked. (Not the
        // brain's id: a label, held to its rule only on the way in, `TaskLimits.validate`.)
        if let refusal = spec.refusal(checkingID: false) {
            state.withLock { _ = $0.ended.insert(id) }
            _ = await recordEnd(id, BuiltinEffect(starlingBuiltin: .end, state: AgentState.failed.rawValue,
                                                  reason: "refused: \(refusal)", node: nodeName))
            return
        }
        let admitted = state.withLock { s -> Bool in
            guard s.brains[id] == nil, s.brains.count < AgentLimits.maxRunningBrains else { return false }
            s.brains[id] = Brain(memoryMB: SwarmDrafting.memoryMB(spec.brain, policy: spec.policy), handle: nil, stop: nil)
            return true
        }
        guard admitted else { return }
        reportOccupancy()
        // The start is recorded first: `restarts` counts it, and a node that cannot write to the
        // session does not run its brain.
        let start = BuiltinEffect(starlingBuiltin: .start, node: nodeName)
        let reply = try? await sessions.command(.act(id: id, key: AgentKeys.start + "\(epoch)", task: Self.encode(start)))
        guard case .acted? = reply else {
            state.withLock { _ = $0.brains.removeValue(forKey: id) }
            reportOccupancy()
            // A session that will never take the start (its keys are used up, its image is full)
            // ends the agent, failed with the reason, instead of leaving it starting for ever.
            if case .rejected(let reason)? = reply {
                state.withLock { _ = $0.ended.insert(id) }
                _ = await recordEnd(id, BuiltinEffect(starlingBuiltin: .end, state: AgentState.failed.rawValue,
                                                      reason: "its start could not be recorded: \(reason)", node: nodeName))
            }
            return
        }
        brainStarts.increment()
        var task = spec.brain
        task.net = NetworkMode.none
        task.secrets = nil
        var env = task.env ?? [:]
        env["STARLING_SESSION"] = id
        env["STARLING_AGENT"] = id
        task.env = env
        var policy = spec.policy ?? Policy()
        policy.net = NetworkMode.none
        let routes = AgentSocketRoutes(agent: id, service: self)
        let socket = TaskSocketServer(router: routes.makeRouter(),
                                      rate: RequestRate(burst: TaskSocketServer.Limits.burst, perSecond: TaskSocketServer.Limits.perSecond,
                                                        total: TaskSocketServer.Limits.total),
                                      logger: logger)
        let context = TaskContext(taskID: "agent/\(id)", socket: socket, onStderr: { [self] chunk in appendLog(id, chunk) })
        logger.info("starting an agent's brain", metadata: ["agent": "\(id)", "epoch": "\(epoch)"])
        let brainTask = task, brainPolicy = policy
        let thread = Thread { [self] in
            let result: TaskResult
            do {
                result = try runner.run(brainTask, requestPolicy: brainPolicy, output: .capture, context: context, onStart: { handle in
                    let stop = self.state.withLock { s -> StopReason? in
                        s.brains[id]?.handle = handle
                        return s.brains[id]?.stop
                    }
                    if stop != nil { handle.cancel() }
                })
            } catch {
                result = .denied("\(error)", node: nodeName)
            }
            Task { await brainEnded(id, result) }
        }
        thread.name = "starling-brain"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Records the end of a brain that ended by itself (not killed by the node); keeps its stderr.
    func brainEnded(_ id: String, _ result: TaskResult) async {
        // The brain stays listed until its end is recorded, so that `ownershipChanged` does not
        // start it again in between.
        defer {
            state.withLock { _ = $0.brains.removeValue(forKey: id) }
            reportOccupancy()
        }
        let stop = state.withLock { s -> StopReason? in
            s.brains[id]?.stop
        }
        logger.info("an agent's brain ended", metadata: ["agent": "\(id)", "reason": "\(result.reason.rawValue)",
                                                         "exitCode": "\(result.exitCode.map(String.init) ?? "none")"])
        guard stop == nil else { return }
        let state: AgentState = result.reason == .exited && result.exitCode == 0 ? .done : .failed
        var reason = result.reason.rawValue
        if result.reason == .denied { reason += ": " + String(result.stderr.prefix(512)) }
        let tail = String(decoding: Array(result.stderr.utf8.suffix(AgentLimits.recordedLogTailBytes)), as: UTF8.self)
        let output = String(decoding: Array(result.stdout.utf8.suffix(AgentLimits.recordedOutputTailBytes)), as: UTF8.self)
        _ = await recordEnd(id, BuiltinEffect(starlingBuiltin: .end, state: state.rawValue, exitCode: result.exitCode, reason: reason,
                                              stderrTail: tail, node: nodeName, stdoutTail: output))
    }

    /// Each brain holds a slot and its memory while it runs: the swarm worker starts tasks only
    /// in what is left and the node advertises only that, so placement sends swarm tasks to
    /// nodes with room. Told on every change of the brain table (start, end, refusal).
    /// Told under the lock (the gateway only queues it for the node's loop), so two reports
    /// reach the worker in the order the table changed.
    func reportOccupancy() {
        state.withLock { s in
            // Each brain's memory was validated (`refusal()`: within `TaskLimits.memoryMBRange`)
            // and there are at most `maxRunningBrains`: the sum cannot overflow; clamped anyway.
            let memory = s.brains.values.reduce(0) { $0 + min(max($1.memoryMB, 0), TaskLimits.memoryMBRange.upperBound) }
            swarms?.occupy(slots: s.brains.count, memoryMB: memory)
        }
    }

    /// Runs a model call of `agent`, which shows `waiting` meanwhile (its brain waits on the
    /// node's hands, not on its own computation).
    func whileWaiting<T>(_ agent: String, _ call: () async -> T) async -> T {
        state.withLock { $0.modelCallsInFlight[agent, default: 0] += 1 }
        defer {
            state.withLock { s in
                let left = (s.modelCallsInFlight[agent] ?? 1) - 1
                s.modelCallsInFlight[agent] = left > 0 ? left : nil
            }
        }
        return await call()
    }

    /// Keeps the last `maxLogBytes` of a brain's stderr, as it is written.
    func appendLog(_ id: String, _ chunk: [UInt8]) {
        state.withLock { s in
            var log = s.logs[id] ?? []
            log.append(contentsOf: chunk)
            if log.count > AgentLimits.maxLogBytes { log.removeFirst(log.count - AgentLimits.maxLogBytes) }
            s.logs[id] = log
        }
    }

    /// Records the agent's end (first writer wins) and returns the end that holds, or nil when
    /// the session could not be written (its owner changes: the new owner restarts the brain).
    func recordEnd(_ id: String, _ end: BuiltinEffect) async -> BuiltinEffect? {
        for _ in 0..<10 {
            switch try? await sessions.command(.act(id: id, key: AgentKeys.end, task: Self.encode(end))) {
            case .acted(_, _, let result)?:
                return (try? JSONDecoder().decode(BuiltinEffect.self, from: Data(result)))
                    ?? BuiltinEffect(starlingBuiltin: .end, state: AgentState.failed.rawValue, reason: "its end record is not the node's")
            case .running?, .unavailable?:
                try? await Task.sleep(for: .milliseconds(200))
            default:
                return nil
            }
        }
        return nil
    }

    /// `DELETE /v1/agents/ID` on the owner: records `stopped` (unless it ended before), then kills the brain.
    func stop(_ id: String) async -> BuiltinEffect? {
        let end = await recordEnd(id, BuiltinEffect(starlingBuiltin: .end, state: AgentState.stopped.rawValue, reason: "stopped", node: nodeName))
        if end != nil { kill(id, .requested) }
        return end
    }

    // MARK: Reading an agent

    /// The agent's session with its whole journal, read page by page: a compacted session may
    /// hold more keys than one page (256), and the end key may be on any page. Bounded by the
    /// keys a session may hold (`maxEffectKeys`); only the most recent results are kept in it.
    func wholeView(_ id: String) async throws -> SessionReply {
        let reply = try await sessions.command(.show(id: id, since: 0))
        guard case .view(var view) = reply else { return reply }
        var pages = 0
        while view.journalMore, let last = view.journal.last, pages <= SessionLimits.maxEffectKeys / SessionLimits.maxJournalPage {
            pages += 1
            guard case .view(let next) = try await sessions.command(.show(id: id, since: last.seq)) else { break }
            view.journal += next.journal
            view.journalMore = next.journalMore
        }
        return .view(view)
    }

    /// The agent's end, if one is recorded. Any entry under the end key ends the agent for good,
    /// so it is never restarted: one whose result is not the node's (a client wrote the key
    /// through the public session route), and one whose outcome is unknown (its owner died while
    /// recording the end) count as failed.
    /// `pendingCounts`: whether an end being written (its start stored, its result not yet)
    /// counts. For starting a brain it does (a stop's end is written before its brain is killed);
    /// for showing the agent it does not: the brain's own end, `done` as often as not, is what
    /// is being written, and the agent is not failed meanwhile.
    static func end(in view: SessionView, pendingCounts: Bool = true) -> BuiltinEffect? {
        for entry in view.journal where entry.key == AgentKeys.end {
            let failed = { (why: String) in BuiltinEffect(starlingBuiltin: .end, state: AgentState.failed.rawValue, reason: why) }
            switch entry.outcome {
            case .done(let result):
                return (try? JSONDecoder().decode(BuiltinEffect.self, from: Data(result))) ?? failed("its end record is not the node's")
            case .running:
                return pendingCounts ? failed("its end is being recorded") : nil
            case .unknown:
                return failed("its owner stopped while recording its end")
            case .expired:
                return failed("its end record was compacted")
            }
        }
        return nil
    }

    /// interface.md's Agent, from its session as served here; nil when the session is not an agent's.
    func agentJSON(_ id: String, _ view: SessionView) -> [String: Any]? {
        guard spec(of: id) != nil else { return nil }
        let end = Self.end(in: view, pendingCounts: false)
        let starts = view.journal.filter { $0.key.hasPrefix(AgentKeys.start) }.count
        let calls = view.journal.filter { entry in
            guard entry.key.hasPrefix(AgentKeys.model) else { return false }
            // A call whose answer compaction dropped is counted: it was answered (a failed one
            // is most often retried under a derived key, so this may overcount by those).
            if entry.outcome == .expired { return true }
            guard case .done(let result) = entry.outcome else { return false }
            return (try? JSONDecoder().decode(CallOutcome.self, from: Data(result)))?.succeeded ?? false
        }.count
        let (running, replayed, calling) = state.withLock { s in
            (s.brains[id]?.handle != nil, s.replayed[id] ?? 0, (s.modelCallsInFlight[id] ?? 0) > 0)
        }
        let alive: AgentState = running ? (calling ? .waiting : .running) : .starting
        let agentState: String = end?.state ?? alive.rawValue
        return ["id": id, "session": id, "owner": view.owner, "state": agentState, "restarts": max(0, starts - 1),
                "modelCalls": calls, "modelCallsReplayed": replayed,
                "exitCode": end?.exitCode.map { Int($0) as Any } ?? NSNull(),
                "reason": end?.reason ?? NSNull(), "output": end?.stdoutTail ?? NSNull(), "epoch": view.epoch, "seq": view.seq]
    }

    /// The brain's stderr: what its runs on this node wrote, else the tail its end recorded.
    func logs(_ id: String, _ view: SessionView) -> String {
        let here = state.withLock { $0.logs[id] }
        // Redacted whole, so that a secret split across two writes is still found.
        if let here, !here.isEmpty { return runner.configuration.secrets.redact(String(decoding: here, as: UTF8.self)) }
        return Self.end(in: view)?.stderrTail ?? ""
    }

    // MARK: Journaled calls (model calls and spawns from the brain's socket)

    /// Runs a model call or a swarm spawn as an effect of the agent's session, keyed by `key`. A
    /// recorded success is replayed; a recorded failure, or an outcome lost with an owner, runs
    /// again under a derived key (`KEY~N`, at most `maxCallAttempts` runs), so a resumed brain
    /// walks the same keys and meets the same recorded answers.
    func journaledCall(agent id: String, kind: BuiltinEffect.Kind, key: String, body: [UInt8]) async -> (CallOutcome, replayed: Bool) {
        let effect = BuiltinEffect(starlingBuiltin: kind, digest: blake2bHex(body))
        var last = CallOutcome(status: 503, body: Self.errorBody("the call could not be recorded in the agent's session"))
        var attempt = 0
        let deadline = ContinuousClock.now + AgentLimits.modelTimeout + .seconds(30)
        while attempt < AgentLimits.maxCallAttempts, ContinuousClock.now < deadline {
            let attemptKey = AgentKeys.attemptKey(key, attempt)
            let slot = "\(id)\u{0}\(attemptKey)"
            state.withLock { $0.payloads[slot] = body }
            let reply = try? await sessions.command(.act(id: id, key: attemptKey, task: Self.encode(effect)))
            state.withLock { _ = $0.payloads.removeValue(forKey: slot) }
            switch reply {
            case .acted(_, let replayed, let result)?:
                guard let outcome = try? JSONDecoder().decode(CallOutcome.self, from: Data(result)) else {
                    return (CallOutcome(status: 409, body: Self.errorBody("journal key \(attemptKey) holds something else")), false)
                }
                if replayed && !outcome.succeeded {
                    last = outcome
                    attempt += 1
                    continue
                }
                return (outcome, replayed)
            case .outcomeUnknown?:
                attempt += 1
                continue
            case .outcomeExpired(_, _, let resultSeq)?:
                // Done long ago, and its answer dropped by compaction: never run again (a brain
                // resuming from its latest checkpoint does not ask for it).
                return (CallOutcome(status: 409, body: Self.errorBody(
                    "journal key \(attemptKey) was answered (record \(resultSeq)) and its answer dropped when the session was compacted; resume from the latest checkpoint")), false)
            case .running?:
                try? await Task.sleep(for: .milliseconds(100))
            case .rejected(let reason)?:
                return (CallOutcome(status: 409, body: Self.errorBody(reason)), false)
            case .unavailable(let reason)?:
                last = CallOutcome(status: 503, body: Self.errorBody(reason))
                try? await Task.sleep(for: .milliseconds(200))
            default:
                return (CallOutcome(status: 503, body: Self.errorBody("this node no longer serves the agent's session")), false)
            }
        }
        return (last, false)
    }

    /// The brain's `POST /v1/model/chat/completions`.
    func modelCall(agent id: String, body: [UInt8], idempotencyKey: String?) async -> CallOutcome {
        let key = AgentKeys.callKey(prefix: AgentKeys.model, idempotencyKey: idempotencyKey, body: body)
        let (outcome, replayed) = await journaledCall(agent: id, kind: .model, key: key, body: body)
        if replayed {
            modelReplays.increment()
            // A recorded count is the model's number: never negative or huge here, whatever it said.
            if let tokens = outcome.tokens { tokensSaved.increment(by: Int64(min(max(0, tokens), CallOutcome.maxTokens))) }
            state.withLock { $0.replayed[id, default: 0] += 1 }
        }
        return outcome
    }

    // MARK: BuiltinEffects

    public func run(session: String, key: String, task: [UInt8], options: [UInt8], complete: @escaping @Sendable ([UInt8]) -> Void) -> Bool {
        guard let effect = try? JSONDecoder().decode(BuiltinEffect.self, from: Data(task)) else { return false }
        switch effect.starlingBuiltin {
        case .start, .end:
            complete(Self.encode(effect))
        case .model, .swarm:
            let payload = state.withLock { $0.payloads["\(session)\u{0}\(key)"] }
            let agent = (try? JSONDecoder().decode(SessionOptions.self, from: Data(options)))?.agent
            Task { [self] in
                var outcome: CallOutcome
                if let payload, let agent, blake2bHex(payload) == effect.digest {
                    outcome = effect.starlingBuiltin == .model ? await callModel(agent, payload) : await spawnSwarm(agent, payload)
                } else {
                    outcome = CallOutcome(status: 503, body: Self.errorBody("the call's body is not held on the node that runs it"))
                }
                var bytes = Self.encode(outcome)
                if bytes.count > SessionLimits.maxEffectBytes {
                    outcome = CallOutcome(status: 502, body: Self.errorBody(
                        "the answer (\(outcome.body.utf8.count) bytes) is larger than a journal entry holds (\(SessionLimits.maxEffectBytes))"))
                    bytes = Self.encode(outcome)
                }
                complete(bytes)
            }
        }
        return true
    }

    /// Forwards a chat completion to the agent's model with the node's key added.
    func callModel(_ agent: AgentSpec, _ body: [UInt8]) async -> CallOutcome {
        guard let model = agent.model else { return CallOutcome(status: 404, body: Self.errorBody("this agent has no model")) }
        let configuration = runner.configuration
        guard configuration.policy.narrowed(by: agent.policy).secrets?.contains(model.secret) == true else {
            return CallOutcome(status: 403, body: Self.errorBody("secret \(model.secret) is not allowed by the node's policy (narrowed by the agent's)"))
        }
        guard let secret = configuration.secrets.values[model.secret] else {
            return CallOutcome(status: 403, body: Self.errorBody("secret \(model.secret) is not held by node \(nodeName)"))
        }
        modelCalls.increment()
        let base = model.baseURL.hasSuffix("/") ? String(model.baseURL.dropLast()) : model.baseURL
        var request = HTTPClientRequest(url: base + "/chat/completions")
        request.method = .POST
        request.headers.add(name: "Authorization", value: "Bearer \(secret)")
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(bytes: body))
        do {
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(AgentLimits.modelTimeout.components.seconds), logger: nil)
            let bytes = try await response.body.collect(upTo: AgentLimits.maxModelResponseBytes)
            // A model that echoes the key back does not get it into the journal or the sandbox.
            let text = configuration.secrets.redact(String(buffer: bytes))
            return CallOutcome(status: Int(response.status.code), body: text, tokens: CallOutcome.usageTokens(text))
        } catch {
            return CallOutcome(status: 502, body: Self.errorBody(configuration.secrets.redact("the model did not answer: \(error)")))
        }
    }

    /// Submits a swarm for the brain: the agent's policy, narrowed by the spec's; no spawn budget.
    func spawnSwarm(_ agent: AgentSpec, _ body: [UInt8]) async -> CallOutcome {
        guard let swarms else { return CallOutcome(status: 503, body: Self.errorBody("this node does not run swarms")) }
        let spec: SwarmSpec
        do { spec = try JSONDecoder().decode(SwarmSpec.self, from: Data(body)) } catch {
            return CallOutcome(status: 400, body: Self.errorBody("the body is not a SwarmSpec: \(SwarmRoutes.describe(error))"))
        }
        if let clash = SwarmRoutes.duplicateTaskID(spec) { return CallOutcome(status: 409, body: Self.errorBody("task id \(clash) is used twice")) }
        do { try SwarmLimits.validate(spec) } catch { return CallOutcome(status: 400, body: Self.errorBody(error.description)) }
        let policy = agent.policy.map { $0.narrowed(by: spec.policy) } ?? spec.policy
        let draft: SwarmDraft
        do {
            draft = try SwarmDrafting.draft(spec, options: SwarmOptions(policy: policy, spawn: nil, maxAttempts: spec.maxAttempts ?? 1),
                                            nowMs: UInt64(max(0, Date().timeIntervalSince1970 * 1000)))
        } catch {
            return CallOutcome(status: 400, body: Self.errorBody("\(error)"))
        }
        switch try? await swarms.submit(draft) {
        case .submitted(let id, _)?:
            return CallOutcome(status: 202, body: String(decoding: (try? JSONEncoder().encode(["id": id])) ?? Data(), as: UTF8.self))
        case .rejected(let reason)?: return CallOutcome(status: 400, body: Self.errorBody(reason))
        case .forbidden(let reason)?, .refused(let reason)?: return CallOutcome(status: 403, body: Self.errorBody(reason))
        default: return CallOutcome(status: 503, body: Self.errorBody("the swarm was not accepted"))
        }
    }

    /// The swarms this agent spawned (recorded in its journal).
    func ownSwarms(_ id: String) async -> Set<String> {
        guard case .view(let view)? = try? await wholeView(id) else { return [] }
        var ids = Set<String>()
        for entry in view.journal where entry.key.hasPrefix(AgentKeys.swarm) {
            guard case .done(let result) = entry.outcome, let outcome = try? JSONDecoder().decode(CallOutcome.self, from: Data(result)),
                  outcome.succeeded, let created = try? JSONDecoder().decode([String: String].self, from: Data(outcome.body.utf8)),
                  let swarm = created["id"] else { continue }
            ids.insert(swarm)
        }
        return ids
    }

    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return [UInt8]((try? encoder.encode(value)) ?? Data())
    }

    static func errorBody(_ message: String) -> String {
        String(decoding: (try? JSONEncoder().encode(["error": message])) ?? Data(), as: UTF8.self)
    }
}
