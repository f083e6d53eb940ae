import Foundation
import Glibc
import Synchronization

/// The "external service" that session effects call in the fault tests: an HTTP/1.0 server that
/// records the path of every request and can hold requests on a gate until the test opens it.
///
/// - `GET /effect/KEY` is answered "ok" at once and counted under KEY.
/// - `GET /gate/NAME` is held open until `open("NAME")` (or `stop()`), then answered "go": an
///   effect task blocks on it, so the test knows the task runs and decides when it may end.
///
/// It can listen inside another network namespace (`/run/netns/NAME`): the fault rig's nodes
/// live in namespaces of their own and reach only the rig's addresses, so the server binds the
/// hub's address there. Only the thread that makes the socket enters the namespace; a socket
/// stays in the namespace it was made in, so every other thread keeps the test's own.
final class EffectServer: Sendable {
    let address: String
    let port: UInt16
    private let fd: Int32
    private let requests = Mutex<[String]>([])
    private let gates = Mutex<(open: Set<String>, waiting: Set<String>, stopped: Bool)>(([], [], false))

    /// Listens on 127.0.0.1 (a free port), or on `address:port` inside `namespace` when given.
    init(namespace: String? = nil, address: String = "127.0.0.1", port fixedPort: UInt16? = nil) throws {
        let made = Mutex<(fd: Int32, port: UInt16, error: String?)>((-1, 0, nil))
        let ready = DispatchSemaphore(value: 0)
        // A thread of its own: `setns` moves only the calling thread, which then never runs test code.
        let thread = Thread {
            defer { ready.signal() }
            if let namespace {
                let ns = Glibc.open(namespace, O_RDONLY | O_CLOEXEC)
                guard ns >= 0, Self.enterNetworkNamespace(ns) else {
                    if ns >= 0 { close(ns) }
                    return made.withLock { $0.error = "cannot enter \(namespace): errno \(errno)" }
                }
                close(ns)
            }
            let sock = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var one: Int32 = 1
            setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            for candidate in fixedPort.map({ [$0] }) ?? (0..<20).map({ _ in freePort() }) {
                if Self.bind(sock, address: address, port: candidate), listen(sock, 128) == 0 {
                    return made.withLock { $0 = (sock, candidate, nil) }
                }
            }
            close(sock)
            made.withLock { $0.error = "cannot listen on \(address)" }
        }
        thread.start()
        ready.wait()
        let result = made.withLock { $0 }
        guard result.fd >= 0 else { throw StartFailed(description: "effect server: \(result.error ?? "no socket")") }
        self.address = address
        fd = result.fd
        port = result.port
        let acceptor = Thread { [self] in acceptLoop() }
        acceptor.name = "effect-server"
        acceptor.start()
    }

    /// `setns(fd, CLONE_NEWNET)` for the calling thread. Glibc's module map leaves `setns` out
    /// (it is a _GNU_SOURCE declaration), so it is looked up by name.
    private static func enterNetworkNamespace(_ fd: Int32) -> Bool {
        typealias SetNS = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(nil, "setns") else { return false }
        let cloneNewNet: Int32 = 0x4000_0000
        return unsafeBitCast(symbol, to: SetNS.self)(fd, cloneNewNet) == 0
    }

