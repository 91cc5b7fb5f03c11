import Testing
@testable import SupervisorStore

@Suite("Token keys")
struct TokenKeyTests {
    @Test func equalHashesGiveEqualKeysAndAnyDifferenceADifferentKey() {
        var rng = SystemRandomNumberGenerator()
        let hash = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        #expect(TokenKey(hash) == TokenKey(hash))
        #expect(TokenKey(hash).hashValue == TokenKey(Array(hash)).hashValue)
        // One bit changed anywhere in the 32 bytes: a different key.
        for i in 0..<32 {
            var other = hash
            other[i] ^= 1 << UInt8(i % 8)
            #expect(TokenKey(other) != TokenKey(hash), "byte \(i)")
        }
        // Shorter and longer inputs (records are not trusted) differ from the 32-byte key they start like.
        #expect(TokenKey(Array(hash.prefix(31))) != TokenKey(hash))
        #expect(TokenKey(hash + [0]) != TokenKey(hash))
        #expect(TokenKey([]) != TokenKey([UInt8](repeating: 0, count: 32)))
    }

    @Test func theStoreFindsADeviceSessionByItsTokenHashAndForgetsTheOldHashOnReplacement() {
        var state = StoreState()
        let h1 = [UInt8](repeating: 7, count: 32)
        let h2 = [UInt8](repeating: 9, count: 32)
        var d = DeviceSession(id: "d1", userID: "u1", tokenHash: h1, ipAddress: "", userAgent: "", browser: "", os: "", deviceType: "",
                              deviceName: "", createdAt: 0, lastActivity: 0, expiresAt: 1000)
        state.apply(.putDeviceSession(d))
        #expect(state.deviceSession(tokenHash: h1)?.id == "d1")
        d.tokenHash = h2
        state.apply(.putDeviceSession(d))
        #expect(state.deviceSession(tokenHash: h1) == nil)
        #expect(state.deviceSession(token: TokenKey(h2))?.id == "d1")
        state.apply(.deleteDeviceSession(id: "d1"))
        #expect(state.deviceSession(tokenHash: h2) == nil)
    }
}
