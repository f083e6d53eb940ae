import Foundation
import Glibc
import Synchronization
import Testing
@testable import StarlingSandbox

/// A fresh directory on tmpfs for a test, removed (as root) afterwards.
func scratchDirectory(_ label: String) -> String {
    let dir = "/dev/shm/starling-test-\(label)-\(SandboxRunner.newID())"
    mkdir(dir, 0o755)
    return dir
}

/// The longest prefix of `secret` (at least `minimum` bytes) that `text` ends with, if any.
func trailingSecretPrefix(of secret: String, in text: String, minimum: Int = 6) -> String? {
    let s = Array(secret.utf8), t = Array(text.utf8)
    for length in stride(from: min(s.count, t.count), through: minimum, by: -1) where Array(t.suffix(length)) == Array(s.prefix(length)) {
        return String(decoding: s.prefix(length), as: UTF8.self)
    }
    return nil
}

/// Nested in `SandboxTests`, whose `.serialized` reaches its nested suites: these tests load the
/// CPU (100,000s of directories, memory fills), and the outer suite's CPU-time checks must not
/// compete with them.
extension SandboxTests {
    @Suite("Secrets and output collection", .serialized)
    struct OutputCollectionTests {
        static let secret = "sk-live-7c1f9a2b4d6e8f0a1b3c5d7e"  // 32 bytes

        /// The node holds `secret` as TOKEN, and policy lets tasks ask for it.
        static func holdSecret(_ c: inout SandboxConfiguration) {
            c.policy = Policy(secrets: ["TOKEN"])
            c.secrets = SecretStore(values: ["TOKEN": secret])
        }

        @Test func redactionComesBeforeTheCapSoAStraddlingSecretLeaksNoPrefix() throws {
            try withSeparateRunner("straddle", configure: Self.holdSecret) { runner, _ in
                let cap = runner.configuration.outputCapBytes
                // The secret starts 10 bytes before the cap, on stdout and on stderr.
                let script = "head -c \(cap - 10) /dev/zero | tr '\\0' a; printf %s \"$TOKEN\"; echo tail-after-the-secret"
                let r = try runner.run(sh("(\(script)); (\(script)) >&2", timeout: 30, secrets: ["TOKEN"]))
                #expect(r.exitCode == 0, "\(r.stderr.suffix(200))")
                #expect(r.truncated)
                for stream in [r.stdout, r.stderr] {
                    #expect(!stream.contains(String(Self.secret.prefix(6))), "a prefix of the secret leaked: \(stream.suffix(40))")
                    #expect(trailingSecretPrefix(of: Self.secret, in: stream) == nil)
                    // The marker replaced the secret whole, then the cut fell inside the marker.
                    #expect(stream.hasSuffix("aaaa[REDACTED:") && stream.utf8.count == cap, "\(stream.suffix(40))")
                }
            }
        }

        @Test func secretsAreRedactedFromOutputFileNamesAndBeforeEachFilesCap() throws {
            try withSeparateRunner("names", configure: { Self.holdSecret(&$0); $0.outputFileCapBytes = 64 }) { runner, _ in
                let r = try runner.run(sh("""
                    mkdir -p "out/dir-$TOKEN"; echo named > "out/$TOKEN.txt"; echo nested > "out/dir-$TOKEN/x"
                    head -c 54 /dev/zero | tr '\\0' b > out/straddle; printf %s "$TOKEN" >> out/straddle
                    """, secrets: ["TOKEN"]))
                #expect(r.exitCode == 0, "\(r.stderr)")
                #expect(r.outputs["[REDACTED:TOKEN].txt"] == "named\n", "\(r.outputs.keys.sorted())")
                #expect(r.outputs["dir-[REDACTED:TOKEN]/x"] == "nested\n")
                #expect(!r.outputs.keys.contains { $0.contains(Self.secret.prefix(6)) })
                let straddle = r.outputs["straddle"] ?? ""
                #expect(straddle.utf8.count == 64 && straddle.hasPrefix(String(repeating: "b", count: 54)), "\(straddle)")
                #expect(!straddle.contains(Self.secret.prefix(6)), "\(straddle)")
                #expect(r.truncated)
                let json = String(decoding: try JSONEncoder().encode(r), as: UTF8.self)
                #expect(!json.contains(Self.secret.prefix(6)))
            }
        }

