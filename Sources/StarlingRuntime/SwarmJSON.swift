import Foundation
import Hummingbird
import StarlingCore
import StarlingSandbox
import StarlingStore

/// JSON shapes of the swarm routes (interface.md's SwarmStatus and friends).

/// `POST /v1/swarms` answer.
public struct SwarmCreatedJSON: Codable, Sendable, Equatable, ResponseEncodable {
    public var id: String
    /// The node that owns the swarm (extension).
    public var owner: String?
}

/// One task in a SwarmStatus page or a `task` event.
public struct SwarmTaskJSON: Codable, Sendable, Equatable {
    public var id: String
    public var state: String
    /// The node running or that ran the current attempt (extension).
    public var node: String?
    /// The current or last attempt, from 1; 0 before the first (extension).
    public var attempt: Int?
    public var result: TaskResult?
}

/// interface.md's SwarmStatus. `tasks` is absent with `?tasks=false`; otherwise one page of
/// them, from `offset`, and `nextOffset` names the next page when there is one.
public struct SwarmStatusJSON: Codable, Sendable, Equatable, ResponseEncodable {
    public var id: String
    public var state: String
    public var total: Int
    public var succeeded: Int
    public var failed: Int
    // Extensions: the other counts, for progress bars.
    public var running: Int
    public var pending: Int
    public var cancelled: Int
    public var tasks: [SwarmTaskJSON]?
    public var offset: Int?
    public var nextOffset: Int?
    /// Extension: the task that spawned this swarm through its socket, if one did.
    public var parent: SwarmParentJSON? = nil
}

/// A sub-swarm's parent: the swarm and the index of the task in it.
public struct SwarmParentJSON: Codable, Sendable, Equatable {
    public var swarm: String
    public var task: UInt32
}

/// One line of `GET /v1/swarms`.
public struct SwarmSummaryJSON: Codable, Sendable, Equatable {
    public var id: String
    public var state: String
    public var total: Int
    public var succeeded: Int
    public var failed: Int
    /// Wall-clock milliseconds at submission (extension).
    public var createdAtMs: UInt64
}

public struct SwarmListJSON: Codable, Sendable, Equatable, ResponseEncodable {
    public var swarms: [SwarmSummaryJSON]
    /// Extension: true when some live node did not answer in time, so swarms held only there
    /// are missing; absent when every node answered.
    public var partial: Bool?
    /// Extension: the nodes that did not answer (with `partial`).
    public var unanswered: [String]?

    public init(swarms: [SwarmSummaryJSON], partial: Bool? = nil, unanswered: [String]? = nil) {
        self.swarms = swarms
        self.partial = partial
        self.unanswered = unanswered
    }
}

// SwarmOptions (the swarm-wide options the runtime hands back with every task run) lives in
// StarlingSandbox/SpawnRules.swift, beside the rules that derive a child swarm's from its parent's.

/// From a validated SwarmSpec to what the protocol carries.
public enum SwarmDrafting {
    /// What a task asks for when it names no memory: the sandbox's own default (or the swarm
    /// policy's ceiling, when lower), so placement reserves what the sandbox will grant.
    public static func memoryMB(_ task: TaskSpec, policy: Policy?) -> Int {
        task.memoryMB ?? min(Policy.defaultMemoryMB, policy?.maxMemoryMB ?? Policy.defaultMemoryMB)
    }

    public static func cpus(_ task: TaskSpec, policy: Policy?) -> Double {
        task.cpus ?? min(Policy.defaultCpus, policy?.maxCpus ?? Policy.defaultCpus)
    }

    /// The draft of a spec that `SwarmLimits.validate` accepted. Each task's payload is its
    /// TaskSpec as JSON, with its id filled in (the client's, else "t<index>").
    /// `options`: a child swarm's, derived from its parent's (`SpawnRules.admit`); a client's
    /// swarm takes its policy and spawn budget from the spec.
    public static func draft(_ spec: SwarmSpec, parent: TaskRef? = nil, options derived: SwarmOptions? = nil, nowMs: UInt64) throws -> SwarmDraft {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let maxAttempts = spec.maxAttempts ?? 1
        var options = derived ?? SwarmOptions(policy: spec.policy, spawn: spec.spawn)
        options.maxAttempts = maxAttempts
        let tasks = try spec.tasks.enumerated().map { index, task in
            var task = task
            let id = task.id ?? "t\(index)"
            task.id = id
            let memory = memoryMB(task, policy: options.policy)
            // Thousandths, rounded up: a task never gets less than it asked for. Validation
            // bounds cpus to 0.01...1024, so this fits.
            let milli = (cpus(task, policy: options.policy) * 1000).rounded(.up)
            return SwarmTask(id: id, needs: TaskNeeds(memoryMB: UInt32(clamping: memory), milliCPUs: UInt32(clamping: Int(milli))),
                             payload: Array(try encoder.encode(task)))
        }
        let draft = SwarmDraft(tasks: tasks, maxAttempts: UInt8(clamping: maxAttempts), options: Array(try encoder.encode(options)),
                               parent: parent, createdAtMs: nowMs)
        // The protocol's own bounds are tighter than the API's in places (a task's encoded form
        // travels in one message: at most 1 MiB; the swarm's in one definition): a spec past
        // them is the client's error, refused here, not a mesh refusal (a 503 to retry forever).
        if let reason = Swarm.refusal(for: draft) { throw InvalidSwarm(reason) }
        return draft
    }
}

extension SwarmTaskJSON {
    /// A stored task as the API shows it. The result bytes came from a node of the mesh: they
    /// are decoded (checked) here, never passed through; bytes that do not decode are left out
    /// and reported through `undecodable`.
    init(_ task: StoredTask, undecodable: inout Int) {
        id = task.id
        state = task.record.state.name
        node = task.record.node
        attempt = Int(task.record.attempt)
        if let bytes = task.record.result {
            result = try? JSONDecoder().decode(TaskResult.self, from: Data(bytes))
            if result == nil { undecodable += 1 }
        }
    }
}
