import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Glibc
import Testing

/// The MCP Python SDK's interpreter: $STARLING_MCP_PYTHON (Scripts/test sets it), else the venv
/// that `Scripts/bootstrap --with-mcp` makes under .build/. Nil when neither exists.
func mcpPython() -> String? {
    if let python = ProcessInfo.processInfo.environment["STARLING_MCP_PYTHON"] { return python }
    let python = repositoryRoot().appendingPathComponent(".build/venv-mcp/bin/python").path
    return FileManager.default.isExecutableFile(atPath: python) ? python : nil
}

func repositoryRoot() -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// `/mcp` and `starling mcp` against 3 real nodes, with the official MCP Python SDK as the client
/// (`Scripts/mcp_check.py`: tools, `run` → 42, a 20-task swarm, a denied task as a tool error
/// with the session going on, sessions and an effect that replays).
@Suite("MCP with real nodes", .serialized)
struct MCPIntegrationTests {
    /// The nodes allow python3 and nothing else, so `sh` is a task the policy denies.
    static func startMesh(_ cluster: LocalCluster) throws -> [NodeProcess] {
        let policy = cluster.dir + "/policy.json"
        try Data(#"{"allow": ["python3"]}"#.utf8).write(to: URL(fileURLWithPath: policy))
        let args = ["--policy", policy]
        let seed = try cluster.start("mcp-a", extraArguments: args)
        let nodes = [seed, try cluster.start("mcp-b", join: [seed], extraArguments: args),
                     try cluster.start("mcp-c", join: [seed], extraArguments: args)]
        try waitUntil("3 alive", seconds: 15) {
            nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == 3 }
        }
        return nodes
    }

    /// Runs `Scripts/mcp_check.py` with `arguments`; its JSON report, or a failure with its output.
    static func check(_ arguments: [String], python: String) throws -> [String: Any] {
        let work = try makeTemporaryDirectory("starling-mcp")
        defer { try? FileManager.default.removeItem(atPath: work) }
        let output = work + "/output.txt"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let log = try #require(FileHandle(forWritingAtPath: output))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = [repositoryRoot().appendingPathComponent("Scripts/mcp_check.py").path] + arguments
        p.standardOutput = log
        p.standardError = log
        try p.run()
        // The backstop; the script's own calls are bounded (a 300 s wait for the swarm at most).
        let deadline = Date().addingTimeInterval(420)
        while p.isRunning, Date() < deadline { usleep(50_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(p.terminationReason == .exit && p.terminationStatus == 0, "mcp_check.py failed:\n\(text.suffix(6_000))")
        let lastLine = text.split(separator: "\n").last.map(String.init) ?? ""
        print("mcp_check.py \(arguments[0]): \(lastLine)")
        return (try? JSONSerialization.jsonObject(with: Data(lastLine.utf8)) as? [String: Any]) ?? [:]
    }

    @Test(.enabled(if: mcpPython() != nil, "the MCP Python SDK is not installed: run Scripts/bootstrap --with-mcp"),
          .timeLimit(.minutes(10)))
    func theOfficialClientOverStreamableHTTP() throws {
        let python = try #require(mcpPython())
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try Self.startMesh(cluster)
        // Through a node that is not the seed.
        let report = try Self.check(["http", "http://127.0.0.1:\(nodes[1].apiPort)/mcp"], python: python)
        #expect(report["ok"] as? Bool == true)
        #expect((report["members"] as? [String])?.count == 3)
    }

    @Test(.enabled(if: mcpPython() != nil, "the MCP Python SDK is not installed: run Scripts/bootstrap --with-mcp"),
          .timeLimit(.minutes(10)))
    func theOfficialClientThroughStarlingMCPOverStdio() throws {
        let python = try #require(mcpPython())
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let nodes = try Self.startMesh(cluster)
        let report = try Self.check(["stdio", starlingBinary(), "127.0.0.1:\(nodes[2].apiPort)"], python: python)
        #expect(report["ok"] as? Bool == true)
        // The bridge ended its MCP session at EOF: the node holds none.
        #expect(nodes[2].metric("starling_mcp_sessions_opened_total") == 1)
        try waitUntil("the bridge's session is closed", seconds: 10) {
            nodes[2].metrics().split(separator: "\n").contains { $0.hasPrefix("starling_mcp_sessions ") && $0.hasSuffix(" 0.0") || $0 == "starling_mcp_sessions 0" }
        }
    }
}
