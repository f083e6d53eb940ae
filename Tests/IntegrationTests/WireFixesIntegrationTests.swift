import Foundation
import Glibc
import StarlingCore
import StarlingCrypto
import Testing

/// The security review of the wire hardening, against real `starling node` processes: a
/// captured hello cannot be replayed, and authenticated streams cannot make a node buffer
/// without bound.
@Suite("Wire review fixes with real processes", .serialized)
struct WireFixesIntegrationTests {
    typealias W = WireHardeningIntegrationTests

    /// A TCP connection to 127.0.0.1:port from `source` (an address in 127/8).
    static func connectFrom(_ source: String, to port: UInt16) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, withLoopback(port: port, { connect(fd, $0, $1) == 0 }) else {
            close(fd)
            return nil
        }
        return fd
    }

    static func sendAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var bytes = bytes
        return send(fd, &bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count
    }

    /// Whether the node closed `fd` within `seconds`.
    static func isClosed(_ fd: Int32, within seconds: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var sink = [UInt8](repeating: 0, count: 64)
        return poll(&p, 1, Int32(seconds * 1000)) > 0 && recv(fd, &sink, sink.count, Int32(MSG_DONTWAIT)) <= 0
    }

    /// A peak resident set size of a process, in bytes (VmHWM in /proc).
    static func peakResidentBytes(_ pid: Int32) -> Double {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        return (Double(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    @Test func aReplayedHelloIsRefusedOnASecondConnection() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("r1")
        let key = try Keyring.load(path: cluster.keyFile).primary
        let hello = W.hello(to: a.gossipPort, key: key)
        let first = try #require(Self.connectFrom("127.0.0.1", to: a.gossipPort))
        defer { close(first) }
        #expect(Self.sendAll(first, hello))
        try waitUntil("the node has read the first hello", seconds: 3) { a.metric("starling_stream_hellos_total") == 1 }
        // The same bytes, as someone who captured them sends them, from another address.
        let replay = try #require(Self.connectFrom("127.0.0.2", to: a.gossipPort))
        defer { close(replay) }
        #expect(Self.sendAll(replay, hello))
        #expect(Self.isClosed(replay, within: 2), "the replayed hello kept its connection")
        #expect(a.metric("starling_packets_dropped_total{reason=\"hello_replay\"}") == 1)
        #expect(a.metric("starling_stream_hellos_total") == 1)
        #expect(!Self.isClosed(first, within: 0), "the first connection is not disturbed")
    }

    /// 96 authenticated streams (fresh hellos: the sender holds the key) each declare an 8 MiB
    /// frame and send it as fast as they can. The node buffers at most `maxBufferedStreamBytes`
    /// (32 MiB) across them; its peak RSS must stay far below 96 × 8 MiB.
    @Test func authenticatedStreamsDeclaringLargeFramesCannotExhaustMemory() throws {
        W.raiseOpenFileLimit()
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("m1")
        let key = try Keyring.load(path: cluster.keyFile).primary
        try waitUntil("the node serves", seconds: 5) { a.members() != nil }
        let before = Self.peakResidentBytes(a.pid)
        var fds: [Int32: Int] = [:]  // descriptor -> bytes of the frame sent so far
        for i in 0..<96 {
            guard let fd = Self.connectFrom("127.0.0.\(2 + i / 12)", to: a.gossipPort) else { continue }
            let header = W.hello(to: a.gossipPort, key: key) + [0x00, 0x80, 0x00, 0x00]
            if Self.sendAll(fd, header) { fds[fd] = 0 } else { close(fd) }
        }
        defer { for fd in fds.keys { close(fd) } }
        #expect(fds.count == 96)
        let frameBytes = 8 << 20
        let chunk = [UInt8](repeating: 0x5A, count: 256 << 10)
        let deadline = Date().addingTimeInterval(8)
        while Date() < deadline, fds.values.contains(where: { $0 >= 0 && $0 < frameBytes }) {
            for (fd, sent) in fds where sent >= 0 && sent < frameBytes {
                let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress, min(chunk.count, frameBytes - sent), Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                if n > 0 { fds[fd] = sent + n } else if n < 0, errno != EAGAIN { fds[fd] = -1 }
            }
            usleep(1000)
        }
        let offered = fds.values.reduce(0) { $0 + max(0, $1) }
        let grown = Self.peakResidentBytes(a.pid) - before
        print("offered \(offered >> 20) MiB on \(fds.count) streams; node VmHWM grew by \(Int(grown) >> 20) MiB (from \(Int(before) >> 20) MiB)")
        #expect(a.metric("starling_packets_dropped_total{reason=\"stream_memory\"}") >= 1)
        #expect(grown < 128 * 1024 * 1024, "the node's peak RSS grew by \(Int(grown) >> 20) MiB")
        #expect(a.isRunning)
    }

    /// An authenticated stream is never evicted, so it may not sit on its slot: after the hello
    /// the request frame must be complete within `authTimeout` (3 s), not the whole 5 s.
    @Test func anAuthenticatedStreamThatSendsNothingIsClosedAtTheFrameDeadline() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("d1")
        let key = try Keyring.load(path: cluster.keyFile).primary
        let fd = try #require(Self.connectFrom("127.0.0.1", to: a.gossipPort))
        defer { close(fd) }
        let started = Date()
        #expect(Self.sendAll(fd, W.hello(to: a.gossipPort, key: key)))
        #expect(Self.isClosed(fd, within: 6))
        let closedAfter = Date().timeIntervalSince(started)
        #expect(closedAfter > 2.5 && closedAfter < 4.5, "closed after \(closedAfter)s; the frame deadline is 3 s")
        #expect(a.metric("starling_stream_hellos_total") == 1)
    }

    /// One push-pull of invented members adds at most 256 of them, and the rest is visible in
    /// `starling_members_rejected_total` (it was counted but not exported).
    @Test func anInboundPushPullOfInventedMembersIsCappedAndCounted() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let a = try cluster.start("p1")
        let key = try Keyring.load(path: cluster.keyFile).primary
        let state = PushPullState(join: false, source: "intruder", entries: (0..<300).map {
            .init(name: "fake-\($0)", address: NodeAddress(host: "127.0.0.2", port: UInt16(20_000 + $0)),
                  incarnation: 1, status: .alive, metadata: MemberMetadata())
        })
        sendStream(W.pushPullRequest(state.encoded(), key: key, port: a.gossipPort), to: a.gossipPort)
        try waitUntil("the rejected members are counted", seconds: 5) { a.metric("starling_members_rejected_total") == 44 }
        #expect(a.members()?.count == 1 + 256)
    }
}
