import Foundation
import Logging
import Metrics
import StarlingStore

/// Deletes finished swarms from this node's store once they are older than the retention
/// (`starling node --swarm-retention-hours`, 7 days by default): without it the store, and the
/// load of a restart, grew with every swarm ever run. A round runs every quarter of the
/// retention (at least every second, at most every 10 minutes) and deletes at most 1,000 swarms,
/// oldest first, one transaction each. Reads of a pruned swarm answer 404, as for any unknown one.
///
/// The retention must outlast the protocol's own memory of a finished swarm
/// (`Swarm.Bounds.finishedRetention`, a minute): a swarm the protocol still holds is never
/// pruned under it. The CLI's floor (`minimumRetention`) keeps that margin.
public enum SwarmPruning {
    public static let minimumRetention = Duration.seconds(360)
    static let maxPerRound = 1_000
    static let pruned = Counter(label: "starling_swarms_pruned_total")

    /// Starts the rounds; the task ends when cancelled.
    @discardableResult
    public static func start(store: SwarmStore, retention: Duration, logger: Logger) -> Task<Void, Never> {
        let interval = min(max(retention / 4, .seconds(1)), .seconds(600))
        return Task.detached {
            while !Task.isCancelled {
                round(store: store, retention: retention, logger: logger)
                try? await Task.sleep(for: interval)
            }
        }
    }

    /// One round: returns how many swarms went.
    @discardableResult
    static func round(store: SwarmStore, retention: Duration, logger: Logger) -> Int {
        let (seconds, attoseconds) = retention.components
        let retentionMs = seconds * 1_000 + attoseconds / 1_000_000_000_000_000
        let cutoff = Int64(Date().timeIntervalSince1970 * 1000) - retentionMs
        do {
            let count = try store.pruneFinished(before: cutoff, limit: maxPerRound)
            if count > 0 {
                pruned.increment(by: Int64(count))
                logger.info("finished swarms pruned from the store", metadata: ["swarms": "\(count)"])
            }
            return count
        } catch {
            // Not a write the protocol depends on: the next round tries again.
            logger.error("pruning finished swarms failed", metadata: ["error": "\(error)"])
            return 0
        }
    }
}
