/// A set of names with O(1) insert, remove and uniform random choice.
///
/// The membership core samples random members on every probe and gossip round; scanning the
/// whole table each time would cost O(N) per period per node.
struct NameSet: Sendable {
    private(set) var names: [String] = []
    private var positions: [String: Int] = [:]

    var count: Int { names.count }
    var isEmpty: Bool { names.isEmpty }

    func contains(_ name: String) -> Bool { positions[name] != nil }

    mutating func insert(_ name: String) {
        guard positions[name] == nil else { return }
        positions[name] = names.count
        names.append(name)
    }

    mutating func remove(_ name: String) {
        guard let at = positions.removeValue(forKey: name) else { return }
        let last = names.removeLast()
        if at < names.count {
            names[at] = last
            positions[last] = at
        }
        assert(names.count == positions.count)
    }

    /// Up to `k` distinct names chosen uniformly, none of them in `excluding`.
    func sample(_ k: Int, excluding: Set<String> = [], using rng: inout DeterministicRNG) -> [String] {
        guard k > 0, !names.isEmpty else { return [] }
        var picked: [String] = []
        var seen = Set<Int>()
        var attempts = 0
        // Rejection sampling is O(k) when k is small next to the set, the usual case here;
        // the bound on attempts keeps it bounded when it is not.
        while picked.count < k, attempts < 4 * k + 16 {
            attempts += 1
            let i = Int.random(in: 0..<names.count, using: &rng)
            if seen.insert(i).inserted, !excluding.contains(names[i]) { picked.append(names[i]) }
        }
        if picked.count < k, names.count <= 4 * k + 16 {
            for (i, n) in names.enumerated() where picked.count < k && !seen.contains(i) && !excluding.contains(n) {
                picked.append(n)
            }
        }
        return picked
    }
}
