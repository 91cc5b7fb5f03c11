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

        // Browsers that carry other browsers' tokens come before them; the first match wins.
        let rules: [(tokens: [String], name: String)] = [
            (["Edg/", "EdgA/", "EdgiOS/", "Edge/"], "Edge"),
            (["OPR/", "OPiOS/", "OPT/", "OPX/", "Coast/", "Opera"], "Opera"),
            (["SamsungBrowser/"], "Samsung Internet"),
            (["YaBrowser/"], "Yandex Browser"),
            (["Vivaldi/"], "Vivaldi"),
            (["Whale/"], "Whale"),
            (["MiuiBrowser"], "MIUI Browser"),
            (["UCBrowser/", "UCWEB"], "UC Browser"),
            (["Silk/"], "Amazon Silk"),
            (["SeaMonkey/"], "SeaMonkey"),
            (["MQQBrowser/", "QQBrowser"], "QQ Browser"),
            (["Maxthon/", "MXiOS/"], "Maxthon"),
            (["MicroMessenger/"], "WeChat"),
            (["Epiphany/"], "Epiphany"),
            (["BlackBerry", "BB10", "PlayBook"], "BlackBerry"),
            (["Tizen"], "Tizen Browser"),
            (["webOS", "hpwOS", "Web0S"], "webOS Browser"),
            (["Firefox", "FxiOS/", "Focus/", "Iceweasel"], "Firefox"),
            (["Chromium/"], "Chromium"),
            (["CriOS/", "Chrome/", "CrMo/"], "Chrome"),
            (["MSIE ", "Trident/"], "Internet Explorer"),
        ]
        var browser = "Other"
        for rule in rules where rule.tokens.contains(where: { ua.contains($0) }) {
            browser = rule.name
            break
        }
        if browser == "Other" {
            let apple = has("iPhone") || has("iPad") || has("iPod")
            if has("Android") && !has("like Android") && has("Version/") && has("Safari/") {
                browser = "Android Browser"
            } else if has("Safari/") && has("Version/") {
                browser = "Safari"
            } else if apple && has("AppleWebKit/") && has("Mobile/") && !has("GSA/") {
                // iOS WebKit without a browser token: Safari or an in-app view of it.
                browser = "Safari"
            }
        }
        return DeviceInfo(browser: browser, os: os(ua, lower), device: device(ua, lower))
    }

    /// An iPad asking for desktop sites sends a Mac User-Agent; the iOS browsers still add their token.
    private static func isDesktopModeIPad(_ ua: String) -> Bool {
        ua.contains("Macintosh") && (ua.contains("FxiOS/") || ua.contains("CriOS/") || ua.contains("EdgiOS/"))
    }

    private static func os(_ ua: String, _ lower: String) -> String {
        func has(_ s: String) -> Bool { ua.contains(s) }
        if has("Windows Phone") || has("Windows Mobile") { return "Windows Phone" }
        if has("Roku") || has("PlayStation") { return "Other" }
        if has("iPad") || isDesktopModeIPad(ua) { return "iPadOS" }
        if has("iPhone") || has("iPod") { return "iOS" }
        // Before Windows: a Mac app may put "Windows" in a product token ("WindowsWechat").
        if has("Macintosh") { return "macOS" }
        if has("Windows") || has("Win64") || has("Win32") || has("WinNT") { return "Windows" }
        if has("Tizen") || has("BlackBerry") || has("BB10") || has("PlayBook") || has("webOS") || has("hpwOS") || has("Web0S")
            || has("Bada") || lower.contains("kaios")
        {
            return "Other"
        }
        if has("Android") && !has("like Android") { return "Android" }
        if has("CrOS") { return "ChromeOS" }
        if has("Macintosh") || has("Mac OS X") || has("Mac_PowerPC") { return "macOS" }
        if has("Linux") || has("X11") || has("Ubuntu") || has("Fedora") || has("FreeBSD") { return "Linux" }
        return "Other"
    }

    private static func device(_ ua: String, _ lower: String) -> String {
        func has(_ s: String) -> Bool { ua.contains(s) }
        if has("SmartTV") || has("SMART-TV") || lower.contains("smart-tv") || has("Roku") || has("CrKey") || has("PlayStation")
            || has("AppleTV") || has("Web0S") || has("BRAVIA") || has("GoogleTV")
        {
            return "Other"
        }
        // Android tablets that say "Mobile" anyway, by model: Nexus 7/9/10, Galaxy Tab (SM-T, SM-X, SM-P, GT-P), Xoom.
        let tabletModels = ["Nexus 7", "Nexus 9", "Nexus 10", "SM-T", "SM-X", "SM-P", "GT-P", "Xoom"]
        let tablet = has("iPad") || tabletModels.contains(where: has) || (has("Tablet") && !has("Tablet PC")) || has("PlayBook") || has("Kindle") || has("Silk/")
            || has("KFTT") || has("KFAPWI") || has("hp-tablet") || has("TouchPad") || isDesktopModeIPad(ua)
        if tablet { return "Tablet" }
        if has("iPhone") || has("iPod") || has("Windows Phone") || has("IEMobile") || has("Opera Mini") || has("Mobi")
            || has("BlackBerry") || has("BB10") || has("Bada")
        {
            return "Mobile"
        }
        // Android without "Mobile" is a tablet, by Google's own convention for Android User-Agents.
        if has("Android") && !has("like Android") { return "Tablet" }
        if has("webOS") || has("hpwOS") { return "Other" }
        if has("Windows") || has("Macintosh") || has("CrOS") || has("X11") || has("Linux") { return "Desktop" }
        return "Other"
    }
}
