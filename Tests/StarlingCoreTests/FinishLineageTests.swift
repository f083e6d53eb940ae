import Testing
@testable import StarlingCore

/// `FinishLineage` and `EventCursor`: where a client's events cursor resumes on a copy whose
/// numbering may differ from the one it read (a partition's other side, an owner's successor).
@Suite("Finish lineage")
struct FinishLineageTests {
    static let a1 = Reign(epoch: 1, owner: 0)
    static let c2 = Reign(epoch: 2, owner: 2)
    static let a3 = Reign(epoch: 3, owner: 0)
    static let b2 = Reign(epoch: 2, owner: 1)

    /// A at epoch 1 numbered 1...500; C took over at epoch 2 from a copy holding 1...300 and
    /// numbered its own from 301; A merged at epoch 3 from C's copy (counter 500 then).
    static var merged: FinishLineage {
        var l = FinishLineage.created
        l.begin(c2, from: 300)
        l.begin(a3, from: 500)
        return l
    }

    @Test func aCursorOfTheTipOrBelowEveryForkIsExact() {
        let l = Self.merged
        #expect(l.resumePoint(after: EventCursor(reign: Self.a3, seq: 612)) == 612)
        #expect(l.resumePoint(after: EventCursor(reign: Self.c2, seq: 450)) == 450)
        #expect(l.resumePoint(after: EventCursor(reign: Self.a1, seq: 250)) == 250)
    }

    @Test func aCursorOfTheLosingSideResumesAtTheFork() {
        // A's client saw A's numbers up to 480; C's numbers 301...480 name other tasks.
        #expect(Self.merged.resumePoint(after: EventCursor(reign: Self.a1, seq: 480)) == 300)
    }

    @Test func aSiblingReignResumesThroughItsAlias() {
        // B also took over at epoch 2, from A's copy at 280, and numbered from 281; the takeover
        // that made this lineage heard B's copy and did not take it.
        var b = FinishLineage.created
        b.begin(Self.b2, from: 280)
        var l = Self.merged
        l.learn(b)
        #expect(l.aliases == [.init(reign: Self.b2, ancestor: Self.a1, cap: 280)])
        #expect(l.resumePoint(after: EventCursor(reign: Self.b2, seq: 290)) == 280)
        #expect(l.resumePoint(after: EventCursor(reign: Self.b2, seq: 100)) == 100)
        // A copy sharing no reign teaches nothing; learning twice adds nothing.
        var before = l
        before.learn(FinishLineage(marks: [.init(reign: Reign(epoch: 9, owner: 1), from: 0)]))
        #expect(before == l)
        l.learn(b)
        #expect(l.aliases.count == 1)
    }

    @Test func anUnknownReignReplaysFromTheStartOrWaitsWhenNewer() {
        let l = Self.merged
        #expect(l.resumePoint(after: EventCursor(reign: Reign(epoch: 2, owner: 1), seq: 40)) == 0)
        #expect(l.resumePoint(after: EventCursor(reign: Reign(epoch: 7, owner: 1), seq: 40)) == nil)
        #expect(EventCursor(reign: Reign(epoch: 7, owner: 1), seq: 40).rebased(onto: l) == nil)
        // A plain number, or a swarm without a lineage: taken as it is.
        #expect(l.resumePoint(after: EventCursor(reign: nil, seq: 480)) == 480)
        #expect(FinishLineage().resumePoint(after: EventCursor(reign: Self.a1, seq: 480)) == 480)
        // On a copy without a lineage the ids are plain numbers (review10 L3).
        #expect(EventCursor(reign: Self.a1, seq: 480).rebased(onto: FinishLineage()) == EventCursor(reign: nil, seq: 480))
    }

    @Test func rebasingMovesTheCursorOntoTheTip() {
        #expect(EventCursor(reign: Self.a1, seq: 480).rebased(onto: Self.merged) == EventCursor(reign: Self.a3, seq: 300))
        #expect(EventCursor(reign: Self.a3, seq: 9).rebased(onto: Self.merged) == EventCursor(reign: Self.a3, seq: 9))
    }

    @Test func marksAndAliasesAreBounded() {
        var l = FinishLineage.created
        for e in 2...200 { l.begin(Reign(epoch: UInt32(e), owner: UInt8(e % 3)), from: UInt32(e * 10)) }
        #expect(l.marks.count == FinishLineage.maxMarks)
        // A dropped reign replays from the start.
        #expect(l.resumePoint(after: EventCursor(reign: Self.a1, seq: 5)) == 0)
        var other = FinishLineage(marks: Array(l.marks.prefix(1)))
        for e in 1000...1100 { other.begin(Reign(epoch: UInt32(e), owner: 1), from: 5) }
        l.learn(other)
        #expect(l.aliases.count <= FinishLineage.maxMarks)
    }

    @Test(arguments: ["7", "0", "3.1.44", "4294967295.15.4294967295"])
    func idsRoundTrip(text: String) throws {
        let cursor = try #require(EventCursor(text: text))
        #expect(cursor.description == text)
    }

    @Test(arguments: ["", "x", "1.2", "1..3", "1.2.3.4", "-1", "1.256.3", "4294967296", " 1", "1.2.3 ", "+5",
                      String(repeating: "9", count: 41), "１"])
    func otherIdsAreRefused(text: String) {
        #expect(EventCursor(text: text) == nil)
    }
}
