import Dispatch
import Foundation
import Glibc
import HTTPServer
import SupervisorConfig
import SupervisorSessions
import SupervisorStore
import Synchronization

/// One transcript line before it has an order and a time.
struct TranscriptItem {
    let kind: String
    let level: String
    let text: String
    var dataJSON: String? = nil
}

/// One command at a time per session, the others waiting in order. Reactor thread only.
final class CommandQueue {
    struct Pending {
        let seq: UInt64
        let text: String
        let deadline: Double
        let timeout: Int
        /// The supervisor's own command (not counted as the user's).
        let trusted: Bool
        let completion: @Sendable (Result<CommandOutcome, CommandFailure>) -> Void
    }

    var pending: [Pending] = []
    var running = false
    /// Transcript entries of ChimeraX's log while the running command runs, written with its reply.
    var heldLog: [Mutation] = []
    var nextSeq: UInt64 = 0
    /// Requests that may wait behind the one running.
    static let maxWaiting = 8
}

/// A command's result in the API's shape (API.md §4).
struct CommandOutcome {
    let command: String
    let ok: Bool
    let error: JSON
    let log: JSON
    let jsonValues: JSON
    let durationMs: Double
}

enum CommandFailure: Error {
    case notFound
    case forbidden
    case ended(String)
    case notReady(String)
    case refused(CommandPolicy.Refusal)
    case queueFull
    case timeout(Int)
    case noAnswer
    case saveFailed(String)
}

extension SessionManager {
    // MARK: Transcript

    /// Appends entries to a session's transcript: orders are given and the live `transcript` events published
    /// under one lock, so they come in order; the transcript is trimmed to --transcript-max (in steps of a
    /// tenth, so that trimming is rare). The store keeps each transcript sorted by order.
    /// `hold`: the entries are not written but returned, to be written with a later call (`with:`): a command
    /// and its reply cost one durable write. `written` runs once this call's write is on disk (on the store's
    /// thread: it must not write to the store).
    @discardableResult
    func appendTranscript(_ id: String, _ items: [TranscriptItem], with earlier: [Mutation] = [], hold: Bool = false,
                          written: (@Sendable () -> Void)? = nil) -> [Mutation] {
        let t = SessionManager.now()
        let bound = configuration().transcriptMax
        return transcriptNext.withLock { cursors in
            var cursor = cursors[id] ?? store.read { s in
                TranscriptCursor(next: (s.transcripts[id]?.last?.order ?? 0) + 1, first: s.transcripts[id]?.first?.order ?? 1)
            }
            var order = cursor.next
            var m = earlier
            for i in items {
                m.append(.appendTranscript(TranscriptEntry(sessionID: id, order: order, timestamp: t, kind: i.kind, level: i.level, text: i.text,
                                                           dataJSON: i.dataJSON)))
                events.publish(id, "transcript", .object([("order", .int(order)), ("timestamp", .string(rfc3339(t))), ("kind", .string(i.kind)),
                                                          ("level", .string(i.level)), ("text", .string(i.text))]))
                order += 1
            }
            cursor.next = order
            defer { cursors[id] = cursor }
            if hold { return m }
            if order - cursor.first > bound + bound / 10 {
                m.append(.trimTranscript(sessionID: id, before: order - bound))
                cursor.first = order - bound
            }
            if m.isEmpty {
                written?()
            } else {
                store.write(m) { _ in written?() }
            }
            return []
        }
    }

    /// Reactor thread: a line of ChimeraX's output joins the current log block.
    func outputLine(_ id: String, _ line: String, stderr: Bool) {
        var b = logBlocks[id] ?? (LogBlocks(), LogBlocks())
        let block = stderr ? b.err.feed(line) : b.out.feed(line)
        logBlocks[id] = b
        if let block { logEntry(id, block, stderr: stderr) }
    }

    /// Reactor thread: the output paused; the block so far is an entry.
    func outputPaused(_ id: String, stderr: Bool) {
        guard var b = logBlocks[id] else { return }
        let block = stderr ? b.err.flush() : b.out.flush()
        logBlocks[id] = b
        if let block { logEntry(id, block, stderr: stderr) }
    }

