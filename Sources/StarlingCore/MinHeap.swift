/// A binary min-heap: O(log n) push and pop, O(1) peek at the least element. Inlinable, so that
/// the simulator's event queue gets a specialised copy rather than generic dispatch.
///
/// Elements that compare equal pop in an unspecified order, so a caller that needs determinism
/// gives its elements a total order (for example, a sequence number as the last key).
public struct MinHeap<Element: Comparable> {
    @usableFromInline var heap: [Element] = []

    @inlinable public init() {}

    @inlinable public var count: Int { heap.count }
    @inlinable public var isEmpty: Bool { heap.isEmpty }
    @inlinable public var min: Element? { heap.first }

    @inlinable public mutating func push(_ element: Element) {
        heap.append(element)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i] < heap[parent] else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    @inlinable @discardableResult
    public mutating func pop() -> Element? {
        guard !heap.isEmpty else { return nil }
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count, heap[l] < heap[m] { m = l }
                if r < heap.count, heap[r] < heap[m] { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}

extension MinHeap: Sendable where Element: Sendable {}
