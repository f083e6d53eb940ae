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
        try rig.waitUntil("each side lists the other dead and its own alive", seconds: 30) {
            rig.allSee(right, as: "dead", by: left) && rig.allSee(left, as: "dead", by: right)
                && rig.allSee(left, as: "alive", by: left) && rig.allSee(right, as: "alive", by: right)
        }
        #expect(rig.dropped() > 0, "the partition's rules dropped nothing")

        try rig.heal()
        try rig.waitUntil("all five list all five alive after the heal", seconds: 30) { rig.allSee(all, as: "alive", by: all) }
    }

    /// 20% loss each way on every link of n1, for 30 probe periods of the `lan` preset (30 s), the
    /// timing production runs: SWIM's indirect probes and Lifeguard's suspicion must keep anyone
    /// from being declared dead. (With the `loopback` preset, 100 ms probes, a CI run of the whole
    /// suite on 2 cores once had every node declare n1 dead here: CPU stalls of the busy machine
    /// on top of the loss; NOTES has it.)
    @Test func twentyPercentLossOnOneNodeDeclaresNobodyDead() throws {
        let rig = try FaultRig(nodes: 5, preset: "lan")
        defer { rig.down() }
        try rig.startAll()
        let deathsBefore = try rig.answeredMetricSum("starling_deaths_total", over: rig.nodeNames)

        try rig.loss("n1", percent: 20)
        let falseDeaths = Set(deathsSeen(in: rig, for: 30)).sorted()
        #expect(rig.dropped() > 0, "the loss rules dropped nothing")
        #expect(falseDeaths == [], "false deaths under 20% loss")
        #expect(try rig.answeredMetricSum("starling_deaths_total", over: rig.nodeNames) == deathsBefore,
                "a death was declared (and perhaps refuted) between two polls")
        try rig.heal()
        // A suspicion raised by the last lost packets may still be open at the heal (a suspect
        // is not dead); it is refuted within a period or two.
        try rig.waitUntil("all five list all five alive after the heal", seconds: 10) {
            rig.allSee(rig.nodeNames, as: "alive", by: rig.nodeNames)
        }
    }

    /// n1's packets to n2 are lost; n2's reach n1. n2's probes of n1 get no direct ack, but an
    /// indirect probe through n3, n4 or n5 does (n1 answers them), and n1's probes of n2 go
    /// indirect the same way. So nobody is declared dead: at most a suspicion, refuted.
    /// On the `lan` preset for 20 periods, like the loss test, so that CPU stalls of a loaded
    /// machine cannot pass for the network's doing.
    @Test func aOneWayCutDeclaresNobodyDead() throws {
        let rig = try FaultRig(nodes: 5, preset: "lan")
        defer { rig.down() }
        try rig.startAll()
        let deathsBefore = try rig.answeredMetricSum("starling_deaths_total", over: rig.nodeNames)

        try rig.cut("n1", "n2", oneWay: true)
        let falseDeaths = Set(deathsSeen(in: rig, for: 20)).sorted()
        #expect(rig.dropped() > 0, "the one-way cut dropped nothing")
        #expect(falseDeaths == [], "false deaths under a one-way cut")
        #expect(try rig.answeredMetricSum("starling_deaths_total", over: rig.nodeNames) == deathsBefore)
        try rig.heal()
        // A suspicion raised by the last lost packets may still be open at the heal (a suspect
        // is not dead); it is refuted within a period or two.
        try rig.waitUntil("all five list all five alive after the heal", seconds: 10) {
            rig.allSee(rig.nodeNames, as: "alive", by: rig.nodeNames)
        }
    }

    @Test func killStopContinueAndIsolate() throws {
        let rig = try FaultRig(nodes: 4)
        defer { rig.down() }
        try rig.startAll()
        let all = rig.nodeNames

        // kill -9: dead everywhere; started again on the same data dir, alive everywhere.
        try rig.kill("n4")
        try rig.waitUntil("the rest list the killed n4 dead", seconds: 20) { rig.allSee(["n4"], as: "dead", by: ["n1", "n2", "n3"]) }
        try rig.start("n4")
        try rig.waitUntil("the restarted n4 is alive everywhere", seconds: 20) { rig.allSee(all, as: "alive", by: all) }

        // SIGSTOP: dead to the rest; SIGCONT: it refutes and is alive everywhere again.
        try rig.stop("n3")
        try rig.waitUntil("the rest list the stopped n3 dead", seconds: 20) { rig.allSee(["n3"], as: "dead", by: ["n1", "n2", "n4"]) }
        try rig.cont("n3")
        try rig.waitUntil("the resumed n3 is alive everywhere", seconds: 20) { rig.allSee(all, as: "alive", by: all) }

        // Isolated: n1 and the rest list each other dead; healed, all alive again.
        try rig.isolate("n1")
        try rig.waitUntil("n1 and the rest list each other dead", seconds: 20) {
            rig.allSee(["n1"], as: "dead", by: ["n2", "n3", "n4"]) && rig.allSee(["n2", "n3", "n4"], as: "dead", by: ["n1"])
        }
        try rig.heal("n1")
        try rig.waitUntil("all alive after n1's heal", seconds: 20) { rig.allSee(all, as: "alive", by: all) }
    }

    /// `down` ends every node by PID and leaves no namespace or state behind; a rig whose owner
    /// died (a crashed or interrupted test) is taken down by the next `sweep`.
    @Test func downAndSweepLeaveNothingBehind() throws {
        func processRuns(_ pid: Int32) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
            return !(stat.split(separator: ")").last ?? "").hasPrefix(" Z")
        }
        let rig = try FaultRig(nodes: 2)
        try rig.startAll()
        let pids = try rig.status().members.compactMap(\.pid)
        let work = try rig.status().work
        #expect(pids.count == 2 && pids.allSatisfy(processRuns))
        #expect(rig.namespaces().count == 3)
        rig.down()
        #expect(rig.namespaces() == [])
        #expect(!pids.contains(where: processRuns))
        #expect(!FileManager.default.fileExists(atPath: work))

        // A rig owned by a process that then dies, as a test killed before its `defer` would.
        let owner = Process()
        owner.executableURL = URL(fileURLWithPath: "/bin/sleep")
        owner.arguments = ["600"]
        try owner.run()
        let orphan = try FaultRig(nodes: 2, owner: owner.processIdentifier)
        defer { orphan.down() }
        try orphan.startAll()
        let orphanPids = try orphan.status().members.compactMap(\.pid)
        try FaultRig.script(["sweep"])
        #expect(orphan.namespaces().count == 3, "sweep took down a rig whose owner still runs")
        // SIGKILL, as a crash: a child of a test thread inherits its blocked signals, SIGTERM among them.
        kill(owner.processIdentifier, SIGKILL)
        owner.waitUntilExit()
        try FaultRig.script(["sweep"])
        #expect(orphan.namespaces() == [])
        #expect(!orphanPids.contains(where: processRuns))
    }

    /// Delay needs netem: applied where the kernel has it, and refused with its reason where not.
    @Test func delayIsAppliedOrRefusedWithItsReason() throws {
        let rig = try FaultRig(nodes: 1)
        defer { rig.down() }
        if try rig.status().netem {
            try rig.delay("n1", milliseconds: 20)
            #expect(try rig.run(in: "n1", ["tc", "qdisc", "show", "dev", "eth0"]).contains("netem"))
        } else {
            #expect(throws: NetemUnavailable.self) { try rig.delay("n1", milliseconds: 20) }
            print("fault rig: delay and reordering skipped: the kernel lacks netem")
        }
    }
}
