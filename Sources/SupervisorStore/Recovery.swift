import Glibc

/// The format version and how older versions become this one.
public struct StoreFormat: Sendable {
    /// Version written into every new file.
    public var version: UInt32
    /// `upgrades[v]` turns a record (kind byte · fields) of version `v` into version `v + 1`.
    public var upgrades: [UInt32: @Sendable ([UInt8]) -> [UInt8]]

    public init(version: UInt32, upgrades: [UInt32: @Sendable ([UInt8]) -> [UInt8]] = [:]) {
        self.version = version
        self.upgrades = upgrades
    }

    /// The format this build writes. Version 1 is the first; add an upgrade step with every increase.
    /// Version 2 added the record type `trimTranscript` (11); version 1 records are valid version 2 records
    /// unchanged, and the bump keeps a version 1 program from reading a file it would call damaged.
    public static let current = StoreFormat(version: 2, upgrades: [1: { $0 }])

    func upgrade(_ record: ArraySlice<UInt8>, from v: UInt32) -> [UInt8] {
        var r = Array(record)
        var at = v
        while at < version {
            if let step = upgrades[at] { r = step(r) }
            at += 1
        }
        return r
    }
}

/// Names of the files in the store directory.
enum StoreFiles {
    static func log(_ g: UInt64) -> String { "log-" + hex(g) }
    static func snapshot(_ g: UInt64) -> String { "snapshot-" + hex(g) }

    static func hex(_ g: UInt64) -> String {
        let s = String(g, radix: 16)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }

    static func generation(_ name: String, prefix: String) -> UInt64? {
        guard name.hasPrefix(prefix), name.utf8.count == prefix.utf8.count + 16 else { return nil }
        return UInt64(name.dropFirst(prefix.count), radix: 16)
    }
}

/// What recovery rebuilt, and where writing continues.
struct Recovered {
    var state = StoreState()
    var generation: UInt64 = 1
    var logEnd = LogFormat.headerSize
    var nextSequence: UInt64 = 1
    /// Bytes of a torn last frame that were dropped.
    var droppedTailBytes = 0
    /// The oldest format version found, when older than the current one.
    var upgradedFrom: UInt32?
    var logExists = false
    var records = 0
}

/// One file's findings, for `state check`.
public struct FileReport: Sendable {
    public let name: String
    public let bytes: Int
    public let version: UInt32?
    public let records: Int
    /// Offset of damage, and whether it is a torn tail (dropped at start) rather than damage in the middle.
    public let damageOffset: Int?
    public let tornTail: Bool
    public let problem: String?
}

enum Recovery {
    /// Rebuilds the state from the newest complete snapshot and the logs after it.
    static func recover(directory: String, format: StoreFormat) throws(StoreError) -> Recovered {
        let names = try FileIO.list(directory)
        let snapshots = names.compactMap { StoreFiles.generation($0, prefix: "snapshot-") }.sorted()
        let logs = names.compactMap { StoreFiles.generation($0, prefix: "log-") }.sorted()
        var r = Recovered()
        var base: UInt64 = logs.first ?? 1
        if let g = snapshots.last {
            let path = directory + "/" + StoreFiles.snapshot(g)
            let bytes = try FileIO.readAll(path)
            guard let scan = LogFormat.scan(bytes) else { throw damaged(path, 0, "not a snapshot file (bad header)") }
            guard scan.header.isSnapshot else { throw damaged(path, 0, "not a snapshot file") }
            try checkVersion(scan.header.version, path: path, format: format, into: &r)
            guard !scan.damaged, scan.hasEnd else {
                throw damaged(path, scan.validEnd, scan.damaged ? "checksum mismatch" : "snapshot has no end marker")
            }
            for f in scan.frames where f.magic == LogFormat.frameMagic {
                try apply(f, version: scan.header.version, format: format, path: path, into: &r)
            }
            base = g
            r.generation = g
        } else if let first = logs.first, first != 1 {
            throw damaged(directory + "/" + StoreFiles.log(first), 0, "the snapshot before this log is missing")
        }
        let replay = logs.filter { $0 >= base }
        for (i, g) in replay.enumerated() {
            let path = directory + "/" + StoreFiles.log(g)
            let bytes = try FileIO.readAll(path)
            let isLast = i == replay.count - 1
            guard let scan = LogFormat.scan(bytes) else {
                // A log whose header never reached the disk (crash while creating it) holds nothing acknowledged.
                if isLast && bytes.count < LogFormat.headerSize {
                    r.generation = g
                    r.logExists = false
                    return r
                }
                throw damaged(path, 0, "not a log file (bad header)")
            }
            guard !scan.header.isSnapshot else { throw damaged(path, 0, "a snapshot where a log belongs") }
            try checkVersion(scan.header.version, path: path, format: format, into: &r)
            for f in scan.frames { try apply(f, version: scan.header.version, format: format, path: path, into: &r) }
            if scan.damaged {
                if !isLast || scan.damageFollowedByValidFrame {
                    throw damaged(path, scan.validEnd, "checksum mismatch")
                }
                r.droppedTailBytes = bytes.count - scan.validEnd
            }
            r.generation = g
            r.logEnd = scan.validEnd
            r.logExists = true
        }
        return r
    }

