import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A minimal JSON-over-HTTP client for the CLI's client commands.
enum HTTPClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func get(_ address: String, path: String) async throws -> [UInt8] {
        try await request("GET", address, path: path, body: nil)
    }

    static func request(_ method: String, _ address: String, path: String, body: [UInt8]?) async throws -> [UInt8] {
        guard let url = URL(string: "http://\(address)\(path)") else { throw Failure(description: "bad API address \(address)") }
        var req = URLRequest(url: url, timeoutInterval: 30)
        req.httpMethod = method
        if let body {
            req.httpBody = Data(body)
            req.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response): (Data, URLResponse)
        do { (data, response) = try await URLSession.shared.data(for: req) } catch {
            throw Failure(description: "cannot reach a node at \(address): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            let message = (try? JSONDecoder().decode([String: String].self, from: data))?["error"] ?? String(decoding: data, as: UTF8.self)
            throw Failure(description: "\(method) \(path): HTTP \(status): \(message)")
        }
        return Array(data)
    }
}
