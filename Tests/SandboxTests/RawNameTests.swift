import Foundation
import Glibc
import Synchronization
import Testing
@testable import StarlingSandbox

/// Names no UTF-8 decoder keeps as they are: a stray 0xFF, a lead byte with nothing after it,
/// overlong encodings of "/" and ".", and a second name that decodes like the first one.
let undecodableNames: [[UInt8]] = [
    Array("bad".utf8) + [0xFF],
    Array("trail".utf8) + [0xC3],
    Array("over".utf8) + [0xC0, 0xAF],
    Array("over3".utf8) + [0xE0, 0x80, 0xAE],
    Array("bad".utf8) + [0xFE],
]

/// `dir` + "/" + `name`, as the NUL-terminated bytes the kernel takes.
func rawPath(_ dir: String, _ name: [UInt8]) -> [CChar] {
    (Array(dir.utf8) + [0x2F] + name + [0]).map { CChar(bitPattern: $0) }
}

/// Creates a file holding "x" at raw path `path`.
func makeRawFile(_ path: [CChar]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    if fd >= 0 {
        _ = write(fd, "x", 1)
        close(fd)
    }
}

/// Runs `body` on a thread of its own and waits at most `seconds` for it. Nil when it did not
/// finish in time (the thread is left behind: only code under test that loops does that).
func finishing<T: Sendable>(within seconds: Double, _ body: @escaping @Sendable () -> T) -> T? {
    let result = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
        let value = body()
        result.withLock { $0 = value }
        done.signal()
    }
    guard done.wait(timeout: .now() + seconds) == .success else { return nil }
    return result.withLock { $0 }
}

/// A value shared with the threads a test starts.
final class Box<T: Sendable>: Sendable {
    private let storage: Mutex<T>
    init(_ v: T) { storage = Mutex(v) }
    var value: T { storage.withLock { $0 } }
    func set(_ v: T) { storage.withLock { $0 = v } }
}

extension SandboxTests {
    @Suite("Names that are not UTF-8", .serialized)
    struct RawNameTests {
        /// Every name as a file, and as a directory holding a file under every name, one level
        /// down and past the hoisting depth: removal takes the bytes as they are and finishes.
        @Test func removalTakesNamesThatAreNotUTF8AndFinishes() throws {
            let dir = scratchDirectory("raw-names")
            defer { removeTree(dir) }
            var deep = dir + "/deep"
            mkdir(deep, 0o755)
            for i in 0..<40 {
                deep += "/\(i)"
                mkdir(deep, 0o755)
            }
            for parent in [dir, deep] {
                for (i, name) in undecodableNames.enumerated() {
                    makeRawFile(rawPath(parent, name))
                    let sub = Array("d\(i)-".utf8) + name
                    mkdir(rawPath(parent, sub), 0o755)
                    for inner in undecodableNames {
                        makeRawFile(rawPath(parent, sub + [0x2F] + inner))
                    }
                }
            }
            #expect(((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).count == 2 * undecodableNames.count + 1)
            let outcome = finishing(within: 20) { "\(removeTree(dir))" }
            #expect(outcome == "removed", "removal did not finish (nil) or failed")
            #expect(access(dir, F_OK) != 0)
        }

        /// A tree that cannot be removed ends in `.failed` in bounded time, and the reaper moves on
        /// to the next tree.
        @Test func anUnremovableTreeFailsInsteadOfLooping() throws {
            let dir = scratchDirectory("unremovable")
            let mountPoint = dir + "/busy"
            mkdir(mountPoint, 0o755)
            // A mount point cannot be removed (EBUSY) even by root.
            guard mount("tmpfs", mountPoint, "tmpfs", 0, "size=64k") == 0 else {
                Issue.record("mount tmpfs: \(String(cString: strerror(errno)))")
                return
            }
            defer {
                umount2(mountPoint, Int32(MNT_DETACH))
                removeTree(dir)
            }
            _ = FileManager.default.createFile(atPath: mountPoint + "/f", contents: Data("x".utf8))
            let outcome = finishing(within: 20) { "\(removeTree(dir))" }
            #expect(outcome == "\(TreeRemoval.failed(EBUSY))")
            let next = scratchDirectory("after-unremovable")
            _ = FileManager.default.createFile(atPath: next + "/f", contents: Data("x".utf8))
            let reaper = TreeReaper(sliceEntries: 10)
            reaper.remove(dir)
            reaper.remove(next)
            #expect(finishing(within: 20) { reaper.waitUntilIdle(); return true } == true, "the reaper never became idle")
            #expect(access(next, F_OK) != 0)
        }

