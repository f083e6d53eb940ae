import Foundation
import Glibc
import StarlingCore
import Synchronization
import Testing

/// A swarm across a 2|3 partition and its heal, on the fault rig (real `starling node`s in network
/// namespaces, nftables drops; root only, like `FaultRigTests`).
///
/// The split puts the swarm's owner on the 2-side with a node that holds no replica, and the two
/// other replicas on the 3-side: each side then has an acting owner (the 3-side's second replica
/// takes over with a higher epoch) and runs the swarm; after the heal the first replica owns again
/// and merges (core's notes, "Under a partition"). The test checks what must hold whatever the
/// split did: each task ends with exactly one result, its own output, announced by exactly one
/// `task` event; no node ever runs more than its slots; and the swarm finishes after the heal.
///
/// What it observes of runs on both sides: a result shows only its recorded attempt, so runs are
/// also watched from outside, by sampling `/proc` every ~50 ms for the tasks' shells and walking
/// each one's parents up to the node process that started it. A run shorter than a sampling gap
/// can be missed (tasks sleep 0.3-1 s, so few are), never invented.
@Suite("Fault rig: a swarm across a 2|3 partition and its heal", .serialized,
       .enabled(if: FaultRig.unavailableReason == nil || FaultRig.mustRun,
                Comment(rawValue: FaultRig.unavailableReason ?? "")))
struct SwarmPartitionTests {
    static let taskCount = 200
    static let slots = 2
    /// How long the partition stays after each side lists the other dead: long enough for both
    /// sides to run tasks as the swarm's owner of their side.
    static let heldAfterDeath: Double = 6

