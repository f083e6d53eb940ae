import Foundation
import StarlingCore
import StarlingSandbox
import StarlingStore
import Synchronization

/// Carries out the swarm protocol's `.run` and `.kill` actions: each attempt runs in its own
/// bubblewrap sandbox (SandboxRunner) on a thread of its own (pooled: `SwarmTaskThreads`),
/// because a sandboxed run blocks until the task ends and the loop thread must never wait for
/// one. The protocol never starts more attempts than the node's slots, so the threads are
/// bounded by them; `maxConcurrent` asserts it with margin.
///
/// Task data (argv, env, files) goes to the sandbox only, never into this process's environment
/// or argv: the runner hands it to the sandbox's init through a pipe.
public final class SwarmTaskExecutor: Sendable {
    struct AttemptKey: Hashable, Sendable {
        var swarm: SwarmID
        var index: UInt32
        var attempt: UInt16
    }

    /// An attempt between `start` and its completion: killed before its sandbox existed, or
    /// running with a handle to kill it by.
    enum Entry: Sendable {
        case starting(killed: Bool)
        case started(RunningTask)
    }

    let runner: SandboxRunner
    let nodeName: String
    let maxConcurrent: Int
    private let attempts = Mutex<[AttemptKey: Entry]>([:])
    /// Makes the sockets of tasks that may spawn (set once the node's swarm service exists;
    /// until then a spawning task is refused, never run without its socket).
    let sockets = Mutex<TaskSockets?>(nil)
    /// Where each attempt's start and end are recorded (TaskAudit); nil records nothing.
    let audit: AuditLog?
    /// The threads attempts run on, at most `maxConcurrent`.
    let threads: SwarmTaskThreads

    public init(runner: SandboxRunner, nodeName: String, slots: Int, audit: AuditLog? = nil) {
        self.runner = runner
        self.nodeName = nodeName
        self.audit = audit
        maxConcurrent = slots * 2 + 16
        threads = SwarmTaskThreads(limit: maxConcurrent)
    }

    /// Attempts started and not yet completed.
    public var inFlight: Int { attempts.withLock { $0.count } }

    /// Starts the attempt; `complete` is called exactly once, from another thread.
    public func start(_ run: TaskRun, complete: @escaping @Sendable (SwarmActionOutcome) -> Void) {
        let key = AttemptKey(swarm: run.swarm, index: run.index, attempt: run.attempt)
        let admitted = attempts.withLock { table -> Bool in
            guard table[key] == nil, table.count < maxConcurrent else { return false }
            table[key] = .starting(killed: false)
            return true
        }
        guard admitted else {
            // The protocol asked for a duplicate attempt or more than its slots: refuse it, loudly.
            assertionFailure("swarm attempt \(key) started twice or over the slot bound")
            return complete(Self.outcome(run, .denied("this node refused a second start of the same attempt, or one over its slots", node: nodeName), attempt: run.attempt))
        }
        threads.run { [self] in
            let result = executeAudited(run, key: key)
            attempts.withLock { _ = $0.removeValue(forKey: key) }
            complete(Self.outcome(run, result, attempt: run.attempt))
        }
    }

    /// Kills the attempt if it runs; one not yet started never starts. Its completion follows.
    public func kill(swarm: SwarmID, index: UInt32, attempt: UInt16) {
        let key = AttemptKey(swarm: swarm, index: index, attempt: attempt)
        let handle = attempts.withLock { table -> RunningTask? in
            switch table[key] {
            case .starting?: table[key] = .starting(killed: true); return nil
            case .started(let task)?: return task
            case nil: return nil
            }
        }
        handle?.cancel()
    }

