import Foundation
import Glibc
import Synchronization
import Testing
@testable import StarlingSandbox

/// Builds, under `dir`, the kind of tree a hostile task leaves: directories mode 000 and 0500
/// holding files, a symbolic link to a host file, and nesting deeper than removal descends.
func buildHostileTree(in dir: String, hostFile: String) {
    mkdir(dir + "/locked", 0o755)
    mkdir(dir + "/locked/inner", 0o755)
    FileManager.default.createFile(atPath: dir + "/locked/inner/f", contents: Data("x".utf8))
    FileManager.default.createFile(atPath: dir + "/locked/g", contents: Data("y".utf8))
    mkdir(dir + "/readonly", 0o755)
    FileManager.default.createFile(atPath: dir + "/readonly/h", contents: Data("z".utf8))
    symlink(hostFile, dir + "/locked/link-to-host")
    var deep = dir + "/deep"
    mkdir(deep, 0o755)
    for i in 0..<100 {
        deep += "/\(i)"
        mkdir(deep, 0o755)
    }
    chmod(deep, 0o000)
    chmod(dir + "/locked/inner", 0o000)
    chmod(dir + "/locked", 0o000)
    chmod(dir + "/readonly", 0o500)
}

/// Runs `body` on a thread of its own whose file-system identity is `uid`/`gid` (setfsuid is
/// per thread, and drops the capabilities that let root ignore file modes), so a test can act
/// as a node that does not run as root without touching the rest of this process.
func asUser<T: Sendable>(_ uid: UInt32, _ gid: UInt32, _ body: @escaping @Sendable () -> T) -> T {
    typealias SetFS = @convention(c) (UInt32) -> Int32
    let setfsuid = unsafeBitCast(dlsym(nil, "setfsuid"), to: SetFS.self)
    let setfsgid = unsafeBitCast(dlsym(nil, "setfsgid"), to: SetFS.self)
    let result = Mutex<T?>(nil)
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        _ = setfsgid(gid)
        _ = setfsuid(uid)
        let value = body()
        _ = setfsuid(0)
        _ = setfsgid(0)
        result.withLock { $0 = value }
        done.signal()
    }
    thread.start()
    done.wait()
    return result.withLock { $0! }
}

/// Nested in `SandboxTests`, whose `.serialized` reaches its nested suites: these tests load the
/// CPU (100,000s of directories, memory fills), and the outer suite's CPU-time checks must not
/// compete with them.
extension SandboxTests {
    @Suite("Tree removal", .serialized)
    struct TreeRemovalTests {
        @Test func removalSurvivesChmod000AndNeverFollowsLinks() throws {
            let hostFile = "/dev/shm/starling-test-host-\(SandboxRunner.newID())"
            FileManager.default.createFile(atPath: hostFile, contents: Data("host".utf8), attributes: [.posixPermissions: 0o644])
            defer { unlink(hostFile) }
            let dir = scratchDirectory("tree")
            buildHostileTree(in: dir, hostFile: hostFile)
            #expect(removeTree(dir) == .removed)
            #expect(access(dir, F_OK) != 0)
            var st = stat()
            #expect(stat(hostFile, &st) == 0 && st.st_mode & 0o777 == 0o644, "the link's target is untouched")
        }

        @Test func removalSurvivesChmod000WhenTheNodeIsNotRoot() throws {
            let hostFile = "/dev/shm/starling-test-host-\(SandboxRunner.newID())"
            FileManager.default.createFile(atPath: hostFile, contents: Data("host".utf8), attributes: [.posixPermissions: 0o600])
            defer { unlink(hostFile) }
            let dir = scratchDirectory("tree-nonroot")
            defer { removeTree(dir) }  // as root, whatever the outcome
            chown(dir, 65534, 65534)
            // The tree is made and removed by the unprivileged user, as a node not running as root would.
            let outcome = asUser(65534, 65534) { () -> String in
                buildHostileTree(in: dir, hostFile: hostFile)
                var st = stat()  // not access(2): it checks the real uid, not the file-system one
                guard stat(dir + "/locked/g", &st) != 0, errno == EACCES else { return "the test user is not unprivileged: it sees through mode 000" }
                return "\(removeTree(dir))"
            }
            #expect(outcome == "removed")
            #expect(access(dir, F_OK) != 0)
            var st = stat()
            #expect(stat(hostFile, &st) == 0 && st.st_uid == 0 && st.st_mode & 0o777 == 0o600)
        }

