import Foundation
import Testing
import Glibc
import Logging
import StarlingCore
import StarlingCrypto
@testable import StarlingRuntime
import Synchronization

/// A small real protocol for the host and link tests: it echoes requests, records one-way
/// messages and membership events, and counts its responses, so a test can check "exactly one
/// response per request". Requests starting with "S" are held unanswered (until `.release`);
/// requests starting with "P" go through the performer (on another thread) and are answered
/// with the payload reversed. A message whose first byte is 0xFF does not decode.
struct Echo: HostedProtocol {
    typealias Message = [UInt8]

    enum Command: Sendable {
        case ask(PeerName, [UInt8], timeout: Duration)
        case tell(PeerName, [UInt8])
        /// `count` one-way messages of `bytes` bytes each, all in one go (one loop turn); with
        /// `ask`, then one request of `bytes` bytes, whose response is the command's reply.
        case flood(PeerName, count: Int, bytes: Int, ask: Bool)
        case stats
        case release
        /// Stalls the node's loop thread (the performer sleeps on it), to force races.
        case block(milliseconds: Int)
    }

    struct Stats: Sendable {
        var received: [[UInt8]] = []
        var events: [MembershipEvent] = []
        var held = 0
        var responses = 0
        var nilResponses = 0
        /// Responses to a request that had had its response already: must stay 0.
        var duplicateResponses = 0
    }

    enum Reply: Sendable {
        case response([UInt8]?)
        case stats(Stats)
        case done
    }

    enum Action: Sendable {
        case reverse([UInt8], RequestToken)
        case block(milliseconds: Int)
    }
    struct Outcome: Sendable {
        var bytes: [UInt8]
        var token: RequestToken
    }
    typealias ActionOutcome = Outcome

    static let channel = Channel(rawValue: 200)
    static let maxMessageBytes = 64 * 1024
    static func encode(_ message: [UInt8]) -> [UInt8] { message }
    struct Malformed: Error {}
    static func decode(_ bytes: [UInt8]) throws -> [UInt8] {
        if bytes.first == 0xFF { throw Malformed() }
        return bytes
    }

    var stats = Stats()
    var pending: [RequestID: CommandID] = [:]
    var answered: Set<RequestID> = []
    var heldTokens: [RequestToken] = []
    var nextRequest: UInt64 = 1

    var nextDeadline: Instant { .distantFuture }

    mutating func tick(now: Instant) -> [ProtocolEffect<Echo>] { [] }

    mutating func receive(_ message: [UInt8], from peer: PeerName, now: Instant) -> [ProtocolEffect<Echo>] {
        stats.received.append(message)
        return []
    }

    mutating func request(_ message: [UInt8], from peer: PeerName, token: RequestToken, now: Instant) -> [ProtocolEffect<Echo>] {
        switch message.first {
        case UInt8(ascii: "S"):
            heldTokens.append(token)
            stats.held = heldTokens.count
            return []
        case UInt8(ascii: "P"):
            return [.perform(.reverse(message, token))]
        default:
            return [.respond(message, to: token)]
        }
    }

    mutating func response(_ message: [UInt8]?, to request: RequestID, now: Instant) -> [ProtocolEffect<Echo>] {
        guard answered.insert(request).inserted else {
            stats.duplicateResponses += 1
            return []
        }
        stats.responses += 1
        if message == nil { stats.nilResponses += 1 }
        guard let command = pending.removeValue(forKey: request) else { return [] }
        return [.reply(.response(message), to: command)]
    }

    mutating func membershipChanged(_ event: MembershipEvent, now: Instant) -> [ProtocolEffect<Echo>] {
        stats.events.append(event)
        return []
    }

    mutating func command(_ command: Command, id: CommandID, now: Instant) -> [ProtocolEffect<Echo>] {
        switch command {
        case .ask(let peer, let bytes, let timeout):
            let request = RequestID(rawValue: nextRequest)
            nextRequest += 1
            pending[request] = id
            return [.request(bytes, to: peer, id: request, timeout: timeout)]
        case .tell(let peer, let bytes):
            return [.send(bytes, to: peer), .reply(.done, to: id)]
        case .flood(let peer, let count, let bytes, let ask):
            let sends: [ProtocolEffect<Echo>] = (0..<count).map { i in
                .send([UInt8](repeating: UInt8(truncatingIfNeeded: i), count: bytes), to: peer)
            }
            guard ask else { return sends + [.reply(.done, to: id)] }
            let request = RequestID(rawValue: nextRequest)
            nextRequest += 1
            pending[request] = id
            return sends + [.request([UInt8](repeating: 0, count: bytes), to: peer, id: request, timeout: .seconds(30))]
        case .stats:
            return [.reply(.stats(stats), to: id)]
        case .block(let ms):
            return [.perform(.block(milliseconds: ms)), .reply(.done, to: id)]
        case .release:
            defer { heldTokens = [] }
            return heldTokens.map { .respond(Array("late".utf8), to: $0) } + [.reply(.done, to: id)]
        }
    }

