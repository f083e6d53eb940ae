import StarlingCore

extension Scenario {
    /// Sessions under crash, churn and partition (issue #11): `SessionEnvironment` checks that no
    /// acknowledged checkpoint is lost, no effect key runs twice and no two epochs record at once.
    static let sessionScenarios: [Scenario] = [
        Scenario(name: "session-crash", summary: "sessions are checkpointed and act while a third of the nodes crash, one at a time", hostsSessions: true) { n, _, rng in
            let victims = pick(max(1, n / 3), of: n, &rng)
            return Plan(faults: victims.enumerated().map { ScheduledFault(8 + Double($0.offset) * 6, .crash([$0.element])) },
                        loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "session-churn", summary: "nodes crash and restart with their store while sessions run", hostsSessions: true) { n, s, rng in
            staggeredRestarts(n, s, &rng, first: 8, gap: 5, downFor: 1.5)
        },
        Scenario(name: "session-partition", summary: "the mesh splits in two while sessions run, long enough for each side to declare the other dead, then heals", hostsSessions: true) { n, s, rng in
            let order = Array(0..<n).shuffled(using: &rng)
            let half = n / 2
            let length = (suspicionPeriods(s, n) + 15).rounded()
            return Plan(faults: [ScheduledFault(10, .partition([Array(order[..<half]), Array(order[half...])])),
                                 ScheduledFault(10 + length, .heal)],
                        loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "session-join", summary: "a fifth of the nodes are down while sessions are created, then join one by one; idle sessions move to them (handoff)", hostsSessions: true) { n, s, rng in
            // Joiners avoid the nodes the workload creates sessions on (1 ... 10).
            let creators = min(10, max(2, n / 2))
            let pool = Array((creators + 1)..<max(creators + 1, n))
            let joiners = Array(pool.shuffled(using: &rng).prefix(max(1, n / 5)))
            var faults = joiners.map { ScheduledFault(0.5, .crash([$0])) }
            let gone = (suspicionPeriods(s, n) * 1.5).rounded()
            for (k, j) in joiners.enumerated() { faults.append(ScheduledFault(8 + gone + Double(k) * 2, .restart([j]))) }
            return Plan(faults: faults, loss: nil, strictFalsePositives: true)
        },
    ]
}
