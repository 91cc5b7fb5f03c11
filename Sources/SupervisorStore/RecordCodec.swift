/// The field encoding of every stored record: a sequence of `tag (1 byte) · length (varint) · bytes`.
///
/// Readers skip tags they do not know and give defaults for tags that are absent, so a later version can add
/// fields without a format change (the file format version is for changes that need an upgrade step).
/// Integers are zig-zag varints, strings UTF-8, doubles their IEEE bits little-endian.
public struct RecordWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    @inline(__always)
    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    public mutating func field(_ tag: UInt8, _ value: [UInt8]) {
        bytes.append(tag)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func field(_ tag: UInt8, _ value: String) {
        var s = value
        s.withUTF8 { b in
            bytes.append(tag)
            varint(UInt64(b.count))
            bytes.append(contentsOf: b)
        }
    }

    public mutating func field(_ tag: UInt8, _ value: String?) {
        if let value { field(tag, value) }
    }

    public mutating func field(_ tag: UInt8, _ value: Int64) {
        var inner = RecordWriter()
        inner.varint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
        field(tag, inner.bytes)
    }

    public mutating func field(_ tag: UInt8, _ value: Int64?) {
        if let value { field(tag, value) }
    }

    public mutating func field(_ tag: UInt8, _ value: Int) { field(tag, Int64(value)) }

    public mutating func field(_ tag: UInt8, _ value: Int?) {
        if let value { field(tag, Int64(value)) }
    }

    public mutating func field(_ tag: UInt8, _ value: Bool) { field(tag, value ? [1] : [0]) }

    public mutating func field(_ tag: UInt8, _ value: Double) {
        withUnsafeBytes(of: value.bitPattern.littleEndian) { field(tag, Array($0)) }
    }

    public mutating func field(_ tag: UInt8, _ value: Double?) {
        if let value { field(tag, value) }
    }
}

/// Reads what `RecordWriter` wrote: `fields` maps each tag to its bytes (the last one wins).
public struct RecordReader: Sendable {
    private var fields: [UInt8: ArraySlice<UInt8>] = [:]

    /// Parses the field list; throws on a length that runs past the end.
    public init(_ bytes: ArraySlice<UInt8>) throws(StoreError) {
        var i = bytes.startIndex
        while i < bytes.endIndex {
            let tag = bytes[i]
            i += 1
            guard let (len, next) = RecordReader.varint(bytes, at: i), len <= UInt64(bytes.endIndex - next) else {
                throw StoreError(.corrupt, "field \(tag): length runs past the record")
            }
            fields[tag] = bytes[next..<(next + Int(len))]
            i = next + Int(len)
        }
    }

    static func varint(_ b: ArraySlice<UInt8>, at start: Int) -> (UInt64, Int)? {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        var i = start
        while i < b.endIndex && shift < 64 {
            let c = b[i]
            v |= UInt64(c & 0x7F) << shift
            i += 1
            if c & 0x80 == 0 { return (v, i) }
            shift += 7
        }
        return nil
    }

    public func has(_ tag: UInt8) -> Bool { fields[tag] != nil }

    public func bytes(_ tag: UInt8) -> [UInt8]? { fields[tag].map { Array($0) } }

    public func string(_ tag: UInt8) -> String? { fields[tag].map { String(decoding: $0, as: UTF8.self) } }

    public func string(_ tag: UInt8, default d: String) -> String { string(tag) ?? d }

    public func int(_ tag: UInt8) -> Int64? {
        guard let f = fields[tag], let (u, end) = RecordReader.varint(f, at: f.startIndex), end == f.endIndex else { return nil }
        return Int64(bitPattern: u >> 1) ^ -Int64(bitPattern: u & 1)
    }

    public func int(_ tag: UInt8, default d: Int64) -> Int64 { int(tag) ?? d }

    public func bool(_ tag: UInt8, default d: Bool = false) -> Bool { fields[tag].map { $0.first == 1 } ?? d }

    public func double(_ tag: UInt8) -> Double? {
        guard let f = fields[tag], f.count == 8 else { return nil }
        var bits: UInt64 = 0
        for (k, b) in f.enumerated() { bits |= UInt64(b) << (8 * UInt64(k)) }
        return Double(bitPattern: bits)
    }

    /// A field that must be present (ids, keys): its absence means the record is not one of ours.
    public func required(_ tag: UInt8, _ what: String) throws(StoreError) -> String {
        guard let s = string(tag) else { throw StoreError(.corrupt, "record without \(what)") }
        return s
    }
}
