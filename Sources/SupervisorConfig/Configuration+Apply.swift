import Foundation
import Glibc

extension Configuration {
    /// Parses and validates every option, filling in derived defaults.
    mutating func apply(raw: [String: (values: [String], source: ValueSource)], environment env: [String: String],
                        currentDirectory cwd: String, cpuCount: Int) throws(ConfigError)
    {
        func absolute(_ p: String) -> String {
            let a = p.hasPrefix("/") ? p : (cwd == "/" ? "/" : cwd + "/") + p
            return URL(fileURLWithPath: a).standardizedFileURL.path
        }
        func firstDir(_ v: String?) -> String? {
            guard let v, !v.isEmpty else { return nil }
            return v.split(separator: ":").first.map(String.init)
        }
        func value(_ name: String) -> (String, ValueSource)? {
            guard let r = raw[name], let v = r.values.last else { return nil }
            return (v, r.source)
        }
        func parse<T>(_ name: String, _ body: (String) throws(ConfigError) -> T) throws(ConfigError) -> (T, ValueSource)? {
            guard let (v, src) = value(name) else { return nil }
            do {
                return (try body(v), src)
            } catch {
                throw ConfigError("invalid value '\(v)' for --\(name) (from \(src)): \(error.message)")
            }
        }
        var entries: [(String, String, ValueSource)] = []
        func record(_ name: String, _ text: String, _ src: ValueSource) { entries.append((name, text, src)) }

        // listen
        if let (l, src) = try parse("listen", ValueParsers.listen) {
            listen = l
            record("listen", l?.description ?? "none", src)
        } else {
            listen = ListenAddress(host: "127.0.0.1", port: 8731)
            record("listen", "127.0.0.1:8731", .defaultValue)
        }
        // socket
        if let (v, src) = value("socket") {
            if v == "none" { socketPath = nil } else {
                guard !v.isEmpty else { throw ConfigError("invalid value '' for --socket (from \(src)): expected a path or none") }
                socketPath = absolute(v)
            }
            record("socket", socketPath ?? "none", src)
        } else if let rd = firstDir(env["RUNTIME_DIRECTORY"]) {
            socketPath = absolute(rd + "/api.sock")
            record("socket", socketPath!, .derived("$RUNTIME_DIRECTORY"))
        } else if let xdg = firstDir(env["XDG_RUNTIME_DIR"]) {
            socketPath = absolute(xdg + "/chimerax-supervisor/api.sock")
            record("socket", socketPath!, .derived("$XDG_RUNTIME_DIR"))
        } else {
            socketPath = absolute("./.chimerax-supervisor/api.sock")
            record("socket", socketPath!, .derived("current directory"))
        }
        if let (m, src) = try parse("socket-mode", ValueParsers.mode) {
            socketMode = m
            record("socket-mode", String(format: "%04o", m), src)
        } else {
            record("socket-mode", "0660", .defaultValue)
        }
        if let (g, src) = value("socket-group") {
            guard let gid = Configuration.lookupGroup(g) else {
                throw ConfigError("invalid value '\(g)' for --socket-group (from \(src)): no such group")
            }
            socketGroup = g
            socketGID = gid
            record("socket-group", g, src)
        } else {
            record("socket-group", "(unset)", .defaultValue)
        }
        // directories
        if let (v, src) = value("state-dir") {
            guard !v.isEmpty else { throw ConfigError("invalid value '' for --state-dir (from \(src)): expected a path") }
            stateDir = absolute(v)
            record("state-dir", stateDir, src)
        } else if let sd = firstDir(env["STATE_DIRECTORY"]) {
            stateDir = absolute(sd)
            record("state-dir", stateDir, .derived("$STATE_DIRECTORY"))
        } else {
            stateDir = absolute("./.chimerax-supervisor/state")
            record("state-dir", stateDir, .derived("current directory"))
        }
        if let (v, src) = value("work-dir") {
            guard !v.isEmpty else { throw ConfigError("invalid value '' for --work-dir (from \(src)): expected a path") }
            workDir = absolute(v)
            record("work-dir", workDir, src)
        } else {
            workDir = stateDir + "/sessions"
            record("work-dir", workDir, .derived("<state-dir>/sessions"))
        }
        // chimerax
        if let (v, src) = value("chimerax") {
            let path = v.contains("/") ? absolute(v) : (Configuration.searchPath(v, env["PATH"]) ?? v)
            guard Configuration.isExecutableFile(path) else {
                throw ConfigError("invalid value '\(v)' for --chimerax (from \(src)): not an executable file")
            }
            chimerax = path
            record("chimerax", path, src)
        } else if let found = Configuration.findChimeraX(env["PATH"]) {
            chimerax = found
            record("chimerax", found, .derived("found on the search list"))
        } else {
            chimerax = nil
            record("chimerax", "(none found)", .derived("searched PATH for chimerax, ChimeraX; /usr/bin/chimerax; /opt/UCSF/ChimeraX/bin/ChimeraX"))
        }
        // numbers
        func seconds(_ name: String, _ current: Int, minimum: Int = 1) throws(ConfigError) -> Int {
            if let (v, src) = try parse(name, { (s: String) throws(ConfigError) -> Int in try ValueParsers.seconds(s, minimum: minimum) }) {
                record(name, "\(v)", src)
                return v
            }
            record(name, "\(current)", .defaultValue)
            return current
        }
        /// One of the values the option table lists for `name`.
        func choice(_ name: String, _ current: String) throws(ConfigError) -> String {
            guard case .choice(let allowed)? = optionSpec(named: name)?.kind else { preconditionFailure("\(name) is not a choice option") }
            if let (v, src) = try parse(name, { (s: String) throws(ConfigError) -> String in try Configuration.choice(s, allowed) }) {
                record(name, v, src)
                return v
            }
            record(name, current, .defaultValue)
            return current
        }
        func count(_ name: String, _ current: Int, minimum: Int = 0, maximum: Int = 1_000_000) throws(ConfigError) -> Int {
            if let (v, src) = try parse(name, { (s: String) throws(ConfigError) -> Int in try ValueParsers.count(s, minimum: minimum, maximum: maximum) }) {
                record(name, "\(v)", src)
                return v
            }
            record(name, "\(current)", .defaultValue)
            return current
        }
        func size(_ name: String, _ current: Int) throws(ConfigError) -> Int {
            if let (v, src) = try parse(name, ValueParsers.size) {
                record(name, "\(v)", src)
                return v
            }
            record(name, "\(current)", .defaultValue)
            return current
        }
        idleTimeout = try seconds("idle-timeout", idleTimeout)
        maxLifetime = try seconds("max-lifetime", maxLifetime)
        startTimeout = try seconds("start-timeout", startTimeout)
        stopGrace = try seconds("stop-grace", stopGrace, minimum: 0)
        maxSessions = try count("max-sessions", maxSessions, minimum: 1)
        maxSessionsPerUser = try count("max-sessions-per-user", maxSessionsPerUser, minimum: 1)
        uploadMaxBytes = try size("upload-max-bytes", uploadMaxBytes)
        memoryMax = try size("memory-max", memoryMax)
        if let (v, src) = try parse("cpu-quota", ValueParsers.percent) {
            cpuQuota = v
            record("cpu-quota", "\(v)%", src)
        } else {
            record("cpu-quota", "\(cpuQuota)%", .defaultValue)
        }
        tasksMax = try count("tasks-max", tasksMax, minimum: 1)
        chimeraxNice = try count("chimerax-nice", chimeraxNice, maximum: 19)
        backend = try choice("backend", backend)
        sessionQuota = try count("session-quota", sessionQuota, minimum: 1)
        commandQuota = try count("command-quota", commandQuota, minimum: 1, maximum: 100_000_000)
        poolSize = try count("pool-size", poolSize, maximum: 1000)
        commandTimeout = try seconds("command-timeout", commandTimeout)
        expiryWarning = try seconds("expiry-warning", expiryWarning)
        restIsolation = try choice("rest-isolation", restIsolation)
        transcriptMax = try count("transcript-max", transcriptMax, minimum: 10, maximum: 10_000_000)
        if let r = raw["command-allow"] {
            for n in r.values where n.isEmpty || !n.utf8.allSatisfy({ ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }) {
                throw ConfigError("invalid value '\(n)' for --command-allow (from \(r.source)): a ChimeraX command name in lower case")
            }
            commandAllow = Array(Set(r.values)).sorted()
            record("command-allow", commandAllow!.joined(separator: ", "), r.source)
        } else {
            record("command-allow", "(the default list)", .defaultValue)
        }
        if let (v, src) = try parse("allow-anonymous", ValueParsers.flag) {
            allowAnonymous = v
            record("allow-anonymous", "\(v)", src)
        } else {
            record("allow-anonymous", "false", .defaultValue)
        }
        if let r = raw["cors-origin"] {
            var origins: [String] = []
            for o in r.values {
                do {
                    origins.append(try ValueParsers.origin(o))
                } catch {
                    throw ConfigError("invalid value '\(o)' for --cors-origin (from \(r.source)): \(error.message)")
                }
            }
            corsOrigins = origins
            record("cors-origin", origins.joined(separator: ", "), r.source)
        } else {
            record("cors-origin", "(none)", .defaultValue)
        }
        if let r = raw["trusted-proxy"] {
            var nets: [CIDR] = []
            for v in r.values {
                guard let c = CIDR(v) else {
                    throw ConfigError("invalid value '\(v)' for --trusted-proxy (from \(r.source)): expected an address or CIDR such as 10.0.0.0/8 or ::1/128")
                }
                nets.append(c)
            }
            trustedProxies = nets
            record("trusted-proxy", nets.map(\.description).joined(separator: ", "), r.source)
        } else {
            record("trusted-proxy", "(none)", .defaultValue)
        }
        if let (v, src) = try parse("cookie-secure", ValueParsers.flag) {
            cookieSecure = v
            record("cookie-secure", "\(v)", src)
        } else {
            cookieSecure = !(listen?.isLoopback ?? true)
            record("cookie-secure", "\(cookieSecure)", .derived(cookieSecure ? "--listen is not loopback" : "--listen is loopback or none"))
        }
        logLevel = try choice("log-level", logLevel)
        maxConnections = try count("max-connections", maxConnections, minimum: 1)
        headerTimeout = try seconds("header-timeout", headerTimeout)
        bodyTimeout = try seconds("body-timeout", bodyTimeout)
        keepaliveTimeout = try seconds("keepalive-timeout", keepaliveTimeout)
        if let (v, src) = try parse("event-loops", { (s: String) throws(ConfigError) -> Int in try ValueParsers.count(s, minimum: 1, maximum: 64) }) {
            eventLoops = v
            record("event-loops", "\(v)", src)
        } else {
            eventLoops = max(1, cpuCount)
            record("event-loops", "\(eventLoops)", .derived("CPUs available"))
        }
        self.entries = entries.map { (name: $0.0, value: $0.1, source: $0.2) }
    }

