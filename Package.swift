// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Starling",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "starling", targets: ["starling"]),
        .executable(name: "starling-sim", targets: ["starling-sim"]),
        .executable(name: "starling-sandbox-init", targets: ["starling-sandbox-init"]),
        // Libraries for the fuzz package (Fuzz/Package.swift), which depends on this one by path.
        .library(name: "StarlingCore", targets: ["StarlingCore"]),
        .library(name: "StarlingCrypto", targets: ["StarlingCrypto"]),
        .library(name: "StarlingSandbox", targets: ["StarlingSandbox"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // The Model Context Protocol: the server behind `/mcp` and the types `starling mcp` forwards.
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk", exact: "0.12.1"),
    ],
    targets: [
        // System libraries: module maps only.
        .systemLibrary(name: "CUV", path: "Sources/CUV", pkgConfig: "libuv",
                       providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(name: "CSodium", path: "Sources/CSodium", pkgConfig: "libsodium",
                       providers: [.apt(["libsodium-dev"])]),

        // Fork/exec into cgroups and the seccomp filter (libseccomp): a few lines of C that must
        // run between fork and exec, where Swift code is not async-signal-safe.
        .target(name: "CSandbox", path: "Sources/CSandbox", linkerSettings: [.linkedLibrary("seccomp")]),
        // Runs inside sandboxes, where no Swift runtime is mounted. Linked fully static: with
        // `-static-stdlib` alone it loaded libstdc++, libm and libgcc_s at every start, about
        // 1.3 ms of CPU per warm sandbox spent in the dynamic loader (NOTES, swarm benchmark).
        .executableTarget(name: "starling-sandbox-init", path: "Sources/starling-sandbox-init",
                          linkerSettings: [.unsafeFlags(["-static-executable"])]),

        // Deterministic protocols: no I/O, no clock, no hidden randomness.
        .target(name: "StarlingCore", path: "Sources/StarlingCore"),
        .target(name: "StarlingCrypto", dependencies: ["CSodium"], path: "Sources/StarlingCrypto"),
        .target(name: "StarlingSandbox", dependencies: ["CSandbox", "StarlingCrypto"], path: "Sources/StarlingSandbox"),
        // What a node persists: SQLite through GRDB (WAL, versioned migrations).
        .target(name: "StarlingStore", dependencies: ["StarlingCore", "StarlingCrypto", .product(name: "GRDB", package: "GRDB.swift")],
                path: "Sources/StarlingStore"),
        .target(
            name: "StarlingRuntime",
            dependencies: [
                "StarlingCore", "StarlingCrypto", "CUV", "StarlingStore", "StarlingSandbox",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "MCP", package: "swift-sdk"),
            ],
            path: "Sources/StarlingRuntime"),
        .executableTarget(
            name: "starling",
            dependencies: [
                "StarlingRuntime", "StarlingCrypto", "StarlingCore", "StarlingSandbox", "StarlingStore", "CSandbox",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/starling"),

        // The deterministic simulator: same protocol code, virtual time, faulty network.
        .target(name: "StarlingSimulation", dependencies: ["StarlingCore"],
                path: "Simulations/StarlingSimulation"),
        .executableTarget(
            name: "starling-sim",
            dependencies: [
                "StarlingSimulation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Simulations/starling-sim"),

        .testTarget(name: "StarlingCoreTests", dependencies: ["StarlingCore", "StarlingCrypto"]),
        .testTarget(name: "StarlingCryptoTests", dependencies: ["StarlingCrypto"]),
        .testTarget(name: "SimulationTests", dependencies: ["StarlingSimulation", "StarlingCore"]),
        .testTarget(name: "IntegrationTests", dependencies: ["StarlingCore", "StarlingCrypto", "StarlingRuntime", "StarlingStore"]),
        .testTarget(name: "SandboxTests", dependencies: ["StarlingSandbox"]),
        .testTarget(name: "StoreTests", dependencies: ["StarlingStore", "StarlingCore", "StarlingCrypto",
                                                  .product(name: "GRDB", package: "GRDB.swift")]),
        .testTarget(
            name: "RuntimeTests",
            dependencies: [
                "StarlingRuntime", "StarlingCore", "StarlingCrypto", "StarlingStore", "StarlingSandbox",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
    ]
)
