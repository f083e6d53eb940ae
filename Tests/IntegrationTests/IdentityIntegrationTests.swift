import Foundation
import Glibc
import Logging
import StarlingCore
import StarlingCrypto
@testable import StarlingRuntime
import StarlingStore
import Synchronization
import Testing

/// Issue #11 item 1 with real processes: each node gossips its Ed25519 key, and a node restarted
/// under the same name with a fresh data directory (so a fresh key) is refused by the others,
/// which count it.
@Suite("Identity keys in membership (real nodes on 127.0.0.1)", .serialized)
struct IdentityIntegrationTests {
    @Test func aNodeRestartedUnderItsNameWithAFreshKeyIsRefusedAndCounted() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["n1", "n2", "n3"])
        let (n1, n2, n3) = (nodes[0], nodes[1], nodes[2])
        func view(of name: String, at node: NodeProcess) -> MemberView? { node.members()?.first { $0.name == name } }
        // Every node lists n3 under the key n3 gossips for itself.
        var first: String?
        try waitUntil("n1 and n2 list n3's key", seconds: 15) {
            first = view(of: "n3", at: n3)?.identityKey
            return first != nil && view(of: "n3", at: n1)?.identityKey == first && view(of: "n3", at: n2)?.identityKey == first
        }
        let oldKey = try #require(first)
        #expect(oldKey.count == 64)
        #expect(n1.metric("starling_identity_conflicts_total") == 0)

        // n3 dies and comes back under its name, at its address, from an empty data directory.
        n3.signal(SIGKILL)
        #expect(n3.waitForExit(seconds: 10) != nil)
        try FileManager.default.removeItem(atPath: n3.dataDir)
        let again = try cluster.start("n3", join: [n1])
        var fresh: String?
        try waitUntil("the new n3 lists its own key", seconds: 10) {
            fresh = view(of: "n3", at: again)?.identityKey
            return fresh != nil
        }
        #expect(fresh != oldKey)

        // Refused and counted by both others; its old life is declared dead under the first key
        // (the new process answers probes at the same address, so it would otherwise live on).
        try waitUntil("n1 and n2 count the conflict", seconds: 20) {
            n1.metric("starling_identity_conflicts_total") > 0 && n2.metric("starling_identity_conflicts_total") > 0
        }
        try waitUntil("n1 and n2 hold n3 dead under its first key", seconds: 30) {
            [n1, n2].allSatisfy { node in
                guard let m = view(of: "n3", at: node) else { return false }
                #expect(m.identityKey == oldKey, "n3 listed under another key than its first")
                return m.status == "dead"
            }
        }
        // Still refused while n3 keeps refuting: the count grows and the key stays.
        let counted = n1.metric("starling_identity_conflicts_total")
        try waitUntil("n1 refuses n3's next claims", seconds: 20) { n1.metric("starling_identity_conflicts_total") > counted }
        #expect(view(of: "n3", at: n1)?.identityKey == oldKey)
        #expect(view(of: "n3", at: n1)?.status == "dead")
        #expect(cluster.log(of: n1).contains("refused a member under another identity key"))
        #expect(cluster.log(of: again).contains("another identity key claims this node's name"))
    }
}

/// The audit witness takes a peer's head only under the identity key membership gossips for
/// that peer. Three nodes in this process (real UDP and TCP on 127.0.0.1, real SQLite, real
/// Ed25519): "liar" gossips one key and signs its audit log with another.
@Suite("Audit heads checked against gossiped keys", .serialized, .stopsItsNodes)
struct AuditSignerKeyTests {
    /// Log lines kept for the test to read.
    final class Lines: Sendable {
        let lines = Mutex<[String]>([])
        func append(_ line: String) { lines.withLock { $0.append(line) } }
        func contains(_ text: String) -> Bool { lines.withLock { $0.contains { $0.contains(text) } } }
    }

