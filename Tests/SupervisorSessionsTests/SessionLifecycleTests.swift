import Testing
@testable import SupervisorSessions

@Suite("Session lifecycle")
struct SessionLifecycleTests {
    func started(_ timeout: Double = 120, grace: Double = 10) -> SessionLifecycle {
        var l = SessionLifecycle(startTimeout: timeout, stopGrace: grace, probeInterval: 0.5)
        #expect(l.handle(.spawned(at: 100)) == [])
        return l
    }

    @Test func readyNeedsThePortLineAndAnAnsweringRESTServer() {
        var l = started()
        #expect(l.status == .starting && l.nextDeadline == 220)
        #expect(l.handle(.probeSucceeded(at: 101)) == [], "no probe before the port is known")
        #expect(l.handle(.portAnnounced(port: 34719, at: 102)) == [.probe(port: 34719, at: 102)])
        #expect(l.handle(.portAnnounced(port: 1, at: 102)) == [], "only the first port line counts")
        #expect(l.handle(.probeFailed(at: 102.1)) == [.probe(port: 34719, at: 102.6)], "probe again a little later")
        #expect(l.handle(.probeSucceeded(at: 102.7)) == [.statusChanged(.ready)])
        #expect(l.status == .ready && l.readyAt == 102.7 && l.nextDeadline == nil)
    }

    @Test func commandsMakeItBusyUntilTheLastOneFinishes() {
        var l = started()
        _ = l.handle(.portAnnounced(port: 5, at: 101))
        _ = l.handle(.probeSucceeded(at: 101))
        #expect(l.handle(.commandStarted) == [.statusChanged(.busy)])
        #expect(l.handle(.commandStarted) == [])
        #expect(l.handle(.commandFinished) == [])
        #expect(l.status == .busy)
        #expect(l.handle(.commandFinished) == [.statusChanged(.ready)])
        #expect(l.handle(.commandFinished) == [], "an extra finish changes nothing")
    }

    @Test func overTheMemoryLimitItIsKilledAtOnceAndEndsOutOfMemory() {
        var l = started()
        _ = l.handle(.portAnnounced(port: 5, at: 101))
        _ = l.handle(.probeSucceeded(at: 101))
        #expect(l.handle(.memoryLimitReached(at: 150)) == [.statusChanged(.stopping), .kill], "no SIGTERM grace")
        #expect(l.handle(.memoryLimitReached(at: 151)) == [], "killed once")
        #expect(l.nextDeadline == nil)
        #expect(l.handle(.exited(ProcessExit(code: nil, signal: 9), oomKilled: false, at: 151)) == [.ended(.failed, .outOfMemory, ProcessExit(code: nil, signal: 9))])

        // Already stopping for its own reason: killed now, and it keeps that reason.
        var s = started(grace: 10)
        _ = s.handle(.stop(.userRequest, at: 110))
        #expect(s.handle(.memoryLimitReached(at: 111)) == [.kill])
        #expect(s.handle(.tick(at: 125)) == [], "the SIGKILL deadline is spent")
        #expect(s.handle(.exited(ProcessExit(code: nil, signal: 9), oomKilled: false, at: 112)) == [.ended(.terminated, .userRequest, ProcessExit(code: nil, signal: 9))])
    }

    @Test func theStartTimeoutStopsItAndItEndsFailed() {
        var l = started(30, grace: 5)
        #expect(l.handle(.tick(at: 129.9)) == [])
        #expect(l.handle(.tick(at: 130)) == [.statusChanged(.stopping), .terminate])
        #expect(l.nextDeadline == 135)
        #expect(l.handle(.tick(at: 134)) == [])
        #expect(l.handle(.tick(at: 135)) == [.kill])
        #expect(l.handle(.tick(at: 136)) == [], "SIGKILL once")
        let e = ProcessExit(code: nil, signal: 9)
        #expect(l.handle(.exited(e, oomKilled: false, at: 135.1)) == [.ended(.failed, .startTimeout, e)])
        #expect(l.status == .failed && l.endReason == .startTimeout && e.signalName == "SIGKILL")
        #expect(l.handle(.stop(.userRequest, at: 200)) == [], "ended is final")
    }

    @Test func anUnexpectedExitIsACrashAndAnOOMKillIsOutOfMemory() {
        var a = started()
        _ = a.handle(.portAnnounced(port: 5, at: 101))
        _ = a.handle(.probeSucceeded(at: 101))
        let segv = ProcessExit(code: nil, signal: 11)
        #expect(a.handle(.exited(segv, oomKilled: false, at: 150)) == [.ended(.failed, .crashed, segv)])
        #expect(segv.signalName == "SIGSEGV")
        var b = started()
        let code = ProcessExit(code: 70, signal: nil)
        #expect(b.handle(.exited(code, oomKilled: false, at: 101)) == [.ended(.failed, .crashed, code)], "died while starting")
        var c = started()
        let killed = ProcessExit(code: nil, signal: 9)
        #expect(c.handle(.exited(killed, oomKilled: true, at: 101)) == [.ended(.failed, .outOfMemory, killed)])
    }

    @Test func aRequestedStopEndsWithItsReasonWhateverTheExit() {
        for reason in [TerminationReason.userRequest, .idleTimeout, .maxLifetime, .admin, .logout, .supervisorShutdown, .finalized] {
            var l = started()
            _ = l.handle(.portAnnounced(port: 5, at: 101))
            _ = l.handle(.probeSucceeded(at: 101))
            #expect(l.handle(.stop(reason, at: 300)) == [.statusChanged(.stopping), .terminate])
            #expect(l.handle(.stop(.admin, at: 301)) == [], "a second stop does not restart the grace period")
            let e = ProcessExit(code: nil, signal: 15)
            #expect(l.handle(.exited(e, oomKilled: false, at: 302)) == [.ended(reason.endStatus, reason, e)])
            #expect(l.status == (reason == .finalized ? .finalized : .terminated))
        }
        #expect(TerminationReason.crashed.endStatus == .failed && TerminationReason.outOfMemory.endStatus == .failed)
    }

    @Test func aProcessIgnoringSIGTERMGetsSIGKILLAfterTheGrace() {
        var l = started(120, grace: 10)
        _ = l.handle(.portAnnounced(port: 5, at: 101))
        _ = l.handle(.probeSucceeded(at: 101))
        _ = l.handle(.stop(.userRequest, at: 200))
        #expect(l.handle(.tick(at: 209.99)) == [])
        #expect(l.handle(.tick(at: 210)) == [.kill])
        #expect(l.handle(.exited(ProcessExit(code: nil, signal: 9), oomKilled: false, at: 210.01)).first == .ended(.terminated, .userRequest, ProcessExit(code: nil, signal: 9)))
    }
}
