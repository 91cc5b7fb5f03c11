/// The kind of value an option takes; decides parsing and how `config print` shows it.
public enum OptionKind: Sendable, Equatable {
    case text
    case path
    case seconds
    case count
    case size
    case percent
    case flag
    case list
    case mode
    case choice([String])
    case listen
}

/// One `serve` option: its flag name (`idle-timeout`), environment name, kind, default text and meaning.
public struct OptionSpec: Sendable {
    public let name: String
    public let kind: OptionKind
    public let help: String
    /// Applied on SIGHUP without a restart.
    public let reloadable: Bool

    public var flag: String { "--\(name)" }
    public var environmentName: String {
        "CHIMERAX_SUPERVISOR_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
    }
}

/// Every option of `chimerax-supervisor serve` (API.md §1), in the order `config print` shows them.
public let optionTable: [OptionSpec] = [
    OptionSpec(name: "listen", kind: .listen, help: "TCP listener HOST:PORT; `none` disables; port 0 picks a free port", reloadable: false),
    OptionSpec(name: "socket", kind: .path, help: "Unix socket listener path; `none` disables", reloadable: false),
    OptionSpec(name: "socket-mode", kind: .mode, help: "permissions of the Unix socket (octal)", reloadable: false),
    OptionSpec(name: "socket-group", kind: .text, help: "group of the Unix socket; its members are local operators", reloadable: false),
    OptionSpec(name: "state-dir", kind: .path, help: "persistent state", reloadable: false),
    OptionSpec(name: "work-dir", kind: .path, help: "one private directory per ChimeraX session", reloadable: false),
    OptionSpec(name: "chimerax", kind: .path, help: "the ChimeraX executable", reloadable: false),
    OptionSpec(name: "idle-timeout", kind: .seconds, help: "a session with no heartbeat or command for this long is terminated", reloadable: true),
    OptionSpec(name: "max-lifetime", kind: .seconds, help: "absolute session lifetime", reloadable: true),
    OptionSpec(name: "start-timeout", kind: .seconds, help: "ChimeraX must report its REST port within this time", reloadable: true),
    OptionSpec(name: "stop-grace", kind: .seconds, help: "SIGTERM to SIGKILL escalation", reloadable: true),
    OptionSpec(name: "max-sessions", kind: .count, help: "ChimeraX sessions on this host", reloadable: true),
    OptionSpec(name: "max-sessions-per-user", kind: .count, help: "ChimeraX sessions per identity", reloadable: true),
    OptionSpec(name: "upload-max-bytes", kind: .size, help: "largest structure upload", reloadable: true),
    OptionSpec(name: "memory-max", kind: .size, help: "memory limit per session", reloadable: true),
    OptionSpec(name: "cpu-quota", kind: .percent, help: "CPU limit per session, percent of one CPU", reloadable: true),
    OptionSpec(name: "tasks-max", kind: .count, help: "task (thread and process) limit per session", reloadable: true),
    OptionSpec(name: "chimerax-nice", kind: .count, help: "nice value of ChimeraX processes (0-19): busy sessions yield the CPU to the API first; 0 to turn off", reloadable: true),
    OptionSpec(name: "backend", kind: .choice(["auto", "systemd", "cgroup", "process"]), help: "how ChimeraX processes are placed", reloadable: false),
    OptionSpec(name: "session-quota", kind: .count, help: "ChimeraX sessions one identity may start per hour", reloadable: false),
    OptionSpec(name: "command-quota", kind: .count, help: "ChimeraX commands one identity may run per hour", reloadable: false),
    OptionSpec(name: "rest-isolation", kind: .choice(["auto", "netns", "none"]), help: "ChimeraX's REST port in a network namespace per session (auto: when the host allows it)", reloadable: false),
    OptionSpec(name: "expiry-warning", kind: .seconds, help: "an expiry_warning event this long before a session would expire", reloadable: true),
    OptionSpec(name: "command-allow", kind: .list, help: "ChimeraX command names users may run (replaces the default allow-list; repeatable)", reloadable: true),
    OptionSpec(name: "command-timeout", kind: .seconds, help: "a ChimeraX command answers within this time or the request gets 504", reloadable: true),
    OptionSpec(name: "transcript-max", kind: .count, help: "transcript entries kept per session (the oldest go first)", reloadable: true),
    OptionSpec(name: "pool-size", kind: .count, help: "pre-started idle ChimeraX processes", reloadable: true),
    OptionSpec(name: "allow-anonymous", kind: .flag, help: "anonymous browser sessions may own ChimeraX sessions", reloadable: true),
    OptionSpec(name: "cors-origin", kind: .list, help: "browser origins allowed to call the API with credentials (repeatable)", reloadable: true),
    OptionSpec(name: "trusted-proxy", kind: .list, help: "CIDR of a reverse proxy whose X-Forwarded-For is believed (repeatable)", reloadable: true),
    OptionSpec(name: "cookie-secure", kind: .flag, help: "Secure attribute on cookies (default: on unless --listen is loopback)", reloadable: true),
    OptionSpec(name: "log-level", kind: .choice(["debug", "info", "notice", "warning", "error"]), help: "least severe level logged", reloadable: true),
    OptionSpec(name: "max-connections", kind: .count, help: "HTTP connections open at once; past it accepting pauses", reloadable: false),
    OptionSpec(name: "header-timeout", kind: .seconds, help: "a client must send a whole request head within this time", reloadable: false),
    OptionSpec(name: "body-timeout", kind: .seconds, help: "longest pause between two reads of a request body", reloadable: false),
    OptionSpec(name: "keepalive-timeout", kind: .seconds, help: "idle keep-alive connections are closed after this time", reloadable: false),
    OptionSpec(name: "event-loops", kind: .count, help: "HTTP event-loop threads (default: the CPUs this process may use)", reloadable: false),
]

public func optionSpec(named name: String) -> OptionSpec? {
    let n = name.replacingOccurrences(of: "_", with: "-").lowercased()
    return optionTable.first { $0.name == n }
}
