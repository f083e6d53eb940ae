import Foundation
import Testing
@testable import StarlingSandbox

/// The body of POST /v1/swarms: decoding and the checks a server makes before it stores or
/// schedules any of it.
@Suite("SwarmSpec and policy bounds")
struct SwarmSpecTests {
    func decode(_ json: String) throws -> SwarmSpec { try JSONDecoder().decode(SwarmSpec.self, from: Data(json.utf8)) }

    func refusal(_ s: SwarmSpec) -> String? {
        do { try SwarmLimits.validate(s); return nil } catch { return error.description }
    }

    @Test func theInterfaceShapeDecodesAndPasses() throws {
        let s = try decode(#"""
            {"tasks": [{"id": "a", "argv": ["echo", "a"]}, {"argv": ["python3", "-c", "print(2)"], "memoryMB": 128}],
             "maxAttempts": 2, "policy": {"maxMemoryMB": 512, "net": "none"}, "spawn": {"maxTasks": 10, "maxDepth": 2}}
            """#)
        #expect(s.tasks.count == 2)
        #expect(s.spawn == .init(maxTasks: 10, maxDepth: 2))
        #expect(refusal(s) == nil)
        #expect(try JSONDecoder().decode(SwarmSpec.self, from: JSONEncoder().encode(s)) == s)
    }

    @Test func eachBoundIsRefusedWithItsReason() {
        let ok = TaskSpec(argv: ["true"])
        #expect(refusal(SwarmSpec(tasks: [])) == "a swarm needs at least one task")
        #expect(refusal(SwarmSpec(tasks: Array(repeating: ok, count: SwarmLimits.maxTasks + 1)))?.contains("more than") == true)
        #expect(refusal(SwarmSpec(tasks: Array(repeating: ok, count: SwarmLimits.maxTasks))) == nil)
        #expect(refusal(SwarmSpec(tasks: [TaskSpec(argv: [])]))?.hasPrefix("tasks[0]: argv") == true)
        #expect(refusal(SwarmSpec(tasks: [ok, TaskSpec(argv: ["x"], memoryMB: 1)]))?.hasPrefix("tasks[1]: memoryMB") == true)
        #expect(refusal(SwarmSpec(tasks: [TaskSpec(id: "a", argv: ["x"]), TaskSpec(id: "a", argv: ["y"])]))?.contains("used twice") == true)
        for bad in ["", "..", ".", "a/b", "a b", String(repeating: "x", count: 129), "é"] {
            #expect(refusal(SwarmSpec(tasks: [TaskSpec(id: bad, argv: ["x"])]))?.contains("id must be") == true, "id \(bad)")
        }
        // The same rule for a task sent alone (a session's action, a run): schemathesis sent an
        // action whose id held control characters, and it ran (ST201).
        for bad in ["", "..", "a b", "V\u{13}I", "é"] {
            #expect(throws: InvalidTask.self, "id \(bad.debugDescription)") { try TaskLimits.validate(TaskSpec(id: bad, argv: ["x"])) }
        }
        #expect(throws: Never.self) { try TaskLimits.validate(TaskSpec(id: "t-1.a_b", argv: ["x"])) }
        #expect(refusal(SwarmSpec(tasks: [ok], maxAttempts: 0))?.hasPrefix("maxAttempts") == true)
        #expect(refusal(SwarmSpec(tasks: [ok], maxAttempts: Int.max))?.hasPrefix("maxAttempts") == true)
        #expect(refusal(SwarmSpec(tasks: [ok], maxAttempts: Int.min))?.hasPrefix("maxAttempts") == true)
        #expect(refusal(SwarmSpec(tasks: [ok], spawn: .init(maxTasks: -1, maxDepth: 1)))?.hasPrefix("spawn.maxTasks") == true)
        #expect(refusal(SwarmSpec(tasks: [ok], spawn: .init(maxTasks: 1, maxDepth: 9)))?.hasPrefix("spawn.maxDepth") == true)
        #expect(refusal(SwarmSpec(tasks: [ok], policy: Policy(maxCpus: .nan)))?.hasPrefix("policy: maxCpus") == true)
    }

    /// A swarm travels whole between nodes: each task of it has a bound (512 KiB of inputs),
    /// and the swarm as a whole has one too (8 MiB).
    @Test func theSwarmsInputsAreBoundedPerTaskAndAsAWhole() {
        let file = String(repeating: "x", count: 500 << 10)
        let big = TaskSpec(argv: ["cat"], files: ["f": file])
        #expect(refusal(SwarmSpec(tasks: Array(repeating: big, count: 16))) == nil)
        #expect(refusal(SwarmSpec(tasks: Array(repeating: big, count: 17)))?.contains("exceed") == true)
        let tooBig = TaskSpec(argv: ["cat"], files: ["f": String(repeating: "x", count: 600 << 10)])
        #expect(refusal(SwarmSpec(tasks: [tooBig]))?.contains("a task of a swarm") == true)
    }

    @Test func policyBoundsRefuseNonsenseNotGenerosity() {
        func refusal(_ p: Policy) -> String? {
            do { try p.validate(); return nil } catch { return error.description }
        }
        #expect(refusal(Policy()) == nil)
        #expect(refusal(Policy(allow: ["python3"], net: .host, maxMemoryMB: 1 << 20, maxCpus: 1024, maxTimeoutSeconds: 86_400,
                               secrets: ["API_TOKEN"])) == nil)
        #expect(refusal(Policy(maxMemoryMB: -1))?.hasPrefix("maxMemoryMB") == true)
        #expect(refusal(Policy(maxCpus: .infinity))?.hasPrefix("maxCpus") == true)
        #expect(refusal(Policy(maxTimeoutSeconds: 0))?.hasPrefix("maxTimeoutSeconds") == true)
        #expect(refusal(Policy(maxTimeoutSeconds: -.nan))?.hasPrefix("maxTimeoutSeconds") == true)
        #expect(refusal(Policy(maxPids: 0))?.hasPrefix("maxPids") == true)
        #expect(refusal(Policy(maxPids: 65_537))?.hasPrefix("maxPids") == true)
        #expect(refusal(Policy(maxPids: 65_536)) == nil)
        #expect(refusal(Policy(allow: [""]))?.hasPrefix("allow") == true)
        #expect(refusal(Policy(allow: ["a\u{0}b"]))?.hasPrefix("allow") == true)
        #expect(refusal(Policy(allow: Array(repeating: "x", count: TaskLimits.maxArgs + 1)))?.hasPrefix("allow") == true)
        #expect(refusal(Policy(secrets: ["1BAD"]))?.hasPrefix("secrets") == true)
    }

    /// Numbers outside Int's range are decode errors, not traps.
    @Test func hugeNumbersAreDecodeErrorsOrRefusals() throws {
        #expect(throws: DecodingError.self) { try decode(#"{"tasks": [{"argv": ["x"]}], "maxAttempts": 1e300}"#) }
        #expect(throws: DecodingError.self) { try decode(#"{"tasks": [{"argv": ["x"], "memoryMB": 99999999999999999999}]}"#) }
        let s = try decode(#"{"tasks": [{"argv": ["x"], "cpus": 1e308}], "maxAttempts": -9223372036854775808}"#)
        #expect(refusal(s) != nil)
    }
}
