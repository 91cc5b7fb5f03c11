import CShim
import Foundation
import Glibc
import HTTPServer
import SupervisorConfig
import SupervisorIdentity
import SupervisorSessions
import SupervisorStore
import SystemdIntegration

/// The `serve` command: binds listeners, runs the event loops, talks to systemd, reloads on SIGHUP, drains
/// on SIGTERM/SIGINT.
public final class Daemon {
    let arguments: [String]
    let environment: [String: String]
    let configuration: Configuration
    let logger: Logger
    let notifier = Notifier()
    /// Exit status when the state store is damaged or from a newer version: restarting cannot help
    /// (`RestartPreventExitStatus=2 3` in the unit).
    public static let exitStateDamaged: Int32 = 3
    /// How long SIGTERM waits for requests in flight.
    let drainTimeout: Double = 10

    public init(arguments: [String], environment: [String: String], configuration: Configuration, logger: Logger) {
        self.arguments = arguments
        self.environment = environment
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs until a stop signal; returns the exit status.
    public func run() -> Int32 {
        let c = configuration
        for w in c.warnings { logger.warning(w) }
        if let refused = Configuration.neverAllowedCommands(c) {
            logger.error("--command-allow names commands that can never be allowed", [("commands", refused)])
            return 2
        }
        if c.restIsolation != "none" && !NetworkNamespace.available {
            let why = "network namespaces cannot be made here (needs root or CAP_SYS_ADMIN)"
            if c.restIsolation == "netns" {
                logger.error("--rest-isolation netns: \(why)")
                return 2
            }
            logger.warning("\(why): each ChimeraX REST port is on the host's loopback, where any local process can reach it; "
                + "set --rest-isolation none to accept that without this warning, or netns to refuse to start without isolation")
        }
        raiseDescriptorLimit()
        do {
            try makePrivateDirectory(c.stateDir)
            try makePrivateDirectory(c.stateDir + "/tmp")
        } catch {
            logger.error("cannot prepare the state directory", [("error", "\(error)")])
            return 1
        }
        // The store before any listener: a second daemon on this state directory, or damaged state, stops
        // the start before anything is bound.
        let store: Store
        do {
            store = try Store(stateDirectory: c.stateDir)
        } catch {
            switch error.code {
            case .corrupt:
                logger.error("\(error.message); run `chimerax-supervisor state check --state-dir \(c.stateDir)` to see the damage "
                    + "and `chimerax-supervisor state repair --state-dir \(c.stateDir)` to keep everything before it (the rest is copied aside)")
                return Daemon.exitStateDamaged
            case .tooNew:
                logger.error(error.description)
                return Daemon.exitStateDamaged
            default:
                logger.error("cannot open the state store: \(error.description)")
                return 1
            }
        }
        defer { store.close() }
        logger.notice("state store opened", [("directory", store.directory), ("recovery", store.recoveryReport)])

        var specs: [ListenerSpec] = []
        let activated = ActivatedSockets.take()
        for s in activated.sockets {
            specs.append(.inherited(fd: s.fd, kind: ActivatedSockets.kind(of: s.fd, name: s.name)))
        }
        if activated.sockets.isEmpty || c.listenExplicit, let l = c.listen {
            specs.append(.tcp(host: l.host, port: l.port))
        }
        if activated.sockets.isEmpty || c.socketExplicit, let path = c.socketPath {
            do {
                try makeDirectory((path as NSString).deletingLastPathComponent, mode: 0o755)
            } catch {
                logger.error("cannot create the socket directory", [("error", "\(error)")])
                return 1
            }
            specs.append(.unix(path: path, mode: c.socketMode, gid: c.socketGID))
        }
        if specs.isEmpty {
            logger.error("nothing to listen on: --listen and --socket are both none and no sockets were passed")
            return 2
        }
        var listeners: [Listener] = []
        for spec in specs {
            do {
                listeners.append(try Listener.open(spec))
            } catch {
                logger.error("cannot listen", [("listener", "\(spec)"), ("error", "\(error)")])
                for l in listeners where l.kind == "unix" { unlink(l.boundAddress) }
                return 1
            }
        }

        let state = DaemonState(configuration: c, logger: logger, store: store)
        var router = Router()
        OperationalRoutes(state: state).register(on: &router)
        IdentityRoutes(state: state).register(on: &router)
        UserAdminRoutes(state: state).register(on: &router)
        let sessions: SessionManager
        do {
            sessions = try SessionManager(store: store, logger: logger, configuration: { [state] in state.configuration })
        } catch {
            logger.error("cannot start the supervision thread", [("error", "\(error)")])
            return 1
        }
        sessions.recoverAfterRestart()
        state.extraMetrics.withLock { $0 = { [sessions] in sessions.renderMetrics() } }
        state.liveRecord.withLock { $0 = { [sessions] id in sessions.record(id) } }
        state.endSessionsOf.withLock {
            $0 = { [sessions, state] type, id, reason in
                sessions.stopAll(ownerType: type, ownerID: id, reason: TerminationReason(rawValue: reason) ?? .admin,
                                 timeout: Double(state.configuration.stopGrace) + 5)
            }
        }
        SessionRoutes(state: state, manager: sessions).register(on: &router)

        var sc = ServerConfiguration()
        sc.eventLoops = c.eventLoops
        sc.maxConnections = c.maxConnections
        sc.headerTimeout = Double(c.headerTimeout)
        sc.bodyIdleTimeout = Double(c.bodyTimeout)
        sc.keepAliveTimeout = Double(c.keepaliveTimeout)
        sc.spoolDirectory = c.stateDir + "/tmp"
        sc.responseFilter = Access.corsFilter(state)
        sc.defaultHeaders = [
            ("X-Content-Type-Options", "nosniff"),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
        ]
        let server: HTTPServer
        do {
            server = try HTTPServer(configuration: sc, router: router, listeners: listeners, observer: Observer(state: state))
        } catch {
            logger.error("cannot start the event loops", [("error", "\(error)")])
            return 1
        }
        state.attach(server: server, router: router)
        let loop0 = server.loops[0]

        // Signals arrive on loop 0 through a signalfd (they were blocked in every thread by main).
        let sigfd = cshim_signalfd_setup(0)
        guard sigfd >= 0 else {
            logger.error("signalfd failed", [("errno", "\(errno)")])
            return 1
        }
        var stopping = false
        let daemon = self
        loop0.watchReadable(sigfd) {
            while true {
                let sig = cshim_signalfd_read(sigfd)
                if sig <= 0 { break }
                switch sig {
                case SIGHUP:
                    daemon.reload(state: state)
                case SIGTERM, SIGINT:
                    if stopping { continue }
                    stopping = true
                    daemon.logger.notice("stopping: draining connections", [("signal", sig == SIGTERM ? "SIGTERM" : "SIGINT")])
                    daemon.notifier.stopping(status: "Draining connections")
                    server.drain(timeout: daemon.drainTimeout) {
                        server.stopLoops()
                    }
                default:
                    break
                }
            }
        }

        // WATCHDOG=1 from the loop itself, and only while every loop turns.
        if let interval = notifier.watchdogInterval() {
            let loops = server.loops
            var lastTurns = loops.map { _ in UInt64.max }
            for l in loops.dropFirst() {
                // A periodic no-op keeps idle loops turning so their counters prove they are alive.
                l.execute { l.scheduleRepeating(every: interval / 4) {} }
            }
            loop0.scheduleRepeating(every: interval / 2) { [notifier] in
                let turns = loops.map { $0.turns.load(ordering: .relaxed) }
                if zip(turns, lastTurns).allSatisfy({ $0 != $1 }) { notifier.watchdog() }
                lastTurns = turns
            }
            logger.info("watchdog enabled", [("interval_s", "\(interval)")])
        }

        // Hourly: drop anonymous identities past expiry and device sessions ended a week ago.
        loop0.scheduleRepeating(every: 3600) { [logger] in
            Router.workers.async {
                do throws(IdentityError) {
                    let n = try state.identity.purgeExpired()
                    if n > 0 { logger.info("expired identities removed", [("count", "\(n)")]) }
                } catch {
                    logger.warning("could not remove expired identities", [("error", "\(error)")])
                }
            }
        }

        server.start()
        let where_ = listeners.map { "\($0.kind) \($0.boundAddress)" }.joined(separator: ", ")
        for l in listeners {
            logger.notice("listening", [("kind", l.kind), ("address", l.boundAddress), ("port", "\(l.port)")])
        }
        if c.chimerax == nil {
            logger.warning("no ChimeraX executable found; /readyz reports not ready until --chimerax is set")
        }
        notifier.ready(status: "Listening on \(where_)")
        loop0.run()

        // A stopped daemon leaves no ChimeraX running: end every session (reason supervisor_shutdown).
        sessions.stopAll(reason: .supervisorShutdown, timeout: Double(state.configuration.stopGrace) + 5)
        logger.notice("stopped")
        return 0
    }

    /// SIGHUP: re-read the config file and environment; apply what can change without a restart.
    func reload(state: DaemonState) {
        notifier.reloading()
        do throws(ConfigError) {
            let fresh = try Configuration.load(arguments: arguments, environment: environment,
                                               currentDirectory: FileManager.default.currentDirectoryPath,
                                               cpuCount: Int(cshim_cpu_count()))
            if let refused = Configuration.neverAllowedCommands(fresh) {
                throw ConfigError("--command-allow names commands that can never be allowed: \(refused)")
            }
            let old = state.configuration
            let changed = fresh.changedOptions(comparedTo: old)
            let fixed = changed.filter { name in !(optionSpec(named: name)?.reloadable ?? false) }
            var applied = old
            for name in changed where !fixed.contains(name) { applied.take(name, from: fresh) }
            state.replaceConfiguration(applied)
            if let level = Severity(name: applied.logLevel) { logger.level = level }
            logger.notice("configuration reloaded", [("changed", changed.filter { !fixed.contains($0) }.joined(separator: ",")),
                                                     ("needs_restart", fixed.joined(separator: ","))])
        } catch {
            logger.error("reload failed; keeping the running configuration", [("error", error.message)])
        }
        notifier.ready(status: "Configuration reloaded")
    }

    private func raiseDescriptorLimit() {
        var rl = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        }
    }
}

