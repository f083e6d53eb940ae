import StarlingCore

/// How to run one simulation.
public struct SimulationConfig: Sendable {
    public var nodes: Int
    public var seed: UInt64
    /// Length of the run; nil: the scenario's default (its last fault plus the convergence bound).
    public var periods: Int?
    public var settings: MembershipSettings
    public var network: SimulatedNetwork
    /// Keep, for each period, how many members see each member alive (for `--svg`).
    public var recordTimeline: Bool

    /// The swarm scenarios' workload (ignored by the others).
    public var swarm = SwarmOptions()
    /// The session scenarios' number of sessions; nil: max(2, min(10, nodes / 2)).
    public var sessions: Int?

    public init(nodes: Int, seed: UInt64, periods: Int? = nil, settings: MembershipSettings = .lan,
                network: SimulatedNetwork = SimulatedNetwork(), recordTimeline: Bool = false) {
        precondition(nodes >= 1 && nodes <= 20_000)
        self.nodes = nodes
        self.seed = seed
        self.periods = periods
        self.settings = settings
        self.network = network
        self.recordTimeline = recordTimeline
    }
}

/// The deterministic simulator: one thread, a virtual clock, a seeded PRNG and a faulty network,
/// driving the real `Membership` state machine of every node. No socket, sleep, clock read or
/// unseeded randomness is anywhere on its path.
///
/// Other protocols (`HostedProtocol`) are hosted through `ProtocolHost` (ProtocolHost.swift):
/// `register` one per protocol; the clock, the network, the stream links and the fault schedule
/// are shared. With nothing registered the simulator runs exactly as it did before hosting
/// existed (same events, same random draws, same trace hashes).
public final class Simulator {
    enum Event {
        case timer(Int)
        case packet(to: Int, from: Int, Packet)
        case pushPullRequest(to: Int, from: Int, PushPullState, life: Int)
        case pushPullReply(to: Int, PushPullState?, life: Int)
        case fault(Fault)
        case sample
        /// An event of hosted protocol `host`; the host keeps its payload under `ticket`.
        case hosted(Int, UInt64)
    }

    struct SimulatedNode {
        var membership: Membership
        var up = true
        var paused = false
        var slowBy: Duration = .zero
        var timerAt: Instant?
        var backlog: [Event] = []
        var life = 0
    }

    public let config: SimulationConfig
    public let scenario: Scenario
    let period: Duration
    var network: SimulatedNetwork
    var rng: DeterministicRNG
    var queue = EventQueue<Event>()
    var nodes: [SimulatedNode] = []
    var index: [String: Int] = [:]
    var now = Instant.zero
    public internal(set) var trace = TraceHash()
    public private(set) var events = 0
    var checker: InvariantChecker
    let endPeriod: Int
    static let backlogLimit = 4096
    static let connectTimeout: Duration = .seconds(1)
    static let streamTimeout: Duration = .seconds(5)

    // Hosted protocols (empty in the membership-only scenarios).
    var hosts: [any SimulatedProtocolHost] = []
    var links: StreamLinks
    /// Per node, per member index: the view its protocols were last told (`MembershipEvent`s are
    /// the differences between this and the node's membership table).
    var toldViews: [[PeerView?]] = []
    /// Nodes whose table may have changed since their protocols were last told, and which members.
    var membershipDirty: [Int] = []
    var dirtySubjects: [[Int]] = []
    var dirtyAll: [Bool] = []
    /// Membership's own end (its checks' deadlines); a hosting run may go on past it until its
    /// protocols are finished, up to `endPeriod`.
    var membershipEndPeriod = 0
    var swarm: SwarmEnvironment?
    var initialMetadata = MemberMetadata()
    var endedAt = Instant.zero

