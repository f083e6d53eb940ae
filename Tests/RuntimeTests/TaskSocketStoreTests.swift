import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import StarlingCore
import StarlingSandbox
import StarlingStore
import Testing
@testable import StarlingRuntime

/// The socket over the node's real pieces: `TaskSockets` → `MeshSpawnGateway` → the public
/// `SwarmRoutes` and a real `SwarmStore`, with real bubblewrap. Only scheduling is missing: the
/// gateway stores a submitted swarm as its owner would (StoreOnlyGateway).
@Suite(.serialized) struct TaskSocketStoreTests {
    func run(_ sockets: TaskSockets, _ runner: SandboxRunner, swarm: SwarmDefinition, index: UInt32, _ script: String) async throws -> [String] {
        let task = swarm.draft.tasks[Int(index)]
        let run = TaskRun(swarm: swarm.id, index: index, attempt: 1, task: task, options: swarm.draft.options, maxAttempts: 1)
        let context = sockets.context(for: run)
        let spec = TaskSpec(argv: ["/bin/sh", "-c", script], timeoutSeconds: 60)
        let result = try await offPool { try runner.run(spec, preferWarm: false, context: context) }
        #expect(result.exitCode == 0, "\(result.stderr)")
        return result.stdout.split(separator: "\n").map(String.init)
    }

