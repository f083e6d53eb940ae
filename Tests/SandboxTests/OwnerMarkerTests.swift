import Foundation
import Glibc
import Testing
@testable import StarlingSandbox

extension SandboxTests {
    @Suite("Sweeping what crashed runners left", .serialized)
    struct OwnerMarkerTests {
        /// Leftovers whose marker names a live PID with another start time (the PID was reused
        /// after the owner crashed) are swept, work directory and groups, also under a cgroup
        /// parent that is not the default; leftovers of a live owner are kept.
        @Test func aLeftoverOfAReusedPIDIsSweptAndALiveOwnersIsKept() throws {
            let unique = "sweep-\(SandboxRunner.newID())"
            let workRoot = "/dev/shm/starling-tests-\(unique)"
            let parent = "starling-tests-\(unique)"
            mkdir(workRoot, 0o700)
            let (_, roots) = try #require(Cgroup.layout)
            let groupRoots = Set(roots.values)
            defer {
                removeTree(workRoot)
                for root in groupRoots {
                    for pid in [1, getppid()] {
                        rmdir("\(root)/\(parent)/\(pid)/group")
                        rmdir("\(root)/\(parent)/\(pid)")
                    }
                }
                removeCgroupParent(parent)
            }
            // PID 1 is alive, but the marker says it started at another time: a crashed owner's.
            let reused = try #require(ProcessIdentity.of(1))
            let live = try #require(ProcessIdentity.of(getppid()))
            for (identity, marker) in [(reused, ProcessIdentity(pid: 1, startTime: reused.startTime + 12_345)), (live, live)] {
                let dir = "\(workRoot)/\(identity.pid)/sandbox"
                mkdir("\(workRoot)/\(identity.pid)", 0o700)
                mkdir(dir, 0o700)
                _ = FileManager.default.createFile(atPath: dir + "/left", contents: Data("x".utf8))
                _ = FileManager.default.createFile(atPath: OwnerMarker.path(workRoot: workRoot, owner: identity.pid),
                                                   contents: Data(marker.marker.utf8))
            }
            for root in groupRoots {
                for pid in [reused.pid, live.pid] {
                    mkdir("\(root)/\(parent)", 0o755)
                    mkdir("\(root)/\(parent)/\(pid)", 0o755)
                    mkdir("\(root)/\(parent)/\(pid)/group", 0o755)
                }
            }
            var configuration = SandboxConfiguration(nodeName: "test", workRoot: workRoot, initPath: initBinary(), policy: Policy(net: .host))
            configuration.cgroupParent = parent
            let runner = try SandboxRunner(configuration: configuration)
            runner.quiesce()
            #expect(access("\(workRoot)/1", F_OK) != 0, "the reused PID's work directory was kept")
            #expect(access(OwnerMarker.path(workRoot: workRoot, owner: 1), F_OK) != 0, "its marker was kept")
            for root in groupRoots {
                #expect(access("\(root)/\(parent)/1", F_OK) != 0, "its groups under \(root) were kept")
                #expect(access("\(root)/\(parent)/\(live.pid)/group", F_OK) == 0, "a live owner's groups were swept")
            }
            #expect(access("\(workRoot)/\(live.pid)/sandbox/left", F_OK) == 0, "a live owner's work directory was swept")
            #expect(OwnerMarker.read(workRoot: workRoot, owner: getpid()) == ProcessIdentity.of(getpid()), "the runner wrote no marker")
            runner.shutdown()
            #expect(access(OwnerMarker.path(workRoot: workRoot, owner: getpid()), F_OK) != 0, "a clean shutdown leaves no marker")
        }

        @Test func markersParseStrictly() {
            #expect(ProcessIdentity(marker: "12 345\n") == ProcessIdentity(pid: 12, startTime: 345))
            for bad in ["", "12", "x 1", "-1 5", "0 5", "1 2 3", "12 -3"] { #expect(ProcessIdentity(marker: bad) == nil, "\(bad)") }
        }
    }
}
