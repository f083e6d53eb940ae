import Foundation
import Synchronization

/// Sandboxes spawned ahead of time, each waiting in `starling-sandbox-init` for its one
/// command. A refill thread keeps `size` of them ready; each is used once and destroyed.
final class WarmPool: Sendable {
    let size: Int
    private struct State {
        var ready: [SpawnedSandbox] = []
        var stopped = false
        var failures = 0
    }
    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)

    init(size: Int) {
        precondition(size > 0 && size <= 256)
        self.size = size
    }

    var readyCount: Int { state.withLock { $0.ready.count } }

    func start(spawn: @escaping @Sendable () throws -> SpawnedSandbox) {
        let thread = Thread { [self] in
            while true {
                let (stop, need) = state.withLock { ($0.stopped, $0.ready.count < size) }
                if stop { break }
                if !need {
                    _ = wake.wait(timeout: .now() + 1)
                    continue
                }
                do {
                    let s = try spawn()
                    let keep = state.withLock { st -> Bool in
                        if st.stopped { return false }
                        st.ready.append(s)
                        return true
                    }
                    if !keep { s.destroy() }
                } catch {
                    // Bounded back-off: a broken host must not spin the refill loop.
                    let n = state.withLock { $0.failures += 1; return $0.failures }
                    Thread.sleep(forTimeInterval: min(5, 0.05 * Double(n)))
                }
            }
            finished.signal()
        }
        thread.name = "starling-warm-pool"
        thread.start()
    }

    /// A ready sandbox, or nil (the caller spawns a cold one).
    func take() -> SpawnedSandbox? {
        let s = state.withLock { $0.ready.popLast() }
        wake.signal()
        return s
    }

    func drain() {
        let (idle, wasRunning) = state.withLock { st -> ([SpawnedSandbox], Bool) in
            let r = st.ready
            let was = !st.stopped
            st.ready = []
            st.stopped = true
            return (r, was)
        }
        guard wasRunning else { return }
        wake.signal()
        finished.wait()
        for s in idle {
            if let c = s.control { close(c) }
            close(s.stdin); close(s.stdout); close(s.stderr)
            s.destroy()
        }
    }
}