    @Test func childrenAreStoredReadAndCancelledAndTheBudgetSurvivesARetryElsewhere() async throws {
        let (store, dir) = try temporaryStore("socket")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let gateway = StoreOnlyGateway(store: store, name: "n1")
        let parentSpec = SwarmSpec(tasks: [TaskSpec(argv: ["a"]), TaskSpec(argv: ["b"])], policy: Policy(maxMemoryMB: 256),
                                   spawn: .init(maxTasks: 3, maxDepth: 1))
        guard case .submitted(let parentID, _) = try await gateway.submit(try SwarmDrafting.draft(parentSpec, nowMs: 1)),
              case .submitted(let strangerID, _) = try await gateway.submit(try SwarmDrafting.draft(SwarmSpec(tasks: [TaskSpec(argv: ["c"])]), nowMs: 2))
        else { Issue.record("not stored"); return }
        let loaded = try store.loadAll()
        let parent = try #require(loaded.first { $0.0.id == parentID }?.0)
        let stranger = try #require(loaded.first { $0.0.id == strangerID }?.0)
        let runner = try SandboxRunner(configuration: SandboxConfiguration(nodeName: "n1", workRoot: "/dev/shm/starling-spawn-tests", policy: Policy()))
        defer { runner.shutdown() }
        let sockets = TaskSockets(swarms: gateway, logger: Logger(label: "test"))

        // Task 0 spawns two tasks, reads its child (with its parent named), and cancels it.
        let two = #"{"tasks":[{"argv":["true"]},{"argv":["true"]}]}"#
        let first = try await run(sockets, runner, swarm: parent, index: 0, """
            out=$(curl -s --unix-socket "$STARLING_SOCKET" -H 'content-type: application/json' --data '\(two)' http://x/v1/swarms)
            id=$(echo "$out" | sed 's/.*"id":"\\([0-9a-f]*\\)".*/\\1/')
            echo "$id"
            \(curl("GET", "/v1/swarms/$id?tasks=false"))
            \(curl("GET", "/v1/swarms/\(parentID)"))
            \(curl("GET", "/v1/swarms/\(strangerID)"))
            \(curl("POST", "/v1/swarms", two))
            \(curl("DELETE", "/v1/swarms/$id"))
            """)
        try #require(first.count == 6, "\(first)")
        let child = first[0]
        #expect(first[1].hasPrefix("200 ") && first[1].contains(#""swarm":"\#(parentID)""#) && first[1].contains(#""task":0"#), "\(first[1])")
        #expect(first[2].hasPrefix("404 ") && first[3].hasPrefix("404 "), "\(first)")
        #expect(first[4].hasPrefix("403 ") && first[4].contains("1 of 3 left"), "\(first[4])")
        #expect(first[5].hasPrefix("202 "), "\(first[5])")
        let status = try #require(try store.status(child, includeTasks: false))
        #expect(status.state == .cancelled)
        #expect(status.parent == TaskRef(swarm: parentID, task: 0))
        let childOptions = try JSONDecoder().decode(SwarmOptions.self, from: Data(try #require(store.loadAll().first { $0.0.id == child }?.0.draft.options)))
        #expect(childOptions.policy?.maxMemoryMB == 256 && childOptions.depth == 1)

        // Task 1 of the same swarm shares the budget, and cannot see task 0's child.
        let second = try await run(sockets, runner, swarm: parent, index: 1,
                                   curl("GET", "/v1/swarms/\(child)") + curl("POST", "/v1/swarms", two))
        #expect(second.count == 2 && second[0].hasPrefix("404 ") && second[1].contains("1 of 3 left"), "\(second)")

        // Task 0 retried on another node (a fresh ledger): its child is still its own, and what it
        // spent is still spent, read back from the store.
        let elsewhere = TaskSockets(swarms: gateway, logger: Logger(label: "test"))
        let retried = try await run(elsewhere, runner, swarm: parent, index: 0,
                                    curl("GET", "/v1/swarms/\(child)?tasks=false") + curl("POST", "/v1/swarms", two)
                                    + curl("POST", "/v1/swarms", #"{"tasks":[{"argv":["true"]}]}"#) + curl("POST", "/v1/swarms", #"{"tasks":[{"argv":["true"]}]}"#))
        #expect(retried.count == 4, "\(retried)")
        #expect(retried[0].hasPrefix("200 "), "\(retried)")
        #expect(retried[1].hasPrefix("403 ") && retried[1].contains("1 of 3 left"), "\(retried)")
        #expect(retried[2].hasPrefix("202 "), "\(retried)")
        #expect(retried[3].hasPrefix("403 ") && retried[3].contains("0 of 3 left"), "\(retried)")

        // A swarm without spawn gives its tasks no socket.
        let plain = try await run(sockets, runner, swarm: stranger, index: 0, #"echo "[$STARLING_SOCKET] $STARLING_TASK""#)
        #expect(plain == ["[] \(strangerID)/t0"])
    }
}

/// A child held only by another node: the socket learns its parent from a holder (one hop) and
/// serves its status and events through the public routes' forwarding. Two real HTTP servers.
@Suite(.serialized) struct TaskSocketForwardingTests {
    @Test func aChildHeldElsewhereIsFoundAndReadThroughAHolder() async throws {
        let (store, dir) = try temporaryStore("socket-holder")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (emptyStore, emptyDir) = try temporaryStore("socket-front")
        defer { try? FileManager.default.removeItem(atPath: emptyDir) }
        let holder = StoreOnlyGateway(store: store, name: "holder")
        let parentSpec = SwarmSpec(tasks: [TaskSpec(argv: ["a"])], spawn: .init(maxTasks: 5, maxDepth: 1))
        let parentDraft = try SwarmDrafting.draft(parentSpec, nowMs: 1)
        guard case .submitted(let parentID, _) = try await holder.submit(parentDraft) else { Issue.record("not stored"); return }
        let childDraft = try SwarmDrafting.draft(SwarmSpec(tasks: [TaskSpec(argv: ["b"])]), parent: TaskRef(swarm: parentID, task: 0),
                                                 options: SwarmOptions(depth: 1), nowMs: 2)
        guard case .submitted(let childID, _) = try await holder.submit(childDraft),
              case .submitted(let otherID, _) = try await holder.submit(
                try SwarmDrafting.draft(SwarmSpec(tasks: [TaskSpec(argv: ["c"])]), parent: TaskRef(swarm: parentID, task: 1), nowMs: 3))
        else { Issue.record("not stored"); return }

        let holderApp = Application(router: swarmRouter(holder), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        // The holder stands in for another node: on threads of its own, as another process is.
        try await withTaskExecutorPreference(otherNodeThreads) { try await holderApp.test(.live) { holderClient in
            let port = try #require(holderClient.port)
            let front = StoreOnlyGateway(store: emptyStore, name: "front", holders: ["127.0.0.1:\(port)"])
            let sockets = TaskSockets(swarms: front, logger: Logger(label: "test"))
            let runner = try SandboxRunner(configuration: SandboxConfiguration(nodeName: "front", workRoot: "/dev/shm/starling-spawn-tests", policy: Policy()))
            defer { runner.shutdown() }
            let run = TaskRun(swarm: parentID, index: 0, attempt: 1, task: parentDraft.tasks[0], options: parentDraft.options, maxAttempts: 1)
            let context = sockets.context(for: run)
            let script = curl("GET", "/v1/swarms/\(childID)?tasks=false") + curl("GET", "/v1/swarms/\(otherID)?tasks=false")
                + curl("GET", "/v1/swarms/\(parentID)?tasks=false")
            let spec = TaskSpec(argv: ["/bin/sh", "-c", script], timeoutSeconds: 60)
            let result = try await offPool { try runner.run(spec, preferWarm: false, context: context) }
            let lines = result.stdout.split(separator: "\n").map(String.init)
            try #require(lines.count == 3, "\(result.stdout) \(result.stderr)")
            #expect(lines[0].hasPrefix("200 ") && lines[0].contains(#""id":"\#(childID)""#), "\(lines[0])")
            // Another task's child and the parent swarm exist on the holder, and are still 404.
            #expect(lines[1].hasPrefix("404 ") && lines[2].hasPrefix("404 "), "\(lines)")
        } }
    }
}
