import StarlingCore

/// The bounds the invariants are held to, in protocol periods, derived from the settings.
///
/// - Detection: a crashed member is first probed within a few periods (each of the N−1 others
///   probes one member per period, so a given member goes unprobed for a period with probability
///   about 1/e, and for 10 periods about 5·10⁻⁵); its suspicion then lasts at most the Lifeguard
///   maximum; the death then spreads by gossip in O(log N) rounds of 1/5 period. Bound:
///   `ceil(suspicionMax) + 10`.
/// - Convergence after the last fault: a member must first be detected, and after a heal the
///   two sides must find each other through reconnection attempts (every `reconnectInterval`),
///   then refute and gossip: `detection + 3 × reconnect + 5`.
public struct Bounds: Sendable {
    public let suspicionMaxPeriods: Double
    public let detectionPeriods: Int
    public let convergencePeriods: Int
    /// A member whose last disruption is older than this is expected to be seen alive.
    public let quiet: Duration

    public init(settings: MembershipSettings, nodes: Int) {
        let p = Double(settings.probeInterval.nanoseconds)
        let t = settings.suspicionTimeouts(members: nodes)
        suspicionMaxPeriods = Double(t.max.nanoseconds) / p
        detectionPeriods = Int(suspicionMaxPeriods.rounded(.up)) + 10
        let reconnect = Int((Double(settings.reconnectInterval.nanoseconds) / p).rounded(.up))
        convergencePeriods = detectionPeriods + 3 * reconnect + 5
        quiet = t.max + settings.probeInterval * 3
    }
}

/// Watches every member's view as the run goes and holds the invariants.
struct InvariantChecker {
    let n: Int
    let bounds: Bounds
    let strict: Bool
    let lastFaultPeriod: Double
    let recordTimeline: Bool

    /// How many up members see member i as alive, and as alive or suspect.
    var seenAlive: [Int]
    var seenActive: [Int]
    var upCount: Int
    var crashAt: [Instant?]
    var restartAt: [Instant?]
    var lastDisruption: [Instant]
    var detections: [Double] = []
    var disseminations: [Double] = []
    var falsePositives = 0
    /// Suspicions of healthy members (refuted in time or not): what Lifeguard sets out to cut.
    var falseSuspicions = 0
    var violations: [String] = []
    var convergedSince: Int?
    var timeline: [[UInt16]] = []
    var faultMarks: [(Double, String)] = []
    var reportedLate: Set<Int> = []
    var convergenceChecked = false

    init(nodes: Int, bounds: Bounds, strict: Bool, lastFaultPeriod: Double, recordTimeline: Bool) {
        n = nodes
        self.bounds = bounds
        self.strict = strict
        self.lastFaultPeriod = lastFaultPeriod
        self.recordTimeline = recordTimeline
        seenAlive = Array(repeating: nodes - 1, count: nodes)
        seenActive = Array(repeating: nodes - 1, count: nodes)
        upCount = nodes
        crashAt = Array(repeating: nil, count: nodes)
        restartAt = Array(repeating: nil, count: nodes)
        lastDisruption = Array(repeating: Instant(nanoseconds: -1 << 50), count: nodes)
    }

    mutating func violation(_ text: String) {
        if violations.count < 20 { violations.append(text) }
    }

    mutating func count(_ subject: Int, _ status: MemberStatus?, _ sign: Int) {
        guard let status else { return }
        if status == .alive { seenAlive[subject] += sign }
        if status.isActive { seenActive[subject] += sign }
        assert(seenAlive[subject] >= 0 && seenActive[subject] >= 0, "view counts went negative")
    }

    mutating func observe(observer: Int, subject: Int, from: MemberStatus?, to: MemberStatus?, now: Instant, period: Duration,
                          nodes: [Simulator.SimulatedNode], network: SimulatedNetwork) {
        guard observer != subject else { return }
        count(subject, from, -1)
        count(subject, to, +1)
        let s = nodes[subject]
        let healthy = s.up && !s.paused && network.canDeliver(from: observer, to: subject)
            && network.canDeliver(from: subject, to: observer) && now - lastDisruption[subject] > bounds.quiet
        if to == .suspect, from == .alive, healthy { falseSuspicions += 1 }
        if to == .dead, healthy {
            falsePositives += 1
            if strict {
                violation("n\(subject) was live and reachable but n\(observer) declared it dead at period \(periods(now, period))")
            }
        }
        checkProgress(subject, now: now, period: period, nodes: nodes)
    }

    mutating func checkProgress(_ subject: Int, now: Instant, period: Duration, nodes: [Simulator.SimulatedNode]) {
        if !nodes[subject].up, let c = crashAt[subject], seenActive[subject] == 0 {
            detections.append(Double((now - c).nanoseconds) / Double(period.nanoseconds))
            crashAt[subject] = nil
        }
        if nodes[subject].up, let r = restartAt[subject], seenAlive[subject] >= upCount - 1 {
            disseminations.append(Double((now - r).nanoseconds) / Double(period.nanoseconds))
            restartAt[subject] = nil
        }
    }