/// Creates a directory (and parents) owned by us with `mode`; tightens the mode of an existing one.
func makePrivateDirectory(_ path: String) throws { try makeDirectory(path, mode: 0o700, tighten: true) }

func makeDirectory(_ path: String, mode: mode_t, tighten: Bool = false) throws {
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: Int(mode)])
    if tighten { chmod(path, mode) }
}

/// Connects server events to metrics and the log.
struct Observer: HTTPServerObserver {
    let state: DaemonState

    func requestCompleted(route: String?, method: HTTPMethod, status: Int, nanos: UInt64) {
        state.metrics.record(route: route, method: method, status: status, nanos: nanos)
    }

    func log(_ level: LogLevel, _ message: String, _ fields: [String: String]) {
        let severity = Severity(rawValue: level.rawValue) ?? .info
        state.logger.log(severity, message, fields.sorted { $0.key < $1.key })
    }
}

extension Configuration {
    /// Names of --command-allow that run code, control ChimeraX or wrap other commands (never allowed).
    static func neverAllowedCommands(_ c: Configuration) -> String? {
        let bad = (c.commandAllow ?? []).filter { CommandPolicy.neverAllowed.contains($0) }
        return bad.isEmpty ? nil : bad.joined(separator: ",")
    }

    /// Copies one reloadable option's value (and its entry) from another configuration.
    mutating func take(_ name: String, from other: Configuration) {
        switch name {
        case "idle-timeout": idleTimeout = other.idleTimeout
        case "max-lifetime": maxLifetime = other.maxLifetime
        case "start-timeout": startTimeout = other.startTimeout
        case "stop-grace": stopGrace = other.stopGrace
        case "max-sessions": maxSessions = other.maxSessions
        case "max-sessions-per-user": maxSessionsPerUser = other.maxSessionsPerUser
        case "upload-max-bytes": uploadMaxBytes = other.uploadMaxBytes
        case "memory-max": memoryMax = other.memoryMax
        case "cpu-quota": cpuQuota = other.cpuQuota
        case "tasks-max": tasksMax = other.tasksMax
        case "chimerax-nice": chimeraxNice = other.chimeraxNice
        case "pool-size": poolSize = other.poolSize
        case "command-allow": commandAllow = other.commandAllow
        case "command-timeout": commandTimeout = other.commandTimeout
        case "expiry-warning": expiryWarning = other.expiryWarning
        case "transcript-max": transcriptMax = other.transcriptMax
        case "allow-anonymous": allowAnonymous = other.allowAnonymous
        case "cors-origin": corsOrigins = other.corsOrigins
        case "trusted-proxy": trustedProxies = other.trustedProxies
        case "cookie-secure": cookieSecure = other.cookieSecure
        case "log-level": logLevel = other.logLevel
        default: return
        }
        if let i = entries.firstIndex(where: { $0.name == name }), let e = other.entries.first(where: { $0.name == name }) {
            entries[i] = e
        }
    }
}