    @Test func aSwarmAcrossATwoThreePartitionRecordsEachResultOnceWithinSlots() throws {
        let rig = try FaultRig(nodes: 5)
        defer { rig.down() }
        try rig.startAll(seconds: 60)
        let api = RigAPI(rig: rig)
        let all = rig.nodeNames
        let pids = try rig.status().members.reduce(into: [Int32: String]()) { map, m in if let pid = m.pid { map[pid] = m.node } }
        #expect(pids.count == all.count, "every node has a PID: \(pids)")

        let tag = "pt" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let tokens = (0..<Self.taskCount).map { "\(tag)-\($0)" }
        let sampler = RunSampler(tag: tag, nodePIDs: pids, slots: Self.slots)
        sampler.start()
        defer { sampler.stop() }

        let (id, owner) = try api.submit(Self.spec(tokens: tokens), through: "n2")
        // The replica set: the ring's preference list from the owner on (every member is up and
        // takes work, so the entry's candidates are this list).
        let candidates = SwarmRing(members: all).preferenceList(id, count: 5)
        let ownerIndex = try #require(candidates.firstIndex(of: owner), "owner \(owner) not in \(candidates)")
        let replicas = Array(candidates[ownerIndex...].prefix(3))
        let others = all.filter { !replicas.contains($0) }
        let ownerSide = [owner, others[0]].sorted()
        let otherSide = all.filter { !ownerSide.contains($0) }

        try api.waitUntil("a quarter of the tasks succeeded", swarm: id, seconds: 120, through: "n2") {
            ($0["succeeded"] as? Int ?? 0) >= Self.taskCount / 4
        }
        let atPartition = api.counts(id, through: owner)?["succeeded"] as? Int ?? -1
        let partitionedAt = RunSampler.now()
        try rig.partition(ownerSide, otherSide)
        do {
            try rig.waitUntil("each side lists the other dead (owner side \(ownerSide), other side \(otherSide))", seconds: 60) {
                rig.allSee(otherSide, as: "dead", by: ownerSide) && rig.allSee(ownerSide, as: "dead", by: otherSide)
            }
        } catch {
            throw StartFailed(description: "\(error)\n" + all.map { "--- \($0) log tail:\n\(rig.log(of: $0))" }.joined(separator: "\n"))
        }
        let detectedAfter = Double(RunSampler.now() - partitionedAt) / 1e9
        Thread.sleep(forTimeInterval: Self.heldAfterDeath)
        // What each side has recorded by the end of the partition (through its own nodes).
        let ownerSideView = api.counts(id, through: owner)
        let otherSideView = api.counts(id, through: replicas[1])
        // A client following the events through the owner's side (which numbers its own
        // finishes, and whose numbering loses the merge) until the heal.
        let followedBeforeHeal = api.events(id, through: owner, lastEventId: nil, seconds: 3)
        let healedAt = RunSampler.now()
        try rig.heal()

        try rig.waitUntil("all five list all five alive after the heal", seconds: 120) { rig.allSee(all, as: "alive", by: all) }
        var finalCounts: [String: [String: Any]] = [:]
        for node in all {
            try api.waitUntil("the swarm is done through \(node)", swarm: id, seconds: 300, through: node) { counts in
                finalCounts[node] = counts
                return counts["state"] as? String != "running" && (counts["running"] as? Int ?? 1) == 0
            }
        }
        let finishedAt = RunSampler.now()
        sampler.stop()

        for (node, counts) in finalCounts.sorted(by: { $0.key < $1.key }) {
            #expect(counts["state"] as? String == "done", "through \(node): \(counts)")
            #expect(counts["succeeded"] as? Int == Self.taskCount, "through \(node): \(counts)")
        }

        // Each task: exactly one result, succeeded, its own token between two timestamps.
        let tasks = try api.tasks(id, total: Self.taskCount, through: "n2")
        var intervals: [String: [(start: Int64, end: Int64, token: String)]] = [:]
        var seen = Set<String>()
        var retried = 0, retriedOnOtherSide = 0, resultsOnOwnerSide = 0
        for task in tasks {
            let token = task["id"] as? String ?? "?"
            #expect(seen.insert(token).inserted, "task \(token) listed twice")
            #expect(task["state"] as? String == "succeeded", "task \(token): \(task)")
            let result = task["result"] as? [String: Any] ?? [:]
            let lines = (result["stdout"] as? String ?? "").split(separator: "\n").map(String.init)
            guard lines.count == 3, lines[1] == token, let start = Int64(lines[0]), let end = Int64(lines[2]) else {
                Issue.record("task \(token) printed \(String(describing: result["stdout"]))")
                continue
            }
            let node = result["node"] as? String ?? "?"
            intervals[node, default: []].append((start, end, token))
            if ownerSide.contains(node) { resultsOnOwnerSide += 1 }
            if (result["attempts"] as? Int ?? 1) > 1 {
                retried += 1
                if !ownerSide.contains(node) { retriedOnOtherSide += 1 }
            }
        }
        #expect(seen == Set(tokens), "tasks lost: \(Set(tokens).subtracting(seen).sorted().prefix(10))")

        // One `task` event per task, through a node of each side: no result recorded twice.
        var eventCounts: [String: Int] = [:]
        for node in [owner, replicas[1]] {
            let events = try api.eventTaskIds(id, through: node)
            let repeated = Dictionary(events.map { ($0, 1) }, uniquingKeysWith: +).filter { $0.value > 1 }
            #expect(events.count == Self.taskCount, "through \(node): \(events.count) task events")
            #expect(repeated.isEmpty, "through \(node): tasks announced twice: \(repeated.sorted { $0.key < $1.key }.prefix(10))")
            #expect(Set(events) == Set(tokens), "through \(node): events miss \(Set(tokens).subtracting(events).sorted().prefix(10))")
            eventCounts[node] = events.count
        }

        // That client resumes after the heal with the last id it had, through either side: it
        // misses no task (it may be shown some again: its side's numbers above the fork).
        let lastBeforeHeal = followedBeforeHeal.last?.id
        #expect(!followedBeforeHeal.isEmpty, "the owner's side showed no event during the partition")
        var shownAgain: [String: Int] = [:]
        for node in [owner, replicas[1]] {
            let resumed = api.events(id, through: node, lastEventId: lastBeforeHeal, seconds: 60)
            let before = Set(followedBeforeHeal.map(\.task))
            let missing = Set(tokens).subtracting(before).subtracting(resumed.map(\.task))
            #expect(missing.isEmpty, "resumed after \(lastBeforeHeal ?? "-") through \(node): never shown \(missing.sorted().prefix(10)) (\(missing.count))")
            shownAgain[node] = resumed.filter { before.contains($0.task) }.count
        }

        // Within slots, from the recorded runs: a run's timestamps lie inside the time its slot
        // was held (taken before the sandbox starts, freed after it exits) and the nodes share one
        // clock, so more than `slots` overlapping intervals on a node is a real over-slot run.
        var recordedMax: [String: Int] = [:]
        for (node, runs) in intervals {
            let (peak, at) = Self.maxOverlap(runs.map { ($0.start, $0.end) })
            recordedMax[node] = peak
            let overlapping = runs.filter { $0.start <= at && at <= $0.end }.map(\.token)
            #expect(peak <= Self.slots, "\(node) ran \(peak) recorded tasks at once: \(overlapping)")
        }
        // ... and from every run, recorded or not, as sampled.
        let observed = sampler.report()
        var resultOf: [String: [String: Any]] = [:]
        for task in tasks { if let token = task["id"] as? String { resultOf[token] = task["result"] as? [String: Any] } }
        for (node, peak) in observed.maxConcurrent {
            let seconds = { (t: Int64) in Self.rounded(Double(peak.at - t) / 1e9) }
            let detail = peak.tokens.map { token in
                let r = resultOf[token] ?? [:]
                return "\(token) (recorded on \(r["node"] ?? "?"), attempts \(r["attempts"] ?? "?"), seen on \(observed.nodesByToken[token]?.sorted() ?? []))"
            }
            #expect(peak.count <= Self.slots,
                    """
                    \(node) was seen running \(peak.count) tasks at once, \(seconds(partitionedAt)) s after the partition,                     \(seconds(healedAt)) s after the heal, in \(observed.overSlotSamples[node] ?? 0) samples: \(detail)
                    """)
        }
        let ranOnBothSides = observed.nodesByToken.filter { _, nodes in
            !nodes.isDisjoint(with: ownerSide) && !nodes.isDisjoint(with: otherSide)
        }.keys.sorted()
        let ranOnTwoNodes = observed.nodesByToken.filter { $0.value.count > 1 }.count
        let unobserved = Set(tokens).subtracting(observed.nodesByToken.keys).count

