import StarlingCore
import StarlingSandbox
import StarlingStore

/// What the audit log records of a swarm task run on this node: `task.start` before its sandbox
/// starts, then `task.finish`, or `task.denied` when it was refused (a policy denial, a limit
/// the kernel would not apply, a socket that could not be opened: the reason says which).
///
/// Bodies hold ids, names and numbers only: never argv past the program's name, never env,
/// files, stdin or output, and never a secret's value, only the names of the secrets the task
/// asked for (`task.start`) and was given (`task.finish`).
enum TaskAudit {
    static let startKind = "task.start"
    static let finishKind = "task.finish"
    static let deniedKind = "task.denied"

    /// Longest string kept of any one field; longer ones are cut (and say so).
    static let maxFieldBytes = 256

    static func start(_ run: TaskRun, _ task: TaskSpec) -> JSONValue {
        var body = identity(run)
        body["program"] = .string(bounded(task.argv.first ?? ""))
        body["net"] = .string((task.net ?? .none).rawValue)
        body["secrets"] = names(task.secrets)
        return .object(body)
    }

    /// The finish entry's kind and body. `secrets` are the names the task asked for: a task that
    /// ran was given exactly those (policy allows all of them or refuses the task).
    static func finish(_ run: TaskRun, secrets: [String]?, _ result: TaskResult) -> (kind: String, body: JSONValue) {
        var body = identity(run)
        body["reason"] = .string(result.reason.rawValue)
        body["exitCode"] = result.exitCode.map { .integer(Int64($0)) } ?? .null
        body["signal"] = result.signal.map { .integer(Int64($0)) } ?? .null
        body["durationMs"] = .integer(Int64(clamping: result.durationMs))
        body["cpuMs"] = .integer(Int64(clamping: result.cpuMs))
        body["peakMemoryKB"] = .integer(Int64(clamping: result.peakMemoryKB))
        if result.reason == .denied {
            body["secrets"] = .array([])
            // TaskResult.denied puts "denied: REASON" in stderr; the reason is the node's own text.
            let reason = result.stderr.hasPrefix("denied: ") ? String(result.stderr.dropFirst(8)) : result.stderr
            body["denial"] = .string(bounded(reason.trimmingCharacters(in: .newlines), limit: 1024))
            return (deniedKind, .object(body))
        }
        body["secrets"] = names(secrets)
        return (finishKind, .object(body))
    }

    private static func identity(_ run: TaskRun) -> [String: JSONValue] {
        ["swarm": .string(run.swarm), "index": .integer(Int64(run.index)), "task": .string(bounded(run.task.id)),
         "attempt": .integer(Int64(run.attempt))]
    }

    private static func names(_ names: [String]?) -> JSONValue {
        .array((names ?? []).prefix(TaskLimits.maxEnv).map { .string(bounded($0)) })
    }

    /// `text` cut to at most `limit` bytes on a character boundary, with a marker when cut.
    static func bounded(_ text: String, limit: Int = maxFieldBytes) -> String {
        guard text.utf8.count > limit else { return text }
        var kept = ""
        var bytes = 0
        for c in text {
            let n = c.utf8.count
            if bytes + n > limit { break }
            kept.append(c)
            bytes += n
        }
        return kept + "…(cut from \(text.utf8.count) bytes)"
    }
}
