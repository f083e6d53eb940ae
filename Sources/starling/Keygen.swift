import ArgumentParser
import Foundation
import StarlingCrypto

struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a new 32-byte cluster key, base64, mode 0600.")

    @Option(help: "Where to write the key.")
    var out: String

    func run() throws {
        guard !FileManager.default.fileExists(atPath: out) else {
            throw ValidationError("\(out) exists; refusing to overwrite a key")
        }
        try writePrivateFile(path: out, contents: Array((ClusterKey.generate().base64 + "\n").utf8))
        print("wrote a new cluster key to \(out)")
    }
}