        var report: [String: Any] = [:]
        report["swarm"] = id
        report["owner"] = owner
        report["replicas"] = replicas
        report["ownerSide"] = ownerSide
        report["otherSide"] = otherSide
        report["succeededAtPartition"] = atPartition
        report["deadDetectedAfterSeconds"] = Self.rounded(detectedAfter)
        report["partitionSeconds"] = Self.rounded(Double(healedAt - partitionedAt) / 1e9)
        let healCounts: [String: Any] = ["ownerSide": ownerSideView?["succeeded"] ?? NSNull(),
                                         "otherSide": otherSideView?["succeeded"] ?? NSNull()]
        report["succeededAtHeal"] = healCounts
        report["doneAfterHealSeconds"] = Self.rounded(Double(finishedAt - healedAt) / 1e9)
        report["resultsByNode"] = intervals.mapValues(\.count)
        report["resultsOnOwnerSide"] = resultsOnOwnerSide
        report["attemptsOverOne"] = retried
        report["attemptsOverOneRecordedOnOtherSide"] = retriedOnOtherSide
        report["eventsPerNode"] = eventCounts
        report["eventsFollowedOnOwnerSideBeforeHeal"] = followedBeforeHeal.count
        report["lastEventIdBeforeHeal"] = lastBeforeHeal ?? NSNull()
        report["eventsShownAgainOnResume"] = shownAgain
        report["maxConcurrentRecorded"] = recordedMax
        report["maxConcurrentSampled"] = observed.maxConcurrent.mapValues(\.count)
        report["overSlotSamples"] = observed.overSlotSamples
        report["samples"] = observed.samples
        report["tasksNeverSampled"] = unobserved
        report["tasksSampledOnTwoNodes"] = ranOnTwoNodes
        report["tasksRunOnBothSides"] = ranOnBothSides.count
        report["tasksRunOnBothSidesExamples"] = Array(ranOnBothSides.prefix(5))
        let line = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print("swarm-partition: " + String(decoding: line, as: UTF8.self))
        #expect(observed.samples > 50, "the /proc sampler ran \(observed.samples) times")
    }

    /// Tasks that print the time they start, their token, and the time they end; 0.3-1 s each.
    static func spec(tokens: [String]) -> [String: Any] {
        let tasks: [[String: Any]] = tokens.enumerated().map { i, token in
            let sleep = 0.3 + Double(i % 8) * 0.1
            return ["id": token, "argv": ["sh", "-c", "date +%s%N; sleep \(sleep); echo \(token); date +%s%N"],
                    "timeoutSeconds": 60, "memoryMB": 64]
        }
        return ["tasks": tasks, "maxAttempts": 3]
    }

    /// The largest number of intervals that overlap at one instant, and an instant where they do.
    static func maxOverlap(_ intervals: [(Int64, Int64)]) -> (Int, Int64) {
        // Starts before ends at the same instant: touching intervals count as overlapping.
        var edges: [(time: Int64, kind: Int)] = []
        for (start, end) in intervals {
            edges.append((start, 0))
            edges.append((end, 1))
        }
        edges.sort { a, b in a.time != b.time ? a.time < b.time : a.kind < b.kind }
        var open = 0, peak = 0, at: Int64 = 0
        for (time, kind) in edges {
            open += kind == 0 ? 1 : -1
            if open > peak { peak = open; at = time }
        }
        return (peak, at)
    }

    static func rounded(_ x: Double) -> Double { (x * 10).rounded() / 10 }
}

