import Foundation
import Logging
import StarlingCore
import StarlingCrypto
@testable import StarlingRuntime
import Testing

/// A protocol whose requests are "store, then acknowledge", as a swarm replica's: the request
/// performs a write, and the acknowledgement is the effect after it. Requests starting with "F"
/// make the write fail.
struct StoreThenAck: HostedProtocol {
    typealias Message = [UInt8]
    enum Command: Sendable { case ask(PeerName, [UInt8]) }
    typealias Reply = [UInt8]?
    enum Action: Sendable { case write(fails: Bool) }
    typealias ActionOutcome = Never

    static let channel = Channel(rawValue: 201)
    static let maxMessageBytes = 1024
    static func encode(_ message: [UInt8]) -> [UInt8] { message }
    static func decode(_ bytes: [UInt8]) throws -> [UInt8] { bytes }

    var pending: [RequestID: CommandID] = [:]
    var next: UInt64 = 1
    var nextDeadline: Instant { .distantFuture }
    mutating func tick(now: Instant) -> [ProtocolEffect<Self>] { [] }
    mutating func receive(_ message: [UInt8], from peer: PeerName, now: Instant) -> [ProtocolEffect<Self>] { [] }
    mutating func request(_ message: [UInt8], from peer: PeerName, token: RequestToken, now: Instant) -> [ProtocolEffect<Self>] {
        [.perform(.write(fails: message.first == UInt8(ascii: "F"))), .respond(Array("stored".utf8), to: token)]
    }
    mutating func response(_ message: [UInt8]?, to request: RequestID, now: Instant) -> [ProtocolEffect<Self>] {
        guard let command = pending.removeValue(forKey: request) else { return [] }
        return [.reply(message, to: command)]
    }
    mutating func membershipChanged(_ event: MembershipEvent, now: Instant) -> [ProtocolEffect<Self>] { [] }
    mutating func command(_ command: Command, id: CommandID, now: Instant) -> [ProtocolEffect<Self>] {
        guard case .ask(let peer, let bytes) = command else { return [] }
        let request = RequestID(rawValue: next)
        next += 1
        pending[request] = id
        return [.request(bytes, to: peer, id: request, timeout: .seconds(2))]
    }
    mutating func performed(_ outcome: Never, now: Instant) -> [ProtocolEffect<Self>] { switch outcome {} }
}

/// Does what `SwarmPerformer` does when its store refuses a write.
struct FailingStorePerformer: ProtocolPerformer {
    func perform(_ action: StoreThenAck.Action, host: ProtocolHandle<StoreThenAck>) {
        guard case .write(let fails) = action else { return }
        if fails {
            host.halt()
            host.node.requestLeave()
        }
    }
}

@Suite("Protocol host: a failed durable action", .serialized, .stopsItsNodes)
struct ProtocolHaltTests {
    final class Node: Sendable {
        let node: MeshNode
        let handle: ProtocolHandle<StoreThenAck>
        let port: UInt16
        init(_ name: String, key: ClusterKey, seed: UInt16?) throws {
            let port = freePort()
            var config = MeshConfiguration(name: name, bind: NodeAddress(host: "127.0.0.1", port: port), api: "127.0.0.1:1",
                                           seeds: seed.map { [NodeAddress(host: "127.0.0.1", port: $0)] } ?? [],
                                           slots: 1, keyFile: "/nonexistent", settings: .loopback)
            config.settings.pushPullInterval = .seconds(3_600)
            node = try MeshNode(configuration: config, keyring: try Keyring(keys: [key]),
                                logger: Logger(label: name, factory: { _ in SwiftLogNoOpLogHandler() }))
            handle = node.register(StoreThenAck(), performer: FailingStorePerformer())
            self.port = port
            startTracked(node)
        }
        func ask(_ peer: String, _ bytes: String) async throws -> [UInt8]? {
            try await handle.command(.ask(peer, Array(bytes.utf8)))
        }
    }

    /// Before `halt`, the performer could only ask the node to leave: the effects after the
    /// failed write ran anyway, so the peer was told "stored" of a write that never happened.
    @Test func aWriteThatFailsIsNeverAcknowledged() async throws {
        let key = ClusterKey.generate()
        let a = try Node("ha", key: key, seed: nil)
        let b = try Node("hb", key: key, seed: a.port)
        defer { a.node.stop(); b.node.stop() }
        try await eventually("ha and hb see each other", seconds: 10) {
            a.node.snapshot().members.contains { $0.name == "hb" && $0.status == .alive }
        }
        #expect(try await a.ask("hb", "ok") == Array("stored".utf8))
        #expect(try await a.ask("hb", "F") == nil, "hb acknowledged a write its store refused")
        // And nothing after it either: hb's protocol is stopped while it leaves.
        #expect(try await a.ask("hb", "ok again") == nil)
    }
}
