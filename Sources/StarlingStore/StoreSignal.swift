import Synchronization

/// Wakes readers that follow the store (the swarm event streams) when a write commits, so that
/// a result reaches a client within a wakeup instead of a polling period.
///
/// A generation counter, bumped after every committed write, and one per bucket of swarms (a
/// swarm's bucket is a hash of its id, out of `buckets`), bumped after a write that touched a
/// swarm of the bucket. A stream waits on its swarm's bucket, so a node committing for a
/// 1,000-task swarm does not wake every other swarm's streams on each commit (two swarms that
/// share a bucket only wake each other: a spurious read, never a missed one). The buckets bound
/// the memory whatever the number of swarms. Waiting is bounded by a timeout and honours task
/// cancellation, so a waiter never outlives the stream it serves.
public final class StoreSignal: Sendable {
    /// Buckets of swarms, each with its own generation.
    public static let buckets = 1_024

    private struct Waiter {
        /// The bucket waited on; nil: any write.
        var bucket: Int?
        var continuation: CheckedContinuation<Void, Never>
    }

    private struct State {
        var generation: UInt64 = 0
        var bucketGenerations = [UInt64](repeating: 0, count: StoreSignal.buckets)
        var nextWaiter: UInt64 = 0
        var waiters: [UInt64: Waiter] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// The number of writes committed so far.
    public var generation: UInt64 { state.withLock { $0.generation } }

    /// A value that changes after every committed write that touched `swarm` (and, rarely, one
    /// that touched another swarm of its bucket).
    public func generation(of swarm: String) -> UInt64 {
        let bucket = Self.bucket(of: swarm)
        return state.withLock { $0.bucketGenerations[bucket] }
    }

    /// The bucket of a swarm id: FNV-1a over its bytes (stable, unlike `Hasher`).
    static func bucket(of swarm: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in swarm.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return Int(hash % UInt64(buckets))
    }

    /// For tests: as if a write committed (to every swarm).
    public func bumpForTesting() { bump(swarms: nil) }

    /// After a committed write that touched `swarms` (nil: any, all buckets): wakes the waiters
    /// on those swarms' buckets and those waiting for any write.
    func bump(swarms: Set<String>?) {
        let buckets = swarms.map { Set($0.map(Self.bucket(of:))) }
        let woken = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.generation &+= 1
            if let buckets {
                for b in buckets { s.bucketGenerations[b] &+= 1 }
            } else {
                for b in s.bucketGenerations.indices { s.bucketGenerations[b] &+= 1 }
            }
            var resumed: [CheckedContinuation<Void, Never>] = []
            for (id, waiter) in s.waiters {
                guard let bucket = waiter.bucket, let buckets, !buckets.contains(bucket) else {
                    resumed.append(waiter.continuation)
                    s.waiters.removeValue(forKey: id)
                    continue
                }
            }
            return resumed
        }
        for w in woken { w.resume() }
    }

    /// Returns once a write commits after `seen` (a value of `generation`), after `timeout`, or
    /// when the calling task is cancelled, whichever comes first.
    public func wait(past seen: UInt64, timeout: Duration) async {
        await wait(bucket: nil, past: seen, timeout: timeout)
    }

    /// Returns once a write that touched `swarm` commits after `seen` (a value of
    /// `generation(of: swarm)`), after `timeout`, or when the calling task is cancelled.
    public func wait(for swarm: String, past seen: UInt64, timeout: Duration) async {
        await wait(bucket: Self.bucket(of: swarm), past: seen, timeout: timeout)
    }

    private func wait(bucket: Int?, past seen: UInt64, timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForWrite(bucket: bucket, past: seen) }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForWrite(bucket: Int?, past seen: UInt64) async {
        let id = state.withLock { s -> UInt64 in
            s.nextWaiter &+= 1
            return s.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    let now = bucket.map { s.bucketGenerations[$0] } ?? s.generation
                    if now != seen || Task.isCancelled { return true }
                    s.waiters[id] = Waiter(bucket: bucket, continuation: c)
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            let waiting = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiting?.continuation.resume()
        }
    }
}
