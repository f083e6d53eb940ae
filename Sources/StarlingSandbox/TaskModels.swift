/// Network access for a task: none (the default) or the host's.
public enum NetworkMode: String, Codable, Sendable, Comparable {
    case none, host

    public static func < (a: NetworkMode, b: NetworkMode) -> Bool { a == .none && b == .host }
}

/// One sub-agent task (interface.md's Task). Runs in its own throw-away sandbox.
public struct TaskSpec: Codable, Sendable, Equatable {
    public var id: String?
    public var argv: [String]
    public var stdin: String?
    /// Files placed in /task before the task starts (relative paths; sub-directories allowed).
    public var files: [String: String]?
    public var env: [String: String]?
    /// Names of node-held secrets to give the task as environment variables, if policy allows.
    public var secrets: [String]?
    public var timeoutSeconds: Double?
    public var memoryMB: Int?
    public var cpus: Double?
    public var net: NetworkMode?
    /// Most processes the task may have at once (extension: `--pids` on the CLI).
    public var pids: Int?

    public init(id: String? = nil, argv: [String], stdin: String? = nil, files: [String: String]? = nil,
                env: [String: String]? = nil, secrets: [String]? = nil, timeoutSeconds: Double? = nil,
                memoryMB: Int? = nil, cpus: Double? = nil, net: NetworkMode? = nil, pids: Int? = nil) {
        self.id = id
        self.argv = argv
        self.stdin = stdin
        self.files = files
        self.env = env
        self.secrets = secrets
        self.timeoutSeconds = timeoutSeconds
        self.memoryMB = memoryMB
        self.cpus = cpus
        self.net = net
        self.pids = pids
    }
}

/// Why a task ended.
public enum TaskEndReason: String, Codable, Sendable {
    case exited, timeout, oom, killed, denied
}

/// What a task did (interface.md's TaskResult). `exitCode` and `signal` encode as null when absent.
public struct TaskResult: Codable, Sendable, Equatable {
    public var exitCode: Int32?
    public var signal: Int32?
    public var reason: TaskEndReason
    public var stdout: String
    public var stderr: String
    public var truncated: Bool
    public var outputs: [String: String]
    /// Output files whose content is not valid UTF-8, base64 (nil when there are none).
    public var outputsBase64: [String: String]?
    /// What the client should know about how the result was collected (an output cut at its
    /// cap, files left out); nil when there is nothing to say.
    public var warnings: [String]?
    public var node: String
    public var attempts: Int
    public var durationMs: Int
    public var cpuMs: Int
    public var peakMemoryKB: Int

    public init(exitCode: Int32?, signal: Int32?, reason: TaskEndReason, stdout: String, stderr: String, truncated: Bool,
                outputs: [String: String], outputsBase64: [String: String]? = nil, warnings: [String]? = nil,
                node: String, attempts: Int, durationMs: Int, cpuMs: Int, peakMemoryKB: Int) {
        self.exitCode = exitCode
        self.signal = signal
        self.reason = reason
        self.stdout = stdout
        self.stderr = stderr
        self.truncated = truncated
        self.outputs = outputs
        self.outputsBase64 = outputsBase64
        self.warnings = warnings
        self.node = node
        self.attempts = attempts
        self.durationMs = durationMs
        self.cpuMs = cpuMs
        self.peakMemoryKB = peakMemoryKB
    }

    /// A refusal: the task never ran.
    public static func denied(_ message: String, node: String) -> TaskResult {
        TaskResult(exitCode: nil, signal: nil, reason: .denied, stdout: "", stderr: "denied: \(message)\n", truncated: false,
                   outputs: [:], node: node, attempts: 0, durationMs: 0, cpuMs: 0, peakMemoryKB: 0)
    }

    enum CodingKeys: String, CodingKey {
        case exitCode, signal, reason, stdout, stderr, truncated, outputs, outputsBase64, warnings, node, attempts, durationMs, cpuMs, peakMemoryKB
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        if let exitCode { try c.encode(exitCode, forKey: .exitCode) } else { try c.encodeNil(forKey: .exitCode) }
        if let signal { try c.encode(signal, forKey: .signal) } else { try c.encodeNil(forKey: .signal) }
        try c.encode(reason, forKey: .reason)
        try c.encode(stdout, forKey: .stdout)
        try c.encode(stderr, forKey: .stderr)
        try c.encode(truncated, forKey: .truncated)
        try c.encode(outputs, forKey: .outputs)
        try c.encodeIfPresent(outputsBase64, forKey: .outputsBase64)
        try c.encodeIfPresent(warnings, forKey: .warnings)
        try c.encode(node, forKey: .node)
        try c.encode(attempts, forKey: .attempts)
        try c.encode(durationMs, forKey: .durationMs)
        try c.encode(cpuMs, forKey: .cpuMs)
        try c.encode(peakMemoryKB, forKey: .peakMemoryKB)
    }
}

