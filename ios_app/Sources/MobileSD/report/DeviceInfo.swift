import Foundation

/// What the latency report says about the machine: the phone's model id and OS on Apple platforms, the host
/// on Linux, where the report must say plainly that it is not a phone.
public struct DeviceInfo: Sendable {
    public var name: String
    public var model: String?
    public var os: String
    public var soc: String?
    public var cpuThreads: Int
    public var isPhone: Bool

    public static func current() -> DeviceInfo {
        var u = utsname()
        uname(&u)
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
        }
        let machine = field(u.machine), release = field(u.release)
        let threads = ProcessInfo.processInfo.activeProcessorCount
        let v = ProcessInfo.processInfo.operatingSystemVersion
        let version = "\(v.majorVersion).\(v.minorVersion)" + (v.patchVersion > 0 ? ".\(v.patchVersion)" : "")
        #if os(iOS)
        return DeviceInfo(name: machine, model: machine, os: "iOS \(version)", soc: nil, cpuThreads: threads, isPhone: true)
        #elseif os(macOS)
        return DeviceInfo(name: "Mac (\(machine))", model: machine, os: "macOS \(version)", soc: nil, cpuThreads: threads,
                          isPhone: false)
        #else
        let cpu = cpuName() ?? machine
        return DeviceInfo(name: "Linux host (\(cpu)), not a phone", model: nil, os: "Linux \(release)", soc: cpu,
                          cpuThreads: threads, isPhone: false)
        #endif
    }

    static func cpuName() -> String? {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.lowercased().hasPrefix("model name") {
            return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }

    /// Peak resident memory of this process (getrusage: KiB on Linux, bytes on Apple platforms).
    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        #if os(Linux)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        #if canImport(Darwin)
        return Int(usage.ru_maxrss)
        #else
        return Int(usage.ru_maxrss) * 1024
        #endif
    }
}
