import Foundation
import Testing
@testable import StarlingCore

/// Live placement (`SessionLivePlacement`): the weighted ring's order, the load bound applied
/// with gossiped loads, and how many sessions a join moves.
@Suite struct SessionLivePlacementTests {
    static func candidates(_ names: [String], slots: [Int]? = nil) -> [SessionLivePlacement.Candidate] {
        names.enumerated().map { SessionLivePlacement.Candidate(name: $1, slots: slots?[$0] ?? 4, owned: 0) }
    }

    /// Places `ids` one by one on the first member with room, counting loads exactly.
    static func create(_ ids: [String], on candidates: [SessionLivePlacement.Candidate], epsilon: Double = 0.25)
        -> (placement: SessionLivePlacement, owners: [String: PeerName]) {
        var placement = SessionLivePlacement(ring: SessionLivePlacement.ring(for: candidates), candidates: candidates, epsilon: epsilon)
        var owners: [String: PeerName] = [:]
        for id in ids {
            let owner = placement.owners(for: id).first!
            placement.add(owner)
            owners[id] = owner
        }
        return (placement, owners)
    }

    /// What the live mesh does after a join, with exact loads: every session moves to its
    /// target (a member ahead of its owner with room), then members over their bound shed.
    static func migrate(_ owners: inout [String: PeerName], to candidates: [SessionLivePlacement.Candidate], epsilon: Double = 0.25) -> Set<String> {
        var loads: [PeerName: Int] = [:]
        for o in owners.values { loads[o, default: 0] += 1 }
        let withLoads = candidates.map { SessionLivePlacement.Candidate(name: $0.name, slots: $0.slots, owned: loads[$0.name] ?? 0) }
        var placement = SessionLivePlacement(ring: SessionLivePlacement.ring(for: withLoads), candidates: withLoads, epsilon: epsilon)
        var moved: Set<String> = []
        for leaving in [false, true] {
            for id in owners.keys.sorted() {
                let current = owners[id]!
                if leaving && !placement.isOverBound(current) { continue }
                guard let to = placement.target(for: id, current: current, leaving: leaving) else { continue }
                #expect(to != current)
                placement.move(from: current, to: to)
                owners[id] = to
                moved.insert(id)
            }
        }
        return moved
    }

    static let ids = (0..<10_000).map { "session-\($0)" }

    @Test func sharesFollowSlots() {
        let (placement, owners) = Self.create(Self.ids, on: Self.candidates(["a", "b", "c", "d"], slots: [8, 4, 4, 4]))
        var loads: [PeerName: Int] = [:]
        for o in owners.values { loads[o, default: 0] += 1 }
        #expect(abs(Double(loads["a"]!) / 10_000 - 0.4) <= 0.04, "\(loads)")
        for m in ["b", "c", "d"] { #expect(abs(Double(loads[m]!) / 10_000 - 0.2) <= 0.02, "\(loads)") }
        for m in ["a", "b", "c", "d"] { #expect(!placement.isOverBound(m)) }
    }

    @Test func aMemberAtItsBoundIsTriedLast() {
        var candidates = Self.candidates(["a", "b", "c", "d"])
        candidates[0].owned = 100  // a: far over 1.25 × (100 + 1) / 4
        let placement = SessionLivePlacement(ring: SessionLivePlacement.ring(for: candidates), candidates: candidates, epsilon: 0.25)
        #expect(!placement.hasRoom("a") && placement.isOverBound("a"))
        for id in Self.ids.prefix(200) {
            let order = placement.owners(for: id)
            #expect(order.last == "a")
            #expect(Set(order) == ["a", "b", "c", "d"])
        }
        // An over-bound owner's sessions leave it when it sheds; otherwise they stay.
        let id = Self.ids.first { SessionLivePlacement.ring(for: candidates).preferenceList($0, count: 1) == ["a"] }!
        #expect(placement.target(for: id, current: "a", leaving: false) == nil)
        #expect(placement.target(for: id, current: "a", leaving: true) != nil)
    }

    @Test func aSessionMovesOnlyTowardTheFrontOfItsList() {
        let candidates = Self.candidates(["a", "b", "c", "d", "e"])
        let placement = SessionLivePlacement(ring: SessionLivePlacement.ring(for: candidates), candidates: candidates, epsilon: 0.25)
        for id in Self.ids.prefix(500) {
            let list = placement.ring.preferenceList(id, count: 5)
            for (position, current) in list.enumerated() {
                let to = placement.target(for: id, current: current, leaving: false)
                if position == 0 { #expect(to == nil) } else { #expect(to == list[0]) }
            }
        }
    }

    /// Issue #11 items 2 and 6: a 5th node joining 4 moves about 1/5 of 10,000 sessions, and
    /// no owner ends over (1 + ε) × the average. Prints `LIVE-PLACEMENT-JSON` for the benches.
    @Test func aJoinMovesAboutTheIdealFractionAndLoadsStayBounded() throws {
        let four = Self.candidates(["n1", "n2", "n3", "n4"])
        var (_, owners) = Self.create(Self.ids, on: four)
        let loadsFour = Dictionary(grouping: owners.values, by: { $0 }).mapValues(\.count)
        let moved = Self.migrate(&owners, to: Self.candidates(["n1", "n2", "n3", "n4", "n5"]))
        let loadsFive = Dictionary(grouping: owners.values, by: { $0 }).mapValues(\.count)
        let fraction = Double(moved.count) / Double(Self.ids.count)
        let maxOverAvgFour = Double(loadsFour.values.max()!) / (10_000.0 / 4)
        let maxOverAvgFive = Double(loadsFive.values.max()!) / (10_000.0 / 5)
        #expect(abs(fraction - 0.2) <= 0.02, "moved \(fraction)")
        #expect(maxOverAvgFive <= 1.25 + 1e-9)
        #expect(moved.allSatisfy { owners[$0] == "n5" } || maxOverAvgFive <= 1.25)
        // The same with a tight bound: it binds, and still moves about the ideal.
        var (_, tight) = Self.create(Self.ids, on: four, epsilon: 0.05)
        let movedTight = Self.migrate(&tight, to: Self.candidates(["n1", "n2", "n3", "n4", "n5"]), epsilon: 0.05)
        let tightLoads = Dictionary(grouping: tight.values, by: { $0 }).mapValues(\.count)
        let tightMax = Double(tightLoads.values.max()!) / 2_000
        #expect(tightMax <= 1.05 + 1e-3)
        let json: [String: Any] = [
            "sessions": Self.ids.count, "epsilon": 0.25, "idealFraction": 0.2,
            "liveJoinMovedFraction": fraction, "liveMaxOverAvgFour": (maxOverAvgFour * 10_000).rounded() / 10_000,
            "liveMaxOverAvgFive": (maxOverAvgFive * 10_000).rounded() / 10_000,
            "liveEpsilon0.05JoinMovedFraction": Double(movedTight.count) / 10_000, "liveEpsilon0.05MaxOverAvgFive": tightMax,
        ]
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        print("LIVE-PLACEMENT-JSON " + String(decoding: data, as: UTF8.self))
    }
}
