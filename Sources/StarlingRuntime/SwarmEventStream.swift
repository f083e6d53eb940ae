import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import StarlingCore
import StarlingSandbox
import StarlingStore
import Synchronization

/// Bounds of `GET /v1/swarms/ID/events`.
public struct SwarmEventSettings: Sendable {
    /// How often an open stream looks for newly finished tasks in the store.
    public var pollInterval: Duration
    /// A comment line after this long without an event, so proxies and clients see the
    /// connection alive.
    public var keepAliveInterval: Duration
    /// A stream closes after this long even if the swarm still runs; the client reconnects
    /// with `Last-Event-ID` and loses nothing.
    public var maxLifetime: Duration
    /// Streams open at once on this node; past it, 429.
    public var maxStreams: Int
    /// How long a stream whose cursor names a reign newer than this node's copy waits for the
    /// copy to catch up (the new owner's transfer) before it replays from the start of the
    /// copy's numbering (repeats, never misses). No wait once the copy says the swarm is over.
    public var behindWait: Duration

    public init(pollInterval: Duration = .milliseconds(200), keepAliveInterval: Duration = .seconds(15),
                maxLifetime: Duration = .seconds(600), maxStreams: Int = 1_024, behindWait: Duration = .seconds(5)) {
        self.pollInterval = pollInterval
        self.keepAliveInterval = keepAliveInterval
        self.maxLifetime = maxLifetime
        self.maxStreams = maxStreams
        self.behindWait = behindWait
    }
}

/// One client's server-sent event stream of a swarm held by this node: a `task` event per
/// finished task, in completion order, with the task's finish sequence number and the reign
/// that numbered it as the event id (`EventCursor`, `EPOCH.OWNER.SEQ`), then `done` once the
/// swarm is no longer running and every finished task has been sent.
///
/// It polls the store (each poll reads at most one bounded batch, in one snapshot), so it needs
/// no hook into the mesh loop, and a stream resumed with `Last-Event-ID` on any holder of the
/// swarm picks up where the last one stopped.
///
/// It shows a finished task only once a majority of the swarm's replica set stores it (the
/// store's visible mark, `StoreChange.visible`), a round trip after the owner recorded it: a
/// node that takes the swarm over then holds every id any stream showed, with the same task,
/// and numbers new finishes after them. `done` waits until nothing finished is hidden.
///
/// Across a partition both sides number finishes. Each read rebases the cursor onto the stored
/// lineage (`FinishLineage`): a cursor of the side whose numbering lost resumes from where the
/// two agreed, so such a client sees some tasks again and misses none.
final class SwarmEventStream: Sendable {
    /// Open streams on this node, against `SwarmEventSettings.maxStreams`.
    private static let open = Atomic<Int>(0)

    let store: SwarmStore
    let swarm: SwarmID
    let after: EventCursor
    let settings: SwarmEventSettings
    let logger: Logger
    /// Whether this stream still holds its place in `open` (released once, by `run` or deinit).
    private let holdsSlot = Atomic<Bool>(true)

    /// Nil when `maxStreams` are already open.
    init?(store: SwarmStore, swarm: SwarmID, after: EventCursor, settings: SwarmEventSettings, logger: Logger) {
        let (exchanged, _) = Self.open.add(1, ordering: .relaxed)
        guard exchanged <= settings.maxStreams else {
            Self.open.subtract(1, ordering: .relaxed)
            return nil
        }
        self.store = store
        self.swarm = swarm
        self.after = after
        self.settings = settings
        self.logger = logger
    }

    deinit { release() }

    private func release() {
        if holdsSlot.exchange(false, ordering: .relaxed) { Self.open.subtract(1, ordering: .relaxed) }
    }

    /// Streams until `done`, the stream's lifetime, a store failure, or the client going away
    /// (a write throws).
    func run(writer: inout any ResponseBodyWriter) async throws {
        defer { release() }
        let clock = ContinuousClock()
        let started = clock.now
        var lastSent = clock.now
        var cursor = after
        var behindSince: ContinuousClock.Instant?
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
        while clock.now - started < settings.maxLifetime {
            // Read the generation before the store: a write that commits after it wakes the
            // wait below, so none slips between the read and the wait.
            let seen = store.written.generation(of: swarm)
            let batch: SwarmEvents?
            do { batch = try store.events(swarm, after: cursor) } catch {
                logger.error("event stream cannot read the store", metadata: ["swarm": "\(swarm)", "error": "\(error)"])
                break
            }
            guard let batch else { break }  // the swarm is no longer held here
            if batch.behind {
                let since = behindSince ?? clock.now
                behindSince = since
                if batch.state != .running || clock.now - since >= settings.behindWait {
                    cursor = EventCursor(reign: batch.lineage.tip, seq: 0)
                    continue
                }
            } else {
                behindSince = nil
            }
            cursor = batch.cursor
            if !batch.tasks.isEmpty {
                var text = ""
                var undecodable = 0
                for task in batch.tasks {
                    let event = SwarmTaskJSON(task, undecodable: &undecodable)
                    let data = String(decoding: try encoder.encode(TaskEventJSON(id: event.id, state: event.state, node: event.node, result: event.result)), as: UTF8.self)
                    cursor.seq = max(cursor.seq, task.record.finishSeq)
                    text += "id: \(cursor)\nevent: task\ndata: \(data)\n\n"
                }
                try await writer.write(ByteBuffer(string: text))
                lastSent = clock.now
                continue  // there may be more right away
            }
            if batch.state != .running && batch.allVisible {
                let done = String(decoding: try encoder.encode(DoneEventJSON(id: swarm, state: batch.state.name)), as: UTF8.self)
                try await writer.write(ByteBuffer(string: "event: done\ndata: \(done)\n\n"))
                break
            }
            if clock.now - lastSent >= settings.keepAliveInterval {
                try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                lastSent = clock.now
            }
            // Until a write to this swarm commits (or the poll interval, a bound on a missed
            // wakeup); writes to other swarms do not wake it (`StoreSignal`).
            await store.written.wait(for: swarm, past: seen, timeout: settings.pollInterval)
            try Task.checkCancellation()
        }
        try await writer.finish(nil)
    }
}

/// The data of a `task` event: interface.md's `{"id", "state", "result"?}` (and the node).
struct TaskEventJSON: Codable, Sendable {
    var id: String
    var state: String
    var node: String?
    var result: TaskResult?
}

/// The data of the closing `done` event.
struct DoneEventJSON: Codable, Sendable {
    var id: String
    var state: String
}
