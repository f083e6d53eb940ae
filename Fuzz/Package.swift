// swift-tools-version:5.4
// libFuzzer targets for Starling's decoders. Built only by Scripts/fuzz, with
// `-sanitize=fuzzer -parse-as-library` (libFuzzer supplies `main`), so they live in their own
// package: a plain `swift build` of the root package never sees them.
//
// Tools version 5.4 on purpose: from 5.5 SwiftPM renames an executable's entry point to
// `<module>_main` and links `main` to it, which a libFuzzer target (no `main` of its own)
// does not have.
import PackageDescription

let package = Package(
    name: "StarlingFuzz",
    dependencies: [.package(name: "Starling", path: "..")],
    targets: [
        .target(name: "FuzzSupport", path: "Targets/support"),
        .executableTarget(name: "fuzz-packet",
                          dependencies: ["FuzzSupport", .product(name: "StarlingCore", package: "Starling")],
                          path: "Targets/packet"),
        .executableTarget(name: "fuzz-pushpull",
                          dependencies: ["FuzzSupport", .product(name: "StarlingCore", package: "Starling")],
                          path: "Targets/pushpull"),
        .executableTarget(name: "fuzz-envelope",
                          dependencies: ["FuzzSupport",
                                         .product(name: "StarlingCore", package: "Starling"),
                                         .product(name: "StarlingCrypto", package: "Starling")],
                          path: "Targets/envelope"),
        .executableTarget(name: "fuzz-membership",
                          dependencies: ["FuzzSupport", .product(name: "StarlingCore", package: "Starling")],
                          path: "Targets/membership"),
        .executableTarget(name: "fuzz-audit",
                          dependencies: ["FuzzSupport", .product(name: "StarlingCore", package: "Starling")],
                          path: "Targets/audit"),
        .executableTarget(name: "fuzz-json",
                          dependencies: ["FuzzSupport", .product(name: "StarlingSandbox", package: "Starling")],
                          path: "Targets/json"),
        .executableTarget(name: "fuzz-sessions",
                          dependencies: ["FuzzSupport",
                                         .product(name: "StarlingCore", package: "Starling"),
                                         .product(name: "StarlingCrypto", package: "Starling")],
                          path: "Targets/sessions"),
        .executableTarget(name: "fuzz-hosted",
                          dependencies: ["FuzzSupport", .product(name: "StarlingCore", package: "Starling")],
                          path: "Targets/hosted"),
    ]
)
