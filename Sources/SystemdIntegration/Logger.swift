import CSystemd
import Foundation
import Glibc
import Synchronization

/// Log severities (syslog numbering: smaller is more severe).
public enum Severity: Int, Sendable, Comparable {
    case error = 3, warning = 4, notice = 5, info = 6, debug = 7

    public static func < (a: Severity, b: Severity) -> Bool { a.rawValue > b.rawValue }

    public var name: String {
        switch self {
        case .error: return "error"
        case .warning: return "warning"
        case .notice: return "notice"
        case .info: return "info"
        case .debug: return "debug"
        }
    }

    public init?(name: String) {
        switch name {
        case "error": self = .error
        case "warning": self = .warning
        case "notice": self = .notice
        case "info": self = .info
        case "debug": self = .debug
        default: return nil
        }
    }
}

/// One log record, kept in a ring for `/management/logs`.
public struct LogRecord: Sendable {
    public let timestamp: Date
    public let severity: Severity
    public let message: String
    public let fields: [(String, String)]
}

/// Structured logging: journal records with fields (SESSION_ID=, USER_ID=...) when stderr is the journal
/// (`JOURNAL_STREAM` names our stderr), one logfmt line per record on stderr otherwise.
public final class Logger: Sendable {
    private let minimum: Atomic<Int>
    private let toJournal: Bool
    private let recent = Mutex<(items: [LogRecord], next: Int)>(([], 0))
    private let ringSize: Int
    private let identifier: String

    public init(level: Severity = .info, identifier: String = "chimerax-supervisor", ringSize: Int = 2000,
                forceStderr: Bool = false)
    {
        minimum = Atomic(level.rawValue)
        self.identifier = identifier
        self.ringSize = ringSize
        toJournal = !forceStderr && Logger.stderrIsJournal()
    }

    public var level: Severity {
        get { Severity(rawValue: minimum.load(ordering: .relaxed)) ?? .info }
        set { minimum.store(newValue.rawValue, ordering: .relaxed) }
    }

    public var writesToJournal: Bool { toJournal }

    /// JOURNAL_STREAM is `device:inode` of the stream systemd connected; it counts only if it is still our stderr.
    static func stderrIsJournal() -> Bool {
        guard let js = ProcessInfo.processInfo.environment["JOURNAL_STREAM"] else { return false }
        let parts = js.split(separator: ":")
        guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(2, &st) == 0 else { return false }
        return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
    }

    public func error(_ m: String, _ f: [(String, String)] = []) { log(.error, m, f) }
    public func warning(_ m: String, _ f: [(String, String)] = []) { log(.warning, m, f) }
    public func notice(_ m: String, _ f: [(String, String)] = []) { log(.notice, m, f) }
    public func info(_ m: String, _ f: [(String, String)] = []) { log(.info, m, f) }
    public func debug(_ m: String, _ f: [(String, String)] = []) { log(.debug, m, f) }

    public func log(_ severity: Severity, _ message: String, _ fields: [(String, String)] = []) {
        guard severity.rawValue <= minimum.load(ordering: .relaxed) else { return }
        let record = LogRecord(timestamp: Date(), severity: severity, message: message, fields: fields)
        recent.withLock { r in
            if r.items.count < ringSize { r.items.append(record) } else { r.items[r.next] = record }
            r.next = (r.next + 1) % ringSize
        }
        if toJournal { journal(record) } else { stderrLine(record) }
    }

    /// The most recent records, oldest first.
    public func recentRecords() -> [LogRecord] {
        recent.withLock { r in
            r.items.count < ringSize ? r.items : Array(r.items[r.next...] + r.items[..<r.next])
        }
    }

    private func journal(_ r: LogRecord) {
        var entries = ["MESSAGE=\(r.message)", "PRIORITY=\(r.severity.rawValue)", "SYSLOG_IDENTIFIER=\(identifier)"]
        for (k, v) in r.fields {
            // Journal field names: uppercase letters, digits and underscores, not starting with an underscore.
            let name = String(k.uppercased().map { ($0.isLetter || $0.isNumber) && $0.isASCII ? $0 : "_" }).drop { $0 == "_" }
            if !name.isEmpty { entries.append("\(name)=\(v)") }
        }
        let cstrs = entries.map { strdup($0)! }
        defer { cstrs.forEach { free($0) } }
        var iov = cstrs.map { iovec(iov_base: UnsafeMutableRawPointer($0), iov_len: strlen($0)) }
        let rc = sd_journal_sendv(&iov, Int32(iov.count))
        if rc < 0 { stderrLine(r) }
    }

    private func stderrLine(_ r: LogRecord) {
        var line = "ts=\(Timestamp.rfc3339(r.timestamp)) level=\(r.severity.name) msg=\(Logger.quote(r.message))"
        for (k, v) in r.fields { line += " \(k)=\(Logger.quote(v))" }
        line += "\n"
        _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
    }

    /// logfmt quoting: bare when safe, else double-quoted with escapes.
    static func quote(_ s: String) -> String {
        if !s.isEmpty && s.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0 != "\"" && $0 != "=" && $0 != "\\" && $0.value != 0x7F }) {
            return s
        }
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if c.value < 0x20 || c.value == 0x7F { out += String(format: "\\u%04x", c.value) } else { out.unicodeScalars.append(c) }
            }
        }
        return out + "\""
    }
}

/// RFC 3339 UTC timestamps with milliseconds (`2026-11-22T13:00:00.123Z`), as API.md §2 wants.
public enum Timestamp {
    public static func rfc3339(_ date: Date) -> String {
        let ms = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
        var t = time_t(ms / 1000)
        var tmv = tm()
        gmtime_r(&t, &tmv)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tmv.tm_year + 1900, tmv.tm_mon + 1, tmv.tm_mday,
                      tmv.tm_hour, tmv.tm_min, tmv.tm_sec, Int(ms % 1000))
    }
}
