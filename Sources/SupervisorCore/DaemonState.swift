import Foundation
import Glibc
import HTTPServer
import Synchronization
import SupervisorConfig
import SupervisorIdentity
import SupervisorStore
import SystemdIntegration

/// State shared by the routes and the daemon: the live configuration (swapped on SIGHUP), metrics, logger.
public final class DaemonState: Sendable {
    public static let version = "0.1.0"

    public let logger: Logger
    public let metrics: HTTPMetrics
    public let startedAt = Date()
    private let config: Mutex<Configuration>
    let callerPolicy: CallerPolicy
    /// Set once the server exists (connection gauges).
    private let serverRef = Mutex<HTTPServer?>(nil)
    private let openAPI = Mutex<[UInt8]>([])
    public let store: Store
    public let identity: IdentityService
    /// Ends the live ChimeraX sessions of an owner (`user`/`anonymous`, id) for a reason, waiting until they
    /// have ended; set once the session manager exists.
    let endSessionsOf = Mutex<(@Sendable (String, String, String) -> Int)?>(nil)
    /// More Prometheus text (the sessions), set once the session manager exists.
    let extraMetrics = Mutex<(@Sendable () -> String)?>(nil)

    /// A session's live record (fresher than the stored one while it runs), set once the session manager exists.
    let liveRecord = Mutex<(@Sendable (String) -> SessionRecord?)?>(nil)

    /// The session's record: the live one if it runs, else the stored one.
    func sessionRecord(_ id: String) -> SessionRecord? {
        liveRecord.withLock { $0 }?(id) ?? store.read { $0.sessions[id] }
    }

    /// Ends an owner's sessions (logout with end_sessions, user deletion); returns how many.
    @discardableResult
    func endSessions(ownerType: String, ownerID: String, reason: String) -> Int {
        endSessionsOf.withLock { $0 }?(ownerType, ownerID, reason) ?? 0
    }

    init(configuration: Configuration, logger: Logger, store: Store) {
        self.store = store
        var settings = IdentitySettings()
        settings.sessionCreation = QuotaPolicy(name: "session_creation", limit: configuration.sessionQuota, window: 3600)
        settings.commands = QuotaPolicy(name: "commands", limit: configuration.commandQuota, window: 3600)
        identity = IdentityService(store: store, settings: settings)
        config = Mutex(configuration)
        self.logger = logger
        metrics = HTTPMetrics()
        callerPolicy = CallerPolicy(daemonUID: getuid(), socketGID: configuration.socketGID)
    }

    public var configuration: Configuration { config.withLock { $0 } }

    /// One value of the live configuration, without copying all of it (for per-request checks).
    func setting<T: Sendable>(_ key: KeyPath<Configuration, T> & Sendable) -> T { config.withLock { $0[keyPath: key] } }

    func replaceConfiguration(_ c: Configuration) { config.withLock { $0 = c } }
    func attach(server: HTTPServer, router: Router) {
        serverRef.withLock { $0 = server }
        openAPI.withLock { $0 = OpenAPIDocument.generate(router: router, version: DaemonState.version).serialized() }
    }

    func openAPIBytes() -> [UInt8] { openAPI.withLock { $0 } }

    /// An admin: a local operator on the Unix socket, or a user with `is_admin` by bearer token or cookie.
    func requireAdmin(_ req: Request) throws(Problem) {
        let caller = try Access(state: self).caller(req)
        if caller.isAdmin { return }
        switch caller {
        case .user:
            throw Problem(403, "forbidden", "This needs an administrator.")
        default:
            if req.listener == "unix" {
                throw Problem(403, "forbidden", "This Unix-socket peer is not a local operator (uid 0, the daemon's uid, or --socket-group).")
            }
            throw Problem(401, "unauthorized", "Administrator credentials are required.", headers: [("WWW-Authenticate", "Bearer")])
        }
    }

    struct Check {
        let name: String
        let ok: Bool
        let detail: String
    }

    func readinessChecks() -> [Check] {
        let c = configuration
        var checks: [Check] = []
        // The store must be healthy (its last write, or its own probe, reached the disk), and the state
        // directory must take a new block now: a full or read-only disk shows here before the next API write
        // fails. No fsync: /readyz is public and polled, and flushing is the store's job, which it reports.
        let probe = c.stateDir + "/.readyz-probe"
        let fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        var probeError: Int32 = 0
        if fd >= 0 {
            if write(fd, "ok", 2) != 2 { probeError = errno == 0 ? ENOSPC : errno }
            close(fd)
            unlink(probe)
        } else {
            probeError = errno
        }
        if probeError != 0 {
            checks.append(Check(name: "state_store", ok: false, detail: "cannot write \(c.stateDir): \(String(cString: strerror(probeError)))"))
        } else if !store.isHealthy {
            checks.append(Check(name: "state_store", ok: false, detail: store.lastError?.description ?? "the last write failed"))
        } else {
            checks.append(Check(name: "state_store", ok: true, detail: store.directory))
        }
        if let x = c.chimerax, access(x, X_OK) == 0 {
            checks.append(Check(name: "chimerax", ok: true, detail: x))
        } else {
            checks.append(Check(name: "chimerax", ok: false, detail: c.chimerax.map { "\($0) is not executable" } ?? "no ChimeraX executable found; set --chimerax"))
        }
        return checks
    }

