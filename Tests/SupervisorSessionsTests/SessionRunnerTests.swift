import Foundation
import Glibc
import Synchronization
import Testing
import TestSupport
@testable import SupervisorSessions

/// The stand-in ChimeraX of this repository.
let standIn = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/chimerax-standin/ChimeraX").path

/// What the tests watch a runner do, filled on the reactor thread and read from the test's.
private final class Observed: Sendable {
    let statuses = Mutex<[SessionStatus]>([])
    let ended = Mutex<(SessionStatus, TerminationReason, ProcessExit?, [String], [pid_t])?>(nil)
    let lines = Mutex<[String]>([])

    func waitEnded(_ timeout: Double = 20) -> (SessionStatus, TerminationReason, ProcessExit?, [String], [pid_t])? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let e = ended.withLock({ $0 }) { return e }
            usleep(10_000)
        }
        return nil
    }

    func waitStatus(_ s: SessionStatus, _ timeout: Double = 20) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if statuses.withLock({ $0.contains(s) }) { return true }
            usleep(10_000)
        }
        return false
    }
}

private func launch(_ reactor: Reactor, fault: String? = nil, startTimeout: Double = 20, grace: Double = 1) throws -> (SessionRunner, Observed) {
    let dir = DaemonProcess.makeTempDirectory()
    var env = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": dir, "CHIMERAX_START": dir]
    if let fault { env["CHIMERAX_STANDIN_FAULT"] = fault }
    let p = try ChimeraXProcess(executable: standIn, arguments: ["--nogui", "--offscreen", "--cmd", "remotecontrol rest start port 0 json true"],
                                environment: env, directory: dir, reactor: reactor)
    let runner = SessionRunner(id: "t", process: p, startTimeout: startTimeout, stopGrace: grace, reactor: reactor)
    let seen = Observed()
    runner.onStatus = { s in seen.statuses.withLock { $0.append(s) } }
    runner.onEnded = { s, r, e, tail, survivors in seen.ended.withLock { $0 = (s, r, e, tail, survivors) } }
    runner.onLine = { l, _ in seen.lines.withLock { $0.append(l) } }
    reactor.execute { runner.start() }
    return (runner, seen)
}

private func alive(_ pid: pid_t) -> Bool {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return false }
    return text[text.index(close, offsetBy: 2)...].prefix(1) != "Z"
}

@Suite("Session runner with the stand-in", .serialized)
struct SessionRunnerTests {
    let reactor: Reactor

    init() throws {
        reactor = try Reactor()
        reactor.start(name: "test-reactor")
    }

    @Test func startsReadyAnswersRESTAndStopsOnRequest() throws {
        let (runner, seen) = try launch(reactor)
        #expect(seen.waitStatus(.ready), "never ready: \(seen.lines.withLock { $0 })")
        let port = try #require(runner.port)
        let reply = try #require(RESTClient.get(port: port, path: "/run?command=version", timeout: 5))
        #expect(reply.status == 200 && String(decoding: reply.body, as: UTF8.self).contains("\"error\": null"))
        #expect(seen.lines.withLock { $0 }.contains { $0.contains("Executing: remotecontrol rest start port 0") })
        reactor.execute { runner.stop(.userRequest) }
        let end = try #require(seen.waitEnded())
        #expect(end.0 == .terminated && end.1 == .userRequest && end.4.isEmpty)
        #expect(!alive(runner.process.pid))
        #expect(seen.statuses.withLock { $0 } == [.ready, .stopping])
    }

    @Test func neverReadyFailsWithStartTimeoutAndTheProcessIsGone() throws {
        let (runner, seen) = try launch(reactor, fault: "never-ready", startTimeout: 1)
        let end = try #require(seen.waitEnded())
        #expect(end.0 == .failed && end.1 == .startTimeout)
        #expect(!alive(runner.process.pid))
    }

    @Test func aCrashIsFailedCrashedWithTheSignal() throws {
        let (runner, seen) = try launch(reactor, fault: "crash-after:0.5")
        let end = try #require(seen.waitEnded(), "statuses \(seen.statuses.withLock { $0 }), lines \(seen.lines.withLock { $0 }), alive \(alive(runner.process.pid))")
        #expect(end.0 == .failed && end.1 == .crashed && end.2?.signalName == "SIGSEGV", "\(String(describing: end.2))")
    }

    @Test func ignoringSIGTERMEndsBySIGKILLAfterTheGrace() throws {
        let (runner, seen) = try launch(reactor, fault: "ignore-sigterm", grace: 0.5)
        #expect(seen.waitStatus(.ready))
        let t0 = Date()
        reactor.execute { runner.stop(.idleTimeout) }
        let end = try #require(seen.waitEnded())
        #expect(end.0 == .terminated && end.1 == .idleTimeout && end.2?.signal == SIGKILL)
        #expect(Date().timeIntervalSince(t0) >= 0.5)
    }

    @Test func aGrandchildThatCalledSetsidIsFoundAndKilled() throws {
        let (runner, seen) = try launch(reactor, fault: "fork-orphan")
        #expect(seen.waitStatus(.ready))
        // The orphan is in a session of its own, out of the process group.
        var orphan: pid_t?
        for _ in 0..<100 where orphan == nil {
            reactor.execute { runner.process.refreshDescendants() }
            usleep(20_000)
            orphan = runner.process.descendants.keys.first
        }
        let o = try #require(orphan, "the forked child was not seen")
        #expect(alive(o))
        reactor.execute { runner.stop(.userRequest) }
        let end = try #require(seen.waitEnded())
        #expect(end.4.isEmpty, "survivors: \(end.4)")
        usleep(100_000)
        #expect(!alive(o), "the setsid grandchild outlived the session")
    }
}
