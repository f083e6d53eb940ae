import Foundation
@testable import StarlingCore
@testable import StarlingRuntime
import StarlingSandbox
import Testing

/// The pure rules of hosted agents: what a spec may ask for, which journal keys are the node's,
/// and that no client's effect can pass for one the node runs itself.
struct AgentRulesTests {
    @Test func aBrainWithTheNetworkOrASecretOrANodeVariableIsRefused() {
        #expect(AgentSpec(brain: TaskSpec(argv: ["python3", "brain.py"])).refusal() == nil)
        #expect(AgentSpec(brain: TaskSpec(argv: ["true"], net: NetworkMode.host)).refusal()?.contains("no network") == true)
        #expect(AgentSpec(brain: TaskSpec(argv: ["true"], secrets: ["MODEL_KEY"])).refusal()?.contains("no secrets") == true)
        #expect(AgentSpec(brain: TaskSpec(argv: ["true"], env: ["STARLING_SESSION": "other"])).refusal()?.contains("set by the node") == true)
        #expect(AgentSpec(brain: TaskSpec(argv: [])).refusal() != nil)
    }

    @Test func aModelNeedsAnHTTPURLAndASecretName() {
        let brain = TaskSpec(argv: ["true"])
        #expect(AgentSpec(brain: brain, model: ModelEndpoint(baseURL: "https://api.example.com/v1", secret: "KEY")).refusal() == nil)
        #expect(AgentSpec(brain: brain, model: ModelEndpoint(baseURL: "file:///etc/passwd", secret: "KEY")).refusal() != nil)
        #expect(AgentSpec(brain: brain, model: ModelEndpoint(baseURL: "not a url", secret: "KEY")).refusal() != nil)
        #expect(AgentSpec(brain: brain, model: ModelEndpoint(baseURL: "http://127.0.0.1:9/v1", secret: "")).refusal() != nil)
        // The key travels with every call: plain http only to this machine.
        #expect(AgentSpec(brain: brain, model: ModelEndpoint(baseURL: "http://127.0.0.1:9/v1", secret: "KEY")).refusal() == nil)
        #expect(AgentSpec(brain: brain, model: ModelEndpoint(baseURL: "http://localhost:9/v1", secret: "KEY")).refusal() == nil)
        #expect(AgentSpec(brain: brain, model: ModelEndpoint(baseURL: "http://api.example.com/v1", secret: "KEY")).refusal()?.contains("https") == true)
        #expect(AgentSpec(brain: brain, model: ModelEndpoint(baseURL: "http://10.0.0.5/v1", secret: "KEY")).refusal()?.contains("https") == true)
    }

    /// The agent's policy allows the model's secret (the node adds it to model calls); no task a
    /// brain starts may name it, or the brain could have an effect print the key (review).
    @Test func noTaskABrainStartsMayNameTheModelsSecret() {
        let spec = AgentSpec(brain: TaskSpec(argv: ["true"]), model: ModelEndpoint(baseURL: "https://api.example.com/v1", secret: "MODEL_KEY"))
        #expect(spec.refusal(ofBrainTaskSecrets: ["MODEL_KEY"])?.contains("model key") == true)
        #expect(spec.refusal(ofBrainTaskSecrets: ["GITHUB_TOKEN", "MODEL_KEY"]) != nil)
        #expect(spec.refusal(ofBrainTaskSecrets: ["GITHUB_TOKEN"]) == nil)
        #expect(spec.refusal(ofBrainTaskSecrets: nil) == nil)
        #expect(AgentSpec(brain: TaskSpec(argv: ["true"])).refusal(ofBrainTaskSecrets: ["MODEL_KEY"]) == nil, "no model, no model key")
    }

