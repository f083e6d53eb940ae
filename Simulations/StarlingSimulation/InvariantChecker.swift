#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
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
/// - Heal of a false positive (a live member declared dead), under standing loss: the member
///   learns of its death the first time it hears from, or is heard by, a member that holds it
///   dead (`tellAccused`): it probes one member a period and is probed by those that still
///   hold it alive, so once the death has spread (O(log N) gossip rounds) each period brings
///   it a tell, lost with probability about 2p at loss p. It refutes, answers the teller
///   straight back, and its `alive` spreads like any update: an epidemic that reaches all N
///   members in about log₂N rounds of gossip (5 rounds a period, fanout 3), with
///   retransmissions for the losses. Bound: `2 × ceil(log₂ N) + 6` periods; the measured max
///   (NOTES.md) is well inside it. The convergence check allows for it: at its deadline, a live
///   member that some member holds dead is a violation only if it was not falsely declared
///   dead within the last heal bound, and every heal must finish within the bound. A default
///   run goes on for the heal bound after the convergence deadline, so that a member let
///   through there is judged too (a false death in those last periods can still end unjudged:
///   `unhealed` counts it).
public struct Bounds: Sendable {
    public let suspicionMaxPeriods: Double
    public let detectionPeriods: Int
    public let convergencePeriods: Int
    public let healPeriods: Int
    /// A member whose last disruption is older than this is expected to be seen alive.
    public let quiet: Duration

