import Foundation
import Glibc
import Testing

func runCLI(_ args: [String], stdin: String? = nil) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: starlingBinary())
    p.arguments = args
    let out = Pipe(), err = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    try p.run()
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try input.fileHandleForWriting.close()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

@Suite("starling sandbox run", .serialized)
struct SandboxCommandTests {
    @Test func plainModePassesOutputAndExitStatusThrough() throws {
        let r = try runCLI(["sandbox", "run", "--", "sh", "-c", "echo out; echo err >&2; exit 7"])
        #expect(r.status == 7)
        #expect(r.out == "out\n")
        #expect(r.err.contains("err"))
        let piped = try runCLI(["sandbox", "run", "-i", "--", "tr", "a-z", "A-Z"], stdin: "shout\n")
        #expect(piped.out == "SHOUT\n")
        let ignored = try runCLI(["sandbox", "run", "--", "sh", "-c", "cat; echo end"], stdin: "not forwarded\n")
        #expect(ignored.out == "end\n")
        // Plain mode is a pass-through, not a capture: no 1 MiB cap.
        let big = try runCLI(["sandbox", "run", "--", "sh", "-c", "head -c 2000000 /dev/zero | tr '\\0' a"])
        #expect(big.status == 0)
        #expect(big.out.utf8.count == 2_000_000)
        let late = try runCLI(["sandbox", "run", "--timeout", "1", "--", "sh", "-c", "exec >&- 2>&-; sleep 100"])
        #expect(late.status == 137)
        #expect(late.err.contains("timeout"))
    }

