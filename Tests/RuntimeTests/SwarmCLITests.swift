import Foundation
import Hummingbird
import HummingbirdTesting
import StarlingCore
import StarlingSandbox
import StarlingStore
import Testing
@testable import StarlingRuntime

/// The `starling` binary under test: $STARLING_BIN, else this checkout's debug build.
func starlingCLI() -> String {
    if let bin = ProcessInfo.processInfo.environment["STARLING_BIN"] { return bin }
    return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent(".build/debug/starling").path
}

/// Runs the CLI to its end (bounded by `timeout`), with stdout a file (not a terminal).
///
/// Both streams go to files, not pipes: another test of this process may spawn a child at the
/// same moment, and that child can inherit a pipe's write end (Process does not create it
/// close-on-exec atomically), so reading to the end would wait for that child too.
func runCLI(_ arguments: [String], timeout: TimeInterval = 60) throws -> (status: Int32, stdout: String, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: starlingCLI())
    p.arguments = arguments
    let base = NSTemporaryDirectory() + "starling-cli-\(UUID().uuidString)"
    let paths = [base + ".out", base + ".err"]
    defer { for path in paths { try? FileManager.default.removeItem(atPath: path) } }
    let files = try paths.map { path in
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        return try #require(FileHandle(forWritingAtPath: path))
    }
    p.standardOutput = files[0]
    p.standardError = files[1]
    p.standardInput = FileHandle.nullDevice
    try p.run()
    for file in files { try? file.close() }
    let killer = DispatchWorkItem { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: killer)
    p.waitUntilExit()
    killer.cancel()
    let read = { (path: String) in (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
    return (p.terminationStatus, read(paths[0]), read(paths[1]))
}

/// A gateway over a real store that finishes every task the moment the swarm is stored (argv
/// `false` fails, anything else succeeds and prints "out <id>"). It stands in for the mesh only
/// so the CLI's following, paging, printing and exit status can be tested before the node is
/// wired; it says nothing about scheduling.
final class InstantGateway: SwarmGateway {
    let inner: StoreOnlyGateway
    var store: SwarmStore? { inner.store }
    var nodeName: String { inner.nodeName }

    init(store: SwarmStore) { inner = StoreOnlyGateway(store: store, name: "instant") }

    func submit(_ draft: SwarmDraft) async throws -> SwarmReply {
        let reply = try await inner.submit(draft)
        guard case .submitted(let id, _) = reply, let store else { return reply }
        var changes: [StoreChange] = []
        for (index, task) in draft.tasks.enumerated() {
            let spec = try JSONDecoder().decode(TaskSpec.self, from: Data(task.payload))
            let ok = spec.argv.first != "false"
            let result = TaskResult(exitCode: ok ? 0 : 1, signal: nil, reason: .exited, stdout: ok ? "out \(task.id)\nsecond line\n" : "",
                                    stderr: ok ? "" : "it failed\n", truncated: false, outputs: [:], node: "n\(index % 3)",
                                    attempts: 1, durationMs: 1, cpuMs: 0, peakMemoryKB: 0)
            changes.append(.task(id, index: UInt32(index), TaskRecord(state: ok ? .succeeded : .failed, attempt: 1, node: result.node,
                                                                      result: Array(try JSONEncoder().encode(result)), finishSeq: UInt32(index + 1))))
        }
        changes.append(.swarmState(id, .done, epoch: 1))
        try store.apply(changes)
        return reply
    }

    func cancel(_ id: SwarmID) async throws -> SwarmReply { try await inner.cancel(id) }
    func holders(of id: SwarmID) -> [String] { [] }
}

@Suite("starling swarm (the real CLI against a real HTTP server and store; tasks finished by the stand-in gateway)")
struct SwarmCLITests {
    static func specFile(_ dir: String, _ tasks: [String]) throws -> String {
        let path = dir + "/spec-\(UUID().uuidString).json"
        try Data(#"{"tasks": [\#(tasks.joined(separator: ","))]}"#.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: starlingCLI()), "the starling binary is not built"))
    func runShowListAndCancelWorkEndToEndThroughTheCLI() async throws {
        let (store, dir) = try temporaryStore("cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let app = Application(router: swarmRouter(InstantGateway(store: store)), configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let api = "127.0.0.1:\(try #require(client.port))"

            // A failing task: the results table, then exit status 1.
            let mixed = try Self.specFile(dir, [#"{"argv": ["echo", "a"]}"#, #"{"id": "bad", "argv": ["false"]}"#, #"{"argv": ["echo", "c"]}"#])
            let run = try runCLI(["swarm", "run", mixed, "--api", api])
            #expect(run.status == 1, "\(run.stderr)")
            let lines = run.stdout.split(separator: "\n").map(String.init)
            #expect(lines.first?.hasPrefix("swarm ") == true && lines.first?.hasSuffix("submitted (owner instant)") == true, "\(run.stdout)")
            #expect(lines.contains { $0.hasPrefix("TASK") && $0.contains("STATE") && $0.contains("NODE") && $0.contains("EXIT") })
            #expect(lines.contains { $0.hasPrefix("t0 ") && $0.contains("succeeded") && $0.contains("n0") && $0.hasSuffix("out t0") }, "\(run.stdout)")
            #expect(lines.contains { $0.hasPrefix("bad ") && $0.contains("failed") && $0.contains(" 1 ") && $0.hasSuffix("it failed") }, "\(run.stdout)")
            #expect(lines.last?.hasSuffix("done: 2 succeeded, 1 failed of 3") == true, "\(run.stdout)")

            // --json: only the final SwarmStatus on stdout.
            let json = try runCLI(["swarm", "run", mixed, "--api", api, "--json"])
            #expect(json.status == 1)
            let status = try JSONDecoder().decode(SwarmStatusJSON.self, from: Data(json.stdout.utf8))
            #expect(status.tasks?.map(\.id) == ["t0", "bad", "t2"] && status.failed == 1 && status.state == "done")

            // All succeed, quietly: exit 0.
            let good = try runCLI(["swarm", "run", try Self.specFile(dir, [#"{"argv": ["echo"]}"#]), "--api", api, "--quiet"])
            #expect(good.status == 0, "\(good.stderr)")
            #expect(!good.stdout.contains("submitted"))

            // A bad spec: the server's 400 reason on stderr, non-zero exit.
            let bad = try runCLI(["swarm", "run", try Self.specFile(dir, [#"{"argv": []}"#]), "--api", api])
            #expect(bad.status != 0)
            #expect(bad.stderr.contains("argv must name a program"), "\(bad.stderr)")

            // show pages through a swarm larger than one page.
            let big = try Self.specFile(dir, (0..<2_500).map { #"{"argv": ["echo", "\#($0)"]}"# })
            let bigRun = try runCLI(["swarm", "run", big, "--api", api, "--json"])
            #expect(bigRun.status == 0)
            let bigID = try #require(try JSONDecoder().decode(SwarmStatusJSON.self, from: Data(bigRun.stdout.utf8)).id)
            let show = try runCLI(["swarm", "show", bigID, "--api", api, "--json"])
            let shown = try JSONDecoder().decode(SwarmStatusJSON.self, from: Data(show.stdout.utf8))
            #expect(shown.tasks?.count == 2_500 && shown.tasks?.last?.id == "t2499" && shown.nextOffset == nil)

            let list = try runCLI(["swarm", "list", "--api", api])
            #expect(list.status == 0)
            #expect(list.stdout.split(separator: "\n").dropFirst().first?.hasPrefix(bigID) == true, "newest first: \(list.stdout)")

            let cancel = try runCLI(["swarm", "cancel", bigID, "--api", api])
            #expect(cancel.status == 0 && cancel.stdout == "cancelled \(bigID)\n", "\(cancel.stderr)")
            let unknown = try runCLI(["swarm", "cancel", "ffffffffffffffff", "--api", api])
            #expect(unknown.status != 0 && unknown.stderr.contains("404"), "\(unknown.stderr)")
            let notAnID = try runCLI(["swarm", "show", "../../v1/members", "--api", api])
            #expect(notAnID.status != 0 && notAnID.stderr.contains("not a swarm id"), "\(notAnID.stderr)")
        }
    }
}
