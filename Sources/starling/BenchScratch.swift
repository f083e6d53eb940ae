import ArgumentParser
import Foundation

/// The scratch directory of a hidden `bench` command: the one given, kept afterwards; or a new
/// one under the temporary directory, removed when the bench ends.
struct BenchScratch: ParsableArguments {
    @Option(help: "Directory for the scratch databases (default: a new one under the temporary directory, removed afterwards).")
    var scratch: String?

    /// Creates the directory and runs `body` with its path; removes it afterwards unless given.
    func with<T>(prefix: String, _ body: (String) throws -> T) throws -> T {
        let root = scratch ?? NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { if scratch == nil { try? FileManager.default.removeItem(atPath: root) } }
        return try body(root)
    }
}