    /// Runs the attempt between its two audit entries. Fails closed: an attempt whose start
    /// cannot be recorded never runs, and a result whose end cannot be recorded is not handed
    /// over (both become `denied` with the audit log's reason).
    func executeAudited(_ run: TaskRun, key: AttemptKey) -> TaskResult {
        let task: TaskSpec
        let options: SwarmOptions
        do {
            task = try JSONDecoder().decode(TaskSpec.self, from: Data(run.task.payload))
            options = run.options.isEmpty ? SwarmOptions(maxAttempts: Int(run.maxAttempts))
                : try JSONDecoder().decode(SwarmOptions.self, from: Data(run.options))
        } catch {
            return recordFinish(run, secrets: nil, .denied("the task's stored form does not decode: \(error)", node: nodeName))
        }
        if let audit {
            do {
                try audit.append(TaskAudit.startKind, TaskAudit.start(run, task))
            } catch {
                return .denied("the audit log refused the task's start: \(error)", node: nodeName)
            }
        }
        return recordFinish(run, secrets: task.secrets, execute(run, task: task, options: options, key: key))
    }

    private func recordFinish(_ run: TaskRun, secrets: [String]?, _ result: TaskResult) -> TaskResult {
        guard let audit else { return result }
        let (kind, body) = TaskAudit.finish(run, secrets: secrets, result)
        do {
            try audit.append(kind, body)
            return result
        } catch {
            return .denied("the audit log refused the task's end, so its result is withheld: \(error)", node: nodeName)
        }
    }

    func execute(_ run: TaskRun, task: TaskSpec, options: SwarmOptions, key: AttemptKey) -> TaskResult {
        // interface.md: a task's environment always has STARLING_TASK; a task of a swarm that
        // may spawn also gets its own socket ($STARLING_SOCKET).
        guard let sockets = sockets.withLock({ $0 }) else {
            return .denied("this node cannot serve task sockets yet", node: nodeName)
        }
        let context = sockets.context(for: run)
        do {
            var result = try runner.run(task, requestPolicy: options.policy, context: context, onStart: { [self] running in
                let killedEarly = attempts.withLock { table -> Bool in
                    if case .starting(killed: true)? = table[key] { return true }
                    table[key] = .started(running)
                    return false
                }
                if killedEarly { running.cancel() }
            })
            result.attempts = Int(run.attempt)
            return result
        } catch {
            return .denied("\(error)", node: nodeName)
        }
    }

    static func outcome(_ run: TaskRun, _ result: TaskResult, attempt: UInt16) -> SwarmActionOutcome {
        var result = result
        result.attempts = Int(attempt)
        let outcome: RunOutcome = switch result.reason {
        case .denied: .denied
        case .exited where result.exitCode == 0: .succeeded
        default: .failed
        }
        return .finished(swarm: run.swarm, index: run.index, attempt: attempt, outcome: outcome, result: travelling(result))
    }

    /// The result's JSON, within what a result may carry between nodes
    /// (`StarlingCore.SwarmLimits.maxResultBytes`): past it, the output files are dropped, then
    /// stdout and stderr are cut, each said in `warnings`. A result is never dropped whole.
    static func travelling(_ result: TaskResult, limit: Int = StarlingCore.SwarmLimits.maxResultBytes) -> [UInt8] {
        func encoded(_ r: TaskResult) -> [UInt8] { (try? JSONEncoder().encode(r)).map { [UInt8]($0) } ?? [] }
        var result = result
        var bytes = encoded(result)
        guard bytes.count > limit else { return bytes }
        let size = bytes.count
        result.outputs = [:]
        result.outputsBase64 = nil
        result.warnings = (result.warnings ?? []) + ["output files dropped: the result was \(size) bytes, over the \(limit) a result may carry"]
        bytes = encoded(result)
        guard bytes.count > limit else { return bytes }
        let keep = limit / 16
        result.stdout = String(result.stdout.utf8.prefix(keep)) ?? ""
        result.stderr = String(result.stderr.utf8.prefix(keep)) ?? ""
        result.truncated = true
        result.warnings = (result.warnings ?? []) + ["stdout and stderr cut to \(keep) bytes each to fit the result's bound"]
        bytes = encoded(result)
        precondition(bytes.count <= limit, "a cut result still over its bound")
        return bytes
    }
}
