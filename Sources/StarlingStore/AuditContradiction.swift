import Foundation

/// The record that a peer's witness contradicted this node's audit log, kept beside the database
/// (`DATA/audit-contradicted.json`) so that the stop survives a restart.
///
/// Why a file and not a row: the contradiction says the database was cut or rewritten behind the
/// node's back, so the record of it should not depend on that database, nor on a schema
/// migration; and an operator reads and removes it with ordinary tools. It carries the witnessed
/// head in the fields of a `starling audit head` file, so `starling audit verify --data DIR
/// --witness DIR/audit-contradicted.json` checks the log against it directly.
///
/// What the operator does: read the reason, run that verify (and `--witness PEER_DATA_DIR`
/// against the peer named), and find out how the log lost the entry. Then either start the node
/// from a fresh data directory (a new identity: its peers refuse the old name under a new key
/// until they have reaped it, so a new name is quicker) or, once satisfied the node can be
/// trusted with its old log, delete this file and start it again. Root can delete it as well:
/// it stops a restarted node from silently carrying on, not an attacker who holds the host
/// (NOTES, "What an attacker with root on one node can and cannot hide").
public struct AuditContradiction: Codable, Sendable, Equatable {
    public static let fileName = "audit-contradicted.json"
    /// Bound on the file read back: it is small, and a node must not read a huge one at start.
    public static let maxFileBytes = 1 << 16

    // The witnessed head, in `WitnessedHead`'s field names.
    public var node: String
    public var publicKey: String
    public var seq: UInt64
    public var hash: String
    public var signature: String
    /// The peer that witnessed the head, what was wrong, and when this node found it.
    public var witness: String
    public var reason: String
    public var timeMs: UInt64

    public init(node: String, publicKey: [UInt8], head: AuditHead, witness: String, reason: String, timeMs: UInt64) {
        let h = WitnessedHead(node: node, publicKey: publicKey, head: head)
        self.node = h.node
        self.publicKey = h.publicKey
        seq = h.seq
        hash = h.hash
        signature = h.signature
        self.witness = witness
        self.reason = reason
        self.timeMs = timeMs
    }

    public static func path(inDirectory directory: String) -> String {
        (directory as NSString).appendingPathComponent(fileName)
    }

    /// Writes the record durably: a temporary file, fsync, rename over the final name, fsync of
    /// the directory. Throws when any step fails.
    public func write(toDirectory directory: String) throws(AuditError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes: [UInt8]
        do { bytes = Array(try encoder.encode(self)) + [0x0a] } catch { throw AuditError("cannot encode the contradiction: \(error)") }
        let final = Self.path(inDirectory: directory)
        let temporary = final + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AuditError("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else {
                let why = String(cString: strerror(errno))
                close(fd)
                throw AuditError("cannot write \(temporary): \(why)")
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw AuditError("cannot sync \(temporary): \(why)")
        }
        close(fd)
        guard rename(temporary, final) == 0 else { throw AuditError("cannot rename \(temporary): \(String(cString: strerror(errno)))") }
        let dir = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { throw AuditError("cannot open \(directory): \(String(cString: strerror(errno)))") }
        defer { close(dir) }
        guard fsync(dir) == 0 else { throw AuditError("cannot sync \(directory): \(String(cString: strerror(errno)))") }
    }

    /// The record in `directory`, nil when there is none. A record that exists but cannot be
    /// read or parsed is an error, never "none": the stop fails closed.
    public static func read(fromDirectory directory: String) throws(AuditError) -> AuditContradiction? {
        let path = Self.path(inDirectory: directory)
        var info = stat()
        guard lstat(path, &info) == 0 else {
            if errno == ENOENT { return nil }
            throw AuditError("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) == S_IFREG, info.st_size <= Self.maxFileBytes,
              let data = FileManager.default.contents(atPath: path), data.count <= Self.maxFileBytes,
              let record = try? JSONDecoder().decode(AuditContradiction.self, from: data)
        else {
            throw AuditError("\(path) exists but is not a readable contradiction record; the node stays stopped until it is removed")
        }
        return record
    }

    /// Why the node refuses to start, for its error message.
    public func refusal(directory: String) -> String {
        let path = Self.path(inDirectory: directory)
        return "\(witness) contradicted this node's audit log (\(reason)); the node stopped and stays stopped. "
            + "Check with `starling audit verify --data \(directory) --witness \(path)`; then start from a fresh data directory, "
            + "or remove \(path) once the log is trusted again"
    }
}
