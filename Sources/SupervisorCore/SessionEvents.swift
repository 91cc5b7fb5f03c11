import HTTPServer
import Synchronization

/// Live events of sessions for `GET /api/sessions/{id}/events` (Server-Sent Events): status changes,
/// expiry warnings and transcript entries. Each session has one sequence of event ids and keeps its last
/// `ringSize` events in memory, so that a client reconnecting with `Last-Event-ID` gets what it missed.
/// Events are written to the streams under the lock that numbers them: every stream sees them in order.
final class SessionEvents: Sendable {
    struct Event {
        let seq: Int
        let name: String
        let data: String
    }

    private struct Channel {
        var seq = 0
        var ring: [Event] = []
        var streams: [ObjectIdentifier: ResponseStream] = [:]
    }

    static let ringSize = 1024
    static let maxStreamsPerSession = 16
    /// Seconds between keep-alive comments (the owner calls `sendKeepAlive` on this interval).
    static let keepAliveInterval = 15.0
    private let channels = Mutex<[String: Channel]>([:])

    static func format(_ e: Event) -> [UInt8] {
        Array("id: \(e.seq)\nevent: \(e.name)\ndata: \(e.data)\n\n".utf8)
    }

    /// A live session's channel (events of unknown or ended sessions are dropped).
    func open(_ id: String) {
        channels.withLock { c in if c[id] == nil { c[id] = Channel() } }
    }

    /// A new event of session `id`, to every open stream.
    func publish(_ id: String, _ name: String, _ data: JSON) {
        let text = data.serializedString()
        channels.withLock { c in
            guard var ch = c[id] else { return }
            ch.seq += 1
            let e = Event(seq: ch.seq, name: name, data: text)
            ch.ring.append(e)
            if ch.ring.count > SessionEvents.ringSize + SessionEvents.ringSize / 4 { ch.ring.removeFirst(ch.ring.count - SessionEvents.ringSize) }
            let bytes = SessionEvents.format(e)
            for s in ch.streams.values { s.write(bytes) }
            c[id] = ch
        }
    }

    enum SubscribeError: Error {
        case tooMany
        /// The session has no channel: it has ended (or never ran in this daemon).
        case closed
    }

    /// Whether another stream may open for the session now (a `429` otherwise).
    func hasRoom(_ id: String) -> Bool { channels.withLock { ($0[id]?.streams.count ?? 0) < SessionEvents.maxStreamsPerSession } }

    /// Adds a stream: first `initial` (the current state, when the client is not resuming), then the events
    /// after `lastEventID` still kept, then live events.
    func subscribe(_ id: String, _ stream: ResponseStream, lastEventID: Int?, initial: (String, JSON)?) throws(SubscribeError) {
        let key = ObjectIdentifier(stream)
        try channels.withLock { c throws(SubscribeError) in
            guard var ch = c[id] else { throw .closed }
            guard ch.streams.count < SessionEvents.maxStreamsPerSession else { throw .tooMany }
            var out: [UInt8] = Array("retry: 2000\n\n".utf8)
            if let last = lastEventID {
                for e in ch.ring where e.seq > last { out += SessionEvents.format(e) }
            } else if let (name, data) = initial {
                out += SessionEvents.format(Event(seq: ch.seq, name: name, data: data.serializedString()))
            }
            stream.write(out)
            ch.streams[key] = stream
            c[id] = ch
        }
        stream.onEnd { [weak self] in
            self?.channels.withLock { c in _ = c[id]?.streams.removeValue(forKey: key) }
        }
    }

    /// The session ended: its streams end after the events written so far, and its events are forgotten.
    func close(_ id: String) {
        let streams = channels.withLock { c in c.removeValue(forKey: id).map { Array($0.streams.values) } ?? [] }
        for s in streams { s.finish() }
    }

    /// A comment line on every open stream: proxies and browsers see the connection alive.
    func sendKeepAlive() {
        let comment = Array(": keep-alive\n\n".utf8)
        channels.withLock { c in
            for ch in c.values { for s in ch.streams.values { s.write(comment) } }
        }
    }

    /// Open streams, for /metrics.
    var openStreams: Int { channels.withLock { $0.values.reduce(0) { $0 + $1.streams.count } } }
}
