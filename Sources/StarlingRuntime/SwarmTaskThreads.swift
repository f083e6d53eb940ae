import Dispatch
import Foundation
import Synchronization

/// The threads that run swarm attempts. A sandboxed run blocks its thread until the task ends,
/// so each running attempt needs a thread of its own; starting one per attempt cost a thread's
/// creation (and its stack's mapping) on every task's path. These are started on demand, up to
/// `limit`, and parked when idle for the next attempt. Idle threads stay (at most `limit`, the
/// executor's bound on attempts at once), so there is no race between a thread retiring and a
/// job handed to it.
final class SwarmTaskThreads: Sendable {
    private struct State {
        var jobs: [@Sendable () -> Void] = []
        /// Threads started so far (never more than `limit`).
        var threads = 0
        /// Threads parked on `wake` with nothing to do.
        var idle = 0
    }

    let limit: Int
    private let state = Mutex(State())
    /// One signal per job handed to a parked thread.
    private let wake = DispatchSemaphore(value: 0)

    init(limit: Int) {
        precondition(limit > 0, "a pool of task threads needs at least one thread")
        self.limit = limit
    }

    /// Threads started so far (for tests).
    var started: Int { state.withLock { $0.threads } }

    /// Whether `count` threads are parked with nothing queued (for tests).
    func isIdle(count: Int) -> Bool { state.withLock { $0.idle == count && $0.jobs.isEmpty } }

    /// Runs `job` on a pooled thread: a parked one if there is one, else a new one while under
    /// `limit`, else it waits for the first thread to finish its job (the executor bounds the
    /// attempts at once by `limit`, so it never waits there in practice).
    func run(_ job: @escaping @Sendable () -> Void) {
        enum Then { case wakeOne, startOne, queued }
        let then = state.withLock { s -> Then in
            s.jobs.append(job)
            if s.idle > 0 {
                s.idle -= 1
                return .wakeOne
            }
            if s.threads < limit {
                s.threads += 1
                return .startOne
            }
            return .queued
        }
        switch then {
        case .wakeOne: wake.signal()
        case .startOne:
            let thread = Thread { [self] in work() }
            thread.name = "starling-task"
            thread.stackSize = 1 << 20
            thread.start()
        case .queued: break
        }
    }

    /// A pooled thread's life: take a job, run it; park when there is none.
    private func work() {
        while true {
            let job = state.withLock { s -> (@Sendable () -> Void)? in
                if s.jobs.isEmpty {
                    s.idle += 1
                    return nil
                }
                return s.jobs.removeFirst()
            }
            if let job { job() } else { wake.wait() }
        }
    }
}
