import CShim
import SupervisorStore

/// SHA-256 (FIPS 180-4). Foundation on Linux has none; this one is tested against the NIST vectors.
/// Used to store login tokens as hashes (every authenticated request hashes its token); passwords go
/// through `crypt(3)` instead. The compression uses the CPU's SHA extensions when it has them (the same
/// vectors test both paths).
public struct SHA256: Sendable {
    /// Whether the SHA extensions are used (checked once).
    public static let hardware = cshim_sha256_hw() == 1
    private var useHardware = SHA256.hardware

    /// The round constants (FIPS 180-4 §4.2.2), shared with the hardware path's table.
    private static let k: [UInt32] = Array(UnsafeBufferPointer(start: cshim_sha256_constants(), count: 64))

    private var h: (UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32, UInt32) =
        (0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19)
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    public init() {}

    /// For tests: the software compression even where the hardware one exists.
    init(software: Bool) {
        self.init()
        useHardware = !software && SHA256.hardware
    }

    /// The digest of `bytes`: whole blocks straight from the input, the last one or two built on the stack.
    public static func hash<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        var s = SHA256()
        if let digest = bytes.withContiguousStorageIfAvailable({ s.oneShot(UnsafeRawBufferPointer($0)) }) { return digest }
        s.update(bytes)
        return s.finalize()
    }

    static func hash(_ bytes: [UInt8], software: Bool) -> [UInt8] {
        var s = SHA256(software: software)
        return bytes.withUnsafeBytes { s.oneShot($0) }
    }

    private mutating func oneShot(_ input: UnsafeRawBufferPointer) -> [UInt8] {
        compressAll(input)
        return digest()
    }

    /// The digest of `text`'s UTF-8 as a `TokenKey` (its 32 bytes in order), with no array made: every
    /// authenticated request hashes its token.
    public static func key(_ text: Substring) -> TokenKey {
        var t = text
        return t.withUTF8 { b in
            var s = SHA256()
            s.compressAll(UnsafeRawBufferPointer(b))
            return TokenKey(words: s.digestWords())
        }
    }

    /// Every block of `input` and the padding: `h` is then the digest.
    private mutating func compressAll(_ input: UnsafeRawBufferPointer) {
        let whole = input.count / 64
        if whole > 0 { compress(input.baseAddress!, blocks: whole) }
        let rest = input.count - whole * 64
        let bits = UInt64(input.count) &* 8
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 128) { tail in
            let n = rest + 1 + 8 <= 64 ? 64 : 128
            for i in 0..<n { tail[i] = 0 }
            for i in 0..<rest { tail[i] = input[whole * 64 + i] }
            tail[rest] = 0x80
            for i in 0..<8 { tail[n - 1 - i] = UInt8(truncatingIfNeeded: bits >> (UInt64(i) * 8)) }
            compress(UnsafeRawPointer(tail.baseAddress!), blocks: n / 64)
        }
    }

    /// The digest's 32 bytes (`h` big-endian, in order) as four words.
    private func digestWords() -> (UInt64, UInt64, UInt64, UInt64) {
        var w: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutableBytes(of: &w) { out in
            withUnsafeBytes(of: h) { words in
                for i in 0..<8 { out.storeBytes(of: words.load(fromByteOffset: i * 4, as: UInt32.self).bigEndian, toByteOffset: i * 4, as: UInt32.self) }
            }
        }
        return w
    }

    private func digest() -> [UInt8] { withUnsafeBytes(of: digestWords()) { Array($0) } }

    public static func hash(_ text: String) -> [UInt8] {
        var t = text
        return t.withUTF8 { b in
            var s = SHA256()
            return s.oneShot(UnsafeRawBufferPointer(b))
        }
    }

    public mutating func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        length &+= UInt64(bytes.count)
        if let done: Void = bytes.withContiguousStorageIfAvailable({ absorb(UnsafeRawBufferPointer($0)) }) {
            return done
        }
        let copy = Array(bytes)
        copy.withUnsafeBytes { absorb($0) }
    }

    /// Whole blocks straight from the input; the rest waits in `buffer`.
    private mutating func absorb(_ input: UnsafeRawBufferPointer) {
        var i = 0
        if !buffer.isEmpty {
            let take = min(64 - buffer.count, input.count)
            buffer.append(contentsOf: input[0..<take])
            i = take
            if buffer.count == 64 {
                buffer.withUnsafeBytes { compress($0.baseAddress!, blocks: 1) }
                buffer.removeAll(keepingCapacity: true)
            }
        }
        let whole = (input.count - i) / 64
        if whole > 0 {
            compress(input.baseAddress! + i, blocks: whole)
            i += whole * 64
        }
        if i < input.count { buffer.append(contentsOf: input[i...]) }
    }

    public mutating func finalize() -> [UInt8] {
        let bits = length &* 8
        var pad: [UInt8] = [0x80]
        let rem = (buffer.count + 1) % 64
        pad += [UInt8](repeating: 0, count: rem <= 56 ? 56 - rem : 120 - rem)
        for i in (0..<8).reversed() { pad.append(UInt8(truncatingIfNeeded: bits >> (UInt64(i) * 8))) }
        pad.withUnsafeBytes { absorb($0) }
        precondition(buffer.isEmpty)
        return digest()
    }

    @inline(__always)
    private static func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }

    /// `blocks` 64-byte blocks: the SHA extensions, or software.
    private mutating func compress(_ data: UnsafeRawPointer, blocks: Int) {
        if useHardware {
            withUnsafeMutableBytes(of: &h) { cshim_sha256_blocks($0.baseAddress!.assumingMemoryBound(to: UInt32.self), data, blocks) }
            return
        }
        for b in 0..<blocks { compressSoftware(data + 64 * b) }
    }

    /// One 64-byte block; the message schedule lives on the stack.
    private mutating func compressSoftware(_ block: UnsafeRawPointer) {
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
            for i in 0..<16 {
                let b = block + 4 * i
                w[i] = UInt32(b.load(as: UInt8.self)) << 24 | UInt32(b.load(fromByteOffset: 1, as: UInt8.self)) << 16
                    | UInt32(b.load(fromByteOffset: 2, as: UInt8.self)) << 8 | UInt32(b.load(fromByteOffset: 3, as: UInt8.self))
            }
            for i in 16..<64 {
                let s0 = SHA256.rotr(w[i - 15], 7) ^ SHA256.rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = SHA256.rotr(w[i - 2], 17) ^ SHA256.rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = h
            SHA256.k.withUnsafeBufferPointer { k in
                for i in 0..<64 {
                    let s1 = SHA256.rotr(e, 6) ^ SHA256.rotr(e, 11) ^ SHA256.rotr(e, 25)
                    let ch = (e & f) ^ (~e & g)
                    let t1 = hh &+ s1 &+ ch &+ k[i] &+ w[i]
                    let s0 = SHA256.rotr(a, 2) ^ SHA256.rotr(a, 13) ^ SHA256.rotr(a, 22)
                    let maj = (a & b) ^ (a & c) ^ (b & c)
                    let t2 = s0 &+ maj
                    hh = g
                    g = f
                    f = e
                    e = d &+ t1
                    d = c
                    c = b
                    b = a
                    a = t1 &+ t2
                }
            }
            h = (h.0 &+ a, h.1 &+ b, h.2 &+ c, h.3 &+ d, h.4 &+ e, h.5 &+ f, h.6 &+ g, h.7 &+ hh)
        }
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var diff: UInt8 = 0
    for i in 0..<a.count { diff |= a[i] ^ b[i] }
    return diff == 0
}

/// Lower-case hexadecimal.
public func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}
