import Foundation
import Glibc
import Testing
@testable import StarlingSandbox

extension SandboxTests {
    @Suite("Sweeping what crashed runners left", .serialized)
    struct OwnerMarkerTests {
        /// Work-directory leftovers whose marker names a live PID with another start time (the
        /// PID was reused after the owner crashed) are swept. Groups are judged by their owner
        /// directory's name alone: a stale marker for PID 1 in this work root must not kill the
        /// groups (and tasks) of the process that has PID 1 now, whatever work root it uses;
        /// groups of an owner that is gone (`<pid>-<other start>`, or a bare `<pid>` nobody has)
        /// are swept, their processes killed, also under a cgroup parent that is not the default.
        @Test func aLeftoverOfAReusedPIDIsSweptAndALiveOwnersIsKept() throws {
            let unique = "sweep-\(SandboxRunner.newID())"
            let workRoot = "/dev/shm/starling-tests-\(unique)"
            let parent = "starling-tests-\(unique)"
            mkdir(workRoot, 0o700)
            let (version, roots) = try #require(Cgroup.layout)
            let groupRoots = Set(roots.values)
            let reused = try #require(ProcessIdentity.of(1))
            let live = try #require(ProcessIdentity.of(getppid()))
            // A bare PID no process has: a child's, reaped.
            let vanished = Process()
            vanished.executableURL = URL(fileURLWithPath: "/bin/true")
            try vanished.run()
            vanished.waitUntilExit()
            let goneLegacy = vanished.processIdentifier
            let kept = ["\(reused.pid)-\(reused.startTime)", "\(reused.pid)", live.ownerName]
            let swept = ["\(reused.pid)-\(reused.startTime + 12_345)", "\(live.pid)-\(live.startTime + 1)", "\(goneLegacy)"]
            // One real process in a live owner's group and one in a gone owner's.
            var sleepers: [Process] = []
            defer {
                for sleeper in sleepers where sleeper.isRunning { kill(sleeper.processIdentifier, SIGKILL) }
                for sleeper in sleepers { sleeper.waitUntilExit() }
                removeTree(workRoot)
                for root in groupRoots {
                    for owner in kept + swept {
                        rmdir("\(root)/\(parent)/\(owner)/group")
                        rmdir("\(root)/\(parent)/\(owner)")
                    }
                }
                removeCgroupParent(parent)
            }
            for (identity, marker) in [(reused, ProcessIdentity(pid: 1, startTime: reused.startTime + 12_345)), (live, live)] {
                let dir = "\(workRoot)/\(identity.pid)/sandbox"
                mkdir("\(workRoot)/\(identity.pid)", 0o700)
                mkdir(dir, 0o700)
                _ = FileManager.default.createFile(atPath: dir + "/left", contents: Data("x".utf8))
                _ = FileManager.default.createFile(atPath: OwnerMarker.path(workRoot: workRoot, owner: identity.pid),
                                                   contents: Data(marker.marker.utf8))
            }
            for root in groupRoots {
                mkdir("\(root)/\(parent)", 0o755)
                if version == .v2 { try? Cgroup.write("+memory +cpu +pids", to: "\(root)/\(parent)/cgroup.subtree_control") }
                for owner in kept + swept {
                    mkdir("\(root)/\(parent)/\(owner)", 0o755)
                    mkdir("\(root)/\(parent)/\(owner)/group", 0o755)
                }
            }
            for owner in [kept[0], swept[0]] {
                let sleeper = Process()
                sleeper.executableURL = URL(fileURLWithPath: "/bin/sleep")
                sleeper.arguments = ["600"]
                try sleeper.run()
                sleepers.append(sleeper)
                for root in groupRoots {
                    try Cgroup.write(String(sleeper.processIdentifier), to: "\(root)/\(parent)/\(owner)/group/cgroup.procs")
                }
            }
            var configuration = SandboxConfiguration(nodeName: "test", workRoot: workRoot, initPath: initBinary(), policy: Policy(net: .host))
            configuration.cgroupParent = parent
            let runner = try SandboxRunner(configuration: configuration)
            runner.quiesce()
            #expect(access("\(workRoot)/1", F_OK) != 0, "the reused PID's work directory was kept")
            #expect(access(OwnerMarker.path(workRoot: workRoot, owner: 1), F_OK) != 0, "its marker was kept")
            for root in groupRoots {
                for owner in swept { #expect(access("\(root)/\(parent)/\(owner)", F_OK) != 0, "gone owner \(owner)'s groups under \(root) were kept") }
                for owner in kept { #expect(access("\(root)/\(parent)/\(owner)/group", F_OK) == 0, "live owner \(owner)'s groups under \(root) were swept") }
            }
            let killedBy = Date().addingTimeInterval(10)
            while sleepers[1].isRunning && Date() < killedBy { usleep(10_000) }
            #expect(!sleepers[1].isRunning, "a gone owner's task was left running")
            #expect(sleepers[0].isRunning, "a live owner's task was killed on the strength of another runner's stale marker")
            #expect(access("\(workRoot)/\(live.pid)/sandbox/left", F_OK) == 0, "a live owner's work directory was swept")
            #expect(OwnerMarker.read(workRoot: workRoot, owner: getpid()) == ProcessIdentity.of(getpid()), "the runner wrote no marker")
            runner.shutdown()
            #expect(access(OwnerMarker.path(workRoot: workRoot, owner: getpid()), F_OK) != 0, "a clean shutdown leaves no marker")
        }

        @Test func ownerGroupsAreNamedByPIDAndStartTime() throws {
            let me = try #require(ProcessIdentity.of(getpid()))
            #expect(Cgroup.ownerName == "\(getpid())-\(me.startTime)")
            #expect(CgroupOwner(directoryName: Cgroup.ownerName)?.isGone == false)
        }

        /// A process's name is any bytes: one that is not UTF-8 must not hide its start time (a
        /// live runner so named would otherwise look gone, and its work directory be swept).
        @Test func aProcessWhoseNameIsNotUTF8HasAnIdentity() throws {
            let named = Process()
            named.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
            named.arguments = ["-c", "import ctypes, sys, time\nctypes.CDLL(None).prctl(15, b'a) \\xff\\xfe', 0, 0, 0)\nprint('named', flush=True)\ntime.sleep(600)"]
            let ready = Foundation.Pipe()
            named.standardOutput = ready
            try named.run()
            defer {
                if named.isRunning { kill(named.processIdentifier, SIGKILL) }
                named.waitUntilExit()
            }
            let line = ready.fileHandleForReading.availableData
            try #require(String(decoding: line, as: UTF8.self).hasPrefix("named"))
            let stat = try #require(FileManager.default.contents(atPath: "/proc/\(named.processIdentifier)/stat"))
            try #require(String(data: stat, encoding: .utf8) == nil, "the name did not take")
            let identity = try #require(ProcessIdentity.of(named.processIdentifier))
            #expect(identity.startTime > 0)
            #expect(CgroupOwner.identified(identity).isGone == false)
        }

        @Test func ownerNamesParseStrictly() {
            #expect(CgroupOwner(directoryName: "12-345") == .identified(ProcessIdentity(pid: 12, startTime: 345)))
            #expect(CgroupOwner(directoryName: "12") == .legacy(12))
            for bad in ["", "-", "12-", "-345", "0", "0-5", "+12", "12-+5", "-1", "1-2-3", "x", "12 ", "١٢", "99999999999", "group"] {
                #expect(CgroupOwner(directoryName: bad) == nil, "\(bad)")
            }
        }

        /// A `cgroup.procs` read from another PID namespace shows 0 for processes outside it:
        /// nothing that would make kill() signal a group (0) or everything (-1) may come out.
        @Test func procsFilesYieldOnlyPositivePIDs() {
            let text = "0\n17\n-1\n\n  23\n42x\n+5\n2147483648\n\u{0}\n99\n0\n"
            #expect(Cgroup.signallableProcessIDs(in: text) == [17, 99])
            #expect(Cgroup.signallableProcessIDs(in: "0\n0\n").isEmpty)
            #expect(Cgroup.signallableProcessIDs(in: "").isEmpty)
        }

        @Test func markersParseStrictly() {
            #expect(ProcessIdentity(marker: "12 345\n") == ProcessIdentity(pid: 12, startTime: 345))
            for bad in ["", "12", "x 1", "-1 5", "0 5", "1 2 3", "12 -3"] { #expect(ProcessIdentity(marker: bad) == nil, "\(bad)") }
        }
    }
}