    private static func bind(_ sock: Int32, address: String, port: UInt16) -> Bool {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        guard inet_pton(AF_INET, address, &sin.sin_addr) == 1 else { return false }
        return withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(sock, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    private var stopped: Bool { gates.withLock { $0.stopped } }

    private func acceptLoop() {
        while !stopped {
            let client = accept(fd, nil, nil)
            if client < 0 { if stopped { return }; continue }
            let worker = Thread { [self] in handle(client) }
            worker.stackSize = 256 << 10
            worker.start()
        }
    }

    private func handle(_ client: Int32) {
        defer { close(client) }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 4096)
        var head: [UInt8] = []
        // The whole head, up to its blank line: closing with unread bytes would reset the
        // connection, and the task would see an error after its answer.
        while !(head.count >= 4 && Array(head.suffix(4)) == [13, 10, 13, 10]) && head.count < 65_536 {
            let n = read(client, &buffer, buffer.count)
            if n <= 0 { break }
            head += buffer[0..<n]
        }
        let line = String(decoding: head.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2 else { return }
        let path = String(parts[1])
        requests.withLock { $0.append(path) }
        var answer = "ok"
        if path.hasPrefix("/gate/") {
            let name = String(path.dropFirst("/gate/".count))
            gates.withLock { _ = $0.waiting.insert(name) }
            // Held until the test opens the gate or stops the server (bounded by the test's own deadline).
            while !gates.withLock({ $0.open.contains(name) || $0.stopped }) { usleep(10_000) }
            gates.withLock { _ = $0.waiting.remove(name) }
            answer = "go"
        }
        let bytes = Array("HTTP/1.0 200 OK\r\nContent-Length: \(answer.utf8.count)\r\n\r\n\(answer)".utf8)
        _ = bytes.withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
    }

    /// Every request path seen, in arrival order.
    var paths: [String] { requests.withLock { $0 } }

    /// How many times each effect key (`/effect/KEY`) reached the server.
    func effectCounts() -> [String: Int] {
        paths.filter { $0.hasPrefix("/effect/") }.reduce(into: [:]) { $0[String($1.dropFirst("/effect/".count)), default: 0] += 1 }
    }

    /// Whether a task waits on gate `name` now.
    func isWaiting(_ name: String) -> Bool { gates.withLock { $0.waiting.contains(name) } }

    /// Lets every request on gate `name`, now or later, through.
    func open(_ name: String) { gates.withLock { _ = $0.open.insert(name) } }

    func stop() {
        let first = gates.withLock { g in defer { g.stopped = true }; return !g.stopped }
        guard first else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    /// A bash command for an effect task: GET /effect/$STARLING_EFFECT_KEY from this server, then,
    /// when `gate` is given, GET /gate/GATE and wait for its answer.
    func effectScript(gate: String? = nil) -> String {
        let connect = "exec 3<>/dev/tcp/\(address)/\(port)"
        var script = connect + " && printf 'GET /effect/%s HTTP/1.0\\r\\n\\r\\n' \"$STARLING_EFFECT_KEY\" >&3 && cat <&3"
        if let gate { script += " && echo && " + connect + " && printf 'GET /gate/\(gate) HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3" }
        return script
    }
}

/// Rows of a node's session records, read with the `sqlite3` tool from its `starling.sqlite`
/// (read-only, beside the running node: WAL lets a reader in while the node writes).
struct StoredRecord: Equatable {
    var seq: Int
    var previousHash: String
    var epoch: Int
    var kind: Int
    var key: String
    var signer: String
}

func storedRecords(dataDir: String, session: String) throws -> [StoredRecord] {
    precondition(session.allSatisfy { $0.isLetter || $0.isNumber || "._-".contains($0) }, "a session id goes into SQL as it is")
    let sql = "SELECT seq, lower(hex(previousHash)), epoch, kind, key, signer FROM session_record WHERE session = '\(session)' ORDER BY seq"
    let out = try runTool("/usr/bin/sqlite3", ["-readonly", "-separator", "\t", dataDir + "/starling.sqlite", sql])
    return out.split(separator: "\n").compactMap { line in
        let f = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard f.count == 6, let seq = Int(f[0]), let epoch = Int(f[2]), let kind = Int(f[3]) else { return nil }
        return StoredRecord(seq: seq, previousHash: f[1], epoch: epoch, kind: kind, key: f[4], signer: f[5])
    }
}

/// Whether an acknowledged record (its seq and hash, as the client got them) is in `chain`: the
/// next record names its hash as previous, or it is the last and `headHash` is its hash.
func chainHolds(seq: Int, hash: String, chain: [StoredRecord], headSeq: Int, headHash: String) -> Bool {
    if seq == headSeq { return hash == headHash }
    return chain.first { $0.seq == seq + 1 }?.previousHash == hash
}