    mutating func crashed(_ i: Int, view: Membership, now: Instant, nodes: [Simulator.SimulatedNode]) {
        for m in view.members where m.name != view.myName {
            if let subject = Int(m.name.dropFirst()) { count(subject, m.status, -1) }
        }
        upCount -= 1
        crashAt[i] = now
        restartAt[i] = nil
        lastDisruption[i] = now
        reportedLate.remove(i)
    }

    mutating func restarted(_ i: Int, now: Instant, nodes: [Simulator.SimulatedNode]) {
        upCount += 1
        crashAt[i] = nil
        restartAt[i] = now
        lastDisruption[i] = now
    }

    mutating func disrupted(_ list: [Int], now: Instant) {
        for i in list { lastDisruption[i] = now }
    }

    func periods(_ t: Instant, _ period: Duration) -> Int { Int(t.nanoseconds / period.nanoseconds) }

    mutating func sample(now: Instant, period: Duration, nodes: [Simulator.SimulatedNode]) {
        let p = periods(now, period)
        if recordTimeline { timeline.append(seenAlive.map { UInt16(clamping: $0) }) }
        var converged = true
        for i in 0..<n {
            if nodes[i].up {
                // Live: in every live view, as alive or (transiently) suspect; wrong deaths are
                // counted as false positives on their own.
                if seenActive[i] != upCount - 1 { converged = false }
            } else if seenActive[i] != 0 {
                converged = false
            }
            if !nodes[i].up, let c = crashAt[i], now - c > period * bounds.detectionPeriods, !reportedLate.contains(i) {
                reportedLate.insert(i)
                violation("n\(i) crashed at period \(periods(c, period)) but was not dead at every member within \(bounds.detectionPeriods) periods")
            }
        }
        if converged {
            if convergedSince == nil { convergedSince = p }
        } else {
            convergedSince = nil
        }
        let deadline = Int(lastFaultPeriod.rounded(.up)) + bounds.convergencePeriods
        if p == deadline, !convergenceChecked {
            convergenceChecked = true
            if !converged {
                violation("live members had not converged \(bounds.convergencePeriods) periods after the last fault (period \(deadline))")
            }
        }
    }

    func report(scenario: String, config: SimulationConfig, periods: Int, trace: String, events: Int, wallSeconds: Double,
                messages: (packets: Int, bytes: Int)) -> SimulationReport {
        let converged = convergedSince != nil
        let lastFault = Int(lastFaultPeriod.rounded(.up))
        let memberPeriods = Double(n * max(1, periods))
        return SimulationReport(
            scenario: scenario, nodes: n, seed: config.seed, periods: periods, traceHash: trace, violations: violations,
            converged: converged, periodsToConverge: converged ? max(0, convergedSince! - lastFault) : -1,
            falsePositives: falsePositives, falseSuspicions: falseSuspicions,
            detectionPeriods: .init(detections), disseminationPeriods: .init(disseminations),
            messagesPerMemberPerPeriod: Double(messages.packets) / memberPeriods,
            bytesPerMemberPerPeriod: Double(messages.bytes) / memberPeriods,
            events: events, eventsPerSecond: wallSeconds > 0 ? Double(events) / wallSeconds : 0, wallSeconds: wallSeconds,
            lifeguard: config.settings.lifeguard, detectionBound: bounds.detectionPeriods, convergenceBound: bounds.convergencePeriods)
    }
}

/// What `starling-sim --json` prints (field names fixed by interface.md).
public struct SimulationReport: Codable, Sendable, Equatable {
    public struct Distribution: Codable, Sendable, Equatable {
        public var p50: Double
        public var max: Double
        public var count: Int

        init(_ xs: [Double]) {
            let s = xs.sorted()
            p50 = s.isEmpty ? 0 : s[s.count / 2]
            max = s.last ?? 0
            count = s.count
        }
    }

    public var scenario: String
    public var nodes: Int
    public var seed: UInt64
    public var periods: Int
    public var traceHash: String
    public var violations: [String]
    public var converged: Bool
    public var periodsToConverge: Int
    public var falsePositives: Int
    public var falseSuspicions: Int
    public var detectionPeriods: Distribution
    public var disseminationPeriods: Distribution
    public var messagesPerMemberPerPeriod: Double
    public var bytesPerMemberPerPeriod: Double
    public var events: Int
    public var eventsPerSecond: Double
    public var wallSeconds: Double
    public var lifeguard: Bool
    public var detectionBound: Int
    public var convergenceBound: Int
    /// Set by the command, not the simulator (they depend on the machine): building the nodes'
    /// initial state, and the process's peak resident memory.
    public var setupSeconds: Double? = nil
    public var peakMemoryMB: Double? = nil
}
