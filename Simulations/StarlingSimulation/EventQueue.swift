import StarlingCore

/// A binary min-heap of events ordered by (time, insertion sequence): two events at the same
/// instant always pop in the order they were scheduled, so a run is a pure function of its seed.
struct EventQueue<Payload: Sendable> {
    private struct Entry: Comparable, Sendable {
        var time: Instant
        var seq: UInt64
        var payload: Payload
        static func < (a: Entry, b: Entry) -> Bool { a.time != b.time ? a.time < b.time : a.seq < b.seq }
        static func == (a: Entry, b: Entry) -> Bool { a.time == b.time && a.seq == b.seq }
    }

    private var heap = MinHeap<Entry>()
    private var nextSeq: UInt64 = 0

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }

    mutating func push(_ payload: Payload, at time: Instant) {
        nextSeq += 1
        heap.push(Entry(time: time, seq: nextSeq, payload: payload))
    }

    mutating func pop() -> (time: Instant, payload: Payload)? {
        heap.pop().map { ($0.time, $0.payload) }
    }
}