    private static func checkVersion(_ v: UInt32, path: String, format: StoreFormat, into r: inout Recovered) throws(StoreError) {
        if v > format.version {
            throw StoreError(.tooNew, "\(path) has format version \(v), newer than this program's \(format.version); "
                + "run the newer chimerax-supervisor", file: path)
        }
        if v < format.version { r.upgradedFrom = min(r.upgradedFrom ?? v, v) }
    }

    private static func apply(_ f: LogFormat.Frame, version: UInt32, format: StoreFormat, path: String, into r: inout Recovered) throws(StoreError) {
        for rec in f.records {
            let m: Mutation
            do throws(StoreError) {
                m = version == format.version ? try Mutation.decode(rec) : try Mutation.decode(format.upgrade(rec, from: version)[...])
            } catch {
                throw damaged(path, f.offset, "a record in an intact frame does not decode: \(error.message)")
            }
            r.state.apply(m)
            r.records += 1
        }
        r.nextSequence = max(r.nextSequence, f.firstSequence + UInt64(f.records.count))
    }

    static func damaged(_ path: String, _ offset: Int, _ what: String) -> StoreError {
        StoreError(.corrupt, "\(path) is damaged at byte \(offset) (\(what))", file: path, offset: offset)
    }

    /// Every file of the store and what is wrong with it, without changing anything.
    static func check(directory: String) throws(StoreError) -> [FileReport] {
        var out: [FileReport] = []
        let names = try FileIO.list(directory).filter { $0.hasPrefix("log-") || $0.hasPrefix("snapshot-") }
        let lastLog = names.filter { StoreFiles.generation($0, prefix: "log-") != nil }.last
        for name in names where StoreFiles.generation(name, prefix: "log-") != nil || StoreFiles.generation(name, prefix: "snapshot-") != nil {
            let bytes = try FileIO.readAll(directory + "/" + name)
            guard let scan = LogFormat.scan(bytes) else {
                out.append(FileReport(name: name, bytes: bytes.count, version: nil, records: 0, damageOffset: 0, tornTail: false, problem: "bad header"))
                continue
            }
            let records = scan.frames.filter { $0.magic == LogFormat.frameMagic }.reduce(0) { $0 + $1.records.count }
            var problem: String?
            var torn = false
            if scan.damaged {
                torn = name == lastLog && !scan.damageFollowedByValidFrame
                problem = torn ? "torn last write (dropped at start; never acknowledged)" : "checksum mismatch"
            } else if scan.header.isSnapshot && !scan.hasEnd {
                problem = "snapshot has no end marker"
            }
            out.append(FileReport(name: name, bytes: bytes.count, version: scan.header.version, records: records,
                                  damageOffset: scan.damaged ? scan.validEnd : (problem != nil ? scan.validEnd : nil),
                                  tornTail: torn, problem: problem))
        }
        return out
    }

    /// Keeps everything before each damage and copies the rest aside (`NAME.damaged-TIME`); damaged snapshots
    /// are moved aside whole (the logs are replayed without them only if they reach back far enough).
    /// Returns one line per action.
    static func repair(directory: String) throws(StoreError) -> [String] {
        var actions: [String] = []
        let stamp = String(Int(time(nil)))
        for report in try check(directory: directory) where report.problem != nil && !report.tornTail {
            let path = directory + "/" + report.name
            let aside = path + ".damaged-" + stamp
            if report.name.hasPrefix("snapshot-") || report.damageOffset == 0 {
                guard rename(path, aside) == 0 else { throw StoreError(.unavailable, "cannot move \(path) aside", errno: errno) }
                actions.append("moved \(report.name) aside to \(aside)")
                continue
            }
            let offset = report.damageOffset!
            let bytes = try FileIO.readAll(path)
            try FileIO.writeAtomically(aside, chunks: [Array(bytes[offset...])], directory: directory)
            let fd = try FileIO.openFile(path, O_WRONLY)
            defer { close(fd) }
            try FileIO.truncate(fd, to: offset, path: path)
            try FileIO.sync(fd, path: path, dataOnly: false)
            actions.append("kept \(report.name) up to byte \(offset) (\(report.records) records); copied the \(bytes.count - offset) bytes after it to \(aside)")
        }
        try FileIO.syncDirectory(directory)
        return actions
    }
}