    public init(scenario: Scenario, config: SimulationConfig) {
        self.scenario = scenario
        self.config = config
        period = config.settings.probeInterval
        rng = DeterministicRNG(seed: config.seed)
        let plan = scenario.plan(config.nodes, config.settings, &rng)
        network = config.network
        links = StreamLinks(nodes: config.nodes)
        if let loss = plan.loss { network.loss = loss }
        let bounds = Bounds(settings: config.settings, nodes: config.nodes)
        // Past the convergence deadline by the heal bound: the deadline lets through a live member
        // that is still dead somewhere if its false death is younger than the heal bound, and
        // only a run that lasts that long after the deadline can tell whether it healed.
        let membershipEnd = config.periods ?? Int(plan.lastFaultPeriod.rounded(.up)) + bounds.convergencePeriods + max(5, bounds.healPeriods + 1)
        var swarmSetup: (SwarmEnvironment, Int)?
        if scenario.hostsSwarm {
            let env = SwarmEnvironment(options: config.swarm, nodes: config.nodes, bounds: bounds, lastFaultPeriod: plan.lastFaultPeriod,
                                       period: config.settings.probeInterval, rng: &rng)
            swarmSetup = (env, env.deadlinePeriod)
            initialMetadata = MemberMetadata(slots: config.swarm.slots, free: config.swarm.slots,
                                             memoryMB: config.swarm.memoryMB, freeMemoryMB: config.swarm.memoryMB)
        }
        var sessionSetup: SessionEnvironment?
        if scenario.hostsSessions {
            sessionSetup = SessionEnvironment(nodes: config.nodes, sessions: config.sessions, lastFaultPeriod: plan.lastFaultPeriod,
                                              convergencePeriods: bounds.convergencePeriods, period: config.settings.probeInterval)
        }
        membershipEndPeriod = membershipEnd
        endPeriod = config.periods ?? max(membershipEnd, swarmSetup?.1 ?? 0, sessionSetup?.deadlinePeriod ?? 0)
        checker = InvariantChecker(nodes: config.nodes, bounds: bounds, strict: plan.strictFalsePositives,
                                   lastFaultPeriod: plan.lastFaultPeriod, recordTimeline: config.recordTimeline)
        checker.faultMarks = plan.faults.map { ($0.period, $0.fault.description) }

        let known = (0..<config.nodes).map {
            Member(name: Self.name($0), address: Self.address($0), incarnation: 0, status: .alive,
                   metadata: metadata(of: $0), statusSince: .zero)
        }
        nodes.reserveCapacity(config.nodes)
        for i in 0..<config.nodes {
            index[Self.name(i)] = i
            let m = Membership(settings: config.settings, name: Self.name(i), address: Self.address(i), metadata: known[i].metadata,
                               seed: rng.next(), now: .zero, knownMembers: known)
            nodes.append(SimulatedNode(membership: m))
        }
        for f in plan.faults { queue.push(.fault(f.fault), at: Instant.zero + period.scaled(by: f.period)) }
        for p in 0...endPeriod { queue.push(.sample, at: Instant.zero + period * p) }
        for i in 0..<config.nodes { scheduleTimer(i) }
        if let (env, _) = swarmSetup {
            swarm = env
            register(ProtocolHost(env))
        }
        if let sessionSetup { register(ProtocolHost(sessionSetup)) }
    }

    /// Hosts a protocol on every node from now on: its instances are made, told every member,
    /// and their timers, messages, requests and commands join the event queue.
    func register(_ host: some SimulatedProtocolHost) {
        if hosts.isEmpty {
            toldViews = Array(repeating: Array(repeating: nil, count: nodes.count), count: nodes.count)
            dirtySubjects = Array(repeating: [], count: nodes.count)
            dirtyAll = Array(repeating: false, count: nodes.count)
        }
        host.attach(slot: hosts.count)
        hosts.append(host)
        host.start(self)
        // A new protocol is told every member its node knows before any other input.
        if hosts.count == 1 {
            for i in 0..<nodes.count where nodes[i].up { markAllDirty(i) }
            flushMembershipEvents()
        } else {
            for i in 0..<nodes.count where nodes[i].up {
                host.membershipChanged(node: i, toldViews[i].compactMap { $0.map { .updated($0) } }, self)
            }
        }
    }

    static func name(_ i: Int) -> String { "n\(i)" }

