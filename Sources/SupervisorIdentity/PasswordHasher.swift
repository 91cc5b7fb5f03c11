import CCrypt
import Glibc

/// Password hashes by the system's `crypt(3)` (libxcrypt), yescrypt (`$y$`) with a salt from the kernel.
/// No hand-written password hashing.
public enum PasswordHasher {
    /// Longest password accepted (yescrypt takes any length; this bounds the work per login).
    public static let maxLength = 1024

    /// A new `$y$…` hash of `password`, or nil if libcrypt failed.
    public static func hash(_ password: String) -> String? {
        var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        // NULL random bytes: libxcrypt reads them from the kernel; count 0: the library's default cost.
        guard crypt_gensalt_rn("$y$", 0, nil, 0, &setting, Int32(setting.count)) != nil else { return nil }
        return run(password, setting: setting)
    }

    /// Whether `password` matches `stored`, comparing the computed hash in constant time.
    public static func verify(_ password: String, against stored: String) -> Bool {
        guard password.utf8.count <= maxLength, !stored.isEmpty else { return false }
        guard let computed = run(password, setting: Array(stored.utf8CString)) else { return false }
        return constantTimeEquals(Array(computed.utf8), Array(stored.utf8))
    }

    /// A hash of a random password with the default cost: verifying against it takes as long as a real
    /// check, so an unknown user name answers in the same time as a wrong password.
    public static let decoy: String = hash(String(UInt64.random(in: 0...UInt64.max), radix: 36)) ?? "$y$j9T$decoy$"

    private static func run(_ password: String, setting: [CChar]) -> String? {
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer {
            // The buffer held the password: clear it before giving it back.
            memset(data, 0, MemoryLayout<crypt_data>.size)
            data.deallocate()
        }
        memset(data, 0, MemoryLayout<crypt_data>.size)
        guard let out = crypt_r(password, setting, data) else { return nil }
        let s = String(cString: out)
        // libxcrypt returns a string starting with "*" on failure (never a valid hash).
        return s.hasPrefix("*") ? nil : s
    }
}
