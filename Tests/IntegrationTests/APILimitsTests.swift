import Foundation
import Glibc
import Testing

/// The HTTP API's own bounds: HEAD is served wherever GET is, and an idle client connection is
/// closed after `--api-idle-timeout`, so a stranger cannot hold the node's descriptors for ever.
struct APILimitsTests {
    /// A raw HTTP/1.1 exchange on one connection: what the node sent back until it closed or
    /// `seconds` passed, and how long the connection stayed open.
    static func exchange(port: UInt16, request: String, seconds: Double, from source: String = "127.0.0.1") -> (reply: String, openFor: Double) {
        let fd = connect(port: port, from: source)
        guard fd >= 0 else { return ("", 0) }
        defer { close(fd) }
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

    /// A TCP connection to the API from `source` (a 127.0.0.x address), or -1.
    static func connect(port: UInt16, from source: String) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, withLoopback(port: port, { Glibc.connect(fd, $0, $1) == 0 }) else { close(fd); return -1 }
        return fd
    }

    /// Whether the node closed `fd` (EOF) within `seconds`.
    static func closedByNode(_ fd: Int32, within seconds: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, Int32(seconds * 1000)) > 0 else { return false }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0
    }

    @Test func oneSourceCannotHoldEveryConnection() throws {
        let cluster = try LocalCluster()
        defer { cluster.shutdown() }
        let node = try cluster.start("per-source", extraArguments: ["--api-max-connections-per-source", "4"])
        // 127.0.0.3 and .4: addresses no other client of this node uses (the harness's own
        // requests come from 127.0.0.1 and may stay open in its connection pool).
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        for _ in 0..<5 { held.append(Self.connect(port: node.apiPort, from: "127.0.0.3")) }
        #expect(held.allSatisfy { $0 >= 0 })
        // Connections are admitted on several event loops at once, so which one is over the
        // limit is a race: exactly one of the five is closed, and the other four stay open.
        var closed: Set<Int32> = []
        try waitUntil("the node closes one of five connections from one address", seconds: 5) {
            for fd in held where !closed.contains(fd) && Self.closedByNode(fd, within: 0.05) { closed.insert(fd) }
            return !closed.isEmpty
        }
        for fd in held where !closed.contains(fd) && Self.closedByNode(fd, within: 0.3) { closed.insert(fd) }
        #expect(closed.count == 1, "\(closed.count) of 5 connections from one address were closed; the limit is 4")
        held.removeAll { closed.contains($0) }
        for fd in closed { close(fd) }
        // Another address is served meanwhile, and so is the first once it lets one go.
        let other = Self.exchange(port: node.apiPort, request: "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", seconds: 5,
                                  from: "127.0.0.4")
        #expect(other.reply.hasPrefix("HTTP/1.1 200"), "another address was not served: \(other.reply.prefix(80))")
        close(held.removeFirst())
        try waitUntil("the first address is served again", seconds: 5) {
            Self.exchange(port: node.apiPort, request: "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", seconds: 2,
                          from: "127.0.0.3")
                .reply.hasPrefix("HTTP/1.1 200")
        }
    }

    @Test func outOfRangeAPILimitsAreRefusedAtStart() throws {
        for args in [["--api-idle-timeout", "0"], ["--api-max-connections", "0"], ["--api-idle-timeout", "-3"],
                     ["--api-max-connections-per-source", "0"]] {
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