        /// End to end: a task that writes names that are not UTF-8 (files and directories, in
        /// out/ and beside it) returns, and its work directory is gone once the runner quiesces.
        @Test func aTaskWritingNamesThatAreNotUTF8LeavesNothingBehind() throws {
            try withSeparateRunner("raw-names-task") { runner, root in
                let work = Box<String?>(nil)
                let script = #"""
                for d in /task/out /task; do
                  printf y > "$d/$(printf 'bad\377')"; printf y > "$d/$(printf 'trail\303')"
                  printf y > "$d/$(printf 'over\300\257')"; printf y > "$d/$(printf 'bad\376')"
                  mkdir "$d/$(printf 'dir\377')"; printf y > "$d/$(printf 'dir\377')/$(printf 'in\377')"
                done
                echo done
                """#
                let outcome = finishing(within: 60) { () -> String in
                    do {
                        let r = try runner.run(sh(script), preferWarm: false, onStart: { s in work.set(s.sandbox.workdir) })
                        runner.quiesce()
                        return "\(r.stdout)|truncated \(r.truncated)|\(r.outputs.keys.sorted())"
                    } catch { return "\(error)" }
                }
                #expect(outcome == "done\n|truncated true|[]", "the run or its cleanup did not finish (nil), or failed")
                let dir = try #require(work.value)
                #expect(access(dir, F_OK) != 0, "the work directory survived")
                #expect(leftovers(root, runner).isEmpty)
            }
        }
    }

    @Suite("Output names as bytes")
    struct OutputNameTests {
        /// A name that is not UTF-8 cannot be a key of `outputs`: it is left out, and says so
        /// (the old walk looked up a decoded name, got ENOENT and dropped it silently).
        @Test func aNameThatIsNotUTF8IsLeftOutAndSetsTruncated() throws {
            let dir = scratchDirectory("out-raw")
            defer { removeTree(dir) }
            _ = FileManager.default.createFile(atPath: dir + "/good.txt", contents: Data("g".utf8))
            for name in undecodableNames { makeRawFile(rawPath(dir, name)) }
            mkdir(rawPath(dir, Array("sub".utf8) + [0xFF]), 0o755)
            makeRawFile(rawPath(dir, Array("sub".utf8) + [0xFF, 0x2F] + Array("inner.txt".utf8)))
            let c = collectOutputs(dir, bounds: OutputBounds(perFile: 1 << 20, total: 4 << 20))
            #expect(c.files == ["good.txt": "g"])
            #expect(c.truncated)
        }

        /// Two files whose names are the same once redacted: one is kept, and `truncated` says the
        /// other was left out (the old walk overwrote one with the other silently).
        @Test func twoNamesThatCollideAfterRedactionSetTruncated() throws {
            let dir = scratchDirectory("out-collide")
            defer { removeTree(dir) }
            let secret = "sk-collide-0123456789abcdef"
            _ = FileManager.default.createFile(atPath: dir + "/[REDACTED:TOKEN].txt", contents: Data("literal".utf8))
            _ = FileManager.default.createFile(atPath: dir + "/\(secret).txt", contents: Data("secret-named".utf8))
            let c = collectOutputs(dir, bounds: OutputBounds(perFile: 1 << 20, total: 4 << 20), secrets: SecretStore(values: ["TOKEN": secret]))
            #expect(c.files.count == 1 && c.files["[REDACTED:TOKEN].txt"] != nil, "\(c.files)")
            #expect(c.truncated)
        }

        /// A file within the depth bound whose full path is longer than PATH_MAX is still
        /// collected (the walk goes by descriptor); the old walk's lstat failed with
        /// ENAMETOOLONG and dropped it silently.
        @Test func aPathLongerThanPathMaxWithinTheDepthBoundIsCollected() throws {
            let dir = scratchDirectory("out-long")
            defer { removeTree(dir) }
            var fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            let long = String(repeating: "n", count: 255)
            for _ in 0..<15 {
                mkdirat(fd, long, 0o755)
                let next = openat(fd, long, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                close(fd)
                fd = next
            }
            let file = openat(fd, long, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
            _ = write(file, "deep", 4)
            close(file)
            close(fd)
            let key = Array(repeating: long, count: 16).joined(separator: "/")
            #expect(dir.utf8.count + 1 + key.utf8.count > Int(PATH_MAX))
            let c = collectOutputs(dir, bounds: OutputBounds(perFile: 1 << 20, total: 4 << 20))
            #expect(c.files.count == 1 && c.files[key] == "deep", "\(c.files.count) files, none under the expected name")
            #expect(!c.truncated)
        }
    }
}