    @Test func jsonModePrintsTheTaskResultWithFilesAndLimits() throws {
        let dir = try makeTemporaryDirectory("starling-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "input text\n".write(toFile: dir + "/in.txt", atomically: true, encoding: .utf8)
        let r = try runCLI(["sandbox", "run", "--json", "--file", "data/in.txt=\(dir)/in.txt", "--timeout", "20", "--",
                            "sh", "-c", "cat data/in.txt; mkdir -p out; echo made > out/o.txt"])
        #expect(r.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as! [String: Any]
        #expect(object["exitCode"] as? Int == 0)
        #expect(object["reason"] as? String == "exited")
        #expect(object["stdout"] as? String == "input text\n")
        #expect((object["outputs"] as? [String: String])?["o.txt"] == "made\n")
        for key in ["signal", "stderr", "truncated", "node", "attempts", "durationMs", "cpuMs", "peakMemoryKB"] {
            #expect(object.keys.contains(key), "missing \(key)")
        }
        let oom = try runCLI(["sandbox", "run", "--json", "--memory", "40", "--", "python3", "-c", "a = bytearray(300 << 20)"])
        #expect(oom.status == 0)
        #expect(oom.out.contains("\"reason\":\"oom\""))
    }

    @Test func aPolicyFileRefusesAndUnsafeModeSaysSoEveryTime() throws {
        let dir = try makeTemporaryDirectory("starling-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try #"{"allow": ["echo"], "net": "none"}"#.write(toFile: dir + "/policy.json", atomically: true, encoding: .utf8)
        let denied = try runCLI(["sandbox", "run", "--policy", dir + "/policy.json", "--", "cat", "/etc/hostname"])
        #expect(denied.status != 0)
        #expect(denied.err.contains("allow list"))
        let net = try runCLI(["sandbox", "run", "--json", "--policy", dir + "/policy.json", "--net", "host", "--", "echo", "x"])
        #expect(net.out.contains("\"reason\":\"denied\""))
        let unsafe = try runCLI(["sandbox", "run", "--unsafe-no-sandbox", "--", "echo", "hi"])
        #expect(unsafe.status == 0)
        #expect(unsafe.err.contains("WITHOUT"))
        #expect(unsafe.out == "hi\n")
    }

    @Test func aNodeRefusesASecretsFileOthersCanRead() throws {
        let dir = try makeTemporaryDirectory("starling-cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try runStarling(["keygen", "--out", dir + "/k"])
        _ = FileManager.default.createFile(atPath: dir + "/secrets", contents: Data("API_TOKEN=abcdefghij\n".utf8),
                                       attributes: [.posixPermissions: 0o644])
        let r = try runCLI(["node", "--name", "s", "--gossip", "127.0.0.1:\(freePort())", "--api", "127.0.0.1:\(freePort())",
                            "--data", dir + "/d", "--key-file", dir + "/k", "--secrets-file", dir + "/secrets"])
        #expect(r.status != 0)
        #expect(r.err.contains("chmod 600"))
    }

    @Test func helpPrintsHelpInsteadOfRunningAProgramNamedHelp() throws {
        for flag in ["--help", "-h"] {
            let r = try runCLI(["sandbox", "run", flag])
            #expect(r.status == 0, "\(r.err)")
            #expect(r.out.contains("USAGE") && r.out.contains("--memory"), "\(r.out)")
            #expect(!r.err.contains("cannot run"))
        }
        // After --, it is the task's argument as before.
        let passed = try runCLI(["sandbox", "run", "--", "printf", "%s\\n", "--help"])
        #expect(passed.out == "--help\n")
    }

    /// SIGTERM (or Ctrl-C) ends the task; the command reaps its bwrap, removes its work directory,
    /// and exits 128 + 15 itself rather than dying with the signal and leaving them behind.
    @Test func aSignalledCommandEndsItsTaskAndCleansUpBeforeItExits() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: starlingBinary())
        p.arguments = ["sandbox", "run", "--", "sleep", "600"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let cli = p.processIdentifier
        defer { if p.isRunning { kill(cli, SIGKILL) } }
        var tree: [(pid: pid_t, started: String)] = []
        let deadline = Date().addingTimeInterval(30)
        // The CLI's bwrap, bwrap's init inside the sandbox, and the task under it.
        while Date() < deadline {
            tree = descendants(of: cli)
            if tree.contains(where: { comm($0.pid) == "sleep" }) { break }
            usleep(20_000)
        }
        #expect(tree.contains(where: { comm($0.pid) == "bwrap" }) && tree.contains(where: { comm($0.pid) == "sleep" }), "\(tree)")
        let workRoot = "/dev/shm/starling-sandboxes/\(cli)"
        #expect(FileManager.default.fileExists(atPath: workRoot))
        kill(cli, SIGTERM)
        let exitBy = Date().addingTimeInterval(20)
        while p.isRunning && Date() < exitBy { usleep(20_000) }
        #expect(!p.isRunning, "the CLI did not exit after SIGTERM")
        guard !p.isRunning else { return }
        #expect(p.terminationReason == .exit && p.terminationStatus == 143, "\(p.terminationReason.rawValue) \(p.terminationStatus)")
        // bwrap's init inside the sandbox is reaped by the host's init once bwrap is gone: allow it a moment.
        let goneBy = Date().addingTimeInterval(10)
        var alive = tree
        while !alive.isEmpty && Date() < goneBy {
            alive = alive.filter { startTime($0.pid) == $0.started }
            usleep(20_000)
        }
        #expect(alive.isEmpty, "outlived the CLI: \(alive.map { "\($0.pid) \(comm($0.pid)) \(state($0.pid))" })")
        #expect(!FileManager.default.fileExists(atPath: workRoot), "the CLI left its work directory behind")
    }
}

extension SandboxCommandTests {
    /// A policy file with a ceiling no task could meet (or one that would trap) stops the
    /// command before anything runs, naming the field.
    @Test(arguments: [#"{"maxTimeoutSeconds": 0}"#, #"{"maxTimeoutSeconds": -1}"#, #"{"maxPids": -1}"#, #"{"maxMemoryMB": -5}"#,
                      #"{"maxCpus": 1e300}"#])
    func aPolicyFileWithABadCeilingIsRefused(policy: String) throws {
        let dir = try makeTemporaryDirectory("starling-cli-policy")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try policy.write(toFile: dir + "/policy.json", atomically: true, encoding: .utf8)
        let r = try runCLI(["sandbox", "run", "--policy", dir + "/policy.json", "--", "echo", "ran"])
        #expect(r.status != 0 && r.status < 128, "\(r.status)")
        #expect(!r.out.contains("ran"))
        let field = policy.split(separator: "\"")[1]
        #expect(r.err.contains(field), "\(r.err)")
    }

    /// When cleanup hangs (here: a task left 300,000 directories to remove), a second SIGTERM
    /// ends the command at once, with 128 + 15, instead of leaving SIGKILL as the only way out.
    @Test func aSecondSignalEndsTheCommandWhileCleanupIsStillGoing() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: starlingBinary())
        p.arguments = ["sandbox", "run", "--memory", "2048", "--timeout", "120", "--", "python3", "-c",
                       "import os\nfor i in range(300000): os.mkdir(f'junk{i}')\nopen('out/ready', 'w').close()\nimport time\ntime.sleep(600)"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let cli = p.processIdentifier
        let workRoot = "/dev/shm/starling-sandboxes/\(cli)"
        defer {
            if p.isRunning { kill(cli, SIGKILL) }
            p.waitUntilExit()
            // What the command left to the sweep: removed here by path, its groups too.
            try? FileManager.default.removeItem(atPath: workRoot)
            unlink(workRoot + ".owner")
            // Its owner groups are `starling/<pid>-<start time>` (bare `<pid>` before that).
            for top in ["memory", "cpu", "cpuacct", "pids"].map({ "/sys/fs/cgroup/\($0)/starling" }) + ["/sys/fs/cgroup/starling"] {
                for name in (try? FileManager.default.contentsOfDirectory(atPath: top)) ?? []
                where name == "\(cli)" || name.hasPrefix("\(cli)-") {
                    let owner = top + "/" + name
                    for group in (try? FileManager.default.contentsOfDirectory(atPath: owner)) ?? [] { rmdir(owner + "/" + group) }
                    rmdir(owner)
                }
            }
        }
        let readyBy = Date().addingTimeInterval(90)
        func ready() -> Bool {
            ((try? FileManager.default.contentsOfDirectory(atPath: workRoot)) ?? []).contains {
                FileManager.default.fileExists(atPath: "\(workRoot)/\($0)/out/ready")
            }
        }
        while !ready() && Date() < readyBy { usleep(50_000) }
        try #require(ready(), "the task never made its tree")
        kill(cli, SIGTERM)
        // Cleanup is under way (the task is killed, its tree being removed) when the second one comes.
        usleep(300_000)
        #expect(p.isRunning, "cleanup finished too fast to show anything: make the tree bigger")
        kill(cli, SIGTERM)
        let exitBy = Date().addingTimeInterval(3)
        while p.isRunning && Date() < exitBy { usleep(20_000) }
        #expect(!p.isRunning, "the CLI ignored a second SIGTERM while cleaning up")
        guard !p.isRunning else { return }
        #expect(p.terminationReason == .exit && p.terminationStatus == 143, "\(p.terminationReason.rawValue) \(p.terminationStatus)")
    }

    /// `starling sandbox bench --throughput`: the ceiling `Scripts/bench-swarm` reports under the
    /// mesh. Real bwrap runs on both sides; every sandboxed task must have succeeded.
    @Test func theThroughputBenchRunsRealTasksBothWaysAndRefusesBadSizes() throws {
        let r = try runCLI(["sandbox", "bench", "--throughput", "24", "--workers", "3", "--pool", "2"])
        #expect(r.status == 0, "\(r.err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any])
        let raw = try #require(object["rawBwrap"] as? [String: Any])
        let sandbox = try #require(object["starlingSandbox"] as? [String: Any])
        #expect(object["tasks"] as? Int == 24 && object["workers"] as? Int == 3)
        #expect(sandbox["failed"] as? Int == 0 && raw["failed"] as? Int == 0, "\(raw) \(sandbox)")
        for side in [raw, sandbox] {
            #expect((side["tasksPerSecond"] as? Double ?? 0) > 0)
            #expect((side["machineCpuMsPerTask"] as? Double ?? -1) >= 0)
        }
        #expect((object["ratioToRaw"] as? Double ?? 0) > 0)
        for bad in [["--throughput", "0"], ["--throughput", "10", "--workers", "0"], ["--throughput", "10", "--workers", "65"]] {
            let refused = try runCLI(["sandbox", "bench"] + bad)
            #expect(refused.status != 0 && refused.err.contains("must be in"), "\(bad): \(refused.err)")
        }
    }
}

/// The 22nd field of /proc/PID/stat (start time), which tells a process from a later one that
/// reuses its number; nil when no process has the number.
private func startTime(_ pid: pid_t) -> String? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 19 ? String(fields[19]) : nil
}

private func parent(_ pid: pid_t) -> pid_t? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 1 ? pid_t(fields[1]) : nil
}

private func state(_ pid: pid_t) -> String {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return "gone" }
    return stat[stat.index(after: close)...].split(separator: " ").first.map(String.init) ?? "?"
}

private func comm(_ pid: pid_t) -> String {
    ((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Every process below `root`, with its start time.
private func descendants(of root: pid_t) -> [(pid: pid_t, started: String)] {
    let all = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { pid_t($0) }
    var found: [(pid: pid_t, started: String)] = []
    var frontier: Set<pid_t> = [root]
    while !frontier.isEmpty {
        var next: Set<pid_t> = []
        for pid in all where frontier.contains(parent(pid) ?? -1) {
            if let started = startTime(pid) { found.append((pid, started)); next.insert(pid) }
        }
        frontier = next
    }
    return found
}
