import Foundation
import StarlingCore
@testable import StarlingRuntime
import StarlingSandbox
import Testing

/// The sizes the swarm protocol lets a message, a result and a swarm have, against what the
/// runtime carries: a bound on one side that the other does not honour loses messages silently.
@Suite("Swarm size bounds across the layers")
struct SwarmBoundsTests {
    @Test func theLargestSwarmMessageFitsALinkFrameAndALinkQueue() {
        let config = MeshConfiguration(name: "n", bind: NodeAddress(host: "127.0.0.1", port: 1), api: "", seeds: [], slots: 1,
                                       keyFile: "", settings: .lan)
        #expect(config.maxLinkFrameBytes >= Swarm.maxMessageBytes, "a swarm message the protocol may send would be dropped as oversize")
        #expect(config.maxLinkQueueBytes >= 2 * config.maxLinkFrameBytes, "one largest frame would fill a link's queue")
        #expect(config.maxBufferedStreamBytes > config.maxLinkFrameBytes, "an inbound largest frame would exceed the buffer budget")
        // The definition a client may submit (8 MiB of inputs) fits the protocol's own bound.
        #expect(StarlingSandbox.SwarmLimits.maxInputBytes * 3 / 2
                <= StarlingCore.SwarmLimits.maxMessageBytes - StarlingCore.SwarmLimits.pageBytes - StarlingCore.SwarmLimits.maxResultBytes)
        #expect(StarlingSandbox.SwarmLimits.maxTaskInputBytes * 3 / 2 < StarlingCore.SwarmLimits.maxPayloadBytes)
    }

    @Test func aResultTooLargeToTravelIsCutWithWarningsNotDropped() throws {
        let limit = 64 << 10
        let big = String(repeating: "x", count: 200 << 10)
        let result = TaskResult(exitCode: 0, signal: nil, reason: .exited, stdout: big, stderr: "err\n", truncated: false,
                                outputs: ["a.txt": big], node: "n1", attempts: 1, durationMs: 1, cpuMs: 1, peakMemoryKB: 1)
        let bytes = SwarmTaskExecutor.travelling(result, limit: limit)
        #expect(bytes.count <= limit)
        let back = try JSONDecoder().decode(TaskResult.self, from: Data(bytes))
        #expect(back.outputs.isEmpty)
        #expect(back.truncated)
        #expect(back.exitCode == 0, "the run's outcome survives")
        #expect(back.warnings?.count == 2)
        #expect(back.stdout.utf8.count == limit / 16)
        // Within the bound, nothing changes.
        let small = TaskResult(exitCode: 0, signal: nil, reason: .exited, stdout: "ok\n", stderr: "", truncated: false,
                               outputs: ["a.txt": "1"], node: "n1", attempts: 1, durationMs: 1, cpuMs: 1, peakMemoryKB: 1)
        #expect(try JSONDecoder().decode(TaskResult.self, from: Data(SwarmTaskExecutor.travelling(small, limit: limit))) == small)
    }

    @Test func aSwarmTaskOverItsInputBoundIsRefusedBeforeItReachesTheMesh() {
        let fat = TaskSpec(argv: ["sh", "-c", "true"], stdin: String(repeating: "y", count: StarlingSandbox.SwarmLimits.maxTaskInputBytes + 1))
        #expect(throws: InvalidSwarm.self) { try StarlingSandbox.SwarmLimits.validate(SwarmSpec(tasks: [fat])) }
        let fine = TaskSpec(argv: ["sh", "-c", "true"], stdin: String(repeating: "y", count: 1000))
        #expect(throws: Never.self) { try StarlingSandbox.SwarmLimits.validate(SwarmSpec(tasks: [fine])) }
    }
}
