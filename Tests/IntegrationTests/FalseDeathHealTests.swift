import Foundation
import Testing

/// A member that the others hold dead while it is alive comes back fast, on real processes in
/// the fault rig (network namespaces, nftables drops; root only, like `FaultRigTests`).
///
/// With the `lan` preset the members that declared the death tell the member itself (at once,
/// then after 1, 2, 4, 8 ... periods for 30 s), and every member that hears from a member it holds dead tells it so
/// (`tellAccused`): the member refutes within about a period of the heal. Without it (the
/// `memberlist` preset) nothing tells a member that it is held dead: it comes back only when a
/// reconnect push-pull happens to pick it (each survivor every 10 s, with probability dead/alive)
/// or at its own periodic push-pull (every 30 s): measured 0.5-19 s, often 8 s or more; `lan` 0.2-1.1 s.
@Suite("Fault rig: a member wrongly held dead comes back", .serialized,
       .enabled(if: FaultRig.unavailableReason == nil || FaultRig.mustRun,
                Comment(rawValue: FaultRig.unavailableReason ?? "")))
struct FalseDeathHealTests {
    /// The heal, from the moment n1's links are back to every other member listing it alive, must
    /// take at most issue #9's aim, 2·log₂N periods (N = 5, `lan`'s 1 s period: 4.64 s). About a
    /// period is expected (n1's next ping draws a tell, then 1-2 gossip rounds): 0.17-1.53 s in
    /// this session's runs, and once 4.11 s in a fresh-clone CI run (n1 still suspected two of
    /// the others just after the heal), which failed the 4 s bound this test had before.
    static let healBound: Double = 2 * log2(5.0)
    /// How long n1 stays cut off after every other member lists it dead.
    static let heldDeadFor: Double = 3

    @Test func anIsolatedMemberHeldDeadIsAliveEverywhereSoonAfterTheHeal() throws {
        let rig = try FaultRig(nodes: 5, preset: "lan")
        defer { rig.down() }
        try rig.startAll()
        let others = ["n2", "n3", "n4", "n5"]

        // Accusations told from here on: the declarers tell n1 at once (into the cut) and retell,
        // and after the heal whoever n1 pings tells it. (Counted from before the cut: a heal can
        // be fast enough that no tell falls after the heal, and the old protocol tells nothing.)
        let toldBefore = try rig.answeredMetricSum("starling_accusations_told_total", over: rig.nodeNames)
        // Cut n1 from everyone until every other member has declared it dead (it is alive all along).
        try rig.isolate("n1")
        try rig.waitUntil("n2...n5 list the isolated n1 dead", seconds: 30) { rig.allSee(["n1"], as: "dead", by: others) }
        #expect(rig.dropped() > 0, "the isolation dropped nothing")
        // n1 stays cut off a while longer: the scenario is a member held dead for some seconds,
        // not one whose death is still being gossiped (a few 200 ms rounds; that gossip also goes
        // to the dead member, and so heals it without any telling).
        Thread.sleep(forTimeInterval: Self.heldDeadFor)

        try rig.heal("n1")
        let healedAt = Date()
        // A generous deadline, so that a failure says how long the heal took rather than only
        // that it was late.
        try rig.waitUntil("n2...n5 list n1 alive after the heal", seconds: 40) { rig.allSee(["n1"], as: "alive", by: others) }
        let healSeconds = Date().timeIntervalSince(healedAt)
        let toldAfter = try rig.answeredMetricSum("starling_accusations_told_total", over: rig.nodeNames)
        print("false-death heal (lan, 5 nodes): n1 alive at every other member \(String(format: "%.2f", healSeconds)) s after the heal;"
              + " accusations told \(toldBefore) before, \(toldAfter) after")
        #expect(healSeconds <= Self.healBound,
                "n1 came back after \(healSeconds) s, more than \(Self.healBound) s\n\(rig.describeViews())")
        #expect(toldAfter > toldBefore, "nobody told n1 of its death")
        // No check that n1 refutes after the heal: when n1 had already refuted an earlier
        // suspicion (at the start of the cut, before its links were all down) and the others
        // declared it dead at the incarnation before, the tell is stale and n1 answers with its
        // current alive, which wins without a new refutation (seen once in a full-suite run).

        // And the mesh is whole again: n1 too lists everyone alive.
        try rig.waitUntil("all five list all five alive", seconds: 30) {
            rig.allSee(rig.nodeNames, as: "alive", by: rig.nodeNames)
        }
    }
}
