import Foundation
import Hummingbird
import HummingbirdTesting
import StarlingCore
import StarlingStore
import Testing
@testable import StarlingRuntime

/// `GET /v1/swarms` merges the lists of every live node (a swarm is held by its 3 replicas,
/// not by every node), bounded and deduplicated, and says when a node did not answer.
@Suite("The mesh-wide swarm list")
struct SwarmMeshListTests {
    @Test func theListMergesEveryNodesSwarmsNewestFirstOnceEachAndNamesTheNodesThatDidNotAnswer() async throws {
        let (remoteStore, remoteDir) = try temporaryStore("list-remote")
        defer { try? FileManager.default.removeItem(atPath: remoteDir) }
        let (localStore, localDir) = try temporaryStore("list-local")
        defer { try? FileManager.default.removeItem(atPath: localDir) }
        let remote = StoreOnlyGateway(store: remoteStore, name: "remote")
        let remoteApp = Application(router: swarmRouter(remote), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await remoteApp.test(.live) { remoteClient in
            let port = try #require(remoteClient.port)
            // Both stand-in gateways number their swarms from 1: the first id is held by both
            // nodes (as replicas of one swarm are), the others by one each.
            var remoteIDsSoFar: [String] = []
            for tasks in [3, 1, 1] {
                let spec = #"{"tasks": ["# + Array(repeating: #"{"argv": ["a"]}"#, count: tasks).joined(separator: ",") + "]}"
                remoteIDsSoFar.append(try await remoteClient.execute(uri: "/v1/swarms", method: .post, body: body(spec)) { r in
                    try #require(r.json?["id"] as? String)
                })
                try await Task.sleep(for: .milliseconds(5))  // distinct creation times
            }
            let remoteIDs = remoteIDsSoFar
            // The local copy of the shared swarm is further along (finished): it is the one shown.
            let local = StoreOnlyGateway(store: localStore, name: "local", others: ["127.0.0.1:\(port)", "127.0.0.1:1"])
            let shared = try #require(try await local.submit(SwarmDraft(tasks: [SwarmTask(id: "t0", needs: TaskNeeds(memoryMB: 1, milliCPUs: 1), payload: [])],
                                                                        maxAttempts: 1, options: [], parent: nil, createdAtMs: 1)).submittedID)
            #expect(shared == remoteIDs[0])
            try localStore.apply([.swarmState(shared, .done, epoch: 1)])
            // A swarm only the local node holds, newest of all.
            let localOnly = "b000000000000001"
            let draft = SwarmDraft(tasks: [SwarmTask(id: "t0", needs: TaskNeeds(memoryMB: 1, milliCPUs: 1), payload: [])], maxAttempts: 1,
                                   options: [], parent: nil, createdAtMs: UInt64(Date().timeIntervalSince1970 * 1000) + 60_000)
            try localStore.apply([.swarm(SwarmDefinition(id: localOnly, draft: draft, replicas: ["local"]), epoch: 1, state: .running)])
            let app = Application(router: swarmRouter(local))
            try await app.test(.router) { client in
                try await client.execute(uri: "/v1/swarms", method: .get) { r in
                    #expect(r.status == .ok, "\(r.text)")
                    let swarms = r.json?["swarms"] as? [[String: Any]] ?? []
                    let ids = swarms.compactMap { $0["id"] as? String }
                    #expect(ids == [localOnly, remoteIDs[2], remoteIDs[1], shared], "every node's swarms, newest first, once each: \(r.text)")
                    #expect(swarms.last?["state"] as? String == "done", "the copy furthest along wins: \(r.text)")
                    #expect(r.json?["partial"] as? Bool == true, "a node did not answer: \(r.text)")
                    #expect(r.json?["unanswered"] as? [String] == ["127.0.0.1:1"], "\(r.text)")
                }
                try await client.execute(uri: "/v1/swarms?limit=2", method: .get) { r in
                    #expect((r.json?["swarms"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [localOnly, remoteIDs[2]], "\(r.text)")
                }
                // A node asked by another answers from its own store only (one hop).
                try await client.execute(uri: "/v1/swarms", method: .get, headers: [SwarmForwarder.hopHeader: "someone"]) { r in
                    #expect((r.json?["swarms"] as? [[String: Any]])?.compactMap { $0["id"] as? String } == [localOnly, shared], "\(r.text)")
                    #expect(r.json?["partial"] == nil)
                }
            }
            // Every node answering: no partial flag at all (the JSON only grows when it must).
            local.setOthers(["127.0.0.1:\(port)"])
            try await app.test(.router) { client in
                try await client.execute(uri: "/v1/swarms", method: .get) { r in
                    #expect(r.json?["partial"] == nil && r.json?["unanswered"] == nil, "\(r.text)")
                    #expect((r.json?["swarms"] as? [Any])?.count == 4)
                }
            }
        }
    }

    @Test func mergeKeepsTheBoundAndTheOrder() {
        func s(_ id: String, _ at: UInt64, _ state: String = "running", _ done: Int = 0) -> SwarmSummaryJSON {
            SwarmSummaryJSON(id: id, state: state, total: 10, succeeded: done, failed: 0, createdAtMs: at)
        }
        let merged = SwarmMeshList.merge([[s("a", 1), s("b", 3, "running", 2)], [s("b", 3, "running", 5), s("c", 3)], [s("a", 1, "done", 10)]], limit: 10)
        #expect(merged.map(\.id) == ["b", "c", "a"])
        #expect(merged.map(\.succeeded) == [5, 0, 10])
        #expect(SwarmMeshList.merge([[s("a", 1), s("b", 2), s("c", 3)]], limit: 2).map(\.id) == ["c", "b"])
    }

    /// A node with the cluster key answering a list: only what could be true is merged.
    @Test func implausibleSummariesFromAnotherNodeAreDropped() {
        let now: UInt64 = 1_800_000_000_000
        func s(_ id: String = "0123456789abcdef", state: String = "running", total: Int = 10, succeeded: Int = 2, failed: Int = 1,
               at: UInt64 = 1_800_000_000_000) -> SwarmSummaryJSON {
            SwarmSummaryJSON(id: id, state: state, total: total, succeeded: succeeded, failed: failed, createdAtMs: at)
        }
        #expect(SwarmMeshList.isPlausible(s(), now: now))
        #expect(SwarmMeshList.isPlausible(s(at: now + 60_000), now: now), "a minute of clock skew")
        #expect(!SwarmMeshList.isPlausible(s(at: .max), now: now), "created in the far future: ahead of every real swarm")
        #expect(!SwarmMeshList.isPlausible(s("not-a-swarm"), now: now))
        #expect(!SwarmMeshList.isPlausible(s("0123456789ABCDEF"), now: now))
        #expect(!SwarmMeshList.isPlausible(s(state: "succeeded"), now: now))
        #expect(!SwarmMeshList.isPlausible(s(succeeded: 11), now: now))
        #expect(!SwarmMeshList.isPlausible(s(succeeded: 8, failed: 3), now: now))
        #expect(!SwarmMeshList.isPlausible(s(total: -1, succeeded: 0, failed: 0), now: now))
        #expect(!SwarmMeshList.isPlausible(s(succeeded: Int.max, failed: Int.max), now: now), "no overflow trap")
        #expect(SwarmMeshList.maxBodyBytes(limit: 1_000) < 1 << 20)
    }
}

extension SwarmReply {
    var submittedID: SwarmID? { if case .submitted(let id, _) = self { id } else { nil } }
}