/// The nodes' HTTP API as a client in the rig's hub sees it (curl run in the hub namespace).
struct RigAPI {
    let rig: FaultRig

    /// Status and body of one request to `node` (status 0 when it did not answer).
    func call(_ method: String, _ path: String, on node: String, bodyFile: String? = nil, seconds: Int = 30) -> (Int, Data) {
        guard let api = try? rig.addresses(of: node).api else { return (0, Data()) }
        var args = ["curl", "-s", "--max-time", "\(seconds)", "-X", method, "-w", "\n%{http_code}"]
        if let bodyFile { args += ["-H", "content-type: application/json", "--data-binary", "@" + bodyFile] }
        guard let out = try? rig.run(in: "hub", args + ["http://\(api)\(path)"]),
              let cut = out.lastIndex(of: "\n"), let status = Int(out[out.index(after: cut)...]) else { return (0, Data()) }
        return (status, Data(out[..<cut].utf8))
    }

    func submit(_ spec: [String: Any], through node: String) throws -> (id: String, owner: String) {
        let file = NSTemporaryDirectory() + "swarm-\(UUID().uuidString.prefix(8)).json"
        try JSONSerialization.data(withJSONObject: spec).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let (status, body) = call("POST", "/v1/swarms", on: node, bodyFile: file, seconds: 60)
        let object = jsonObject(body)
        guard status == 202, let id = object["id"] as? String, let owner = object["owner"] as? String else {
            throw StartFailed(description: "POST /v1/swarms: \(status) \(String(decoding: body, as: UTF8.self))")
        }
        return (id, owner)
    }

