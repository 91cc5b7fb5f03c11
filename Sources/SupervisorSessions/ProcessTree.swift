import Foundation
import Glibc

/// A process and everything it started, read from /proc: CPU, memory and tasks summed over the tree.
public struct TreeUsage: Sendable, Equatable {
    public var cpuSeconds: Double = 0
    public var rssBytes = 0
    public var tasks = 0
    public var processes = 0
}

public enum ProcessTree {
    /// The live processes among `roots` and every process whose parent chain leads to one of them or that
    /// is in process group `group`, with their start times (to tell a reused pid from the same process).
    public static func members(of roots: Set<pid_t>, group: pid_t) -> [pid_t: UInt64] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [:] }
        var table: [pid_t: (ppid: pid_t, pgrp: pid_t, start: UInt64)] = [:]
        for e in entries {
            guard let p = pid_t(e), let st = ChimeraXProcess.stat(of: p) else { continue }
            table[p] = st
        }
        var known = roots
        var found: [pid_t: UInt64] = [:]
        for r in roots { if let st = table[r] { found[r] = st.start } }
        var changed = true
        while changed {
            changed = false
            for (p, st) in table where !known.contains(p) && (known.contains(st.ppid) || st.pgrp == group) {
                known.insert(p)
                found[p] = st.start
                changed = true
            }
        }
        return found
    }

    /// CPU (user + system, including reaped children's), resident memory and threads of `pids`.
    public static func usage(of pids: [pid_t]) -> TreeUsage {
        var u = TreeUsage()
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        for p in pids {
            guard let stat = try? String(contentsOfFile: "/proc/\(p)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { continue }
            let f = stat[stat.index(after: close)...].split(separator: " ")
            // After comm: state(0) ppid(1) … utime(11) stime(12) cutime(13) cstime(14) … num_threads(17) … rss(21) pages.
            guard f.count > 21, f[0] != "Z" else { continue }
            let cpu = [11, 12, 13, 14].reduce(0.0) { $0 + (Double(f[$1]) ?? 0) }
            u.cpuSeconds += cpu / ticks
            u.tasks += Int(f[17]) ?? 0
            u.rssBytes += (Int(f[21]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
            u.processes += 1
        }
        return u
    }
}
