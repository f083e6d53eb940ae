import Foundation
import Glibc
import Testing

/// An agent whose journal holds more than one page (256 entries) before its end: the node reads
/// the whole journal (`AgentService.wholeView`), so it sees the end and never starts the brain
/// again. Before, it read the first page only: the end was not on it, and the ended agent showed
/// "starting" and had its brain started again on the next ownership round.
@Suite("Agents with long journals", .serialized)
struct AgentLongJournalTests {
    @Test(.timeLimit(.minutes(6)))
    func anAgentWhoseEndIsPastTheFirstJournalPageStaysEnded() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("n1", extraArguments: try AgentFixtures.nodeArguments(cluster))
        // The brain runs until the client checkpoints {"go": true} into its session (it reads its
        // state through its socket); meanwhile the client records 270 effects.
        let waitsForGo = AgentFixtures.socketPrelude + """
            while True:
                c = U()
                c.request("GET", "/v1/sessions/" + os.environ["STARLING_SESSION"] + "?since=9000000000000000000")
                r = c.getresponse()
                body = json.loads(r.read() or b"{}")
                c.close()
                if r.status == 200 and isinstance(body.get("state"), dict) and body["state"].get("go"):
                    break
                time.sleep(0.2)
            print("finished")
            """
        let spec: [String: Any] = ["id": "long", "brain": ["argv": ["python3", "-c", waitsForGo], "timeoutSeconds": 600]]
        let (status, created) = AgentFixtures.call(node.apiPort, "POST", "/v1/agents", json: spec)
        #expect(status == 201, "create: \(created)")
        for k in 1...270 {
            let (s, body) = AgentFixtures.call(node.apiPort, "POST", "/v1/sessions/long/actions", json: ["key": "k\(k)", "argv": ["true"]])
            #expect(s == 200, "effect k\(k): \(s) \(body)")
            if s != 200 { return }
        }
        let (_, before) = AgentFixtures.call(node.apiPort, "GET", "/v1/agents/long")
        guard before["state"] as? String == "running" else {
            Issue.record("the brain ended before its journal passed one page (\(before)): the premise does not hold")
            return
        }
        #expect(AgentFixtures.call(node.apiPort, "POST", "/v1/sessions/long/checkpoint", json: ["state": ["go": true]]).0 == 200)
        var agent: [String: Any] = [:]
        try waitUntil("the agent is done", seconds: 120) {
            agent = AgentFixtures.call(node.apiPort, "GET", "/v1/agents/long", seconds: 5).1
            return agent["state"] as? String == "done"
        }
        #expect(agent["output"] as? String == "finished\n" && agent["restarts"] as? Int == 0, "agent: \(agent)")
        // Ownership rounds pass (the poll and the pushes): the brain is not started again.
        let settled = Date().addingTimeInterval(3)
        while Date() < settled { usleep(200_000) }
        #expect(node.metric("starling_agent_brain_starts") == 1)
        #expect(AgentFixtures.call(node.apiPort, "GET", "/v1/agents/long").1["state"] as? String == "done")
    }
}