    struct Captured: LogHandler {
        let lines: Lines
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .info
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
                 function: String, line: UInt) {
            let text = "\(message) \((metadata ?? [:]).map { "\($0)=\($1)" }.sorted().joined(separator: " "))"
            lines.append(text)
        }
    }

    final class WitnessNode: Sendable {
        let node: MeshNode
        let audit: AuditLog
        let port: UInt16
        let lines = Lines()
        let dir: String

        /// `gossips`: the identity whose key goes into membership; the audit log is signed by
        /// `identity` (the same for an honest node).
        init(_ name: String, key: ClusterKey, seed: UInt16?, dir: String, identity: NodeIdentity, gossips: NodeIdentity) throws {
            self.dir = dir
            let store = try SwarmStore(directory: dir)
            audit = try AuditLog(store: store, identity: identity, nodeName: name)
            try audit.append("node.start", ["name": .string(name)])
            let port = freePort()
            var config = MeshConfiguration(name: name, bind: NodeAddress(host: "127.0.0.1", port: port), api: "127.0.0.1:1",
                                           seeds: seed.map { [NodeAddress(host: "127.0.0.1", port: $0)] } ?? [],
                                           slots: 1, keyFile: "/nonexistent", settings: .loopback)
            config.identityKey = gossips.publicKey
            config.identity = gossips  // its links open under the key it gossips (its heads are signed by `identity`)
            node = try MeshNode(configuration: config, keyring: try Keyring(keys: [key]),
                                logger: Logger(label: name, factory: { _ in SwiftLogNoOpLogHandler() }))
            let lines = self.lines
            AuditWitnessService.register(on: node, audit: audit, interval: .milliseconds(200),
                                         logger: Logger(label: name, factory: { _ in Captured(lines: lines) }))
            self.port = port
            startTracked(node)
        }

        func witnessed(_ peer: String) -> AuditHead? { (try? audit.witnessedHead(of: peer))?.head }
        func logged(_ text: String) -> Bool { lines.contains(text) }
    }

    @Test func aHeadUnderAnotherKeyThanTheGossipedOneIsRefused() async throws {
        let root = try makeTemporaryDirectory("starling-signer-keys")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let key = ClusterKey.generate()
        func identity(_ name: String) throws -> NodeIdentity { try NodeIdentity.loadOrCreate(dataDir: "\(root)/\(name)") }
        let (i1, i2, real, gossiped) = (try identity("h1"), try identity("h2"), try identity("liar"), try identity("liar-gossiped"))
        let h1 = try WitnessNode("h1", key: key, seed: nil, dir: "\(root)/h1", identity: i1, gossips: i1)
        let h2 = try WitnessNode("h2", key: key, seed: h1.port, dir: "\(root)/h2", identity: i2, gossips: i2)
        let liar = try WitnessNode("liar", key: key, seed: h1.port, dir: "\(root)/liar", identity: real, gossips: gossiped)
        defer { h1.node.stop(); h2.node.stop(); liar.node.stop() }
        // With three nodes each witnesses both others. The honest heads are taken (the path
        // works); the liar's, validly signed but under a key membership does not give for it, are
        // refused, counted and logged, and never stored.
        try await eventually("h1 and h2 witness each other", seconds: 20) { h1.witnessed("h2") != nil && h2.witnessed("h1") != nil }
        try await eventually("h1 and h2 refuse the liar's heads", seconds: 20) {
            h1.logged("not the identity key membership gossips for liar") && h2.logged("not the identity key membership gossips for liar")
        }
        #expect(h1.witnessed("liar") == nil)
        #expect(h2.witnessed("liar") == nil)
        // The liar itself takes the honest heads: the rule is about the signer, not the witness.
        try await eventually("the liar witnesses h1", seconds: 20) { liar.witnessed("h1") != nil }
        #expect(h1.node.snapshot().members.first { $0.name == "liar" }?.metadata.identityKey == gossiped.publicKey)
    }
}
