/// Why a session ended (API.md §4). The status follows from it.
public enum TerminationReason: String, Sendable, CaseIterable {
    case userRequest = "user_request"
    case idleTimeout = "idle_timeout"
    case maxLifetime = "max_lifetime"
    case admin
    case crashed
    case startTimeout = "start_timeout"
    case outOfMemory = "out_of_memory"
    case logout
    case supervisorShutdown = "supervisor_shutdown"
    case finalized

    /// `failed` for crashes, start timeouts and OOM kills; `finalized` for finalize; else `terminated`.
    public var endStatus: SessionStatus {
        switch self {
        case .crashed, .startTimeout, .outOfMemory: return .failed
        case .finalized: return .finalized
        default: return .terminated
        }
    }
}

public enum SessionStatus: String, Sendable, CaseIterable {
    case starting, ready, busy, stopping, terminated, failed, finalized

    public var isEnded: Bool { self == .terminated || self == .failed || self == .finalized }
}

/// How the process ended: an exit code, or the signal that killed it.
public struct ProcessExit: Sendable, Equatable {
    public let code: Int32?
    public let signal: Int32?

    public init(code: Int32?, signal: Int32?) {
        self.code = code
        self.signal = signal
    }

    /// `SIGKILL`, `SIGSEGV`… as API.md shows them.
    public var signalName: String? {
        guard let s = signal else { return nil }
        let names: [Int32: String] = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS", 8: "SIGFPE",
                                      9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ"]
        return names[s] ?? "SIG\(s)"
    }
}

/// The life of one ChimeraX process as a state machine: events in, actions out; the caller does the I/O and
/// supplies the time, so it is tested without processes or clocks.
///
///     starting ──port line + REST probe──▶ ready ⇄ busy (a command in flight)
///        │                                   │
///        └──────────── stop(reason) ─────────┴──▶ stopping ──exit──▶ terminated | failed | finalized
///     any live state ──unexpected exit──▶ failed (crashed | out_of_memory)
///     any live state ──memory over the limit──▶ stopping (SIGKILL) ──exit──▶ failed (out_of_memory)
///     starting ──start timeout──▶ stopping ──exit──▶ failed (start_timeout)
public struct SessionLifecycle: Sendable {
    public enum Event: Sendable, Equatable {
        /// The process exists (spawned at `at`).
        case spawned(at: Double)
        /// ChimeraX printed its REST port.
        case portAnnounced(port: UInt16, at: Double)
        case probeSucceeded(at: Double)
        case probeFailed(at: Double)
        case commandStarted
        case commandFinished
        /// Stop for this reason (user, idle, lifetime, admin, logout, shutdown, finalize).
        case stop(TerminationReason, at: Double)
        /// The process is gone; `oomKilled` when the kernel's OOM killer or the memory limit ended it.
        case exited(ProcessExit, oomKilled: Bool, at: Double)
        /// Time passes (timers).
        case tick(at: Double)
        /// The session's memory went over its limit (the process backend's accounting saw it): it is killed at
        /// once, as the kernel's OOM killer would in a cgroup, and ends `failed`/`out_of_memory`.
        case memoryLimitReached(at: Double)
    }

    public enum Action: Sendable, Equatable {
        /// Ask the REST server whether it answers (GET /cmdline.html), now or at a later time.
        case probe(port: UInt16, at: Double)
        /// SIGTERM to the process group (and close its stdin).
        case terminate
        /// SIGKILL to the process group and every tracked descendant.
        case kill
        /// Persist the record: the status changed.
        case statusChanged(SessionStatus)
        /// The session has ended for good: clean up (directory, accounting), persist the final record.
        case ended(SessionStatus, TerminationReason, ProcessExit?)
    }

    public private(set) var status: SessionStatus = .starting
    public private(set) var port: UInt16?
    public private(set) var readyAt: Double?
    public private(set) var endReason: TerminationReason?
    public private(set) var exit: ProcessExit?
    /// When SIGKILL follows SIGTERM, while stopping.
    public private(set) var killAt: Double?
    public private(set) var startDeadline: Double = .infinity
    private var stopReason: TerminationReason?
    private var commandsInFlight = 0
    private var killed = false

    public let startTimeout: Double
    public let stopGrace: Double
    /// Delay between REST probes while starting.
    public let probeInterval: Double

    public init(startTimeout: Double, stopGrace: Double, probeInterval: Double = 0.05) {
        self.startTimeout = startTimeout
        self.stopGrace = stopGrace
        self.probeInterval = probeInterval
    }

    /// The next time a `tick` matters (start deadline or kill deadline), if any.
    public var nextDeadline: Double? {
        switch status {
        case .starting: return startDeadline
        case .stopping: return killed ? nil : killAt
        default: return nil
        }
    }

    public mutating func handle(_ event: Event) -> [Action] {
        if status.isEnded { return [] }
        switch event {
        case .spawned(let at):
            startDeadline = at + startTimeout
            return []

        case .portAnnounced(let p, let at):
            guard status == .starting, port == nil else { return [] }
            port = p
            return [.probe(port: p, at: at)]

        case .probeSucceeded(let at):
            guard status == .starting, port != nil else { return [] }
            status = .ready
            readyAt = at
            return [.statusChanged(.ready)]

        case .probeFailed(let at):
            guard status == .starting, let p = port else { return [] }
            return [.probe(port: p, at: at + probeInterval)]

        case .commandStarted:
            guard status == .ready || status == .busy else { return [] }
            commandsInFlight += 1
            if status == .ready {
                status = .busy
                return [.statusChanged(.busy)]
            }
            return []

        case .commandFinished:
            guard status == .busy else { return [] }
            commandsInFlight = max(0, commandsInFlight - 1)
            if commandsInFlight == 0 {
                status = .ready
                return [.statusChanged(.ready)]
            }
            return []

        case .stop(let reason, let at):
            guard status != .stopping else { return [] }
            return beginStop(reason, at: at)

        case .memoryLimitReached(let at):
            if status == .stopping {
                // Already on its way out (for its own reason): no grace left.
                if killed { return [] }
                killed = true
                return [.kill]
            }
            stopReason = .outOfMemory
            status = .stopping
            killAt = at
            killed = true
            return [.statusChanged(.stopping), .kill]

        case .tick(let at):
            if status == .starting && at >= startDeadline { return beginStop(.startTimeout, at: at) }
            if status == .stopping, !killed, let k = killAt, at >= k {
                killed = true
                return [.kill]
            }
            return []

        case .exited(let e, let oom, _):
            exit = e
            let reason: TerminationReason
            if status == .stopping, let r = stopReason {
                // Asked to stop: it ended for the reason it was asked to, however it died.
                reason = r
            } else {
                reason = oom ? .outOfMemory : .crashed
            }
            endReason = reason
            status = reason.endStatus
            return [.ended(status, reason, e)]
        }
    }

    private mutating func beginStop(_ reason: TerminationReason, at: Double) -> [Action] {
        stopReason = reason
        status = .stopping
        killAt = at + stopGrace
        return [.statusChanged(.stopping), .terminate]
    }
}
