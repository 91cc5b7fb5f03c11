import CShim
import Foundation
import Glibc
import HTTPServer
import SupervisorConfig
import SupervisorIdentity
import SupervisorSessions
import SupervisorStore
import Synchronization
import SystemdIntegration

/// Why a session could not be made.
enum SessionError: Error {
    case capacityUser(Int)
    case capacityHost(Int)
    case noChimeraX
    case spawn(String)
    case storage(StoreError)
}

/// The ChimeraX sessions of this daemon: records in the store, one runner per live session on the
/// supervision reactor, expiry timers, and the end of each (directory removed, final record written).
final class SessionManager: @unchecked Sendable {
    // @unchecked Sendable: `runners` and `timers` are touched only on the reactor thread; `live` is a Mutex.
    let store: Store
    let logger: Logger
    let reactor: Reactor
    let configuration: @Sendable () -> Configuration
    var runners: [String: SessionRunner] = [:]
    private var timers: [String: UInt64] = [:]
    /// Expiry-warning timers, and the expiry each session was last warned of. Reactor thread.
    private var warningTimers: [String: UInt64] = [:]
    private var warnedOf: [String: Int64] = [:]
    /// ChimeraX processes spawned and not yet registered on the reactor (the orphan sweep leaves them alone).
    private let spawning = Mutex<Set<pid_t>>([])
    /// Adopted orphans were seen at the last sample (so sampling goes on until they are reaped). Reactor thread.
    private var adoptedSeen = false
    /// Live events for `GET …/events`.
    let events = SessionEvents()
    /// Sessions whose structure was sent to ChimeraX (once per session).
    private var structureSent: Set<String> = []
    /// The stored file name of each session's upload (`upload.pdb`…), opened once ready.
    private var uploadNames: [String: String] = [:]
    /// Live records (authoritative while the session runs; persisted on every change).
    let live = Mutex<LiveSessions>(LiveSessions())
    /// Waiters for sessions to end (stopAll).
    private let changed = NSCondition()
    /// Usage sampled over each live session's process tree, and the processes it was summed over.
    private let usage = Mutex<[String: Sample]>([:])
    /// How often the accounting reads /proc (and checks --memory-max).
    static let sampleInterval = 1.0

    struct Sample {
        var usage = TreeUsage()
        var tracked: [pid_t: UInt64] = [:]
    }
    /// Each ChimeraX in a network namespace of its own (--rest-isolation): they come from this pool, which
    /// keeps two made ahead so that a start does not wait for the kernel to build one. Nil: no isolation.
    let namespaces: NetworkNamespacePool?
    /// Session ids with their directories made ahead (the work directory is not reloadable).
    let directories: SessionDirectories

    /// The last command policy built, with the allow-list it was built from.
    let policyCache = Mutex<(allow: [String]?, policy: CommandPolicy)?>(nil)
    /// Each session's command queue. Reactor thread.
    var commandQueues: [String: CommandQueue] = [:]
    /// The next transcript order of each session that has written one in this run.
    let transcriptNext = Mutex<[String: TranscriptCursor]>([:])

    /// A session's next transcript order and its oldest kept one (read from the store once per run, then
    /// kept here: no store read per entry).
    struct TranscriptCursor {
        var next: Int
        var first: Int
    }
    /// stdout and stderr log blocks being assembled, per session. Reactor thread.
    var logBlocks: [String: (out: LogBlocks, err: LogBlocks)] = [:]
    /// For /metrics.
    let counters = Mutex<Counters>(Counters())

    /// Heartbeats received (an atomic: the hot path takes no lock for it).
    let heartbeats = StripedCounter()

    /// The live records, and when each one's activity was last written (one lock for both: a heartbeat
    /// takes it once).
    struct LiveSessions {
        /// A live record, and when its activity was last written to the store.
        struct Entry {
            var record: SessionRecord
            var activityWrittenAt: Int64 = 0
        }
        private var entries: [String: Entry] = [:]
        subscript(id: String) -> SessionRecord? {
            get { entries[id]?.record }
            set {
                if let newValue {
                    entries[id, default: Entry(record: newValue)].record = newValue
                } else {
                    entries[id] = nil
                }
            }
        }
        /// `body` on the entry in place (one lookup, no copy of the record); nil when not live.
        mutating func withEntry<R>(_ id: String, _ body: (inout Entry) -> R) -> R? {
            guard let i = entries.index(forKey: id) else { return nil }
            return body(&entries.values[i])
        }
        var values: LazyMapCollection<Dictionary<String, Entry>.Values, SessionRecord> { entries.values.lazy.map(\.record) }
        var keys: Dictionary<String, Entry>.Keys { entries.keys }
        var count: Int { entries.count }
        var isEmpty: Bool { entries.isEmpty }
        mutating func removeValue(forKey id: String) -> SessionRecord? { entries.removeValue(forKey: id)?.record }
    }

