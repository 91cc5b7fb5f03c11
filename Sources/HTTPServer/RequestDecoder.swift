import Glibc

/// Incremental HTTP/1.1 request decoder: bytes in, `head` / `body` / `end` events out, in order, whatever
/// way the input was split. It stops after each `end` until `resume()`, so a connection answers pipelined
/// requests one at a time and in order. Strict on purpose: every shape that lets two parsers disagree about
/// where a message ends (request smuggling) is a 400.
public struct RequestDecoder {
    public enum Event: Equatable {
        case head(RequestHead)
        case body([UInt8])
        case end
    }

    private enum State {
        case head
        case body(remaining: Int)
        case chunked
        case paused
    }

    public let limits: ParserLimits
    private var buffer: [UInt8] = []
    /// Start of unconsumed bytes in `buffer`.
    private var readIndex = 0
    private var state: State = .head

    // Head scanning state, relative to `readIndex` of the message start.
    private var scanIndex = 0
    private var lineStart = 0
    private var lines: [Range<Int>] = []
    private var leadingEmptyLines = 0

    private var chunked = ChunkedDecoder()

    public init(limits: ParserLimits = ParserLimits()) {
        self.limits = limits
        chunked = ChunkedDecoder(limits: limits)
    }

    /// Bytes received but not yet consumed by an event.
    public var bufferedCount: Int { buffer.count - readIndex }

    /// True while between messages with nothing buffered: a good moment to apply an idle timeout.
    public var isIdle: Bool {
        if case .head = state { return bufferedCount == 0 }
        return false
    }

    /// True when a head is partly received.
    public var isInsideHead: Bool {
        if case .head = state { return bufferedCount > 0 }
        return false
    }

    public var isPaused: Bool {
        if case .paused = state { return true }
        return false
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compactIfUseful()
        buffer.append(contentsOf: bytes)
    }

    public mutating func append(_ bytes: [UInt8]) {
        compactIfUseful()
        buffer.append(contentsOf: bytes)
    }

    /// After `end`, the decoder waits for this before reading the next pipelined request.
    public mutating func resume() {
        if case .paused = state { startHead() }
    }

    /// The next event, or nil when more input is needed (or the decoder is paused).
    public mutating func next() throws(HTTPParseError) -> Event? {
        switch state {
        case .paused:
            return nil
        case .head:
            guard let head = try scanHead() else { return nil }
            switch head.framing {
            case .none, .length(0):
                state = .body(remaining: 0)
            case .length(let n):
                state = .body(remaining: n)
            case .chunked:
                chunked = ChunkedDecoder(limits: limits)
                state = .chunked
            }
            return .head(head)
        case .body(let remaining):
            if remaining == 0 {
                state = .paused
                return .end
            }
            let available = buffer.count - readIndex
            if available == 0 { return nil }
            let n = min(available, remaining)
            let piece = Array(buffer[readIndex..<readIndex + n])
            readIndex += n
            state = .body(remaining: remaining - n)
            return .body(piece)
        case .chunked:
            if readIndex == buffer.count && !chunked.isDone { return nil }
            var out: [UInt8] = []
            let consumed = try buffer.withUnsafeBufferPointer { all throws(HTTPParseError) -> Int in
                let slice = UnsafeBufferPointer(rebasing: all[readIndex...])
                return try chunked.feed(slice, into: &out)
            }
            readIndex += consumed
            if !out.isEmpty { return .body(out) }
            if chunked.isDone {
                state = .paused
                return .end
            }
            return nil
        }
    }

    private mutating func startHead() {
        state = .head
        scanIndex = 0
        lineStart = 0
        lines.removeAll(keepingCapacity: true)
        leadingEmptyLines = 0
    }

    private mutating func compactIfUseful() {
        // Only between messages or when the consumed prefix dominates; head offsets are relative to readIndex.
        if readIndex > 0 && (readIndex == buffer.count || readIndex >= 4096) {
            buffer.removeSubrange(0..<readIndex)
            readIndex = 0
        }
    }

