import Dispatch
import Foundation
import Synchronization
import Testing
@testable import StarlingRuntime

/// The pooled threads swarm attempts run on: reused when idle, never more than the limit, every
/// job run exactly once.
@Suite("Swarm task threads")
struct SwarmTaskThreadsTests {
    /// Jobs one after another reuse one thread (each attempt started a thread before).
    @Test func sequentialJobsReuseOneThread() {
        let pool = SwarmTaskThreads(limit: 8)
        let done = DispatchSemaphore(value: 0)
        let ran = Atomic<Int>(0)
        for _ in 0..<20 {
            pool.run {
                ran.add(1, ordering: .relaxed)
                done.signal()
            }
            #expect(done.wait(timeout: .now() + 10) == .success)
            // The thread parks once its job returned; wait until it has, so the next job finds it.
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, !pool.isIdle(count: 1) { usleep(1_000) }
        }
        #expect(ran.load(ordering: .relaxed) == 20)
        #expect(pool.started == 1)
    }

    /// Blocking jobs at once get a thread each up to the limit; the rest wait for a thread and
    /// all of them run.
    @Test func blockingJobsNeverExceedTheLimit() {
        let pool = SwarmTaskThreads(limit: 3)
        let gate = DispatchSemaphore(value: 0)
        let running = Atomic<Int>(0)
        let most = Atomic<Int>(0)
        let finished = DispatchSemaphore(value: 0)
        for _ in 0..<7 {
            pool.run {
                let now = running.add(1, ordering: .sequentiallyConsistent).newValue
                _ = most.max(now, ordering: .sequentiallyConsistent)
                gate.wait()
                running.subtract(1, ordering: .sequentiallyConsistent)
                finished.signal()
            }
        }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, running.load(ordering: .sequentiallyConsistent) < 3 { usleep(1_000) }
        #expect(running.load(ordering: .sequentiallyConsistent) == 3)
        for _ in 0..<7 { gate.signal() }
        for _ in 0..<7 { #expect(finished.wait(timeout: .now() + 10) == .success) }
        #expect(most.load(ordering: .sequentiallyConsistent) == 3)
        #expect(pool.started == 3)
    }
}
