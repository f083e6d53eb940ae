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
