import StarlingCore
import Synchronization

/// The observers of "this node may now own, or no longer own, some session".
final class OwnershipObservers: Sendable {
    private let observers = Mutex<[@Sendable () -> Void]>([])

    func add(_ observer: @escaping @Sendable () -> Void) { observers.withLock { $0.append(observer) } }

    func notify() {
        for observer in observers.withLock({ $0 }) { observer() }
    }

    /// Whether a durable change may move a session to or from this node, or end it: a promise
    /// of a new epoch, an installed image, a forgotten copy, a delete. Any other appended record
    /// continues an epoch. (A lead that steps down after a failed write writes nothing: the
    /// agents' poll finds that one.)
    static func mayMove(_ change: SessionChange) -> Bool {
        if case .record(let record, _, _, _, _, _) = change { return record.kind == .delete }
        return true
    }
}
