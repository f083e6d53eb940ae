import StarlingCore

/// What the simulator needs of a hosted protocol, whatever its type: the event loop holds a list
/// of these and knows nothing of any protocol but membership.
protocol SimulatedProtocolHost: AnyObject {
    /// Its index in the simulator's list, which its queued events carry.
    func attach(slot: Int)
    /// Creates every node's instance and schedules the environment's own events (commands).
    func start(_ sim: Simulator)
    func dispatch(_ ticket: UInt64, _ sim: Simulator)
    func membershipChanged(node: Int, _ events: [MembershipEvent], _ sim: Simulator)
    func crashed(_ node: Int, _ sim: Simulator)
    func restarted(_ node: Int, _ sim: Simulator)
    func resumed(_ node: Int, _ sim: Simulator)
    /// Some connections broke: every request still open on one of them gets its nil response.
    func connectionsBroke(_ sim: Simulator)
    func faultApplied(_ fault: Fault, _ sim: Simulator)
    /// The protocol's work is over (the run may stop once membership's checks are done too).
    var finished: Bool { get }
    func addReport(to report: inout SimulationReport, _ sim: Simulator)
}

/// The protocol-specific half of hosting: how to build an instance, what a `.perform` does in
/// the simulated world, what to do with command replies, and what to check.
protocol ProtocolEnvironment: AnyObject {
    associatedtype P: HostedProtocol
    /// A node's instance at the start (`restarted` false) or when it comes back from a crash,
    /// with the effects of restoring its state.
    func makeProtocol(node: Int, restarted: Bool, sim: Simulator) -> (P, [ProtocolEffect<P>])
    func started(host: ProtocolHost<Self>, sim: Simulator)
    func perform(_ action: P.Action, node: Int, host: ProtocolHost<Self>, sim: Simulator)
    /// Whether an outcome scheduled with this tag is still due (a killed run's completion is not).
    func outcomeIsCurrent(tag: UInt64, node: Int, sim: Simulator) -> Bool
    func replied(_ reply: P.Reply, to command: CommandID, node: Int, sim: Simulator)
    func crashed(node: Int, sim: Simulator)
    func faultApplied(_ fault: Fault, sim: Simulator)
    var finished: Bool { get }
    func addReport(to report: inout SimulationReport, host: ProtocolHost<Self>, sim: Simulator)
}

/// Hosts one `HostedProtocol` on every simulated node: its deadlines, its channel's messages
/// over the simulated stream links, requests with timeouts (exactly one `response` each),
/// membership events, commands and the outcomes of `.perform`. Generic over the protocol, so a
/// new protocol needs only an environment and one `register` call.
final class ProtocolHost<Env: ProtocolEnvironment>: SimulatedProtocolHost {
    typealias P = Env.P

    /// Events of this protocol waiting in the simulator's queue, by ticket.
    enum Pending {
        case timer(node: Int)
        case message(to: Int, from: Int, ConnectionID, P.Message)
        case request(to: Int, from: Int, ConnectionID, P.Message, RequestID, requesterLife: Int)
        case response(to: Int, from: Int, ConnectionID, P.Message, RequestID, life: Int)
        /// The request timed out or its connection broke (a no-op if it was answered first).
        case requestFailed(node: Int, RequestID, life: Int)
        case command(node: Int, P.Command, CommandID)
        case performed(node: Int, life: Int, P.ActionOutcome, tag: UInt64)

        var target: Int {
            switch self {
            case .timer(let n), .message(let n, _, _, _), .request(let n, _, _, _, _, _), .response(let n, _, _, _, _, _),
                 .requestFailed(let n, _, _), .command(let n, _, _), .performed(let n, _, _, _): n
            }
        }
    }

    struct RequestKey: Hashable, Comparable {
        var node: Int
        var id: UInt64
        static func < (a: RequestKey, b: RequestKey) -> Bool { (a.node, a.id) < (b.node, b.id) }
    }

    struct OpenRequest {
        var peer: Int
        var connection: ConnectionID?
        var life: Int
        var failing = false
    }

    struct OwedAnswer {
        var requester: Int
        var responder: Int
        var id: RequestID
        var connection: ConnectionID
        var requesterLife: Int
    }

    /// Traffic and contract counters, reported under `hosted` in the JSON.
    struct Stats {
        var messages = 0
        var messagesLost = 0
        var requests = 0
        var responses = 0
        var nilResponses = 0
        var commands = 0
        var membershipEvents = 0
        var reusedRequestIDs = 0
        var unknownTokens = 0
    }

    let env: Env
    private(set) var slot = -1
    private(set) var instances: [P?] = []
    private var timerAt: [Instant?] = []
    private var pending: [UInt64: Pending] = [:]
    private var nextTicket: UInt64 = 0
    private var open: [RequestKey: OpenRequest] = [:]
    private var owed: [UInt64: OwedAnswer] = [:]
    private var nextToken: UInt64 = 0
    private var nextCommand: UInt64 = 0
    private(set) var stats = Stats()

