import Dispatch
import Foundation
import Synchronization

/// A task executor on threads of its own. `ThreadExecutor.taskSockets` runs the servers of task
/// sockets (`TaskSocketServer`): a server's task, the connection and request tasks it starts,
/// and the default actors they call (the spawn ledger) run there, not on Swift's global
/// concurrency pool.
///
/// Why: that pool has one thread per core, and whatever else shares the process may hold its
/// threads for seconds (synchronous store writes, a CPU-bound simulation, a test that waits on a
/// process). A socket whose server needs that pool then does not start within its deadline, and
/// the task is refused ("the socket did not start"), or a task's request waits until the task's
/// own timeout kills it. A sandboxed task's only way into the node must not depend on what else
/// the node is doing. (Both were seen: `TaskSocketStoreTests` beside CPU-bound suites.)
///
/// Jobs go in a FIFO and are run by a fixed number of threads started once and kept for the
/// process's life (make few executors: `taskSockets` is the node's one). A job that blocks (a
/// synchronous store read) holds one of them, as it would have held a pool thread. The queue
/// holds only the jobs of live tasks that prefer this executor; for `taskSockets` those are
/// bounded by `TaskSocketServer.Limits` (connections per socket) and the tasks running.
final class ThreadExecutor: TaskExecutor {
    /// The executor every task socket's server runs on: a thread per core, at least 2 (one
    /// request that blocks on the store must not stall every other socket) and at most 8 (the
    /// node's own work is on the global pool, and sockets are rate-limited per task).
    static let taskSockets = ThreadExecutor(threads: min(max(ProcessInfo.processInfo.activeProcessorCount, 2), 8),
                                            name: "starling-task-sockets")

    private let jobs = Mutex(JobQueue())
    /// Counts the jobs queued and not yet taken: one signal per job, one wait per take.
    private let queued = DispatchSemaphore(value: 0)
    let threadCount: Int

    /// Starts `threads` threads (at least one) that run this executor's jobs until the process ends.
    init(threads: Int, name: String) {
        threadCount = max(1, threads)
        for index in 0..<threadCount {
            let thread = Thread { [self] in work() }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        jobs.withLock { $0.push(job) }
        queued.signal()
    }

    private func work() {
        let me = asUnownedTaskExecutor()
        while true {
            queued.wait()
            // Every signal follows a push, so after a wait there is a job to take.
            guard let job = jobs.withLock({ $0.pop() }) else {
                assertionFailure("an executor thread woke with no job queued")
                continue
            }
            job.runSynchronously(on: me)
        }
    }
}

/// A FIFO of jobs: appended at the end, taken from `head`; the taken prefix is dropped once it
/// is half the storage, so each job is moved at most a constant number of times.
private struct JobQueue {
    private var storage: [UnownedJob] = []
    private var head = 0

    mutating func push(_ job: UnownedJob) { storage.append(job) }

    mutating func pop() -> UnownedJob? {
        guard head < storage.count else { return nil }
        let job = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return job
    }
}
