import Foundation
import Glibc
import Synchronization
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The `starling` binary under test: $STARLING_BIN (Scripts/test sets it), else the debug build.
func starlingBinary() -> String {
    if let bin = ProcessInfo.processInfo.environment["STARLING_BIN"] { return bin }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/starling").path
}

/// A port free for both UDP and TCP on 127.0.0.1 right now.
///
/// Drawn below the kernel's ephemeral range, so that an outgoing connection (a push-pull, an HTTP
/// client) cannot take it between this check and the node's bind.
func freePort() -> UInt16 {
    let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
    let ephemeralLow = range.split(whereSeparator: \.isWhitespace).first.flatMap { UInt16($0) } ?? 32_768
    let top = max(ephemeralLow, 20_512) - 1
    for _ in 0..<100 {
        let port = UInt16.random(in: 20_000...top)
        if canBind(port, SOCK_DGRAM), canBind(port, SOCK_STREAM) { return port }
    }
    fatalError("no free port")
}

/// Calls `body` with 127.0.0.1:port as a C socket address.
func withLoopback<T>(port: UInt16, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var a = sockaddr_in()
    a.sin_family = sa_family_t(AF_INET)
    a.sin_port = port.bigEndian
    a.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &a) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
}

private func canBind(_ port: UInt16, _ type: __socket_type) -> Bool {
    let fd = socket(AF_INET, Int32(type.rawValue), 0)
    defer { close(fd) }
    return withLoopback(port: port) { bind(fd, $0, $1) == 0 }
}

struct MemberView: Decodable, Equatable {
    struct Capacity: Decodable, Equatable { var slots: Int; var free: Int }
    var name: String
    var gossip: String
    var api: String
    var status: String
    var incarnation: UInt64
    var capacity: Capacity
    var identityKey: String?
}

/// One `starling node` process, ended by its own PID.
final class NodeProcess {
    let name: String
    let gossipPort: UInt16
    let apiPort: UInt16
    let dataDir: String
    let keyFile: String
    let process = Process()
    let logPath: String

    init(name: String, gossipPort: UInt16, apiPort: UInt16, dataDir: String, keyFile: String, join: [UInt16], logPath: String,
         extraArguments: [String] = []) throws {
        self.name = name
        self.gossipPort = gossipPort
        self.apiPort = apiPort
        self.dataDir = dataDir
        self.keyFile = keyFile
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: starlingBinary())
        var args = ["node", "--name", name, "--gossip", "127.0.0.1:\(gossipPort)", "--api", "127.0.0.1:\(apiPort)",
                    "--data", dataDir, "--key-file", keyFile, "--preset", "loopback", "--slots", "2", "--log-level", ProcessInfo.processInfo.environment["STARLING_TEST_LOG_LEVEL"] ?? "info"]
        if !join.isEmpty { args += ["--join", join.map { "127.0.0.1:\($0)" }.joined(separator: ",")] }
        process.arguments = args + extraArguments
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
    }

    var pid: Int32 { process.processIdentifier }
    var isRunning: Bool { process.isRunning }

    func signal(_ sig: Int32) { if process.isRunning { kill(pid, sig) } }

    /// Waits for the process to exit (up to `seconds`), returning its status, or nil if it did not.
    func waitForExit(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning, Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    func members() -> [MemberView]? {
        guard let data = httpGet(port: apiPort, path: "/v1/members") else { return nil }
        struct List: Decodable { var members: [MemberView] }
        return try? JSONDecoder().decode(List.self, from: data).members
    }

    func status(of member: String) -> String? { members()?.first { $0.name == member }?.status }

    func metrics() -> String { httpGet(port: apiPort, path: "/metrics").map { String(decoding: $0, as: UTF8.self) } ?? "" }

    func metric(_ line: String) -> Double {
        for l in metrics().split(separator: "\n") where l.hasPrefix(line + " ") {
            return Double(l.split(separator: " ").last!) ?? 0
        }
        return 0
    }
}

/// A set of nodes sharing one temp dir and (by default) one cluster key. Call `shutdown()` in a
/// `defer`: it ends every process it started, by PID, whatever the test's outcome.
final class LocalCluster {
    let dir: String
    let keyFile: String
    private(set) var nodes: [NodeProcess] = []
    private var ports: [String: (UInt16, UInt16)] = [:]

    init() throws {
        dir = try makeTemporaryDirectory("starling-it")
        keyFile = dir + "/cluster.key"
        try runStarling(["keygen", "--out", keyFile])
    }

