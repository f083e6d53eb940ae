import Foundation
import Glibc
import StarlingCore
import StarlingCrypto
import Synchronization
import Testing

/// Second security review, item 2, against real `starling node` processes: a key holder keeps
/// the inbound stream buffer full with stalled, almost complete 8 MiB frames (4 × 8 MiB − 8 fills
/// the 32 MiB bound). The stream that crossed the bound used to be failed, always the newcomer:
/// every join and push-pull of a real peer failed. Now the stream holding the most unfinished
/// bytes is closed, and our own push-pulls have their own reserve.
@Suite("Stream memory flood with real processes", .serialized)
struct StreamMemoryFloodTests {
    typealias W = WireHardeningIntegrationTests
    typealias F = WireFixesIntegrationTests

    /// Set by the test to stop the flood thread.
    final class StopFlag: Sendable {
        let stopped = Atomic<Bool>(false)
        /// How many of the flood's connections have sent their whole 8 MiB − 8 and stall.
        let stalled = Atomic<Int>(0)
    }

    /// The reviewer's memfill: `streams` connections, each a fresh hello (the sender holds the
    /// key), a declared 8 MiB frame, 8 MiB − 8 bytes of it, then silence; a connection the node
    /// closes is opened again at once. Runs until `stop` is set.
    static func flood(port: UInt16, streams: Int, key: ClusterKey, stop: StopFlag) {
        let frameBytes = 8 << 20
        let chunk = [UInt8](repeating: 0, count: 256 << 10)
        var slots: [(fd: Int32, sent: Int)] = Array(repeating: (-1, 0), count: streams)
        while !stop.stopped.load(ordering: .relaxed) {
            for i in slots.indices {
                var (fd, sent) = slots[i]
                if fd < 0 {
                    guard let c = F.connectFrom("127.0.0.\(2 + i)", to: port) else { continue }
                    let hello = W.hello(to: port, key: key)
                    guard F.sendAll(c, hello + [0x00, 0x80, 0x00, 0x00]) else { close(c); continue }
                    (fd, sent) = (c, 0)
                }
                if sent < frameBytes - 8 {
                    let n = chunk.withUnsafeBytes {
                        send(fd, $0.baseAddress, min(chunk.count, frameBytes - 8 - sent), Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                    }
                    if n > 0 { sent += n } else if n < 0, errno != EAGAIN { close(fd); fd = -1 }
                } else if F.isClosed(fd, within: 0) {
                    close(fd)
                    fd = -1
                }
                slots[i] = (fd, sent)
            }
            stop.stalled.store(slots.count { $0.fd >= 0 && $0.sent >= frameBytes - 8 }, ordering: .relaxed)
            usleep(500)
        }
        for s in slots where s.fd >= 0 { close(s.fd) }
    }

    static func joined(_ a: NodeProcess, _ b: NodeProcess) -> Bool {
        a.status(of: b.name) == "alive" && b.status(of: a.name) == "alive"
    }

    @Test func aJoinSucceedsWhileAKeyHolderKeepsTheStreamBufferFull() throws {
        W.raiseOpenFileLimit()
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let seed = try cluster.start("s1")
        let key = try Keyring.load(path: cluster.keyFile).primary
        // Baseline in the same test: a join with no flood.
        let started = Date()
        let quiet = try cluster.start("j0", join: [seed])
        try waitUntil("j0 joins without a flood", seconds: 15) { Self.joined(seed, quiet) }
        let baseline = Date().timeIntervalSince(started)

        let stop = StopFlag()
        let port = seed.gossipPort
        let flooder = Thread { Self.flood(port: port, streams: 4, key: key, stop: stop) }
        flooder.start()
        defer { stop.stopped.store(true, ordering: .relaxed) }
        // Start the joiner right after all four frames stall: they fill the bound for the next
        // three seconds (authTimeout), so its first push-pull meets a full buffer.
        try waitUntil("the flood fills the buffer", seconds: 10) { stop.stalled.load(ordering: .relaxed) == 4 }
        usleep(200_000)   // the node reads the last bytes
        let joinStarted = Date()
        let joiner = try cluster.start("j1", join: [seed])
        let limit = max(15, 5 * baseline)
        var joinedInTime = true
        do { try waitUntil("j1 joins through s1 during the flood", seconds: limit) { Self.joined(seed, joiner) } } catch { joinedInTime = false }
        let took = Date().timeIntervalSince(joinStarted)
        stop.stopped.store(true, ordering: .relaxed)
        print("baseline join \(String(format: "%.2f", baseline)) s; join under flood \(String(format: "%.2f", took)) s; "
              + "stream_memory drops \(seed.metric("starling_packets_dropped_total{reason=\"stream_memory\"}"))")
        #expect(joinedInTime, "j1 did not join within \(limit) s while the flood held the stream buffer")
        #expect(joiner.metric("starling_push_pulls_failed_total") == 0, "the joiner's push-pulls failed against a full buffer")
        #expect(seed.metric("starling_packets_dropped_total{reason=\"stream_memory\"}") >= 1, "the flood never reached the bound")
        #expect(seed.isRunning)
    }
}