    struct Counters {
        var created = 0
        /// Commands by result: ok, error (ChimeraX's), refused, timeout, busy (queue full), failed.
        var commands: [String: Int] = [:]
        var terminations: [String: Int] = [:]
        /// Create-to-ready seconds, bucketed.
        var spawnBuckets: [Double: Int] = [:]
        var spawnCount = 0
        var spawnSum = 0.0
        static let bounds: [Double] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
    }

    init(store: Store, logger: Logger, configuration: @escaping @Sendable () -> Configuration) throws {
        self.store = store
        self.logger = logger
        self.configuration = configuration
        let isolation = configuration().restIsolation
        let isolate = isolation == "netns" || (isolation == "auto" && NetworkNamespace.available)
        namespaces = isolate ? NetworkNamespacePool(spares: 2) : nil
        directories = SessionDirectories(workDir: configuration().workDir, spares: 2) { name in store.read { $0.sessions[name] != nil } }
        reactor = try Reactor()
        // Orphans of ChimeraX's descendants (a grandchild that double-forked away) become the daemon's
        // children instead of init's: the sampler attributes them to their session (by the environment
        // marker every ChimeraX starts with), kills those of ended sessions, and reaps them.
        if cshim_set_subreaper() != 0 { logger.warning("cannot become a child subreaper; double-forked descendants escape accounting") }
        reactor.start(name: "supervision")
        reactor.execute { [self] in
            scheduleSample()
            scheduleKeepAlive()
        }
    }

    /// Every second: one pass over /proc (off the reactor), then every live session's usage from that table
    /// on the reactor, where the runners are. A session over --memory-max is killed (`out_of_memory`).
    private func scheduleSample() {
        reactor.schedule(at: Reactor.now() + SessionManager.sampleInterval) { [weak self] in
            guard let self else { return }
            guard !runners.isEmpty || adoptedSeen else { return scheduleSample() }
            DispatchQueue.global().async { [self] in
                let table = ProcessTable.read()
                reactor.execute { [self] in
                    adoptOrphans(table)
                    let limit = configuration().memoryMax
                    for (id, runner) in runners where !runner.status.isEnded {
                        record(id, runner.sample(table, memoryLimit: limit), tracked: runner.process.tracked)
                    }
                    scheduleSample()
                }
            }
        }
    }

    /// The environment variable that names a ChimeraX's session in it and everything it starts.
    static let sessionMarker = "CHIMERAX_SUPERVISOR_SESSION"

    /// Reactor thread: the daemon's children that are not ChimeraX processes it started are orphans it
    /// adopted as subreaper. A live one marked with a live session joins that session's tracked descendants
    /// (counted, and killed at its end); any other is killed. Dead ones are reaped.
    private func adoptOrphans(_ table: ProcessTable) {
        let me = getpid()
        // ChimeraX processes of this daemon: registered ones, and ones spawned but not registered yet.
        let mains = Set(runners.values.map(\.process.pid)).union(spawning.withLock { $0 })
        var found = false
        for (pid, st) in table.entries where st.ppid == me && !mains.contains(pid) {
            found = true
            // Adopted at an earlier sample: nothing to read again.
            if !st.isZombie, runners.values.contains(where: { $0.process.descendants[pid] == st.start }) { continue }
            if st.isZombie {
                var status: Int32 = 0
                _ = waitpid(pid, &status, WNOHANG)
                continue
            }
            let id = ProcessTree.environmentValue(SessionManager.sessionMarker, of: pid)
            if let id, let runner = runners[id], !runner.status.isEnded {
                runner.process.adopt(pid, start: st.start)
            } else if let id, runners[id] == nil, live.withLock({ $0[id] }) != nil {
                // Its session is starting (not registered on the reactor yet): the next sample adopts it.
                continue
            } else {
                // The daemon's only children are ChimeraX processes: an orphan of an ended session, or one that
                // cleared its environment, is left by nobody.
                logger.warning("killing an orphan no live session claims", [("SESSION_ID", id ?? "-"), ("pid", "\(pid)")])
                kill(pid, SIGKILL)
            }
        }
        adoptedSeen = found
    }

    /// Keep-alive comments on the open event streams.
    private func scheduleKeepAlive() {
        reactor.schedule(at: Reactor.now() + SessionEvents.keepAliveInterval) { [weak self] in
            guard let self else { return }
            events.sendKeepAlive()
            scheduleKeepAlive()
        }
    }

    /// Keeps a sample; the peak and CPU go into the live record.
    /// Only while the session is live (lock order: `live`, then `usage`), so that a late sample cannot
    /// bring back the entry of an ended session.
    private func record(_ id: String, _ u: TreeUsage, tracked: [pid_t: UInt64]) {
        live.withLock { l in
            guard var r = l[id] else { return }
            r.cpuSeconds = max(r.cpuSeconds, u.cpuSeconds)
            r.memoryPeakBytes = max(r.memoryPeakBytes, u.rssBytes)
            l[id] = r
            usage.withLock { $0[id] = Sample(usage: u, tracked: tracked) }
        }
    }