        @Test func aHugeTreeDoesNotDelayTheRemovalOfLaterSandboxes() throws {
            try withSeparateRunner("huge-tree") { runner, root in
                let huge = Mutex<String?>(nil)
                let h = try runner.run(TaskSpec(argv: ["python3", "-c", "import os\nfor i in range(200000): os.mkdir(f'junk{i}')"],
                                                timeoutSeconds: 60, memoryMB: 1024),
                                       preferWarm: false, onStart: { huge.withLock { [w = $0.sandbox.workdir] in $0 = w } })
                #expect(h.exitCode == 0, "\(h.stderr)")
                let hugeDir = huge.withLock { $0 }!
                // Small tasks right behind it: their work directories go within a second each, while
                // the huge one is still being removed.
                var stillRemovingHuge = 0
                for _ in 0..<3 {
                    let small = Mutex<String?>(nil)
                    let r = try runner.run(sh("echo small > out/s"), preferWarm: false,
                                           onStart: { small.withLock { [w = $0.sandbox.workdir] in $0 = w } })
                    #expect(r.outputs["s"] == "small\n")
                    let dir = small.withLock { $0 }!
                    #expect(eventually(within: 1) { access(dir, F_OK) != 0 }, "a small sandbox waited behind a huge tree")
                    if access(hugeDir, F_OK) == 0 { stillRemovingHuge += 1 }
                }
                #expect(stillRemovingHuge > 0, "the huge tree went too fast to show anything: make it bigger")
                runner.quiesce()
                #expect(access(hugeDir, F_OK) != 0)
                #expect(leftovers(root, runner).isEmpty)
            }
        }
    }
}

/// Makes `top/c0/c1/.../c31` (whose entries lie at the hoisting depth) and returns the last.
private func chainToHoistingDepth(under top: String) -> String {
    var path = top
    for i in 0..<32 {
        path += "/c\(i)"
        mkdir(path, 0o755)
    }
    return path
}

extension SandboxTests.TreeRemovalTests {
    /// Moving a directory up costs budget like removing one: a directory at the hoisting depth
    /// with 1,000 subdirectories is not moved up all at once in a slice of 50.
    @Test func movingDirectoriesUpIsChargedToTheBudget() {
        let dir = scratchDirectory("hoist-budget")
        defer { removeTree(dir) }
        let bottom = chainToHoistingDepth(under: dir)
        for i in 0..<1_000 { mkdir("\(bottom)/s\(i)", 0o755) }
        #expect(removeTree(dir, budget: 50) == .unfinished)
        let left = ((try? FileManager.default.contentsOfDirectory(atPath: bottom)) ?? []).count
        #expect(left >= 950, "\(left) of 1,000 left: more than the budget was moved in one slice")
        #expect(removeTree(dir) == .removed)
    }

    /// Directories a task planted under the names removal used to give moved directories
    /// (`.starling-hoisted-1`, 2, ...) neither block nor get replaced by a move: the move takes a
    /// random name and never replaces anything.
    @Test func plantedHoistNamesDoNotBlockRemoval() throws {
        let dir = scratchDirectory("hoist-planted")
        defer { removeTree(dir) }
        for i in 1...3_000 {
            mkdir("\(dir)/.starling-hoisted-\(i)", 0o755)
            _ = FileManager.default.createFile(atPath: "\(dir)/.starling-hoisted-\(i)/keep", contents: Data("k".utf8))
        }
        let bottom = chainToHoistingDepth(under: dir)
        mkdir(bottom + "/leaf", 0o755)
        // This kernel's tmpfs lists the newest entry first: the chain is reached before the
        // planted names, so one unit of budget goes to moving the leaf up.
        let first = try #require(firstListed(dir))
        try #require(first == "c0", "the listing order this test relies on changed: \(first) first")
        #expect(removeTree(dir, budget: 1) == .unfinished)
        #expect(access(bottom + "/leaf", F_OK) != 0, "the leaf was not moved up: its move failed on a planted name")
        let moved = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter {
            $0.hasPrefix(".starling-hoisted-") && $0.count == ".starling-hoisted-".count + 16  // planted ones are shorter
        }
        #expect(moved.count == 1, "\(moved)")
        for i in 1...3_000 { #expect(access("\(dir)/.starling-hoisted-\(i)/keep", F_OK) == 0) }
        #expect(removeTree(dir) == .removed)
    }
}

/// The first name `readdir` gives for `dir` (not . or ..).
private func firstListed(_ dir: String) -> String? {
    guard let d = opendir(dir) else { return nil }
    defer { closedir(d) }
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { return name }
    }
    return nil
}

