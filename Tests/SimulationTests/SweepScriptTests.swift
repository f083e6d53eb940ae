import Foundation
import Testing

/// `Scripts/sweep-membership` and the `reproduce:` line of `starling-sim`, run as processes
/// (the debug simulator, `STARLING_SIM_BIN`, so that the test needs no release build).
@Suite("failure-detector sweep")
struct SweepScriptTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    var simBinary: String {
        ProcessInfo.processInfo.environment["STARLING_SIM_BIN"] ?? Self.repository.appendingPathComponent(".build/debug/starling-sim").path
    }

    func run(_ executable: String, _ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = args
        p.currentDirectoryURL = Self.repository
        // Both streams go to files, not pipes: another test of this process may spawn a child
        // at the same moment, and that child can inherit our pipe's write end (Process does not
        // create it close-on-exec atomically), so reading to the end waited for that child too:
        // a 0.7 s run took 363 s once, beside the minutes-long quick sweep.
        let base = NSTemporaryDirectory() + "sweep-test-\(UUID().uuidString)"
        let paths = (out: base + ".out", err: base + ".err")
        defer { for path in [paths.out, paths.err] { try? FileManager.default.removeItem(atPath: path) } }
        _ = FileManager.default.createFile(atPath: paths.out, contents: nil)
        _ = FileManager.default.createFile(atPath: paths.err, contents: nil)
        let outFile = try FileHandle(forWritingTo: URL(fileURLWithPath: paths.out))
        let errFile = try FileHandle(forWritingTo: URL(fileURLWithPath: paths.err))
        p.standardOutput = outFile
        p.standardError = errFile
        try p.run()
        try outFile.close()
        try errFile.close()
        p.waitUntilExit()
        let read = { (path: String) in (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        return (p.terminationStatus, read(paths.out), read(paths.err))
    }

    @Test(.timeLimit(.minutes(2)))
    func quickSweepPrintsOneJSONObjectWithThePooledFigures() throws {
        let markdown = NSTemporaryDirectory() + "sweep-\(UUID().uuidString).md"
        defer { try? FileManager.default.removeItem(atPath: markdown) }
        let r = try run("/bin/bash", [Self.repository.appendingPathComponent("Scripts/sweep-membership").path, "--quick",
                                      "--sizes", "5", "--seeds-5", "2", "--seed-base", "11", "--jobs", "2",
                                      "--sim", simBinary, "--markdown", markdown])
        #expect(r.status == 0, "\(r.err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], "stdout: \(r.out)")
        #expect(object["benchmark"] as? String == "membership-sweep")
        #expect((object["seeds"] as? [String: [Int]])?["5"] == [11, 12])
        let settings = try #require(object["settings"] as? [[String: Any]])
        #expect(settings.map { $0["id"] as? String } == ["memberlist", "lan", "probe-timeout-200"])
        let rows = try #require(object["results"] as? [[String: Any]])
        #expect(rows.count == 3)
        for row in rows {
            for key in ["setting", "label", "nodes", "runs", "crashes", "detectionPeriods", "firstSuspicionPeriods",
                        "falsePositivesPer10kMemberPeriods", "falseSuspicionsPer10kMemberPeriods", "healPeriods",
                        "healToAlivePeriods", "unhealed", "violationRuns", "messagesPerMemberPerPeriod", "memberPeriods"] {
                #expect(row[key] != nil, "missing \(key) in \(row)")
            }
            #expect(row["runs"] as? Int == 2)
            #expect((row["errors"] as? [Any])?.isEmpty == true, "\(row["errors"] ?? "")")
            // One crash per run at N = 5, each detected within the run.
            let detection = try #require(row["detectionPeriods"] as? [String: Any])
            #expect(detection["count"] as? Int == 2)
            #expect((detection["p50"] as? Double ?? 0) > 0)
            #expect((row["memberPeriods"] as? Int ?? 0) > 0)
            let counters = try #require(row["protocolCounters"] as? [String: Int])
            #expect((counters["probesSent"] ?? 0) > 0 && (counters["probesFailed"] ?? 0) > 0)
        }
        let table = try String(contentsOfFile: markdown, encoding: .utf8)
        #expect(table.contains("| lan, probe timeout 200 ms |"))
        #expect(table.contains("### N = 5"))
    }

    @Test(.timeLimit(.minutes(1)))
    func theReproduceLineCarriesEveryOverrideAndRepeatsTheRun() throws {
        let overrides = ["--probe-timeout-ms", "200", "--indirect-timeout-ms", "interval", "--indirect-checks", "2",
                         "--suspicion-mult", "2.5", "--confirmations", "1", "--confirmation-scaling", "0.5",
                         "--probe-order", "round-robin", "--tell-accused", "off"]
        let args = ["--scenario", "negative-control", "--nodes", "8", "--seed", "4", "--periods", "80"] + overrides
        let first = try run(simBinary, args + ["--json"])
        #expect(first.status == 1)
        let line = try #require(first.err.split(separator: "\n").first { $0.hasPrefix("reproduce: starling-sim ") }, "\(first.err)")
        let words = line.dropFirst("reproduce: starling-sim ".count).split(separator: " ").map(String.init)
        for (flag, value) in zip(stride(from: 0, to: overrides.count, by: 2).map { overrides[$0] },
                                 stride(from: 1, to: overrides.count, by: 2).map { overrides[$0] }) {
            let at = try #require(words.firstIndex(of: flag), "\(flag) missing from \(line)")
            #expect(words.indices.contains(at + 1) && Double(words[at + 1]) ?? .nan == Double(value) ?? .nan
                        || words[at + 1] == value, "\(flag) \(value) in \(line)")
        }
        let again = try run(simBinary, words + ["--json"])
        #expect(again.status == 1)
        let hash = { (s: String) in (try? JSONSerialization.jsonObject(with: Data(s.utf8)) as? [String: Any])?["traceHash"] as? String }
        #expect(hash(first.out) != nil)
        #expect(hash(again.out) == hash(first.out), "the reproduce line ran a different simulation")
    }

    /// `Scripts/bench_bwrap_args.py` (what bwrap's isolation options cost): real bwrap runs of
    /// every variant, one JSON object, and bad sizes refused before anything runs.
    @Test(.timeLimit(.minutes(2)))
    func theBwrapArgumentsBenchRunsEveryVariantAndRefusesBadSizes() throws {
        let script = Self.repository.appendingPathComponent("Scripts/bench_bwrap_args.py").path
        let r = try run("/usr/bin/env", ["python3", script, "--rounds", "1", "--tasks", "3", "--workers", "1"])
        #expect(r.status == 0, "\(r.err)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any], "stdout: \(r.out)")
        #expect(object["benchmark"] as? String == "bwrap-args")
        let variants = try #require(object["variants"] as? [String: [String: Double]])
        #expect(Set(variants.keys) == ["base", "ids", "etc", "workdir", "initAndRunDir", "clearenv", "all"])
        #expect(variants["base"]?["rateToBase"] == 1.0)
        for (name, v) in variants {
            #expect((v["tasksPerSecond"] ?? 0) > 0, "\(name): \(v)")
            #expect(v["machineCpuMsPerTask"] != nil, "\(name): \(v)")
        }
        for bad in [["--rounds", "0"], ["--tasks", "-1"], ["--workers", "100"]] {
            let refused = try run("/usr/bin/env", ["python3", script] + bad)
            #expect(refused.status == 2, "\(bad): \(refused.status) \(refused.out)")
        }
    }
}
