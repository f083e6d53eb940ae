@testable import StarlingRuntime

/// Threads for the in-process servers that stand in for other nodes (the holder a request is
/// forwarded to). A real other node is another process, with a concurrency pool of its own; on
/// this test process's pool, which the other suites of a run can hold for seconds (CPU-bound
/// runs, tests waiting on processes), the stand-in's answer missed the forwarder's deadline or
/// the socket's lookup timeout, and the test failed for a reason no deployment has.
let otherNodeThreads = ThreadExecutor(threads: 2, name: "test-other-nodes")

/// Threads for a test's own tasks when the test times something else (a node's loop): a task of
/// the test that waits for a thread of the process's pool would be measured as the thing it
/// watches being slow.
let measuringThreads = ThreadExecutor(threads: 2, name: "test-measuring")