    mutating func performed(_ outcome: Outcome, now: Instant) -> [ProtocolEffect<Echo>] {
        [.respond(outcome.bytes, to: outcome.token)]
    }
}

/// Reverses a payload on another thread, as a performer that runs a sandbox would hand work off.
struct EchoPerformer: ProtocolPerformer {
    func perform(_ action: Echo.Action, host: ProtocolHandle<Echo>) {
        switch action {
        case .reverse(let bytes, let token):
            DispatchQueue.global().async { host.complete(Echo.Outcome(bytes: bytes.reversed(), token: token)) }
        case .block(let ms):
            usleep(UInt32(ms) * 1000)
        }
    }
}

/// The in-process nodes a test started and whose loops still run. The `stopsItsNodes` trait
/// waits for them after each test: a fresh-clone CI run aborted at the test process's exit, after
/// every test had passed, with node loops (posted `stop`, not yet exited) still running while the
/// process tore itself down.
final class NodeTracker: Sendable {
    @TaskLocal static var current: NodeTracker?
    private let running = Mutex(0)
    func started() { running.withLock { $0 += 1 } }
    func exited() { running.withLock { $0 -= 1 } }
    var count: Int { running.withLock { $0 } }
}

/// Starts `node`, counted by the current test's tracker until its loop has exited.
func startTracked(_ node: MeshNode, onExit: @escaping @Sendable () -> Void = {}) {
    let tracker = NodeTracker.current
    tracker?.started()
    node.start(onExit: {
        onExit()
        tracker?.exited()
    })
}

/// After each test (each case), waits until every node it started with `startTracked` has
/// exited its loop, and records an issue if one has not within 15 s.
struct StopsItsNodes: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard testCase != nil else { return try await function() }
        let tracker = NodeTracker()
        try await NodeTracker.$current.withValue(tracker) { try await function() }
        try await eventually("every node this test started has stopped", seconds: 15) { tracker.count == 0 }
    }
}

extension Trait where Self == StopsItsNodes {
    static var stopsItsNodes: Self { StopsItsNodes() }
}

/// A MeshNode in this process, hosting `Echo`, on 127.0.0.1.
final class EchoNode: Sendable {
    let node: MeshNode
    let echo: ProtocolHandle<Echo>
    let port: UInt16
    let name: String
    private let exited = Mutex(false)

    init(_ name: String, key: ClusterKey, seeds: [EchoNode] = [], configure: (inout MeshConfiguration) -> Void = { _ in }) throws {
        var lastError: (any Error)?
        for _ in 0..<3 {
            let port = freePort()
            var config = MeshConfiguration(name: name, bind: NodeAddress(host: "127.0.0.1", port: port), api: "127.0.0.1:1",
                                           seeds: seeds.map { NodeAddress(host: "127.0.0.1", port: $0.port) },
                                           slots: 4, keyFile: "/nonexistent", settings: .loopback)
            // No periodic push-pull: the only TCP connections between nodes are the join's
            // (short, closed) and the links, so the tests can count connections.
            config.settings.pushPullInterval = .seconds(3_600)
            configure(&config)
            do {
                let node = try MeshNode(configuration: config, keyring: try Keyring(keys: [key]),
                                        logger: Logger(label: name, factory: { _ in SwiftLogNoOpLogHandler() }))
                self.node = node
                self.port = port
                self.name = name
                echo = node.register(Echo(), performer: EchoPerformer())
                startTracked(node, onExit: { [self] in exited.withLock { $0 = true } })
                return
            } catch {
                lastError = error
            }
        }
        throw lastError!
    }

    var hasExited: Bool { exited.withLock { $0 } }

    func stop() async throws {
        node.stop()
        try await eventually("\(name) stops", seconds: 5) { self.hasExited }
    }

    func ask(_ peer: String, _ bytes: [UInt8], timeout: Duration = .seconds(10)) async throws -> [UInt8]? {
        guard case .response(let r) = try await echo.command(.ask(peer, bytes, timeout: timeout)) else { fatalError("not a response") }
        return r
    }

    func stats() async throws -> Echo.Stats {
        guard case .stats(let s) = try await echo.command(.stats) else { fatalError("not stats") }
        return s
    }

