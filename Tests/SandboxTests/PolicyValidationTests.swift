import Foundation
import Glibc
import Testing
@testable import StarlingSandbox

/// Ceilings no node or request may set: zero, negative, NaN, infinite and huge.
let badPolicies: [Policy] = [
    Policy(maxTimeoutSeconds: 0), Policy(maxTimeoutSeconds: -1), Policy(maxTimeoutSeconds: .nan),
    Policy(maxTimeoutSeconds: .infinity), Policy(maxTimeoutSeconds: 1e300),
    Policy(maxMemoryMB: -5), Policy(maxMemoryMB: 0), Policy(maxMemoryMB: .max),
    Policy(maxCpus: 0), Policy(maxCpus: -1), Policy(maxCpus: .nan), Policy(maxCpus: 1e300),
    Policy(maxPids: -1), Policy(maxPids: 0), Policy(maxPids: .max),
    Policy(allow: [""]), Policy(secrets: ["not a name"]),
]

@Suite("Policy validation")
struct PolicyValidationTests {
    @Test(arguments: badPolicies)
    func aCeilingOutsideTheTaskRangeIsRefused(policy: Policy) {
        #expect(throws: PolicyDenial.self) { try policy.validate() }
    }

    @Test func sensibleCeilingsPass() throws {
        try Policy(allow: ["sh"], net: .host, maxMemoryMB: 8, maxCpus: 0.01, maxTimeoutSeconds: 86_400, maxPids: 1, secrets: ["TOKEN"]).validate()
        try Policy().validate()
    }

    /// Random extreme numbers through narrowing, deciding and the runner's conversions: nothing
    /// traps, and what validates grants only values inside the task ranges.
    @Test func randomExtremeValuesNeverTrap() {
        var rng = SystemRandomNumberGenerator()
        let doubles: [Double] = [0, -0.0, -1, 1e-300, 0.001, 0.01, 1, 300, 86_400, 86_401, 1e18, 1e300, .infinity, -.infinity, .nan,
                                 .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude]
        let ints: [Int] = [0, -1, 1, 7, 8, 256, 65_536, 65_537, 1 << 20, (1 << 20) + 1, .max, .min, Int(Int32.max)]
        func d() -> Double? { Bool.random(using: &rng) ? nil : doubles.randomElement(using: &rng)! }
        func i() -> Int? { Bool.random(using: &rng) ? nil : ints.randomElement(using: &rng)! }
        for _ in 0..<20_000 {
            let node = Policy(maxMemoryMB: i(), maxCpus: d(), maxTimeoutSeconds: d(), maxPids: i())
            let request = Policy(maxMemoryMB: i(), maxCpus: d(), maxTimeoutSeconds: d(), maxPids: i())
            let task = TaskSpec(argv: ["sh"], timeoutSeconds: d(), memoryMB: i(), cpus: d(), pids: i())
            let narrowed = node.narrowed(by: request)
            guard case .success(let grant) = narrowed.decide(task) else { continue }
            _ = nanoseconds(grant.timeoutSeconds)
            let valid = (try? node.validate()) != nil && (try? request.validate()) != nil && (try? TaskLimits.validate(task)) != nil
            if valid {
                #expect(grant.timeoutSeconds > 0 && grant.timeoutSeconds <= TaskLimits.maxTimeoutSeconds)
                #expect(TaskLimits.memoryMBRange.contains(grant.memoryMB) && TaskLimits.pidsRange.contains(grant.pids))
                #expect(TaskLimits.cpusRange.contains(grant.cpus))
            }
        }
        for x in doubles { _ = nanoseconds(x) }
    }

    @Test func envCountsAsInputAndEachVariableIsBounded() {
        let long = String(repeating: "a", count: TaskLimits.maxEnvEntryBytes)
        #expect(throws: InvalidTask.self) { try TaskLimits.validate(TaskSpec(argv: ["sh"], env: ["A": long])) }
        // 200 variables of 100 KiB: each fits one exec string, together they pass the input bound.
        let big = String(repeating: "b", count: 100 << 10)
        let env = Dictionary(uniqueKeysWithValues: (0..<200).map { ("V\($0)", big) })
        #expect(throws: InvalidTask.self) { try TaskLimits.validate(TaskSpec(argv: ["sh"], env: env)) }
        let fine = Dictionary(uniqueKeysWithValues: (0..<10).map { ("V\($0)", big) })
        #expect(throws: Never.self) { try TaskLimits.validate(TaskSpec(argv: ["sh"], env: fine)) }
    }
}

extension SandboxTests {
    @Suite("Policy validation in the runner", .serialized)
    struct RunnerPolicyValidationTests {
        /// A request policy with a bad ceiling is denied with the reason and nothing is spawned (the
        /// old runner trapped on a timeout of 0 after the sandbox had started).
        @Test(arguments: [Policy(maxTimeoutSeconds: 0), Policy(maxTimeoutSeconds: -3), Policy(maxPids: -1), Policy(maxMemoryMB: -5),
                          Policy(maxCpus: .nan)])
        func aBadRequestPolicyIsDeniedWithoutTrapping(request: Policy) throws {
            try withSeparateRunner("bad-request-policy") { runner, root in
                let r = try runner.run(sh("echo ran"), requestPolicy: request, preferWarm: false)
                #expect(r.reason == .denied)
                #expect(r.stderr.contains("request policy"), "\(r.stderr)")
                #expect(r.stdout.isEmpty)
                #expect(leftovers(root, runner).isEmpty)
            }
        }

        @Test func aRunnerRefusesABadNodePolicy() {
            #expect(throws: SandboxUnavailable.self) {
                try withSeparateRunner("bad-node-policy", configure: { $0.policy = Policy(maxTimeoutSeconds: 0) }) { _, _ in }
            }
        }
    }
}
