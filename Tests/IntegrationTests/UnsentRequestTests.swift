import Foundation
import Logging
import StarlingCore
import StarlingCrypto
@testable import StarlingRuntime
import Synchronization
import Testing

/// A protocol that answers every failed request by sending it again at once, as the swarm's
/// replication does (it resends the whole swarm to a replica it still holds up). Sent to a peer
/// the node has no link to, each request fails without leaving the node.
struct Resender: HostedProtocol {
    typealias Message = [UInt8]
    enum Command: Sendable { case start(PeerName), stop, count }
    enum Reply: Sendable { case done, count(Int) }
    typealias Action = Never
    typealias ActionOutcome = Never

    static let channel = Channel(rawValue: 201)
    static let maxMessageBytes = 1024
    static func encode(_ message: [UInt8]) -> [UInt8] { message }
    static func decode(_ bytes: [UInt8]) throws -> [UInt8] { bytes }

    var target: PeerName?
    var failures = 0
    var nextRequest: UInt64 = 1
    var nextDeadline: Instant { .distantFuture }

    mutating func send() -> [ProtocolEffect<Resender>] {
        guard let target else { return [] }
        defer { nextRequest += 1 }
        return [.request([1, 2, 3], to: target, id: RequestID(rawValue: nextRequest), timeout: .seconds(5))]
    }

    mutating func tick(now: Instant) -> [ProtocolEffect<Resender>] { [] }
    mutating func receive(_ message: [UInt8], from peer: PeerName, now: Instant) -> [ProtocolEffect<Resender>] { [] }
    mutating func request(_ message: [UInt8], from peer: PeerName, token: RequestToken, now: Instant) -> [ProtocolEffect<Resender>] {
        [.respond(message, to: token)]
    }
    mutating func response(_ message: [UInt8]?, to request: RequestID, now: Instant) -> [ProtocolEffect<Resender>] {
        if message == nil { failures += 1 }
        return send()
    }
    mutating func membershipChanged(_ event: MembershipEvent, now: Instant) -> [ProtocolEffect<Resender>] { [] }
    mutating func command(_ command: Command, id: CommandID, now: Instant) -> [ProtocolEffect<Resender>] {
        switch command {
        case .start(let peer):
            target = peer
            return [.reply(.done, to: id)] + send()
        case .stop:
            target = nil
            return [.reply(.done, to: id)]
        case .count:
            return [.reply(.count(failures), to: id)]
        }
    }
    mutating func performed(_ outcome: Never, now: Instant) -> [ProtocolEffect<Resender>] {}
}

struct NoPerformer: ProtocolPerformer {
    func perform(_ action: Never, host: ProtocolHandle<Resender>) {}
}

/// Seen on the fault rig (SwarmPartitionTests): when a replica was declared dead, the swarm
/// owner's node hung with its loop thread at 100% CPU, re-encoding the whole swarm for the dead
/// replica forever: each resend failed at once (no link to a dead member) and its nil answer
/// was fed back within the same input, before the protocol could hear of the death.
@Suite("A request that cannot be sent", .serialized, .stopsItsNodes)
struct UnsentRequestTests {
    @Test func aProtocolThatResendsEveryFailureAtOnceDoesNotStallTheNode() async throws {
        let key = ClusterKey.generate()
        var config = MeshConfiguration(name: "resender", bind: NodeAddress(host: "127.0.0.1", port: freePort()), api: "127.0.0.1:1",
                                       seeds: [], slots: 1, keyFile: "/nonexistent", settings: .loopback)
        config.settings.pushPullInterval = .seconds(3_600)
        let mesh = try MeshNode(configuration: config, keyring: try Keyring(keys: [key]),
                                logger: Logger(label: "resender", factory: { _ in SwiftLogNoOpLogHandler() }))
        let resender = mesh.register(Resender(), performer: NoPerformer())
        startTracked(mesh)
        defer { mesh.stop() }

        _ = try await resender.command(.start("nobody"))
        // The node must still take commands: on the old code its loop thread never came back
        // from the `start` input, so `stop` was never answered.
        let stopped = Mutex(false)
        let stopTask = Task {
            _ = try await resender.command(.stop)
            stopped.withLock { $0 = true }
        }
        try await eventually("the resending node answers a command", seconds: 10) { stopped.withLock { $0 } }
        _ = try await stopTask.value
        guard case .count(let failures) = try await resender.command(.count) else { Issue.record("not a count"); return }
        #expect(failures >= 1, "the request to a peer without a link failed \(failures) times")
        // Stopped: no failure comes back any more, the count stays.
        try await Task.sleep(for: .milliseconds(100))
        guard case .count(let later) = try await resender.command(.count) else { Issue.record("not a count"); return }
        #expect(later <= failures + 1, "resent after the stop: \(failures) then \(later)")
    }
}