    /// A node's metadata at start: the scenario's capacity and the node's own identity key. A
    /// restarted node keeps its key, as a real node restarted on its data directory does.
    func metadata(of i: Int) -> MemberMetadata {
        var m = initialMetadata
        m.identityKey = Self.identityKey(i)
        return m
    }

    /// A stand-in for node `i`'s Ed25519 public key: 32 bytes derived from `i` alone (no draw from
    /// the simulation's generator, so adding keys moved no other random choice). Only its size
    /// and its sameness matter here: nothing in the simulator signs.
    static func identityKey(_ i: Int) -> [UInt8] {
        var generator = DeterministicRNG(seed: 0x5eed_1d3e_0000_0000 ^ UInt64(i))
        return (0..<4).flatMap { _ -> [UInt8] in
            let word = generator.next()
            return (0..<8).map { UInt8(truncatingIfNeeded: word >> (8 * UInt64($0))) }
        }
    }
    /// Node i listens at sim:(10000 + i); the port is the index, so lookups cost nothing.
    static func address(_ i: Int) -> NodeAddress { NodeAddress(host: "sim", port: UInt16(10_000 + i)) }
    func nodeIndex(_ a: NodeAddress) -> Int? {
        let i = Int(a.port) - 10_000
        return i >= 0 && i < nodes.count ? i : nil
    }

    /// Runs to the end and returns the report.
    public func run(wallClock: () -> Double = { 0 }) -> SimulationReport {
        let start = wallClock()
        let end = Instant.zero + period * endPeriod
        let membershipEnd = Instant.zero + period * membershipEndPeriod
        var ranPeriods = endPeriod
        while let (t, e) = queue.pop() {
            if t > end { break }
            precondition(t >= now, "time went backwards")
            if !hosts.isEmpty, t > membershipEnd, hosts.allSatisfy(\.finished) {
                ranPeriods = Int((t.nanoseconds - 1) / period.nanoseconds) + 1
                break
            }
            now = t
            events += 1
            dispatch(e)
            if !membershipDirty.isEmpty { flushMembershipEvents() }
        }
        endedAt = now
        let wall = wallClock() - start
        var report = checker.report(scenario: scenario.name, config: config, periods: ranPeriods, trace: trace.hex, events: events,
                                    wallSeconds: wall, messages: totalStats())
        report.protocolCounters = protocolCounters()
        for h in hosts { h.addReport(to: &report, self) }
        report.traceHash = trace.hex
        return report
    }

    /// The probe and suspicion counters of `MembershipStats`, summed over the nodes (a crashed
    /// node's as they stood when it crashed): what the failure-detector sweep explains its
    /// figures with (for example nacks sent against nacks that came in time).
    func protocolCounters() -> [String: Int] {
        var c: [String: Int] = [:]
        for n in nodes {
            let s = n.membership.stats
            let each = ["probesSent": s.probesSent, "probesFailed": s.probesFailed, "pingReqsSent": s.pingReqsSent,
                        "nacksSent": s.nacksSent, "nacksReceived": s.nacksReceived, "suspicionsRaised": s.suspicionsRaised,
                        "refutations": s.refutations, "deathsDeclared": s.deathsDeclared, "urgentProbes": s.urgentProbes,
                        "accusationsTold": s.accusationsTold, "catchUpsAsked": s.catchUpsAsked,
                        "catchUpChainsSent": s.catchUpChainsSent, "identityConflicts": s.identityConflicts]
            c.merge(each, uniquingKeysWith: +)
        }
        return c
    }

    func totalStats() -> (packets: Int, bytes: Int) {
        var packets = 0
        for n in nodes { packets += n.membership.stats.packetsSent }
        return (packets, bytesSent)
    }

    var bytesSent = 0

    // MARK: Events

