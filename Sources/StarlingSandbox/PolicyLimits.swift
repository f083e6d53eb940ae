/// A policy whose fields are out of range (an HTTP layer answers these with 400).
public struct InvalidPolicy: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Bounds on a policy a client sends. A request's policy only narrows the node's, so these
/// refuse nonsense (negative memory, NaN, unbounded lists), not generosity.
public enum PolicyLimits {
    public static let maxAllowed = 256
    public static let maxProgramBytes = 4096
    public static let maxSecrets = 256

    public static func validate(_ p: Policy) throws(InvalidPolicy) {
        if let allow = p.allow {
            guard allow.count <= maxAllowed else { throw InvalidPolicy("allow has more than \(maxAllowed) programs") }
            for program in allow where program.isEmpty || program.utf8.count > maxProgramBytes || program.utf8.contains(0) {
                throw InvalidPolicy("bad program in allow: \(program.prefix(64).debugDescription)")
            }
        }
        if let m = p.maxMemoryMB, !(m >= 8 && m <= 1 << 20) { throw InvalidPolicy("maxMemoryMB must be 8 to 1048576") }
        if let c = p.maxCpus, !(c >= 0.01 && c <= 1024) { throw InvalidPolicy("maxCpus must be 0.01 to 1024") }
        if let s = p.maxTimeoutSeconds, !(s > 0 && s <= 86_400) { throw InvalidPolicy("maxTimeoutSeconds must be in (0, 86400]") }
        if let n = p.maxPids, !(n >= 1 && n <= 65_536) { throw InvalidPolicy("maxPids must be 1 to 65536") }
        if let secrets = p.secrets {
            guard secrets.count <= maxSecrets else { throw InvalidPolicy("more than \(maxSecrets) secrets") }
            for s in secrets where !TaskLimits.isEnvName(s) { throw InvalidPolicy("bad secret name \(s.prefix(64).debugDescription)") }
        }
    }
}