    /// Finds lines ending in CRLF; at the empty line, parses the whole head.
    private mutating func scanHead() throws(HTTPParseError) -> RequestHead? {
        let base = readIndex
        let end = buffer.count
        var i = base + scanIndex
        while i < end {
            // The next LF, found with memchr (a loop over the array's subscript was a visible share of a request).
            let lf = buffer.withUnsafeBufferPointer { all -> Int in
                guard let p = memchr(all.baseAddress! + i, 0x0A, end - i) else { return end }
                return all.baseAddress!.distance(to: p.assumingMemoryBound(to: UInt8.self))
            }
            if lf == end {
                i = end
                break
            }
            i = lf
            do {  // LF
                let lineEnd = i  // exclusive of LF
                if lineEnd == base + lineStart || buffer[lineEnd - 1] != 0x0D {
                    throw .bad("line not terminated by CRLF")
                }
                let content = (base + lineStart)..<(lineEnd - 1)
                if content.isEmpty {
                    if lines.isEmpty {
                        // RFC 9112 §2.2: ignore empty lines before the request line (a few, not forever).
                        leadingEmptyLines += 1
                        if leadingEmptyLines > 8 { throw .bad("too many empty lines before the request line") }
                        lineStart = i + 1 - base
                        i += 1
                        continue
                    }
                    let head = try parseHead(base: base)
                    readIndex = i + 1
                    return head
                }
                lines.append((content.lowerBound - base)..<(content.upperBound - base))
                if lines.count == 1 && content.count > limits.maxRequestLine {
                    throw HTTPParseError(414, "uri_too_long", "request line longer than \(limits.maxRequestLine) bytes")
                }
                if lines.count - 1 > limits.maxHeaderCount {
                    throw HTTPParseError(431, "header_fields_too_large", "more than \(limits.maxHeaderCount) header fields")
                }
                lineStart = i + 1 - base
            }
            i += 1
        }
        scanIndex = i - base
        // Limits on what has not ended yet.
        if lines.isEmpty {
            if scanIndex - lineStart > limits.maxRequestLine + 1 {
                throw HTTPParseError(414, "uri_too_long", "request line longer than \(limits.maxRequestLine) bytes")
            }
        } else {
            let headerBytes = scanIndex - lines[0].upperBound
            if headerBytes > limits.maxHeaderBytes + 4 {
                throw HTTPParseError(431, "header_fields_too_large", "header section larger than \(limits.maxHeaderBytes) bytes")
            }
        }
        return nil
    }

    private func parseHead(base: Int) throws(HTTPParseError) -> RequestHead {
        let headerBytes = lines.count > 1 ? lines[lines.count - 1].upperBound - lines[1].lowerBound : 0
        if headerBytes > limits.maxHeaderBytes {
            throw HTTPParseError(431, "header_fields_too_large", "header section larger than \(limits.maxHeaderBytes) bytes")
        }
        return try buffer.withUnsafeBufferPointer { all throws(HTTPParseError) -> RequestHead in
            func slice(_ r: Range<Int>) -> UnsafeBufferPointer<UInt8> {
                UnsafeBufferPointer(rebasing: all[(base + r.lowerBound)..<(base + r.upperBound)])
            }
            let head = try RequestLineParser.parse(slice(lines[0]))
            var headers = HTTPHeaders()
            headers.reserveCapacity(lines.count - 1)
            for r in lines.dropFirst() {
                let (name, value) = try HeaderLineParser.parse(slice(r))
                headers.add(name, value)
            }
            head.headers = headers
            try FramingRules.apply(to: head)
            return head
        }
    }
}

extension RequestHead: Equatable {
    /// Same request line, framing and header fields (for tests of the decoder).
    public static func == (a: RequestHead, b: RequestHead) -> Bool {
        a.method == b.method && a.target == b.target && a.framing == b.framing && a.versionMinor == b.versionMinor
            && a.headers.fields.map { "\($0.name):\($0.value)" } == b.headers.fields.map { "\($0.name):\($0.value)" }
    }
}
