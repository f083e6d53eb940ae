import Synchronization

/// Wakes readers that follow the store (the swarm event streams) when a write commits, so that
/// a result reaches a client within a wakeup instead of a polling period.
///
/// A generation counter, bumped after every committed write, and the continuations waiting for
/// it to pass a value. Waiting is bounded by a timeout and honours task cancellation, so a
/// waiter never outlives the stream it serves.
public final class StoreSignal: Sendable {
    private struct State {
        var generation: UInt64 = 0
        var nextWaiter: UInt64 = 0
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// The number of writes committed so far.
    public var generation: UInt64 { state.withLock { $0.generation } }

    /// For tests: as if a write committed.
    public func bumpForTesting() { bump() }

    /// After a committed write: wakes every waiter.
    func bump() {
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.generation &+= 1
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for w in woken { w.resume() }
    }

    /// Returns once a write commits after `seen` (a value of `generation`), after `timeout`, or
    /// when the calling task is cancelled, whichever comes first.
    public func wait(past seen: UInt64, timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForWrite(past: seen) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForWrite(past seen: UInt64) async {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiter &+= 1
            return s.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.generation != seen || Task.isCancelled { return true }
                    s.waiters[id] = c
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            let waiting = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiting?.resume()
        }
    }
}
