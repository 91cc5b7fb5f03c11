/// RFC 9110 §5.6.2 `tchar` (DIGIT, ALPHA and ``!#$%&'*+-.^_`|~``) as bits: bytes 0–63, then 64–127. Constants,
/// not a table: a global table is initialised lazily, and every header byte paid the check.
let tcharLow: UInt64 = 0x03ff_6cfa_0000_0000
let tcharHigh: UInt64 = 0x57ff_ffff_c7ff_fffe

@inline(__always)
func isTchar(_ b: UInt8) -> Bool {
    if b < 64 { return (tcharLow >> UInt64(b)) & 1 == 1 }
    if b < 128 { return (tcharHigh >> UInt64(b - 64)) & 1 == 1 }
    return false
}

/// Parses `method SP request-target SP HTTP-version` (RFC 9112 §3).
enum RequestLineParser {
    static func parse(_ line: UnsafeBufferPointer<UInt8>) throws(HTTPParseError) -> RequestHead {
        guard let sp1 = line.firstIndex(of: 0x20) else { throw .bad("malformed request line") }
        guard let sp2 = line[(sp1 + 1)...].firstIndex(of: 0x20) else { throw .bad("malformed request line") }
        if line[(sp2 + 1)...].contains(0x20) { throw .bad("malformed request line") }
        let methodBytes = line[0..<sp1]
        let targetBytes = line[(sp1 + 1)..<sp2]
        let versionBytes = line[(sp2 + 1)...]
        if methodBytes.isEmpty || !methodBytes.allSatisfy(isTchar) { throw .bad("method is not a token") }
        if targetBytes.isEmpty { throw .bad("empty request target") }
        // Visible ASCII only; anything else must be percent-encoded.
        if !targetBytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { throw .bad("invalid character in request target") }
        let minor = try parseVersion(versionBytes)
        let method = HTTPMethod(String(decoding: methodBytes, as: UTF8.self))
        var target = String(decoding: targetBytes, as: UTF8.self)
        let first = targetBytes.first!
        if first == UInt8(ascii: "*") {
            guard targetBytes.count == 1, method == .OPTIONS else { throw .bad("'*' target is for OPTIONS only") }
        } else if first != UInt8(ascii: "/") {
            // absolute-form (RFC 9112 §3.2.2): servers must accept it; keep its path and query.
            let lower = target.lowercased()
            guard lower.hasPrefix("http://") || lower.hasPrefix("https://") else {
                throw .bad("request target must be origin-form or absolute-form")
            }
            let afterScheme = target[target.index(target.firstIndex(of: ":")!, offsetBy: 3)...]
            if let slash = afterScheme.firstIndex(where: { $0 == "/" || $0 == "?" }) {
                target = String(afterScheme[slash...])
                if target.hasPrefix("?") { target = "/" + target }
            } else {
                target = "/"
            }
        }
        let path: String
        let query: String
        if first == UInt8(ascii: "/"), let q = targetBytes.firstIndex(of: UInt8(ascii: "?")) {
            // The usual case, split where the bytes are (a search through the String's views cost more).
            path = String(decoding: line[targetBytes.startIndex..<q], as: UTF8.self)
            query = String(decoding: line[(q + 1)..<targetBytes.endIndex], as: UTF8.self)
        } else if first == UInt8(ascii: "/") || first == UInt8(ascii: "*") {
            path = target
            query = ""
        } else if let q = target.utf8.firstIndex(of: UInt8(ascii: "?")) {
            path = String(target[..<q])
            query = String(target[target.index(after: q)...])
        } else {
            path = target
            query = ""
        }
        return RequestHead(
            method: method, target: target, path: path, query: query, versionMinor: minor,
            headers: HTTPHeaders(), framing: .none, expectContinue: false, keepAlive: minor == 1)
    }

    private static func parseVersion(_ b: Slice<UnsafeBufferPointer<UInt8>>) throws(HTTPParseError) -> Int {
        // HTTP-version = "HTTP" "/" DIGIT "." DIGIT, case-sensitive.
        let s = b.startIndex
        guard b.count == 8, b[s] == 0x48, b[s + 1] == 0x54, b[s + 2] == 0x54, b[s + 3] == 0x50, b[s + 4] == 0x2F,
            b[s + 6] == 0x2E, (0x30...0x39).contains(b[s + 5]), (0x30...0x39).contains(b[s + 7])
        else { throw .bad("malformed HTTP version") }
        guard b[s + 5] == 0x31, b[s + 7] == 0x30 || b[s + 7] == 0x31 else {
            throw HTTPParseError(505, "http_version_not_supported", "only HTTP/1.0 and HTTP/1.1 are served")
        }
        return Int(b[s + 7] - 0x30)
    }
}

