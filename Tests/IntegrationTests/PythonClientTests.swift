import Foundation
import Glibc
import Testing

/// The Python client (clients/python) against a live 3-node mesh: the client is installed with
/// pip into a venv under .build/, as a user would install it, and its unittest suite runs
/// against the three nodes' APIs.
@Suite("Python client against a live mesh", .serialized)
struct PythonClientTests {
    /// The repository's root (this file is Tests/IntegrationTests/PythonClientTests.swift).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
                   "python3 is not installed: run Scripts/bootstrap"))
    func theClientsTestsPassAgainstThreeNodes() throws {
        let work = try makeTemporaryDirectory("starling-pyclient")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let python = try Self.installClient(work: work)

        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(["py-a", "py-b", "py-c"])
        let apis = nodes.map { "127.0.0.1:\($0.apiPort)" }.joined(separator: ",")

        // The tests from a copy of clients/python/tests, so that `starling_client` can only be
        // the installed package, never the sources beside them.
        let tests = work + "/tests"
        try FileManager.default.copyItem(atPath: Self.root + "/clients/python/tests", toPath: tests)
        var environment = ProcessInfo.processInfo.environment
        environment["STARLING_TEST_APIS"] = apis
        environment["STARLING_TEST_REQUIRE_MESH"] = "1"
        environment["STARLING_TEST_EXPECT_INSTALLED"] = "1"
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        environment["PYTHONPATH"] = nil
        let (status, output) = try Self.run(python, ["-m", "unittest", "discover", "-v", "-s", tests, "-t", tests],
                                            in: work, environment: environment, seconds: 600)
        print("python client tests:\n\(output.suffix(4_000))")
        #expect(status == 0, "the Python client's tests failed (exit \(status)):\n\(output.suffix(12_000))")
        // Every test ran: only the agent tests may be skipped, and only when the node serves no
        // /v1/agents.
        let ran = output.split(separator: "\n").first { $0.hasPrefix("Ran ") }
            .flatMap { Int($0.split(separator: " ")[1]) } ?? 0
        #expect(ran >= 29, "only \(ran) Python tests ran")
        let unexpectedSkips = output.split(separator: "\n").filter { $0.contains("... skipped") && !$0.contains("AgentTests") }
        #expect(unexpectedSkips.isEmpty, "skipped: \(unexpectedSkips)")
        #expect(nodes.allSatisfy { $0.isRunning }, "a node exited during the Python tests")
    }

    /// A kill -9 of the node serving a swarm's event stream, mid-stream: the client resumes on
    /// another node with Last-Event-ID and sees every task once (clients/python/tests/
    /// scenario_node_death.py, which kills the node by the PID handed to it).
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
                   "python3 is not installed: run Scripts/bootstrap"))
    func theEventStreamSurvivesTheDeathOfItsNode() throws {
        // It failed now and then (1 of 3 fresh-clone CI runs: d1 seen twice, d2 never) while the
        // owner's stream showed results no replica stored yet; streams now show only what a
        // majority stores (`StoreChange.visible`, SwarmEventIdTests).
        try Self.runScenario("scenario_node_death", nodeNames: ["pyd-a", "pyd-b", "pyd-c"]) { nodes in
            #expect(!nodes[1].isRunning, "the scenario did not kill the stream's node")
            #expect(nodes[0].isRunning && nodes[2].isRunning)
        }
    }

    /// A kill -9 of a session's owner while an effect runs: the client's `act` loses its
    /// connection, sends the call again to the others, and gets 409 "unknown" from the new owner
    /// (clients/python/tests/scenario_owner_death.py). Before the fix in HolderForwarding, the
    /// replicas' forwarding answered 404 "no session" while the killed owner was not yet
    /// suspected, and the client gave the session up.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3"),
                   "python3 is not installed: run Scripts/bootstrap"))
    func anEffectCutByItsOwnersDeathComesBackUnknown() throws {
        try Self.runScenario("scenario_owner_death", nodeNames: ["pyo-a", "pyo-b", "pyo-c"]) { nodes in
            #expect(nodes.filter { $0.isRunning }.count == 2, "the scenario did not kill exactly the owner")
        }
    }

    /// Runs one scenario module of clients/python/tests (one that kills nodes, so it gets a
    /// fresh mesh of its own, with the nodes' PIDs) and expects it to pass; then `afterwards`
    /// looks at the nodes, before they are ended.
    static func runScenario(_ module: String, nodeNames: [String], knownIssue: Comment? = nil,
                            afterwards: ([NodeProcess]) -> Void) throws {
        let work = try makeTemporaryDirectory("starling-pyclient")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let python = try installClient(work: work)
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try cluster.startMesh(nodeNames)
        let tests = work + "/tests"
        try FileManager.default.copyItem(atPath: root + "/clients/python/tests", toPath: tests)
        var environment = ProcessInfo.processInfo.environment
        environment["STARLING_TEST_APIS"] = nodes.map { "127.0.0.1:\($0.apiPort)" }.joined(separator: ",")
        environment["STARLING_TEST_NODE_PIDS"] = nodes.map { "\($0.pid)" }.joined(separator: ",")
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        environment["PYTHONPATH"] = nil
        let (status, output) = try run(python, ["-m", "unittest", "-v", module], in: tests, environment: environment, seconds: 300)
        print("python client, \(module):\n\(output.suffix(2_000))")
        if let knownIssue {
            withKnownIssue(knownIssue, isIntermittent: true) {
                #expect(status == 0, "\(module) failed (exit \(status)):\n\(output.suffix(12_000))")
            }
        } else {
            #expect(status == 0, "\(module) failed (exit \(status)):\n\(output.suffix(12_000))")
        }
        #expect(output.contains("Ran 1 test") && !output.contains("skipped"), "\(module) did not run:\n\(output)")
        afterwards(nodes)
    }

    /// A venv under .build/ (made once, with the system's python3) with clients/python
    /// installed by pip from a copy of its sources, and its interpreter's path.
    ///
    /// `--no-index`: the package builds with its own standard-library backend and depends on
    /// nothing, so its install must not need the network.
    static func installClient(work: String) throws -> String {
        let venv = root + "/.build/venv-pyclient"
        let python = venv + "/bin/python"
        if !FileManager.default.isExecutableFile(atPath: python) {
            try? FileManager.default.removeItem(atPath: venv)
            let (status, output) = try run("/usr/bin/python3", ["-m", "venv", venv], in: work, seconds: 300)
            try #require(status == 0, "python3 -m venv failed (is python3-venv installed? Scripts/bootstrap):\n\(output)")
        }
        let source = work + "/client-source"
        try FileManager.default.copyItem(atPath: root + "/clients/python", toPath: source)
        let (status, output) = try run(python, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index",
                                                "--force-reinstall", source], in: work, seconds: 300)
        try #require(status == 0, "pip install ./clients/python failed:\n\(output)")
        return python
    }

    /// Runs a program to its end (ended by its PID after `seconds`), with stdout and stderr
    /// together in one file, and returns its exit status and output.
    static func run(_ program: String, _ arguments: [String], in directory: String,
                    environment: [String: String]? = nil, seconds: Double) throws -> (Int32, String) {
        let logPath = directory + "/run-\(UUID().uuidString.prefix(8)).log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try #require(FileHandle(forWritingAtPath: logPath))
        defer { try? log.close() }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        if let environment { p.environment = environment }
        p.standardOutput = log
        p.standardError = log
        try p.run()
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning, Date() < deadline { usleep(50_000) }
        var timedOut = false
        if p.isRunning {
            timedOut = true
            kill(p.processIdentifier, SIGKILL)
        }
        p.waitUntilExit()
        let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        return (timedOut ? -1 : p.terminationStatus, timedOut ? output + "\n(ended after \(seconds) s)" : output)
    }
}
