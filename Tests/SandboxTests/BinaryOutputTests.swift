import Foundation
import Testing
@testable import StarlingSandbox

extension SandboxTests {
    /// Output files that are not UTF-8 come back as base64 (interface.md's `outputsBase64`), and
    /// whatever is cut or left out is named in `warnings`.
    @Suite("Binary outputs and warnings", .serialized)
    struct BinaryOutputTests {
        @Test func aBinaryOutputFileComesBackAsBase64AndTextFilesStayText() throws {
            try withSeparateRunner("binary") { runner, _ in
                // Bytes 0x00..0xff: not valid UTF-8. A text file beside it, multi-byte included.
                let r = try runner.run(sh("""
                    i=0; while [ $i -lt 256 ]; do printf "\\\\$(printf %o $i)"; i=$((i+1)); done > out/all-bytes.bin
                    printf 'héllo\\n' > out/text.txt
                    """))
                #expect(r.exitCode == 0, "\(r.stderr)")
                let expected = Data((0...255).map { UInt8($0) }).base64EncodedString()
                #expect(r.outputsBase64 == ["all-bytes.bin": expected])
                #expect(r.outputs == ["text.txt": "héllo\n"])
                #expect(r.truncated == false)
                #expect(r.warnings == nil)

                // The JSON carries both maps; a result with no binary file has no key at all.
                let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(r)) as? [String: Any]
                #expect((json?["outputsBase64"] as? [String: String])?["all-bytes.bin"] == expected)
                #expect(json?["warnings"] == nil)
                let decoded = try JSONDecoder().decode(TaskResult.self, from: JSONEncoder().encode(r))
                #expect(decoded == r)
                let plain = try runner.run(sh("echo x > out/a"))
                let plainJSON = String(decoding: try JSONEncoder().encode(plain), as: UTF8.self)
                #expect(!plainJSON.contains("outputsBase64") && !plainJSON.contains("warnings"), "\(plainJSON)")
            }
        }

        @Test func aBinaryFileCutAtItsCapIsCutExactlyAndWarned() throws {
            try withSeparateRunner("binary-cut", configure: { $0.outputFileCapBytes = 100 }) { runner, _ in
                // 300 bytes of 0xff: cut at exactly 100, still base64 (no UTF-8 trimming of binary).
                let r = try runner.run(sh("head -c 300 /dev/zero | tr '\\0' '\\377' > out/ff.bin; head -c 300 /dev/zero | tr '\\0' a > out/a.txt"))
                #expect(r.exitCode == 0, "\(r.stderr)")
                let b64 = try #require(r.outputsBase64?["ff.bin"])
                #expect(Data(base64Encoded: b64) == Data(repeating: 0xff, count: 100))
                #expect(r.outputs["a.txt"] == String(repeating: "a", count: 100))
                #expect(r.truncated)
                let warnings = try #require(r.warnings)
                #expect(warnings.contains { $0.contains("\"ff.bin\"") && $0.contains("cut") }, "\(warnings)")
                #expect(warnings.contains { $0.contains("\"a.txt\"") }, "\(warnings)")
            }
        }

        @Test func aTextFileCutInsideACharacterStaysText() throws {
            try withSeparateRunner("utf8-cut", configure: { $0.outputFileCapBytes = 5 }) { runner, _ in
                // "ééé" is 6 bytes; a cut at 5 splits the third character.
                let r = try runner.run(sh("printf 'ééé' > out/e.txt"))
                #expect(r.outputs["e.txt"] == "éé")
                #expect(r.outputsBase64 == nil)
            }
        }

        @Test func stdoutCutAndFilesLeftOutAreWarned() throws {
            try withSeparateRunner("warn-streams", configure: { $0.outputCapBytes = 1_000 }) { runner, _ in
                let r = try runner.run(sh("head -c 5000 /dev/zero | tr '\\0' x; ln -s /etc/passwd out/link"))
                #expect(r.stdout.utf8.count == 1_000)
                let warnings = try #require(r.warnings)
                #expect(warnings.contains("stdout was cut at 1000 bytes"), "\(warnings)")
                #expect(!warnings.contains { $0.hasPrefix("stderr") })
                #expect(warnings.contains { $0.contains("left out") }, "\(warnings)")
            }
        }

        @Test func warningsAreBoundedHoweverManyFilesAreCut() throws {
            try withSeparateRunner("warn-bound", configure: { $0.outputFileCapBytes = 2 }) { runner, _ in
                let r = try runner.run(sh("for i in $(seq 1 40); do echo long-content > out/f$i; done"))
                let warnings = try #require(r.warnings)
                #expect(warnings.count <= SandboxRunner.maxWarnings)
                #expect(warnings.last == "\(40 - (SandboxRunner.maxWarnings - 3)) more output files were cut", "\(warnings)")
            }
        }
    }
}
