import Foundation
import Logging
import StarlingCore
import StarlingSandbox
import StarlingStore
import Synchronization

/// The options a session is created with (the content of its creation record).
public struct SessionOptions: Codable, Sendable, Equatable {
    public var policy: Policy?
    /// Set when the session is a hosted agent's: its spec, so that whichever node comes to own
    /// the session can run the brain (AgentService).
    public var agent: AgentSpec?
    public init(policy: Policy? = nil, agent: AgentSpec? = nil) {
        self.policy = policy
        self.agent = agent
    }
}

/// Effects the node carries out itself rather than in a sandbox (an agent's model calls and
/// swarm spawns, its start and end records). Their stored task is not a TaskSpec, so a client's
/// `act` (always a TaskSpec, re-encoded by the route) can never name one.
public protocol BuiltinEffects: Sendable {
    /// Takes the effect and calls `complete` exactly once with its result (JSON within
    /// `SessionLimits.maxEffectBytes`), or returns false when `task` is not one of its own.
    func run(session: String, key: String, task: [UInt8], options: [UInt8], complete: @escaping @Sendable ([UInt8]) -> Void) -> Bool
}

/// Runs a session's effects: each in its own sandbox (the node's `SandboxRunner`, so the node's
/// policy applies, narrowed by the session's), on a thread of its own (a run blocks until the
/// task ends; the loop thread must never wait), between two audit entries, with
/// `STARLING_EFFECT_KEY` in its environment.
final class SessionEffectRunner: Sendable {
    let runner: SandboxRunner
    let nodeName: String
    let audit: AuditLog?
    let logger: Logger
    /// Effects running at once; past it an effect is refused (`denied`), never queued unboundedly.
    let maxConcurrent: Int
    private let running = Mutex(0)
    /// Set once by the agents service after the sessions service exists.
    let builtins = Mutex<(any BuiltinEffects)?>(nil)

    static let startKind = "effect.start"
    static let finishKind = "effect.finish"

    init(runner: SandboxRunner, nodeName: String, slots: Int, audit: AuditLog?, logger: Logger) {
        self.runner = runner
        self.nodeName = nodeName
        self.audit = audit
        self.logger = logger
        maxConcurrent = slots * 2 + 16
    }

    /// `complete` is called exactly once, from another thread, with the TaskResult's JSON within
    /// `SessionLimits.maxEffectBytes`.
    func start(session: String, key: String, effectKey: String, task: [UInt8], options: [UInt8],
               complete: @escaping @Sendable ([UInt8]) -> Void) {
        if let builtins = builtins.withLock({ $0 }),
           builtins.run(session: session, key: key, task: task, options: options, complete: complete) { return }
        let admitted = running.withLock { n -> Bool in
            guard n < maxConcurrent else { return false }
            n += 1
            return true
        }
        guard admitted else {
            return complete(Self.travelling(.denied("this node runs as many effects as it may", node: nodeName)))
        }
        let thread = Thread { [self] in
            let result = run(session: session, key: key, effectKey: effectKey, task: task, options: options)
            running.withLock { $0 -= 1 }
            complete(Self.travelling(result))
        }
        thread.name = "starling-effect"
        thread.stackSize = 1 << 20
        thread.start()
    }

    func run(session: String, key: String, effectKey: String, task bytes: [UInt8], options bytes2: [UInt8]) -> TaskResult {
        var task: TaskSpec
        let options: SessionOptions
        do {
            task = try JSONDecoder().decode(TaskSpec.self, from: Data(bytes))
            options = bytes2.isEmpty ? SessionOptions() : try JSONDecoder().decode(SessionOptions.self, from: Data(bytes2))
        } catch {
            return .denied("the effect's stored form does not decode: \(error)", node: nodeName)
        }
        // The node's, whatever the task's own env says: stable across retries and resumes.
        var env = task.env ?? [:]
        env["STARLING_EFFECT_KEY"] = effectKey
        task.env = env
        let identity: [String: JSONValue] = ["session": .string(session), "key": .string(TaskAudit.bounded(key))]
        if let audit {
            var body = identity
            body["program"] = .string(TaskAudit.bounded(task.argv.first ?? ""))
            body["net"] = .string((task.net ?? .none).rawValue)
            body["secrets"] = .array((task.secrets ?? []).prefix(TaskLimits.maxEnv).map { .string(TaskAudit.bounded($0)) })
            do { try audit.append(Self.startKind, .object(body)) } catch {
                return .denied("the audit log refused the effect's start: \(error)", node: nodeName)
            }
        }
        var result: TaskResult
        do {
            result = try runner.run(task, requestPolicy: options.policy, context: TaskContext(taskID: "\(session)/\(key)"))
        } catch {
            result = .denied("\(error)", node: nodeName)
        }
        result.attempts = 1
        if let audit {
            var body = identity
            body["reason"] = .string(result.reason.rawValue)
            body["exitCode"] = result.exitCode.map { .integer(Int64($0)) } ?? .null
            body["durationMs"] = .integer(Int64(clamping: result.durationMs))
            body["secrets"] = .array(result.reason == .denied ? [] : (task.secrets ?? []).prefix(TaskLimits.maxEnv).map { .string(TaskAudit.bounded($0)) })
            do { try audit.append(Self.finishKind, .object(body)) } catch {
                return .denied("the audit log refused the effect's end, so its result is withheld: \(error)", node: nodeName)
            }
        }
        return result
    }

    static func travelling(_ result: TaskResult) -> [UInt8] {
        SwarmTaskExecutor.travelling(result, limit: SessionLimits.maxEffectBytes)
    }
}
