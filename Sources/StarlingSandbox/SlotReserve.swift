import Foundation
import Synchronization

/// Work directories and cgroups made ahead of time for cold spawns. They hold no process and
/// no limit yet (limits are written per task), so a reserved slot isolates exactly like a new
/// one; making them in the background takes mkdirs off the path of every cold start.
final class SlotReserve: Sendable {
    struct Slot: Sendable {
        var id: String
        var workdir: String
        var cgroup: Cgroup
    }

    private let target: Int
    private let make: @Sendable () throws -> Slot
    private let slots = Mutex<[Slot]>([])
    private let refilling = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)
    private let queue = DispatchQueue(label: "starling-slot-reserve", qos: .utility)

    init(target: Int, make: @escaping @Sendable () throws -> Slot) {
        precondition(target >= 0 && target <= 64)
        self.target = target
        self.make = make
        refill()
    }

    /// A prepared slot, or nil (the caller makes one on the spot).
    func take() -> Slot? {
        let slot = slots.withLock { $0.popLast() }
        refill()
        return slot
    }

    private func refill() {
        guard target > 0, !stopped.load(ordering: .acquiring),
              !refilling.exchange(true, ordering: .acquiringAndReleasing) else { return }
        queue.async { [self] in
            defer { refilling.store(false, ordering: .releasing) }
            while !stopped.load(ordering: .acquiring), slots.withLock({ $0.count }) < target, let slot = try? make() {
                slots.withLock { $0.append(slot) }
            }
        }
    }

    /// Stops refilling and removes every unused slot.
    func drain() {
        stopped.store(true, ordering: .releasing)
        queue.sync {}
        for s in slots.withLock({ s -> [Slot] in defer { s = [] }; return s }) {
            s.cgroup.destroy()
            removeTree(s.workdir)
        }
    }
}