        @Test func redactionShiftsCannotBringAnUnmatchedPrefixBelowTheCap() {
            // Many long values replaced by short markers shorten the text; the bytes after the cut
            // (here a secret cut off at the end of what was captured) must still not appear.
            let store = SecretStore(values: ["A": "0123456789abcdefghij", "B": "zyxwvutsrq"])
            var input = Array(String(repeating: "0123456789abcdefghij", count: 10).utf8)  // 200 bytes → 10 markers of 12
            let cap = input.count + 5
            // Captured as the runner does, `overlap` bytes past the cap: B starts after the cut and
            // was itself cut off where the capture ended, so it cannot be matched.
            input += Array(".....".utf8) + Array(repeating: UInt8(ascii: "-"), count: 13) + Array("zyxwvu".utf8)
            #expect(input.count == cap + store.overlap)
            let (text, truncated) = store.redact(input, cap: cap)
            #expect(truncated)
            #expect(text == String(repeating: "[REDACTED:A]", count: 10) + ".....", "\(text)")
            // Whole values, overlapping candidates and multi-byte text.
            let s = SecretStore(values: ["K": "ключ-секрет", "L": "секрет-длинный"])
            #expect(s.redact("a ключ-секрет b секрет-длинный c") == "a [REDACTED:K] b [REDACTED:L] c")
            #expect(s.redact(Array("ключ".utf8), cap: 3).text == "к", "a cut inside a character drops the character")
        }

        @Test func theOutputWalkIsBoundedByEntriesVisitedAndDepth() throws {
            let dir = scratchDirectory("walk")
            defer { removeTree(dir) }
            // 30,000 empty directories: no file to collect, but each costs a visit.
            for i in 0..<30_000 { mkdir("\(dir)/d\(i)", 0o755) }
            let started = Date()
            let wide = collectOutputs(dir, bounds: OutputBounds(perFile: 1 << 20, total: 4 << 20, maxEntries: 10_000))
            #expect(wide.truncated, "entries past the visit budget must set truncated")
            #expect(wide.files.isEmpty)
            #expect(Date().timeIntervalSince(started) < 5)
            // A file below the depth limit is left out, and says so.
            let deep = scratchDirectory("deep")
            defer { removeTree(deep) }
            var path = deep
            for i in 0..<20 {
                path += "/l\(i)"
                mkdir(path, 0o755)
            }
            FileManager.default.createFile(atPath: path + "/bottom.txt", contents: Data("deep\n".utf8))
            FileManager.default.createFile(atPath: deep + "/top.txt", contents: Data("top\n".utf8))
            let collected = collectOutputs(deep, bounds: OutputBounds(perFile: 1 << 20, total: 4 << 20))
            #expect(collected.truncated)
            #expect(collected.files == ["top.txt": "top\n"])
        }

        @Test func aDirectoryTheNodeCannotReadIsReportedAsLeftOut() throws {
            let dir = scratchDirectory("unreadable")
            defer { removeTree(dir) }
            mkdir(dir + "/locked", 0o000)
            FileManager.default.createFile(atPath: dir + "/open.txt", contents: Data("o".utf8), attributes: [.posixPermissions: 0o644])
            // As a node that is not root would walk it (see asUser in TreeRemovalTests).
            let collected = asUser(65534, 65534) { () -> String in
                let c = collectOutputs(dir, bounds: OutputBounds(perFile: 1 << 20, total: 4 << 20))
                return "\(c.files) \(c.truncated)"
            }
            #expect(collected == "[\"open.txt\": \"o\"] true")
        }

        @Test func aTaskLeavingAHundredThousandDirectoriesCostsABoundedCollection() throws {
            try withSeparateRunner("many-dirs") { runner, root in
                let r = try runner.run(TaskSpec(argv: ["python3", "-c", """
                    import os
                    for i in range(100000): os.mkdir(f'out/d{i}')
                    open('out/d7/f.txt', 'w').write('f')
                    """], timeoutSeconds: 60, memoryMB: 1024))
                #expect(r.exitCode == 0, "\(r.stderr)")
                #expect(r.truncated)
                #expect(r.outputs.count <= 1)
                #expect(leftovers(root, runner).isEmpty)
            }
        }
    }
}
