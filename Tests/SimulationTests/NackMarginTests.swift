import StarlingCore
import Testing
@testable import StarlingSimulation

/// A helper nacks `nackDelay` after it gets a ping-req; the prober gives up at the end of its
/// interval (`indirectProbeTimeout` nil) or `indirectProbeTimeout` after sending the ping-reqs,
/// whichever is first. What is left for the nack's round trip is the nack margin. With
/// Lifeguard's 0.8 × probeTimeout it was `.memberlist` 1,000 − 500 − 400 = 100 ms, `.lan`
/// 300 − 240 = 60 ms, `.loopback` 100 − 50 − 40 = 10 ms; a nack later than that counts as
/// missing, and Lifeguard adds a point of local health to the prober for each: the prober of a
/// crashed member slowed itself down for nothing (on `.loopback` a 6 ms one-way latency took
/// the detection max from 11.5 to 19.0 periods). `nackDelay` is now at most half the indirect
/// timeout: margins 150 ms (`.lan`) and 25 ms (`.loopback`).
@Suite("Nack margin: helpers nack before the prober gives up")
struct NackMarginTests {
    func detection(_ preset: String, oneWayLatency: Duration) -> SimulationReport {
        var network = SimulatedNetwork()
        network.minimumLatency = oneWayLatency
        network.jitterMean = .microseconds(100)
        network.maximumLatency = oneWayLatency + .milliseconds(10)
        let config = SimulationConfig(nodes: 50, seed: 7, settings: MembershipSettings.preset(named: preset)!, network: network)
        return Simulator(scenario: Scenario.named("mass-crash")!, config: config).run()
    }

    @Test
    func aRoundTripBeyondTheNackMarginDoesNotSlowDetection() {
        let near = detection("loopback", oneWayLatency: .milliseconds(4))
        let far = detection("loopback", oneWayLatency: .milliseconds(6))
        #expect(near.violations.isEmpty && far.violations.isEmpty)
        #expect(far.detectionPeriods.max <= near.detectionPeriods.max + 2,
                "detection max \(far.detectionPeriods.max) at 6 ms one way against \(near.detectionPeriods.max) at 4 ms")
    }

    /// The control: `.memberlist` (margin 100 ms) with round trips of 40 and 90 ms, both within
    /// its margin, detects as fast.
    @Test func underMemberlistTimingTheSameRoundTripChangesNothing() {
        let near = detection("memberlist", oneWayLatency: .milliseconds(20))
        let far = detection("memberlist", oneWayLatency: .milliseconds(45))
        #expect(near.violations.isEmpty && far.violations.isEmpty)
        #expect(far.detectionPeriods.max <= near.detectionPeriods.max + 2)
    }
}