    func counts(_ id: String, through node: String) -> [String: Any]? {
        let (status, body) = call("GET", "/v1/swarms/\(id)?tasks=false", on: node, seconds: 10)
        return status == 200 ? jsonObject(body) : nil
    }

    /// Polls the swarm's counts through `node` until `condition` holds for them.
    func waitUntil(_ what: String, swarm id: String, seconds: Double, through node: String,
                   _ condition: ([String: Any]) -> Bool) throws {
        var last: [String: Any]?
        do {
            try IntegrationTests.waitUntil(what, seconds: seconds) {
                last = counts(id, through: node) ?? last
                return last.map(condition) ?? false
            }
        } catch let timeout as TimedOut {
            throw TimedOut(description: "\(timeout.description) (last counts: \(String(describing: last)))\n\(rig.describeViews())")
        }
    }

    func tasks(_ id: String, total: Int, through node: String) throws -> [[String: Any]] {
        var all: [[String: Any]] = []
        while all.count < total {
            let (status, body) = call("GET", "/v1/swarms/\(id)?offset=\(all.count)&limit=100", on: node)
            guard status == 200, let page = jsonObject(body)["tasks"] as? [[String: Any]], !page.isEmpty else {
                throw StartFailed(description: "GET page at \(all.count): \(status) \(String(decoding: body.prefix(500), as: UTF8.self))")
            }
            all += page
        }
        return all
    }

    /// The (event id, task id) of the swarm's `task` events through `node`, after `lastEventId`,
    /// for at most `seconds` (a stream of a running swarm does not end: what came by then).
    func events(_ id: String, through node: String, lastEventId: String?, seconds: Int) -> [(id: String, task: String)] {
        guard let api = try? rig.addresses(of: node).api else { return [] }
        var curl = "curl -s -N --max-time \(seconds)"
        if let lastEventId { curl += " -H 'Last-Event-ID: \(lastEventId)'" }
        // curl ends non-zero at --max-time; what it printed is the answer.
        guard let out = try? rig.run(in: "hub", ["sh", "-c", curl + " http://\(api)/v1/swarms/\(id)/events; true"]) else { return [] }
        var events: [(String, String)] = []
        for block in out.components(separatedBy: "\n\n").dropLast() {
            var eventId: String?
            var task: String?
            for line in block.split(separator: "\n") {
                if line.hasPrefix("id:") { eventId = line.dropFirst(3).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("data:"), block.contains("event: task"),
                   let data = line.dropFirst(5).trimmingCharacters(in: .whitespaces).data(using: .utf8) {
                    task = jsonObject(data)["id"] as? String
                }
            }
            if let eventId, let task { events.append((eventId, task)) }
        }
        return events
    }

    /// The task ids of the swarm's `task` events, read to the end of the stream.
    func eventTaskIds(_ id: String, through node: String) throws -> [String] {
        let (status, body) = call("GET", "/v1/swarms/\(id)/events", on: node, seconds: 60)
        guard status == 200 else { throw StartFailed(description: "events through \(node): \(status)") }
        return taskIdsOfEvents(body)
    }
}

/// Watches the tasks' processes from outside: every ~50 ms it finds the shells whose command line
/// holds a token of this swarm and the node process each descends from, and keeps, per node, the
/// most tasks seen running at one instant and, per token, every node seen running it. A task's
/// process lives inside the time its slot is held (taken before the sandbox starts, freed after
/// the run is reported), so more than `slots` of them alive at once on a node is an over-slot run.
final class RunSampler: Sendable {
    struct Report {
        var samples = 0
        var maxConcurrent: [String: (count: Int, tokens: [String], at: Int64)] = [:]
        /// Samples in which a node ran more than `slots` tasks, by node.
        var overSlotSamples: [String: Int] = [:]
        var nodesByToken: [String: Set<String>] = [:]
    }

    let tag: String
    let nodePIDs: [Int32: String]
    let slots: Int
    private let state = Mutex<(report: Report, running: Bool)>((Report(), false))
    private let finished = DispatchSemaphore(value: 0)