    static func choice(_ s: String, _ allowed: [String]) throws(ConfigError) -> String {
        let t = s.trimmingCharacters(in: .whitespaces).lowercased()
        guard allowed.contains(t) else { throw ConfigError("expected one of \(allowed.joined(separator: ", "))") }
        return t
    }

    static func lookupGroup(_ g: String) -> UInt32? {
        if !g.isEmpty, g.allSatisfy(\.isNumber), let n = UInt32(g) { return n }
        guard let gr = getgrnam(g) else { return nil }
        return gr.pointee.gr_gid
    }

    static func isExecutableFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && access(path, X_OK) == 0
    }

    static func searchPath(_ name: String, _ path: String?) -> String? {
        for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(dir)/\(name)"
            if isExecutableFile(candidate) { return candidate }
        }
        return nil
    }

    /// API.md §1: first of `chimerax`, `ChimeraX` on PATH, `/usr/bin/chimerax`, `/opt/UCSF/ChimeraX/bin/ChimeraX`.
    static func findChimeraX(_ path: String?) -> String? {
        for name in ["chimerax", "ChimeraX"] {
            if let p = searchPath(name, path) { return p }
        }
        for p in ["/usr/bin/chimerax", "/opt/UCSF/ChimeraX/bin/ChimeraX"] where isExecutableFile(p) { return p }
        return nil
    }

    /// `config print`: one line per option, `name = value   (source)`.
    public func printable() -> String {
        let width = entries.map { $0.name.count + 3 + $0.value.count }.max() ?? 0
        var lines: [String] = []
        if let f = configFile { lines.append("# config file: \(f)") }
        for e in entries {
            let left = "\(e.name) = \(e.value)"
            lines.append(left + String(repeating: " ", count: max(1, width - left.count + 2)) + "# \(e.source)")
        }
        return lines.joined(separator: "\n")
    }

    /// Names of options whose values differ between two configurations.
    public func changedOptions(comparedTo other: Configuration) -> [String] {
        var changed: [String] = []
        for e in entries {
            if let o = other.entries.first(where: { $0.name == e.name }), o.value != e.value { changed.append(e.name) }
        }
        return changed
    }
}
