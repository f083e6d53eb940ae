import StarlingCore

/// A named fault schedule. `plan` may draw from the run's generator, so the victims differ
/// from seed to seed but never between two runs of one seed.
public struct Scenario: Sendable {
    public struct Plan: Sendable {
        public var faults: [ScheduledFault]
        /// A standing loss rate for the whole run, if any.
        public var loss: Double?
        /// Whether any false positive is a violation (a perfect network and no stalled process).
        public var strictFalsePositives: Bool

        public var lastFaultPeriod: Double { faults.map(\.period).max() ?? 0 }
    }

    public let name: String
    public let summary: String
    let plan: @Sendable (Int, MembershipSettings, inout DeterministicRNG) -> Plan
    /// Hosts the `Swarm` protocol on every node and submits `SimulationConfig.swarm`'s workload.
    public let hostsSwarm: Bool
    /// Hosts the `Sessions` protocol on every node with `SessionEnvironment`'s workload.
    public let hostsSessions: Bool

    init(name: String, summary: String, hostsSwarm: Bool = false, hostsSessions: Bool = false,
         plan: @escaping @Sendable (Int, MembershipSettings, inout DeterministicRNG) -> Plan) {
        self.name = name
        self.summary = summary
        self.hostsSwarm = hostsSwarm
        self.hostsSessions = hostsSessions
        self.plan = plan
    }

    public static func named(_ name: String) -> Scenario? { all.first { $0.name == name } }

    /// Distinct random nodes, never n0 (it stays up as the join seed for restarts).
    static func pick(_ k: Int, of n: Int, _ rng: inout DeterministicRNG) -> [Int] {
        guard n > 1 else { return [] }
        return Array((1..<n).shuffled(using: &rng).prefix(k))
    }

    static func suspicionPeriods(_ s: MembershipSettings, _ n: Int) -> Double {
        Double(s.suspicionTimeouts(members: n).max.nanoseconds) / Double(s.probeInterval.nanoseconds)
    }

    /// Churn: up to six nodes (a third at most) crash one at a time, `gap` periods apart from
    /// period `first`, and each restarts with its data `downFor` × the longest suspicion later.
    static func staggeredRestarts(_ n: Int, _ s: MembershipSettings, _ rng: inout DeterministicRNG,
                                  first: Double, gap: Double, downFor: Double) -> Plan {
        var faults: [ScheduledFault] = []
        let victims = pick(min(6, max(1, n / 3)), of: n, &rng)
        let down = (suspicionPeriods(s, n) * downFor).rounded()
        for (k, v) in victims.enumerated() {
            let t = first + Double(k) * gap
            faults.append(ScheduledFault(t, .crash([v])))
            faults.append(ScheduledFault(t + down, .restart([v])))
        }
        return Plan(faults: faults, loss: nil, strictFalsePositives: true)
    }

    public static let all: [Scenario] = [
        Scenario(name: "steady", summary: "no faults: nobody may be suspected to death") { _, _, _ in
            Plan(faults: [], loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "crash", summary: "one node crashes at period 10") { n, _, rng in
            Plan(faults: [ScheduledFault(10, .crash(pick(1, of: n, &rng)))], loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "mass-crash", summary: "a fifth of the nodes crash at once at period 10") { n, _, rng in
            Plan(faults: [ScheduledFault(10, .crash(pick(max(1, n / 5), of: n, &rng)))], loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "churn", summary: "nodes crash and restart with their data, a few at a time") { n, s, rng in
            staggeredRestarts(n, s, &rng, first: 10, gap: 6, downFor: 0.75)
        },
        Scenario(name: "partition-heal", summary: "the mesh splits in two long enough for each side to declare the other dead, then heals") { n, s, rng in
            let order = Array(0..<n).shuffled(using: &rng)
            let half = n / 2
            let length = (suspicionPeriods(s, n) + 15).rounded()
            return Plan(faults: [ScheduledFault(10, .partition([Array(order[..<half]), Array(order[half...])])),
                                 ScheduledFault(10 + length, .heal)],
                        loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "flapping", summary: "one node's links go down and up every few periods; another loses its outbound link for a while") { n, _, rng in
            let victims = pick(2, of: n, &rng)
            var faults: [ScheduledFault] = []
            if let v = victims.first {
                for k in 0..<5 {
                    faults.append(ScheduledFault(10 + Double(k) * 6, .isolate(v)))
                    faults.append(ScheduledFault(13 + Double(k) * 6, .reconnect(v)))
                }
            }
            if victims.count > 1 {
                let w = victims[1]
                for other in 0..<n where other != w { faults.append(ScheduledFault(12, .cut(from: w, to: other))) }
                for other in 0..<n where other != w { faults.append(ScheduledFault(16, .uncut(from: w, to: other))) }
            }
            return Plan(faults: faults, loss: nil, strictFalsePositives: false)
        },
        Scenario(name: "loss", summary: "10% of datagrams are lost for the whole run; one node crashes at period 10") { n, _, rng in
            Plan(faults: [ScheduledFault(10, .crash(pick(1, of: n, &rng)))], loss: 0.10, strictFalsePositives: false)
        },
        Scenario(name: "slow-node", summary: "one node answers 600 ms late for 40 periods; another stalls for 8 periods") { n, _, rng in
            let victims = pick(2, of: n, &rng)
            var faults: [ScheduledFault] = []
            if let v = victims.first {
                faults += [ScheduledFault(10, .slow(v, .milliseconds(600))), ScheduledFault(50, .unslow(v))]
            }
            if victims.count > 1 {
                faults += [ScheduledFault(20, .pause(victims[1])), ScheduledFault(28, .resume(victims[1]))]
            }
            return Plan(faults: faults, loss: nil, strictFalsePositives: false)
        },
        Scenario(name: "detector", summary: "the failure-detector sweep's workload: 10% loss all run, a node 600 ms slow for periods 10-50, crashes (one, or one every 10 periods from 10 to 50 at N >= 100), then a node stalled for periods 75-83") { n, _, rng in
            let crashes = n >= 100 ? 5 : 1
            let victims = pick(2 + crashes, of: n, &rng)
            var faults: [ScheduledFault] = []
            // The stall comes after the crashes are detected: a stalled node counts as up, and
            // would otherwise hold every crash it slept through alive until it resumes.
            if victims.count > 0 { faults += [ScheduledFault(10, .slow(victims[0], .milliseconds(600))), ScheduledFault(50, .unslow(victims[0]))] }
            if victims.count > 1 { faults += [ScheduledFault(75, .pause(victims[1])), ScheduledFault(83, .resume(victims[1]))] }
            for (k, v) in victims.dropFirst(2).enumerated() { faults.append(ScheduledFault(10 + Double(k) * 10 + 0.37, .crash([v]))) }
            return Plan(faults: faults, loss: 0.10, strictFalsePositives: false)
        },
        Scenario(name: "negative-control", summary: "one node is cut off for good: the checker must report non-convergence (exits 1)") { n, _, rng in
            Plan(faults: pick(1, of: n, &rng).map { ScheduledFault(10, .isolate($0)) }, loss: nil, strictFalsePositives: true)
        },
    ] + swarmScenarios + sessionScenarios
}
