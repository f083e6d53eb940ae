import CSodium
import Foundation

/// A node's Ed25519 identity, kept as its 32-byte seed in `DATA/node.key` (mode 0600).
/// Created on first start; a node restarted with the same data dir is the same node.
public struct NodeIdentity: Sendable {
    public static let fileName = "node.key"
    public let publicKey: [UInt8]
    private let secretKey: [UInt8]

    private init(seed: [UInt8]) {
        Sodium.ensureReady()
        precondition(seed.count == 32)
        var pk = [UInt8](repeating: 0, count: 32)
        var sk = [UInt8](repeating: 0, count: 64)
        _ = crypto_sign_seed_keypair(&pk, &sk, seed)
        publicKey = pk
        secretKey = sk
    }

    /// Loads `DIR/node.key`, or creates it if absent. Refuses a key file others can read.
    public static func loadOrCreate(dataDir: String) throws -> NodeIdentity {
        let path = (dataDir as NSString).appendingPathComponent(fileName)
        if FileManager.default.fileExists(atPath: path) {
            try checkPrivate(path: path)
            guard let data = FileManager.default.contents(atPath: path), data.count == 32 else {
                throw KeyError.unreadable(path: path, reason: "expected a 32-byte Ed25519 seed")
            }
            return NodeIdentity(seed: Array(data))
        }
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let seed = secureRandomBytes(32)
        try writePrivateFile(path: path, contents: seed)
        return NodeIdentity(seed: seed)
    }

    public func sign(_ message: [UInt8]) -> [UInt8] {
        var sig = [UInt8](repeating: 0, count: 64)
        _ = crypto_sign_detached(&sig, nil, message, UInt64(message.count), secretKey)
        return sig
    }

    public static func verify(signature: [UInt8], message: [UInt8], publicKey: [UInt8]) -> Bool {
        Sodium.ensureReady()
        guard signature.count == 64, publicKey.count == 32 else { return false }
        return crypto_sign_verify_detached(signature, message, UInt64(message.count), publicKey) == 0
    }

    public var publicKeyHex: String { publicKey.map { String(format: "%02x", $0) }.joined() }
}

/// An identity prints as its public key only: the default description and mirror of a struct
/// list every stored property, and a failed test expectation or a log line printing a
/// `NodeIdentity` wrote its secret key out (seen in a test's failure message).
extension NodeIdentity: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { "NodeIdentity(publicKey: \(publicKeyHex))" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["publicKey": publicKeyHex], displayStyle: .struct) }
}
