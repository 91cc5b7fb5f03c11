/// What a `User-Agent` says about the device: browser family, operating system, device type, and the
/// `device_name` shown to people ("Chrome on Windows").
///
/// Order matters: many browsers carry the tokens of others (Edge and Opera say `Chrome/`, Chrome says
/// `Safari/`, everything says `Mozilla/`), so the most specific token is tested first.
public struct DeviceInfo: Sendable, Equatable {
    public let browser: String
    public let os: String
    /// `Desktop`, `Mobile`, `Tablet`, `Bot` or `Other`.
    public let device: String

    public init(browser: String, os: String, device: String) {
        self.browser = browser
        self.os = os
        self.device = device
    }

    public var deviceName: String {
        if device == "Bot" { return browser == "Other" ? "Bot" : browser }
        if browser == "Other" && os == "Other" { return "Unknown device" }
        if os == "Other" { return browser }
        if browser == "Other" { return "Browser on \(os)" }
        return "\(browser) on \(os)"
    }

    /// Longest User-Agent looked at; the rest is ignored (and not stored).
    public static let maxLength = 512

    public static func parse(_ userAgent: String) -> DeviceInfo {
        let ua = String(userAgent.prefix(maxLength))
        let lower = ua.lowercased()
        func has(_ s: String) -> Bool { ua.contains(s) }
        func hasLower(_ s: String) -> Bool { lower.contains(s) }

        // Bots and tools first: they often imitate browsers.
        let bots: [(String, String)] = [
            ("googlebot", "Googlebot"), ("bingbot", "Bingbot"), ("yandexbot", "YandexBot"), ("duckduckbot", "DuckDuckBot"),
            ("baiduspider", "Baiduspider"), ("applebot", "Applebot"), ("facebookexternalhit", "Facebook"), ("twitterbot", "Twitterbot"),
            ("slackbot", "Slackbot"), ("linkedinbot", "LinkedInBot"), ("ahrefsbot", "AhrefsBot"), ("semrushbot", "SemrushBot"),
            ("petalbot", "PetalBot"), ("gptbot", "GPTBot"), ("curl/", "curl"), ("wget/", "Wget"), ("python-requests", "python-requests"),
            ("python-urllib", "Python"), ("go-http-client", "Go"), ("okhttp", "OkHttp"), ("headlesschrome", "HeadlessChrome"),
        ]
        for (token, name) in bots where lower.contains(token) {
            return DeviceInfo(browser: name, os: os(ua, lower), device: "Bot")
        }
        if hasLower("bot/") || hasLower("bot;") || hasLower("crawler") || hasLower("spider") || hasLower("slurp") || hasLower("+http") {
            return DeviceInfo(browser: "Other", os: os(ua, lower), device: "Bot")
        }

        let browser: String
        if has("Edg/") || has("EdgA/") || has("EdgiOS/") || has("Edge/") {
            browser = "Edge"
        } else if has("OPR/") || has("OPiOS/") || has("OPT/") || has("Opera") || has("OPX/") {
            browser = "Opera"
        } else if has("SamsungBrowser/") {
            browser = "Samsung Internet"
        } else if has("YaBrowser/") {
            browser = "Yandex Browser"
        } else if has("Vivaldi/") {
            browser = "Vivaldi"
        } else if has("Whale/") {
            browser = "Whale"
        } else if has("Brave") {
            browser = "Brave"
        } else if has("UCBrowser/") || has("UCWEB") {
            browser = "UC Browser"
        } else if has("Silk/") {
            browser = "Amazon Silk"
        } else if has("MiuiBrowser/") {
            browser = "MIUI Browser"
        } else if has("SeaMonkey/") {
            browser = "SeaMonkey"
        } else if has("Firefox/") || has("FxiOS/") || has("Focus/") {
            browser = "Firefox"
        } else if has("Chromium/") {
            browser = "Chromium"
        } else if has("CriOS/") || has("Chrome/") || has("CrMo/") {
            browser = "Chrome"
        } else if has("MSIE ") || has("Trident/") {
            browser = "Internet Explorer"
        } else if has("Android") && has("Version/") && has("Safari/") {
            browser = "Android Browser"
        } else if has("Safari/") && (has("Version/") || has("iPhone") || has("iPad") || has("iPod")) && (has("Mac OS X") || has("iPhone") || has("iPad")) {
            browser = "Safari"
        } else if (has("iPhone") || has("iPad") || has("iPod")) && has("AppleWebKit/") && has("Mobile/") && !has("FBAN") && !has("Instagram") && !has("GSA/") {
            browser = "Safari"
        } else {
            browser = "Other"
        }
        return DeviceInfo(browser: browser, os: os(ua, lower), device: device(ua, lower))
    }

    private static func os(_ ua: String, _ lower: String) -> String {
        func has(_ s: String) -> Bool { ua.contains(s) }
        if has("Windows Phone") || has("Windows Mobile") { return "Windows Phone" }
        if has("Windows") || has("Win64") || has("Win32") || has("WinNT") { return "Windows" }
        if has("iPad") { return "iPadOS" }
        if has("iPhone") || has("iPod") { return "iOS" }
        if has("Android") || has("Adr ") { return "Android" }
        if has("CrOS") { return "ChromeOS" }
        if has("Macintosh") || has("Mac OS X") || has("Mac_PowerPC") { return "macOS" }
        if has("Tizen") || has("KAIOS") || lower.contains("kaios") || has("webOS") || has("Web0S") || has("PlayStation") || has("Xbox") {
            return "Other"
        }
        if has("Linux") || has("X11") || has("Ubuntu") || has("Fedora") || has("FreeBSD") { return "Linux" }
        return "Other"
    }

    private static func device(_ ua: String, _ lower: String) -> String {
        func has(_ s: String) -> Bool { ua.contains(s) }
        if has("SmartTV") || has("SMART-TV") || lower.contains("smart-tv") || has("Roku") || has("CrKey") || has("PlayStation")
            || has("Xbox") || has("AppleTV") || has("Web0S") || has("BRAVIA") || has("GoogleTV") || has("AFT")
        {
            return "Other"
        }
        if has("iPad") || has("Tablet") || has("PlayBook") || has("Kindle") || has("Silk/") || has("KFTT") || has("KFAPWI") { return "Tablet" }
        if has("iPhone") || has("iPod") || has("Windows Phone") || has("IEMobile") || has("Opera Mini") || has("Mobi") { return "Mobile" }
        // Android without "Mobile" is a tablet, by Google's own convention for Android User-Agents.
        if has("Android") { return "Tablet" }
        if has("Windows") || has("Macintosh") || has("CrOS") || has("X11") || has("Linux") { return "Desktop" }
        return "Other"
    }
}
