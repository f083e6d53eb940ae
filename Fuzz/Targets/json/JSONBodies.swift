import Foundation
import FuzzSupport
import StarlingSandbox

/// Every JSON body the HTTP API accepts: Task, Policy and SwarmSpec today (later issues add
/// theirs here). Each input is decoded as each body; what decodes is validated as a server
/// would, run through policy (narrowing and the decision on a task), and must round-trip
/// through JSON unchanged. Traps anywhere in that are findings.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSONBodies(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let json = Data(bytes(data, size))
    let decoder = JSONDecoder()
    if let task = try? decoder.decode(TaskSpec.self, from: json) {
        if (try? TaskLimits.validate(task)) != nil { _ = JSONFixture.nodePolicy.decide(task) }
        roundTrip(task)
    }
    if let policy = try? decoder.decode(Policy.self, from: json) {
        let narrowed = JSONFixture.nodePolicy.narrowed(by: policy)
        if (try? policy.validate()) != nil {
            invariant((try? narrowed.validate()) != nil, "narrowing two valid policies made an invalid one")
        }
        _ = narrowed.decide(JSONFixture.task)
        roundTrip(policy)
    }
    if let swarm = try? decoder.decode(SwarmSpec.self, from: json) {
        if (try? SwarmLimits.validate(swarm)) != nil {
            let policy = JSONFixture.nodePolicy.narrowed(by: swarm.policy)
            for task in swarm.tasks { _ = policy.decide(task) }
        }
        roundTrip(swarm)
    }
    return 0
}

/// What decodes encodes, and decodes again to the same value.
func roundTrip<T: Codable & Equatable>(_ value: T) {
    let encoded: Data
    do {
        encoded = try JSONEncoder().encode(value)
    } catch {
        invariant(false, "a decoded \(T.self) does not encode: \(error)")
        return
    }
    invariant((try? JSONDecoder().decode(T.self, from: encoded)) == value, "a decoded \(T.self) does not round-trip")
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutableRawPointer?, _ argv: UnsafeMutableRawPointer?) -> Int32 {
    writeSeedsIfAsked(JSONFixture.seeds)
    return 0
}

enum JSONFixture {
    /// A node policy like an operator's --policy file.
    static let nodePolicy = Policy(allow: ["python3", "/bin/sh", "echo"], net: NetworkMode.none, maxMemoryMB: 2048, maxCpus: 2,
                                   maxTimeoutSeconds: 600, maxPids: 128, secrets: ["API_TOKEN"])
    static let task = TaskSpec(argv: ["python3", "-c", "print(1)"], memoryMB: 256)

    static var seeds: [String: [UInt8]] {
        let bodies = [
            "task-minimal": #"{"argv": ["echo", "hi"]}"#,
            "task-full": #"""
                {"id": "t-1", "argv": ["python3", "main.py"], "stdin": "input", "files": {"main.py": "print(open('data/x').read())", "data/x": "42"},
                 "env": {"MODE": "fast"}, "secrets": ["API_TOKEN"], "timeoutSeconds": 30, "memoryMB": 256, "cpus": 0.5, "net": "none", "pids": 64}
                """#,
            "task-bad-path": #"{"argv": ["cat"], "files": {"../etc/passwd": "x"}}"#,
            "policy": #"""
                {"allow": ["python3", "/usr/bin/env"], "net": "host", "maxMemoryMB": 1024, "maxCpus": 1.5, "maxTimeoutSeconds": 120, "maxPids": 64, "secrets": ["API_TOKEN"]}
                """#,
            "policy-empty": "{}",
            "swarm": #"""
                {"tasks": [{"id": "a", "argv": ["echo", "a"]}, {"id": "b", "argv": ["python3", "-c", "print(2)"], "memoryMB": 128}],
                 "maxAttempts": 2, "policy": {"maxMemoryMB": 512, "net": "none"}, "spawn": {"maxTasks": 10, "maxDepth": 2}}
                """#,
            "swarm-duplicate-ids": #"{"tasks": [{"id": "a", "argv": ["true"]}, {"id": "a", "argv": ["false"]}]}"#,
            "swarm-huge-numbers": #"{"tasks": [{"argv": ["x"], "memoryMB": 9223372036854775807, "cpus": 1e308}], "maxAttempts": -9223372036854775808}"#,
        ]
        return bodies.mapValues { Array($0.utf8) }
    }
}
