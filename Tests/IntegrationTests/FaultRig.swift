import Foundation
import Glibc
import Testing

/// A fault rig from Swift: `Scripts/fault-rig` runs N `starling node`s, each in a network
/// namespace of its own, behind one bridge that drops what it is told to (loss, cuts,
/// partitions), and signals them by the PIDs it recorded (kill -9, SIGSTOP, SIGCONT).
///
/// Call `down()` in a `defer`. The rig records this test process as its owner, so a run that
/// crashed or was interrupted before its `defer` is swept by the next rig test (or Scripts/test).
final class FaultRig {
    let name: String
    let nodeNames: [String]

    /// Why the rig cannot run here, or nil if it can: root, `ip netns`, `nft`.
    static let unavailableReason: String? = {
        guard getuid() == 0 else { return "the fault rig needs root (network namespaces, nftables)" }
        guard let caps = try? FaultRig.script(["caps"]), let data = caps.data(using: .utf8),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Bool] else {
            return "Scripts/fault-rig caps did not answer"
        }
        if json["netns"] != true { return "`ip netns add` does not work here" }
        if json["nft"] != true { return "`nft` is missing: run Scripts/bootstrap (installs nftables)" }
        return nil
    }()

    /// Whether this run is CI's, where the rig must run: there a missing capability fails the
    /// tests with its reason, by hand (not root) they are skipped with it.
    static var mustRun: Bool { ProcessInfo.processInfo.environment["CI"] != nil }

    /// Sweeps rigs left by runs that died, then makes a rig of `nodes` nodes (n1...nN), not yet started.
    /// `owner` is the process whose exit lets `sweep` take the rig down: this test process unless
    /// a test of the sweep itself says otherwise.
    init(nodes: Int, preset: String = "loopback", owner: Int32 = getpid()) throws {
        if let reason = FaultRig.unavailableReason { throw RigFailed(description: reason) }
        name = "t" + String(UInt32.random(in: 0...UInt32.max), radix: 36).prefix(7)
        nodeNames = (1...nodes).map { "n\($0)" }
        try FaultRig.script(["sweep"])
        try FaultRig.script(["up", "--rig", name, "--nodes", "\(nodes)", "--bin", starlingBinary(),
                             "--preset", preset, "--owner", "\(owner)"])
    }

    /// The rig's state as `status` reports it: work dir, netem, each node's PID and whether it runs.
    func status() throws -> RigStatus {
        try JSONDecoder().decode(RigStatus.self, from: Data(rig(["status"]).utf8))
    }

    /// The network namespaces of this rig that exist now.
    func namespaces() -> [String] {
        let out = (try? runTool("/usr/sbin/ip", ["netns", "list"])) ?? ""
        return out.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
            .filter { $0.hasPrefix("st-\(name)-") }
    }

    /// Starts every node and waits until each lists all of them alive. `extraArguments` go to
    /// every `starling node` as they are.
    func startAll(seconds: Double = 30, extraArguments: [String] = []) throws {
        try rig(["start"] + nodeNames + (extraArguments.isEmpty ? [] : ["--"] + extraArguments))
        try waitUntil("every node lists \(nodeNames.count) alive", seconds: seconds) {
            allSee(nodeNames, as: "alive", by: nodeNames)
        }
    }

    /// Starts (or restarts, on the same data dir) `node`, joining through every other node, and
    /// waits until its API answers. `extraArguments` go to `starling node` as they are.
    func start(_ node: String, extraArguments: [String] = []) throws {
        try rig(["start", node] + (extraArguments.isEmpty ? [] : ["--"] + extraArguments))
    }
    func kill(_ node: String) throws { try rig(["kill", node]) }
    func stop(_ node: String) throws { try rig(["stop", node]) }
    func cont(_ node: String) throws { try rig(["cont", node]) }
    func loss(_ node: String, percent: Int) throws { try rig(["loss", node, "\(percent)"]) }
    func cut(_ a: String, _ b: String, oneWay: Bool = false) throws { try rig(["cut", a, b] + (oneWay ? ["--oneway"] : [])) }
    func partition(_ groups: [String]...) throws { try rig(["partition"] + groups.map { $0.joined(separator: ",") }) }
    func isolate(_ node: String) throws { try rig(["isolate", node]) }
    func heal(_ node: String = "all") throws { try rig(["heal", node]) }

    /// Adds `milliseconds` of delay each way on `node`'s link; throws `NetemUnavailable` where the
    /// kernel has no netem (then nothing was changed).
    func delay(_ node: String, milliseconds: Int) throws {
        do { try rig(["delay", node, "\(milliseconds)"]) } catch let failure as RigFailed where failure.exitStatus == 77 {
            throw NetemUnavailable()
        }
    }

    /// "HOST:PORT" of `node`'s gossip and API, as the other nodes (and the hub) reach them.
    func addresses(of node: String) throws -> (gossip: String, api: String) {
        let parts = try rig(["addr", node]).split(whereSeparator: \.isWhitespace).map(String.init)
        guard parts.count == 2 else { throw RigFailed(description: "addr \(node): \(parts)") }
        return (parts[0], parts[1])
    }

    /// The body of GET `path` on each of `nodes` (all if empty), nil where a node did not answer
    /// 200 within 1 s. Bodies come back with their newlines removed.
    func get(_ path: String, on nodes: [String] = []) throws -> [String: Data?] {
        var bodies: [String: Data?] = [:]
        for line in try rig(["get", path] + nodes).split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2 else { continue }
            bodies[String(parts[0])] = parts[1] == "null" ? nil : Data(parts[1].utf8)
        }
        return bodies
    }

    /// Runs a command inside `namespace` (a node's name, or "hub", from where every node's API is
    /// reachable, e.g. `curl -X POST ...`), returning its stdout.
    @discardableResult
    func run(in namespace: String, _ command: [String]) throws -> String {
        try rig(["exec", namespace, "--"] + command)
    }

    /// Each node's member list as it answers now (nil for a node that did not answer in 1 s).
    func members(_ nodes: [String] = []) -> [String: [MemberView]?] {
        struct List: Decodable { var members: [MemberView] }
        var views: [String: [MemberView]?] = [:]
        guard let out = try? rig(["members"] + nodes) else { return views }
        for line in out.split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2 else { continue }
            views[String(parts[0])] = try? JSONDecoder().decode(List.self, from: Data(parts[1].utf8)).members
        }
        return views
    }

    /// Each node's view on one line per node, "n1: n1=alive n2=dead ...", for failure messages.
    func describeViews() -> String {
        members().sorted { $0.key < $1.key }.map { observer, list in
            "\(observer): " + (list.map { $0.map { "\($0.name)=\($0.status)" }.joined(separator: " ") } ?? "no answer")
        }.joined(separator: "\n")
    }

    /// `waitUntil` whose timeout says what every node listed at the end and which faults were set.
    func waitUntil(_ what: String, seconds: Double, _ condition: () -> Bool) throws {
        do { try IntegrationTests.waitUntil(what, seconds: seconds, condition) } catch let timeout as TimedOut {
            let faults = (try? rig(["counters"])) ?? ""
            throw TimedOut(description: "\(timeout.description)\nviews:\n\(describeViews())\nfaults (rule, packets dropped):\n\(faults)")
        }
    }

    /// Whether every node in `observers` answers and lists every one of `members` as `status`.
    func allSee(_ members: [String], as status: String, by observers: [String]) -> Bool {
        let views = self.members(observers)
        return observers.allSatisfy { observer in
            guard let list = views[observer] ?? nil else { return false }
            return members.allSatisfy { m in list.contains { $0.name == m && $0.status == status } }
        }
    }

    /// A Prometheus counter summed over `nodes` (nodes that do not answer count 0).
    func metricSum(_ metric: String, over nodes: [String]) -> Double {
        metricValues(metric, on: nodes).values.reduce(0, +)
    }

    /// A Prometheus counter summed over `nodes`, once every one of them has answered with it
    /// (polled for up to `seconds`): on a busy machine a poll can miss a node, and a sum that
    /// silently counts it as 0 makes a "grew" or "did not grow" check meaningless.
    func answeredMetricSum(_ metric: String, over nodes: [String], seconds: Double = 10) throws -> Double {
        var values: [String: Double] = [:]
        try IntegrationTests.waitUntil("every one of \(nodes) answers with \(metric)", seconds: seconds) {
            values = metricValues(metric, on: nodes)
            return nodes.allSatisfy { values[$0] != nil }
        }
        return values.values.reduce(0, +)
    }

    /// The value of a Prometheus sample on each of `nodes` that answered with it.
    func metricValues(_ metric: String, on nodes: [String]) -> [String: Double] {
        guard let out = try? rig(["get", "/metrics"] + nodes) else { return [:] }
        // `get` gives "NODE<TAB>BODY" lines, each body joined onto one line; the sample is
        // "NAME VALUE" inside it. The first "NAME " is that of its "# TYPE NAME counter" line,
        // so the sample is the first occurrence followed by a number.
        var values: [String: Double] = [:]
        for line in out.split(separator: "\n") {
            let parts = line.split(separator: "\t", maxSplits: 1)
            guard parts.count == 2 else { continue }
            var rest = parts[1]
            while let range = rest.range(of: metric + " ") {
                let value = rest[range.upperBound...].prefix { "0123456789.eE+-".contains($0) }
                if let number = Double(value) {
                    values[String(parts[0])] = number
                    break
                }
                rest = rest[range.upperBound...]
            }
        }
        return values
    }

    /// Packets the rig's fault rules have dropped since they were last changed.
    func dropped() -> Int {
        guard let out = try? rig(["counters"]) else { return 0 }
        return out.split(separator: "\n").reduce(0) { $0 + (Int($1.split(separator: "\t").last ?? "") ?? 0) }
    }

    /// The tail of a node's log, for failure messages.
    func log(of node: String) -> String {
        guard let dir = try? status().work else { return "" }
        return String(((try? String(contentsOfFile: "\(dir)/\(node).log", encoding: .utf8)) ?? "").suffix(3_000))
    }

    /// Kills every node by PID and deletes the rig's namespaces, veths, bridge and work dir.
    func down() { _ = try? rig(["down"]) }

    @discardableResult
    private func rig(_ args: [String]) throws -> String {
        try FaultRig.script([args[0], "--rig", name] + args.dropFirst())
    }

    /// Runs Scripts/fault-rig, returning its stdout; a non-zero exit throws with its stderr.
    @discardableResult
    static func script(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: repositoryRoot + "/Scripts/fault-rig")
        p.arguments = args
        // stderr goes to a file, so that only one pipe is read and neither can fill and block the script.
        let errPath = NSTemporaryDirectory() + "fault-rig-\(UUID().uuidString.prefix(8)).err"
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: errPath) }
        guard let errFile = FileHandle(forWritingAtPath: errPath) else { throw RigFailed(description: "cannot write \(errPath)") }
        defer { try? errFile.close() }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = errFile
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let errText = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        guard p.terminationStatus == 0 else {
            throw RigFailed(description: "fault-rig \(args.joined(separator: " ")) exited \(p.terminationStatus): \(errText.suffix(3_000))",
                            exitStatus: p.terminationStatus)
        }
        return String(decoding: outData, as: UTF8.self)
    }

    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path
}

struct RigStatus: Decodable {
    struct Node: Decodable { var node: String; var ns: String; var pid: Int32?; var running: Bool }
    var work: String
    var netem: Bool
    var members: [Node]
}

/// Runs a tool and returns its stdout (stderr discarded); a non-zero exit throws.
func runTool(_ path: String, _ args: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    let out = Pipe()
    p.standardOutput = out
    p.standardError = FileHandle.nullDevice
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw RigFailed(description: "\(path) \(args) exited \(p.terminationStatus)") }
    return String(decoding: data, as: UTF8.self)
}

struct RigFailed: Error, CustomStringConvertible {
    var description: String
    var exitStatus: Int32 = 1
}

/// The kernel has no netem (`tc qdisc ... netem`: "Specified qdisc kind is unknown"): delay and
/// reordering cannot be applied here.
struct NetemUnavailable: Error, CustomStringConvertible {
    var description: String { "skipped: the kernel lacks netem (tc qdisc netem)" }
}
