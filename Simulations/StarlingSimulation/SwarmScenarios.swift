import StarlingCore

/// The workload of the swarm scenarios: how many tasks, how long each runs (virtual time), and
/// what each node offers.
public struct SwarmOptions: Sendable, Equatable {
    /// Tasks over all swarms; nil: 100 per node (10,000 at 100 nodes).
    public var tasks: Int?
    /// Swarms the tasks are split into, each submitted through a different node.
    public var swarms: Int = 4
    /// Each task runs for a duration drawn uniformly from this range, in milliseconds.
    public var taskMilliseconds: ClosedRange<Int> = 1_000...5_000
    public var slots: UInt32 = 4
    public var memoryMB: UInt32 = 4_096
    public var maxAttempts: UInt8 = 3
    /// Share of tasks whose first attempt fails (exit status non-zero): retries on purpose.
    public var failFirstAttempt: Double = 0.01
    /// When the swarms are submitted, in protocol periods from the start.
    public var submitPeriod: Double = 3
    /// Bytes each result carries beyond its text: large results make takeovers' syncs page and
    /// whole transfers chunk (`SwarmLimits.pageBytes`), which small ones never do.
    public var resultPaddingBytes: Int = 0

    public init() {}

    public func taskCount(nodes: Int) -> Int { tasks ?? 100 * nodes }
}

/// What a swarm scenario reports under `swarm` in `starling-sim --json`.
public struct SwarmReport: Codable, Sendable, Equatable {
    public var swarms: Int
    public var swarmsDone: Int
    public var tasks: Int
    public var succeeded: Int
    public var failed: Int
    public var cancelled: Int
    /// Tasks not final in the most advanced store of their swarm when the run ended.
    public var unfinished: Int
    /// Attempts started, and attempts beyond each task's first.
    public var runs: Int
    public var retries: Int
    /// Tasks whose result was recorded more than once (distinct results in final records).
    public var recordedTwice: Int
    /// Tasks that ran on two nodes at once without a partition.
    public var runTwice: Int
    /// The same two counts while a partition had split the mesh (reported, not violations).
    public var tasksRecordedOnBothSides: Int
    public var tasksRunOnBothSides: Int
    /// Most tasks, and most task memory, one node ran at once, against what it offers.
    public var maxRunning: Int
    public var slots: Int
    public var maxMemoryMB: Int
    public var memoryMB: Int
    public var attemptsOverMax: Int
    /// From the first submission until the last swarm was done (0 if one never was).
    public var makespanSeconds: Double
    public var makespanPeriods: Double
    /// Total task time over total slots: the makespan of a perfect scheduler with no faults.
    public var idealMakespanSeconds: Double
    /// Busy slot time over (slots × makespan).
    public var utilisation: Double
    /// Every swarm must be done by this period (the last fault plus the finish bound).
    public var deadlinePeriod: Int
    public var submitted: Int
    public var refused: [String]
    /// The hosted protocol's traffic: messages, requests, responses (nil ones apart), commands.
    public var hosted: [String: Int]
    /// Tasks a node's events stream showed under an id (reign and `finishSeq`, `EventCursor`)
    /// that a stream (on any node) showed for another task before, or under a second number of
    /// the same reign. A violation with or without a partition; the second count is those
    /// after a partition had split the mesh.
    public var eventIdConflicts: Int = 0
    public var eventIdConflictsOnBothSides: Int = 0
    /// Finished tasks a client following one holder's events stream would never be shown, there
    /// or resuming with its last id on another holder (a violation when above 0).
    public var eventsMissed: Int = 0
    /// Tasks such a client was shown a second time, after its node took another side's
    /// numbering (after a partition; the price of missing none).
    public var eventsShownAgain: Int = 0
}

extension Scenario {
    static func swarmSubmitCrashes(_ n: Int, _ rng: inout DeterministicRNG) -> [ScheduledFault] {
        pick(min(3, max(1, n / 10)), of: n, &rng).map { ScheduledFault(15, .crash([$0])) }
    }