    init(tag: String, nodePIDs: [Int32: String], slots: Int) {
        self.tag = tag
        self.slots = slots
        self.nodePIDs = nodePIDs
    }

    static func now() -> Int64 {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
    }

    func start() {
        state.withLock { $0.running = true }
        let thread = Thread { [self] in
            while state.withLock({ $0.running }) {
                let running = sample()
                let at = Self.now()
                state.withLock { s in
                    s.report.samples += 1
                    for (node, tokens) in running {
                        if tokens.count > s.report.maxConcurrent[node]?.count ?? 0 {
                            s.report.maxConcurrent[node] = (tokens.count, tokens.sorted(), at)
                        }
                        if tokens.count > slots { s.report.overSlotSamples[node, default: 0] += 1 }
                        for token in tokens { s.report.nodesByToken[token, default: []].insert(node) }
                    }
                }
                usleep(50_000)
            }
            finished.signal()
        }
        thread.name = "run-sampler"
        thread.start()
    }

    /// Stops sampling and waits for the last sample (idempotent).
    func stop() {
        let wasRunning = state.withLock { s in defer { s.running = false }; return s.running }
        if wasRunning { finished.wait() }
    }

    func report() -> Report { state.withLock { $0.report } }

    /// The tokens running now, by node. A scan of /proc is not an instant (tens of ms on a busy
    /// machine): a task that ends early in the scan and the next one, started in its slot later
    /// in the same scan, would both be counted. So every process found is checked again after
    /// the scan (same PID, same start time, not a zombie, same command line): each one kept was
    /// alive from its first sighting to its second, and so all those kept were alive together at
    /// the latest first sighting.
    private func sample() -> [String: Set<String>] {
        struct Found { var pid: Int32; var started: String; var token: String; var node: String }
        var found: [Found] = []
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [:] }
        for entry in entries {
            guard let pid = Int32(entry), let argv = Self.read("/proc/\(pid)/cmdline") else { continue }
            // The task's shell: `sh -c "date ...; sleep S; echo TOKEN; date ..."`.
            guard argv.contains(tag + "-"), argv.contains("\0-c\0") else { continue }
            let words = argv.split(whereSeparator: { $0 == "\0" || $0 == " " || $0 == ";" })
            guard let token = words.first(where: { $0.hasPrefix(tag + "-") }), let started = Self.liveStartTime(pid),
                  let node = nodeOf(pid) else { continue }
            found.append(Found(pid: pid, started: started, token: String(token), node: node))
        }
        var running: [String: Set<String>] = [:]
        for f in found where Self.liveStartTime(f.pid) == f.started && Self.read("/proc/\(f.pid)/cmdline")?.contains(f.token) == true {
            running[f.node, default: []].insert(f.token)
        }
        return running
    }

    /// A process's start time (field 22 of its stat), nil once it is gone or a zombie.
    private static func liveStartTime(_ pid: Int32) -> String? {
        guard let stat = read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3), so field 22 is fields[19].
        guard fields.count > 19, fields[0] != "Z", fields[0] != "X" else { return nil }
        return String(fields[19])
    }

    /// The node process `pid` descends from, if any (parents walked up to 32 levels).
    private func nodeOf(_ pid: Int32) -> String? {
        var current = pid
        for _ in 0..<32 {
            if let node = nodePIDs[current] { return node }
            guard let stat = Self.read("/proc/\(current)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
            // After "pid (comm)": " state ppid ...".
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, let parent = Int32(fields[1]), parent > 1 else { return nil }
            current = parent
        }
        return nil
    }

    /// A /proc file's text (its stat size is 0, so it is read until EOF), nil if it is gone.
    private static func read(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 65_536 {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            bytes += buffer[..<n]
        }
        return bytes.isEmpty ? nil : String(decoding: bytes, as: UTF8.self)
    }
}