/// Parses `field-name ":" OWS field-value OWS` (RFC 9112 §5), refusing obs-fold (§5.2), whitespace before
/// the colon (§5.1) and control characters in values (RFC 9110 §5.5).
enum HeaderLineParser {
    static func parse(_ line: UnsafeBufferPointer<UInt8>) throws(HTTPParseError) -> (String, String) {
        guard let first = line.first else { throw .bad("empty header line") }
        if first == 0x20 || first == 0x09 { throw .bad("obsolete line folding is not accepted") }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw .bad("header field without ':'") }
        let name = line[0..<colon]
        if name.isEmpty { throw .bad("empty header field name") }
        for b in name where !isTchar(b) {
            if b == 0x20 || b == 0x09 { throw .bad("whitespace before ':' in a header field") }
            throw .bad("invalid character in header field name")
        }
        var start = colon + 1
        var end = line.count
        while start < end && (line[start] == 0x20 || line[start] == 0x09) { start += 1 }
        while end > start && (line[end - 1] == 0x20 || line[end - 1] == 0x09) { end -= 1 }
        for i in start..<end {
            let b = line[i]
            if (b < 0x20 && b != 0x09) || b == 0x7F { throw .bad("control character in header field value") }
        }
        return (String(decoding: name, as: UTF8.self), String(decoding: line[start..<end], as: UTF8.self))
    }
}

/// Message framing and connection rules (RFC 9112 §6.3, §9.3; RFC 9110 §10.1.1).
enum FramingRules {
    static func apply(to head: RequestHead) throws(HTTPParseError) {
        var hostCount = 0
        var contentLengths: [String] = []
        var transferEncodings: [String] = []
        var connectionTokens: [String] = []
        var expect: [String] = []
        for f in head.headers.fields {
            // Compared in place (a lower-cased copy of every name cost an allocation per field).
            if asciiCaseInsensitiveEquals(f.name, "host") {
                hostCount += 1
            } else if asciiCaseInsensitiveEquals(f.name, "content-length") {
                contentLengths.append(f.value)
            } else if asciiCaseInsensitiveEquals(f.name, "transfer-encoding") {
                transferEncodings.append(f.value)
            } else if asciiCaseInsensitiveEquals(f.name, "connection") {
                connectionTokens += f.value.split(separator: ",").map { trim($0).lowercased() }
            } else if asciiCaseInsensitiveEquals(f.name, "expect") {
                expect.append(f.value)
            }
        }
        if head.versionMinor == 1 && hostCount == 0 { throw .bad("HTTP/1.1 request without Host") }
        if hostCount > 1 { throw .bad("more than one Host header field") }

        if !transferEncodings.isEmpty {
            if !contentLengths.isEmpty { throw .bad("both Content-Length and Transfer-Encoding") }
            if head.versionMinor == 0 { throw .bad("Transfer-Encoding in an HTTP/1.0 request") }
            let codings = transferEncodings.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }
                .map { trim($0).lowercased() }
            guard codings.last == "chunked" else { throw .bad("Transfer-Encoding must end in chunked") }
            if codings.count != 1 {
                if codings.dropLast().contains("chunked") { throw .bad("chunked applied more than once") }
                throw HTTPParseError(501, "not_implemented", "transfer coding not supported: \(codings.dropLast().joined(separator: ", "))")
            }
            head.framing = .chunked
        } else if !contentLengths.isEmpty {
            var value: Int?
            for raw in contentLengths {
                for part in raw.split(separator: ",", omittingEmptySubsequences: false) {
                    let t = trim(part)
                    guard !t.isEmpty, t.utf8.count <= 18, t.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                        let n = Int(t)
                    else { throw .bad("invalid Content-Length") }
                    if let v = value, v != n { throw .bad("conflicting Content-Length values") }
                    value = n
                }
            }
            head.framing = .length(value!)
        }

        for e in expect {
            if e.lowercased() == "100-continue" { head.expectContinue = true } else {
                throw HTTPParseError(417, "expectation_failed", "only 100-continue is supported")
            }
        }
        // An HTTP/1.0 client gets no 100 (RFC 9110 §10.1.1).
        if head.versionMinor == 0 { head.expectContinue = false }

        if head.versionMinor == 1 {
            head.keepAlive = !connectionTokens.contains("close")
        } else {
            head.keepAlive = connectionTokens.contains("keep-alive")
        }
    }

    @inline(__always)
    static func trim(_ s: Substring) -> String {
        var sub = s[...]
        while let f = sub.first, f == " " || f == "\t" { sub = sub.dropFirst() }
        while let l = sub.last, l == " " || l == "\t" { sub = sub.dropLast() }
        return String(sub)
    }
}
