import StarlingCore

/// A binary min-heap of events ordered by (time, insertion sequence): two events at the same
/// instant always pop in the order they were scheduled, so a run is a pure function of its seed.
struct EventQueue<Payload> {
    private struct Entry {
        var time: Instant
        var seq: UInt64
        var payload: Payload
        func before(_ o: Entry) -> Bool { time != o.time ? time < o.time : seq < o.seq }
    }

    private var heap: [Entry] = []
    private var nextSeq: UInt64 = 0

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }

    mutating func push(_ payload: Payload, at time: Instant) {
        nextSeq += 1
        heap.append(Entry(time: time, seq: nextSeq, payload: payload))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].before(heap[parent]) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (time: Instant, payload: Payload)? {
        guard !heap.isEmpty else { return nil }
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count, heap[l].before(heap[m]) { m = l }
                if r < heap.count, heap[r].before(heap[m]) { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return (top.time, top.payload)
    }
}
