/// What a node lets tasks do (interface.md's Policy). A request's policy can only narrow the
/// node's: `narrowed(by:)` takes the stricter of each field.
public struct Policy: Codable, Sendable, Equatable {
    /// Programs a task may start as argv[0], by name (`python3`) or by path (`/usr/bin/python3`).
    /// nil: any. This names programs and is no security boundary: `bash` or `python3` in the list
    /// can run anything. The sandbox (namespaces, seccomp, cgroups) is the boundary.
    public var allow: [String]?
    public var net: NetworkMode?
    public var maxMemoryMB: Int?
    public var maxCpus: Double?
    public var maxTimeoutSeconds: Double?
    /// Most processes a task may have at once; also caps the default (`defaultPids`).
    public var maxPids: Int?
    /// Secret names a task may receive. nil or empty: none.
    public var secrets: [String]?

    public init(allow: [String]? = nil, net: NetworkMode? = nil, maxMemoryMB: Int? = nil, maxCpus: Double? = nil,
                maxTimeoutSeconds: Double? = nil, maxPids: Int? = nil, secrets: [String]? = nil) {
        self.allow = allow
        self.net = net
        self.maxMemoryMB = maxMemoryMB
        self.maxCpus = maxCpus
        self.maxTimeoutSeconds = maxTimeoutSeconds
        self.maxPids = maxPids
        self.secrets = secrets
    }

    /// The stricter of this policy and `request`, field by field.
    public func narrowed(by request: Policy?) -> Policy {
        guard let r = request else { return self }
        func both<T>(_ a: T?, _ b: T?, _ pick: (T, T) -> T) -> T? {
            switch (a, b) {
            case (nil, nil): nil
            case (let x?, nil): x
            case (nil, let y?): y
            case (let x?, let y?): pick(x, y)
            }
        }
        return Policy(
            allow: both(allow, r.allow) { a, b in a.filter { Set(b).contains($0) } },
            net: both(net, r.net) { min($0, $1) },
            maxMemoryMB: both(maxMemoryMB, r.maxMemoryMB) { min($0, $1) },
            maxCpus: both(maxCpus, r.maxCpus) { min($0, $1) },
            maxTimeoutSeconds: both(maxTimeoutSeconds, r.maxTimeoutSeconds) { min($0, $1) },
            maxPids: both(maxPids, r.maxPids) { min($0, $1) },
            // A request may name fewer secrets, never more: nil in the request keeps the node's.
            secrets: r.secrets.map { req in (secrets ?? []).filter { Set(req).contains($0) } } ?? secrets)
    }

    /// The limits a task runs under, once policy allows it.
    public struct Grant: Sendable, Equatable {
        public var memoryMB: Int
        public var cpus: Double
        public var pids: Int
        public var timeoutSeconds: Double
        public var net: NetworkMode
        public var secrets: [String]
    }

    public static let defaultMemoryMB = 512
    public static let defaultCpus = 1.0
    public static let defaultPids = 256
    public static let defaultTimeoutSeconds = 300.0

    /// Refuses a ceiling outside the range a task's own limit may take (`TaskLimits.validate`):
    /// a ceiling of 0 admits no task, a negative, NaN or huge one would reach a conversion that
    /// traps. Applied to the node's policy when it is loaded (the node refuses to start) and to
    /// every request's policy (the task is `denied` with the reason).
    public func validate() throws(PolicyDenial) {
        if let m = maxMemoryMB, !TaskLimits.memoryMBRange.contains(m) { throw PolicyDenial("maxMemoryMB must be 8 to 1048576, not \(m)") }
        if let c = maxCpus, !TaskLimits.cpusRange.contains(c) { throw PolicyDenial("maxCpus must be 0.01 to 1024, not \(c)") }
        if let s = maxTimeoutSeconds, !(s > 0 && s <= TaskLimits.maxTimeoutSeconds) {
            throw PolicyDenial("maxTimeoutSeconds must be in (0, 86400], not \(s)")
        }
        if let p = maxPids, !TaskLimits.pidsRange.contains(p) { throw PolicyDenial("maxPids must be 1 to 65536, not \(p)") }
        if let a = allow {
            guard a.count <= TaskLimits.maxArgs, a.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 4096 && !$0.utf8.contains(0) }) else {
                throw PolicyDenial("allow must hold at most \(TaskLimits.maxArgs) non-empty program names")
            }
        }
        if let s = secrets {
            guard s.count <= TaskLimits.maxEnv, s.allSatisfy(TaskLimits.isEnvName) else {
                throw PolicyDenial("secrets must hold at most \(TaskLimits.maxEnv) variable names")
            }
        }
    }

    /// Allows the task with its limits, or says why not. A task asking for more than a ceiling
    /// is refused rather than silently cut down.
    public func decide(_ t: TaskSpec) -> Result<Grant, PolicyDenial> {
        let program = t.argv.first ?? ""
        if let allow {
            let base = program.split(separator: "/").last.map(String.init) ?? program
            guard allow.contains(program) || (!program.contains("/") && allow.contains(base))
                    || allow.contains(where: { $0.hasSuffix("/" + base) && $0 == program }) else {
                return .failure(PolicyDenial("program \(program.debugDescription) is not in the policy's allow list"))
            }
        }
        let wantNet = t.net ?? .none
        if wantNet > (net ?? .none) { return .failure(PolicyDenial("network access \(wantNet.rawValue) is not allowed by policy")) }
        let memory = t.memoryMB ?? min(Self.defaultMemoryMB, maxMemoryMB ?? Self.defaultMemoryMB)
        if let m = maxMemoryMB, memory > m { return .failure(PolicyDenial("memoryMB \(memory) exceeds the policy's \(m)")) }
        let cpus = t.cpus ?? min(Self.defaultCpus, maxCpus ?? Self.defaultCpus)
        if let c = maxCpus, cpus > c { return .failure(PolicyDenial("cpus \(cpus) exceeds the policy's \(c)")) }
        let timeout = t.timeoutSeconds ?? min(Self.defaultTimeoutSeconds, maxTimeoutSeconds ?? Self.defaultTimeoutSeconds)
        if let s = maxTimeoutSeconds, timeout > s { return .failure(PolicyDenial("timeoutSeconds \(timeout) exceeds the policy's \(s)")) }
        let pids = t.pids ?? min(Self.defaultPids, maxPids ?? Self.defaultPids)
        if let p = maxPids, pids > p { return .failure(PolicyDenial("pids \(pids) exceeds the policy's \(p)")) }
        let allowedSecrets = Set(secrets ?? [])
        for s in t.secrets ?? [] where !allowedSecrets.contains(s) {
            return .failure(PolicyDenial("secret \(s) is not allowed by policy"))
        }
        return .success(Grant(memoryMB: memory, cpus: cpus, pids: pids, timeoutSeconds: timeout,
                              net: wantNet, secrets: t.secrets ?? []))
    }
}

public struct PolicyDenial: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
