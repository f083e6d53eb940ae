import Foundation
import Glibc
import Testing

/// The HTTP API's own bounds: HEAD is served wherever GET is, and an idle client connection is
/// closed after `--api-idle-timeout`, so a stranger cannot hold the node's descriptors for ever.
struct APILimitsTests {
    /// A raw HTTP/1.1 exchange on one connection: what the node sent back until it closed or
    /// `seconds` passed, and how long the connection stayed open.
    static func exchange(port: UInt16, request: String, seconds: Double) -> (reply: String, openFor: Double) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard withLoopback(port: port, { connect(fd, $0, $1) == 0 }) else { return ("", 0) }
        let start = Date()
        if !request.isEmpty { _ = request.utf8CString.withUnsafeBytes { send(fd, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) } }
        var reply = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date().timeIntervalSince(start) < seconds {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&p, 1, 100) >= 0 else { break }
            guard p.revents != 0 else { continue }
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }  // closed by the node
            reply += buffer[0..<n]
        }
        return (String(decoding: reply, as: UTF8.self), Date().timeIntervalSince(start))
    }

    @Test func headIsServedWhereverGetIsWithoutABody() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("head")
        for path in ["/v1/health", "/v1/members", "/metrics", "/v1/openapi.json"] {
            let (reply, _) = Self.exchange(port: node.apiPort, request: "HEAD \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", seconds: 5)
            #expect(reply.hasPrefix("HTTP/1.1 200"), "HEAD \(path): \(reply.prefix(80))")
            let body = reply.components(separatedBy: "\r\n\r\n").dropFirst().joined()
            #expect(body.isEmpty, "HEAD \(path) sent a body of \(body.utf8.count) bytes")
        }
        // GET still has its body, and a method no route serves is still 405.
        #expect(Self.exchange(port: node.apiPort, request: "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", seconds: 5)
            .reply.contains(#""status":"ok""#))
        #expect(Self.exchange(port: node.apiPort, request: "PUT /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", seconds: 5)
            .reply.hasPrefix("HTTP/1.1 405"))
    }

    @Test func anIdleConnectionIsClosedAtTheIdleTimeout() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("idle", extraArguments: ["--api-idle-timeout", "1"])
        // A connection that never sends a request.
        let silent = Self.exchange(port: node.apiPort, request: "", seconds: 10)
        #expect(silent.openFor >= 0.8 && silent.openFor < 5, "closed after \(silent.openFor) s")
        // A keep-alive connection after one answered request.
        let kept = Self.exchange(port: node.apiPort, request: "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n", seconds: 10)
        #expect(kept.reply.hasPrefix("HTTP/1.1 200"))
        #expect(kept.openFor >= 0.8 && kept.openFor < 5, "closed after \(kept.openFor) s")
    }

    @Test func outOfRangeAPILimitsAreRefusedAtStart() throws {
        for args in [["--api-idle-timeout", "0"], ["--api-max-connections", "0"], ["--api-idle-timeout", "-3"]] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: starlingBinary())
            p.arguments = ["node", "--name", "x", "--gossip", "127.0.0.1:1", "--api", "127.0.0.1:1", "--data", "/nonexistent",
                           "--key-file", "/nonexistent"] + args
            p.standardError = FileHandle.nullDevice
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            #expect(p.terminationStatus != 0, "\(args) was accepted")
        }
    }
}