    init(_ env: Env) { self.env = env }

    func attach(slot: Int) { self.slot = slot }

    // MARK: Scheduling

    func schedule(_ p: Pending, at t: Instant, _ sim: Simulator) {
        nextTicket += 1
        pending[nextTicket] = p
        sim.queue.push(.hosted(slot, nextTicket), at: t)
    }

    /// A command from the scenario (the simulated HTTP handler), delivered at `t`.
    @discardableResult
    func scheduleCommand(_ command: P.Command, node: Int, at t: Instant, _ sim: Simulator) -> CommandID {
        nextCommand += 1
        let id = CommandID(rawValue: nextCommand)
        schedule(.command(node: node, command, id), at: t, sim)
        return id
    }

    /// The outcome of a `.perform`, delivered at `t` if the node is still the same life and the
    /// environment still holds the tag current.
    func schedulePerformed(_ outcome: P.ActionOutcome, node: Int, tag: UInt64, at t: Instant, _ sim: Simulator) {
        schedule(.performed(node: node, life: sim.nodes[node].life, outcome, tag: tag), at: t, sim)
    }

    func scheduleTimer(_ i: Int, _ sim: Simulator) {
        guard sim.nodes[i].up, let p = instances[i] else { return }
        let deadline = p.nextDeadline
        guard deadline < .distantFuture else { return }
        let d = max(deadline, sim.now)
        if let t = timerAt[i], t <= d { return }
        timerAt[i] = d
        schedule(.timer(node: i), at: d, sim)
    }

    // MARK: SimulatedProtocolHost

    func start(_ sim: Simulator) {
        instances = Array(repeating: nil, count: sim.nodes.count)
        timerAt = Array(repeating: nil, count: sim.nodes.count)
        for i in 0..<sim.nodes.count where sim.nodes[i].up {
            let (p, effects) = env.makeProtocol(node: i, restarted: false, sim: sim)
            instances[i] = p
            carryOut(i, effects, sim)
            scheduleTimer(i, sim)
        }
        env.started(host: self, sim: sim)
    }

    func dispatch(_ ticket: UInt64, _ sim: Simulator) {
        guard let p = pending[ticket] else { return }
        let target = p.target
        guard sim.nodes[target].up else {
            pending[ticket] = nil
            return
        }
        if sim.nodes[target].paused {
            if case .timer = p {
                pending[ticket] = nil
                timerAt[target] = nil
            } else {
                sim.enqueueBacklog(target, .hosted(slot, ticket))
            }
            return
        }
        pending[ticket] = nil
        let channel = Int(P.channel.rawValue)
        switch p {
        case .timer(let i):
            guard timerAt[i] == sim.now, instances[i] != nil else { return }
            timerAt[i] = nil
            sim.mixTrace(7, channel, 1, i)
            let effects = instances[i]!.tick(now: sim.now)
            carryOut(i, effects, sim)
        case .message(let to, let from, let connection, let message):
            guard sim.links.connection(from, to) == connection, instances[to] != nil else {
                stats.messagesLost += 1
                return
            }
            sim.mixTrace(7, channel, 2, to, from)
            let effects = instances[to]!.receive(message, from: Simulator.name(from), now: sim.now)
            carryOut(to, effects, sim)
        case .request(let to, let from, let connection, let message, let id, let requesterLife):
            guard sim.links.connection(from, to) == connection, instances[to] != nil else {
                stats.messagesLost += 1
                return
            }
            nextToken += 1
            owed[nextToken] = OwedAnswer(requester: from, responder: to, id: id, connection: connection, requesterLife: requesterLife)
            sim.mixTrace(7, channel, 3, to, from)
            let effects = instances[to]!.request(message, from: Simulator.name(from), token: RequestToken(rawValue: nextToken), now: sim.now)
            carryOut(to, effects, sim)
        case .response(let to, let from, let connection, let message, let id, let life):
            let key = RequestKey(node: to, id: id.rawValue)
            guard let o = open[key], o.life == life, sim.nodes[to].life == life, !o.failing,
                  sim.links.connection(from, to) == connection, instances[to] != nil else { return }
            open[key] = nil
            stats.responses += 1
            sim.mixTrace(7, channel, 4, to, from)
            let effects = instances[to]!.response(message, to: id, now: sim.now)
            carryOut(to, effects, sim)
        case .requestFailed(let node, let id, let life):
            let key = RequestKey(node: node, id: id.rawValue)
            guard let o = open[key], o.life == life, sim.nodes[node].life == life, instances[node] != nil else { return }
            open[key] = nil
            stats.nilResponses += 1
            sim.mixTrace(7, channel, 5, node)
            let effects = instances[node]!.response(nil, to: id, now: sim.now)
            carryOut(node, effects, sim)
        case .command(let node, let command, let id):
            guard instances[node] != nil else { return }
            stats.commands += 1
            sim.mixTrace(7, channel, 6, node)
            let effects = instances[node]!.command(command, id: id, now: sim.now)
            carryOut(node, effects, sim)
        case .performed(let node, let life, let outcome, let tag):
            guard sim.nodes[node].life == life, instances[node] != nil, env.outcomeIsCurrent(tag: tag, node: node, sim: sim) else { return }
            sim.mixTrace(7, channel, 7, node)
            let effects = instances[node]!.performed(outcome, now: sim.now)
            carryOut(node, effects, sim)
        }
        scheduleTimer(target, sim)
    }

