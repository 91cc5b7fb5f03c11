import Dispatch
import Foundation
import Glibc

/// Drives one ChimeraX process through its lifecycle on the reactor: the state machine decides, this
/// performs (probes, signals, timers) and reports status changes and the end.
public final class SessionRunner: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is touched only on `reactor`'s thread.
    public let id: String
    public let process: ChimeraXProcess
    public private(set) var lifecycle: SessionLifecycle
    private let reactor: Reactor
    private var deadlineTimer: UInt64?
    private var keepAlive: SessionRunner?

    public var onStatus: ((SessionStatus) -> Void)?
    /// The end: final status, reason, how the process ended, the stderr tail, and descendants that
    /// survived SIGKILL (should be none).
    public var onEnded: ((SessionStatus, TerminationReason, ProcessExit?, [String], [pid_t]) -> Void)?
    public var onLine: ((String, Bool) -> Void)?
    /// A stream paused (stderr: true for stderr).
    public var onDrained: ((Bool) -> Void)?

    public var status: SessionStatus { lifecycle.status }
    public var port: UInt16? { lifecycle.port }

    public init(id: String, process: ChimeraXProcess, startTimeout: Double, stopGrace: Double, reactor: Reactor) {
        self.id = id
        self.process = process
        self.reactor = reactor
        lifecycle = SessionLifecycle(startTimeout: startTimeout, stopGrace: stopGrace)
    }

    /// Reactor thread.
    public func start() {
        // The runner keeps itself alive until the end is reported: timers and callbacks may still be due.
        keepAlive = self
        process.onLine = { [weak self] line, isErr in
            guard let self else { return }
            onLine?(line, isErr)
            if !isErr, lifecycle.status == .starting, lifecycle.port == nil, let p = process.stdout.port {
                perform(lifecycle.handle(.portAnnounced(port: p, at: Reactor.now())))
            }
        }
        process.onDrained = { [weak self] isErr in self?.onDrained?(isErr) }
        process.onExit = { [weak self] e in
            guard let self else { return }
            // OOM: the kernel's SIGKILL while the memory limit was reached is reported by the accounting
            // backend; with rlimits, an allocation failure ends the process in its own way.
            perform(lifecycle.handle(.exited(e, oomKilled: false, at: Reactor.now())))
        }
        process.attach()
        perform(lifecycle.handle(.spawned(at: Reactor.now())))
        armDeadline()
    }

    /// Asks the session to stop for `reason`. Reactor thread.
    public func stop(_ reason: TerminationReason) {
        perform(lifecycle.handle(.stop(reason, at: Reactor.now())))
    }

    /// Accounting from a fresh process table: usage over the whole tree (descendants that left the group or
    /// lost their parent included). Over `memoryLimit` bytes resident, the session is killed for
    /// `out_of_memory`. Reactor thread.
    public func sample(_ table: ProcessTable, memoryLimit: Int) -> TreeUsage {
        let u = process.usage(from: table)
        if memoryLimit > 0, u.rssBytes > memoryLimit, !lifecycle.status.isEnded {
            perform(lifecycle.handle(.memoryLimitReached(at: Reactor.now())))
        }
        return u
    }

    public func commandStarted() { perform(lifecycle.handle(.commandStarted)) }
    public func commandFinished() { perform(lifecycle.handle(.commandFinished)) }

    private func armDeadline() {
        if let t = deadlineTimer { reactor.cancel(t) }
        deadlineTimer = nil
        guard let at = lifecycle.nextDeadline, at.isFinite else { return }
        deadlineTimer = reactor.schedule(at: at) { [weak self] in
            guard let self else { return }
            deadlineTimer = nil
            perform(lifecycle.handle(.tick(at: Reactor.now())))
        }
    }

    private func perform(_ actions: [SessionLifecycle.Action]) {
        for a in actions {
            switch a {
            case .probe(let port, let at):
                // On the reactor, without a thread: a non-blocking GET /cmdline.html (inside the session's
                // network namespace when it has one).
                reactor.schedule(at: at) { [weak self] in
                    guard let self else { return }
                    RESTExchange.start(port: port, path: "/cmdline.html", timeout: 2, namespace: process.network, reactor: reactor) { [weak self] outcome in
                        guard let self else { return }
                        let ok: Bool
                        if case .reply(let r) = outcome { ok = r.status == 200 } else { ok = false }
                        perform(lifecycle.handle(ok ? .probeSucceeded(at: Reactor.now()) : .probeFailed(at: Reactor.now())))
                    }
                }
            case .terminate:
                process.closeStdin()
                process.signalAll(SIGTERM)
            case .kill:
                process.signalAll(SIGKILL)
            case .statusChanged(let s):
                onStatus?(s)
            case .ended(let status, let reason, let exit):
                // The main process is gone; nothing it started may outlive it. SIGKILL takes a moment to land:
                // look for survivors shortly after.
                process.signalAll(SIGKILL)
                reactor.schedule(at: Reactor.now() + 0.05) { [weak self] in
                    guard let self else { return }
                    let survivors = process.liveDescendants().filter { isAlive($0) }
                    for p in survivors { kill(p, SIGKILL) }
                    onEnded?(status, reason, exit, process.stderr.tail, survivors)
                    keepAlive = nil
                }
            }
        }
        armDeadline()
    }

    /// Alive and not a zombie.
    private func isAlive(_ pid: pid_t) -> Bool {
        guard let st = ProcStat.read(pid) else { return false }
        return !st.isZombie
    }
}
