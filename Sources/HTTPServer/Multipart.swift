import CShim
import Glibc

/// `multipart/form-data` (RFC 7578) over a request body that may be a spooled file: the file is mapped
/// read-only, so a 256 MiB upload is never copied into memory; each part's bytes are handed to the caller
/// as a view of the mapping.
public enum Multipart {
    public struct Part {
        public let name: String
        public let filename: String?
        public let contentType: String?
        /// The part's content; valid only during the callback.
        public let data: UnsafeRawBufferPointer
    }

    public struct Limits: Sendable {
        public var maxParts = 16
        public var maxHeaderBytes = 8 << 10

        public init() {}
    }

    /// The boundary parameter of a `multipart/form-data` Content-Type, or nil.
    public static func boundary(of contentType: String) -> String? {
        let parts = contentType.split(separator: ";").map { $0.trimmingASCIIWhitespace() }
        guard parts.first?.lowercased() == "multipart/form-data" else { return nil }
        for p in parts.dropFirst() {
            let kv = p.split(separator: "=", maxSplits: 1)
            if kv.count == 2, kv[0].trimmingASCIIWhitespace().lowercased() == "boundary" {
                var b = kv[1].trimmingASCIIWhitespace()
                if b.hasPrefix("\"") && b.hasSuffix("\"") && b.count >= 2 { b = String(b.dropFirst().dropLast()) }
                // RFC 2046: 1 to 70 characters.
                return (1...70).contains(b.utf8.count) ? b : nil
            }
        }
        return nil
    }

    /// Calls `handle` for each part in order. Throws a `400` problem for a malformed body.
    public static func parse(_ body: RequestBody, boundary: String, limits: Limits = Limits(),
                             _ handle: (Part) throws(Problem) -> Void) throws(Problem)
    {
        switch body {
        case .empty:
            throw Problem.validation(field: "body", "an empty multipart body")
        case .bytes(let b):
            var failure: Problem?
            b.withUnsafeBytes { raw in
                do throws(Problem) {
                    try parse(raw, boundary: boundary, limits: limits, handle)
                } catch {
                    failure = error
                }
            }
            if let failure { throw failure }
        case .file(let f):
            guard f.length > 0 else { throw Problem.validation(field: "body", "an empty multipart body") }
            guard let map = mmap(nil, f.length, PROT_READ, MAP_PRIVATE, f.fd, 0), map != MAP_FAILED else {
                throw Problem(503, "service_unavailable", "The upload could not be read; try again.")
            }
            defer { munmap(map, f.length) }
            try parse(UnsafeRawBufferPointer(start: map, count: f.length), boundary: boundary, limits: limits, handle)
        }
    }

    static func parse(_ raw: UnsafeRawBufferPointer, boundary: String, limits: Limits, _ handle: (Part) throws(Problem) -> Void) throws(Problem) {
        let delimiter = Array(("--" + boundary).utf8)
        let bad = { (why: String) -> Problem in Problem.validation(field: "body", "malformed multipart body: \(why)") }
        // The first delimiter: at the very start, or after a preamble and CRLF.
        guard var at = find(delimiter, in: raw, from: 0) else { throw bad("no boundary") }
        var parts = 0
        while true {
            at += delimiter.count
            // "--" after a delimiter ends the body.
            if at + 2 <= raw.count && raw[at] == UInt8(ascii: "-") && raw[at + 1] == UInt8(ascii: "-") { return }
            // Transport padding, then CRLF.
            while at < raw.count && (raw[at] == 0x20 || raw[at] == 0x09) { at += 1 }
            guard at + 2 <= raw.count, raw[at] == 13, raw[at + 1] == 10 else { throw bad("no CRLF after the boundary") }
            at += 2
            parts += 1
            guard parts <= limits.maxParts else { throw bad("more than \(limits.maxParts) parts") }
            guard let headEnd = find([13, 10, 13, 10], in: raw, from: at), headEnd - at <= limits.maxHeaderBytes else {
                throw bad("part headers missing or longer than \(limits.maxHeaderBytes) bytes")
            }
            let head = String(decoding: UnsafeRawBufferPointer(rebasing: raw[at..<headEnd]), as: UTF8.self)
            var name: String?, filename: String?, ctype: String?
            for line in head.split(separator: "\r\n") {
                let kv = line.split(separator: ":", maxSplits: 1)
                guard kv.count == 2 else { throw bad("a part header without ':'") }
                let field = kv[0].lowercased(), value = String(kv[1]).trimmingASCIIWhitespace()
                if field == "content-disposition" {
                    let params = dispositionParameters(value)
                    guard params.type == "form-data" else { throw bad("a part that is not form-data") }
                    name = params.values["name"]
                    filename = params.values["filename"]
                } else if field == "content-type" {
                    ctype = value
                }
            }
            guard let name else { throw bad("a part without a name") }
            let start = headEnd + 4
            var closing = [UInt8]([13, 10])
            closing.append(contentsOf: delimiter)
            guard let end = find(closing, in: raw, from: start) else { throw bad("a part without its closing boundary") }
            try handle(Part(name: name, filename: filename, contentType: ctype, data: UnsafeRawBufferPointer(rebasing: raw[start..<end])))
            at = end + 2
        }
    }

    /// `form-data; name="structure"; filename="1abc.pdb"` → type and parameters (quotes and `\"` undone).
    static func dispositionParameters(_ value: String) -> (type: String, values: [String: String]) {
        var values: [String: String] = [:]
        let chars = Array(value)
        var i = 0
        func skipSpaces() { while i < chars.count && (chars[i] == " " || chars[i] == "\t") { i += 1 } }
        var type = ""
        while i < chars.count && chars[i] != ";" { type.append(chars[i]); i += 1 }
        while i < chars.count {
            i += 1  // ';'
            skipSpaces()
            var key = ""
            while i < chars.count && chars[i] != "=" && chars[i] != ";" { key.append(chars[i]); i += 1 }
            guard i < chars.count, chars[i] == "=" else { continue }
            i += 1
            var v = ""
            if i < chars.count && chars[i] == "\"" {
                i += 1
                while i < chars.count && chars[i] != "\"" {
                    if chars[i] == "\\" && i + 1 < chars.count { i += 1 }
                    v.append(chars[i])
                    i += 1
                }
                i += 1
                while i < chars.count && chars[i] != ";" { i += 1 }
            } else {
                while i < chars.count && chars[i] != ";" { v.append(chars[i]); i += 1 }
            }
            values[key.trimmingASCIIWhitespace().lowercased()] = v.trimmingASCIIWhitespace()
        }
        return (type.trimmingASCIIWhitespace().lowercased(), values)
    }

    /// The first occurrence of `needle` in `raw` at or after `from` (memmem).
    static func find(_ needle: [UInt8], in raw: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard from <= raw.count, let base = raw.baseAddress else { return nil }
        return needle.withUnsafeBytes { n -> Int? in
            guard let p = cshim_memmem(base + from, raw.count - from, n.baseAddress, n.count) else { return nil }
            return base.distance(to: UnsafeRawPointer(p))
        }
    }
}

extension StringProtocol {
    func trimmingASCIIWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" { s.removeLast() }
        return String(s)
    }
}
