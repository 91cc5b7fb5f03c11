import CSystemd
import Glibc

/// sd_notify(3): READY=1, STATUS=, RELOADING=1, STOPPING=1, WATCHDOG=1. Does nothing without NOTIFY_SOCKET.
public struct Notifier: Sendable {
    public init() {}

    /// True when a service manager listens (NOTIFY_SOCKET set).
    public var isActive: Bool { getenv("NOTIFY_SOCKET") != nil }

    /// Sends newline-separated assignments; returns false if the manager could not be told.
    @discardableResult
    public func notify(_ assignments: String) -> Bool {
        sd_notify(0, assignments) >= 0
    }

    public func ready(status: String) { notify("READY=1\nSTATUS=\(status)") }
    public func status(_ s: String) { notify("STATUS=\(s)") }
    public func stopping(status: String) { notify("STOPPING=1\nSTATUS=\(status)") }
    public func watchdog() { notify("WATCHDOG=1") }

    /// RELOADING=1 with MONOTONIC_USEC, as Type=notify-reload requires.
    public func reloading() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let usec = UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000
        notify("RELOADING=1\nMONOTONIC_USEC=\(usec)\nSTATUS=Reloading configuration")
    }

    /// The watchdog interval if WATCHDOG_USEC is set for this process, in seconds.
    public func watchdogInterval() -> Double? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return Double(usec) / 1e6
    }
}

/// Sockets passed by systemd (LISTEN_FDS / LISTEN_FDNAMES), read once and removed from the environment.
public struct ActivatedSockets: Sendable {
    public let sockets: [(fd: Int32, name: String)]

    public static func take() -> ActivatedSockets {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let n = sd_listen_fds_with_names(1, &names)
        guard n > 0 else { return ActivatedSockets(sockets: []) }
        var out: [(Int32, String)] = []
        for i in 0..<Int(n) {
            var name = "unknown"
            if let names, let p = names[i] {
                name = String(decoding: UnsafeRawBufferPointer(start: p, count: strlen(p)), as: UTF8.self)
                free(p)
            }
            out.append((SD_LISTEN_FDS_START + Int32(i), name))
        }
        free(names)
        return ActivatedSockets(sockets: out)
    }

    /// `"unix"` or `"tcp"` for a passed socket: by its name (`api` = Unix, `http` = TCP), else by its family.
    public static func kind(of fd: Int32, name: String) -> String {
        if name == "api" { return "unix" }
        if name == "http" { return "tcp" }
        return sd_is_socket_unix(fd, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 ? "unix" : "tcp"
    }
}
