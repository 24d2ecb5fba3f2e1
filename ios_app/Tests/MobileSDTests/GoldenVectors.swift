import Foundation
import XCTest
@testable import MobileSD

/// The golden vectors the Python reference writes (docs/golden-vectors.md): found through MOBILESD_GOLDEN,
/// default <repository>/build/golden. Missing vectors fail the tests (they are the point of them).
final class GoldenVectors {
    nonisolated(unsafe) private static var loaded: GoldenVectors?

    let root: URL
    let index: JSONValue

    static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
    }

    static func shared() throws -> GoldenVectors {
        if let loaded { return loaded }
        let env = ProcessInfo.processInfo.environment["MOBILESD_GOLDEN"]
        let root = env.map { URL(fileURLWithPath: $0) } ?? repositoryRoot.appendingPathComponent("build/golden")
        let indexURL = root.appendingPathComponent("index.json")
        guard FileManager.default.fileExists(atPath: indexURL.path) else {
            throw MobileSDError("no golden vectors at \(root.path)",
                                fix: ".venv/bin/python -m mobilesd.golden --out build/golden (or set MOBILESD_GOLDEN)")
        }
        let index = try JSONValue.parse(contentsOf: indexURL)
        guard index["format"]?.string == "mobilesd-golden" else { throw MobileSDError("\(indexURL.path) is not a golden index") }
        guard index["format_version"]?.int == 1 else {
            throw MobileSDError("golden vectors format_version \(index["format_version"].map { "\($0)" } ?? "?") is not 1",
                                fix: "update the Swift tests to the new format (docs/golden-vectors.md)")
        }
        let g = GoldenVectors(root: root, index: index)
        loaded = g
        return g
    }

    private init(root: URL, index: JSONValue) {
        self.root = root
        self.index = index
    }

    func section(_ name: String) throws -> JSONValue {
        guard let file = index["sections"]?[name]?.string else { throw MobileSDError("golden index has no section \(name)") }
        return try JSONValue.parse(contentsOf: root.appendingPathComponent(file))
    }

    /// A `{"file", "dtype", "shape"}` reference as float32.
    func floats(_ ref: JSONValue?) throws -> [Float] {
        guard let ref, ref["dtype"]?.string == "float32", let file = ref["file"]?.string else {
            throw MobileSDError("not a float32 array reference: \(String(describing: ref))")
        }
        let data = try Data(contentsOf: root.appendingPathComponent(file))
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    func ints(_ ref: JSONValue?) throws -> [Int32] {
        guard let ref, ref["dtype"]?.string == "int32", let file = ref["file"]?.string else {
            throw MobileSDError("not an int32 array reference: \(String(describing: ref))")
        }
        let data = try Data(contentsOf: root.appendingPathComponent(file))
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
        }
    }

    static func shape(_ ref: JSONValue?) -> [Int] { (ref?["shape"]?.array ?? []).compactMap(\.int) }
}

/// ||a - b|| / ||b|| (0 when both are zero).
func relativeL2(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "\(a.count) vs \(b.count) elements")
    var num = 0.0, den = 0.0
    for i in a.indices {
        let d = Double(a[i]) - Double(b[i])
        num += d * d
        den += Double(b[i]) * Double(b[i])
    }
    return den == 0 ? num.squareRoot() : (num / den).squareRoot()
}

/// The rows of a stacked array ([n, ...] -> n pieces).
func rows(_ a: [Float], _ n: Int) -> [[Float]] {
    let per = a.count / n
    return (0..<n).map { Array(a[($0 * per)..<(($0 + 1) * per)]) }
}