    static let swarmScenarios: [Scenario] = [
        Scenario(name: "swarm-steady", summary: "swarms run on a healthy mesh (--tasks, default 100 per node)", hostsSwarm: true) { _, _, _ in
            Plan(faults: [], loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "swarm-crash", summary: "workers crash at period 15 and the owner of the first swarm at its first recorded finish after period 25, mid-swarm", hostsSwarm: true) { n, _, rng in
            Plan(faults: swarmSubmitCrashes(n, &rng) + [ScheduledFault(25, .crashSwarmOwnerAtAFinish(0))], loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "swarm-churn", summary: "nodes leave (crash) and join again with their store while swarms run", hostsSwarm: true) { n, s, rng in
            var faults: [ScheduledFault] = []
            let victims = pick(min(6, max(1, n / 3)), of: n, &rng)
            let down = (suspicionPeriods(s, n) * 1.5).rounded()
            for (k, v) in victims.enumerated() {
                let t = 10 + Double(k) * 4
                faults.append(ScheduledFault(t, .crash([v])))
                faults.append(ScheduledFault(t + down, .restart([v])))
            }
            return Plan(faults: faults, loss: nil, strictFalsePositives: true)
        },
        Scenario(name: "swarm-partition", summary: "the mesh splits in two mid-swarm long enough for each side to declare the other dead, then heals", hostsSwarm: true) { n, s, rng in
            let order = Array(0..<n).shuffled(using: &rng)
            let half = n / 2
            let length = (suspicionPeriods(s, n) + 15).rounded()
            return Plan(faults: [ScheduledFault(15, .partition([Array(order[..<half]), Array(order[half...])])),
                                 ScheduledFault(15 + length, .heal)],
                        loss: nil, strictFalsePositives: true)
        },
    ]
}

/// One swarm the scenario submits.
struct SwarmSubmission {
    var period: Double
    var via: Int
    var draft: SwarmDraft
}

enum SwarmWorkload {
    /// The task payload: the run's virtual duration (8 bytes, little-endian milliseconds), then
    /// one flag byte (bit 0: the first attempt fails).
    static func payload(milliseconds: Int, failFirst: Bool) -> [UInt8] {
        var bytes: [UInt8] = []
        let ms = UInt64(max(0, milliseconds))
        for k in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: ms >> (8 * UInt64(k)))) }
        bytes.append(failFirst ? 1 : 0)
        return bytes
    }

    /// The payload's duration and flag; a short payload runs for no time and succeeds.
    static func decode(_ payload: [UInt8]) -> (duration: Duration, failFirst: Bool) {
        guard payload.count >= 8 else { return (.zero, false) }
        var ms: UInt64 = 0
        for k in 0..<8 { ms |= UInt64(payload[k]) << (8 * UInt64(k)) }
        let bounded = Int64(min(ms, 86_400_000))
        return (.milliseconds(bounded), payload.count > 8 && payload[8] & 1 == 1)
    }

    static func submissions(nodes: Int, options: SwarmOptions, rng: inout DeterministicRNG) -> [SwarmSubmission] {
        let total = options.taskCount(nodes: nodes)
        let swarms = max(1, min(options.swarms, total))
        let vias = Array((0..<nodes).shuffled(using: &rng).prefix(swarms))
        let memoryChoices: [UInt32] = [256, 512, 1_024]
        var out: [SwarmSubmission] = []
        for k in 0..<swarms {
            let count = total / swarms + (k < total % swarms ? 1 : 0)
            var tasks: [SwarmTask] = []
            tasks.reserveCapacity(count)
            for t in 0..<count {
                let ms = Int.random(in: options.taskMilliseconds, using: &rng)
                let failFirst = Double.random(in: 0..<1, using: &rng) < options.failFirstAttempt
                let memory = memoryChoices[Int.random(in: 0..<memoryChoices.count, using: &rng)]
                tasks.append(SwarmTask(id: "t\(t)", needs: TaskNeeds(memoryMB: min(memory, options.memoryMB), milliCPUs: 1_000),
                                       payload: payload(milliseconds: ms, failFirst: failFirst)))
            }
            let draft = SwarmDraft(tasks: tasks, maxAttempts: options.maxAttempts, options: [], parent: nil,
                                   createdAtMs: UInt64(options.submitPeriod * 1_000))
            out.append(SwarmSubmission(period: options.submitPeriod, via: vias[k % max(1, vias.count)], draft: draft))
        }
        return out
    }
}