    /// Usage for the API: for a live session, read now from the processes of the last sample (processes started
    /// since then are counted from the next one, within a second); nil for an ended one.
    func currentUsage(_ r: SessionRecord) -> TreeUsage? {
        guard live.withLock({ $0[r.id] }) != nil, let tracked = usage.withLock({ $0[r.id]?.tracked }) else { return nil }
        let u = ProcessTree.usage(of: tracked)
        record(r.id, u, tracked: tracked)
        return u
    }

    static func now() -> Int64 { IdentityService.wallClock() }

    /// At start: sessions the store says are live have no process any more (a stopped daemon leaves none
    /// running), so they end as `terminated`/`supervisor_shutdown`, and their directories go.
    func recoverAfterRestart() {
        // Uploads a crash left half-received.
        let workDir = configuration().workDir
        for name in (try? FileManager.default.contentsOfDirectory(atPath: workDir)) ?? [] where name.hasPrefix(".incoming-") {
            unlink(workDir + "/" + name)
        }
        let t = SessionManager.now()
        let stale = store.state.sessions.values.filter { !$0.isEnded }
        guard !stale.isEmpty else { return }
        var m: [Mutation] = []
        for var s in stale {
            s.status = "terminated"
            s.terminationReason = "supervisor_shutdown"
            s.endedAt = t
            s.pid = nil
            m.append(.putSession(s))
            removeDirectory(s.directory)
        }
        do {
            try store.write(m)
            logger.notice("sessions of the previous run ended", [("count", "\(stale.count)"), ("reason", "supervisor_shutdown")])
        } catch {
            logger.error("cannot record the end of the previous run's sessions", [("error", "\(error)")])
        }
    }

    /// The record: the live one if it runs, else the stored one.
    func record(_ id: String) -> SessionRecord? {
        if let r = live.withLock({ $0[id] }) { return r }
        return store.read { $0.sessions[id] }
    }

    /// Creates and starts a session. Blocks for the durable write: call off the event loops.
    /// An uploaded structure waiting in the work directory, moved into the session directory at creation.
    struct Upload {
        let path: String
        let storedName: String
        let originalName: String
        let format: String
        let size: Int
    }