    public init(settings: MembershipSettings, nodes: Int) {
        let p = Double(settings.probeInterval.nanoseconds)
        let t = settings.suspicionTimeouts(members: nodes)
        suspicionMaxPeriods = Double(t.max.nanoseconds) / p
        detectionPeriods = Int(suspicionMaxPeriods.rounded(.up)) + 10
        let reconnect = Int((Double(settings.reconnectInterval.nanoseconds) / p).rounded(.up))
        convergencePeriods = detectionPeriods + 3 * reconnect + 5
        healPeriods = 2 * Int(log2(Double(max(2, nodes))).rounded(.up)) + 6
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
    /// From a crash to the first member that suspects (or declares dead) the crashed member.
    var firstSuspicions: [Double] = []
    var suspectedSinceCrash: [Bool]
    /// A false positive's heal: from the first false "dead" until no live member holds the
    /// member dead (`heals`), and until every live member holds it alive (`healsToAlive`).
    var healingSince: [Instant?]
    var aliveHealPending: [Instant?]
    var heals: [Double] = []
    var healsToAlive: [Double] = []
    var reportedSlowHeal: Set<Int> = []
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
        suspectedSinceCrash = Array(repeating: false, count: nodes)
        healingSince = Array(repeating: nil, count: nodes)
        aliveHealPending = Array(repeating: nil, count: nodes)
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
            if healingSince[subject] == nil { healingSince[subject] = now }
            if aliveHealPending[subject] == nil { aliveHealPending[subject] = now }
        }
        if !s.up, crashAt[subject] != nil, !suspectedSinceCrash[subject], to == .suspect || to == .dead {
            suspectedSinceCrash[subject] = true
            firstSuspicions.append(Double((now - crashAt[subject]!).nanoseconds) / Double(period.nanoseconds))
        }
        checkProgress(subject, now: now, period: period, nodes: nodes)
    }

    mutating func checkProgress(_ subject: Int, now: Instant, period: Duration, nodes: [Simulator.SimulatedNode]) {
        if nodes[subject].up, let h = healingSince[subject], seenActive[subject] >= upCount - 1 {
            let took = Double((now - h).nanoseconds) / Double(period.nanoseconds)
            heals.append(took)
            healingSince[subject] = nil
            if took > Double(bounds.healPeriods), !reportedSlowHeal.contains(subject) {
                reportedSlowHeal.insert(subject)
                violation("n\(subject) was falsely declared dead at period \(periods(h, period)) and took \(Int(took.rounded(.up))) periods to heal (bound \(bounds.healPeriods))")
            }
        }
        if nodes[subject].up, let h = aliveHealPending[subject], seenAlive[subject] >= upCount - 1 {
            healsToAlive.append(Double((now - h).nanoseconds) / Double(period.nanoseconds))
            aliveHealPending[subject] = nil
        }
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
        suspectedSinceCrash[i] = false
        healingSince[i] = nil
        aliveHealPending[i] = nil
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
        // Converged but for false positives that are still within their heal bound.
        var convergedButHealing = true
        for i in 0..<n {
            if nodes[i].up {
                // Live: in every live view, as alive or (transiently) suspect; wrong deaths are
                // counted as false positives on their own.
                if seenActive[i] != upCount - 1 {
                    converged = false
                    if healingSince[i].map({ now - $0 > period * bounds.healPeriods }) ?? true { convergedButHealing = false }
                }
                if let h = healingSince[i], now - h > period * bounds.healPeriods, !reportedSlowHeal.contains(i) {
                    reportedSlowHeal.insert(i)
                    violation("n\(i) was falsely declared dead at period \(periods(h, period)) and was still dead at some member \(bounds.healPeriods) periods later")
                }
            } else if seenActive[i] != 0 {
                converged = false
                convergedButHealing = false
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
            if !convergedButHealing {
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
            firstSuspicionPeriods: .init(firstSuspicions), healPeriods: .init(heals), healToAlivePeriods: .init(healsToAlive),
            unhealed: healingSince.compactMap { $0 }.count,
            messagesPerMemberPerPeriod: Double(messages.packets) / memberPeriods,
            bytesPerMemberPerPeriod: Double(messages.bytes) / memberPeriods,
            events: events, eventsPerSecond: wallSeconds > 0 ? Double(events) / wallSeconds : 0, wallSeconds: wallSeconds,
            lifeguard: config.settings.lifeguard, detectionBound: bounds.detectionPeriods, convergenceBound: bounds.convergencePeriods,
            healBound: bounds.healPeriods)
    }
}

/// What `starling-sim --json` prints (field names fixed by interface.md).
public struct SimulationReport: Codable, Sendable, Equatable {
    public struct Distribution: Codable, Sendable, Equatable {
        public var p50: Double
        public var max: Double
        public var count: Int
        /// Every sample, in increasing order: lets a sweep pool the samples of many runs
        /// (the median of the runs' medians is not the median of their samples).
        public var values: [Double]

        init(_ xs: [Double]) {
            let s = xs.sorted()
            p50 = s.isEmpty ? 0 : s[s.count / 2]
            max = s.last ?? 0
            count = s.count
            values = s
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
    /// From each crash to the first member that suspected the crashed node.
    public var firstSuspicionPeriods: Distribution
    /// Each false positive's heal: from the first false "dead" until no live member holds the
    /// member dead; and until every live member holds it alive.
    public var healPeriods: Distribution
    public var healToAlivePeriods: Distribution
    /// False positives still not healed when the run ended.
    public var unhealed: Int
    public var messagesPerMemberPerPeriod: Double
    public var bytesPerMemberPerPeriod: Double
    public var events: Int
    public var eventsPerSecond: Double
    public var wallSeconds: Double
    public var lifeguard: Bool
    public var detectionBound: Int
    public var convergenceBound: Int
    public var healBound: Int
    /// Set by the command, not the simulator (they depend on the machine): building the nodes'
    /// initial state, and the process's peak resident memory.
    public var setupSeconds: Double? = nil
    public var peakMemoryMB: Double? = nil
    /// Probe and suspicion counters summed over the nodes (`Simulator.protocolCounters`).
    public var protocolCounters: [String: Int]? = nil
    /// The swarm scenarios' figures (absent in the others).
    public var swarm: SwarmReport? = nil
    /// The session scenarios' counts (absent in the others).
    public var sessions: [String: Int]? = nil
}
