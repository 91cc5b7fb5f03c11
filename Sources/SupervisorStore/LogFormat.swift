import CShim

/// The on-disk format shared by log and snapshot files.
///
/// A file is a 32-byte header, then frames:
///
///     header: magic (8) · format version u32 · flags u32 · generation u64 · reserved u32 · crc32c u32 (of bytes 0..<28)
///     frame:  magic "CXFR" or "CXEN" u32 · payload length u32 · first sequence u64 · record count u32 ·
///             crc32c u32 (of the 20 bytes before it and the payload) · payload
///     payload: records, each `length (varint) · kind (1) · fields`
///
/// A log frame is one group commit: it is written in one `pwrite` and made durable by one `fdatasync`, and
/// the next frame is written only after that returned. So only the last frame of the newest log can be torn
/// by a crash; damage anywhere else is real damage. A snapshot ends with a `CXEN` frame whose payload is the
/// record count: a snapshot without it is incomplete.
enum LogFormat {
    static let logMagic: [UInt8] = Array("CXSLOG\0\0".utf8)
    static let snapshotMagic: [UInt8] = Array("CXSSNAP\0".utf8)
    static let headerSize = 32
    static let frameHeaderSize = 24
    static let frameMagic: UInt32 = 0x5246_5843  // "CXFR" little-endian
    static let endMagic: UInt32 = 0x4E45_5843  // "CXEN"
    /// Largest frame accepted when reading; writers split larger batches.
    static let maxFramePayload = 256 << 20

    static func crc(_ bytes: UnsafeRawBufferPointer, _ seed: UInt32 = 0) -> UInt32 {
        cshim_crc32c(seed, bytes.baseAddress, bytes.count)
    }

    static func header(magic: [UInt8], version: UInt32, generation: UInt64) -> [UInt8] {
        var h = magic
        put32(&h, version)
        put32(&h, 0)
        put64(&h, generation)
        put32(&h, 0)
        let c = h.withUnsafeBytes { crc($0) }
        put32(&h, c)
        return h
    }

    struct Header {
        let isSnapshot: Bool
        let version: UInt32
        let generation: UInt64
    }

    static func parseHeader(_ b: [UInt8]) -> Header? {
        guard b.count >= headerSize else { return nil }
        let magic = Array(b[0..<8])
        guard magic == logMagic || magic == snapshotMagic else { return nil }
        let stored = get32(b, 28)
        let computed = b.withUnsafeBytes { crc(UnsafeRawBufferPointer(rebasing: $0[0..<28])) }
        guard stored == computed else { return nil }
        return Header(isSnapshot: magic == snapshotMagic, version: get32(b, 8), generation: get64(b, 16))
    }

    /// One frame holding `records` (each already encoded as kind · fields).
    static func frame(records: [[UInt8]], firstSequence: UInt64, end: Bool = false) -> [UInt8] {
        var payload: [UInt8] = []
        payload.reserveCapacity(records.reduce(0) { $0 + $1.count + 3 })
        for r in records {
            var w = RecordWriter()
            w.varint(UInt64(r.count))
            payload.append(contentsOf: w.bytes)
            payload.append(contentsOf: r)
        }
        return frame(payload: payload, count: UInt32(records.count), firstSequence: firstSequence, magic: end ? endMagic : frameMagic)
    }

    static func frame(payload: [UInt8], count: UInt32, firstSequence: UInt64, magic: UInt32) -> [UInt8] {
        var f: [UInt8] = []
        f.reserveCapacity(frameHeaderSize + payload.count)
        put32(&f, magic)
        put32(&f, UInt32(payload.count))
        put64(&f, firstSequence)
        put32(&f, count)
        var c = f.withUnsafeBytes { crc($0) }
        c = payload.withUnsafeBytes { crc($0, c) }
        put32(&f, c)
        f.append(contentsOf: payload)
        return f
    }

    /// A frame that checks out at `offset`: its magic, records and where the next frame starts.
    struct Frame {
        let offset: Int
        let magic: UInt32
        let firstSequence: UInt64
        let records: [ArraySlice<UInt8>]
        let end: Int
    }

    /// The frame at `offset`, or nil if the bytes there are not a whole, intact frame.
    static func frame(in b: [UInt8], at offset: Int) -> Frame? {
        guard b.count - offset >= frameHeaderSize else { return nil }
        let magic = get32(b, offset)
        guard magic == frameMagic || magic == endMagic else { return nil }
        let length = Int(get32(b, offset + 4))
        guard length <= maxFramePayload, length <= b.count - offset - frameHeaderSize else { return nil }
        let stored = get32(b, offset + 20)
        let computed = b.withUnsafeBytes { raw -> UInt32 in
            let c = crc(UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + 20)]))
            let start = offset + frameHeaderSize
            return crc(UnsafeRawBufferPointer(rebasing: raw[start..<(start + length)]), c)
        }
        guard stored == computed else { return nil }
        let count = Int(get32(b, offset + 16))
        var records: [ArraySlice<UInt8>] = []
        let start = offset + frameHeaderSize
        let payload = b[start..<(start + length)]
        if magic == frameMagic {
            records.reserveCapacity(count)
            var i = payload.startIndex
            while i < payload.endIndex {
                guard let (len, next) = RecordReader.varint(payload, at: i), len <= UInt64(payload.endIndex - next) else { return nil }
                records.append(payload[next..<(next + Int(len))])
                i = next + Int(len)
            }
            guard records.count == count else { return nil }
        } else {
            records = [payload]
        }
        return Frame(offset: offset, magic: magic, firstSequence: get64(b, offset + 8), records: records, end: start + length)
    }

    /// What reading a file found.
    struct Scan {
        var header: Header
        var frames: [Frame] = []
        /// Where the intact part ends.
        var validEnd: Int
        /// Damage at `validEnd`: `true` when an intact frame follows it (not a torn tail).
        var damageFollowedByValidFrame = false
        var damaged: Bool
        var hasEnd = false
    }

    /// Reads every frame of a file. Stops at the first bad frame and looks for any intact frame after it.
    static func scan(_ b: [UInt8]) -> Scan? {
        guard let header = parseHeader(b) else { return nil }
        var s = Scan(header: header, validEnd: headerSize, damaged: false)
        var o = headerSize
        while o < b.count {
            guard let f = frame(in: b, at: o) else {
                s.damaged = true
                s.validEnd = o
                var probe = o + 1
                while probe + frameHeaderSize <= b.count {
                    // Cheap magic test first; a full check only where a frame could start.
                    let m = get32(b, probe)
                    if (m == frameMagic || m == endMagic) && frame(in: b, at: probe) != nil {
                        s.damageFollowedByValidFrame = true
                        break
                    }
                    probe += 1
                }
                return s
            }
            s.frames.append(f)
            if f.magic == endMagic { s.hasEnd = true }
            o = f.end
        }
        s.validEnd = o
        return s
    }

    static func put32(_ b: inout [UInt8], _ v: UInt32) {
        withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) }
    }

    static func put64(_ b: inout [UInt8], _ v: UInt64) {
        withUnsafeBytes(of: v.littleEndian) { b.append(contentsOf: $0) }
    }

    static func get32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
    }

    static func get64(_ b: [UInt8], _ o: Int) -> UInt64 {
        UInt64(get32(b, o)) | UInt64(get32(b, o + 4)) << 32
    }
}
