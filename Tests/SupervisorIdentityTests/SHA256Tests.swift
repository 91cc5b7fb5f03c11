import SupervisorStore
import Testing
@testable import SupervisorIdentity

/// `"0aff"` → `[0x0a, 0xff]`.
private func hexBytes(_ hex: String) -> [UInt8] {
    let u = Array(hex.utf8)
    return stride(from: 0, to: u.count, by: 2).map { UInt8(String(decoding: u[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
}

@Suite("SHA-256 and passwords")
struct SHA256Tests {
    /// FIPS 180-4 examples (NIST CSRC "SHA256.pdf", "SHA2_Additional.pdf") and the short-message vectors
    /// of the NIST CAVP SHA256ShortMsg set.
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
        ("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"),
        ("The quick brown fox jumps over the lazy dog", "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"),
    ])
    func nistVectors(_ input: String, _ expected: String) {
        #expect(hexString(SHA256.hash(input)) == expected)
        #expect(hexString(SHA256.hash(Array(input.utf8), software: true)) == expected, "the software compression")
    }

    @Test func theHardwareAndSoftwareCompressionsAgreeAtEveryLength() {
        // Where the CPU has the SHA extensions both paths run; elsewhere this compares software with itself.
        print("SHA-256 extensions used: \(SHA256.hardware)")
        var rng = SystemRandomNumberGenerator()
        for n in 0...300 {
            let bytes = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(SHA256.hash(bytes) == SHA256.hash(bytes, software: true), "length \(n)")
        }
    }

    /// The digest as a token key (no array) holds the same 32 bytes as the array digest, at every length
    /// around the block and padding boundaries, from a slice in the middle of a larger string too.
    @Test func theTokenKeyDigestEqualsTheArrayDigest() {
        for n in 0...130 {
            let text = String((0..<n).map { Character(UnicodeScalar(UInt8(33 + ($0 * 7) % 90))) })
            let framed = "Bearer " + text + "\r\n"
            let inside = framed.dropFirst(7).prefix(n)
            #expect(SHA256.key(inside) == TokenKey(SHA256.hash(text)), "length \(n)")
            #expect(SHA256.key(inside).constantTimeEquals(TokenKey(SHA256.hash(text))))
        }
        #expect(!SHA256.key("abc").constantTimeEquals(SHA256.key("abd")))
        #expect(SHA256.key("abc") == TokenKey(hexBytes("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")))
    }

    @Test func byteVectorsFromTheCAVPShortMessageSet() {
        // SHA256ShortMsg.rsp: Len = 8, Msg = d3; Len = 16, Msg = 11af; Len = 24, Msg = b4190e.
        #expect(hexString(SHA256.hash([0xd3])) == "28969cdfa74a12c82f3bad960b0b000aca2ac329deea5c2328ebc6f2ba9802c1")
        #expect(hexString(SHA256.hash([0x11, 0xaf])) == "5ca7133fa735326081558ac312c620eeca9970d1e70a4b95533d956f072d1f98")
        #expect(hexString(SHA256.hash([0xb4, 0x19, 0x0e])) == "dff2e73091f6c05e528896c4c831b9448653dc2ff043528f6769437bc7b975c2")
    }

    @Test func oneMillionAsAndEveryPaddingBoundary() {
        // FIPS 180-4 example: one million repetitions of "a".
        var s = SHA256()
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        for _ in 0..<1000 { s.update(chunk) }
        #expect(hexString(s.finalize()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
        // Lengths around the 55/56/64-byte padding boundaries: one-shot equals byte-by-byte.
        for n in 50...130 {
            let bytes = (0..<n).map { UInt8($0 & 0xFF) }
            var inc = SHA256()
            for b in bytes { inc.update([b]) }
            #expect(inc.finalize() == SHA256.hash(bytes), "length \(n)")
        }
    }

    @Test func constantTimeComparison() {
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2]))
    }

    @Test func passwordsAreYescryptHashesThatVerify() throws {
        let h = try #require(PasswordHasher.hash("correct horse battery staple"))
        #expect(h.hasPrefix("$y$"))
        #expect(PasswordHasher.verify("correct horse battery staple", against: h))
        #expect(!PasswordHasher.verify("correct horse battery stapl", against: h))
        #expect(!PasswordHasher.verify("", against: h))
        // Two hashes of one password differ (random salt).
        #expect(PasswordHasher.hash("x") != PasswordHasher.hash("x"))
        #expect(!PasswordHasher.verify("x", against: "garbage"))
        #expect(!PasswordHasher.verify("x", against: PasswordHasher.decoy))
    }
}
