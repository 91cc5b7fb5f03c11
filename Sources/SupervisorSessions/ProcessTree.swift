import Glibc

/// A process and everything it started, read from /proc: CPU, memory and tasks summed over the tree.
public struct TreeUsage: Sendable, Equatable {
    public var cpuSeconds: Double = 0
    public var rssBytes = 0
    public var tasks = 0
    public var processes = 0

    public init(cpuSeconds: Double = 0, rssBytes: Int = 0, tasks: Int = 0, processes: Int = 0) {
        self.cpuSeconds = cpuSeconds
        self.rssBytes = rssBytes
        self.tasks = tasks
        self.processes = processes
    }
}

/// One line of /proc/PID/stat, the fields the supervisor uses.
public struct ProcStat: Sendable, Equatable {
    public var state: UInt8
    public var ppid: pid_t
    public var pgrp: pid_t
    /// utime + stime + cutime + cstime, in clock ticks (reaped children's CPU included).
    public var cpuTicks: UInt64
    public var threads: Int
    /// Start time in clock ticks after boot: tells a reused pid from the same process.
    public var start: UInt64
    public var rssPages: Int

    public var isZombie: Bool { state == UInt8(ascii: "Z") || state == UInt8(ascii: "X") }

    /// Parses the text of /proc/PID/stat. The command name is in parentheses and may contain anything,
    /// spaces and parentheses included, so fields are counted from the last `)`.
    public static func parse<C: BidirectionalCollection>(_ text: C) -> ProcStat? where C.Element == UInt8 {
        guard let close = text.lastIndex(of: UInt8(ascii: ")")) else { return nil }
        // After ") ": state(0) ppid(1) pgrp(2) … utime(11) stime(12) cutime(13) cstime(14) … num_threads(17)
        // … starttime(19) vsize(20) rss(21).
        var fields: [Int64] = []
        fields.reserveCapacity(22)
        var state: UInt8 = 0
        var i = text.index(after: close)
        var index = -1
        var current: Int64 = 0, negative = false, inField = false
        while i != text.endIndex && fields.count < 22 {
            let c = text[i]
            if c == UInt8(ascii: " ") || c == UInt8(ascii: "\n") {
                if inField {
                    if index > 0 { fields.append(negative ? -current : current) }
                    inField = false
                }
            } else {
                if !inField {
                    inField = true
                    index += 1
                    current = 0
                    negative = false
                    if index == 0 { state = c }
                }
                if index > 0 {
                    if c == UInt8(ascii: "-") { negative = true } else if c >= 48 && c <= 57 { current = current &* 10 &+ Int64(c - 48) } else { return nil }
                }
            }
            i = text.index(after: i)
        }
        if inField && index > 0 && fields.count < 22 { fields.append(negative ? -current : current) }
        // fields[k] is field k+1 after comm (state is not in it).
        guard state != 0, fields.count >= 21 else { return nil }
        func f(_ n: Int) -> Int64 { fields[n - 1] }
        return ProcStat(state: state, ppid: pid_t(truncatingIfNeeded: f(1)), pgrp: pid_t(truncatingIfNeeded: f(2)),
                        cpuTicks: UInt64(max(0, f(11))) + UInt64(max(0, f(12))) + UInt64(max(0, f(13))) + UInt64(max(0, f(14))),
                        threads: Int(f(17)), start: UInt64(max(0, f(19))), rssPages: Int(max(0, f(21))))
    }

    /// Reads /proc/PID/stat (one read into a stack buffer; no Foundation).
    public static func read(_ pid: pid_t) -> ProcStat? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1024) { buf in
            let n = Glibc.read(fd, buf.baseAddress, buf.count)
            guard n > 0 else { return nil }
            return parse(UnsafeBufferPointer(rebasing: buf[0..<n]))
        }
    }
}

/// Every process on the host at one moment, from one pass over /proc: the sampler reads it once per
/// interval and works out every session's tree from it.
public struct ProcessTable: Sendable {
    public var entries: [pid_t: ProcStat] = [:]

    public init(entries: [pid_t: ProcStat] = [:]) { self.entries = entries }

    public static func read() -> ProcessTable {
        var t = ProcessTable()
        guard let dir = opendir("/proc") else { return t }
        defer { closedir(dir) }
        while let e = readdir(dir) {
            let pid: pid_t? = withUnsafeBytes(of: e.pointee.d_name) { raw in
                var v: pid_t = 0
                for c in raw {
                    if c == 0 { break }
                    guard c >= 48 && c <= 57 else { return nil }
                    v = v &* 10 &+ pid_t(c - 48)
                }
                return v > 0 ? v : nil
            }
            if let pid, let st = ProcStat.read(pid) { t.entries[pid] = st }
        }
        return t
    }

    /// The live processes among `roots` (with the start times given, so a reused pid is not taken for the
    /// process) and every process whose parent chain leads to one of them or that is in process group
    /// `group`, with their start times.
    public func members(of roots: [pid_t: UInt64], group: pid_t) -> [pid_t: UInt64] {
        var children: [pid_t: [pid_t]] = [:]
        var found: [pid_t: UInt64] = [:]
        var queue: [pid_t] = []
        for (p, st) in entries where !st.isZombie {
            children[st.ppid, default: []].append(p)
            if st.pgrp == group && found[p] == nil {
                found[p] = st.start
                queue.append(p)
            }
        }
        for (r, start) in roots {
            guard let st = entries[r], !st.isZombie, start == 0 || st.start == start, found[r] == nil else { continue }
            found[r] = st.start
            queue.append(r)
        }
        while let p = queue.popLast() {
            for c in children[p] ?? [] where found[c] == nil {
                found[c] = entries[c]!.start
                queue.append(c)
            }
        }
        return found
    }

    /// CPU, resident memory and threads summed over `pids`.
    public func usage(of pids: some Sequence<pid_t>) -> TreeUsage {
        ProcessTable.sum(pids.compactMap { entries[$0] })
    }

    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// The usage of these processes (zombies count for nothing).
    public static func sum(_ stats: [ProcStat]) -> TreeUsage {
        var u = TreeUsage()
        for st in stats where !st.isZombie {
            u.cpuSeconds += Double(st.cpuTicks) / ticksPerSecond
            u.tasks += st.threads
            u.rssBytes += st.rssPages * pageSize
            u.processes += 1
        }
        return u
    }
}

public enum ProcessTree {
    /// The value of `name` in a process's environment (/proc/PID/environ, as it was at exec), if readable.
    public static func environmentValue(_ name: String, of pid: pid_t) -> String? {
        let fd = open("/proc/\(pid)/environ", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16384)
        while data.count < 1 << 20 {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            data += buf[0..<n]
        }
        let prefix = Array((name + "=").utf8)
        for entry in data.split(separator: 0) where entry.starts(with: prefix) {
            return String(decoding: entry.dropFirst(prefix.count), as: UTF8.self)
        }
        return nil
    }

    /// Usage of exactly these processes, read now (each one's /proc/PID/stat, no scan of /proc); the ones
    /// whose start time differs (the pid was reused) or that are gone count for nothing.
    public static func usage(of pids: [pid_t: UInt64]) -> TreeUsage {
        ProcessTable.sum(pids.compactMap { p, start in ProcStat.read(p).flatMap { $0.start == start ? $0 : nil } })
    }
}