    func renderMetrics() -> String {
        var out = ""
        metrics.render(into: &out)
        if let s = serverRef.withLock({ $0 }) {
            out += "# HELP chimerax_supervisor_http_connections_open Open HTTP connections.\n"
            out += "# TYPE chimerax_supervisor_http_connections_open gauge\n"
            out += "chimerax_supervisor_http_connections_open \(s.openConnections.load(ordering: .relaxed))\n"
            out += "# HELP chimerax_supervisor_http_connections_accepted_total HTTP connections accepted.\n"
            out += "# TYPE chimerax_supervisor_http_connections_accepted_total counter\n"
            out += "chimerax_supervisor_http_connections_accepted_total \(s.acceptedTotal.load(ordering: .relaxed))\n"
        }
        let p = ProcessStats.read()
        out += "# HELP process_resident_memory_bytes Resident memory of the daemon.\n# TYPE process_resident_memory_bytes gauge\n"
        out += "process_resident_memory_bytes \(p.rssBytes)\n"
        out += "# HELP process_open_fds Open descriptors of the daemon.\n# TYPE process_open_fds gauge\n"
        out += "process_open_fds \(p.openFDs)\n"
        out += "# HELP process_cpu_seconds_total CPU time of the daemon.\n# TYPE process_cpu_seconds_total counter\n"
        out += "process_cpu_seconds_total \(p.cpuSeconds)\n"
        out += "# HELP chimerax_supervisor_uptime_seconds Seconds since the daemon started.\n# TYPE chimerax_supervisor_uptime_seconds gauge\n"
        out += "chimerax_supervisor_uptime_seconds \(Int(Date().timeIntervalSince(startedAt)))\n"
        out += "# HELP chimerax_supervisor_build_info Version of the daemon.\n# TYPE chimerax_supervisor_build_info gauge\n"
        out += "chimerax_supervisor_build_info{version=\"\(DaemonState.version)\"} 1\n"
        if let extra = extraMetrics.withLock({ $0 }) { out += extra() }
        let st = store.statistics
        out += "# HELP chimerax_supervisor_store_healthy 1 while the state store takes durable writes.\n# TYPE chimerax_supervisor_store_healthy gauge\n"
        out += "chimerax_supervisor_store_healthy \(st.healthy ? 1 : 0)\n"
        out += "# HELP chimerax_supervisor_store_bytes Bytes of the state store's files.\n# TYPE chimerax_supervisor_store_bytes gauge\n"
        out += "chimerax_supervisor_store_bytes \(st.bytesOnDisk)\n"
        out += "# HELP chimerax_supervisor_store_writes_total Acknowledged durable writes.\n# TYPE chimerax_supervisor_store_writes_total counter\n"
        out += "chimerax_supervisor_store_writes_total \(st.writes)\n"
        out += "# HELP chimerax_supervisor_store_flushes_total Group commits (one fdatasync each).\n# TYPE chimerax_supervisor_store_flushes_total counter\n"
        out += "chimerax_supervisor_store_flushes_total \(st.flushes)\n"
        out += "# HELP chimerax_supervisor_store_write_failures_total Writes that failed (disk full, I/O error).\n# TYPE chimerax_supervisor_store_write_failures_total counter\n"
        out += "chimerax_supervisor_store_write_failures_total \(st.failures)\n"
        out += "# HELP chimerax_supervisor_store_compactions_total Snapshots written.\n# TYPE chimerax_supervisor_store_compactions_total counter\n"
        out += "chimerax_supervisor_store_compactions_total \(st.compactions)\n"
        return out
    }
}

/// The daemon's own usage from /proc/self.
struct ProcessStats {
    var rssBytes = 0
    var openFDs = 0
    var cpuSeconds = 0.0

    static func read() -> ProcessStats {
        var s = ProcessStats()
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) {
            for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
                let kb = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Int($0) } ?? 0
                s.rssBytes = kb * 1024
            }
        }
        s.openFDs = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.count ?? 1) - 1
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // utime and stime are fields 14 and 15 of stat(5); after the command they are at 11 and 12.
            if fields.count > 12, let u = Double(fields[11]), let k = Double(fields[12]) {
                s.cpuSeconds = (u + k) / Double(sysconf(Int32(_SC_CLK_TCK)))
            }
        }
        return s
    }
}
