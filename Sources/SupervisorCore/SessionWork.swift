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

/// One command at a time per session: the gate, and how many requests wait for it.
final class CommandLane: Sendable {
    let gate = DispatchSemaphore(value: 1)
    let waiting = Atomic<Int>(0)
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

    /// Appends entries to a session's transcript in order (orders are given and the write is queued under
    /// one lock, so the stored list stays sorted), and trims it to --transcript-max (in steps of a tenth, so
    /// that trimming is rare).
    /// `durable`: returns once the entries are on disk (a command's reply: when the API answers, the
    /// transcript has it).
    func appendTranscript(_ id: String, _ items: [TranscriptItem], durable: Bool = false) {
        guard !items.isEmpty else { return }
        let written = durable ? DispatchSemaphore(value: 0) : nil
        defer { written?.wait() }
        let t = SessionManager.now()
        let bound = configuration().transcriptMax
        transcriptNext.withLock { next in
            let (last, first) = store.read { s in (s.transcripts[id]?.last?.order ?? 0, s.transcripts[id]?.first?.order ?? 1) }
            var order = max(next[id] ?? 1, last + 1)
            var m: [Mutation] = []
            for i in items {
                m.append(.appendTranscript(TranscriptEntry(sessionID: id, order: order, timestamp: t, kind: i.kind, level: i.level, text: i.text,
                                                           dataJSON: i.dataJSON)))
                events.publish(id, "transcript", .object([("order", .int(order)), ("timestamp", .string(rfc3339(t))), ("kind", .string(i.kind)),
                                                          ("level", .string(i.level)), ("text", .string(i.text))]))
                order += 1
            }
            next[id] = order
            if order - first > bound + bound / 10 { m.append(.trimTranscript(sessionID: id, before: order - bound)) }
            store.write(m) { _ in written?.signal() }
        }
    }

    /// Reactor thread: a line of ChimeraX's output joins the current log block.
    func outputLine(_ id: String, _ line: String, stderr: Bool) {
        var b = logBlocks[id] ?? (LogBlocks(), LogBlocks())
        if stderr {
            if let x = b.err.feed(line) { appendTranscript(id, [TranscriptItem(kind: "log", level: "warning", text: x.text, dataJSON: #"{"stream":"stderr"}"#)]) }
        } else if let x = b.out.feed(line) {
            appendTranscript(id, [TranscriptItem(kind: "log", level: x.level, text: x.text)])
        }
        logBlocks[id] = b
    }

    /// Reactor thread: the output paused; the block so far is an entry.
    func outputPaused(_ id: String, stderr: Bool) {
        guard var b = logBlocks[id] else { return }
        if stderr {
            if let x = b.err.flush() { appendTranscript(id, [TranscriptItem(kind: "log", level: "warning", text: x.text, dataJSON: #"{"stream":"stderr"}"#)]) }
        } else if let x = b.out.flush() {
            appendTranscript(id, [TranscriptItem(kind: "log", level: x.level, text: x.text)])
        }
        logBlocks[id] = b
    }

    // MARK: Commands

    func policy() -> CommandPolicy {
        CommandPolicy(allowed: configuration().commandAllow.map { Set($0) } ?? CommandPolicy.defaultAllowed)
    }

    /// Runs one command of a caller through ChimeraX's REST interface, one at a time per session. Blocks
    /// (up to --command-timeout): call off the event loops. `trusted` skips the allow-list (the supervisor's
    /// own commands: finalize's save).
    func runCommand(_ id: String, _ text: String, caller: Caller?, trusted: Bool = false) throws(CommandFailure) -> CommandOutcome {
        guard let rec = live.withLock({ $0[id] }) else {
            guard let r = store.read({ $0.sessions[id] }) else { throw .notFound }
            if let caller, !caller.mayActOn(ownerType: r.ownerType, ownerID: r.ownerID) { throw .forbidden }
            throw .ended(r.status)
        }
        if let caller, !caller.mayActOn(ownerType: rec.ownerType, ownerID: rec.ownerID) { throw .forbidden }
        guard rec.status == "ready" || rec.status == "busy", let endpoint = endpoints.withLock({ $0[id] }) else { throw .notReady(rec.status) }
        if !trusted, let refusal = policy().check(text, directory: rec.directory) {
            appendTranscript(id, [TranscriptItem(kind: "command", level: "error", text: text,
                                                 dataJSON: JSON.object([("refused", .string(refusal.reason))]).serializedString())])
            throw .refused(refusal)
        }
        let lane = lanes.withLock { l in
            if let x = l[id] { return x }
            let x = CommandLane()
            l[id] = x
            return x
        }
        guard lane.waiting.add(1, ordering: .relaxed).newValue <= CommandLane.maxWaiting + 1 else {
            lane.waiting.subtract(1, ordering: .relaxed)
            throw .queueFull
        }
        defer { lane.waiting.subtract(1, ordering: .relaxed) }
        let timeout = configuration().commandTimeout
        let start = Date()
        guard lane.gate.wait(timeout: .now() + .seconds(timeout)) == .success else { throw .timeout(timeout) }
        defer { lane.gate.signal() }
        touch(id)
        reactor.execute { [self] in runners[id]?.commandStarted() }
        defer { reactor.execute { [self] in runners[id]?.commandFinished() } }
        appendTranscript(id, [TranscriptItem(kind: "command", level: "info", text: text)])
        let left = Double(timeout) - Date().timeIntervalSince(start)
        guard left > 0, let reply = RESTClient.get(port: endpoint.port, path: "/run?command=" + SessionManager.queryEncode(text), timeout: left,
                                                      namespace: endpoint.namespace) else {
            let timedOut = Date().timeIntervalSince(start) >= Double(timeout) - 0.05
            appendTranscript(id, [TranscriptItem(kind: "reply", level: "error", text: timedOut ? "no answer within \(timeout) s" : "ChimeraX did not answer")])
            if timedOut { throw .timeout(timeout) }
            throw .noAnswer
        }
        let outcome = SessionManager.outcome(of: reply.body, command: text, durationMs: Date().timeIntervalSince(start) * 1000)
        let message = outcome.error["message"]?.stringValue
        appendTranscript(id, [TranscriptItem(kind: "reply", level: outcome.ok ? "info" : "error", text: message ?? "ok",
                                             dataJSON: JSON.object([("log", outcome.log), ("json_values", outcome.jsonValues)]).serializedString())],
                         durable: true)
        return outcome
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
    /// heartbeats).
    func touch(_ id: String) {
        let t = SessionManager.now()
        let r: SessionRecord? = live.withLock { l in
            guard var r = l[id] else { return nil }
            r.lastActivity = t
            r.expiresAt = min(t + Int64(r.idleTimeoutSeconds) * 1000, r.lifetimeEndsAt)
            l[id] = r
            guard t - (l.activityWrittenAt[id] ?? 0) >= 30_000 else { return nil }
            l.activityWrittenAt[id] = t
            return r
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

    /// Downloads are read into memory: bounded.
    static let maxDownloadBytes = 256 << 20

    /// Removes the documents of a finalized session (its directory), when it is deleted.
    func removeDocuments(of rec: SessionRecord) {
        let work = configuration().workDir
        guard !rec.directory.isEmpty, rec.directory.hasPrefix(work + "/") else { return }
        try? FileManager.default.removeItem(atPath: rec.directory)
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
