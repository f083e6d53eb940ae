import Foundation
import StarlingStore
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
}
