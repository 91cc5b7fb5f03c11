/// Decodes the chunked transfer coding (RFC 9112 §7.1) incrementally: any split of the input gives the same
/// data. Chunk sizes must be 1 to 16 hex digits directly followed by `;` or CRLF (no whitespace: a shape two
/// parsers may read differently); extensions are skipped; trailers are read and dropped.
public struct ChunkedDecoder {
    private enum State {
        case size(digits: Int, value: UInt64)
        case extensionBytes(value: UInt64)
        case sizeLF(value: UInt64)
        case data(remaining: UInt64)
        case dataCR
        case dataLF
        case trailerLineStart
        case trailerLine
        case trailerLF(empty: Bool)
        case done
    }

    private var state: State = .size(digits: 0, value: 0)
    private var lineBytes = 0
    private var trailerBytes = 0
    private var trailerLineEmpty = true
    let limits: ParserLimits

    public init(limits: ParserLimits = ParserLimits()) { self.limits = limits }

    public var isDone: Bool {
        if case .done = state { return true }
        return false
    }

    /// Consumes input up to the end of the chunked body (never past it); appends decoded data to `out`.
    public mutating func feed(_ input: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) throws(HTTPParseError) -> Int {
        var i = 0
        let n = input.count
        while i < n {
            let b = input[i]
            switch state {
            case .done:
                return i
            case .size(let digits, let value):
                if let h = hexValue(b) {
                    if digits >= 16 { throw .bad("chunk size too large") }
                    state = .size(digits: digits + 1, value: value << 4 | UInt64(h))
                    lineBytes += 1
                } else if digits == 0 {
                    throw .bad("invalid chunk size")
                } else if b == 0x0D {
                    state = .sizeLF(value: value)
                } else if b == UInt8(ascii: ";") {
                    state = .extensionBytes(value: value)
                    lineBytes += 1
                } else {
                    throw .bad("invalid chunk size")
                }
                i += 1
            case .extensionBytes(let value):
                if b == 0x0D {
                    state = .sizeLF(value: value)
                } else if (b < 0x20 && b != 0x09) || b == 0x7F {
                    throw .bad("invalid character in chunk extension")
                } else {
                    lineBytes += 1
                    if lineBytes > limits.maxChunkLine { throw .bad("chunk size line too long") }
                }
                i += 1
            case .sizeLF(let value):
                guard b == 0x0A else { throw .bad("chunk size line not terminated by CRLF") }
                lineBytes = 0
                state = value == 0 ? .trailerLineStart : .data(remaining: value)
                i += 1
            case .data(let remaining):
                let take = Int(min(UInt64(n - i), remaining))
                out.append(contentsOf: UnsafeBufferPointer(rebasing: input[i..<(i + take)]))
                i += take
                state = remaining - UInt64(take) == 0 ? .dataCR : .data(remaining: remaining - UInt64(take))
            case .dataCR:
                guard b == 0x0D else { throw .bad("chunk data not followed by CRLF") }
                state = .dataLF
                i += 1
            case .dataLF:
                guard b == 0x0A else { throw .bad("chunk data not followed by CRLF") }
                state = .size(digits: 0, value: 0)
                i += 1
            case .trailerLineStart:
                if b == 0x0D {
                    state = .trailerLF(empty: true)
                } else if b == 0x20 || b == 0x09 {
                    throw .bad("obsolete line folding in trailer")
                } else {
                    state = .trailerLine
                    try countTrailer()
                }
                i += 1
            case .trailerLine:
                if b == 0x0D {
                    state = .trailerLF(empty: false)
                } else if (b < 0x20 && b != 0x09) || b == 0x7F {
                    throw .bad("control character in trailer field")
                } else {
                    try countTrailer()
                }
                i += 1
            case .trailerLF(let empty):
                guard b == 0x0A else { throw .bad("trailer line not terminated by CRLF") }
                state = empty ? .done : .trailerLineStart
                i += 1
                if empty { return i }
            }
        }
        return i
    }

    private mutating func countTrailer() throws(HTTPParseError) {
        trailerBytes += 1
        if trailerBytes > limits.maxTrailerBytes { throw HTTPParseError(431, "header_fields_too_large", "trailer section too large") }
    }

    @inline(__always)
    private func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case 0x30...0x39: return b - 0x30
        case 0x41...0x46: return b - 0x41 + 10
        case 0x61...0x66: return b - 0x61 + 10
        default: return nil
        }
    }
}
