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
        return redact(Array(text.utf8), cap: .max).text
    }

    /// How many bytes past a cut a capture must keep so that a value straddling the cut is seen
    /// whole: the longest value's UTF-8 length less one.
    public var overlap: Int { max(0, (values.values.map(\.utf8.count).max() ?? 0) - 1) }

    /// Redacts the first `cap` bytes of `bytes` and returns at most `cap` bytes of the result.
    ///
    /// Redaction comes before the cut: `bytes` should hold `cap + overlap` bytes when the source
    /// had that many, so that a value starting before the cut is matched whole and replaced, and
    /// no prefix of it survives at the end. Nothing from at or past input byte `cap` is kept
    /// except the marker of a value that starts before it; markers can shorten the text, and
    /// keeping later bytes could then end on the unmatched start of a value cut off at the end
    /// of `bytes`. `truncated` says whether anything was dropped.
    public func redact(_ bytes: [UInt8], cap: Int) -> (text: String, truncated: Bool) {
        var (out, cut) = redactBytes(bytes, cap: cap)
        if cut { Self.dropIncompleteCharacter(&out) }
        return (String(decoding: out, as: UTF8.self), cut)
    }

    /// `redact(_:cap:)` on bytes: the same matching and cut, without decoding, and the cut falls
    /// exactly at `cap` bytes (for binary output files, where a UTF-8 boundary means nothing).
    public func redactBytes(_ bytes: [UInt8], cap: Int) -> (bytes: [UInt8], truncated: Bool) {
        let end = max(0, min(bytes.count, cap))
        var out: [UInt8] = []
        out.reserveCapacity(min(end, 1 << 20))
        var cursor = 0
        var cut = bytes.count > cap
        func append(_ piece: ArraySlice<UInt8>) {
            let room = cap - out.count
            if piece.count > room { cut = true }
            out.append(contentsOf: piece.prefix(max(0, room)))
        }
        for match in matches(in: bytes) {
            guard match.start < end else { break }
            append(bytes[cursor..<match.start])
            append(ArraySlice(Array("[REDACTED:\(match.name)]".utf8)))
            cursor = match.start + match.length
        }
        if cursor < end { append(bytes[cursor..<end]) }
        return (out, cut)
    }

    /// Every occurrence of every value in `bytes`, without overlaps (longer values win), in order.
    private func matches(in bytes: [UInt8]) -> [(start: Int, length: Int, name: String)] {
        guard !values.isEmpty, !bytes.isEmpty else { return [] }
        var found: [(start: Int, length: Int, name: String)] = []
        // Which bytes a longer value already claimed; a byte array, since one task may print a
        // value a hundred thousand times and pairwise overlap checks would then be quadratic.
        var claimed = [Bool](repeating: false, count: bytes.count)
        bytes.withUnsafeBufferPointer { haystack in
            let base = haystack.baseAddress!
            for (name, value) in values.sorted(by: { ($0.value.utf8.count, $0.key) > ($1.value.utf8.count, $1.key) }) {
                let needle = Array(value.utf8)
                guard let first = needle.first, needle.count <= bytes.count else { continue }
                var at = 0
                while at + needle.count <= bytes.count {
                    guard let hit = memchr(base + at, Int32(first), bytes.count - at - needle.count + 1) else { break }
                    let start = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                    if memcmp(base + start, needle, needle.count) == 0, !claimed[start..<start + needle.count].contains(true) {
                        for i in start..<start + needle.count { claimed[i] = true }
                        found.append((start, needle.count, name))
                        at = start + needle.count
                    } else {
                        at = start + 1
                    }
                }
            }
        }
        return found.sorted { $0.start < $1.start }
    }

    /// Drops a UTF-8 sequence left incomplete by a cut, so the text does not end in U+FFFD.
    static func dropIncompleteCharacter(_ bytes: inout [UInt8]) {
        var i = bytes.count - 1
        while i >= 0, i >= bytes.count - 4, bytes[i] & 0xC0 == 0x80 { i -= 1 }  // continuation bytes
        guard i >= 0, i >= bytes.count - 4 else { return }
        let lead = bytes[i]
        let length = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        if bytes.count - i < length { bytes.removeSubrange(i...) }
    }
}

public struct SecretError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}
