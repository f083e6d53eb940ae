import Testing
@testable import StarlingCore

@Suite("Member table")
struct MemberTableTests {
    func member(_ name: String, _ status: MemberStatus = .alive, inc: UInt64 = 0) -> Member {
        Member(name: name, address: addr(1), incarnation: inc, status: status, metadata: MemberMetadata(), statusSince: .zero)
    }

    /// Checks the table against a plain dictionary: lookups, the status partition, the count.
    func check(_ t: MemberTable, against model: [String: Member], owner: String) {
        #expect(t.count == model.count)
        for (name, m) in model { #expect(t[name] == m, "lookup of \(name)") }
        #expect(Set(t.map(\.name)) == Set(model.keys))
        let active = Set(t.active.map { t.name(at: $0) })
        let inactive = Set(t.inactive.map { t.name(at: $0) })
        #expect(active == Set(model.values.filter { $0.name != owner && $0.status.isActive }.map(\.name)))
        #expect(inactive == Set(model.values.filter { $0.name != owner && !$0.status.isActive }.map(\.name)))
        #expect(t.active.count + t.inactive.count + 1 == t.count)
    }

    @Test func randomInsertsUpdatesAndRemovesAgreeWithADictionary() {
        var rng = DeterministicRNG(seed: 42)
        var t = MemberTable(owner: member("me"))
        var model = ["me": member("me")]
        for step in 0..<20_000 {
            // A small name space, so that removals and re-inserts collide with earlier probes.
            let name = "m\(Int.random(in: 0..<700, using: &rng))"
            switch (t.slot(of: name), Int.random(in: 0..<3, using: &rng)) {
            case (nil, _):
                let status = MemberStatus.allCases.randomElement(using: &rng)!
                t.insert(member(name, status))
                model[name] = member(name, status)
            case (let slot?, 0):
                t.remove(slot)
                model[name] = nil
                #expect(t[name] == nil)
            case (let slot?, _):
                let status = MemberStatus.allCases.randomElement(using: &rng)!
                t.update(slot) {
                    $0.status = status
                    $0.incarnation += 1
                }
                model[name]!.status = status
                model[name]!.incarnation += 1
            }
            if step % 997 == 0 { check(t, against: model, owner: "me") }
        }
        check(t, against: model, owner: "me")
        #expect(t.slot(of: "me") == 0)
    }

    @Test func iterationFollowsSlotsNotHashes() {
        var a = MemberTable(owner: member("me"))
        var b = MemberTable(owner: member("me"))
        for i in 0..<100 {
            a.insert(member("x\(i)"))
            b.insert(member("x\(i)"))
        }
        a.remove(a.slot(of: "x10")!)
        a.insert(member("late"))   // takes slot 11, which x10 freed
        #expect(Array(a.map(\.name).prefix(13)) == ["me"] + (0..<10).map { "x\($0)" } + ["late", "x11"])
        #expect(b.map(\.name) == ["me"] + (0..<100).map { "x\($0)" })
    }

    @Test func sampleNeverRepeatsAndHonoursTheExclusion() {
        var t = MemberTable(owner: member("me"))
        for i in 0..<5 { t.insert(member("a\(i)")) }
        t.insert(member("d", .dead))
        var rng = DeterministicRNG(seed: 7)
        for _ in 0..<50 {
            let picked = t.sample(.active, 4, excluding: "a2", using: &rng).map { t.name(at: $0) }
            #expect(picked.count == 4 && Set(picked).count == 4)
            #expect(!picked.contains("a2") && !picked.contains("d") && !picked.contains("me"))
        }
        #expect(t.sample(.inactive, 3, using: &rng).map { t.name(at: $0) } == ["d"])
    }

    @Test func entriesStayPacked() {
        var t = MemberTable(owner: member("me"))
        t.reserveCapacity(10_000)
        for i in 1..<10_000 { t.insert(member("n\(i)")) }
        // entries 112 + hashes 4 + position 4 + active list 4 + index (16,384 buckets × 4 / 10,000).
        // (96 since the metadata carries task memory, total and free, for swarm placement; 104
        // since it carries the member's identity key, one reference-counted array; 112 since it
        // carries the sessions the member owns, the load session placement bounds: 4 bytes that
        // align to 8.)
        #expect(MemoryLayout<Member?>.stride == 112)
        #expect(t.count == 10_000 && t.active.count == 9_999)
    }
}

@Suite("Min-heap")
struct MinHeapTests {
    @Test func popsInSortedOrder() {
        var rng = DeterministicRNG(seed: 9)
        var heap = MinHeap<Int>()
        var all: [Int] = []
        var popped: [Int] = []
        for _ in 0..<2_000 {
            if Int.random(in: 0..<3, using: &rng) > 0 {
                let x = Int.random(in: 0..<500, using: &rng)
                heap.push(x)
                all.append(x)
            } else if let x = heap.pop() {
                #expect(x == all.min(), "the least element comes out first")
                all.remove(at: all.firstIndex(of: x)!)
                popped.append(x)
            }
            #expect(heap.count == all.count && heap.min == all.min())
        }
        #expect(!popped.isEmpty)
    }
}
