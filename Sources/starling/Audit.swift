import ArgumentParser
import Foundation
import StarlingCrypto
import StarlingStore

struct AuditCommands: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Check and export a node's signed, hash-chained audit log (in DATA/starling.sqlite).",
        subcommands: [AuditVerify.self, AuditExport.self, AuditHeadCommand.self, AuditBench.self])
}

/// The options every audit command shares: the data dir, and the key the log must verify under.
struct AuditSource: ParsableArguments {
    @Option(help: "The node's data directory (holds starling.sqlite and node.key).")
    var data: String

    @Option(name: .customLong("public-key"), help: "The node's Ed25519 public key, hex (default: derived from DATA/node.key).")
    var publicKey: String?

    /// The public key the log must verify under.
    func key() throws -> [UInt8] {
        if let publicKey {
            guard let key = Hex.decode(publicKey), key.count == 32 else { throw ValidationError("--public-key must be 64 hex digits") }
            return key
        }
        let path = (data as NSString).appendingPathComponent(NodeIdentity.fileName)
        // Never create a key here: loadOrCreate only loads when the file exists.
        guard FileManager.default.fileExists(atPath: path) else {
            throw ValidationError("no \(path); give --public-key")
        }
        return try NodeIdentity.loadOrCreate(dataDir: data).publicKey
    }
}

struct AuditVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check the whole chain and every signature; name the first bad entry.",
        discussion: """
            Prints "ok N entries" and exits 0 when every entry follows the one before it, matches \
            its hash and carries the node's signature. Otherwise prints the first bad entry (its \
            seq and what is wrong) on stderr and exits 1. A truncated tail is caught only against \
            a witness: --witness names a head saved by `starling audit head`, or another node's \
            data directory, whose audit_witness table holds the latest head that node witnessed of \
            this one.
            """)

    @OptionGroup var source: AuditSource

    @Option(help: "A witnessed head: a JSON file from `starling audit head`, or another node's data directory.")
    var witness: String?

    func run() throws {
        let key = try source.key()
        var witnessed: AuditHead? = nil
        if let witness { witnessed = try Self.head(from: witness, publicKey: key) }
        let result = try AuditReader(directory: source.data).verify(publicKey: key, witness: witnessed)
        if let fault = result.fault {
            FileHandle.standardError.write(Data("audit verify: \(fault)\n".utf8))
            throw ExitCode(1)
        }
        print("ok \(result.entries) entries" + (witnessed.map { "; the witnessed entry \($0.seq) is present" } ?? ""))
    }

    /// The head in `path` (a head file, or a witness's data dir), checked against `publicKey`.
    static func head(from path: String, publicKey: [UInt8]) throws -> AuditHead {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { throw ValidationError("--witness: no \(path)") }
        if isDirectory.boolValue {
            guard let found = try AuditReader(directory: path).witnessedHead(of: publicKey) else {
                throw ValidationError("--witness \(path) holds no head of this node's log")
            }
            guard found.head.signatureVerifies(publicKey: publicKey) else {
                throw ValidationError("--witness \(path): the head it holds does not verify under the node's key")
            }
            return found.head
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard data.count <= 1 << 16, let head = try? JSONDecoder().decode(WitnessedHead.self, from: data) else {
            throw ValidationError("--witness \(path) is not a head written by `starling audit head`")
        }
        guard let (key, verified) = head.verifiedHead() else { throw ValidationError("--witness \(path): its signature does not verify") }
        guard key == publicKey else { throw ValidationError("--witness \(path) is a head of another node's log") }
        return verified
    }
}

struct AuditExport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Print every entry as one JSON object a line, in seq order.",
        discussion: """
            Fields: seq, timeMs, kind, previousHash, hash, signature (hex), body (canonical JSON: \
            sorted keys, no whitespace). Re-encoding a body canonically gives the bytes that were \
            hashed, so an export can be verified on its own.
            """)

    @Option(help: "The node's data directory.")
    var data: String

    func run() throws {
        let out = FileHandle.standardOutput
        var buffer = Data()
        try AuditReader(directory: data).forEachEntry { entry in
            buffer.append(contentsOf: Array((ExportedAuditEntry(entry).line + "\n").utf8))
            if buffer.count >= 1 << 16 {
                out.write(buffer)
                buffer.removeAll(keepingCapacity: true)
            }
        }
        out.write(buffer)
    }
}

struct AuditHeadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "head",
        abstract: "Print the log's last entry as a signed head (JSON), to keep elsewhere as a witness.")

    @OptionGroup var source: AuditSource

    @Option(help: "The node's name, written into the head.")
    var name: String = ""

    func run() throws {
        let key = try source.key()
        let result = try AuditReader(directory: source.data).verify(publicKey: key)
        if let fault = result.fault {
            FileHandle.standardError.write(Data("audit head: the log does not verify: \(fault)\n".utf8))
            throw ExitCode(1)
        }
        guard let head = result.head else { throw ValidationError("the audit log is empty") }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(WitnessedHead(node: name, publicKey: key, head: head)), as: UTF8.self))
    }
}
