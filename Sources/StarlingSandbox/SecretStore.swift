import Foundation
import StarlingCrypto

/// The node's secrets (the hands', never the brain's): read from a NAME=VALUE file that must be
/// mode 0600. A secret reaches a task only as an environment variable, only if the task names it
/// and policy allows it, and its value is redacted from everything the task returns.
public struct SecretStore: Sendable {
    public private(set) var values: [String: String]
    /// Shorter values would redact innocent text everywhere; they are refused at load.
    public static let minimumLength = 6

    public init(values: [String: String] = [:]) { self.values = values }

    public static func load(path: String) throws -> SecretStore {
        try checkPrivate(path: path)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var values: [String: String] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else { throw SecretError("line \(n + 1) of \(path) is not NAME=VALUE") }
            let name = String(line[..<eq]), value = String(line[line.index(after: eq)...])
            guard TaskLimits.isEnvName(name) else { throw SecretError("line \(n + 1) of \(path): bad name \(name.debugDescription)") }
            guard value.count >= minimumLength else {
                throw SecretError("secret \(name) is shorter than \(minimumLength) characters, too short to redact safely")
            }
            values[name] = value
        }
        return SecretStore(values: values)
    }

    /// Replaces every secret value in `text` with `[REDACTED:NAME]`, longest values first.
    public func redact(_ text: String) -> String {
        guard !values.isEmpty else { return text }
        var out = text
        for (name, value) in values.sorted(by: { $0.value.count > $1.value.count }) where out.contains(value) {
            out = out.replacingOccurrences(of: value, with: "[REDACTED:\(name)]")
        }
        return out
    }
}

public struct SecretError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
