import Foundation
import GRDB
import StarlingCore
import Synchronization
import Testing
@testable import StarlingStore

/// A fresh directory for one test's database, removed afterwards.
final class TemporaryDirectory {
    let path: String

    init(_ label: String) {
        path = NSTemporaryDirectory() + "starling-store-\(label)-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A swarm of `count` tasks named t0, t1, ... with small payloads.
func definition(_ id: SwarmID, tasks count: Int, createdAtMs: UInt64 = 1_000, parent: TaskRef? = nil) -> SwarmDefinition {
    let tasks = (0..<count).map { SwarmTask(id: "t\($0)", needs: TaskNeeds(memoryMB: 256, milliCPUs: 500), payload: Array("{\"argv\":[\"echo\",\"\($0)\"]}".utf8)) }
    let draft = SwarmDraft(tasks: tasks, maxAttempts: 3, options: Array("{\"spawn\":null}".utf8), parent: parent, createdAtMs: createdAtMs)
    return SwarmDefinition(id: id, draft: draft, replicas: ["n1", "n2", "n3"])
}

func finished(_ seq: UInt32, _ state: TaskState = .succeeded, node: String = "n1") -> TaskRecord {
    TaskRecord(state: state, attempt: 1, node: node, result: Array("{\"exitCode\":0,\"seq\":\(seq)}".utf8), finishSeq: seq)
}

/// Flags shared between the writer and the readers of the concurrency test.
final class ConcurrentProgress: Sendable {
    let writerDone = Atomic<Bool>(false)
    let readsDone = Atomic<Int>(0)
}

@Suite("Swarm store (real SQLite files)")
struct SwarmStoreTests {
    @Test func opensAnEmptyDirectoryInWALModeWithTheSchema() throws {
        let dir = TemporaryDirectory("empty")
        let store = try SwarmStore(directory: dir.path)
        #expect(store.path == dir.path + "/starling.sqlite")
        #expect(FileManager.default.fileExists(atPath: store.path))
        #expect(try store.list().isEmpty)
        #expect(try store.has("0123456789abcdef") == false)
        #expect(try store.status("0123456789abcdef", includeTasks: true) == nil)
        #expect(try store.events("0123456789abcdef", afterSeq: 0) == nil)
        #expect(try store.loadAll().isEmpty)
        // WAL: the pool keeps a -wal file beside the database once it has written.
        try store.apply([.swarm(definition("a", tasks: 1), epoch: 1, state: .running)])
        #expect(FileManager.default.fileExists(atPath: store.path + "-wal"))
    }

    /// The store promised `synchronous = FULL` but set it only in `prepareDatabase`: opening a
    /// pool in WAL mode then sets the writer to NORMAL (GRDB's WAL set-up), so every commit
    /// acknowledged as durable could be rolled back by a power loss. The writer now runs what
    /// was asked, and `.normal` is a choice made out loud (`starling node --store-sync`).
    @Test(arguments: [(StoreDurability.full, 2), (.normal, 1)])
    func theWriterCommitsWithTheDurabilityAskedFor(durability: StoreDurability, pragma: Int) throws {
        let dir = TemporaryDirectory("sync-\(durability)")
        let store = try SwarmStore(directory: dir.path, durability: durability)
        #expect(try store.writerSynchronous() == pragma)
        try store.apply([.swarm(definition("a", tasks: 1), epoch: 1, state: .running)])
        #expect(try store.writerSynchronous() == pragma)
        let reopened = try SwarmStore(directory: dir.path, durability: durability)
        #expect(try reopened.writerSynchronous() == pragma)
        let other = TemporaryDirectory("sync-default")
        #expect(try SwarmStore(directory: other.path).writerSynchronous() == 2, "FULL is the default")
    }

    @Test func reopeningTheSameDirectoryKeepsEverythingAndReappliesNoMigration() throws {
        let dir = TemporaryDirectory("reopen")
        let def = definition("0000000000000001", tasks: 3, parent: TaskRef(swarm: "00000000000000ff", task: 7))
        do {
            let store = try SwarmStore(directory: dir.path)
            try store.apply([.swarm(def, epoch: 4, state: .running),
                             .task(def.id, index: 1, finished(1)),
                             .task(def.id, index: 2, TaskRecord(state: .running, attempt: 2, node: "n3"))])
        }
        let store = try SwarmStore(directory: dir.path)
        let all = try store.loadAll()
        try #require(all.count == 1)
        #expect(all[0].0 == def)
        #expect(all[0].epoch == 4)
        #expect(all[0].state == .running)
        #expect(all[0].tasks == [TaskRecord(), finished(1), TaskRecord(state: .running, attempt: 2, node: "n3")])
    }

    @Test func aSwarmStoredAgainKeepsItsTaskRecordsAndTakesTheNewEpoch() throws {
        let dir = TemporaryDirectory("again")
        let store = try SwarmStore(directory: dir.path)
        let def = definition("s", tasks: 2)
        try store.apply([.swarm(def, epoch: 1, state: .running), .task("s", index: 0, finished(1))])
        try store.apply([.swarm(def, epoch: 2, state: .running)])
        let all = try store.loadAll()
        #expect(all[0].epoch == 2)
        #expect(all[0].tasks[0] == finished(1))
    }

    @Test func applyIsOneTransactionAFailingChangeRollsBackTheOthers() throws {
        let dir = TemporaryDirectory("atomic")
        let store = try SwarmStore(directory: dir.path)
        try store.apply([.swarm(definition("kept", tasks: 2), epoch: 1, state: .running)])
        // The new swarm and a task update of the existing one come first; the third change names
        // a task that does not exist, so nothing of the three may stay.
        #expect(throws: StoreError.self) {
            try store.apply([.swarm(definition("new", tasks: 2), epoch: 1, state: .running),
                             .task("kept", index: 0, finished(1)),
                             .task("kept", index: 99, finished(2))])
        }
        #expect(try store.has("new") == false)
        #expect(try store.status("kept", includeTasks: false)?.counts.succeeded == 0)
        // A state change of an unknown swarm fails too.
        #expect(throws: StoreError.self) { try store.apply([.swarmState("nobody", .done, epoch: 1)]) }
        #expect(throws: StoreError.self) { try store.apply([.task("nobody", index: 0, finished(1))]) }
    }

    @Test func statusCountsEveryStateAndPagesTasksByIndex() throws {
        let dir = TemporaryDirectory("paging")
        let store = try SwarmStore(directory: dir.path)
        let def = definition("p", tasks: 2_500)
        var changes: [StoreChange] = [.swarm(def, epoch: 1, state: .running)]
        for i in 0..<2_500 where i % 5 != 0 {
            let state: TaskState = [.running, .succeeded, .failed, .cancelled][i % 5 - 1]
            changes.append(.task("p", index: UInt32(i), TaskRecord(state: state, attempt: 1, node: "n2", finishSeq: state.isFinal ? UInt32(i) : 0)))
        }
        try store.apply(changes)

        let counts = try #require(try store.status("p", includeTasks: false)).counts
        #expect(counts.total == 2_500)
        #expect([counts.pending, counts.running, counts.succeeded, counts.failed, counts.cancelled] as [Int] == [500, 500, 500, 500, 500] as [Int])
        #expect(try store.status("p", includeTasks: false)?.tasks == nil)

        // Default page: the first 1,000.
        let first = try #require(try store.status("p", includeTasks: true)?.tasks)
        #expect(first.count == 1_000)
        #expect(first.map(\.index) == Array(0..<1_000))
        #expect(first[1] == StoredTask(index: 1, id: "t1", record: TaskRecord(state: .running, attempt: 1, node: "n2")))
        // Any limit is clamped to 1...1,000.
        #expect(try store.status("p", includeTasks: true, offset: 0, limit: 5_000)?.tasks?.count == 1_000)
        #expect(try store.status("p", includeTasks: true, offset: 0, limit: 0)?.tasks?.count == 1)
        #expect(try store.status("p", includeTasks: true, offset: -5, limit: 2)?.tasks?.map(\.index) == [0, 1])
        // The last page is short; past the end is empty.
        #expect(try store.status("p", includeTasks: true, offset: 2_400, limit: 1_000)?.tasks?.map(\.index) == Array(2_400..<2_500))
        #expect(try store.status("p", includeTasks: true, offset: 2_500, limit: 10)?.tasks == [])
        #expect(try store.status("p", includeTasks: true, offset: Int.max, limit: 10)?.tasks == [])
    }

    @Test func eventsAreTheFinishedTasksAfterASequenceNumberInCompletionOrder() throws {
        let dir = TemporaryDirectory("events")
        let store = try SwarmStore(directory: dir.path)
        try store.apply([.swarm(definition("e", tasks: 5), epoch: 1, state: .running)])
        // Completion order differs from index order.
        try store.apply([.task("e", index: 3, finished(1)), .task("e", index: 0, finished(2, .failed)),
                         .task("e", index: 4, TaskRecord(state: .running, attempt: 1, node: "n1")), .visible("e", upTo: 2)])
        let all = try #require(try store.events("e", afterSeq: 0))
        #expect(all.state == .running)
        #expect(all.tasks.map(\.index) == [3, 0])
        #expect(all.tasks.map(\.record.finishSeq) == [1, 2])
        #expect(try store.events("e", afterSeq: 1)?.tasks.map(\.id) == ["t0"])
        #expect(try store.events("e", afterSeq: 2)?.tasks == [])
        #expect(try store.events("e", afterSeq: 0, limit: 1)?.tasks.map(\.index) == [3])

        try store.apply([.task("e", index: 1, finished(3)), .task("e", index: 2, finished(4)),
                         .task("e", index: 4, finished(5, .cancelled)), .swarmState("e", .done, epoch: 1), .visible("e", upTo: 5)])
        let rest = try #require(try store.events("e", afterSeq: 2))
        #expect(rest.state == .done)
        #expect(rest.tasks.map(\.record.finishSeq) == [3, 4, 5])
        #expect(rest.allVisible)
    }

    /// The stored lineage rebases a client's cursor in the same read: a cursor of the reign a
    /// partition's losing side numbered resumes at the fork point, one of a reign newer than
    /// the copy waits, and the lineage survives a reopen (restore) and `hideAll` hides the rest.
    @Test func eventsRebaseTheCursorOntoTheStoredLineage() throws {
        let dir = TemporaryDirectory("lineage")
        var store: SwarmStore? = try SwarmStore(directory: dir.path)
        let (a1, c2, a3) = (Reign(epoch: 1, owner: 0), Reign(epoch: 2, owner: 2), Reign(epoch: 3, owner: 0))
        var lineage = FinishLineage.created
        lineage.begin(c2, from: 2)
        lineage.begin(a3, from: 4)
        lineage.learn(FinishLineage(marks: [.init(reign: a1, from: 0), .init(reign: Reign(epoch: 2, owner: 1), from: 1)]))
        try store!.apply([.swarm(definition("l", tasks: 6), epoch: 3, state: .running), .lineage("l", lineage)]
                         + (0..<6).map { .task("l", index: UInt32($0), finished(UInt32($0 + 1))) } + [.visible("l", upTo: 6)])
        // A client of the losing side (reign 1.0) had seen up to 5: it resumes after 2.
        let losing = try #require(try store!.events("l", after: EventCursor(reign: a1, seq: 5)))
        #expect(losing.cursor == EventCursor(reign: a3, seq: 2))
        #expect(losing.tasks.map(\.record.finishSeq) == [3, 4, 5, 6])
        // The tip's own cursor is exact; a sibling's goes through its alias; a plain number is
        // taken as it is.
        #expect(try store!.events("l", after: EventCursor(reign: a3, seq: 5))?.tasks.map(\.record.finishSeq) == [6])
        #expect(try store!.events("l", after: EventCursor(reign: Reign(epoch: 2, owner: 1), seq: 5))?.cursor.seq == 1)
        #expect(try store!.events("l", after: EventCursor(reign: nil, seq: 5))?.tasks.map(\.record.finishSeq) == [6])
        // A cursor of a reign newer than this copy knows: nothing yet, and not over.
        let ahead = try #require(try store!.events("l", after: EventCursor(reign: Reign(epoch: 9, owner: 1), seq: 1)))
        #expect(ahead.tasks.isEmpty && !ahead.allVisible)
        store = nil
        let reopened = try SwarmStore(directory: dir.path)
        #expect(try reopened.lineages() == ["l": lineage])
        try reopened.apply([.hideAll("l")])
        #expect(try reopened.events("l", after: .start)?.tasks == [])
        #expect(try reopened.events("l", after: .start)?.allVisible == false)
        // A swarm stored without one has no lineage, and its cursors are plain numbers.
        try reopened.apply([.swarm(definition("m", tasks: 1), epoch: 1, state: .running)])
        #expect(try reopened.lineages()["m"] == nil)
        #expect(try reopened.events("m", after: .start)?.cursor == .start)
    }

    /// Finished tasks above the visible mark (not yet stored on a majority of the replica set)
    /// are not events yet, and the swarm is not over for a stream while any is hidden; the mark
    /// never goes down.
    @Test func eventsShowOnlyFinishesUpToTheVisibleMark() throws {
        let dir = TemporaryDirectory("visible")
        let store = try SwarmStore(directory: dir.path)
        try store.apply([.swarm(definition("v", tasks: 4), epoch: 1, state: .running)])
        try store.apply([.task("v", index: 2, finished(1)), .task("v", index: 0, finished(2)), .task("v", index: 1, finished(3))])
        var events = try #require(try store.events("v", afterSeq: 0))
        #expect(events.tasks.isEmpty && !events.allVisible)
        try store.apply([.visible("v", upTo: 2)])
        events = try #require(try store.events("v", afterSeq: 0))
        #expect(events.tasks.map(\.index) == [2, 0] && !events.allVisible)
        try store.apply([.task("v", index: 3, finished(4)), .swarmState("v", .done, epoch: 1), .visible("v", upTo: 1)])
        events = try #require(try store.events("v", afterSeq: 0))
        #expect(events.tasks.map(\.index) == [2, 0], "the mark went down")
        #expect(events.state == .done && !events.allVisible)
        try store.apply([.visible("v", upTo: 4)])
        events = try #require(try store.events("v", afterSeq: 2))
        #expect(events.tasks.map(\.index) == [1, 3] && events.allVisible)
        #expect(throws: StoreError.self) { try store.apply([.visible("nope", upTo: 1)]) }
    }

    /// A data dir written before the visible mark (migration v7) keeps showing the finished
    /// tasks it holds: the mark starts at the highest number stored.
    @Test func swarmsStoredBeforeTheVisibleMarkKeepTheirEvents() throws {
        let dir = TemporaryDirectory("visible-migration")
        do {
            let pool = try DatabasePool(path: dir.path + "/" + SwarmStore.fileName)
            try StoreSchema.migrator.migrate(pool, upTo: "v6-session-chunks")
            try pool.write { db in
                for (id, seqs) in [("old", [2, 0, 1]), ("empty", [0, 0, 0])] {
                    try db.execute(sql: """
                        INSERT INTO swarm (id, replicas, maxAttempts, options, createdAtMs, taskCount, epoch, state)
                        VALUES (?, X'6E3100', 3, X'', 1, 3, 1, 0)
                        """, arguments: [id])
                    for (index, seq) in seqs.enumerated() {
                        try db.execute(sql: """
                            INSERT INTO task (swarm, idx, taskId, memoryMB, milliCPUs, payload, state, attempt, node, result, finishSeq)
                            VALUES (?, ?, ?, 1, 1, X'', ?, 1, 'n1', NULL, ?)
                            """, arguments: [id, index, "t\(index)", seq > 0 ? 2 : 0, seq])
                    }
                }
            }
        }
        let store = try SwarmStore(directory: dir.path)
        let old = try #require(try store.events("old", afterSeq: 0))
        #expect(old.tasks.map(\.index) == [2, 0] && old.allVisible)
        let empty = try #require(try store.events("empty", afterSeq: 0))
        #expect(empty.tasks.isEmpty && empty.allVisible)
    }

    @Test func listIsNewestFirstAndBounded() throws {
        let dir = TemporaryDirectory("list")
        let store = try SwarmStore(directory: dir.path)
        for i in 0..<5 {
            try store.apply([.swarm(definition("s\(i)", tasks: 3, createdAtMs: UInt64(100 + i)), epoch: 1, state: .running)])
        }
        try store.apply([.task("s2", index: 0, finished(1)), .task("s2", index: 1, finished(2, .failed)), .swarmState("s4", .cancelled, epoch: 1)])
        let list = try store.list()
        #expect(list.map(\.id) == ["s4", "s3", "s2", "s1", "s0"])
        #expect(list[0].state == .cancelled)
        #expect(list[2] == SwarmSummary(id: "s2", state: .running, total: 3, succeeded: 1, failed: 1, createdAtMs: 102))
        #expect(try store.list(limit: 2).map(\.id) == ["s4", "s3"])
        #expect(try store.list(limit: -1).count == 1)
    }

    /// Reads from other threads run while a writer applies batches; each batch finishes two
    /// tasks at once, so a reader that ever saw half a transaction would see an odd count.
    @Test func readsFromOtherThreadsSeeWholeTransactionsWhileWritesGoOn() async throws {
        let dir = TemporaryDirectory("concurrent")
        let store = try SwarmStore(directory: dir.path)
        let tasks = 1_000
        try store.apply([.swarm(definition("c", tasks: tasks), epoch: 1, state: .running)])
        let progress = ConcurrentProgress()

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { progress.writerDone.store(true, ordering: .releasing) }
                for pair in 0..<(tasks / 2) {
                    if pair == tasks / 4 {
                        // Halfway, hold until the readers have read a few more times, so that
                        // reads provably overlap committed and still-coming writes.
                        let before = progress.readsDone.load(ordering: .relaxed)
                        let deadline = ContinuousClock.now + .seconds(30)
                        while progress.readsDone.load(ordering: .relaxed) < before + 6, ContinuousClock.now < deadline {
                            try await Task.sleep(for: .milliseconds(1))
                        }
                    }
                    let a = UInt32(2 * pair), b = a + 1
                    try store.apply([.task("c", index: a, finished(a + 1)), .task("c", index: b, finished(b + 1)),
                                     .visible("c", upTo: b + 1)])
                }
                try store.apply([.swarmState("c", .done, epoch: 1)])
            }
            for _ in 0..<3 {
                group.addTask {
                    var last = 0
                    var lastSeq: UInt32 = 0
                    var writing = true
                    while writing {
                        // One more read after the writer ends, so every reader checks the end too.
                        writing = !progress.writerDone.load(ordering: .acquiring)
                        let status = try #require(try store.status("c", includeTasks: false))
                        let done = status.counts.succeeded
                        #expect(done % 2 == 0, "a read saw half of a transaction: \(done)")
                        #expect(done >= last, "succeeded went back from \(last) to \(done)")
                        #expect(status.counts.pending + done == tasks)
                        last = done
                        let events = try #require(try store.events("c", afterSeq: lastSeq, limit: 1_000))
                        for (k, e) in events.tasks.enumerated() { #expect(e.record.finishSeq == lastSeq + UInt32(k) + 1) }
                        lastSeq += UInt32(events.tasks.count)
                        if writing { progress.readsDone.add(1, ordering: .relaxed) }
                        // Reads block their thread; yield so that the writer (and the other
                        // readers) get one of the few cooperative threads (2 on this machine).
                        await Task.yield()
                    }
                }
            }
            try await group.waitForAll()
        }
        // The test means something only if reads overlapped the writes.
        #expect(progress.readsDone.load(ordering: .relaxed) >= 6, "reads did not overlap the writes")
        let final = try #require(try store.events("c", afterSeq: 0, limit: 1_000))
        #expect(final.state == .done)
        #expect(final.tasks.count == tasks)
    }
}

@Suite("Swarm store bounds")
struct SwarmStoreBoundTests {
    @Test func aPageStopsOnceItsResultsPassTheByteBudget() throws {
        let dir = TemporaryDirectory("bytes")
        let store = try SwarmStore(directory: dir.path)
        try store.apply([.swarm(definition("b", tasks: 10), epoch: 1, state: .running)])
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 1_000)
        try store.apply((0..<10).map { .task("b", index: UInt32($0), TaskRecord(state: .succeeded, attempt: 1, node: "n", result: big, finishSeq: UInt32($0 + 1))) }
                        + [.visible("b", upTo: 10)])
        // 2,500 bytes: the third result passes the budget and ends the page.
        #expect(try store.status("b", includeTasks: true, maxResultBytes: 2_500)?.tasks?.map(\.index) == [0, 1, 2])
        #expect(try store.events("b", afterSeq: 4, maxResultBytes: 2_500)?.tasks.map(\.record.finishSeq) == [5, 6, 7])
        // One result larger than the budget still comes, alone.
        #expect(try store.status("b", includeTasks: true, offset: 0, maxResultBytes: 10)?.tasks?.map(\.index) == [0])
    }
}