    func dispatch(_ e: Event) {
        switch e {
        case .timer(let i):
            guard nodes[i].up, nodes[i].timerAt == now else { return }
            nodes[i].timerAt = nil
            if nodes[i].paused { return }
            trace.mix(1); trace.mix(i); trace.mix(Int(now.nanoseconds))
            carryOut(i, nodes[i].membership.tick(now: now))
            scheduleTimer(i)
        case .packet(let to, let from, let packet):
            guard nodes[to].up else { return }
            if nodes[to].paused { return enqueueBacklog(to, e) }
            trace.mix(2); trace.mix(to); trace.mix(from); trace.mix(packet.encodedSize)
            if !hosts.isEmpty { markGossipedMembers(to, packet) }
            carryOut(to, nodes[to].membership.receive(packet, from: Self.address(from), now: now))
            scheduleTimer(to)
        case .pushPullRequest(let to, let from, let state, let life):
            guard nodes[to].up else {
                return queue.push(.pushPullReply(to: from, nil, life: life), at: now + Self.connectTimeout)
            }
            if nodes[to].paused {
                return queue.push(.pushPullReply(to: from, nil, life: life), at: now + Self.streamTimeout)
            }
            trace.mix(3); trace.mix(to); trace.mix(from)
            let (reply, directives) = nodes[to].membership.servePushPull(state, now: now)
            if !hosts.isEmpty { markAllDirty(to) }
            carryOut(to, directives)
            scheduleTimer(to)
            if network.canDeliver(from: to, to: from) {
                queue.push(.pushPullReply(to: from, reply, life: life), at: now + network.latency(using: &rng) + slowness(to, from))
            } else {
                queue.push(.pushPullReply(to: from, nil, life: life), at: now + Self.streamTimeout)
            }
        case .pushPullReply(let to, let state, let life):
            guard nodes[to].up, nodes[to].life == life else { return }
            if nodes[to].paused { return enqueueBacklog(to, e) }
            trace.mix(4); trace.mix(to); trace.mix(state == nil ? 0 : 1)
            carryOut(to, nodes[to].membership.completePushPull(state, now: now))
            if !hosts.isEmpty { markAllDirty(to) }
            scheduleTimer(to)
        case .fault(let f):
            trace.mix(5); trace.mix(f.description)
            apply(f)
        case .sample:
            checker.sample(now: now, period: period, nodes: nodes)
        case .hosted(let h, let ticket):
            hosts[h].dispatch(ticket, self)
        }
    }

    func enqueueBacklog(_ i: Int, _ e: Event) {
        if nodes[i].backlog.count < Self.backlogLimit { nodes[i].backlog.append(e) }
    }

    func slowness(_ a: Int, _ b: Int) -> Duration { nodes[a].slowBy + nodes[b].slowBy }

    func scheduleTimer(_ i: Int) {
        guard nodes[i].up else { return }
        let d = max(nodes[i].membership.nextDeadline, now)
        if let t = nodes[i].timerAt, t <= d { return }
        nodes[i].timerAt = d
        queue.push(.timer(i), at: d)
    }

    /// Carries out a node's directives on the simulated network.
    func carryOut(_ i: Int, _ directives: [MembershipDirective]) {
        for d in directives {
            switch d {
            case .send(let packet, let to):
                bytesSent += packet.encodedSize + 53  // the runtime's envelope overhead
                guard let j = nodeIndex(to), network.canDeliver(from: i, to: j) else { continue }
                if network.loss > 0, Double.random(in: 0..<1, using: &rng) < network.loss { continue }
                let copies = network.duplication > 0 && Double.random(in: 0..<1, using: &rng) < network.duplication ? 2 : 1
                for _ in 0..<copies {
                    queue.push(.packet(to: j, from: i, packet), at: now + network.latency(using: &rng) + slowness(i, j))
                }
            case .pushPull(let state, let to):
                guard let j = nodeIndex(to), network.canDeliver(from: i, to: j) else {
                    queue.push(.pushPullReply(to: i, nil, life: nodes[i].life), at: now + Self.connectTimeout)
                    continue
                }
                queue.push(.pushPullRequest(to: j, from: i, state, life: nodes[i].life),
                           at: now + network.latency(using: &rng) + slowness(i, j))
            case .changed(let c):
                trace.mix(6); trace.mix(i); trace.mix(c.name); trace.mix(Int(c.to?.rawValue ?? 9))
                guard let subject = index[c.name] else { continue }
                if !hosts.isEmpty { markDirty(i, subject) }
                checker.observe(observer: i, subject: subject, from: c.from, to: c.to, now: now, period: period,
                                nodes: nodes, network: network)
            }
        }
    }

