import Foundation
import Glibc
import StarlingCore
import StarlingCrypto
@testable import StarlingRuntime
import Testing

/// Request/response over one persistent link against the old connection per exchange.
/// Runs only with STARLING_LINK_BENCH=1 and prints one JSON line per figure:
/// `STARLING_LINK_BENCH=1 swift test --skip-build --filter PeerLinkBenchmark`.
@Suite("Peer link benchmark", .serialized, .enabled(if: ProcessInfo.processInfo.environment["STARLING_LINK_BENCH"] == "1"))
struct PeerLinkBenchmark {
    static func report(_ name: String, _ latencies: [Double], seconds: Double) {
        let sorted = latencies.sorted()
        func p(_ q: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))] * 1000 }
        print(String(format: "{\"bench\":\"%@\",\"requests\":%d,\"requestsPerSecond\":%.0f,\"p50Ms\":%.3f,\"p99Ms\":%.3f}",
                     name, latencies.count, Double(latencies.count) / seconds, p(0.5), p(0.99)))
    }

    /// The old way: a connection, a hello, one push-pull request and its reply, per exchange.
    @Test func connectionPerExchange() async throws {
        let key = ClusterKey.generate()
        let b = try EchoNode("bench-b", key: key)
        defer { b.node.stop() }
        let state = PushPullState(join: false, source: "bench-b", entries: [
            .init(name: "bench-b", address: NodeAddress(host: "127.0.0.1", port: b.port), incarnation: 0, status: .alive,
                  metadata: MemberMetadata()),
        ]).encoded()
        func exchange() -> Bool {
            guard let fd = WireFixesIntegrationTests.connectFrom("127.0.0.1", to: b.port) else { return false }
            defer { close(fd) }
            guard WireFixesIntegrationTests.sendAll(fd, WireHardeningIntegrationTests.pushPullRequest(state, key: key, port: b.port)) else { return false }
            var header = [UInt8](repeating: 0, count: 4)
            guard recv(fd, &header, 4, Int32(MSG_WAITALL)) == 4 else { return false }
            let length = Int(header.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            var body = [UInt8](repeating: 0, count: length)
            return recv(fd, &body, length, Int32(MSG_WAITALL)) == length
        }
        for _ in 0..<20 { _ = exchange() }
        var latencies: [Double] = []
        let started = Date()
        for _ in 0..<500 {
            let t = Date()
            #expect(exchange())
            latencies.append(Date().timeIntervalSince(t))
        }
        Self.report("connection-per-exchange, sequential", latencies, seconds: Date().timeIntervalSince(started))
    }

    /// The same client pattern over one link: sequential, then 64 requests in flight.
    @Test func oneLinkRawClient() async throws {
        let key = ClusterKey.generate()
        let b = try EchoNode("bench-b", key: key)
        defer { b.node.stop() }
        var link = try #require(RawLink.open(to: b.port, key: key, name: "bench-client"))
        defer { link.close() }
        var id: UInt64 = 0
        func ask() -> Bool {
            id += 1
            guard link.send(link.frame(kind: .request, requestId: id, payload: [1, 2, 3, 4])) else { return false }
            return link.readFrame(seconds: 5)?.requestId == id
        }
        for _ in 0..<20 { _ = ask() }
        var latencies: [Double] = []
        var started = Date()
        for _ in 0..<2_000 {
            let t = Date()
            #expect(ask())
            latencies.append(Date().timeIntervalSince(t))
        }
        Self.report("one link (raw client), sequential", latencies, seconds: Date().timeIntervalSince(started))
        started = Date()
        var answered = 0
        for _ in 0..<200 {
            var batch: [UInt8] = []
            for _ in 0..<64 {
                id += 1
                batch += link.frame(kind: .request, requestId: id, payload: [1, 2, 3, 4])
            }
            #expect(link.send(batch))
            for _ in 0..<64 where link.readFrame(seconds: 5) != nil { answered += 1 }
        }
        let seconds = Date().timeIntervalSince(started)
        #expect(answered == 200 * 64)
        print(String(format: "{\"bench\":\"one link (raw client), 64 in flight\",\"requests\":%d,\"requestsPerSecond\":%.0f}",
                     answered, Double(answered) / seconds))
    }

    /// Node to node through the protocol host (command, link, peer's protocol, response, reply).
    @Test func nodeToNodeThroughTheHost() async throws {
        let (a, b, _) = try await PeerLinkTests.pair("bench-a", "bench-b2")
        defer { a.node.stop(); b.node.stop() }
        for _ in 0..<20 { _ = try await a.ask("bench-b2", [1]) }
        var latencies: [Double] = []
        var started = Date()
        for _ in 0..<2_000 {
            let t = Date()
            #expect(try await a.ask("bench-b2", [1, 2, 3, 4]) != nil)
            latencies.append(Date().timeIntervalSince(t))
        }
        Self.report("node to node via the host, sequential", latencies, seconds: Date().timeIntervalSince(started))
        started = Date()
        let total = 20_000
        let ok = try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<64 {
                group.addTask {
                    var n = 0
                    for _ in stride(from: worker, to: total, by: 64) where try await a.ask("bench-b2", [1, 2, 3, 4]) != nil { n += 1 }
                    return n
                }
            }
            return try await group.reduce(0, +)
        }
        let seconds = Date().timeIntervalSince(started)
        #expect(ok == total)
        print(String(format: "{\"bench\":\"node to node via the host, 64 in flight\",\"requests\":%d,\"requestsPerSecond\":%.0f}",
                     ok, Double(ok) / seconds))
        #expect(a.node.linkTally().links("dialled") == 1)
    }
}
