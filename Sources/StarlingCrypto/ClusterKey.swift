import CSodium
import Foundation

/// The shared secret that admits a node to the mesh: a 32-byte XChaCha20-Poly1305 key.
public struct ClusterKey: Equatable, Sendable {
    public static let byteCount = 32
    public let bytes: [UInt8]
    /// A short public identifier (the first 4 bytes of BLAKE2b of the key) that tells a receiver
    /// which key of its ring opens a packet without trying them all.
    public let id: UInt32

    public init(bytes: [UInt8]) throws {
        guard bytes.count == Self.byteCount else { throw KeyError.wrongLength(bytes.count) }
        self.bytes = bytes
        id = blake2b(bytes, outputBytes: 16).prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
    }

    public init(base64: String) throws {
        guard let data = Data(base64Encoded: base64.trimmingCharacters(in: .whitespaces)) else {
            throw KeyError.notBase64
        }
        try self.init(bytes: Array(data))
    }

    public static func generate() -> ClusterKey {
        try! ClusterKey(bytes: secureRandomBytes(byteCount))
    }

    public var base64: String { Data(bytes).base64EncodedString() }
}

public enum KeyError: Error, CustomStringConvertible, Equatable {
    case wrongLength(Int)
    case notBase64
    case empty(path: String)
    case unreadable(path: String, reason: String)
    case insecurePermissions(path: String, mode: UInt16)

    public var description: String {
        switch self {
        case .wrongLength(let n): "a cluster key must be 32 bytes, found \(n)"
        case .notBase64: "a cluster key must be base64"
        case .empty(let path): "\(path) holds no key"
        case .unreadable(let path, let reason): "cannot read \(path): \(reason)"
        case .insecurePermissions(let path, let mode): "\(path) has mode \(String(mode, radix: 8)); it must not be readable by group or others (chmod 600)"
        }
    }
}

/// The keys a node accepts. The first (primary) encrypts; all of them decrypt.
///
/// Rotation without downtime: add the new key second on every node (install), then move it
/// first on every node (use), then delete the old one (remove), with a SIGHUP after each step.
public struct Keyring: Sendable, Equatable {
    public let keys: [ClusterKey]

    public init(keys: [ClusterKey]) throws {
        guard !keys.isEmpty else { throw KeyError.empty(path: "keyring") }
        self.keys = keys
    }

    public var primary: ClusterKey { keys[0] }

    public func key(id: UInt32) -> ClusterKey? { keys.first { $0.id == id } }

    /// Reads a key file: one base64 key per line; blank lines and `#` comments are skipped.
    /// The file must not be readable by group or others.
    public static func load(path: String) throws -> Keyring {
        let bytes = try readKeyFile(path: path)
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw KeyError.unreadable(path: path, reason: "not UTF-8 text")
        }
        let keys = try text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
            .map { try ClusterKey(base64: $0) }
        guard !keys.isEmpty else { throw KeyError.empty(path: path) }
        return try Keyring(keys: keys)
    }
}

/// Upper bound on a key file: a keyring of hundreds of keys with comments fits many times over.
public let maxKeyFileBytes = 64 << 10

/// Reads a key file, refusing what could stall or flood the reader: it is opened non-blocking
/// (a FIFO would otherwise block the open until a writer came, forever if none does), must be a
/// regular file (not a FIFO, device or directory), private (checked on the open descriptor,
/// so the file checked is the file read), and at most `maxKeyFileBytes`.
public func readKeyFile(path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { throw KeyError.unreadable(path: path, reason: String(cString: strerror(errno))) }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw KeyError.unreadable(path: path, reason: String(cString: strerror(errno))) }
    guard info.st_mode & S_IFMT == S_IFREG else { throw KeyError.unreadable(path: path, reason: "not a regular file") }
    let mode = UInt16(truncatingIfNeeded: info.st_mode & 0o7777)
    if mode & 0o077 != 0 { throw KeyError.insecurePermissions(path: path, mode: mode) }
    guard info.st_size <= maxKeyFileBytes else {
        throw KeyError.unreadable(path: path, reason: "\(info.st_size) bytes, over the \(maxKeyFileBytes)-byte limit")
    }
    // Read one byte past the limit: the file may have grown since fstat.
    var bytes = [UInt8](repeating: 0, count: maxKeyFileBytes + 1)
    var count = 0
    while count < bytes.count {
        let n = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress! + count, $0.count - count) }
        if n == 0 { break }
        if n < 0 {
            if errno == EINTR { continue }
            throw KeyError.unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        count += n
    }
    guard count <= maxKeyFileBytes else {
        throw KeyError.unreadable(path: path, reason: "over the \(maxKeyFileBytes)-byte limit")
    }
    return Array(bytes[0..<count])
}

/// Refuses a secret file that group or others can read.
public func checkPrivate(path: String) throws {
    let attributes: [FileAttributeKey: Any]
    do { attributes = try FileManager.default.attributesOfItem(atPath: path) } catch {
        throw KeyError.unreadable(path: path, reason: "no such file")
    }
    let mode = (attributes[.posixPermissions] as? NSNumber)?.uint16Value ?? 0
    if mode & 0o077 != 0 { throw KeyError.insecurePermissions(path: path, mode: mode) }
}

/// Writes `contents` to `path` with mode 0600, atomically, never readable by others in between.
public func writePrivateFile(path: String, contents: [UInt8]) throws {
    let tmp = path + ".tmp.\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600)
    guard fd >= 0 else { throw KeyError.unreadable(path: tmp, reason: String(cString: strerror(errno))) }
    var written = 0
    while written < contents.count {
        let n = contents.withUnsafeBytes { write(fd, $0.baseAddress! + written, contents.count - written) }
        if n <= 0 { close(fd); unlink(tmp); throw KeyError.unreadable(path: tmp, reason: "write failed") }
        written += n
    }
    fsync(fd)
    close(fd)
    guard rename(tmp, path) == 0 else { unlink(tmp); throw KeyError.unreadable(path: path, reason: "rename failed") }
}