    func sees(_ other: String, as status: MemberStatus) -> Bool {
        node.snapshot().members.contains { $0.name == other && $0.status == status }
    }
}

/// Polls `condition` every 20 ms until it holds or `seconds` pass (then throws).
func eventually(_ what: String, seconds: Double, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    if try await condition() { return }
    throw TimedOut(description: "timed out after \(seconds)s waiting until \(what)")
}

/// A link spoken by hand from a test socket: the hello and frames a node would send, sealed
/// with whatever key the test chooses, to check what a node accepts.
struct RawLink {
    let fd: Int32
    let key: ClusterKey
    let connection: UInt64
    var sequence: UInt64 = 0

    /// Connects to 127.0.0.1:port and sends a link hello naming `name`, signed by `identity`
    /// when given, with `token` (random unless given) and sent at `sentAtMs` (now unless given).
    static func open(to port: UInt16, key: ClusterKey, name: String, identity: NodeIdentity? = nil,
                     token: [UInt8]? = nil, sentAtMs: UInt64? = nil) -> RawLink? {
        guard let fd = WireFixesIntegrationTests.connectFrom("127.0.0.1", to: port) else { return nil }
        let now = WireHardeningIntegrationTests.nowMs()
        let payload = PeerLink.helloPayload(to: NodeAddress(host: "127.0.0.1", port: port), from: name, sentAtMs: sentAtMs ?? now,
                                            token: token ?? secureRandomBytes(PeerLink.helloTokenBytes), identity: identity)
        let hello = Envelope.seal(payload, kind: .streamHello, key: key, sentAtMs: now)
        guard WireFixesIntegrationTests.sendAll(fd, WireHardeningIntegrationTests.frame(hello)) else {
            Glibc.close(fd)
            return nil
        }
        return RawLink(fd: fd, key: key, connection: PeerLink.connection(ofSealedHello: hello))
    }

    /// The next frame of this link, sealed and length-prefixed.
    mutating func frame(channel: Channel = Echo.channel, kind: LinkFrame.Kind, requestId: UInt64 = 0, payload: [UInt8]) -> [UInt8] {
        let frame = LinkFrame(connection: connection, sequence: sequence, direction: .fromDialer, channel: channel, kind: kind,
                              requestId: requestId, payload: payload)
        sequence += 1
        return WireHardeningIntegrationTests.frame(Envelope.seal(frame.encoded(), kind: .linkFrame, key: key,
                                                                 sentAtMs: WireHardeningIntegrationTests.nowMs()))
    }

    func send(_ bytes: [UInt8]) -> Bool { WireFixesIntegrationTests.sendAll(fd, bytes) }

    /// Reads one frame from the node (nil on timeout, close, or a frame that does not open).
    func readFrame(seconds: Double) -> LinkFrame? {
        func read(_ count: Int) -> [UInt8]? {
            var out = [UInt8]()
            let deadline = Date().addingTimeInterval(seconds)
            while out.count < count {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let left = Int32(max(0, deadline.timeIntervalSinceNow) * 1000)
                guard poll(&p, 1, left) > 0 else { return nil }
                var chunk = [UInt8](repeating: 0, count: count - out.count)
                let n = recv(fd, &chunk, chunk.count, 0)
                guard n > 0 else { return nil }
                out += chunk[0..<n]
            }
            return out
        }
        guard let header = read(4) else { return nil }
        let length = Int(header.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        guard length < 1 << 24, let sealed = read(length),
              let keyring = try? Keyring(keys: [key]),
              let plain = try? Envelope.open(sealed, kind: .linkFrame, keyring: keyring, nowMs: WireHardeningIntegrationTests.nowMs(), maxAgeMs: 30_000)
        else { return nil }
        return try? LinkFrame.decode(plain)
    }

    func isClosed(within seconds: Double) -> Bool { WireFixesIntegrationTests.isClosed(fd, within: seconds) }

    func close() { Glibc.close(fd) }
}

/// Established TCP connections (IPv4) whose remote end is 127.0.0.1:port, from /proc/net/tcp
/// (read line by line with stdio: a proc file has no size to read up to).
func establishedConnections(toPort port: UInt16) -> Int {
    guard let file = fopen("/proc/net/tcp", "r") else { return -1 }
    defer { fclose(file) }
    let wanted = String(format: "0100007F:%04X", port)
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    defer { free(line) }
    var count = 0
    while getline(&line, &capacity, file) > 0, let line {
        let fields = String(cString: line).split(separator: " ")
        if fields.count > 3, fields[2] == wanted, fields[3] == "01" { count += 1 }
    }
    return count
}