    /// Starts `name` (reusing its ports and data dir if it ran before).
    @discardableResult
    func start(_ name: String, join: [NodeProcess] = [], keyFile: String? = nil, extraArguments: [String] = []) throws -> NodeProcess {
        let pinned = ports[name]
        for attempt in 1...3 {
            let (g, a) = pinned ?? (freePort(), freePort())
            let node = try NodeProcess(name: name, gossipPort: g, apiPort: a, dataDir: "\(dir)/\(name)", keyFile: keyFile ?? self.keyFile,
                                       join: join.map(\.gossipPort), logPath: "\(dir)/\(name).log", extraArguments: extraArguments)
            nodes.append(node)
            try waitUntil("\(name) serves its API", seconds: 20) { !node.isRunning || httpGet(port: a, path: "/v1/health") != nil }
            if node.isRunning {
                ports[name] = (g, a)
                return node
            }
            // It exited during start-up. Fresh ports were free when drawn but another process
            // may have bound one since: draw again. Pinned ports (a restart) get no second try.
            let log = (try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? ""
            if pinned != nil || attempt == 3 {
                throw StartFailed(description: "\(name) exited during start-up: \(log.suffix(2_000))")
            }
        }
        throw StartFailed(description: "\(name) did not start")
    }

    /// Starts `names`, the first as seed and the rest joining through it, and waits until each
    /// lists them all alive.
    func startMesh(_ names: [String]) throws -> [NodeProcess] {
        var nodes = [try start(names[0])]
        for name in names.dropFirst() { nodes.append(try start(name, join: [nodes[0]])) }
        try waitUntil("\(names.count) alive", seconds: 15) {
            nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == names.count }
        }
        return nodes
    }

    func shutdown() {
        for n in nodes where n.isRunning { n.signal(SIGKILL) }
        for n in nodes { _ = n.waitForExit(seconds: 5) }
        // STARLING_TEST_KEEP_DIRS=1 keeps the nodes' data and logs, to read after a failure.
        if ProcessInfo.processInfo.environment["STARLING_TEST_KEEP_DIRS"] == "1" {
            print("kept the cluster's directory: \(dir)")
        } else {
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    func log(of node: NodeProcess) -> String { (try? String(contentsOfFile: node.logPath, encoding: .utf8)) ?? "" }
}

/// A new empty directory under the system's temporary directory.
func makeTemporaryDirectory(_ prefix: String) throws -> String {
    let dir = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

struct TimedOut: Error, CustomStringConvertible { var description: String }
struct StartFailed: Error, CustomStringConvertible { var description: String }

func waitUntil(_ what: String, seconds: Double, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return }
        usleep(50_000)
    }
    if condition() { return }
    throw TimedOut(description: "timed out after \(seconds)s waiting until \(what)")
}

func runStarling(_ args: [String]) throws {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: starlingBinary())
    p.arguments = args
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    p.waitUntilExit()
    if p.terminationStatus != 0 { throw TimedOut(description: "starling \(args) exited \(p.terminationStatus)") }
}

/// A blocking HTTP GET on 127.0.0.1 (nil on any failure).
func httpGet(port: UInt16, path: String) -> Data? {
    final class Box: Sendable { let data = Mutex<Data?>(nil) }
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    var req = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
    req.timeoutInterval = 3
    URLSession.shared.dataTask(with: req) { data, response, _ in
        if (response as? HTTPURLResponse)?.statusCode == 200 { box.data.withLock { $0 = data } }
        done.signal()
    }.resume()
    done.wait()
    return box.data.withLock { $0 }
}

/// Any HTTP GET: status and body.
func httpRequest(port: UInt16, path: String) throws -> (Int, Data) {
    final class Box: Sendable { let result = Mutex<(Int, Data)>((0, Data())) }
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    URLSession.shared.dataTask(with: URL(string: "http://127.0.0.1:\(port)\(path)")!) { data, response, _ in
        box.result.withLock { $0 = ((response as? HTTPURLResponse)?.statusCode ?? 0, data ?? Data()) }
        done.signal()
    }.resume()
    done.wait()
    return box.result.withLock { $0 }
}

/// Sends raw datagrams to 127.0.0.1:port from an unconnected UDP socket.
func sendDatagrams(_ datagrams: [[UInt8]], to port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    defer { close(fd) }
    for (i, d) in datagrams.enumerated() {
        if i % 100 == 99 { usleep(5_000) }  // paced: we test the node, not the kernel's socket buffer
        _ = d.withUnsafeBytes { buf in withLoopback(port: port) { sendto(fd, buf.baseAddress, buf.count, 0, $0, $1) } }
    }
}

/// Opens a TCP connection to 127.0.0.1:port, writes `bytes`, and closes it.
func sendStream(_ bytes: [UInt8], to port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    guard withLoopback(port: port, { connect(fd, $0, $1) == 0 }) else { return }
    _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
}

extension LocalCluster {
    /// Starts `names` (each joining the first) with the same extra arguments, and waits until each
    /// sees all of them alive.
    func startAlive(_ names: [String], extraArguments: [String] = [], seconds: Double = 15) throws -> [NodeProcess] {
        guard let first = names.first else { return [] }
        let seed = try start(first, extraArguments: extraArguments)
        var nodes = [seed]
        for name in names.dropFirst() { nodes.append(try start(name, join: [seed], extraArguments: extraArguments)) }
        try waitUntil("\(names.count) alive", seconds: seconds) {
            nodes.allSatisfy { ($0.members() ?? []).filter { $0.status == "alive" }.count == names.count }
        }
        return nodes
    }

    /// A node policy file that lets effects reach the host's network (effects calling a test's server).
    func hostNetworkPolicy() throws -> String {
        let policy = dir + "/policy.json"
        try Data(#"{"net": "host"}"#.utf8).write(to: URL(fileURLWithPath: policy))
        return policy
    }
}
