import Foundation
import StarlingCore
@testable import StarlingStore
import Testing

@Suite("StoreSignal wakes event streams on writes")
struct StoreSignalTests {
    @Test func aWaiterWakesOnAWriteLongBeforeItsTimeout() async {
        let signal = StoreSignal()
        let seen = signal.generation
        let clock = ContinuousClock()
        let start = clock.now
        async let waited: Void = signal.wait(past: seen, timeout: .seconds(60))
        try? await Task.sleep(for: .milliseconds(50))
        signal.bumpForTesting()
        await waited
        #expect(clock.now - start < .seconds(30), "woken by the write, not the 60 s timeout")
        #expect(signal.generation == seen + 1)
    }

    @Test func aWriteBeforeTheWaitIsNotMissedAndATimeoutReturns() async {
        let signal = StoreSignal()
        let seen = signal.generation
        signal.bumpForTesting()
        let clock = ContinuousClock()
        let start = clock.now
        await signal.wait(past: seen, timeout: .seconds(60))  // returns at once: already past
        #expect(clock.now - start < .seconds(30))
        await signal.wait(past: signal.generation, timeout: .milliseconds(20))  // nothing: the timeout
    }

    @Test func aCancelledWaiterReturns() async {
        let signal = StoreSignal()
        let waiter = Task { await signal.wait(past: signal.generation, timeout: .seconds(60)) }
        try? await Task.sleep(for: .milliseconds(20))
        waiter.cancel()
        let clock = ContinuousClock()
        let start = clock.now
        await waiter.value
        #expect(clock.now - start < .seconds(30))
    }

    /// An event stream waits on its own swarm: before, every commit of the node woke every open
    /// stream (a 1,000-task swarm's ~2,000 commits a node woke each other swarm's streams as
    /// often, each for a store read that found nothing).
    @Test func aWriteToAnotherSwarmDoesNotWakeAWaiterOnThisOne() async throws {
        let dir = TemporaryDirectory("signal")
        let store = try SwarmStore(directory: dir.path)
        let mine = "00000000000000a1"
        let other = try #require((0..<64).map { String(format: "%016x", 0xb000 + $0) }
            .first { StoreSignal.bucket(of: $0) != StoreSignal.bucket(of: mine) })
        try store.apply([.swarm(definition(mine, tasks: 2), epoch: 1, state: .running),
                         .swarm(definition(other, tasks: 40), epoch: 1, state: .running)])
        let clock = ContinuousClock()
        let seen = store.written.generation(of: mine)
        let start = clock.now
        async let waited: Void = store.written.wait(for: mine, past: seen, timeout: .milliseconds(800))
        for i in 0..<40 { try store.apply([.task(other, index: UInt32(i), finished(UInt32(i + 1)))]) }
        await waited
        #expect(clock.now - start >= .milliseconds(700), "40 writes to another swarm woke a waiter on this one")
        #expect(store.written.generation(of: mine) == seen)

        // A write to its own swarm wakes it long before its timeout.
        let again = store.written.generation(of: mine)
        let second = clock.now
        async let woken: Void = store.written.wait(for: mine, past: again, timeout: .seconds(60))
        try await Task.sleep(for: .milliseconds(20))
        try store.apply([.task(mine, index: 0, finished(1))])
        await woken
        #expect(clock.now - second < .seconds(30), "woken by the write to its swarm, not the 60 s timeout")
    }
}
