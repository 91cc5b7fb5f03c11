import CShim
import Foundation
import Glibc
import Synchronization

/// The durable store: an append-only, checksummed log with group commit, snapshots and compaction, and the
/// state it describes in memory with its indexes.
///
/// A write is acknowledged (its completion called, or `write` returning) only after `fdatasync` returned for
/// the frame that holds it; concurrent writes share one frame and one `fdatasync`. The in-memory state
/// changes only after that, so a reader never sees what could still be lost. A failed write (disk full, I/O
/// error) leaves nothing behind: the file is cut back to its last good frame, the caller gets
/// `.unavailable`, `isHealthy` turns false, and a probe every second brings it back when the disk takes
/// writes again.
public final class Store: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is inside `shared` (a Mutex) or owned by the committer thread
    // (`fd`, `logEnd`, `generation`, `logPath`: touched only in `commitLoop` and `close` after it stopped).

    public struct Options: Sendable {
        /// Start a new log and write a snapshot when the log passes this size.
        public var compactionBytes = 64 << 20
        public var format = StoreFormat.current
        /// Most records in one frame (a bigger batch is split across frames, still one fsync).
        public var maxRecordsPerFrame = 4096
        public init() {}
    }

    public typealias Completion = @Sendable (StoreError?) -> Void

    private struct Pending {
        var mutations: [Mutation]
        var completion: Completion
    }

    private struct Shared {
        var pending: [Pending] = []
        var healthy = true
        var lastError: StoreError?
        var closing = false
        var compacting = false
        var bytesOnDisk = 0
        var writes = 0
        var flushes = 0
        var failures = 0
        var compactions = 0
    }

    /// Counters for `/metrics`.
    public struct Statistics: Sendable {
        public let healthy: Bool
        public let bytesOnDisk: Int
        public let writes: Int
        public let flushes: Int
        public let failures: Int
        public let compactions: Int
    }

    public let directory: String
    public let stateDirectory: String
    public let options: Options
    private let shared: Mutex<Shared>
    /// The records, apart from the commit bookkeeping so that reads inline into callers.
    @usableFromInline let stateBox: ReadWriteBox<StoreState>
    /// Moves (under the write lock, before they are applied) with every batch that changes a user or a device
    /// session: caches of authenticated identities compare it to know they are still true.
    private let identityChanges = Atomic<UInt64>(0)
    private let wakeup = NSCondition()
    private var fd: Int32 = -1
    private var logEnd = 0
    private var generation: UInt64 = 1
    private var nextSequence: UInt64 = 1
    private var logPath = ""
    private let lockFD: Int32
    private var committer: Thread?
    private let stopped = DispatchSemaphore(value: 0)
    /// What recovery found at open, for the log.
    public let recoveryReport: String

    /// Opens (or creates) the store under `stateDirectory` (`<state-dir>/store`), locks it against a second
    /// process, and recovers its state.
    public init(stateDirectory: String, options: Options = Options()) throws(StoreError) {
        self.stateDirectory = stateDirectory
        self.directory = stateDirectory + "/store"
        self.options = options
        let oldMask = umask(0o077)
        defer { umask(oldMask) }
        try FileIO.ensurePrivateDirectory(stateDirectory)
        lockFD = try Store.lock(stateDirectory + "/lock")
        do throws(StoreError) {
            try FileIO.ensurePrivateDirectory(directory)
            for name in try FileIO.list(directory) where name.hasSuffix(".tmp") { unlink(directory + "/" + name) }
            let t0 = monotonicSeconds()
            var r = try Recovery.recover(directory: directory, format: options.format)
            generation = r.generation
            nextSequence = r.nextSequence
            logPath = directory + "/" + StoreFiles.log(generation)
            if r.upgradedFrom != nil {
                try Store.upgrade(&r, directory: directory, format: options.format)
                generation = r.generation
                logPath = directory + "/" + StoreFiles.log(generation)
            }
            if r.logExists {
                fd = try FileIO.openFile(logPath, O_RDWR)
                if r.droppedTailBytes > 0 || FileIO.fileSize(logPath) > r.logEnd {
                    try FileIO.truncate(fd, to: r.logEnd, path: logPath)
                    try FileIO.sync(fd, path: logPath)
                }
                logEnd = r.logEnd
            } else {
                (fd, logEnd) = try Store.createLog(directory: directory, generation: generation, format: options.format)
            }
            try Store.removeObsolete(directory: directory, keepingFrom: generation)
            var report = String(format: "recovered %d records in %.3f s (generation %llu)", r.records, monotonicSeconds() - t0, generation)
            if r.droppedTailBytes > 0 { report += "; dropped a torn last write of \(r.droppedTailBytes) bytes" }
            if let v = r.upgradedFrom { report += "; upgraded from format version \(v) to \(options.format.version)" }
            recoveryReport = report
            var s = Shared()
            s.bytesOnDisk = Store.diskBytes(directory)
            shared = Mutex(s)
            stateBox = ReadWriteBox(r.state)
        } catch {
            Glibc.close(lockFD)
            throw error
        }
        let thread = Thread { [unowned self] in commitLoop() }
        thread.name = "store-commit"
        committer = thread
        thread.start()
    }

    /// Writes `mutations` as one atomic unit and calls `completion` once they are durable (nil) or failed.
    /// The completion runs on the store's commit thread: keep it short.
    public func write(_ mutations: [Mutation], completion: @escaping Completion) {
        let closed = shared.withLock { s -> Bool in
            if s.closing { return true }
            s.pending.append(Pending(mutations: mutations, completion: completion))
            return false
        }
        if closed { return completion(StoreError(.closed, "the store is closed")) }
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
    }

    /// Writes and waits until durable. For command-line tools and threads that may block.
    public func write(_ mutations: [Mutation]) throws(StoreError) {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<StoreError?>(nil)
        write(mutations) { e in
            result.withLock { $0 = e }
            done.signal()
        }
        done.wait()
        if let e = result.withLock({ $0 }) { throw e }
    }

    /// A consistent copy of the state (cheap: copy-on-write).
    public var state: StoreState { stateBox.withReadLock { copy $0 } }

    /// Reads from the state under the lock. (Hot paths get a lookup of their own in this module: through this
    /// generic closure from another module the optimizer has been seen to copy the whole state.)
    /// Inlinable so callers get a specialized copy: a generic call across modules cost more than the lookup.
    @inlinable
    public func read<T>(_ body: (borrowing StoreState) -> T) -> T { stateBox.withReadLock { body($0) } }

    /// The device session of a token hash and its user, looked up under one read lock (every authenticated
    /// request: done here, where the state is borrowed in place; through `read` from another module the
    /// optimizer copied the whole state).
    public func deviceSessionAndUser(token: TokenKey) -> (DeviceSession, User)? {
        stateBox.withReadLock { s in
            guard let d = s.deviceSession(token: token), let u = s.users[d.userID] else { return nil }
            return (d, u)
        }
    }

    /// A number that changes whenever a user or a device session changes, before the change can be read (it
    /// moves under the write lock, ahead of the change). A reader that saw the same number before reading
    /// something and again later knows that thing has not changed in between.
    public var identityGeneration: UInt64 { identityChanges.load(ordering: .acquiring) }

    /// False after a write failed, until a write or probe succeeds again.
    public var isHealthy: Bool { shared.withLock { $0.healthy } }

    public var lastError: StoreError? { shared.withLock { $0.lastError } }

    public var statistics: Statistics {
        shared.withLock { s in
            Statistics(healthy: s.healthy, bytesOnDisk: s.bytesOnDisk, writes: s.writes, flushes: s.flushes, failures: s.failures, compactions: s.compactions)
        }
    }

    /// Finishes pending writes, stops the commit thread, releases the lock.
    public func close() {
        let already = shared.withLock { s -> Bool in
            let was = s.closing
            s.closing = true
            return was
        }
        if already { return }
        wakeup.lock()
        wakeup.signal()
        wakeup.unlock()
        stopped.wait()
        // Wait for a compaction in progress, so its files are complete or absent.
        while shared.withLock({ $0.compacting }) { usleep(1_000) }
        Glibc.close(fd)
        Glibc.close(lockFD)
    }

    deinit {
        if !shared.withLock({ $0.closing }) { close() }
    }

    // MARK: The commit thread

    private func commitLoop() {
        var lastProbe = monotonicSeconds()
        while true {
            wakeup.lock()
            var batch: [Pending] = []
            var closing = false
            while true {
                (batch, closing) = shared.withLock { s in
                    let b = s.pending
                    s.pending = []
                    return (b, s.closing)
                }
                if !batch.isEmpty || closing { break }
                if !isHealthy && monotonicSeconds() - lastProbe >= 1 { break }
                _ = wakeup.wait(until: Date(timeIntervalSinceNow: isHealthy ? 3600 : 1))
            }
            wakeup.unlock()
            if batch.isEmpty && closing { break }
            var probe = false
            if batch.isEmpty {
                // Unhealthy and idle: probe with an empty record so readiness comes back by itself.
                lastProbe = monotonicSeconds()
                batch = [Pending(mutations: [.noop], completion: { _ in })]
                probe = true
            }
            commit(batch, probe: probe)
            if logEnd >= options.compactionBytes && isHealthy { startCompaction() }
        }
        stopped.signal()
    }

    /// Writes one frame group and syncs; `probe` batches are not counted in the statistics.
    private func commit(_ batch: [Pending], probe: Bool = false) {
        var records: [[UInt8]] = []
        for p in batch {
            for m in p.mutations {
                var r: [UInt8] = []
                m.encode(into: &r)
                records.append(r)
            }
        }
        var bytes: [UInt8] = []
        var seq = nextSequence
        var i = 0
        while i < records.count {
            let n = min(options.maxRecordsPerFrame, records.count - i)
            bytes.append(contentsOf: LogFormat.frame(records: Array(records[i..<(i + n)]), firstSequence: seq))
            seq += UInt64(n)
            i += n
        }
        var failure: StoreError?
        do throws(StoreError) {
            try FileIO.pwriteAll(fd, bytes, at: logEnd, path: logPath)
            try FileIO.sync(fd, path: logPath)
        } catch {
            failure = error
            // Nothing half-written stays: cut the file back to the last good frame (best effort; a torn
            // tail left by a failed cut is dropped at the next start, and was never acknowledged).
            if ftruncate(fd, off_t(logEnd)) == 0 { _ = fdatasync(fd) }
        }
        if let failure {
            shared.withLock { s in
                s.healthy = false
                s.lastError = failure
                if !probe { s.failures += batch.count }
            }
            for p in batch { p.completion(failure) }
            return
        }
        logEnd += bytes.count
        nextSequence = seq
        stateBox.withWriteLock { state in
            if batch.contains(where: { $0.mutations.contains(where: \.changesIdentity) }) {
                identityChanges.wrappingAdd(1, ordering: .releasing)
            }
            for p in batch {
                for m in p.mutations { state.apply(m) }
            }
        }
        shared.withLock { s in
            s.healthy = true
            s.lastError = nil
            s.bytesOnDisk += bytes.count
            if !probe {
                s.writes += batch.count
                s.flushes += 1
            }
        }
        for p in batch { p.completion(nil) }
    }

    /// Rotates to a new log now and writes the snapshot of the state at this point in the background; the old
    /// snapshot and logs go once the new snapshot is durable. A crash at any point recovers from the files
    /// present (older snapshot + both logs, or newer snapshot + newer log).
    private func startCompaction() {
        let started = shared.withLock { s -> Bool in
            if s.compacting { return false }
            s.compacting = true
            return true
        }
        guard started else { return }
        let newGeneration = generation + 1
        let newLog: (Int32, Int)
        do throws(StoreError) {
            newLog = try Store.createLog(directory: directory, generation: newGeneration, format: options.format)
        } catch {
            shared.withLock { $0.compacting = false }
            return
        }
        Glibc.close(fd)
        (fd, logEnd) = newLog
        generation = newGeneration
        logPath = directory + "/" + StoreFiles.log(newGeneration)
        let snapshotState = state
        let seq = nextSequence
        let dir = directory
        let format = options.format
        let perFrame = options.maxRecordsPerFrame
        let thread = Thread { [self] in
            var written = 0
            do throws(StoreError) {
                try Store.writeSnapshot(snapshotState, directory: dir, generation: newGeneration, format: format, firstSequence: seq, perFrame: perFrame)
                try Store.removeObsolete(directory: dir, keepingFrom: newGeneration)
                written = 1
            } catch {
                // The logs still hold everything; the next compaction tries again.
            }
            let bytes = Store.diskBytes(dir)
            shared.withLock { s in
                s.compactions += written
                s.compacting = false
                s.bytesOnDisk = bytes
            }
        }
        thread.name = "store-snapshot"
        thread.start()
    }

    // MARK: Files

    static func createLog(directory: String, generation: UInt64, format: StoreFormat) throws(StoreError) -> (Int32, Int) {
        let path = directory + "/" + StoreFiles.log(generation)
        let fd = try FileIO.openFile(path, O_RDWR | O_CREAT | O_TRUNC)
        do throws(StoreError) {
            try FileIO.pwriteAll(fd, LogFormat.header(magic: LogFormat.logMagic, version: format.version, generation: generation), at: 0, path: path)
            try FileIO.sync(fd, path: path, dataOnly: false)
            try FileIO.syncDirectory(directory)
        } catch {
            Glibc.close(fd)
            unlink(path)
            throw error
        }
        return (fd, LogFormat.headerSize)
    }

    static func writeSnapshot(_ state: StoreState, directory: String, generation: UInt64, format: StoreFormat, firstSequence: UInt64, perFrame: Int) throws(StoreError) {
        var chunks: [[UInt8]] = [LogFormat.header(magic: LogFormat.snapshotMagic, version: format.version, generation: generation)]
        let all = state.snapshotMutations()
        var i = 0
        while i < all.count {
            let n = min(perFrame, all.count - i)
            let records = all[i..<(i + n)].map { m -> [UInt8] in
                var r: [UInt8] = []
                m.encode(into: &r)
                return r
            }
            chunks.append(LogFormat.frame(records: records, firstSequence: firstSequence))
            i += n
        }
        var count: [UInt8] = []
        LogFormat.put64(&count, UInt64(all.count))
        chunks.append(LogFormat.frame(payload: count, count: 0, firstSequence: firstSequence, magic: LogFormat.endMagic))
        try FileIO.writeAtomically(directory + "/" + StoreFiles.snapshot(generation), chunks: chunks, directory: directory)
    }

    /// Removes snapshots and logs older than generation `g` once snapshot `g` exists.
    static func removeObsolete(directory: String, keepingFrom g: UInt64) throws(StoreError) {
        let names = try FileIO.list(directory)
        guard names.contains(StoreFiles.snapshot(g)) else { return }
        var removed = false
        for name in names {
            let old = StoreFiles.generation(name, prefix: "log-").map { $0 < g } ?? false
                || StoreFiles.generation(name, prefix: "snapshot-").map { $0 < g } ?? false
            if old {
                unlink(directory + "/" + name)
                removed = true
            }
        }
        if removed { try FileIO.syncDirectory(directory) }
    }

    /// Rewrites an older-format store in the current format: the old files are moved to
    /// `upgrade-backup-v<N>-<time>/` first, then a snapshot and a fresh log are written.
    static func upgrade(_ r: inout Recovered, directory: String, format: StoreFormat) throws(StoreError) {
        let backup = directory + "/upgrade-backup-v\(r.upgradedFrom!)-\(Int(time(nil)))"
        try FileIO.ensurePrivateDirectory(backup)
        for name in try FileIO.list(directory) where name.hasPrefix("log-") || name.hasPrefix("snapshot-") {
            guard rename(directory + "/" + name, backup + "/" + name) == 0 else {
                throw StoreError(.unavailable, "cannot move \(name) to \(backup)", errno: errno)
            }
        }
        try FileIO.syncDirectory(directory)
        r.generation += 1
        try writeSnapshot(r.state, directory: directory, generation: r.generation, format: format, firstSequence: r.nextSequence, perFrame: 4096)
        r.logExists = false
    }

    static func lock(_ path: String) throws(StoreError) -> Int32 {
        let fd = try FileIO.openFile(path, O_RDWR | O_CREAT)
        let e = cshim_flock_exclusive(fd)
        if e != 0 {
            let holder = (try? FileIO.readAll(path)).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            Glibc.close(fd)
            if e == EWOULDBLOCK {
                throw StoreError(.locked, "the state directory \(path.dropLast(5)) is in use by process \(holder.isEmpty ? "(unknown)" : holder) "
                    + "(lock file \(path)); stop it first or use another --state-dir")
            }
            throw StoreError(.unavailable, "cannot lock \(path)", errno: e)
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return fd
    }

    static func diskBytes(_ directory: String) -> Int {
        ((try? FileIO.list(directory)) ?? []).reduce(0) { $0 + FileIO.fileSize(directory + "/" + $1) }
    }

    // MARK: Offline inspection

    /// Every file of the store at `stateDirectory` and what is wrong with it (does not need the lock).
    public static func check(stateDirectory: String) throws(StoreError) -> [FileReport] {
        try Recovery.check(directory: stateDirectory + "/store")
    }

    /// Repairs damage: keeps what comes before it, copies the rest aside. Takes the lock (no daemon may run).
    public static func repair(stateDirectory: String) throws(StoreError) -> [String] {
        let fd = try lock(stateDirectory + "/lock")
        defer { Glibc.close(fd) }
        return try Recovery.repair(directory: stateDirectory + "/store")
    }
}

func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
