import Foundation

/// The effective configuration of `serve`: flags win over the environment, the environment over the config
/// file, the file over defaults (API.md §1). Every value remembers where it came from.
public struct Configuration: Sendable {
    public var listen: ListenAddress?
    public var socketPath: String?
    public var socketMode: UInt32 = 0o660
    public var socketGroup: String?
    public var socketGID: UInt32?
    public var stateDir = ""
    public var workDir = ""
    /// The ChimeraX executable, or nil when none was configured or found.
    public var chimerax: String?
    public var idleTimeout = 900
    public var maxLifetime = 28800
    public var startTimeout = 120
    public var stopGrace = 10
    public var maxSessions = 64
    public var maxSessionsPerUser = 4
    public var uploadMaxBytes = 268_435_456
    public var memoryMax = 4 << 30
    public var cpuQuota = 200
    public var tasksMax = 512
    /// The nice value ChimeraX processes start with: with CPU-bound sessions on every CPU, the API's threads
    /// (nice 0) still get a CPU at once (measured: heartbeats 69,674 to 99,675 req/s, p99 7.3 to 5.3 ms, with
    /// two busy processes at nice 5 instead of 0).
    public var chimeraxNice = 5
    public var backend = "auto"
    public var poolSize = 0
    public var sessionQuota = 10
    public var commandQuota = 1000
    /// The command allow-list; nil for the default (API.md §4).
    public var commandAllow: [String]?
    public var commandTimeout = 60
    public var expiryWarning = 60
    /// `auto`, `netns` or `none`.
    public var restIsolation = "auto"
    public var transcriptMax = 10_000
    public var allowAnonymous = false
    public var corsOrigins: [String] = []
    public var trustedProxies: [CIDR] = []
    public var cookieSecure = false
    public var logLevel = "info"
    public var eventLoops = 1
    public var maxConnections = 16_384
    public var headerTimeout = 10
    public var bodyTimeout = 30
    public var keepaliveTimeout = 75
    /// The config file read, if any.
    public var configFile: String?
    /// True when `--listen` / `--socket` were given explicitly (they add to socket-activated listeners).
    public var listenExplicit = false
    public var socketExplicit = false
    /// Each option's effective value as text and its source, in table order.
    public var entries: [(name: String, value: String, source: ValueSource)] = []
    /// Things worth a log line that do not stop the start (unknown CHIMERAX_SUPERVISOR_* variables...).
    public var warnings: [String] = []

    public init() {}

    public func source(of name: String) -> ValueSource? { entries.first { $0.name == name }?.source }

    /// Reads flags (`--name value` or `--name=value`), the environment and the config file.
    public static func load(arguments: [String], environment: [String: String], currentDirectory: String, cpuCount: Int = 1)
        throws(ConfigError) -> Configuration
    {
        var raw: [String: (values: [String], source: ValueSource)] = [:]
        var configPath: (String, ValueSource)?
        if let p = environment["CHIMERAX_SUPERVISOR_CONFIG"], !p.isEmpty {
            configPath = (p, .environment("CHIMERAX_SUPERVISOR_CONFIG"))
        }

        // Flags.
        var flagValues: [String: (values: [String], source: ValueSource)] = [:]
        var i = 0
        while i < arguments.count {
            let arg = arguments[i]
            guard arg.hasPrefix("--") else { throw ConfigError("unexpected argument '\(arg)' (options start with --)") }
            var name = String(arg.dropFirst(2))
            var inlineValue: String?
            if let eq = name.firstIndex(of: "=") {
                inlineValue = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            if name == "config" {
                guard let v = inlineValue ?? (i + 1 < arguments.count ? arguments[i + 1] : nil) else {
                    throw ConfigError("--config needs a file path")
                }
                if inlineValue == nil { i += 1 }
                configPath = (v, .flag("--config"))
                i += 1
                continue
            }
            var negated = false
            if optionSpec(named: name) == nil, name.hasPrefix("no-"), let s = optionSpec(named: String(name.dropFirst(3))), s.kind == .flag {
                name = String(name.dropFirst(3))
                negated = true
            }
            guard let spec = optionSpec(named: name) else {
                throw ConfigError("unknown option --\(name) (see `chimerax-supervisor serve --help`)")
            }
            let value: String
            if spec.kind == .flag && inlineValue == nil {
                value = negated ? "false" : "true"
            } else if let v = inlineValue {
                value = v
            } else {
                guard i + 1 < arguments.count else { throw ConfigError("option \(spec.flag) needs a value") }
                i += 1
                value = arguments[i]
            }
            if spec.kind == .list, let prev = flagValues[spec.name] {
                flagValues[spec.name] = (prev.values + [value], .flag(spec.flag))
            } else {
                flagValues[spec.name] = ([value], .flag(spec.flag))
            }
            i += 1
        }

        // Config file (lowest precedence after defaults).
        var cfg = Configuration()
        if let (path, _) = configPath {
            let absolute = path.hasPrefix("/") ? path : currentDirectory + "/" + path
            cfg.configFile = absolute
            for (name, entry) in try readConfigFile(absolute) { raw[name] = entry }
        }
        // Environment.
        for spec in optionTable {
            if let v = environment[spec.environmentName] {
                let values = spec.kind == .list ? v.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init) : [v]
                raw[spec.name] = (values, .environment(spec.environmentName))
            }
        }
        for key in environment.keys.sorted() where key.hasPrefix("CHIMERAX_SUPERVISOR_") && key != "CHIMERAX_SUPERVISOR_CONFIG" {
            if !optionTable.contains(where: { $0.environmentName == key }) {
                cfg.warnings.append("ignoring unknown environment variable \(key)")
            }
        }
        // Flags.
        for (k, v) in flagValues { raw[k] = v }
        cfg.listenExplicit = flagValues["listen"] != nil
        cfg.socketExplicit = flagValues["socket"] != nil
        try cfg.apply(raw: raw, environment: environment, currentDirectory: currentDirectory, cpuCount: cpuCount)
        return cfg
    }

    /// `name = value` lines; `#` starts a comment; values may be double-quoted; names as flags without `--`
    /// (hyphens or underscores). A list option may repeat.
    static func readConfigFile(_ path: String) throws(ConfigError) -> [String: (values: [String], source: ValueSource)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigError("cannot read config file \(path)")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw ConfigError("config file \(path) is not UTF-8 text") }
        var out: [String: (values: [String], source: ValueSource)] = [:]
        for (n, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNo = n + 1
            var line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigError("\(path):\(lineNo): expected `name = value`")
            }
            let name = line[..<eq].trimmingCharacters(in: .whitespaces)
            line = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            let value: String
            if line.hasPrefix("\"") {
                guard let close = line.dropFirst().firstIndex(of: "\"") else {
                    throw ConfigError("\(path):\(lineNo): unterminated quoted value")
                }
                value = String(line[line.index(after: line.startIndex)..<close])
            } else {
                if let hash = line.range(of: " #") { line = String(line[..<hash.lowerBound]) }
                value = line.trimmingCharacters(in: .whitespaces)
            }
            guard let spec = optionSpec(named: name) else {
                throw ConfigError("\(path):\(lineNo): unknown option '\(name)'")
            }
            let src = ValueSource.file(path: path, line: lineNo)
            if spec.kind == .list {
                let parts = value.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init)
                out[spec.name] = ((out[spec.name]?.values ?? []) + parts, src)
            } else {
                out[spec.name] = ([value], src)
            }
        }
        return out
    }
}