    func membershipChanged(node: Int, _ events: [MembershipEvent], _ sim: Simulator) {
        guard sim.nodes[node].up, instances[node] != nil else { return }
        for e in events {
            stats.membershipEvents += 1
            let effects = instances[node]!.membershipChanged(e, now: sim.now)
            carryOut(node, effects, sim)
        }
        scheduleTimer(node, sim)
    }

    func crashed(_ node: Int, _ sim: Simulator) {
        instances[node] = nil
        timerAt[node] = nil
        open = open.filter { $0.key.node != node }
        owed = owed.filter { $0.value.responder != node }
        env.crashed(node: node, sim: sim)
    }

    func restarted(_ node: Int, _ sim: Simulator) {
        let (p, effects) = env.makeProtocol(node: node, restarted: true, sim: sim)
        instances[node] = p
        timerAt[node] = nil
        carryOut(node, effects, sim)
        scheduleTimer(node, sim)
    }

    func resumed(_ node: Int, _ sim: Simulator) {
        timerAt[node] = nil
        scheduleTimer(node, sim)
    }

    func connectionsBroke(_ sim: Simulator) {
        for key in open.keys.sorted() {
            guard let o = open[key], !o.failing, let c = o.connection, sim.links.connection(key.node, o.peer) != c else { continue }
            open[key]!.failing = true
            schedule(.requestFailed(node: key.node, RequestID(rawValue: key.id), life: o.life), at: sim.now, sim)
        }
    }

    func faultApplied(_ fault: Fault, _ sim: Simulator) { env.faultApplied(fault, sim: sim) }

    var finished: Bool { env.finished }

    func addReport(to report: inout SimulationReport, _ sim: Simulator) { env.addReport(to: &report, host: self, sim: sim) }

    // MARK: Effects

    func carryOut(_ i: Int, _ effects: [ProtocolEffect<P>], _ sim: Simulator) {
        for effect in effects {
            switch effect {
            case .send(let message, let to):
                stats.messages += 1
                guard let j = sim.index[to], let (connection, t) = sim.streamSend(from: i, to: j) else {
                    stats.messagesLost += 1
                    continue
                }
                schedule(.message(to: j, from: i, connection, message), at: t, sim)
            case .request(let message, let to, let id, let timeout):
                stats.requests += 1
                let key = RequestKey(node: i, id: id.rawValue)
                if open[key] != nil { stats.reusedRequestIDs += 1 }
                let life = sim.nodes[i].life
                guard let j = sim.index[to] else {
                    open[key] = OpenRequest(peer: i, connection: nil, life: life, failing: true)
                    schedule(.requestFailed(node: i, id, life: life), at: sim.now, sim)
                    continue
                }
                if let (connection, t) = sim.streamSend(from: i, to: j) {
                    open[key] = OpenRequest(peer: j, connection: connection, life: life)
                    schedule(.request(to: j, from: i, connection, message, id, requesterLife: life), at: t, sim)
                    schedule(.requestFailed(node: i, id, life: life), at: sim.now + max(timeout, .zero), sim)
                } else {
                    open[key] = OpenRequest(peer: j, connection: nil, life: life, failing: true)
                    schedule(.requestFailed(node: i, id, life: life), at: sim.now + min(max(timeout, .zero), Simulator.connectTimeout), sim)
                }
            case .respond(let message, let token):
                guard let o = owed.removeValue(forKey: token.rawValue) else {
                    stats.unknownTokens += 1
                    continue
                }
                guard sim.links.connection(o.responder, o.requester) == o.connection,
                      let (connection, t) = sim.streamSend(from: o.responder, to: o.requester), connection == o.connection else { continue }
                schedule(.response(to: o.requester, from: o.responder, connection, message, o.id, life: o.requesterLife), at: t, sim)
            case .reply(let reply, let id):
                env.replied(reply, to: id, node: i, sim: sim)
            case .perform(let action):
                env.perform(action, node: i, host: self, sim: sim)
            }
        }
    }
}
