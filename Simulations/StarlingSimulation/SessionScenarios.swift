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
    ]
}