    // MARK: Faults

    func apply(_ f: Fault) {
        switch f {
        case .crash(let list):
            for i in list where nodes[i].up {
                nodes[i].up = false
                nodes[i].paused = false
                nodes[i].backlog = []
                nodes[i].timerAt = nil
                checker.crashed(i, view: nodes[i].membership, now: now, nodes: nodes)
                if !hosts.isEmpty {
                    links.breakConnections(of: i)
                    for h in hosts { h.crashed(i, self) }
                }
            }
            for h in hosts { h.connectionsBroke(self) }
        case .restart(let list):
            for i in list where !nodes[i].up {
                var m = Membership(settings: config.settings, name: Self.name(i), address: Self.address(i),
                                   metadata: metadata(of: i), seed: rng.next(), now: now)
                let live = (0..<nodes.count).filter { nodes[$0].up && $0 != i }
                let seeds = live.isEmpty ? [] : [Self.address(live[Int.random(in: 0..<live.count, using: &rng)])]
                let joinDirectives = m.join(seeds: seeds, now: now)
                nodes[i] = SimulatedNode(membership: m, life: nodes[i].life + 1)
                checker.restarted(i, now: now, nodes: nodes)
                carryOut(i, joinDirectives)
                scheduleTimer(i)
                if !hosts.isEmpty {
                    toldViews[i] = Array(repeating: nil, count: nodes.count)
                    for h in hosts { h.restarted(i, self) }
                    markAllDirty(i)
                }
            }
        case .pause(let i):
            nodes[i].paused = true
            checker.disrupted([i], now: now)
        case .resume(let i):
            guard nodes[i].up, nodes[i].paused else { return }
            nodes[i].paused = false
            let backlog = nodes[i].backlog
            nodes[i].backlog = []
            for e in backlog { dispatch(e) }
            nodes[i].timerAt = nil
            scheduleTimer(i)
            for h in hosts { h.resumed(i, self) }
            checker.disrupted([i], now: now)
        case .slow(let i, let d):
            nodes[i].slowBy = d
        case .unslow(let i):
            nodes[i].slowBy = .zero
        case .partition(let groups):
            var g = Array(repeating: 0, count: nodes.count)
            for (k, members) in groups.enumerated() { for i in members { g[i] = k } }
            network.groups = g
            checker.disrupted(Array(0..<nodes.count), now: now)
            if !hosts.isEmpty { breakConnectionsThatCannotDeliver() }
        case .heal:
            network.groups = nil
            checker.disrupted(Array(0..<nodes.count), now: now)
        case .cut(let a, let b):
            network.cuts.insert(.init(from: a, to: b))
            checker.disrupted([a, b], now: now)
            if !hosts.isEmpty { breakConnectionsThatCannotDeliver() }
        case .uncut(let a, let b):
            network.cuts.remove(.init(from: a, to: b))
            checker.disrupted([a, b], now: now)
        case .isolate(let i):
            for j in 0..<nodes.count where j != i {
                network.cuts.insert(.init(from: i, to: j))
                network.cuts.insert(.init(from: j, to: i))
            }
            checker.disrupted([i], now: now)
            if !hosts.isEmpty { breakConnectionsThatCannotDeliver() }
        case .reconnect(let i):
            network.cuts = network.cuts.filter { $0.from != i && $0.to != i }
            checker.disrupted([i], now: now)
        case .setLoss(let p):
            network.loss = p
        case .crashSwarmOwner(let k):
            if let owner = swarm?.currentOwner(of: k, self) { apply(.crash([owner])) }
        }
        for h in hosts { h.faultApplied(f, self) }
    }
}