/// A task whose shape is wrong (an HTTP layer answers these with 400).
public struct InvalidTask: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Bounds on what a task may carry in.
public enum TaskLimits {
    public static let maxArgs = 4096
    public static let maxFiles = 256
    public static let maxInputBytes = 16 << 20
    public static let maxEnv = 256
    /// Longest `NAME=value` string: the kernel refuses a longer one (MAX_ARG_STRLEN) with E2BIG.
    public static let maxEnvEntryBytes = 128 << 10
    public static let maxTimeoutSeconds = 86_400.0
    public static let memoryMBRange = 8...(1 << 20)
    public static let cpusRange = 0.01...1024.0
    public static let pidsRange = 1...65_536

    /// Checks the task's shape; policy is checked separately.
    ///
    /// `checkingID`: the id a client chose shows in URLs, logs and results wherever the task is
    /// sent (a swarm's task, a session's action, an agent's brain), so a task that arrives is
    /// held to the Task schema's one rule for it. A task read back from a record made before
    /// the rule (an agent's brain restarted from its session's creation record) is not: its id
    /// is only a label, and refusing it there would fail an agent that was accepted.
    public static func validate(_ t: TaskSpec, checkingID: Bool = true) throws(InvalidTask) {
        if checkingID, let id = t.id, !SwarmLimits.isTaskId(id) {
            throw InvalidTask("id must be 1 to \(SwarmLimits.maxTaskIdBytes) bytes of letters, digits, '-', '_' or '.' (not . or ..)")
        }
        guard let first = t.argv.first, !first.isEmpty else { throw InvalidTask("argv must name a program") }
        guard t.argv.count <= maxArgs else { throw InvalidTask("argv has more than \(maxArgs) entries") }
        guard !t.argv.contains(where: { $0.utf8.contains(0) }) else { throw InvalidTask("argv may not contain NUL bytes") }
        var bytes = (t.stdin?.utf8.count ?? 0) + t.argv.reduce(0) { $0 + $1.utf8.count }
        let files = t.files ?? [:]
        guard files.count <= maxFiles else { throw InvalidTask("more than \(maxFiles) files") }
        for (name, content) in files {
            try validatePath(name)
            bytes += content.utf8.count
        }
        let env = t.env ?? [:]
        guard env.count <= maxEnv else { throw InvalidTask("more than \(maxEnv) environment variables") }
        for (k, v) in env {
            guard isEnvName(k) else { throw InvalidTask("bad environment variable name \(k.debugDescription)") }
            guard !v.utf8.contains(0) else { throw InvalidTask("environment value of \(k) contains NUL") }
            // NAME=value and its NUL must fit one exec string; all of it counts as input.
            let entry = k.utf8.count + 1 + v.utf8.count
            guard entry < maxEnvEntryBytes else { throw InvalidTask("environment variable \(k) is longer than \(maxEnvEntryBytes) bytes") }
            bytes += entry
        }
        guard bytes <= maxInputBytes else { throw InvalidTask("inputs exceed \(maxInputBytes) bytes") }
        if let s = t.timeoutSeconds, !(s > 0 && s <= maxTimeoutSeconds) { throw InvalidTask("timeoutSeconds must be in (0, 86400]") }
        if let m = t.memoryMB, !memoryMBRange.contains(m) { throw InvalidTask("memoryMB must be 8 to 1048576") }
        if let c = t.cpus, !cpusRange.contains(c) { throw InvalidTask("cpus must be 0.01 to 1024") }
        if let p = t.pids, !pidsRange.contains(p) { throw InvalidTask("pids must be 1 to 65536") }
        for s in t.secrets ?? [] where !isEnvName(s) { throw InvalidTask("bad secret name \(s.debugDescription)") }
    }

    /// A relative path inside /task: no absolute path, no `.` or `..`, no empty component.
    public static func validatePath(_ p: String) throws(InvalidTask) {
        let parts = p.split(separator: "/", omittingEmptySubsequences: false)
        guard !p.isEmpty, !p.hasPrefix("/"), p.utf8.count <= 1024, !p.utf8.contains(0),
              parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." && $0.utf8.count <= 255 }) else {
            throw InvalidTask("bad file name \(p.debugDescription): use a relative path without . or ..")
        }
    }

    public static func isEnvName(_ s: String) -> Bool {
        guard let f = s.unicodeScalars.first, f == "_" || (f.isASCII && f.properties.isAlphabetic) else { return false }
        return s.utf8.count <= 128 && s.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }
}
