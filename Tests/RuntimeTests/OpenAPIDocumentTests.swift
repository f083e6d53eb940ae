import Foundation
import Hummingbird
import Logging
import Prometheus
import StarlingCore
import StarlingCrypto
import Testing
@testable import StarlingRuntime

/// The OpenAPI document against the router that serves the API.
@Suite("OpenAPI document")
struct OpenAPIDocumentTests {
    /// A router built as the node builds it. The mesh node binds UDP and TCP on 127.0.0.1 (an
    /// ephemeral port) but never starts its loop.
    static func router() throws -> (Router<BasicRequestContext>, MeshNode) {
        let config = MeshConfiguration(name: "doc-test", bind: NodeAddress(host: "127.0.0.1", port: 0), api: "127.0.0.1:1",
                                       seeds: [], slots: 1, keyFile: "/dev/null", settings: .loopback)
        let node = try MeshNode(configuration: config, keyring: Keyring(keys: [.generate()]), logger: Logger(label: "test"))
        let server = APIServer(node: node, registry: PrometheusCollectorRegistry(), host: "127.0.0.1", port: 0,
                               logger: Logger(label: "test"))
        return (server.makeRouter(), node)
    }

    @Test func isOpenAPI31WithEveryOperationAnswered() throws {
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.json.utf8)) as? [String: Any])
        #expect((doc["openapi"] as? String)?.hasPrefix("3.1.") == true)
        let paths = try #require(doc["paths"] as? [String: [String: [String: Any]]])
        #expect(!paths.isEmpty)
        for (path, operations) in paths {
            for (method, operation) in operations {
                let responses = operation["responses"] as? [String: Any] ?? [:]
                #expect(!responses.isEmpty, "\(method) \(path) documents no response")
                #expect(operation["operationId"] is String, "\(method) \(path) has no operationId")
            }
        }
    }

    /// Every route the router serves is documented, and the document lists nothing else.
    @Test func documentsExactlyTheRoutesTheRouterServes() throws {
        let (router, _) = try Self.router()
        // The router writes a capture as `{name}`, as OpenAPI path templates do.
        let served = Set(router.routes.map { "\($0.method.rawValue) \($0.path.description)" })
        let documented = Set(OpenAPIDocument.methodsByPath.flatMap { path, methods in methods.map { "\($0) \(path)" } })
        #expect(served == documented)
        #expect(served.contains("GET /v1/openapi.json"))
    }

    @Test func pathTemplatesMatchOneSegmentPerCapture() {
        #expect(OpenAPIDocument.methods(forPath: "/v1/health") == ["GET"])
        #expect(OpenAPIDocument.methods(forPath: "/v1/health/x") == nil)
        #expect(OpenAPIDocument.methods(forPath: "/v1/nothing") == nil)
        #expect(OpenAPIDocument.methods(forPath: "") == nil)
    }
}