    @Test func theNodesKeysAreReservedAndACallsKeyIsStable() {
        for key in ["model/x", "swarm/y", "starling.agent.end", "starling.agent.start/3", "starling.anything"] {
            #expect(AgentKeys.isReserved(key))
        }
        #expect(!AgentKeys.isReserved("run-code"))
        #expect(!AgentKeys.isReserved("models"))
        let body = Array(#"{"messages": []}"#.utf8)
        #expect(AgentKeys.callKey(prefix: "model/", idempotencyKey: nil, body: body) == AgentKeys.callKey(prefix: "model/", idempotencyKey: nil, body: body))
        #expect(AgentKeys.callKey(prefix: "model/", idempotencyKey: nil, body: body) != AgentKeys.callKey(prefix: "model/", idempotencyKey: nil, body: body + [32]))
        #expect(AgentKeys.callKey(prefix: "model/", idempotencyKey: "plan", body: body) == "model/plan")
        #expect(SessionLimits.validKey(AgentKeys.attemptKey(AgentKeys.callKey(prefix: "model/", idempotencyKey: nil, body: body), 3)))
        #expect(SessionLimits.validKey(AgentKeys.attemptKey("model/" + String(repeating: "k", count: AgentLimits.maxIdempotencyKeyBytes), 3)))
        #expect(!AgentKeys.validIdempotencyKey("has space"))
        #expect(!AgentKeys.validIdempotencyKey(String(repeating: "k", count: AgentLimits.maxIdempotencyKeyBytes + 1)))
    }

    @Test func aClientsEffectNeverDecodesAsABuiltinOne() throws {
        // What the public act route stores: a TaskSpec, re-encoded, whatever extra keys the client sent.
        let sneaky = #"{"argv": ["true"], "starlingBuiltin": "end", "state": "done"}"#
        let task = try JSONDecoder().decode(TaskSpec.self, from: Data(sneaky.utf8))
        let stored = try JSONEncoder().encode(task)
        #expect((try? JSONDecoder().decode(BuiltinEffect.self, from: stored)) == nil)
        let builtin = AgentService.encode(BuiltinEffect(starlingBuiltin: .end, state: "done"))
        #expect((try? JSONDecoder().decode(BuiltinEffect.self, from: Data(builtin)))?.state == "done")
    }

    @Test func aModelsNumbersCannotTrapTheNode() {
        #expect(CallOutcome.usageTokens(#"{"usage": {"total_tokens": 120}}"#) == 120)
        #expect(CallOutcome.usageTokens(#"{"usage": {"total_tokens": -5}}"#) == 0)
        #expect(CallOutcome.usageTokens(#"{"usage": {"total_tokens": 1e300}}"#) == CallOutcome.maxTokens)
        #expect(CallOutcome.usageTokens(#"{"usage": {"total_tokens": "many"}}"#) == nil)
        #expect(CallOutcome.usageTokens("not json") == nil)
        for status in [0, 99, 100, 101, 199, 600, 999, Int.max, Int.min] {
            #expect(CallOutcome(status: status, body: "").answerStatus == 502)
        }
        #expect(CallOutcome(status: 429, body: "").answerStatus == 429)
    }

    /// An end being written is not shown as an end (the agent's brain may have ended `done`),
    /// but keeps a brain from starting; an end whose writer died is a failed end.
    @Test func anEndBeingWrittenIsNotShownAsFailed() {
        func view(_ outcome: SessionJournalEntry.Outcome) -> SessionView {
            SessionView(id: "a", owner: "n1", replicas: ["n1"], epoch: 1, seq: 3, hash: [], signer: "n1", state: nil, stateSeq: 0,
                        journal: [SessionJournalEntry(seq: 3, key: AgentKeys.end, startedSeq: 3, outcome: outcome)], journalMore: false)
        }
        #expect(AgentService.end(in: view(.running), pendingCounts: false) == nil)
        #expect(AgentService.end(in: view(.running))?.state == "failed")
        #expect(AgentService.end(in: view(.unknown), pendingCounts: false)?.state == "failed")
        let done = BuiltinEffect(starlingBuiltin: .end, state: "done", exitCode: 0)
        let bytes = [UInt8]((try? JSONEncoder().encode(done)) ?? Data())
        #expect(AgentService.end(in: view(.done(result: bytes)), pendingCounts: false)?.state == "done")
    }
}
