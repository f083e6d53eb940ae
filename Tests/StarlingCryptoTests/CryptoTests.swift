import Foundation
import Testing
@testable import StarlingCrypto

@Suite("Envelope, keyring and identity")
struct CryptoTests {
    let k1 = ClusterKey.generate()
    let k2 = ClusterKey.generate()

    func tempDir() -> String {
        let dir = NSTemporaryDirectory() + "starling-crypto-\(UUID().uuidString)"
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func sealedPayloadsOpenUnderAnyKeyOfTheRing() throws {
        let ring = try Keyring(keys: [k2, k1])
        let sealed = Envelope.seal([1, 2, 3], kind: .gossip, key: k1, sentAtMs: 1_000)
        #expect(sealed.count == 3 + Envelope.overheadBytes)
        #expect(try Envelope.open(sealed, kind: .gossip, keyring: ring, nowMs: 1_000, maxAgeMs: 100) == [1, 2, 3])
    }

    @Test func everyForgeryIsRefusedWithItsReason() throws {
        let ring = try Keyring(keys: [k1])
        let sealed = Envelope.seal(Array(repeating: 7, count: 40), kind: .gossip, key: k1, sentAtMs: 5_000)
        let other = Envelope.seal([1], kind: .gossip, key: k2, sentAtMs: 5_000)
        #expect(throws: Envelope.OpenError.unknownKey) { try Envelope.open(other, kind: .gossip, keyring: ring, nowMs: 5_000, maxAgeMs: 100) }
        #expect(throws: Envelope.OpenError.wrongKind) { try Envelope.open(sealed, kind: .pushPullRequest, keyring: ring, nowMs: 5_000, maxAgeMs: 100) }
        for i in Envelope.headerBytes..<sealed.count {
            var tampered = sealed
            tampered[i] ^= 0x01
            #expect(throws: Envelope.OpenError.authenticationFailed) {
                try Envelope.open(tampered, kind: .gossip, keyring: ring, nowMs: 5_000, maxAgeMs: 100)
            }
        }
        var nonce = sealed
        nonce[10] ^= 0x80
        #expect(throws: Envelope.OpenError.authenticationFailed) { try Envelope.open(nonce, kind: .gossip, keyring: ring, nowMs: 5_000, maxAgeMs: 100) }
        #expect(throws: Envelope.OpenError.malformed) { try Envelope.open(Array(sealed.prefix(20)), kind: .gossip, keyring: ring, nowMs: 5_000, maxAgeMs: 100) }
    }

    @Test func aReplayOutsideTheWindowIsRefused() throws {
        let ring = try Keyring(keys: [k1])
        let sealed = Envelope.seal([9], kind: .gossip, key: k1, sentAtMs: 100_000)
        #expect(throws: Envelope.OpenError.stale(ageMs: 30_001)) {
            try Envelope.open(sealed, kind: .gossip, keyring: ring, nowMs: 130_001, maxAgeMs: 30_000)
        }
        #expect(throws: Envelope.OpenError.stale(ageMs: -30_001)) {
            try Envelope.open(sealed, kind: .gossip, keyring: ring, nowMs: 69_999, maxAgeMs: 30_000)
        }
    }

    @Test func aKeyFileHoldsSeveralKeysAndMustBePrivate() throws {
        let dir = tempDir()
        let path = dir + "/keys"
        try writePrivateFile(path: path, contents: Array("# rotation\n\(k2.base64)\n\n\(k1.base64)\n".utf8))
        let ring = try Keyring.load(path: path)
        #expect(ring.keys == [k2, k1])
        #expect(ring.primary == k2)
        chmod(path, 0o644)
        #expect(throws: KeyError.insecurePermissions(path: path, mode: 0o644)) { try Keyring.load(path: path) }
        try writePrivateFile(path: dir + "/bad", contents: Array("bm90IGEga2V5\n".utf8))
        #expect(throws: KeyError.wrongLength(9)) { try Keyring.load(path: dir + "/bad") }
    }

    @Test func theNodeIdentityIsCreatedOnceWithMode0600AndSigns() throws {
        let dir = tempDir()
        let a = try NodeIdentity.loadOrCreate(dataDir: dir)
        let b = try NodeIdentity.loadOrCreate(dataDir: dir)
        #expect(a.publicKey == b.publicKey)
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/node.key")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let sig = a.sign([1, 2, 3])
        #expect(NodeIdentity.verify(signature: sig, message: [1, 2, 3], publicKey: b.publicKey))
        #expect(!NodeIdentity.verify(signature: sig, message: [1, 2, 4], publicKey: b.publicKey))
    }

    /// Printing an identity (a log line, a failed expectation) shows its public key, never its
    /// secret: the secret key's bytes appear in no description, debug description or dump.
    @Test func anIdentityPrintsItsPublicKeyOnly() throws {
        let dir = NSTemporaryDirectory() + "starling-identity-print-\(UInt64.random(in: 0 ... .max))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let identity = try NodeIdentity.loadOrCreate(dataDir: dir)
        let seed = try #require(FileManager.default.contents(atPath: dir + "/node.key"))
        let seedDecimal = Array(seed).prefix(4).map(String.init).joined(separator: ", ")
        let seedHex = seed.map { String(format: "%02x", $0) }.joined()
        var dumped = ""
        dump(identity, to: &dumped)
        for text in [String(describing: identity), String(reflecting: identity), "\(identity)", dumped] {
            #expect(text.contains(identity.publicKeyHex))
            #expect(!text.contains(seedHex) && !text.contains(seedDecimal) && !text.contains("secret"), "\(text)")
        }
    }
}