    func create(ownerType: String, ownerID: String, name: String, pdbID: String?, upload: Upload? = nil, metadataJSON: String,
                idleTimeout: Int) throws(SessionError) -> SessionRecord {
        let c = configuration()
        guard let chimerax = c.chimerax else { throw .noChimeraX }
        let ownerKey = StoreState.ownerKey(type: ownerType, id: ownerID)
        let id: String, dir: String
        switch directories.take() {
        case .success(let d): (id, dir) = d
        case .failure(let e): throw .spawn(e.message)
        }
        let t = SessionManager.now()
        var rec = SessionRecord(id: id, name: name, ownerType: ownerType, ownerID: ownerID, status: "starting", createdAt: t, lastActivity: t,
                                expiresAt: min(t + Int64(idleTimeout) * 1000, t + Int64(c.maxLifetime) * 1000), idleTimeoutSeconds: idleTimeout,
                                lifetimeEndsAt: t + Int64(c.maxLifetime) * 1000, metadataJSON: metadataJSON, backend: "process", directory: dir)
        if let p = pdbID {
            rec.structureSource = "pdb"
            rec.pdbID = p
        }
        if let u = upload {
            rec.structureSource = "upload"
            rec.structureFilename = u.originalName
            rec.structureFormat = u.format
            rec.structureSizeBytes = u.size
        }
        // Capacity, checked and reserved in one step.
        let refusal: SessionError? = live.withLock { l in
            if l.count >= c.maxSessions { return .capacityHost(c.maxSessions) }
            if l.values.filter({ StoreState.ownerKey(type: $0.ownerType, id: $0.ownerID) == ownerKey }).count >= c.maxSessionsPerUser {
                return .capacityUser(c.maxSessionsPerUser)
            }
            l[id] = rec
            return nil
        }
        if let refusal {
            directories.giveBack(id)
            throw refusal
        }
        events.open(id)
        if let u = upload, rename(u.path, dir + "/" + u.storedName) != 0 {
            let failure = SessionError.spawn("cannot move the upload into place: \(String(cString: strerror(errno)))")
            live.withLock { $0[id] = nil }
            events.close(id)
            removeDirectory(dir)
            throw failure
        }
        var env = ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": dir + "/home", "CHIMERAX_START": dir + "/start", "TMPDIR": dir + "/tmp",
                   "LANG": "C.UTF-8", SessionManager.sessionMarker: id]
        // The stand-in's settings pass through (tests, development); nothing else of the daemon's environment.
        for (k, v) in ProcessInfo.processInfo.environment where k.hasPrefix("CHIMERAX_STANDIN_") { env[k] = v }
        let process: ChimeraXProcess
        do {
            var network: NetworkNamespace?
            if let namespaces {
                network = namespaces.take()
                if network == nil { throw ChimeraXProcess.SpawnError(errno: errno, what: "create a network namespace") }
            }
            process = try ChimeraXProcess(executable: chimerax, arguments: ["--nogui", "--offscreen", "--cmd", "remotecontrol rest start port 0 json true"],
                                          environment: env, directory: dir, network: network, nice: c.chimeraxNice, reactor: reactor)
        } catch {
            live.withLock { $0[id] = nil }
            events.close(id)
            removeDirectory(dir)
            rec.status = "failed"
            rec.terminationReason = "crashed"
            rec.endedAt = SessionManager.now()
            try? store.write([.putSession(rec)])
            throw .spawn("\(error)")
        }
        spawning.withLock { _ = $0.insert(process.pid) }
        // The record is made durable while ChimeraX starts: the write begins once the child has exec'd, so the
        // writer's wake-up and fsync overlap ChimeraX's start, not the spawn, and are not on the way to ready.
        // The 201 waits for it: a session is answered only once its record would survive a crash.
        do {
            try store.write([.putSession(rec)])
        } catch {
            process.killAndReap()
            spawning.withLock { _ = $0.remove(process.pid) }
            live.withLock { $0[id] = nil }
            events.close(id)
            removeDirectory(dir)
            throw .storage(error)
        }
        rec.pid = Int(process.pid)
        // The process backend's limits. --memory-max bounds resident memory, as memory.max does in a cgroup:
        // the accounting kills a tree over it (`out_of_memory`). RLIMIT_AS only stops a runaway between two
        // samples: address space is much larger than resident memory for Python, threads and mapped
        // libraries, so it is set well above (twice the limit plus 1 GiB). No core files in the session
        // directory. (Set right after the spawn: ChimeraX needs far longer than that to start allocating.)
        _ = cshim_set_limit(process.pid, Int32(RLIMIT_CORE.rawValue), 0)
        _ = cshim_set_limit(process.pid, Int32(RLIMIT_AS.rawValue), UInt64(c.memoryMax) * 2 + (1 << 30))
        live.withLock { $0[id] = rec }
        usage.withLock { $0[id] = Sample(tracked: process.tracked) }
        let runner = SessionRunner(id: id, process: process, startTimeout: Double(c.startTimeout), stopGrace: Double(c.stopGrace), reactor: reactor)
        runner.onStatus = { [weak self] s in self?.statusChanged(id, s) }
        runner.onLine = { [weak self] line, isErr in self?.outputLine(id, line, stderr: isErr) }
        runner.onDrained = { [weak self] isErr in self?.outputPaused(id, stderr: isErr) }
        runner.onEnded = { [weak self] s, r, e, tail, survivors in self?.ended(id, s, r, e, tail, survivors) }
        let stored = upload?.storedName
        reactor.execute { [self] in
            if let stored { uploadNames[id] = stored }
            runners[id] = runner
            spawning.withLock { _ = $0.remove(runner.process.pid) }
            runner.start()
            armExpiry(id)
        }
        counters.withLock { $0.created += 1 }
        logger.notice("session starting", [("SESSION_ID", id), ("owner", ownerKey), ("pid", "\(process.pid)")])
        return rec
    }

    enum HeartbeatResult {
        case notFound, forbidden
        case ended(String)
        case alive(status: String, lastActivity: Int64, expiresAt: Int64)
    }

    /// A heartbeat: moves `last_activity` and `expires_at`, with its ownership check in one step, copying
    /// nothing but the answer (the hot path: every tab, every few seconds). The expiry timer is not re-armed
    /// (expiry only moves later here; the timer re-arms itself when it fires), and the record is written at
    /// most every 30 s per session (after a crash the sessions end anyway).
    func heartbeat(_ id: String, caller: Caller) -> HeartbeatResult {
        let t = SessionManager.now()
        // Alive: the answer, and the record to write when its activity was last written 30 s ago or more.
        let (result, toWrite): (HeartbeatResult?, SessionRecord?) = live.withLock { l in
            // In place: one lookup, no copy of the record.
            l.withEntry(id) { e in SessionManager.beat(&e.record, at: t, caller: caller, written: &e.activityWrittenAt) } ?? (nil, nil)
        }
        guard let result else {
            guard let r = store.read({ $0.sessions[id] }) else { return .notFound }
            if !caller.mayActOn(ownerType: r.ownerType, ownerID: r.ownerID) { return .forbidden }
            return .ended(r.status)
        }
        if case .alive = result { heartbeats.add(1) }
        if let toWrite { store.write([.putSession(toWrite)]) { _ in } }
        return result
    }

    /// One heartbeat on a live record: the ownership check, then the activity; a copy to write when the
    /// activity was last written 30 s ago or more.
    private static func beat(_ r: inout SessionRecord, at t: Int64, caller: Caller, written: inout Int64) -> (HeartbeatResult?, SessionRecord?) {
        if !caller.mayActOn(ownerType: r.ownerType, ownerID: r.ownerID) { return (.forbidden, nil) }
        let toWrite = moveActivity(&r, at: t, written: &written)
        return (.alive(status: r.status, lastActivity: t, expiresAt: r.expiresAt), toWrite)
    }

    /// Activity (a heartbeat, a command) at `t`: `last_activity` and `expires_at` move; returns a copy to
    /// write when the activity was last written 30 s ago or more (a write per heartbeat would cost a disk
    /// flush each; after a crash the sessions end anyway).
    static func moveActivity(_ r: inout SessionRecord, at t: Int64, written: inout Int64) -> SessionRecord? {
        r.lastActivity = t
        r.expiresAt = min(t + Int64(r.idleTimeoutSeconds) * 1000, r.lifetimeEndsAt)
        guard t - written >= 30_000 else { return nil }
        written = t
        return r
    }

    /// Applies `change` to a live record and persists it. Nil if the session has ended.
    func update(_ id: String, _ change: (inout SessionRecord) -> Void) -> SessionRecord? {
        let updated: SessionRecord? = live.withLock { l in
            guard var r = l[id] else { return nil }
            change(&r)
            l[id] = r
            return r
        }
        guard let updated else { return nil }
        try? store.write([.putSession(updated)])
        reactor.execute { [self] in armExpiry(id) }
        return updated
    }

    /// Stops a session for `reason`; returns the final record once it has ended (or after `timeout`).
    func stop(_ id: String, reason: TerminationReason, wait timeout: Double) -> SessionRecord? {
        if live.withLock({ $0[id] }) != nil {
            reactor.execute { [self] in runners[id]?.stop(reason) }
            _ = waitUntil(timeout) { self.live.withLock { $0[id] } == nil }
        }
        return record(id)
    }

    /// Stops every live session of an owner for `reason` and waits (bounded); returns how many.
    func stopAll(ownerType: String, ownerID: String, reason: TerminationReason, timeout: Double) -> Int {
        let ids = live.withLock { l in l.values.filter { $0.ownerType == ownerType && $0.ownerID == ownerID }.map(\.id) }
        for id in ids { reactor.execute { [self] in runners[id]?.stop(reason) } }
        _ = waitUntil(timeout) { self.live.withLock { l in ids.allSatisfy { l[$0] == nil } } }
        return ids.count
    }

    /// Calls `fire` once, with the record (nil if it is gone), when session `id` has left `starting` or after
    /// `timeout` seconds, whichever comes first; on the thread that saw the change. No thread waits meanwhile
    /// (`?wait=ready` held a worker thread for up to a minute per request).
    func whenReady(_ id: String, timeout: Double, _ fire: @escaping @Sendable (SessionRecord?) -> Void) {
        let token = readyWaiters.withLock { w in
            w.next += 1
            w.byID[id, default: []].append(ReadyWaiter(token: w.next, fire: fire, timer: nil))
            return w.next
        }
        // Registered, then checked: a change before this is seen here, one after it by signalChange.
        fireReadyWaiters(id)
        // Answered already (the usual case for a session that is not starting): no timer to leave behind.
        guard readyWaiters.withLock({ $0.byID[id]?.contains { $0.token == token } ?? false }) else { return }
        let deadline = Reactor.now() + max(0, timeout)
        reactor.execute { [self] in
            let timer = reactor.schedule(at: deadline) { [weak self] in
                guard let self, let w = takeReadyWaiter(id, token) else { return }
                w.fire(record(id))
            }
            // Kept with the waiter, so that an answer before the timeout cancels it; answered meanwhile: now.
            let kept = readyWaiters.withLock { w -> Bool in
                guard let i = w.byID[id]?.firstIndex(where: { $0.token == token }) else { return false }
                w.byID[id]![i].timer = timer
                return true
            }
            if !kept { reactor.cancel(timer) }
        }
    }

    private struct ReadyWaiter {
        let token: UInt64
        let fire: @Sendable (SessionRecord?) -> Void
        /// Its timeout on the reactor, once scheduled.
        var timer: UInt64?
    }

    /// Answers waiting for a session to leave `starting`, by session id.
    private let readyWaiters = Mutex<(next: UInt64, byID: [String: [ReadyWaiter]])>((0, [:]))

    /// Fires the waiters of `id` if it has left `starting`.
    private func fireReadyWaiters(_ id: String) {
        let rec = record(id)
        if let rec, rec.status == "starting" { return }
        let ws = readyWaiters.withLock { $0.byID.removeValue(forKey: id) } ?? []
        let timers = ws.compactMap(\.timer)
        if !timers.isEmpty { reactor.execute { [self] in timers.forEach { reactor.cancel($0) } } }
        for w in ws { w.fire(rec) }
    }

    private func takeReadyWaiter(_ id: String, _ token: UInt64) -> ReadyWaiter? {
        readyWaiters.withLock { w in
            guard var list = w.byID[id], let i = list.firstIndex(where: { $0.token == token }) else { return nil }
            let x = list.remove(at: i)
            w.byID[id] = list.isEmpty ? nil : list
            return x
        }
    }

    /// Stops every live session (daemon shutdown) and waits for them, bounded.
    func stopAll(reason: TerminationReason, timeout: Double) {
        let ids = live.withLock { Array($0.keys) }
        for id in ids { reactor.execute { [self] in runners[id]?.stop(reason) } }
        _ = waitUntil(timeout) { self.live.withLock { $0.isEmpty } }
    }

    func waitUntil(_ timeout: Double, _ done: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        changed.lock()
        defer { changed.unlock() }
        while !done() {
            if !changed.wait(until: min(deadline, Date().addingTimeInterval(0.05))) && Date() >= deadline { return done() }
        }
        return true
    }

    func signalChange() {
        changed.lock()
        changed.broadcast()
        changed.unlock()
        for id in readyWaiters.withLock({ Array($0.byID.keys) }) { fireReadyWaiters(id) }
    }

    // MARK: Reactor thread

    private func armExpiry(_ id: String) {
        if let t = timers[id] { reactor.cancel(t) }
        timers[id] = nil
        guard let r = live.withLock({ $0[id] }) else { return }
        armExpiryWarning(id)
        let inMs = r.expiresAt - SessionManager.now()
        let reason: TerminationReason = r.expiresAt >= r.lifetimeEndsAt ? .maxLifetime : .idleTimeout
        timers[id] = reactor.schedule(at: Reactor.now() + Double(max(0, inMs)) / 1000) { [self] in
            timers[id] = nil
            // Re-check: a heartbeat may have moved it while the timer was due.
            guard let cur = live.withLock({ $0[id] }), cur.expiresAt <= SessionManager.now() else { return armExpiry(id) }
            logger.info("session expired", [("SESSION_ID", id), ("reason", reason.rawValue)])
            runners[id]?.stop(reason)
        }
    }

    /// An `expiry_warning` event --expiry-warning seconds before the session would expire (once per expiry
    /// time; a heartbeat that moves it makes the timer look again).
    private func armExpiryWarning(_ id: String) {
        if let t = warningTimers[id] { reactor.cancel(t) }
        warningTimers[id] = nil
        guard let r = live.withLock({ $0[id] }) else { return }
        let lead = Int64(configuration().expiryWarning) * 1000
        let at = r.expiresAt - lead
        warningTimers[id] = reactor.schedule(at: Reactor.now() + Double(max(0, at - SessionManager.now())) / 1000) { [self] in
            warningTimers[id] = nil
            guard let cur = live.withLock({ $0[id] }) else { return }
            let now = SessionManager.now()
            let left = cur.expiresAt - now
            if left > lead { return armExpiryWarning(id) }
            guard left > 0, warnedOf[id] != cur.expiresAt else { return }
            warnedOf[id] = cur.expiresAt
            let reason: TerminationReason = cur.expiresAt >= cur.lifetimeEndsAt ? .maxLifetime : .idleTimeout
            events.publish(id, "expiry_warning", .object([("id", .string(id)), ("expires_at", .string(rfc3339(cur.expiresAt))),
                                                          ("seconds_left", .int(Int((left + 999) / 1000))), ("reason", .string(reason.rawValue))]))
            // Look again shortly before the end: a heartbeat may move it, and a later expiry earns a new warning.
            warningTimers[id] = reactor.schedule(at: Reactor.now() + Double(left) / 1000 + 0.5) { [self] in
                warningTimers[id] = nil
                armExpiryWarning(id)
            }
        }
    }

    private func statusChanged(_ id: String, _ s: SessionStatus) {
        var firstReady = false
        let rec: SessionRecord? = live.withLock { l in
            guard var r = l[id] else { return nil }
            r.status = s.rawValue
            if s == .ready && r.readyAt == nil {
                firstReady = true
                let t = SessionManager.now()
                r.readyAt = t
                let secs = Double(t - r.createdAt) / 1000
                counters.withLock { c in
                    c.spawnCount += 1
                    c.spawnSum += secs
                    for b in Counters.bounds where secs <= b { c.spawnBuckets[b, default: 0] += 1 }
                }
            }
            l[id] = r
            return r
        }
        // Whoever waits for this change is answered first (from memory, where the record is authoritative
        // while the session runs); the store's writer, woken by the write below, would otherwise take the CPU
        // before the answer is on its way.
        signalChange()
        if let rec {
            // busy ⇄ ready on every command lives in memory only: after a crash every session ends anyway.
            if !(s == .busy || (s == .ready && !firstReady)) { store.write([.putSession(rec)]) { _ in } }
            events.publish(id, "status", .object([("id", .string(id)), ("status", .string(s.rawValue)), ("at", .string(rfc3339(SessionManager.now())))]))
        }
        // Lifecycle events in the transcript (not the busy ⇄ ready of every command).
        if rec != nil, firstReady || s == .stopping {
            appendTranscript(id, [TranscriptItem(kind: "event", level: "info", text: "status \(s.rawValue)", dataJSON: #"{"status":"\#(s.rawValue)"}"#)])
        }
        if s == .ready, let rec, !structureSent.contains(id) {
            if let pdb = rec.pdbID {
                structureSent.insert(id)
                openStructure(id, command: "open \(pdb)")
            } else if rec.structureSource == "upload", let stored = uploadNames[id] {
                structureSent.insert(id)
                openStructure(id, command: "open \(stored)")
            }
        }
    }

    /// Sends `open …` through the session's command queue (ahead of any user command) and records ChimeraX's
    /// answer in the record (the transcript has the command and reply).
    private func openStructure(_ id: String, command: String) {
        submitCommand(id, command, caller: nil, trusted: true) { [self] result in
            // The answer may come on the store's thread: the record is written from a queue.
            DispatchQueue.global().async { [self] in structureOpened(id, result) }
        }
    }

    private func structureOpened(_ id: String, _ result: Result<CommandOutcome, CommandFailure>) {
        let error: String?
        switch result {
        case .success(let outcome): error = outcome.ok ? nil : outcome.error["message"]?.stringValue ?? "error"
        case .failure(.timeout(let s)): error = "ChimeraX did not answer within \(s) s"
        case .failure(.ended), .failure(.notFound): return
        case .failure(let f): error = "ChimeraX did not answer (\(f))"
        }
        _ = update(id) { r in
            // ChimeraX fetches PDB ids as mmCIF.
            if r.structureSource == "pdb" { r.structureFormat = error == nil ? "mmcif" : nil }
            r.structureOpenError = error ?? ""
        }
        if let error { logger.warning("structure did not open", [("SESSION_ID", id), ("error", error)]) }
    }

    private func ended(_ id: String, _ s: SessionStatus, _ reason: TerminationReason, _ exit: ProcessExit?, _ tail: [String], _ survivors: [pid_t]) {
        if let t = timers[id] { reactor.cancel(t) }
        timers[id] = nil
        if let t = warningTimers[id] { reactor.cancel(t) }
        warningTimers[id] = nil
        warnedOf[id] = nil
        runners[id] = nil
        structureSent.remove(id)
        uploadNames[id] = nil
        guard var rec = live.withLock({ $0[id] }) else { return }
        rec.status = s.rawValue
        rec.terminationReason = reason.rawValue
        rec.endedAt = SessionManager.now()
        rec.exitCode = exit?.code.map(Int.init)
        rec.exitSignal = exit?.signalName
        rec.pid = nil
        if let u = usage.withLock({ $0[id]?.usage }) {
            rec.cpuSeconds = max(rec.cpuSeconds, u.cpuSeconds)
            rec.memoryPeakBytes = max(rec.memoryPeakBytes, u.rssBytes)
        }
        counters.withLock { $0.terminations[reason.rawValue, default: 0] += 1 }
        if !survivors.isEmpty {
            logger.error("processes of an ended session survived SIGKILL", [("SESSION_ID", id), ("pids", survivors.map(String.init).joined(separator: ","))])
        }
        // The last output, then the end, in the transcript.
        if let blocks = logBlocks.removeValue(forKey: id) {
            var b = blocks
            if let x = b.out.flush() { appendTranscript(id, [TranscriptItem(kind: "log", level: x.level, text: x.text)]) }
            if let x = b.err.flush() { appendTranscript(id, [TranscriptItem(kind: "log", level: "warning", text: x.text, dataJSON: #"{"stream":"stderr"}"#)]) }
        }
        var items = [TranscriptItem(kind: "event", level: s == .failed ? "error" : "info", text: "status \(s.rawValue) (\(reason.rawValue))",
                                    dataJSON: #"{"status":"\#(s.rawValue)","termination_reason":"\#(reason.rawValue)"}"#)]
        if s == .failed && !tail.isEmpty {
            items.insert(TranscriptItem(kind: "event", level: "error", text: "ChimeraX stderr (last lines):\n" + tail.joined(separator: "\n")), at: 0)
        }
        appendTranscript(id, items)
        events.publish(id, "status", .object([
            ("id", .string(id)), ("status", .string(s.rawValue)), ("at", .string(rfc3339(rec.endedAt!))), ("termination_reason", .string(reason.rawValue)),
            ("exit", exit.map { e in .object([("code", e.code.map { .int(Int($0)) } ?? .null), ("signal", e.signalName.map { .string($0) } ?? .null)]) } ?? .null),
        ]))
        events.close(id)
        endCommands(id, status: s.rawValue)
        transcriptNext.withLock { _ = $0.removeValue(forKey: id) }
        store.write([.putSession(rec)]) { [self] _ in
            // Persisted (or failed: the record is still in memory until here): now the live entry goes.
            live.withLock { l in
                _ = l.removeValue(forKey: id)
                usage.withLock { _ = $0.removeValue(forKey: id) }
            }
            signalChange()
        }
        if s != .finalized { removeDirectory(rec.directory) }
        logger.notice("session ended", [("SESSION_ID", id), ("status", s.rawValue), ("reason", reason.rawValue),
                                        ("exit", exit.map { $0.signalName ?? "code \($0.code ?? -1)" } ?? "-")])
    }

    /// Removes a session directory (only under --work-dir).
    func removeDirectory(_ dir: String) {
        guard !dir.isEmpty, dir.hasPrefix(configuration().workDir + "/") else { return }
        try? FileManager.default.removeItem(atPath: dir)
    }
}

extension SessionManager {
    /// Prometheus text for the sessions (API.md §6).
    func renderMetrics() -> String {
        var out = ""
        let byStatus = store.read { s in SessionStatus.allCases.map { ($0.rawValue, s.sessionIDsByStatus[$0.rawValue]?.count ?? 0) } }
        let liveRecs = live.withLock { Array($0.values) }
        out += "# HELP chimerax_supervisor_sessions Sessions by status (live ones from memory, ended ones from the store).\n# TYPE chimerax_supervisor_sessions gauge\n"
        for (status, stored) in byStatus {
            let n = SessionStatus(rawValue: status)!.isEnded ? stored : liveRecs.filter { $0.status == status }.count
            out += "chimerax_supervisor_sessions{status=\"\(status)\"} \(n)\n"
        }
        let c = counters.withLock { $0 }
        out += "# HELP chimerax_supervisor_sessions_created_total Sessions started.\n# TYPE chimerax_supervisor_sessions_created_total counter\n"
        out += "chimerax_supervisor_sessions_created_total \(c.created)\n"
        out += "# HELP chimerax_supervisor_heartbeats_total Heartbeats received.\n# TYPE chimerax_supervisor_heartbeats_total counter\n"
        out += "chimerax_supervisor_heartbeats_total \(heartbeats.value)\n"
        out += "# HELP chimerax_supervisor_commands_total ChimeraX commands of users, by result.\n# TYPE chimerax_supervisor_commands_total counter\n"
        for r in ["ok", "error", "refused", "timeout", "busy", "failed"] {
            out += "chimerax_supervisor_commands_total{result=\"\(r)\"} \(c.commands[r] ?? 0)\n"
        }
        out += "# HELP chimerax_supervisor_event_streams Open event streams.\n# TYPE chimerax_supervisor_event_streams gauge\n"
        out += "chimerax_supervisor_event_streams \(events.openStreams)\n"
        out += "# HELP chimerax_supervisor_session_terminations_total Sessions ended, by reason.\n# TYPE chimerax_supervisor_session_terminations_total counter\n"
        for r in TerminationReason.allCases {
            out += "chimerax_supervisor_session_terminations_total{reason=\"\(r.rawValue)\"} \(c.terminations[r.rawValue] ?? 0)\n"
        }
        out += "# HELP chimerax_supervisor_spawn_seconds From create to ready.\n# TYPE chimerax_supervisor_spawn_seconds histogram\n"
        for b in Counters.bounds {
            out += "chimerax_supervisor_spawn_seconds_bucket{le=\"\(b)\"} \(c.spawnBuckets[b] ?? 0)\n"
        }
        out += "chimerax_supervisor_spawn_seconds_bucket{le=\"+Inf\"} \(c.spawnCount)\n"
        out += "chimerax_supervisor_spawn_seconds_sum \(c.spawnSum)\nchimerax_supervisor_spawn_seconds_count \(c.spawnCount)\n"
        let samples = usage.withLock { $0.mapValues(\.usage) }
        out += "# HELP chimerax_supervisor_session_cpu_seconds CPU of a session's process tree.\n# TYPE chimerax_supervisor_session_cpu_seconds gauge\n"
        for (id, u) in samples.sorted(by: { $0.key < $1.key }) { out += "chimerax_supervisor_session_cpu_seconds{session_id=\"\(id)\"} \(u.cpuSeconds)\n" }
        out += "# HELP chimerax_supervisor_session_memory_bytes Resident memory of a session's process tree.\n# TYPE chimerax_supervisor_session_memory_bytes gauge\n"
        for (id, u) in samples.sorted(by: { $0.key < $1.key }) { out += "chimerax_supervisor_session_memory_bytes{session_id=\"\(id)\"} \(u.rssBytes)\n" }
        return out
    }
}
