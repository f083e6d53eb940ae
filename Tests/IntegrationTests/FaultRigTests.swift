import Foundation
import Glibc
import Testing

/// Membership under real network faults: real `starling node` processes, each in its own network
/// namespace, with loss, cuts and partitions applied by nftables at the bridge between them.
///
/// They need root and `ip netns`. In CI (which runs as root) a missing capability fails them with
/// its reason; by hand as another user they are skipped with that reason, never silently.
@Suite("Fault rig: membership under partitions, loss and signals", .serialized,
       .enabled(if: FaultRig.unavailableReason == nil || FaultRig.mustRun,
                Comment(rawValue: FaultRig.unavailableReason ?? "")))
struct FaultRigTests {
    /// Polls every node's view until `seconds` have passed and returns each time any node listed
    /// any member as dead, did not answer or listed the wrong number of members, as
    /// "observer: what".
    func deathsSeen(in rig: FaultRig, for seconds: Double) -> [String] {
        var seen: [String] = []
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            for (observer, list) in rig.members() {
                guard let list else { seen.append("\(observer): no answer"); continue }
                for m in list where m.status == "dead" { seen.append("\(observer): \(m.name) dead") }
                if list.count != rig.nodeNames.count { seen.append("\(observer): lists \(list.count) members") }
            }
            usleep(50_000)
        }
        return seen
    }

    @Test func aTwoThreePartitionSplitsTheMeshAndHealsWhole() throws {
        let rig = try FaultRig(nodes: 5)
        defer { rig.down() }
        try rig.startAll()
        let left = ["n1", "n2"], right = ["n3", "n4", "n5"], all = left + right

        try rig.partition(left, right)
        // Both sides converge: each lists its own side alive and the other side dead.
        try waitUntil("each side lists the other dead and its own alive", seconds: 30) {
            rig.allSee(right, as: "dead", by: left) && rig.allSee(left, as: "dead", by: right)
                && rig.allSee(left, as: "alive", by: left) && rig.allSee(right, as: "alive", by: right)
        }
        #expect(rig.dropped() > 0, "the partition's rules dropped nothing")

        try rig.heal()
        try waitUntil("all five list all five alive after the heal", seconds: 30) { rig.allSee(all, as: "alive", by: all) }
    }

    /// 20% loss each way on every link of n1, for 100 probe periods of the loopback preset (10 s):
    /// SWIM's indirect probes and Lifeguard's suspicion must keep anyone from being declared dead.
    @Test func twentyPercentLossOnOneNodeDeclaresNobodyDead() throws {
        let rig = try FaultRig(nodes: 5)
        defer { rig.down() }
        try rig.startAll()
        let deathsBefore = rig.metricSum("starling_deaths_total", over: rig.nodeNames)

        try rig.loss("n1", percent: 20)
        let falseDeaths = Set(deathsSeen(in: rig, for: 10)).sorted()
        #expect(rig.dropped() > 0, "the loss rules dropped nothing")
        #expect(falseDeaths == [], "false deaths under 20% loss")
        #expect(rig.metricSum("starling_deaths_total", over: rig.nodeNames) == deathsBefore,
                "a death was declared (and perhaps refuted) between two polls")
        try rig.heal()
        #expect(rig.allSee(rig.nodeNames, as: "alive", by: rig.nodeNames))
    }

    /// n1's packets to n2 are lost; n2's reach n1. n2's probes of n1 get no direct ack, but an
    /// indirect probe through n3, n4 or n5 does (n1 answers them), and n1's probes of n2 go
    /// indirect the same way. So nobody is declared dead: at most a suspicion, refuted.
    @Test func aOneWayCutDeclaresNobodyDead() throws {
        let rig = try FaultRig(nodes: 5)
        defer { rig.down() }
        try rig.startAll()
        let deathsBefore = rig.metricSum("starling_deaths_total", over: rig.nodeNames)

        try rig.cut("n1", "n2", oneWay: true)
        let falseDeaths = Set(deathsSeen(in: rig, for: 10)).sorted()
        #expect(rig.dropped() > 0, "the one-way cut dropped nothing")
        #expect(falseDeaths == [], "false deaths under a one-way cut")
        #expect(rig.metricSum("starling_deaths_total", over: rig.nodeNames) == deathsBefore)
        try rig.heal()
        #expect(rig.allSee(rig.nodeNames, as: "alive", by: rig.nodeNames))
    }

    @Test func killStopContinueAndIsolate() throws {
        let rig = try FaultRig(nodes: 4)
        defer { rig.down() }
        try rig.startAll()
        let all = rig.nodeNames

        // kill -9: dead everywhere; started again on the same data dir, alive everywhere.
        try rig.kill("n4")
        try waitUntil("the rest list the killed n4 dead", seconds: 20) { rig.allSee(["n4"], as: "dead", by: ["n1", "n2", "n3"]) }
        try rig.start("n4")
        try waitUntil("the restarted n4 is alive everywhere", seconds: 20) { rig.allSee(all, as: "alive", by: all) }

        // SIGSTOP: dead to the rest; SIGCONT: it refutes and is alive everywhere again.
        try rig.stop("n3")
        try waitUntil("the rest list the stopped n3 dead", seconds: 20) { rig.allSee(["n3"], as: "dead", by: ["n1", "n2", "n4"]) }
        try rig.cont("n3")
        try waitUntil("the resumed n3 is alive everywhere", seconds: 20) { rig.allSee(all, as: "alive", by: all) }

        // Isolated: n1 and the rest list each other dead; healed, all alive again.
        try rig.isolate("n1")
        try waitUntil("n1 and the rest list each other dead", seconds: 20) {
            rig.allSee(["n1"], as: "dead", by: ["n2", "n3", "n4"]) && rig.allSee(["n2", "n3", "n4"], as: "dead", by: ["n1"])
        }
        try rig.heal("n1")
        try waitUntil("all alive after n1's heal", seconds: 20) { rig.allSee(all, as: "alive", by: all) }
    }
}