    /// A log block in the transcript. While a command runs, its log is written with its reply (one flush
    /// for the whole exchange); otherwise at once. Reactor thread.
    private func logEntry(_ id: String, _ block: LogBlocks.Block, stderr: Bool) {
        let item = stderr ? TranscriptItem(kind: "log", level: "warning", text: block.text, dataJSON: #"{"stream":"stderr"}"#)
            : TranscriptItem(kind: "log", level: block.level, text: block.text)
        if let q = commandQueues[id], q.running {
            q.heldLog += appendTranscript(id, [item], hold: true)
            // A command that logs a lot does not hold it all in memory until its reply.
            if q.heldLog.count >= 64 {
                store.write(q.heldLog) { _ in }
                q.heldLog = []
            }
        } else {
            appendTranscript(id, [item])
        }
    }

    // MARK: Commands

    /// The command policy of the current configuration (rebuilt only when --command-allow changes).
    func policy() -> CommandPolicy {
        let allow = configuration().commandAllow
        return policyCache.withLock { c in
            if let c, c.allow == allow { return c.policy }
            let p = CommandPolicy(allowed: allow.map { Set($0) } ?? CommandPolicy.defaultAllowed)
            c = (allow, p)
            return p
        }
    }

    /// Runs one command of a caller through ChimeraX's REST interface, one at a time per session, without
    /// holding a thread: checks now (ownership, status, the allow-list), then the command waits its turn on
    /// the reactor and goes over a non-blocking HTTP/1.0 exchange. `completion` runs once, after the reply is
    /// in the transcript on disk; past --command-timeout (waiting and running) it gets
    /// `.timeout` and the next command runs when ChimeraX has finished this one. `trusted` skips the
    /// allow-list (the supervisor's own commands: the structure's `open`, finalize's `save`).
    /// `completion` may run on the store's or the reactor's thread: it must not block or write to the store
    /// itself (hop to a queue for that).
    func submitCommand(_ id: String, _ text: String, caller: Caller?, trusted: Bool = false,
                       completion: @escaping @Sendable (Result<CommandOutcome, CommandFailure>) -> Void) {
        let done = completion
        guard let rec = live.withLock({ $0[id] }) else {
            guard let r = store.read({ $0.sessions[id] }) else { return done(.failure(.notFound)) }
            if let caller, !caller.mayActOn(ownerType: r.ownerType, ownerID: r.ownerID) { return done(.failure(.forbidden)) }
            return done(.failure(.ended(r.status)))
        }
        if let caller, !caller.mayActOn(ownerType: rec.ownerType, ownerID: rec.ownerID) { return done(.failure(.forbidden)) }
        guard rec.status == "ready" || rec.status == "busy" else { return done(.failure(.notReady(rec.status))) }
        if !trusted, let refusal = policy().check(text, directory: rec.directory) {
            appendTranscript(id, [TranscriptItem(kind: "command", level: "error", text: text,
                                                 dataJSON: JSON.object([("refused", .string(refusal.reason))]).serializedString())])
            return done(.failure(.refused(refusal)))
        }
        let timeout = configuration().commandTimeout
        let deadline = Reactor.now() + Double(timeout)
        reactor.execute { [self] in
            guard runners[id] != nil else { return done(.failure(.ended(live.withLock { $0[id]?.status } ?? "terminated"))) }
            let q = commandQueues[id] ?? CommandQueue()
            commandQueues[id] = q
            guard q.pending.count < CommandQueue.maxWaiting + (q.running ? 0 : 1) else { return done(.failure(.queueFull)) }
            q.nextSeq += 1
            let seq = q.nextSeq
            q.pending.append(.init(seq: seq, text: text, deadline: deadline, timeout: timeout, trusted: trusted, completion: done))
            // Still waiting at the deadline: 504, and it never runs.
            reactor.schedule(at: deadline) { [weak q] in
                guard let q, let i = q.pending.firstIndex(where: { $0.seq == seq }) else { return }
                q.pending.remove(at: i).completion(.failure(.timeout(timeout)))
            }
            pumpCommands(id)
        }
    }

    /// Starts the next waiting command of a session if none runs. Reactor thread.
    func pumpCommands(_ id: String) {
        guard let q = commandQueues[id], !q.running, !q.pending.isEmpty else { return }
        guard let runner = runners[id], let port = runner.port else { return }
        let c = q.pending.removeFirst()
        q.running = true
        let start = Reactor.now()
        touch(id, command: !c.trusted)
        runner.commandStarted()
        // The command's entry is numbered and announced now, and written with its reply.
        let commandEntry = appendTranscript(id, [TranscriptItem(kind: "command", level: "info", text: c.text)], hold: true)
        RESTExchange.start(port: port, path: "/run?command=" + SessionManager.queryEncode(c.text), timeout: c.deadline - start,
                           namespace: runner.process.network, reactor: reactor) { [self] result in
            q.running = false
            runners[id]?.commandFinished()
            let item: TranscriptItem
            let answer: Result<CommandOutcome, CommandFailure>
            switch result {
            case .reply(let reply):
                let outcome = SessionManager.outcome(of: reply.body, command: c.text, durationMs: (Reactor.now() - start) * 1000)
                item = TranscriptItem(kind: "reply", level: outcome.ok ? "info" : "error", text: outcome.error["message"]?.stringValue ?? "ok",
                                      dataJSON: JSON.object([("log", outcome.log), ("json_values", outcome.jsonValues)]).serializedString())
                answer = .success(outcome)
            case .timedOut:
                item = TranscriptItem(kind: "reply", level: "error", text: "no answer within \(c.timeout) s")
                answer = .failure(.timeout(c.timeout))
            case .failed(let why):
                item = TranscriptItem(kind: "reply", level: "error", text: "ChimeraX did not answer (\(why))")
                answer = .failure(.noAnswer)
            }
            // The answer once the reply is in the transcript on disk; the next command starts now.
            let held = q.heldLog
            q.heldLog = []
            appendTranscript(id, [item], with: commandEntry + held) { c.completion(answer) }
            pumpCommands(id)
        }
    }

    /// The session ended: commands still waiting get `session_ended`. Reactor thread.
    func endCommands(_ id: String, status: String) {
        guard let q = commandQueues.removeValue(forKey: id) else { return }
        if !q.heldLog.isEmpty { store.write(q.heldLog) { _ in } }
        q.heldLog = []
        for p in q.pending { p.completion(.failure(.ended(status))) }
        q.pending = []
    }

    /// `submitCommand`, waiting for the answer (finalize, off the event loops).
    func runCommand(_ id: String, _ text: String, caller: Caller?, trusted: Bool = false) throws(CommandFailure) -> CommandOutcome {
        let result = Mutex<Result<CommandOutcome, CommandFailure>?>(nil)
        let done = DispatchSemaphore(value: 0)
        submitCommand(id, text, caller: caller, trusted: trusted) { r in
            result.withLock { $0 = r }
            done.signal()
        }
        done.wait()
        return try result.withLock { $0! }.get()
    }

    /// ChimeraX's reply (JSON whatever the Content-Type: `text/plain` before 1.11) in the API's shape. A body
    /// that is not the JSON reply (REST started without `json true`) is kept as a note.
    static func outcome(of body: [UInt8], command: String, durationMs: Double) -> CommandOutcome {
        let empty = JSON.object([("note", .array([])), ("warning", .array([])), ("error", .array([])), ("bug", .array([]))])
        guard let j = try? JSON.parse(body), case .object = j else {
            let text = String(decoding: body, as: UTF8.self)
            return CommandOutcome(command: command, ok: true, error: .null,
                                  log: .object([("note", .array(text.isEmpty ? [] : [.string(text)])), ("warning", .array([])), ("error", .array([])), ("bug", .array([]))]),
                                  jsonValues: .array([]), durationMs: durationMs)
        }
        var log: [(String, JSON)] = []
        for level in ["note", "warning", "error", "bug"] {
            let lines: [JSON]
            if case .array(let a)? = j["log messages"]?[level] { lines = a.compactMap { $0.stringValue.map { .string($0) } } } else { lines = [] }
            log.append((level, .array(lines)))
        }
        let error = j["error"] ?? .null
        var errorJSON = JSON.null
        if case .object = error {
            errorJSON = .object([("type", .string(error["type"]?.stringValue ?? "Error")), ("message", .string(error["message"]?.stringValue ?? ""))])
        }
        let values: JSON
        if case .array(let a)? = j["json values"] { values = .array(a) } else { values = .array([]) }
        return CommandOutcome(command: command, ok: errorJSON == .null, error: errorJSON, log: log.isEmpty ? empty : .object(log),
                              jsonValues: values, durationMs: durationMs)
    }

    /// Percent-encodes everything but unreserved ASCII (RFC 3986), for ChimeraX's `/run?command=`.
    static func queryEncode(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            default:
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    /// Activity: a command moves `last_activity` and the idle expiry (written at most every 30 s, as for
    /// heartbeats) and counts as one of the user's commands.
    func touch(_ id: String, command: Bool = false) {
        let t = SessionManager.now()
        let r: SessionRecord? = live.withLock { l in
            l.withEntry(id) { e in
                if command { e.record.commandsRun += 1 }
                return SessionManager.moveActivity(&e.record, at: t, written: &e.activityWrittenAt)
            } ?? nil
        }
        if let r { store.write([.putSession(r)]) { _ in } }
    }

    // MARK: Documents

    struct Document {
        let name: String
        let size: Int
        let mediaType: String
        let createdAt: Int64
    }

    static let mediaTypes: [String: String] = [
        "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "tif": "image/tiff", "tiff": "image/tiff", "bmp": "image/bmp",
        "gif": "image/gif", "ppm": "image/x-portable-pixmap", "cxs": "application/x-chimerax-session", "pdb": "chemical/x-pdb",
        "ent": "chemical/x-pdb", "pdb1": "chemical/x-pdb", "pqr": "chemical/x-pdb", "cif": "chemical/x-mmcif", "mmcif": "chemical/x-mmcif",
        "mol2": "chemical/x-mol2", "sdf": "chemical/x-mdl-sdfile", "mol": "chemical/x-mdl-molfile", "gro": "chemical/x-gromacs",
        "gz": "application/gzip", "mmtf": "application/octet-stream",
    ]

    /// The regular files directly in the session directory (the upload, images, session files), not hidden,
    /// not symbolic links, by name.
    static func documents(in dir: String) -> [Document] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
        var out: [Document] = []
        for n in names.sorted() where !n.hasPrefix(".") {
            var st = stat()
            guard lstat(dir + "/" + n, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { continue }
            let ext = n.split(separator: ".").last.map { $0.lowercased() } ?? ""
            out.append(Document(name: n, size: Int(st.st_size), mediaType: mediaTypes[ext] ?? "application/octet-stream",
                                createdAt: Int64(st.st_mtim.tv_sec) * 1000 + Int64(st.st_mtim.tv_nsec) / 1_000_000))
        }
        return out
    }

    /// Opens a document for reading: a plain name of a regular file directly in `dir`, never through a
    /// symbolic link (O_NOFOLLOW, and relative to the directory's descriptor).
    static func openDocument(_ name: String, in dir: String) -> Int32? {
        guard !name.isEmpty, !name.hasPrefix("."), !name.contains("/"), !name.contains("\0") else { return nil }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { return nil }
        defer { close(dfd) }
        let fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            return nil
        }
        return fd
    }

    // MARK: Finalize

    /// Saves the session as a `.cxs` document through REST, then stops it as `finalized`; returns the final
    /// record (documents kept). Blocks: call off the event loops.
    func finalize(_ id: String, caller: Caller) throws(CommandFailure) -> SessionRecord {
        let saved = try runCommand(id, "save session.cxs", caller: caller, trusted: true)
        if !saved.ok { throw .saveFailed(saved.error["message"]?.stringValue ?? "unknown error") }
        let c = configuration()
        return stop(id, reason: .finalized, wait: Double(c.stopGrace) + 5) ?? record(id)!
    }
}
